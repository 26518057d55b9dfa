//! The server-side partition assignors of consumer groups (KIP-848): from the group's members,
//! their subscriptions and their share of the previous target assignment, compute each member's
//! new target assignment. Pure: values in, a map out; when to run it and how to reconcile members
//! towards the result belong to the group coordinator.
//!
//! Two assignors, chosen per group by name (Kafka's `group.remote.assignor`):
//! - **Range** ([`Assignor::Range`], Kafka's `RangeAssignor`): per topic, its subscribers in
//!   member-id order take contiguous ranges, the first `n % m` one partition more. Ignores the
//!   previous assignment, so consumers that join topics partition-by-partition (co-partitioned
//!   topics) get the same partition numbers of every topic.
//! - **Uniform** ([`Assignor::Uniform`], the default, after Kafka 4.0's `UniformAssignor`):
//!   balanced and sticky. With identical subscriptions the counts differ by at most one and only
//!   what balance requires moves; with different subscriptions it is a best effort that still
//!   never gives a partition to a non-subscriber.
//!
//! Both keep, whatever the input (property-tested below): every partition of every subscribed,
//! existing topic goes to exactly one member subscribed to its topic; nothing else is assigned;
//! every member has an entry; the result does not depend on the order of the members.

use crate::partition::TopicPartition;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, VecDeque};

/// Which assignor a group uses. Stored with the group, so it survives coordinator fail-over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum Assignor {
    /// Balanced and sticky; the default, as in Kafka 4.0.
    #[default]
    Uniform,
    /// Contiguous ranges per topic, ignoring the previous assignment.
    Range,
}

impl Assignor {
    /// The assignor of a name as clients send it: `"uniform"`, `"range"`, or `""` for the
    /// default ([`Assignor::Uniform`]). Any other name is `None` (the caller refuses it).
    pub fn parse(name: &str) -> Option<Assignor> {
        match name {
            "" | "uniform" => Some(Assignor::Uniform),
            "range" => Some(Assignor::Range),
            _ => None,
        }
    }

    /// The name [`Assignor::parse`] accepts for this assignor.
    pub fn name(self) -> &'static str {
        match self {
            Assignor::Uniform => "uniform",
            Assignor::Range => "range",
        }
    }
}

/// One member as the assignor sees it. Borrowed, so the coordinator can run an assignment over
/// its group state without copying subscriptions.
#[derive(Debug, Clone, Copy)]
pub struct MemberSpec<'a> {
    /// The member's id; unique in the group (should one repeat, the first by id, subscription,
    /// then previous assignment counts and the others are dropped).
    pub member_id: &'a str,
    /// The topic names the member subscribes to; names of topics that do not exist are ignored.
    pub subscribed: &'a BTreeSet<String>,
    /// The member's share of the previous target assignment (stickiness keeps these where
    /// possible). Partitions it may no longer own (topic gone or unsubscribed, partition out of
    /// range, or claimed by a member of smaller id as well) are ignored.
    pub previous: &'a BTreeSet<TopicPartition>,
}

/// The target assignment: member id → partitions. Every member in `members` has an entry
/// (possibly empty). `topics` maps each existing topic to its partition count; subscribed topics
/// missing from it are ignored.
pub fn assign(
    assignor: Assignor,
    members: &[MemberSpec<'_>],
    topics: &BTreeMap<String, u32>,
) -> BTreeMap<String, BTreeSet<TopicPartition>> {
    let layout = Layout::new(members, topics);
    let owners = match assignor {
        Assignor::Range => range(&layout),
        Assignor::Uniform => uniform(&layout),
    };
    layout.into_assignment(owners)
}

/// The owner (index into [`Layout::members`]) of each partition of each topic of a layout,
/// indexed `[topic][partition]`.
type Owners = Vec<Vec<usize>>;

/// Like [`Owners`], while partitions may still be unowned.
type PartialOwners = Vec<Vec<Option<usize>>>;

/// The group reduced to what the assignors need, with dense indices instead of names: members
/// sorted by id (this sort is what makes the result independent of the input order), and only
/// the topics that exist, have partitions and have at least one subscriber.
struct Layout<'a> {
    members: Vec<&'a MemberSpec<'a>>,
    topics: Vec<TopicLayout<'a>>,
    /// Topic name → index into `topics`.
    index: BTreeMap<&'a str, usize>,
    /// Per member: the indices of the topics it subscribes to, ascending.
    subscriptions: Vec<Vec<usize>>,
}

