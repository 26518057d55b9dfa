//! The assignors' rules, by example and by property.

use super::*;
use proptest::prelude::*;

/// A member's data, owned, for building [`MemberSpec`]s in tests.
#[derive(Debug, Clone)]
struct Member {
    id: String,
    subscribed: BTreeSet<String>,
    previous: BTreeSet<TopicPartition>,
}

fn member(id: &str, topics: &[&str]) -> Member {
    Member {
        id: id.to_string(),
        subscribed: topics.iter().map(|t| t.to_string()).collect(),
        previous: BTreeSet::new(),
    }
}

fn specs(members: &[Member]) -> Vec<MemberSpec<'_>> {
    members
        .iter()
        .map(|m| MemberSpec {
            member_id: &m.id,
            subscribed: &m.subscribed,
            previous: &m.previous,
        })
        .collect()
}

fn topics(counts: &[(&str, u32)]) -> BTreeMap<String, u32> {
    counts.iter().map(|&(t, n)| (t.to_string(), n)).collect()
}

fn tp(topic: &str, partition: u32) -> TopicPartition {
    TopicPartition {
        topic: topic.to_string(),
        partition,
    }
}

fn run(
    assignor: Assignor,
    members: &[Member],
    topics: &BTreeMap<String, u32>,
) -> BTreeMap<String, BTreeSet<TopicPartition>> {
    let result = assign(assignor, &specs(members), topics);
    check_valid(members, topics, &result);
    result
}

/// The rules every assignment keeps, whatever the assignor.
fn check_valid(
    members: &[Member],
    topics: &BTreeMap<String, u32>,
    result: &BTreeMap<String, BTreeSet<TopicPartition>>,
) {
    let ids: BTreeSet<&str> = members.iter().map(|m| m.id.as_str()).collect();
    let keys: BTreeSet<&str> = result.keys().map(String::as_str).collect();
    assert_eq!(keys, ids, "one entry per member");

    let mut owner: BTreeMap<&TopicPartition, &str> = BTreeMap::new();
    for (id, partitions) in result {
        let subscribed = &members.iter().find(|m| &m.id == id).unwrap().subscribed;
        for partition in partitions {
            assert!(
                subscribed.contains(&partition.topic),
                "{id} got {partition:?} without subscribing to its topic"
            );
            assert!(
                partition.partition < topics[&partition.topic],
                "{partition:?} does not exist"
            );
            if let Some(other) = owner.insert(partition, id) {
                panic!("{partition:?} assigned to both {other} and {id}");
            }
        }
    }
    let subscribed: BTreeSet<&String> = members.iter().flat_map(|m| &m.subscribed).collect();
    for (topic, &count) in topics.iter().filter(|(t, _)| subscribed.contains(t)) {
        for p in 0..count {
            assert!(owner.contains_key(&tp(topic, p)), "{topic}-{p} unassigned");
        }
    }
}

fn counts(result: &BTreeMap<String, BTreeSet<TopicPartition>>) -> Vec<usize> {
    result.values().map(BTreeSet::len).collect()
}

/// The members with their share of `result` as previous assignment: the next round.
fn with_previous(members: &[Member], result: &BTreeMap<String, BTreeSet<TopicPartition>>) -> Vec<Member> {
    members
        .iter()
        .map(|m| Member {
            previous: result.get(&m.id).cloned().unwrap_or_default(),
            ..m.clone()
        })
        .collect()
}

/// How many partitions of `after` are not with the member that had them in `before`.
fn moved(
    before: &BTreeMap<String, BTreeSet<TopicPartition>>,
    after: &BTreeMap<String, BTreeSet<TopicPartition>>,
) -> usize {
    after
        .iter()
        .map(|(id, partitions)| match before.get(id) {
            Some(had) => partitions.difference(had).count(),
            None => partitions.len(),
        })
        .sum()
}

#[test]
fn names_parse_and_round_trip() {
    assert_eq!(Assignor::parse(""), Some(Assignor::Uniform));
    assert_eq!(Assignor::default(), Assignor::Uniform);
    for assignor in [Assignor::Uniform, Assignor::Range] {
        assert_eq!(Assignor::parse(assignor.name()), Some(assignor));
    }
    assert_eq!(Assignor::parse("sticky"), None);
    assert_eq!(Assignor::parse("Range"), None);
}

#[test]
fn no_members_no_assignment() {
    for assignor in [Assignor::Uniform, Assignor::Range] {
        assert!(assign(assignor, &[], &topics(&[("a", 3)])).is_empty());
    }
}

