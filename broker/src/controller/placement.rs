//! Replica placement for new topics: round-robin across brokers, rack-aware when racks are
//! set, with preferred leaders spread evenly. Pure.
//!
//! It sees a broker only as a [`Candidate`] (id and rack), so it depends on nothing of the
//! metadata it serves: `metadata` calls placement, never the other way round.

/// A broker that may hold replicas, as placement sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate<'a> {
    /// Node id.
    pub id: u64,
    /// Its rack, if racks are configured.
    pub rack: Option<&'a str>,
}

/// Replica lists for `partitions` partitions of `replication_factor` replicas each. The first
/// replica of each list is the preferred leader. `start` offsets the round-robin (e.g. by topic
/// count) so successive topics do not all lead on the same broker.
///
/// Without racks, partition `p` gets brokers `start + p, start + p + 1, ...` (mod n). With
/// racks, brokers are first interleaved rack by rack (r1-b1, r2-b1, r3-b1, r1-b2, ...), so
/// consecutive replicas land on different racks whenever there are enough racks.
pub fn place_replicas(
    brokers: &[Candidate<'_>],
    partitions: u32,
    replication_factor: u32,
    start: usize,
) -> Vec<Vec<u64>> {
    let order = rack_interleaved(brokers);
    let n = order.len();
    (0..partitions as usize)
        .map(|p| {
            (0..replication_factor as usize)
                .map(|r| order[(start + p + r) % n])
                .collect()
        })
        .collect()
}

fn rack_interleaved(brokers: &[Candidate<'_>]) -> Vec<u64> {
    let mut sorted: Vec<Candidate<'_>> = brokers.to_vec();
    sorted.sort_by_key(|b| b.id);
    if sorted.iter().all(|b| b.rack.is_none()) {
        return sorted.iter().map(|b| b.id).collect();
    }
    let mut racks: std::collections::BTreeMap<&str, Vec<u64>> = std::collections::BTreeMap::new();
    for broker in &sorted {
        racks.entry(broker.rack.unwrap_or("")).or_default().push(broker.id);
    }
    let longest = racks.values().map(Vec::len).max().unwrap_or(0);
    (0..longest)
        .flat_map(|i| racks.values().filter_map(move |ids| ids.get(i).copied()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn broker(id: u64, rack: Option<&str>) -> Candidate<'_> {
        Candidate { id, rack }
    }

    #[test]
    fn round_robin_without_racks() {
        let brokers = [broker(1, None), broker(2, None), broker(3, None)];
        assert_eq!(
            place_replicas(&brokers, 3, 2, 0),
            vec![vec![1, 2], vec![2, 3], vec![3, 1]]
        );
        assert_eq!(place_replicas(&brokers, 1, 3, 1), vec![vec![2, 3, 1]]);
    }

    #[test]
    fn replicas_spread_across_racks() {
        let brokers = [
            broker(1, Some("a")),
            broker(2, Some("a")),
            broker(3, Some("b")),
            broker(4, Some("b")),
        ];
        for replicas in place_replicas(&brokers, 8, 2, 0) {
            let racks: Vec<_> = replicas
                .iter()
                .map(|id| brokers.iter().find(|b| b.id == *id).unwrap().rack)
                .collect();
            assert_ne!(racks[0], racks[1], "{replicas:?} share a rack");
        }
    }
}
