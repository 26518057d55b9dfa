//! The group state machine driven through whole rebalances, checking after every step that no
//! partition is held by two members.

use super::*;
use crate::coordinator::model::GroupPhase;

fn tp(topic: &str, partition: u32) -> TopicPartition {
    TopicPartition {
        topic: topic.into(),
        partition,
    }
}

/// A group and the members' own view (what each consumes), driven by heartbeats.
struct Sim {
    group: Option<Group>,
    topics: BTreeMap<String, u32>,
    /// Member id → (epoch, owned partitions) as the member itself knows them.
    members: BTreeMap<String, (i32, BTreeSet<TopicPartition>)>,
    now: i64,
}

impl Sim {
    fn new(topics: &[(&str, u32)]) -> Sim {
        Sim {
            group: None,
            topics: topics.iter().map(|(t, n)| (t.to_string(), *n)).collect(),
            members: BTreeMap::new(),
            now: 1_000,
        }
    }

    fn request(&self, member: &str, epoch: i32, instance: Option<&str>) -> Heartbeat {
        let owned = self.members.get(member).map(|(_, o)| o.clone()).unwrap_or_default();
        Heartbeat {
            group_id: "g".into(),
            member_id: member.into(),
            member_epoch: epoch,
            instance_id: instance.map(str::to_string),
            subscribed: self.topics.keys().cloned().collect(),
            owned,
            ..Heartbeat::default()
        }
    }

    fn send(&mut self, request: Heartbeat) -> Result<HeartbeatAnswer, GroupError> {
        self.now += 10;
        let outcome = heartbeat(
            self.group.as_ref(),
            &request,
            &self.topics,
            SessionLimits::default(),
            self.now,
        )?;
        self.group = Some(outcome.group);
        self.check_single_owners();
        let answer = outcome.answer?;
        if answer.member_epoch >= 0 {
            // The member consumes exactly what it was given (revoked partitions released).
            self.members.insert(
                request.member_id.clone(),
                (answer.member_epoch, answer.assignment.clone()),
            );
        } else {
            self.members.remove(&request.member_id);
        }
        Ok(answer)
    }

    fn join(&mut self, member: &str) -> HeartbeatAnswer {
        self.send(self.request(member, JOIN_EPOCH, None)).unwrap()
    }

    fn beat(&mut self, member: &str) -> HeartbeatAnswer {
        let epoch = self.members[member].0;
        self.send(self.request(member, epoch, None)).unwrap()
    }

    /// Heartbeats every member until nothing changes.
    fn settle(&mut self) {
        for _ in 0..10 {
            let before = self.group.clone();
            let ids: Vec<String> = self.members.keys().cloned().collect();
            for id in ids {
                self.beat(&id);
            }
            if self.group == before {
                return;
            }
        }
        panic!("the group never settled: {:#?}", self.group);
    }

    fn group(&self) -> &Group {
        self.group.as_ref().unwrap()
    }

    fn counts(&self) -> Vec<usize> {
        self.members.values().map(|(_, owned)| owned.len()).collect()
    }

    /// The coordinator's view and the members' own: nobody holds a partition another holds.
    fn check_single_owners(&self) {
        let mut seen = BTreeMap::new();
        for member in self.group.iter().flat_map(|g| g.members.values()) {
            for p in member.assigned.iter().chain(member.pending_revocation.iter()) {
                if let Some(other) = seen.insert(p.clone(), member.member_id.clone()) {
                    panic!("{p:?} held by {other} and {}", member.member_id);
                }
            }
        }
    }
}

#[test]
fn three_members_share_twelve_partitions_and_a_fourth_joins_revoke_first() {
    let mut sim = Sim::new(&[("t", 12)]);
    sim.join("a");
    sim.join("b");
    sim.join("c");
    sim.settle();
    assert_eq!(sim.counts(), vec![4, 4, 4]);
    assert_eq!(sim.group().phase(), GroupPhase::Stable);
    let epoch_before = sim.group().epoch;

    // The joiner gets nothing the others still hold.
    let joined = sim.join("d");
    assert!(joined.assignment.is_empty(), "nothing is free yet: {joined:?}");
    assert_eq!(sim.group().epoch, epoch_before + 1);
    assert_eq!(sim.group().phase(), GroupPhase::Reconciling);

    // Each old member is asked to give one up, keeps the rest, and keeps its epoch until it
    // has released it.
    let a_before = sim.members["a"].1.clone();
    let a = sim.beat("a");
    assert_eq!(a.assignment.len(), 3);
    assert!(a.assignment.is_subset(&a_before), "a keeps consuming what it keeps");
    sim.settle();
    let mut counts = sim.counts();
    counts.sort_unstable();
    assert_eq!(counts, vec![3, 3, 3, 3]);
    assert_eq!(sim.group().phase(), GroupPhase::Stable);
    let target_epoch = sim.group().target_epoch;
    assert!(sim.members.values().all(|(epoch, _)| *epoch == target_epoch));
}

