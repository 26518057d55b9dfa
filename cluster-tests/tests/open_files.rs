//! Many partitions under a small open-file limit, on real broker processes started through
//! `prlimit` (soft and hard limit 1024, so a broker cannot raise it) with a budget of
//! `--max-open-files 128`:
//!
//! - 300 partitions (RF=3: 300 replicas per broker, which used to need four descriptors each,
//!   1,200 in all) all elect a leader; a record produced to each (acks=all) is read back;
//! - each broker keeps its partition-log files within the budget (counted in
//!   `/proc/<pid>/fd`), and its total descriptors under the limit;
//! - once the partitions are quiet (`--close-idle-files-ms 1000`), their replicas hold no
//!   descriptor at all;
//! - reopening log files failing with EMFILE (the `file-open` fault point) on a follower stalls
//!   its writes without stopping any Raft group: the majority goes on acknowledging, and when
//!   descriptors return the follower catches up and serves every record as leader;
//! - while producers keep writing to every partition, closing standard input and SIGTERM each
//!   stop a broker within the bound.

use client::{Acks, Cluster, Consumer, ConsumerConfig, SeekTo};
use cluster_tests::{
    clear_failpoint, connect_when_ready, create_topic, describe_on, leaders, metric, one_record_batch, set_failpoint,
    start_cluster_with_admin_limited, BrokerProcess,
};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const TOPIC: &str = "many";
const PARTITIONS: u32 = 300;
const OPEN_FILE_LIMIT: u64 = 1024;
const MAX_OPEN_FILES: usize = 128;

/// Produces `{tag}-{partition}` to each of `partitions` with acks=all, 50 at a time.
async fn produce_to(cluster: &Arc<Cluster>, partitions: &[u32], tag: &str) {
    for chunk in partitions.chunks(50) {
        let writes = chunk.iter().map(|&partition| {
            let cluster = Arc::clone(cluster);
            let value = format!("{tag}-{partition}");
            async move {
                cluster
                    .produce(TOPIC, partition, Acks::All, one_record_batch(&value))
                    .await
                    .unwrap_or_else(|e| panic!("{value}: acks=all: {e}"));
            }
        });
        futures_util::future::join_all(writes).await;
    }
}

/// Every record of every partition, by partition, once `expected` records were read.
async fn read_all(cluster: &Arc<Cluster>, expected: usize) -> BTreeMap<u32, Vec<String>> {
    let mut consumer = Consumer::new(Arc::clone(cluster), ConsumerConfig::default());
    consumer
        .assign((0..PARTITIONS).map(|p| (TOPIC.to_string(), p)).collect())
        .await
        .expect("assign");
    for partition in 0..PARTITIONS {
        consumer.seek(TOPIC, partition, SeekTo::Earliest).await.expect("seek");
    }
    let mut read: BTreeMap<u32, Vec<String>> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while read.values().map(Vec::len).sum::<usize>() < expected {
        assert!(Instant::now() < deadline, "read only {read:?}");
        for record in consumer.poll(Duration::from_secs(2)).await.expect("poll") {
            let value = String::from_utf8_lossy(record.value.as_deref().unwrap_or_default()).into_owned();
            read.entry(record.partition).or_default().push(value);
        }
    }
    read
}

/// The descriptors of process `pid`: all of them, and those on partition-log files (segment
/// files `<index>.log` and acknowledged marks) under `data_dir` (not its `broker.log`), and
/// those among these of the test topic's replicas.
fn descriptors(pid: u32, data_dir: &Path) -> (usize, usize, usize) {
    let topic_dirs = data_dir.join("partitions").join(format!("{TOPIC}-"));
    let topic_dirs = topic_dirs.to_string_lossy().into_owned();
    let (mut total, mut log_files, mut topic_files) = (0, 0, 0);
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd")).expect("listing /proc/<pid>/fd") {
        let Ok(entry) = entry else { continue };
        total += 1;
        if let Ok(target) = std::fs::read_link(entry.path()) {
            let name = target.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            let segment = name
                .strip_suffix(".log")
                .is_some_and(|stem| stem.bytes().all(|b| b.is_ascii_digit()));
            if target.starts_with(data_dir) && (segment || name == "acknowledged.mark") {
                log_files += 1;
                topic_files += usize::from(target.to_string_lossy().starts_with(&topic_dirs));
            }
        }
    }
    (total, log_files, topic_files)
}

fn assert_within_budget(brokers: &[BrokerProcess]) {
    for broker in brokers {
        let pid = broker.pid().expect("running");
        let (total, log_files, _) = descriptors(pid, &broker.data_dir);
        assert!(
            log_files <= MAX_OPEN_FILES,
            "broker {} holds {log_files} log files open (budget {MAX_OPEN_FILES})",
            broker.id
        );
        assert!(
            (total as u64) < OPEN_FILE_LIMIT,
            "broker {} holds {total} descriptors",
            broker.id
        );
    }
}