#[test]
fn empty_and_dangling_subscriptions_get_empty_sets() {
    let members = [
        member("idle", &[]),
        member("lost", &["missing"]),
        member("empty-topic", &["zero"]),
        member("busy", &["a", "zero", "missing"]),
    ];
    let topics = topics(&[("a", 4), ("zero", 0), ("unwatched", 5)]);
    for assignor in [Assignor::Uniform, Assignor::Range] {
        let result = run(assignor, &members, &topics);
        assert!(result["idle"].is_empty());
        assert!(result["lost"].is_empty());
        assert!(result["empty-topic"].is_empty());
        assert_eq!(result["busy"].len(), 4);
    }
}

#[test]
fn range_matches_kafka_example() {
    // The RangeAssignor javadoc's example: two consumers, two topics of three partitions.
    let mut members = vec![member("c1", &["t0", "t1"]), member("c0", &["t0", "t1"])];
    // Range ignores the previous assignment.
    members[0].previous = [tp("t0", 0)].into();
    let topics = topics(&[("t0", 3), ("t1", 3)]);
    let result = run(Assignor::Range, &members, &topics);
    assert_eq!(
        result["c0"],
        [tp("t0", 0), tp("t0", 1), tp("t1", 0), tp("t1", 1)].into()
    );
    assert_eq!(result["c1"], [tp("t0", 2), tp("t1", 2)].into());
}

#[test]
fn range_splits_each_topic_among_its_own_subscribers() {
    let members = [member("a", &["x"]), member("b", &["x", "y"]), member("c", &["y"])];
    let topics = topics(&[("x", 5), ("y", 2)]);
    let result = run(Assignor::Range, &members, &topics);
    assert_eq!(result["a"], [tp("x", 0), tp("x", 1), tp("x", 2)].into());
    assert_eq!(result["b"], [tp("x", 3), tp("x", 4), tp("y", 0)].into());
    assert_eq!(result["c"], [tp("y", 1)].into());
}

#[test]
fn uniform_adding_a_member_moves_only_its_share() {
    let topics = topics(&[("t", 12)]);
    let three: Vec<Member> = ["a", "b", "c"].iter().map(|id| member(id, &["t"])).collect();
    let first = run(Assignor::Uniform, &three, &topics);
    assert_eq!(counts(&first), [4, 4, 4]);

    let mut four = with_previous(&three, &first);
    four.push(member("d", &["t"]));
    let second = run(Assignor::Uniform, &four, &topics);
    for id in ["a", "b", "c"] {
        assert_eq!(second[id].len(), 3);
        assert_eq!(second[id].intersection(&first[id]).count(), 3, "{id} kept 3");
    }
    assert_eq!(second["d"].len(), 3);
    assert_eq!(moved(&first, &second), 3);
}

#[test]
fn uniform_removing_a_member_moves_only_its_partitions() {
    let topics = topics(&[("t", 12)]);
    let four: Vec<Member> = ["a", "b", "c", "d"].iter().map(|id| member(id, &["t"])).collect();
    let first = run(Assignor::Uniform, &four, &topics);
    assert_eq!(counts(&first), [3, 3, 3, 3]);

    let three = with_previous(&four[..3], &first);
    let second = run(Assignor::Uniform, &three, &topics);
    for id in ["a", "b", "c"] {
        assert_eq!(second[id].len(), 4);
        assert!(second[id].is_superset(&first[id]), "{id} kept all it had");
    }
    assert_eq!(moved(&first, &second), 3);
}

#[test]
fn uniform_spreads_a_fresh_member_over_topics() {
    // Round-robin dealing: two topics, two members, each gets half of each topic rather
    // than one topic each.
    let members = [member("a", &["x", "y"]), member("b", &["x", "y"])];
    let result = run(Assignor::Uniform, &members, &topics(&[("x", 4), ("y", 4)]));
    for partitions in result.values() {
        assert_eq!(partitions.iter().filter(|p| p.topic == "x").count(), 2);
    }
}

#[test]
fn uniform_ignores_previous_partitions_a_member_may_not_keep() {
    let mut members = [member("a", &["x"]), member("b", &["x", "y"])];
    members[0].previous = [tp("x", 0), tp("x", 9), tp("y", 0), tp("gone", 0)].into();
    // b also claims x-0: the member of smaller id keeps it.
    members[1].previous = [tp("x", 0), tp("x", 1)].into();
    let result = run(Assignor::Uniform, &members, &topics(&[("x", 2), ("y", 1)]));
    assert_eq!(result["a"], [tp("x", 0)].into());
    assert_eq!(result["b"], [tp("x", 1), tp("y", 0)].into());
}