#[test]
fn a_leaving_member_frees_its_partitions_for_the_others() {
    let mut sim = Sim::new(&[("t", 6)]);
    sim.join("a");
    sim.join("b");
    sim.settle();
    let b_epoch = sim.members["b"].0;
    let left = sim.send(sim.request("b", LEAVE_EPOCH, None)).unwrap();
    assert_eq!(left.member_epoch, LEAVE_EPOCH);
    assert!(b_epoch > 0);
    sim.settle();
    assert_eq!(sim.counts(), vec![6]);
    // The last one leaves: empty, and remembered as empty since now.
    sim.send(sim.request("a", LEAVE_EPOCH, None)).unwrap();
    assert_eq!(sim.group().phase(), GroupPhase::Empty);
    assert_eq!(sim.group().empty_since_ms, Some(sim.now));
}

#[test]
fn an_expired_member_is_removed_and_its_partitions_move() {
    let mut sim = Sim::new(&[("t", 4)]);
    sim.join("a");
    sim.join("b");
    sim.settle();
    let group = expire(sim.group(), "b", &sim.topics, sim.now).unwrap();
    assert!(!group.members.contains_key("b"));
    assert_eq!(group.target_of("a").len(), 4);
    sim.group = Some(group);
    sim.members.remove("b");
    sim.settle();
    assert_eq!(sim.counts(), vec![4]);
    assert!(expire(sim.group(), "b", &sim.topics, sim.now).is_none(), "gone already");
}

#[test]
fn a_wrong_epoch_fences_the_member_and_an_unknown_member_is_refused() {
    let mut sim = Sim::new(&[("t", 4)]);
    sim.join("a");
    sim.join("b");
    sim.settle();
    let epoch = sim.members["a"].0;
    let fenced = sim.send(sim.request("a", epoch + 5, None));
    assert!(matches!(fenced, Err(GroupError::FencedEpoch { .. })), "{fenced:?}");
    assert!(!sim.group().members.contains_key("a"), "a fenced member is removed");

    let unknown = sim.send(sim.request("zombie", 3, None));
    assert!(matches!(unknown, Err(GroupError::UnknownMember { .. })), "{unknown:?}");

    // The fenced member rejoins with epoch 0 and gets partitions again.
    sim.members.remove("a");
    sim.join("a");
    sim.settle();
    assert_eq!(sim.counts(), vec![2, 2]);
}

#[test]
fn a_heartbeat_whose_answer_was_lost_is_accepted_with_the_previous_epoch() {
    let mut sim = Sim::new(&[("t", 4)]);
    sim.join("a");
    sim.settle();
    let old = sim.members["a"].clone();
    sim.join("b");
    // a's answer moving it to the new epoch is lost: it still sends the old epoch.
    sim.beat("a");
    sim.beat("b");
    sim.beat("a");
    let current = sim.group().members["a"].clone();
    assert!(current.epoch > old.0);
    let retried = Heartbeat {
        owned: current.assigned.clone(),
        ..sim.request("a", old.0, None)
    };
    let answer = sim.send(retried).expect("the previous epoch is accepted");
    assert_eq!(answer.member_epoch, current.epoch);
}

#[test]
fn a_static_member_back_within_its_session_gets_the_same_partitions_and_no_rebalance() {
    let mut sim = Sim::new(&[("t", 6)]);
    sim.send(sim.request("a1", JOIN_EPOCH, Some("host-a"))).unwrap();
    sim.join("b");
    sim.settle();
    let before = sim.members["a1"].1.clone();
    let group_epoch = sim.group().epoch;

    let left = sim.send(sim.request("a1", LEAVE_FOR_RESTART_EPOCH, None)).unwrap();
    assert_eq!(left.member_epoch, LEAVE_FOR_RESTART_EPOCH);
    assert!(sim.group().members["a1"].left_for_restart);
    sim.settle(); // b does not get a1's partitions meanwhile
    assert_eq!(sim.group().epoch, group_epoch);

    let back = sim.send(sim.request("a2", JOIN_EPOCH, Some("host-a"))).unwrap();
    assert_eq!(back.assignment, before);
    assert_eq!(sim.group().epoch, group_epoch, "no rebalance");
    assert!(!sim.group().members.contains_key("a1"));
}