/// The high watermark broker `address` reports for each partition it knows a value of.
async fn own_high_watermarks(address: &str) -> BTreeMap<u32, u64> {
    describe_on(address, TOPIC)
        .await
        .map(|d| {
            d.partitions
                .into_iter()
                .filter_map(|p| p.high_watermark.map(|hw| (p.partition, hw)))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundreds_of_replicas_per_broker_run_within_a_small_descriptor_budget() {
    let root = tempfile::tempdir().unwrap();
    let budget = MAX_OPEN_FILES.to_string();
    let (mut brokers, addresses, admins) = start_cluster_with_admin_limited(
        root.path(),
        3,
        &["--max-open-files", &budget, "--close-idle-files-ms", "1000"],
        Some(OPEN_FILE_LIMIT),
    );
    let cluster = connect_when_ready(&brokers, HashMap::new()).await;
    create_topic(&cluster, client::NewTopic::new(TOPIC, PARTITIONS, 3)).await;
    let all: Vec<u32> = (0..PARTITIONS).collect();
    assert_eq!(leaders(&cluster, TOPIC).await.len(), PARTITIONS as usize);

    // 1. Every partition takes a write and serves it back, within the budget.
    produce_to(&cluster, &all, "first").await;
    let read = read_all(&cluster, all.len()).await;
    for partition in &all {
        assert_eq!(read[partition], vec![format!("first-{partition}")]);
    }
    assert_within_budget(&brokers);
    for admin in &admins {
        assert!(metric(admin, "storage_open_files").await <= MAX_OPEN_FILES as f64);
        assert!(
            metric(admin, "storage_file_evictions_total").await > 0.0,
            "the budget closed files"
        );
    }

    // 2. A follower cannot reopen files (EMFILE): its writes wait, nothing stops, the
    //    majority acknowledges; once descriptors return it catches up.
    let leaders_now = leaders(&cluster, TOPIC).await;
    let starved = 2u64;
    let (starved_address, starved_admin) = (&addresses[1], &admins[1]);
    let followed: Vec<u32> = all.iter().copied().filter(|p| leaders_now[p] != starved).collect();
    let retries_before = metric(starved_admin, "storage_append_retries_total").await;
    set_failpoint(starved_admin, "file-open", "return(emfile)").await;
    produce_to(&cluster, &followed, "starved").await;
    assert!(
        metric(starved_admin, "storage_append_retries_total").await > retries_before,
        "the follower met EMFILE and retried"
    );
    clear_failpoint(starved_admin, "file-open").await;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let behind: Vec<u32> = {
            let marks = own_high_watermarks(starved_address).await;
            followed
                .iter()
                .copied()
                .filter(|p| marks.get(p).is_none_or(|hw| *hw < 2))
                .collect()
        };
        if behind.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "broker {starved} never caught up on {behind:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // It serves what it missed as leader (a sample of the partitions it followed).
    for &partition in followed.iter().step_by(followed.len() / 5) {
        cluster
            .transfer_leadership(TOPIC, partition, starved)
            .await
            .unwrap_or_else(|e| panic!("leadership of {partition} to broker {starved}: {e}"));
    }
    let read = read_all(&cluster, all.len() + followed.len()).await;
    for partition in &all {
        let mut expected = vec![format!("first-{partition}")];
        if followed.contains(partition) {
            expected.push(format!("starved-{partition}"));
        }
        assert_eq!(read[partition], expected, "partition {partition}");
    }
    assert_within_budget(&brokers);

    // 3. Quiet partitions hold no descriptor: a file unused for a second is closed.
    for broker in &brokers {
        let pid = broker.pid().expect("running");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (_, _, topic_files) = descriptors(pid, &broker.data_dir);
            if topic_files == 0 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "broker {} still holds {topic_files} files of quiet partitions",
                broker.id
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    // 4. Under write load on every partition, standard input closing and SIGTERM each stop a
    //    broker within the bound (the 3 s drain plus closing logs, well under 15 s).
    let writing = Arc::new(AtomicBool::new(true));
    let load = {
        let (cluster, writing) = (Arc::clone(&cluster), Arc::clone(&writing));
        tokio::spawn(async move {
            let mut round = 0;
            while writing.load(Ordering::Relaxed) {
                for partition in 0..PARTITIONS {
                    // Refusals while brokers stop are expected; only the stop's bound is checked.
                    let _ = cluster
                        .produce(
                            TOPIC,
                            partition,
                            Acks::Leader,
                            one_record_batch(&format!("load-{round}")),
                        )
                        .await;
                }
                round += 1;
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (_, _, topic_files) = descriptors(brokers[2].pid().expect("running"), &brokers[2].data_dir);
    assert!(topic_files > 0, "partitions being written hold their files open again");
    let started = Instant::now();
    brokers[0].close_stdin();
    let status = brokers[0]
        .wait_for_exit(Duration::from_secs(20))
        .expect("stdin close stops the broker");
    assert!(status.success(), "{status}");
    assert!(started.elapsed() < Duration::from_secs(15), "{:?}", started.elapsed());
    let started = Instant::now();
    brokers[1].signal("TERM");
    let status = brokers[1]
        .wait_for_exit(Duration::from_secs(20))
        .expect("SIGTERM stops the broker");
    assert!(started.elapsed() < Duration::from_secs(15), "{:?}", started.elapsed());
    assert!(status.success(), "{status}");
    writing.store(false, Ordering::Relaxed);
    load.abort();
}
