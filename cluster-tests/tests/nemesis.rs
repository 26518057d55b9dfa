//! A Jepsen-style run against real broker processes: idempotent producers and a consumer work
//! through the client crate while a seeded schedule of faults hits the cluster — kill -9 and
//! restart, SIGSTOP/SIGCONT, isolating a broker from its peers, bridges, slow links, one-way
//! partitions, leader transfers, cutting clients off a broker (every link, broker-to-broker and client-to-broker, goes through
//! a proxy the test controls), and storage faults on a stopped minority replica: a torn segment
//! tail, a flipped bit in the middle of the active segment, deleted index files. Every operation
//! goes into a history; after healing, the checker must find nothing.
//!
//! The group's members (`cluster_tests::group_member`) commit after every poll, one of them
//! leaves and rejoins every [`MEMBER_REJOIN`], and another reaches the brokers through links
//! of its own, cut now and then for longer than its session: the coordinator fences it and
//! moves its partitions on while it still believes it owns them (a zombie). The checker adds
//! committed offsets that move back, a partition owned by two members, and acknowledged
//! records the group never consumed. The run waits (up to [`GROUP_CATCH_UP`]) for the group to
//! consume everything before it stops the members.
//! A failing history is kept under `target/nemesis-histories/` for `checker::check` to replay,
//! with the brokers' data and logs (`broker.log`, level from `BROKER_LOG`).
//!
//! The default test run replays fixed seeds (each a regression test for the bugs its seed
//! found); `cluster-tests/run-soak.sh --minutes M --seed S` runs one cluster for M minutes.

use client::{Admin, NewTopic, PartitionReplicas, SeekTo};
use cluster_tests::checker::check;
use cluster_tests::group_member::{spawn_member, GroupSeen, MemberPlan};
use cluster_tests::history::{write_jsonl, Operation, Outcome, Recorder};
use cluster_tests::proxy::FaultProxy;
use cluster_tests::workload::{record_final_reads, spawn_consumer, spawn_producer, ProducerPlan};
use cluster_tests::{
    client_overrides, connect_when_ready, create_topic, delete_index_files, describe_on, flip_bit_in_active_segment,
    leaders, log_digest, partition_dir, partitions_held_from_elections, quiet_partitions, replica_sets,
    stop_all_at_once, truncate_active_segment, BrokerProcess, ProxiedCluster,
};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const TOPIC: &str = "jepsen";
const PARTITIONS: u32 = 3;
const PRODUCERS: u32 = 3;
/// Consumer processes in the history: the first reads from the beginning, the second from
/// wherever the log ends when it starts.
const CONSUMERS: [u32; 2] = [100, 101];
const CHECKER: u32 = 999;
/// The consumer group's member processes; the last one leaves and rejoins as a new member
/// every [`MEMBER_REJOIN`].
const MEMBERS: [u32; 3] = [200, 201, 202];
const GROUP: &str = "jepsen-group";
const MEMBER_REJOIN: Duration = Duration::from_secs(15);
/// The member whose own links are cut for [`ZOMBIE_CUT`], above its 6 s session, first
/// [`ZOMBIE_FIRST`] into the run and then every [`ZOMBIE_EVERY`] until the faults end.
const ZOMBIE: u32 = MEMBERS[1];
const ZOMBIE_CUT: Duration = Duration::from_secs(10);
const ZOMBIE_FIRST: Duration = Duration::from_secs(8);
const ZOMBIE_EVERY: Duration = Duration::from_secs(40);
/// Longest the run waits, after healing, for the group to consume every record.
const GROUP_CATCH_UP: Duration = Duration::from_secs(60);