struct TopicLayout<'a> {
    name: &'a str,
    partitions: u32,
    /// Indices of the members subscribed, ascending (so in member-id order). Never empty.
    subscribers: Vec<usize>,
}

impl<'a> Layout<'a> {
    fn new(members: &'a [MemberSpec<'a>], topics: &'a BTreeMap<String, u32>) -> Layout<'a> {
        let mut sorted: Vec<&MemberSpec<'_>> = members.iter().collect();
        // The full key, not the id alone, so even repeated ids resolve the same way whatever
        // the input order.
        sorted.sort_by(|a, b| (a.member_id, a.subscribed, a.previous).cmp(&(b.member_id, b.subscribed, b.previous)));
        sorted.dedup_by(|later, earlier| later.member_id == earlier.member_id);

        let names: BTreeSet<&str> = sorted
            .iter()
            .flat_map(|m| m.subscribed.iter())
            .filter(|name| topics.get(*name).is_some_and(|&count| count > 0))
            .map(String::as_str)
            .collect();
        let mut layout = Layout {
            topics: names
                .iter()
                .map(|&name| TopicLayout {
                    name,
                    partitions: topics[name],
                    subscribers: Vec::new(),
                })
                .collect(),
            index: names.iter().enumerate().map(|(i, &name)| (name, i)).collect(),
            subscriptions: Vec::with_capacity(sorted.len()),
            members: sorted,
        };
        for (m, member) in layout.members.iter().enumerate() {
            // Both sets are in name order, so the indices come out ascending.
            let subscribed: Vec<usize> = member
                .subscribed
                .iter()
                .filter_map(|name| layout.index.get(name.as_str()).copied())
                .collect();
            for &t in &subscribed {
                layout.topics[t].subscribers.push(m);
            }
            layout.subscriptions.push(subscribed);
        }
        layout
    }

    fn partition_count(&self) -> usize {
        self.topics.iter().map(|t| t.partitions as usize).sum()
    }

    fn unowned(&self) -> PartialOwners {
        self.topics.iter().map(|t| vec![None; t.partitions as usize]).collect()
    }

    /// The previous assignment, reduced to what members may keep: partitions that still exist,
    /// of topics their owner still subscribes to, each with one owner (the first by member id,
    /// should the previous assignment name two).
    fn previous_owners(&self) -> PartialOwners {
        let mut owners = self.unowned();
        for (m, member) in self.members.iter().enumerate() {
            for tp in member.previous {
                let Some(&t) = self.index.get(tp.topic.as_str()) else {
                    continue;
                };
                if self.subscriptions[m].binary_search(&t).is_err() {
                    continue;
                }
                if let Some(slot @ None) = owners[t].get_mut(tp.partition as usize) {
                    *slot = Some(m);
                }
            }
        }
        owners
    }

    fn into_assignment(self, owners: Owners) -> BTreeMap<String, BTreeSet<TopicPartition>> {
        let mut assigned: Vec<BTreeSet<TopicPartition>> = vec![BTreeSet::new(); self.members.len()];
        for (topic, owners) in self.topics.iter().zip(owners) {
            for (partition, m) in (0u32..).zip(owners) {
                assigned[m].insert(TopicPartition {
                    topic: topic.name.to_string(),
                    partition,
                });
            }
        }
        self.members
            .iter()
            .map(|m| m.member_id.to_string())
            .zip(assigned)
            .collect()
    }
}