#[test]
fn uniform_never_balances_onto_non_subscribers() {
    let members = [member("a", &["big"]), member("b", &["small"])];
    let result = run(Assignor::Uniform, &members, &topics(&[("big", 10), ("small", 1)]));
    assert_eq!(result["a"].len(), 10);
    assert_eq!(result["b"].len(), 1);
}

#[test]
fn uniform_balances_overlapping_subscriptions() {
    // b shares both topics. Dealing alone gives 3, 5, 4 (x splits 3/3 between a and b,
    // then y ties between b and c); the rebalancing pass moves one of x from b to a.
    let members = [member("a", &["x"]), member("b", &["x", "y"]), member("c", &["y"])];
    let result = run(Assignor::Uniform, &members, &topics(&[("x", 6), ("y", 6)]));
    assert_eq!(counts(&result), [4, 4, 4]);
}

#[test]
fn uniform_heterogeneous_keeps_what_balance_allows() {
    // a owned all of x; b now subscribes to x too (and to y, which nobody else reads).
    let topics = topics(&[("x", 6), ("y", 2)]);
    let mut members = [member("a", &["x"]), member("b", &["x", "y"])];
    members[0].previous = (0..6).map(|p| tp("x", p)).collect();
    let result = run(Assignor::Uniform, &members, &topics);
    assert_eq!(counts(&result), [4, 4]);
    // Two of x move to b (b also has both of y): the least that balances.
    assert!(result["a"].iter().all(|p| members[0].previous.contains(p)));
    assert_eq!(result["b"].iter().filter(|p| p.topic == "x").count(), 2);
}

#[test]
fn uniform_heterogeneous_moves_new_partitions_before_kept_ones() {
    // a owned x-0..x-3; the topic grew to 8 and b joined: balance needs nothing of what a
    // had, so a keeps all of it.
    let topics = topics(&[("x", 8), ("y", 1)]);
    let mut members = [member("a", &["x"]), member("b", &["x", "y"])];
    members[0].previous = (0..4).map(|p| tp("x", p)).collect();
    let result = run(Assignor::Uniform, &members, &topics);
    assert!(result["a"].is_superset(&members[0].previous));
    assert_eq!(counts(&result), [5, 4]);
}

#[test]
fn large_groups_assign_quickly() {
    // 100 members × 3,000 partitions, twice (fresh, then sticky with a member gone), for
    // both the homogeneous and the heterogeneous algorithm and for range: guards against
    // quadratic scans. Runs in well under a second in a debug build.
    let topic_counts: Vec<(String, u32)> = (0..30).map(|t| (format!("t{t:02}"), 100)).collect();
    let topics: BTreeMap<String, u32> = topic_counts.into_iter().collect();
    let all: Vec<&str> = topics.keys().map(String::as_str).collect();
    let same: Vec<Member> = (0..100).map(|m| member(&format!("m{m:03}"), &all)).collect();
    let mixed: Vec<Member> = (0..100)
        .map(|m| member(&format!("m{m:03}"), &all[m % 10..m % 10 + 15]))
        .collect();
    for members in [same, mixed] {
        for assignor in [Assignor::Uniform, Assignor::Range] {
            let first = run(assignor, &members, &topics);
            let next = with_previous(&members[1..], &first);
            run(assignor, &next, &topics);
        }
    }
}

/// Members `m0..`, with subscription bits over topics `t0..t3` and bit 4 for a topic that
/// does not exist, and previous partitions that may be invalid (out of range, unsubscribed,
/// shared).
fn arbitrary_group() -> impl Strategy<Value = (Vec<Member>, BTreeMap<String, u32>)> {
    let topics = prop::collection::vec(0u32..10, 1..5);
    let members = prop::collection::vec(
        (0u8..32, prop::collection::btree_set((0usize..5, 0u32..12), 0..10)),
        0..8,
    );
    (topics, members).prop_map(|(counts, members)| {
        let topics: BTreeMap<String, u32> = counts.iter().enumerate().map(|(t, &n)| (format!("t{t}"), n)).collect();
        let members = members
            .into_iter()
            .enumerate()
            .map(|(i, (bits, previous))| Member {
                // Ids not in index order, so the sort does real work.
                id: format!("m{}", (i * 5) % 8),
                subscribed: (0..5)
                    .filter(|b| bits & (1 << b) != 0)
                    .map(|b| format!("t{b}"))
                    .collect(),
                previous: previous.into_iter().map(|(t, p)| tp(&format!("t{t}"), p)).collect(),
            })
            .collect();
        (members, topics)
    })
}