/// How long a run lasts, and how hard the producers push.
#[derive(Debug, Clone, Copy)]
struct Plan {
    seed: u64,
    /// Fault steps to apply, or none for as many as fit in `minutes`.
    steps: Option<usize>,
    /// Wall-clock budget for the fault schedule (soak runs).
    minutes: Option<f64>,
    /// Each producer pauses 10 ms after this many sends: short runs push hard, soaks keep the
    /// history to a size the checker reads back in reasonable time.
    sends_per_pause: u32,
    /// The faults to draw from.
    kinds: &'static [Fault],
    /// Brokers in the cluster (3, or 4 for replica moves: the topic keeps 3 replicas).
    brokers: u64,
    /// Whether a step may add a second, concurrent fault on another broker (a third of them do).
    combine: bool,
    /// Whether producers fall silent for every other fault step, which then waits (a while)
    /// for the partitions to quiesce — stop their Raft timers — before it strikes, so faults
    /// land on quiet groups too. Consumers keep polling throughout.
    quiet_stretches: bool,
    /// TLS on: mutual TLS between brokers, clients with a certificate.
    tls: bool,
}

/// Longest a silent step waits for the partitions to quiesce before striking anyway.
const QUIET_WAIT: Duration = Duration::from_secs(5);

/// Deterministic choices from a seed (xorshift64*).
struct Schedule(u64);

impl Schedule {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) % n
    }
}

#[derive(Debug, Clone, Copy)]
enum Fault {
    Kill,
    Pause,
    Isolate,
    TornTail,
    /// Every link to and from the broker gets 50–300 ms of latency.
    SlowLinks,
    /// The broker cannot reach its peers; they still reach it (and get its answers).
    OneWay,
    /// Clients cannot reach the broker; its peers can.
    ClientCut,
    BitFlip,
    IndexLoss,
    /// A partition led by the victim hands its leadership to another replica.
    LeaderTransfer,
    /// The victim and the next broker cannot reach each other; the third reaches both (a bridge).
    Bridge,
    /// One replica of a partition (the victim's, if it holds one) moves to a broker that holds
    /// none: a learner, catch-up, joint consensus, the old replica removed — left to finish
    /// while later faults strike. Needs a broker beyond the replication factor.
    MoveReplica,
    /// The victim is decommissioned (every replica it holds starts moving off it); undone by
    /// recommissioning it, which cancels the moves not finished by then.
    Decommission,
}

impl Fault {
    /// Whether it damages a replica's storage.
    fn is_storage(self) -> bool {
        matches!(self, Fault::TornTail | Fault::BitFlip | Fault::IndexLoss)
    }
}

/// One fault on one broker: `Cluster::begin` applies it, `Cluster::end` undoes it.
struct Injection {
    fault: Fault,
    victim: u64,
    /// Extra latency, for `SlowLinks`.
    delay: Duration,
    /// The partition a `MoveReplica` moves.
    partition: u32,
}

impl Injection {
    fn describe(&self) -> String {
        match self.fault {
            Fault::SlowLinks => format!("SlowLinks broker {} ({:?} each way)", self.victim, self.delay),
            Fault::MoveReplica => format!("MoveReplica partition {} (broker {})", self.partition, self.victim),
            fault => format!("{fault:?} broker {}", self.victim),
        }
    }
}

/// The faults of the first runs (the schedules of seeds 1 and 4 depend on this list).
const CLASSIC: &[Fault] = &[Fault::Kill, Fault::Pause, Fault::Isolate, Fault::TornTail];
/// Every fault.
const ALL: &[Fault] = &[
    Fault::Kill,
    Fault::Pause,
    Fault::Isolate,
    Fault::TornTail,
    Fault::SlowLinks,
    Fault::OneWay,
    Fault::ClientCut,
    Fault::BitFlip,
    Fault::IndexLoss,
    Fault::LeaderTransfer,
    Fault::Bridge,
];

/// Every fault, and the replica moves of a cluster with a broker more than the replication
/// factor.
const WITH_MOVES: &[Fault] = &{
    let mut kinds = [Fault::MoveReplica; ALL.len() + 2];
    let mut i = 0;
    while i < ALL.len() {
        kinds[i] = ALL[i];
        i += 1;
    }
    kinds[ALL.len() + 1] = Fault::Decommission;
    kinds
};

/// One nemesis cluster at a time: two at once on a 2-core machine measure the machine.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

struct Cluster {
    brokers: Vec<BrokerProcess>,
    /// (from, to) → the proxy `from` dials to reach `to`.
    links: HashMap<(u64, u64), FaultProxy>,
    /// broker → the proxy clients dial to reach it.
    client_links: HashMap<u64, FaultProxy>,
}