#[test]
fn joins_refuse_unknown_topics_bad_ids_and_assignors() {
    let sim = Sim::new(&[("t", 1)]);
    let mut request = sim.request("a", JOIN_EPOCH, None);
    request.subscribed.insert("nope".into());
    let limits = SessionLimits::default();
    let refused = heartbeat(None, &request, &sim.topics, limits, 0);
    assert_eq!(refused, Err(GroupError::UnknownTopic("nope".into())));

    let request = Heartbeat {
        group_id: String::new(),
        ..sim.request("a", JOIN_EPOCH, None)
    };
    assert!(matches!(
        heartbeat(None, &request, &sim.topics, limits, 0),
        Err(GroupError::InvalidGroupId(_))
    ));
    let request = Heartbeat {
        assignor: "roundrobin".into(),
        ..sim.request("a", JOIN_EPOCH, None)
    };
    assert!(matches!(
        heartbeat(None, &request, &sim.topics, limits, 0),
        Err(GroupError::UnsupportedAssignor(_))
    ));
    let request = Heartbeat {
        session_timeout_ms: 10,
        ..sim.request("a", JOIN_EPOCH, None)
    };
    assert!(matches!(
        heartbeat(None, &request, &sim.topics, limits, 0),
        Err(GroupError::InvalidRequest(_))
    ));
}

#[test]
fn a_member_that_does_not_release_within_its_rebalance_timeout_is_overdue() {
    let mut sim = Sim::new(&[("t", 4)]);
    sim.join("a");
    sim.settle();
    sim.join("b");
    // a is asked to give two up but keeps listing them.
    let owned = sim.members["a"].1.clone();
    let epoch = sim.members["a"].0;
    let request = Heartbeat {
        owned: owned.clone(),
        rebalance_timeout_ms: 1_000,
        ..sim.request("a", epoch, None)
    };
    let outcome = heartbeat(
        sim.group.as_ref(),
        &request,
        &sim.topics,
        SessionLimits::default(),
        5_000,
    )
    .unwrap();
    let member = &outcome.group.members["a"];
    assert_eq!(member.pending_revocation.len(), 2);
    assert_eq!(member.revoking_since_ms, Some(5_000));
    assert!(overdue_revocations(&outcome.group, 5_900).is_empty());
    assert_eq!(overdue_revocations(&outcome.group, 6_001), vec!["a".to_string()]);
    // Releasing clears it.
    let released = Heartbeat {
        owned: outcome.answer.unwrap().assignment,
        rebalance_timeout_ms: 1_000,
        ..sim.request("a", epoch, None)
    };
    let outcome = heartbeat(
        Some(&outcome.group),
        &released,
        &sim.topics,
        SessionLimits::default(),
        5_500,
    )
    .unwrap();
    assert_eq!(outcome.group.members["a"].revoking_since_ms, None);
}

#[test]
fn a_growing_topic_starts_a_new_target() {
    let mut sim = Sim::new(&[("t", 2)]);
    sim.join("a");
    sim.join("b");
    sim.settle();
    let epoch = sim.group().epoch;
    sim.topics.insert("t".into(), 4);
    sim.settle();
    assert!(sim.group().epoch > epoch);
    assert_eq!(sim.counts(), vec![2, 2]);
}

#[test]
fn commits_need_the_current_epoch_and_an_owned_partition() {
    let mut sim = Sim::new(&[("t", 2)]);
    sim.join("a");
    sim.join("b");
    sim.settle();
    let group = sim.group().clone();
    let (epoch, owned) = sim.members["a"].clone();
    let mine = owned.iter().next().unwrap().clone();
    let theirs = sim.members["b"].1.iter().next().unwrap().clone();
    let topics = &sim.topics;
    let check = |member: &str, epoch: i32, partition: &TopicPartition| {
        check_commit(
            "g",
            Some(&group),
            member,
            epoch,
            std::slice::from_ref(partition),
            topics,
        )
    };
    assert_eq!(check("a", epoch, &mine), Ok(()));
    assert!(matches!(
        check("a", epoch, &theirs),
        Err(GroupError::NotAssigned { .. })
    ));
    assert!(matches!(
        check("a", epoch - 1, &mine),
        Err(GroupError::StaleEpoch { .. })
    ));
    assert!(matches!(
        check("a", epoch + 1, &mine),
        Err(GroupError::FencedEpoch { .. })
    ));
    assert!(matches!(
        check("x", epoch, &mine),
        Err(GroupError::UnknownMember { .. })
    ));
    assert!(matches!(
        check("a", epoch, &tp("t", 9)),
        Err(GroupError::UnknownTopic(_))
    ));
    assert!(matches!(check("", -1, &mine), Err(GroupError::NonEmpty { .. })));
    assert_eq!(
        check_commit("g", None, "", -1, &[tp("t", 0)], topics),
        Ok(()),
        "a reset of an empty group"
    );
}