/// Kafka's range assignment: per topic, subscriber `i` (in member-id order) of `m` gets a
/// contiguous range of `n / m` partitions, plus one if `i < n % m`.
fn range(layout: &Layout<'_>) -> Owners {
    layout
        .topics
        .iter()
        .map(|topic| {
            let subscribers = topic.subscribers.len();
            let n = topic.partitions as usize;
            let (share, extra) = (n / subscribers, n % subscribers);
            let mut owners = Vec::with_capacity(n);
            for (rank, &m) in topic.subscribers.iter().enumerate() {
                owners.extend(std::iter::repeat_n(m, share + usize::from(rank < extra)));
            }
            owners
        })
        .collect()
}

/// The uniform assignment: the exact quota algorithm when everyone who subscribes to anything
/// subscribes to the same topics (the common case, where balance and minimal movement can both
/// be had), the greedy one otherwise.
fn uniform(layout: &Layout<'_>) -> Owners {
    let previous = layout.previous_owners();
    let mut active = layout.subscriptions.iter().filter(|s| !s.is_empty());
    let homogeneous = match active.next() {
        Some(first) => active.all(|s| s == first),
        None => true,
    };
    let owners = if homogeneous {
        uniform_homogeneous(layout, previous)
    } else {
        uniform_heterogeneous(layout, previous)
    };
    owners
        .into_iter()
        .map(|topic| {
            topic
                .into_iter()
                .map(|owner| owner.expect("the uniform assignment owns every partition"))
                .collect()
        })
        .collect()
}

/// Identical subscriptions: with `a` members subscribed and `total` partitions, every member
/// gets `total / a` and `total % a` of them one more. Members keep their previous partitions up
/// to their quota, and the extra slots go first to members that had more than the quota, so a
/// partition moves only when its owner is over quota: the least movement balance allows (on
/// adding a member to a balanced group, exactly the new member's share moves).
fn uniform_homogeneous(layout: &Layout<'_>, previous: PartialOwners) -> PartialOwners {
    let active: Vec<usize> = (0..layout.members.len())
        .filter(|&m| !layout.subscriptions[m].is_empty())
        .collect();
    let mut owners = layout.unowned();
    if active.is_empty() {
        return owners;
    }
    let total = layout.partition_count();
    let (quota, extra) = (total / active.len(), total % active.len());

    let mut kept: Vec<Vec<(usize, usize)>> = vec![Vec::new(); layout.members.len()];
    for (t, topic) in previous.iter().enumerate() {
        for (p, owner) in topic.iter().enumerate() {
            if let Some(m) = owner {
                kept[*m].push((t, p));
            }
        }
    }
    let mut targets = vec![0usize; layout.members.len()];
    let mut extras_left = extra;
    for &m in &active {
        let mut target = quota;
        if kept[m].len() > quota && extras_left > 0 {
            target += 1;
            extras_left -= 1;
        }
        kept[m].truncate(target);
        for &(t, p) in &kept[m] {
            owners[t][p] = Some(m);
        }
        targets[m] = target;
    }
    // Extra slots nobody's previous share claimed: to members by id. They are filled from the
    // free partitions, so who gets them moves nothing that would not move anyway.
    for &m in &active {
        if extras_left == 0 {
            break;
        }
        if targets[m] == quota {
            targets[m] += 1;
            extras_left -= 1;
        }
    }

    // Deal the free partitions round-robin rather than in blocks, so a member's new partitions
    // spread over the topics.
    let mut short: VecDeque<(usize, usize)> = active
        .iter()
        .map(|&m| (m, targets[m] - kept[m].len()))
        .filter(|&(_, missing)| missing > 0)
        .collect();
    for topic in owners.iter_mut() {
        for owner in topic.iter_mut().filter(|o| o.is_none()) {
            let (m, missing) = short.pop_front().expect("the targets add up to the partition count");
            *owner = Some(m);
            if missing > 1 {
                short.push_back((m, missing - 1));
            }
        }
    }
    owners
}