/// `count` members subscribed to every topic, with no previous assignment.
fn uniform_group() -> impl Strategy<Value = (Vec<Member>, BTreeMap<String, u32>)> {
    (prop::collection::vec(0u32..40, 1..4), 1usize..9).prop_map(|(counts, count)| {
        let topics: BTreeMap<String, u32> = counts.iter().enumerate().map(|(t, &n)| (format!("t{t}"), n)).collect();
        let all: Vec<&str> = topics.keys().map(String::as_str).collect();
        let members = (0..count).map(|m| member(&format!("m{m}"), &all)).collect();
        (members, topics)
    })
}

/// For every partition, its owner has at most one more partition than any other member
/// subscribed to its topic.
fn check_locally_balanced(members: &[Member], result: &BTreeMap<String, BTreeSet<TopicPartition>>) {
    for (owner, partitions) in result {
        for partition in partitions {
            for other in members.iter().filter(|m| m.subscribed.contains(&partition.topic)) {
                assert!(
                    result[owner].len() <= result[&other.id].len() + 1,
                    "{owner} could give {partition:?} to {}",
                    other.id
                );
            }
        }
    }
}

proptest! {
    #[test]
    fn both_assignors_are_valid_and_order_independent(
        (members, topics) in arbitrary_group(),
        rotation in 0usize..8,
    ) {
        for assignor in [Assignor::Uniform, Assignor::Range] {
            let result = run(assignor, &members, &topics);
            let mut shuffled = members.clone();
            shuffled.reverse();
            let len = shuffled.len().max(1);
            shuffled.rotate_left(rotation % len);
            prop_assert_eq!(&assign(assignor, &specs(&shuffled), &topics), &result);
        }
    }

    #[test]
    fn range_gives_contiguous_ranges_larger_first((members, topics) in arbitrary_group()) {
        let result = run(Assignor::Range, &members, &topics);
        for (topic, &n) in &topics {
            let subscribers: BTreeSet<&String> = members
                .iter()
                .filter(|m| m.subscribed.contains(topic))
                .map(|m| &m.id)
                .collect();
            let count = subscribers.len() as u32;
            let mut next = 0;
            for (rank, id) in (0u32..).zip(subscribers) {
                let size = n / count + u32::from(rank < n % count);
                let expected: BTreeSet<TopicPartition> =
                    (next..next + size).map(|p| tp(topic, p)).collect();
                let got: BTreeSet<TopicPartition> =
                    result[id].iter().filter(|p| &p.topic == topic).cloned().collect();
                prop_assert_eq!(got, expected);
                next += size;
            }
        }
    }

    #[test]
    fn uniform_is_locally_balanced_and_stable((members, topics) in arbitrary_group()) {
        let result = run(Assignor::Uniform, &members, &topics);
        check_locally_balanced(&members, &result);
        // Given its own output as the previous assignment, nothing moves.
        let again = run(Assignor::Uniform, &with_previous(&members, &result), &topics);
        prop_assert_eq!(again, result);
    }

    #[test]
    fn uniform_with_equal_subscriptions_differs_by_at_most_one(
        (members, topics) in uniform_group(),
    ) {
        let result = run(Assignor::Uniform, &members, &topics);
        let counts = counts(&result);
        prop_assert!(counts.iter().max().unwrap() - counts.iter().min().unwrap() <= 1);
    }

    #[test]
    fn uniform_adding_a_member_moves_exactly_its_share(
        (members, topics) in uniform_group(),
        joiner in 0usize..9,
    ) {
        let first = run(Assignor::Uniform, &members, &topics);
        let mut grown = with_previous(&members, &first);
        let all: Vec<&str> = topics.keys().map(String::as_str).collect();
        // "m{joiner}x" sorts anywhere among the existing ids.
        grown.push(member(&format!("m{joiner}x"), &all));
        let second = run(Assignor::Uniform, &grown, &topics);
        let total: usize = topics.values().map(|&n| n as usize).sum();
        // Minimal: the newcomer's share, total / (m + 1), and nothing else moves.
        prop_assert_eq!(moved(&first, &second), total / grown.len());
        let counts = counts(&second);
        prop_assert!(counts.iter().max().unwrap() - counts.iter().min().unwrap() <= 1);
    }

    #[test]
    fn uniform_removal_moves_only_the_leavers_partitions(
        (members, topics) in uniform_group(),
        leaver in 0usize..8,
    ) {
        let first = run(Assignor::Uniform, &members, &topics);
        let mut shrunk = with_previous(&members, &first);
        let gone = shrunk.remove(leaver % shrunk.len());
        let second = run(Assignor::Uniform, &shrunk, &topics);
        if !shrunk.is_empty() {
            prop_assert_eq!(moved(&first, &second), first[&gone.id].len());
        }
    }
}
