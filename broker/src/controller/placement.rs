//! Replica placement for new topics: round-robin across brokers, rack-aware when racks are
//! set, with preferred leaders spread evenly; and the replacement of one replica (a broker
//! being decommissioned). Pure.
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

/// The broker to take `leaving`'s place among `replicas`: one of `candidates` not holding a
/// replica already, on a rack none of the staying replicas is on if there is one, then the one
/// holding the fewest replicas (`load`), then the lowest id. `None` if no candidate is free.
pub fn replacement(
    candidates: &[Candidate<'_>],
    replicas: &[u64],
    leaving: u64,
    load: &std::collections::BTreeMap<u64, usize>,
) -> Option<u64> {
    let rack_of = |id: u64| candidates.iter().find(|c| c.id == id).and_then(|c| c.rack);
    let staying_racks: Vec<Option<&str>> = replicas
        .iter()
        .filter(|id| **id != leaving)
        .map(|id| rack_of(*id))
        .collect();
    candidates
        .iter()
        .filter(|c| c.id != leaving && !replicas.contains(&c.id))
        .min_by_key(|c| {
            let shares_a_rack = c.rack.is_some() && staying_racks.contains(&c.rack);
            (shares_a_rack, load.get(&c.id).copied().unwrap_or(0), c.id)
        })
        .map(|c| c.id)
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

    #[test]
    fn a_replacement_keeps_racks_apart_then_evens_the_load() {
        let brokers = [
            broker(1, Some("a")),
            broker(2, Some("b")),
            broker(3, Some("c")),
            broker(4, Some("a")),
            broker(5, Some("c")),
        ];
        let load: std::collections::BTreeMap<u64, usize> = [(4, 0), (5, 9)].into();
        // 3 leaves [1,2,3]: 4 (rack a, as 1) and 5 (rack c, no staying replica there) are free;
        // 5 keeps the racks apart although it holds more.
        assert_eq!(replacement(&brokers, &[1, 2, 3], 3, &load), Some(5));
        // Without racks: the least loaded.
        let plain = [
            broker(1, None),
            broker(2, None),
            broker(3, None),
            broker(4, None),
            broker(5, None),
        ];
        assert_eq!(replacement(&plain, &[1, 2, 3], 3, &load), Some(4));
        // Nobody free.
        assert_eq!(replacement(&plain[..3], &[1, 2, 3], 3, &load), None);
    }
}