/// A subscriber's partitions of one topic during the rebalancing pass, split so that a move
/// takes a partition the member did not own before, when it has one, over one it keeps.
#[derive(Default)]
struct Holding {
    kept: BTreeSet<u32>,
    fresh: BTreeSet<u32>,
}

impl Holding {
    fn is_empty(&self) -> bool {
        self.kept.is_empty() && self.fresh.is_empty()
    }

    fn take(&mut self) -> Option<u32> {
        self.fresh.pop_last().or_else(|| self.kept.pop_last())
    }
}

/// Different subscriptions: no quota fits everyone, so (1) members keep all they may of their
/// previous partitions; (2) each free partition goes to its least-loaded subscriber, topics with
/// the fewest subscribers first (they have the least choice); (3) while some partition's owner
/// has two more partitions than another subscriber of its topic, one moves from the most-loaded
/// owner to the least-loaded subscriber. The result is balanced in that sense: no single move
/// to a subscriber narrows the gap. Every move lowers the sum of squared loads, so (3) ends.
fn uniform_heterogeneous(layout: &Layout<'_>, previous: PartialOwners) -> PartialOwners {
    let mut load = vec![0usize; layout.members.len()];
    let mut holdings: Vec<Vec<Holding>> = layout
        .topics
        .iter()
        .map(|t| t.subscribers.iter().map(|_| Holding::default()).collect())
        .collect();
    let slot = |t: usize, m: usize| {
        layout.topics[t]
            .subscribers
            .binary_search(&m)
            .expect("previous owners subscribe to their topics")
    };
    let mut free: Vec<Vec<u32>> = vec![Vec::new(); layout.topics.len()];
    for (t, topic) in previous.iter().enumerate() {
        for (p, owner) in (0u32..).zip(topic) {
            match owner {
                Some(m) => {
                    holdings[t][slot(t, *m)].kept.insert(p);
                    load[*m] += 1;
                }
                None => free[t].push(p),
            }
        }
    }

    let mut order: Vec<usize> = (0..layout.topics.len()).collect();
    order.sort_by_key(|&t| (layout.topics[t].subscribers.len(), t));
    for t in order {
        let subscribers = &layout.topics[t].subscribers;
        // Only this loop changes loads while the topic is dealt, so the heap stays exact.
        let mut by_load: BinaryHeap<Reverse<(usize, usize)>> = (0..subscribers.len())
            .map(|s| Reverse((load[subscribers[s]], s)))
            .collect();
        for &p in &free[t] {
            let Reverse((l, s)) = by_load.pop().expect("a laid-out topic has subscribers");
            holdings[t][s].fresh.insert(p);
            load[subscribers[s]] += 1;
            by_load.push(Reverse((l + 1, s)));
        }
    }

    loop {
        let mut moved = false;
        for (t, topic) in layout.topics.iter().enumerate() {
            loop {
                let subscribers = &topic.subscribers;
                let taker = (0..subscribers.len())
                    .min_by_key(|&s| (load[subscribers[s]], s))
                    .expect("a laid-out topic has subscribers");
                let Some(giver) = (0..subscribers.len())
                    .filter(|&s| !holdings[t][s].is_empty())
                    .max_by_key(|&s| (load[subscribers[s]], Reverse(s)))
                else {
                    break;
                };
                if load[subscribers[giver]] < load[subscribers[taker]] + 2 {
                    break;
                }
                let p = holdings[t][giver].take().expect("the giver holds a partition");
                holdings[t][taker].fresh.insert(p);
                load[subscribers[giver]] -= 1;
                load[subscribers[taker]] += 1;
                moved = true;
            }
        }
        if !moved {
            break;
        }
    }

    let mut owners = layout.unowned();
    for (t, topic) in layout.topics.iter().enumerate() {
        for (s, holding) in holdings[t].iter().enumerate() {
            for &p in holding.kept.iter().chain(&holding.fresh) {
                owners[t][p as usize] = Some(topic.subscribers[s]);
            }
        }
    }
    owners
}

#[cfg(test)]
mod tests;