impl Cluster {
    /// Waits up to `timeout` until every running broker holds every partition it hosts quiet;
    /// returns how many partitions are quiet on every running broker hosting them then.
    async fn wait_until_quiet(&self, client: &client::Cluster, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            let hosts = replica_sets(client, TOPIC).await;
            let mut quiet_everywhere: Vec<u32> = (0..PARTITIONS).collect();
            for process in self.brokers.iter().filter(|b| b.is_running()) {
                let quiet = quiet_partitions(&process.address, process.id, TOPIC)
                    .await
                    .unwrap_or_default();
                quiet_everywhere
                    .retain(|p| quiet.contains(p) || !hosts.get(p).is_some_and(|hosts| hosts.contains(&process.id)));
            }
            if quiet_everywhere.len() == PARTITIONS as usize || Instant::now() >= deadline {
                return quiet_everywhere.len();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn start(root: &std::path::Path, count: u64, tls: bool) -> Cluster {
        let ProxiedCluster {
            brokers,
            links,
            client_links,
        } = ProxiedCluster::start_secured(root, count, &["--offsets-topic-partitions", "3"], tls).await;
        Cluster {
            brokers,
            links,
            client_links,
        }
    }

    /// Where clients should dial each broker's address instead.
    fn client_overrides(&self) -> HashMap<String, String> {
        client_overrides(&self.brokers, &self.client_links)
    }

    /// Applies `injection`; returns what is worth adding to its label.
    async fn begin(
        &mut self,
        injection: &Injection,
        client: &Arc<client::Cluster>,
        leaders_now: &std::collections::BTreeMap<u32, u64>,
    ) -> String {
        let victim = injection.victim;
        let process = victim as usize - 1;
        let next = self.next_after(victim);
        match injection.fault {
            Fault::Kill => self.brokers[process].kill9(),
            Fault::Pause => self.brokers[process].signal_pause(true),
            Fault::Isolate => self.isolate(victim, true),
            Fault::SlowLinks => self.slow(victim, injection.delay),
            Fault::Bridge => self.cut_between(victim, next, true),
            Fault::OneWay => self.cut_outgoing(victim, true),
            Fault::ClientCut => self.client_links[&victim].cut(),
            Fault::TornTail => {
                self.damage_storage(victim, |dir| truncate_active_segment(dir, 37))
                    .await
            }
            Fault::BitFlip => {
                self.damage_storage(victim, |dir| flip_bit_in_active_segment(dir, 0.5))
                    .await
            }
            Fault::IndexLoss => self.damage_storage(victim, delete_index_files).await,
            Fault::LeaderTransfer => {
                let led = leaders_now.iter().find(|(_, leader)| **leader == victim);
                if let Some((partition, _)) = led {
                    // To the next broker when it holds a replica (always with three brokers),
                    // else to another replica (with moves, replicas are not every broker).
                    let replicas = replica_sets(client, TOPIC).await.remove(partition).unwrap_or_default();
                    let next = if replicas.contains(&next) {
                        next
                    } else {
                        replicas.into_iter().find(|id| *id != victim).unwrap_or(next)
                    };
                    let outcome = client.transfer_leadership(TOPIC, *partition, next).await;
                    return format!(" (partition {partition} to broker {next}: {outcome:?})");
                }
            }
            Fault::MoveReplica => {
                let partition = injection.partition;
                let replicas = replica_sets(client, TOPIC).await.remove(&partition).unwrap_or_default();
                let out = if replicas.contains(&victim) {
                    victim
                } else {
                    replicas[partition as usize % replicas.len().max(1)]
                };
                let Some(into) = (1..=self.brokers.len() as u64).find(|id| !replicas.contains(id)) else {
                    return " (no broker to move to)".into();
                };
                let target: Vec<u64> = replicas.iter().map(|id| if *id == out { into } else { *id }).collect();
                let outcome = Admin::new(Arc::clone(client))
                    .reassign_partitions(vec![PartitionReplicas {
                        topic: TOPIC.into(),
                        partition,
                        replicas: target.clone(),
                    }])
                    .await;
                return format!(" ({replicas:?} -> {target:?}: {outcome:?})");
            }
            Fault::Decommission => {
                let outcome = Admin::new(Arc::clone(client)).decommission_broker(victim).await;
                return format!(" ({outcome:?})");
            }
        }
        String::new()
    }

    /// The broker after `broker`, wrapping around: the other end of a bridge, where a leader
    /// transfer goes.
    fn next_after(&self, broker: u64) -> u64 {
        broker % self.brokers.len() as u64 + 1
    }

    /// Undoes `injection`; returns what is worth adding to its label.
    async fn end(&mut self, injection: &Injection, client: &Arc<client::Cluster>) -> String {
        let victim = injection.victim;
        let process = victim as usize - 1;
        let next = self.next_after(victim);
        match injection.fault {
            Fault::Kill | Fault::TornTail | Fault::BitFlip | Fault::IndexLoss => self.brokers[process].restart(),
            Fault::Pause => self.brokers[process].signal_pause(false),
            Fault::Isolate => self.isolate(victim, false),
            Fault::SlowLinks => self.slow(victim, Duration::ZERO),
            Fault::Bridge => self.cut_between(victim, next, false),
            Fault::OneWay => self.cut_outgoing(victim, false),
            Fault::ClientCut => self.client_links[&victim].heal(),
            Fault::LeaderTransfer | Fault::MoveReplica => {}
            Fault::Decommission => {
                let outcome = Admin::new(Arc::clone(client)).recommission_broker(victim).await;
                return format!(" (recommissioned: {outcome:?})");
            }
        }
        String::new()
    }

    /// Kills `broker` and applies `damage` to each of its partition directories (`end` restarts
    /// it): a storage fault on one replica. Storage faults hit a minority: first every replica
    /// damaged before has its lost entries back — two replicas of three missing the same
    /// acknowledged entries is data loss no protocol recovers from (the partition would rightly
    /// stay without a leader).
    async fn damage_storage(&mut self, broker: u64, damage: impl Fn(&std::path::Path)) {
        let deadline = Instant::now() + Duration::from_secs(60);
        for process in &self.brokers {
            loop {
                let held = partitions_held_from_elections(&process.address, process.id, TOPIC).await;
                if held.as_ref().is_some_and(Vec::is_empty) {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "broker {} never recovered from its storage fault (held: {held:?})",
                    process.id
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        let process = &mut self.brokers[broker as usize - 1];
        process.kill9();
        // Only the replicas it holds (with moves, not every partition), and not one whose
        // directory a finished move is deleting.
        for partition in 0..PARTITIONS {
            if let Some(dir) = hosted_partition_dir(process, partition) {
                damage(&dir);
            }
        }
    }

    fn links_of(&self, broker: u64) -> impl Iterator<Item = &FaultProxy> {
        self.links
            .iter()
            .filter(move |((from, to), _)| *from == broker || *to == broker)
            .map(|(_, proxy)| proxy)
    }

    fn slow(&self, broker: u64, delay: Duration) {
        for proxy in self.links_of(broker) {
            proxy.set_delay(delay);
        }
    }

    /// Cuts (or heals) both links between `a` and `b`.
    fn cut_between(&self, a: u64, b: u64, cut: bool) {
        for link in [(a, b), (b, a)] {
            if cut {
                self.links[&link].cut();
            } else {
                self.links[&link].heal();
            }
        }
    }

    /// Cuts (or heals) the links `broker` dials: it cannot reach its peers, they still reach it.
    fn cut_outgoing(&self, broker: u64, cut: bool) {
        for ((from, _), proxy) in &self.links {
            if *from == broker {
                if cut {
                    proxy.cut();
                } else {
                    proxy.heal();
                }
            }
        }
    }

    fn isolate(&self, broker: u64, cut: bool) {
        for ((from, to), proxy) in &self.links {
            if *from == broker || *to == broker {
                if cut {
                    proxy.cut();
                } else {
                    proxy.heal();
                }
            }
        }
    }
}

async fn run(plan: Plan) {
    let seed = plan.seed;
    let started = Instant::now();
    // Kept if anything fails (a panic anywhere, not only an anomaly); removed after a clean run.
    let root = tempfile::tempdir().unwrap().keep();
    println!("seed {seed}: broker data and logs in {}", root.display());
    // The clients' own log (`NEMESIS_CLIENT_LOG`, a `RUST_LOG` filter), for one seed at a time:
    // the first run in the process owns the file.
    if let Ok(filter) = std::env::var("NEMESIS_CLIENT_LOG") {
        let file = std::fs::File::create(root.join("client.log")).unwrap();
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::sync::Mutex::new(file))
            .with_ansi(false)
            .try_init();
    }
    let _alone = ONE_AT_A_TIME.lock().await;
    let mut cluster = Cluster::start(&root, plan.brokers, plan.tls).await;
    let client = connect_when_ready(&cluster.brokers, cluster.client_overrides()).await;
    create_topic(&client, NewTopic::new(TOPIC, PARTITIONS, 3)).await;
    let history = Arc::new(Recorder::default());
    let stop = Arc::new(AtomicBool::new(false));
    let silent = Arc::new(AtomicBool::new(false));

    let mut workers = Vec::new();
    for process in 1..=PRODUCERS {
        let plan = ProducerPlan {
            process,
            topic: TOPIC.into(),
            partitions: PARTITIONS,
            pause_every: plan.sends_per_pause,
            silent: Arc::clone(&silent),
            sent: Arc::default(),
        };
        let (client, history, stop) = (Arc::clone(&client), Arc::clone(&history), Arc::clone(&stop));
        workers.push(spawn_producer(client, plan, history, stop));
    }
    for process in CONSUMERS {
        let from = if process == CONSUMERS[0] {
            SeekTo::Offset(0)
        } else {
            SeekTo::Latest
        };
        let (client, history, stop) = (Arc::clone(&client), Arc::clone(&history), Arc::clone(&stop));
        workers.push(spawn_consumer(
            client,
            process,
            (TOPIC, PARTITIONS),
            from,
            history,
            stop,
        ));
    }

    let group_seen: GroupSeen = Arc::default();
    let stop_members = Arc::new(AtomicBool::new(false));
    let mut members = Vec::new();
    // The zombie's own links, each in front of a broker's client link (so faults that cut
    // clients off cut it off too).
    let mut zombie_links = Vec::new();
    let mut zombie_overrides = HashMap::new();
    for broker in &cluster.brokers {
        let proxy = FaultProxy::start(cluster.client_links[&broker.id].address).await;
        zombie_overrides.insert(broker.address.clone(), proxy.address.to_string());
        zombie_links.push(proxy);
    }
    let zombie_client = connect_when_ready(&cluster.brokers, zombie_overrides).await;
    // Timed from now: `started` includes the wait for the other seeds' clusters.
    let zombie_cuts = spawn_zombie_cuts(zombie_links, Arc::clone(&stop), Instant::now());
    for process in MEMBERS {
        let plan = MemberPlan {
            process,
            group: GROUP.into(),
            topic: TOPIC.into(),
            rejoin_every: (process == MEMBERS[2]).then_some(MEMBER_REJOIN),
        };
        let client = if process == ZOMBIE { &zombie_client } else { &client };
        let (client, history) = (Arc::clone(client), Arc::clone(&history));
        let (seen, stop) = (Arc::clone(&group_seen), Arc::clone(&stop_members));
        members.push(spawn_member(client, plan, history, seen, stop));
    }

    let mut schedule = Schedule(seed.max(1));
    let mut faults = Vec::new();
    tokio::time::sleep(Duration::from_millis(500)).await;
    // The first steps cover every kind of fault once, in a seeded order; then any.
    let mut kinds = plan.kinds.to_vec();
    for i in (1..kinds.len()).rev() {
        kinds.swap(i, schedule.below(i as u64 + 1) as usize);
    }
    let budget = plan.minutes.map(|m| started + Duration::from_secs_f64(m * 60.0));
    for step in 0.. {
        if plan.steps.is_some_and(|steps| step >= steps) || budget.is_some_and(|end| Instant::now() >= end) {
            break;
        }
        let fault = match kinds.get(step) {
            Some(fault) => *fault,
            None => plan.kinds[schedule.below(plan.kinds.len() as u64) as usize],
        };
        let leaders_now = leaders(&client, TOPIC).await;
        // Half the time hit a partition leader, otherwise any broker.
        let victim = if schedule.below(2) == 0 {
            leaders_now[&(schedule.below(u64::from(PARTITIONS)) as u32)]
        } else {
            schedule.below(plan.brokers) + 1
        };
        let hold = Duration::from_millis(500 + schedule.below(1500));
        let delay = match fault {
            Fault::SlowLinks => Duration::from_millis(50 + schedule.below(250)),
            _ => Duration::ZERO,
        };
        let partition = match fault {
            Fault::MoveReplica => schedule.below(u64::from(PARTITIONS)) as u32,
            _ => 0,
        };
        let mut injections = vec![Injection {
            fault,
            victim,
            delay,
            partition,
        }];
        if plan.combine && schedule.below(3) == 0 {
            // A second, concurrent fault on another broker. Never a second storage fault: two
            // damaged replicas at once is a majority storage fault (see `damage_storage`).
            let others: Vec<Fault> = plan.kinds.iter().copied().filter(|f| !f.is_storage()).collect();
            let fault = others[schedule.below(others.len() as u64) as usize];
            let victim = (victim + schedule.below(plan.brokers - 1)) % plan.brokers + 1;
            let delay = Duration::from_millis(50 + schedule.below(250));
            injections.push(Injection {
                fault,
                victim,
                delay,
                partition: (victim % u64::from(PARTITIONS)) as u32,
            });
        }
        let mut label = injections.iter().map(|i| i.describe()).collect::<Vec<_>>().join(" + ");
        label.push_str(&format!(" for {hold:?}"));
        if plan.quiet_stretches {
            silent.store(step % 2 == 1, Ordering::SeqCst);
            if step % 2 == 1 {
                let quiet = cluster.wait_until_quiet(&client, QUIET_WAIT).await;
                label.push_str(&format!(" (quiet: {quiet}/{PARTITIONS} partitions on every broker)"));
            }
        }
        println!("{:>8.1}s step {step}: {label}", started.elapsed().as_secs_f64());
        for injection in &injections {
            label.push_str(&cluster.begin(injection, &client, &leaders_now).await);
        }
        tokio::time::sleep(hold).await;
        for injection in injections.iter().rev() {
            let ended = cluster.end(injection, &client).await;
            label.push_str(&ended);
        }
        faults.push(label);
        leaders(&client, TOPIC).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::SeqCst);
    for worker in workers {
        worker.await.unwrap();
    }
    let (zombie_cuts, _zombie_links) = zombie_cuts.await.unwrap();

    // Healed: wait until every move has finished (or was cancelled) and every replica holds
    // its leader's last entry, then read everything.
    let deadline = Instant::now() + Duration::from_secs(60);
    let admin = Admin::new(Arc::clone(&client));
    loop {
        let moving = admin.list_reassignments().await.map_or(usize::MAX, |moves| moves.len());
        let metadata = client.describe_topics(vec![TOPIC.into()]).await.unwrap();
        if moving == 0 && metadata.topics[0].partitions.iter().all(|p| p.caught_up.len() == 3) {
            break;
        }
        if Instant::now() >= deadline {
            let mut views = Vec::new();
            for process in &cluster.brokers {
                views.push((process.id, describe_on(&process.address, TOPIC).await));
            }
            panic!(
                "replicas never caught up after healing ({moving} moves unfinished); leaders' view: {:?}; \
                 each broker's own view: {views:?}",
                metadata.topics[0].partitions
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let final_offsets = record_final_reads(&client, (TOPIC, PARTITIONS), CHECKER, &history).await;
    // The group consumes everything before its members stop (if not, the checker says what
    // it missed).
    let caught_up = Instant::now() + GROUP_CATCH_UP;
    loop {
        let missing: usize = {
            let seen = group_seen.lock().unwrap();
            final_offsets
                .iter()
                .map(|(partition, offsets)| {
                    let seen = seen.get(partition);
                    offsets.iter().filter(|o| !seen.is_some_and(|s| s.contains(o))).count()
                })
                .sum()
        };
        if missing == 0 {
            break;
        }
        if Instant::now() >= caught_up {
            println!("the group has not consumed {missing} records after {GROUP_CATCH_UP:?}");
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop_members.store(true, Ordering::SeqCst);
    for member in members {
        member.await.unwrap();
    }
    // Every replica's log compared: the replicas the partition has now (with moves, not every
    // broker holds every partition; a dropped replica's data is gone).
    let final_replicas = replica_sets(&client, TOPIC).await;
    stop_all_at_once(&mut cluster.brokers);
    for partition in 0..PARTITIONS {
        let hosts = &final_replicas[&partition];
        for broker in cluster.brokers.iter().filter(|b| hosts.contains(&b.id)) {
            let digest = log_digest(&partition_dir(broker, TOPIC, partition));
            history.record(
                CHECKER,
                Outcome::Ok,
                Operation::ReplicaLog {
                    partition,
                    broker: broker.id,
                    digest,
                },
            );
        }
    }

    let events = history.events();
    let report = check(&events);
    let summary = summary(&plan, started.elapsed(), &faults, zombie_cuts, &report);
    println!("{summary}");
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/nemesis-histories");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("summary-seed-{seed}.txt")), &summary).unwrap();
    // The history (and the brokers' data and logs) is kept when something is wrong, or on
    // request (`NEMESIS_KEEP_HISTORY=1`).
    let path = dir.join(format!("seed-{seed}.jsonl"));
    if !report.is_clean() || std::env::var_os("NEMESIS_KEEP_HISTORY").is_some() {
        write_jsonl(&path, &events).unwrap();
    }
    if !report.is_clean() {
        panic!(
            "anomalies with seed {seed} (history: {}, broker data kept in {})",
            path.display(),
            root.display()
        );
    }
    assert!(report.sends.1 > 1000, "too little was acknowledged to test anything");
    drop(cluster);
    if std::env::var_os("NEMESIS_KEEP_HISTORY").is_none() {
        let _ = std::fs::remove_dir_all(&root);
    }
}

/// `broker`'s directory of `partition`, if it holds a replica of it.
fn hosted_partition_dir(broker: &BrokerProcess, partition: u32) -> Option<std::path::PathBuf> {
    let prefix = format!("{TOPIC}-{partition}-g");
    std::fs::read_dir(broker.data_dir.join("partitions"))
        .ok()?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .find(|path| {
            path.file_name()
                .is_some_and(|name| name.to_string_lossy().starts_with(&prefix))
        })
}

/// What a run did, for people: the plan, faults by kind, operations and anomalies.
fn summary(
    plan: &Plan,
    elapsed: Duration,
    faults: &[String],
    zombie_cuts: usize,
    report: &cluster_tests::checker::Report,
) -> String {
    let mut by_kind: std::collections::BTreeMap<&str, usize> = std::collections::BTreeMap::new();
    for injection in faults.iter().flat_map(|step| step.split(" + ")) {
        *by_kind.entry(injection.split(' ').next().unwrap_or("?")).or_default() += 1;
    }
    format!(
        "seed {}: {:.1} minutes, {} steps, faults by kind {by_kind:?}, group member {ZOMBIE} cut off \
         {zombie_cuts} times for {ZOMBIE_CUT:?}\nschedule: {faults:?}\n{report}",
        plan.seed,
        elapsed.as_secs_f64() / 60.0,
        faults.len()
    )
}

/// Cuts the zombie's links now and then until `stop` (then heals them); returns how many times,
/// and the links (the zombie still needs them until the group has caught up).
fn spawn_zombie_cuts(
    links: Vec<FaultProxy>,
    stop: Arc<AtomicBool>,
    from: Instant,
) -> tokio::task::JoinHandle<(usize, Vec<FaultProxy>)> {
    tokio::spawn(async move {
        // Sleeps until `until`; false if `stop` came first.
        let wait = |until: Instant| {
            let stop = Arc::clone(&stop);
            async move {
                while Instant::now() < until {
                    if stop.load(Ordering::SeqCst) {
                        return false;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                true
            }
        };
        let mut cuts = 0;
        let mut next = from + ZOMBIE_FIRST;
        while wait(next).await {
            println!(
                "{:>8.1}s (of the workload) group member {ZOMBIE} cut off for {ZOMBIE_CUT:?}",
                from.elapsed().as_secs_f64()
            );
            links.iter().for_each(FaultProxy::cut);
            cuts += 1;
            let healed = wait(Instant::now() + ZOMBIE_CUT).await;
            links.iter().for_each(FaultProxy::heal);
            if !healed {
                break;
            }
            next = Instant::now() + ZOMBIE_EVERY;
        }
        (cuts, links)
    })
}

fn short(seed: u64, steps: usize, kinds: &'static [Fault], combine: bool) -> Plan {
    Plan {
        seed,
        steps: Some(steps),
        minutes: None,
        sends_per_pause: 20,
        kinds,
        brokers: 3,
        combine,
        quiet_stretches: false,
        tls: false,
    }
}

/// Every kind of fault at least once (seed 1 found no bug of its own).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_anomalies_under_kills_pauses_partitions_and_torn_tails_seed_1() {
    run(short(1, 8, CLASSIC, false)).await;
}

/// The seed that found acknowledged writes lost (a replica with a torn tail voted before it
/// had caught up), duplicates and one log id holding two batches (a leader restarted with a
/// torn tail resumed its old term). Deterministic versions: `tests/storage_faults.rs`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_anomalies_with_the_schedule_that_found_lost_writes_seed_4() {
    run(short(4, 10, CLASSIC, false)).await;
}

/// Every kind of fault, including slow, one-way and bridged links, clients cut off, leader
/// transfers, bit flips and lost index files — some steps two at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_anomalies_under_every_kind_of_fault_seed_5() {
    run(short(5, 14, ALL, true)).await;
}

/// Every kind of fault, every other step striking once producers have fallen silent and the
/// partitions quiesced: faults hit quiet groups (timers stopped, liveness from the per-peer
/// failure detector) and groups waking up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_anomalies_when_faults_hit_quiet_partitions_seed_6() {
    run(Plan {
        quiet_stretches: true,
        ..short(6, 12, ALL, true)
    })
    .await;
}

/// Every kind of fault on four brokers, with replicas moving: one replica of a partition to the
/// broker that holds none, a broker decommissioned and recommissioned (its unfinished moves
/// cancelled) — while brokers are killed, paused, cut off and have their storage damaged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_anomalies_while_replicas_move_under_every_kind_of_fault_seed_8() {
    run(Plan {
        brokers: 4,
        ..short(8, 14, WITH_MOVES, true)
    })
    .await;
}

/// Every kind of fault with TLS on: brokers speak mutual TLS to each other (through the fault
/// proxies), clients and group members TLS with a client certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_anomalies_with_tls_under_every_kind_of_fault_seed_9() {
    run(Plan {
        tls: true,
        ..short(9, 10, ALL, true)
    })
    .await;
}

/// Long runs, through `cluster-tests/run-soak.sh --minutes M --seed S` (or set `NEMESIS_SEED`
/// and `NEMESIS_MINUTES` — or `NEMESIS_STEPS` — and run this ignored test).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn soak_from_the_environment() {
    let var = |name: &str| std::env::var(name).ok();
    let seed = var("NEMESIS_SEED").and_then(|s| s.parse().ok()).unwrap_or(7);
    let steps = var("NEMESIS_STEPS").and_then(|s| s.parse().ok());
    let minutes = var("NEMESIS_MINUTES").and_then(|s| s.parse().ok());
    let moves = var("NEMESIS_MOVES").is_some_and(|v| v == "1");
    run(Plan {
        seed,
        steps: if steps.is_none() && minutes.is_none() {
            Some(100)
        } else {
            steps
        },
        minutes,
        sends_per_pause: 2,
        kinds: if moves { WITH_MOVES } else { ALL },
        brokers: if moves { 4 } else { 3 },
        combine: true,
        quiet_stretches: var("NEMESIS_QUIET_STRETCHES").is_some_and(|v| v == "1"),
        tls: var("NEMESIS_TLS").is_some_and(|v| v == "1"),
    })
    .await;
}
