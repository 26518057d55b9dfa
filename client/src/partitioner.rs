//! Choosing a partition for a record, as Kafka's default partitioner does: keyed records by
//! murmur2 of the key (so a Kafka client and this one pick the same partition for the same key
//! and partition count), unkeyed records sticky to one partition per batch (KIP-480). Pure.

/// Kafka's 32-bit murmur2 hash (seed `0x9747b28c`), as `org.apache.kafka.common.utils.Utils`.
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let mut h: u32 = SEED ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = chunks.remainder();
    // The tail bytes are mixed in as signed Java bytes, highest first, falling through.
    if tail.len() >= 3 {
        h ^= ((tail[2] as i8 as i32 as u32) & 0xff) << 16;
    }
    if tail.len() >= 2 {
        h ^= ((tail[1] as i8 as i32 as u32) & 0xff) << 8;
    }
    if !tail.is_empty() {
        h ^= (tail[0] as i8 as i32 as u32) & 0xff;
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition Kafka's default partitioner picks for `key` among `partitions`.
///
/// Panics if `partitions` is zero (a topic has at least one partition).
pub fn partition_for_key(key: &[u8], partitions: u32) -> u32 {
    assert!(partitions > 0, "a topic has at least one partition");
    ((murmur2(key) & 0x7fff_ffff) as u32) % partitions
}

/// Sticky choice for unkeyed records: all records go to one partition until its batch is
/// closed, then a different partition is chosen. Fewer, fuller batches than round-robin.
#[derive(Debug, Default, Clone)]
pub struct StickyPartitioner {
    current: Option<u32>,
}

impl StickyPartitioner {
    /// The partition for the next unkeyed record. `pick(n)` returns a random number in `0..n`
    /// (injected so callers and tests control randomness).
    pub fn partition(&mut self, partitions: u32, mut pick: impl FnMut(u32) -> u32) -> u32 {
        match self.current {
            Some(current) if current < partitions => current,
            _ => {
                let chosen = pick(partitions.max(1)) % partitions.max(1);
                self.current = Some(chosen);
                chosen
            }
        }
    }

    /// The batch of the current partition was closed: move to a different partition next.
    pub fn batch_closed(&mut self, partitions: u32, mut pick: impl FnMut(u32) -> u32) {
        let previous = self.current;
        let next = if partitions <= 1 {
            0
        } else {
            // Choose among the other partitions, uniformly.
            let offset = 1 + pick(partitions - 1) % (partitions - 1);
            previous.map_or(offset % partitions, |p| (p + offset) % partitions)
        };
        self.current = Some(next);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Kafka's own test vectors for `Utils.murmur2` (UtilsTest.testMurmur2).
    #[test]
    fn murmur2_matches_kafkas_published_vectors() {
        let cases: [(&[u8], i32); 6] = [
            (b"21", -973_932_308),
            (b"foobar", -790_332_482),
            (b"a-little-bit-long-string", -985_981_536),
            (b"a-little-bit-longer-string", -1_486_304_829),
            (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58_897_971),
            (b"abc", 479_470_107),
        ];
        for (key, expected) in cases {
            assert_eq!(murmur2(key), expected, "{}", String::from_utf8_lossy(key));
        }
    }

    /// A second, independent transcription of Kafka's Java murmur2 (signed 32-bit arithmetic,
    /// Java's `>>>` as an unsigned shift), used as the oracle for a table of keys.
    fn reference_murmur2(data: &[u8]) -> i32 {
        let length = data.len() as i32;
        let seed: i32 = 0x9747_b28c_u32 as i32;
        let m: i32 = 0x5bd1_e995;
        let r = 24;
        let mut h: i32 = seed ^ length;
        let length4 = length / 4;
        let byte = |i: i32| data[i as usize] as i8 as i32;
        for i in 0..length4 {
            let i4 = i * 4;
            let mut k: i32 = (byte(i4) & 0xff)
                + ((byte(i4 + 1) & 0xff) << 8)
                + ((byte(i4 + 2) & 0xff) << 16)
                + ((byte(i4 + 3) & 0xff) << 24);
            k = k.wrapping_mul(m);
            k ^= ((k as u32) >> r) as i32;
            k = k.wrapping_mul(m);
            h = h.wrapping_mul(m);
            h ^= k;
        }
        let rest = length % 4;
        let base = length & !3;
        if rest == 3 {
            h ^= (byte(base + 2) & 0xff) << 16;
        }
        if rest >= 2 {
            h ^= (byte(base + 1) & 0xff) << 8;
        }
        if rest >= 1 {
            h ^= byte(base) & 0xff;
            h = h.wrapping_mul(m);
        }
        h ^= ((h as u32) >> 13) as i32;
        h = h.wrapping_mul(m);
        h ^= ((h as u32) >> 15) as i32;
        h
    }

    #[test]
    fn partitions_match_kafkas_definition_for_a_table_of_keys() {
        let keys: Vec<Vec<u8>> = vec![
            b"".to_vec(),
            b"a".to_vec(),
            b"ab".to_vec(),
            b"user-42".to_vec(),
            b"campaign:spring-sale".to_vec(),
            "tenant/ünïcode/✓".as_bytes().to_vec(),
            vec![0xff, 0x80, 0x7f, 0x00, 0x01],
            (0..=255u8).collect(),
        ];
        for key in &keys {
            for partitions in [1u32, 2, 3, 6, 7, 12, 100, 1000] {
                let expected = ((reference_murmur2(key) & 0x7fff_ffff) as u32) % partitions;
                assert_eq!(
                    partition_for_key(key, partitions),
                    expected,
                    "key {key:?}, {partitions} partitions"
                );
            }
        }
    }

    #[test]
    fn sticky_partitioner_stays_until_the_batch_closes_then_moves() {
        let mut sticky = StickyPartitioner::default();
        let first = sticky.partition(6, |_| 4);
        assert_eq!(first, 4);
        assert_eq!(sticky.partition(6, |_| 0), 4, "sticks while the batch is open");
        sticky.batch_closed(6, |n| n - 1);
        let second = sticky.partition(6, |_| 0);
        assert_ne!(second, first, "moves to another partition");
        let mut single = StickyPartitioner::default();
        single.batch_closed(1, |_| 0);
        assert_eq!(single.partition(1, |_| 0), 0);
    }
}
