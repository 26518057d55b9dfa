//! Harness for tests that run real `broker` processes on loopback: start, kill -9, restart,
//! stop them, and find the binary (built on demand so the tests never run a stale one); and a
//! fault-injecting TCP proxy ([`proxy`]) to put between clients (or brokers) and brokers; the
//! history recorder ([`history`]), a consumer-group member that records into it
//! ([`group_member`]), and the checker that finds anomalies in it ([`checker`]).

pub mod checker;
pub mod email;
pub mod group_member;
pub mod history;
pub mod proxy;
pub mod workload;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;

/// The `broker` binary of this workspace. `cargo test --workspace` builds it before any test
/// runs; when it is missing or older than the sources (e.g. `cargo test -p cluster-tests` after
/// an edit), it is built here first, so a test never runs a stale broker.
pub fn broker_binary() -> PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY
        .get_or_init(|| workspace_binary("broker", &["broker", "client", "proto"], &["--features", "failpoints"]))
        .clone()
}

/// The `email-reports` binary, built on demand like [`broker_binary`].
pub fn email_reports_binary() -> PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY
        .get_or_init(|| workspace_binary("email-reports", &["client", "proto"], &[]))
        .clone()
}

/// Binary `name` of the workspace package of the same name, rebuilt first when any file under
/// `source_dirs` (workspace-relative) is newer, with `build_args` (the features the workspace
/// build gives it, so both builds agree).
fn workspace_binary(name: &str, source_dirs: &[&str], build_args: &[&str]) -> PathBuf {
    // Test binaries live in target/<profile>/deps; binaries one level up.
    let exe = std::env::current_exe().expect("test binary path");
    let profile_dir = exe.parent().and_then(Path::parent).expect("target/<profile>");
    let binary = profile_dir.join(name);
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root");
    let built = std::fs::metadata(&binary).and_then(|m| m.modified()).ok();
    let newest_source = source_dirs
        .iter()
        .filter_map(|dir| newest_modification(&workspace.join(dir)))
        .max();
    if built.is_none() || newest_source > built {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--quiet", "-p", name, "--bin", name])
            .args(build_args)
            .status()
            .expect("running cargo build");
        assert!(status.success(), "building the {name} binary failed");
    }
    assert!(binary.exists(), "no {name} binary at {}", binary.display());
    binary
}

/// The newest modification time of any file under `dir` (sources, manifests, protos).
fn newest_modification(dir: &Path) -> Option<std::time::SystemTime> {
    let mut newest = None;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let modified = if path.is_dir() {
            newest_modification(&path)
        } else {
            entry.metadata().and_then(|m| m.modified()).ok()
        };
        newest = newest.max(modified);
    }
    newest
}

/// Runs the `broker` CLI against the broker at `bootstrap` with `args`; panics (with its
/// output) unless it succeeds, and returns what it printed.
pub fn run_cli_ok(bootstrap: &str, args: &[&str]) -> String {
    let output = Command::new(broker_binary())
        .args(["--bootstrap", bootstrap])
        .args(args)
        .output()
        .expect("running the broker CLI");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "broker {args:?} failed: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// Each partition of `topic`'s replicas, as the metadata records them (asked again while no
/// broker answered knows the topic, up to 30 s: one that has just joined may not have it yet).
pub async fn replica_sets(cluster: &client::Cluster, topic: &str) -> std::collections::BTreeMap<u32, Vec<u64>> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        if let Ok(metadata) = cluster.metadata(vec![topic.to_string()]).await {
            if let Some(found) = metadata
                .topics
                .iter()
                .find(|t| t.name == topic && !t.partitions.is_empty())
            {
                return found
                    .partitions
                    .iter()
                    .map(|p| (p.partition, p.replicas.clone()))
                    .collect();
            }
        }
        assert!(std::time::Instant::now() < deadline, "no broker knows {topic}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Free loopback ports for brokers: below the kernel's ephemeral range, so that no outgoing
/// connection and no port-0 bind (a proxy, a client) can take one between this check and the
/// broker's bind, or while a killed broker is down (both happened with ports the kernel had
/// handed out); distinct within this process, and checked free when chosen.
pub fn free_ports(count: usize) -> Vec<u16> {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let ephemeral_start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32_768);
    let span = 12_000.min(ephemeral_start.saturating_sub(1_024));
    let first = ephemeral_start - span;
    // Processes (test binaries) start at different places in the span.
    let offset = std::process::id() * 97;
    let mut ports = Vec::with_capacity(count);
    for _ in 0..span {
        if ports.len() == count {
            break;
        }
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let port = (first + offset.wrapping_add(n) % span) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            ports.push(port);
        }
    }
    assert_eq!(ports.len(), count, "no {count} free ports below {ephemeral_start}");
    ports
}

/// One broker process of a test cluster.
pub struct BrokerProcess {
    /// Node id.
    pub id: u64,
    /// `127.0.0.1:port`.
    pub address: String,
    /// Its data directory (kept across restarts).
    pub data_dir: PathBuf,
    peers: String,
    extra_args: Vec<String>,
    /// The open-file limit (soft and hard) the process starts with, set through `prlimit`.
    open_file_limit: Option<u64>,
    child: Option<Child>,
}

impl BrokerProcess {
    /// Starts broker `id` of a cluster whose peers are `peers` (`id=addr,...`).
    pub fn start(id: u64, address: String, data_dir: PathBuf, peers: String) -> BrokerProcess {
        Self::start_with(id, address, data_dir, peers, Vec::new())
    }

    /// Like [`start`](Self::start), with extra `broker serve` arguments (kept for restarts).
    pub fn start_with(
        id: u64,
        address: String,
        data_dir: PathBuf,
        peers: String,
        extra_args: Vec<String>,
    ) -> BrokerProcess {
        Self::launch(id, address, data_dir, peers, extra_args, None)
    }

    /// Like [`start_with`](Self::start_with), the process (and its restarts) limited to
    /// `open_file_limit` descriptors, soft and hard (so the broker cannot raise it).
    pub fn start_limited(
        id: u64,
        address: String,
        data_dir: PathBuf,
        peers: String,
        extra_args: Vec<String>,
        open_file_limit: u64,
    ) -> BrokerProcess {
        Self::launch(id, address, data_dir, peers, extra_args, Some(open_file_limit))
    }

    fn launch(
        id: u64,
        address: String,
        data_dir: PathBuf,
        peers: String,
        extra_args: Vec<String>,
        open_file_limit: Option<u64>,
    ) -> BrokerProcess {
        let mut process = BrokerProcess {
            id,
            address,
            data_dir,
            peers,
            extra_args,
            open_file_limit,
            child: None,
        };
        process.restart();
        process
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGSTOP (`pause = true`) or SIGCONT: the process freezes with its sockets open.
    pub fn signal_pause(&self, pause: bool) {
        self.signal(if pause { "STOP" } else { "CONT" });
    }

    /// Sends the signal named `name` (`TERM`, `INT`, `STOP`, ...) to the process.
    pub fn signal(&self, name: &str) {
        if let Some(child) = &self.child {
            let status = Command::new("kill")
                .args([&format!("-{name}"), &child.id().to_string()])
                .status()
                .expect("running kill");
            assert!(status.success(), "kill -{name} failed");
        }
    }

    /// Waits up to `timeout` for the process to end by itself: its exit status, or `None` if
    /// it still runs.
    pub fn wait_for_exit(&mut self, timeout: std::time::Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let child = self.child.as_mut()?;
            if let Some(status) = child.try_wait().expect("polling the broker process") {
                self.child = None;
                return Some(status);
            }
            if std::time::Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    /// (Re)starts the process on the same address and data.
    pub fn restart(&mut self) {
        self.restart_with_env(&[]);
    }

    /// (Re)starts the process on the same address and data, with `env` added to its
    /// environment (e.g. `FAILPOINTS`, fault points on from its start).
    pub fn restart_with_env(&mut self, env: &[(&str, &str)]) {
        assert!(self.child.is_none(), "broker {} is running", self.id);
        // prlimit sets the limit and execs the broker: the child's pid is the broker's.
        let mut command = match self.open_file_limit {
            Some(limit) => {
                let mut command = Command::new("prlimit");
                command.arg(format!("--nofile={limit}")).arg("--").arg(broker_binary());
                command
            }
            None => Command::new(broker_binary()),
        };
        let child = command
            .arg("serve")
            .args([
                "--node-id",
                &self.id.to_string(),
                "--listen",
                &self.address,
                "--peers",
                &self.peers,
            ])
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(&self.extra_args)
            .arg("--exit-on-stdin-close")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(broker_log(&self.data_dir))
            .env(
                "RUST_LOG",
                std::env::var("BROKER_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .envs(env.iter().copied())
            .spawn()
            .expect("starting a broker");
        self.child = Some(child);
    }

    /// The file this broker's log (stderr) goes to, across restarts; the level comes from
    /// `BROKER_LOG` (a `RUST_LOG` filter, default `warn`).
    pub fn log_path(&self) -> PathBuf {
        self.data_dir.join("broker.log")
    }

    /// SIGKILL: no chance to flush or close anything.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("kill -9");
            child.wait().expect("reaping the broker");
        }
    }

    /// Sends kill -9 without waiting for the process to go.
    fn signal_kill(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
        }
    }

    /// Clean stop: closing standard input asks the broker to shut down.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            drop(child.stdin.take());
            let status = child.wait().expect("waiting for the broker");
            assert!(status.success(), "broker {} exited with {status}", self.id);
        }
    }

    /// Closes the process's standard input (a clean stop request) without waiting for it.
    pub fn close_stdin(&mut self) {
        if let Some(child) = self.child.as_mut() {
            drop(child.stdin.take());
        }
    }

    /// Whether the process is running.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Brokers 1..=n on fresh loopback ports, each with its admin endpoint (`--admin-listen`) and
/// `extra_args`: the processes, their API addresses and their admin addresses.
pub fn start_cluster_with_admin(
    root: &Path,
    n: usize,
    extra_args: &[&str],
) -> (Vec<BrokerProcess>, Vec<String>, Vec<String>) {
    start_cluster_with_admin_limited(root, n, extra_args, None)
}

/// Like [`start_cluster_with_admin`], every process limited to `open_file_limit` descriptors.
pub fn start_cluster_with_admin_limited(
    root: &Path,
    n: usize,
    extra_args: &[&str],
    open_file_limit: Option<u64>,
) -> (Vec<BrokerProcess>, Vec<String>, Vec<String>) {
    let ports = free_ports(2 * n);
    let addresses: Vec<String> = ports[..n].iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let admins: Vec<String> = ports[n..].iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let peers = peers_flag(&addresses);
    let brokers = (0..n)
        .map(|i| {
            let mut args = vec!["--admin-listen".to_string(), admins[i].clone()];
            args.extend(extra_args.iter().map(|a| a.to_string()));
            let (id, address, data_dir) = (
                i as u64 + 1,
                addresses[i].clone(),
                root.join(format!("broker-{}", i + 1)),
            );
            match open_file_limit {
                Some(limit) => BrokerProcess::start_limited(id, address, data_dir, peers.clone(), args, limit),
                None => BrokerProcess::start_with(id, address, data_dir, peers.clone(), args),
            }
        })
        .collect();
    (brokers, addresses, admins)
}

/// The `--peers` value for brokers 1..=n at `addresses`: `1=addr,2=addr,...`.
pub fn peers_flag(addresses: &[String]) -> String {
    addresses
        .iter()
        .enumerate()
        .map(|(i, address)| format!("{}={address}", i + 1))
        .collect::<Vec<_>>()
        .join(",")
}

/// A cluster of `n` broker processes with data under `root`.
pub fn start_cluster(root: &Path, n: usize) -> Vec<BrokerProcess> {
    start_cluster_with(root, n, &[])
}

/// Like [`start_cluster`], with extra `broker serve` arguments for every broker.
pub fn start_cluster_with(root: &Path, n: usize, extra_args: &[&str]) -> Vec<BrokerProcess> {
    let ports = free_ports(n);
    let addresses: Vec<String> = ports.iter().map(|port| format!("127.0.0.1:{port}")).collect();
    let peers = peers_flag(&addresses);
    ports
        .iter()
        .enumerate()
        .map(|(i, port)| {
            BrokerProcess::start_with(
                i as u64 + 1,
                format!("127.0.0.1:{port}"),
                root.join(format!("broker-{}", i + 1)),
                peers.clone(),
                extra_args.iter().map(|a| a.to_string()).collect(),
            )
        })
        .collect()
}

/// How test clients reach the brokers at each address: plaintext unless a cluster started with
/// TLS registered its brokers here ([`ProxiedCluster::start_secured`]). Addresses are unique
/// per test (free ports), so tests running side by side do not mix.
static SECURED_ADDRESSES: std::sync::Mutex<Vec<(String, client::Security)>> = std::sync::Mutex::new(Vec::new());

/// The security test clients use for the broker at `address`.
pub fn security_of(address: &str) -> client::Security {
    SECURED_ADDRESSES
        .lock()
        .expect("secured addresses")
        .iter()
        .find(|(known, _)| known == address)
        .map(|(_, security)| security.clone())
        .unwrap_or_default()
}

/// A client of `brokers` (dialing through `overrides`, broker address → proxy address) once
/// every broker has registered with the controller.
pub async fn connect_when_ready(
    brokers: &[BrokerProcess],
    overrides: std::collections::HashMap<String, String>,
) -> std::sync::Arc<client::Cluster> {
    let bootstrap: Vec<String> = brokers.iter().map(|b| b.address.clone()).collect();
    let cluster = client::Cluster::new(bootstrap, client::RetryPolicy::default())
        .with_dial_overrides(overrides)
        .with_security(security_of(&brokers[0].address));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let registered = |m: client::MetadataResponse| m.brokers.iter().filter(|b| !b.address.is_empty()).count();
    while cluster.metadata(Vec::new()).await.map_or(0, registered) < brokers.len() {
        assert!(std::time::Instant::now() < deadline, "brokers never registered");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    std::sync::Arc::new(cluster)
}

/// Creates `topic` and waits until every partition has a leader ready for writes.
pub async fn create_topic(cluster: &client::Cluster, topic: client::NewTopic) {
    let name = topic.name.clone();
    let partitions = topic.partitions as usize;
    let spec = client::TopicSpec {
        name: topic.name,
        partitions: topic.partitions,
        replication_factor: topic.replication_factor,
        configs: topic.configs,
    };
    let results = cluster.create_topics(vec![spec]).await.expect("create topic");
    assert_eq!(results[0].error, 0, "{results:?}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        if let Ok(metadata) = cluster.describe_topics(vec![name.clone()]).await {
            let led = metadata.topics[0]
                .partitions
                .iter()
                .filter(|p| p.leader.is_some())
                .count();
            if led == partitions {
                return;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "partitions of {name} never all had leaders"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// The leader of each partition of `topic` (waits until all have one).
pub async fn leaders(cluster: &client::Cluster, topic: &str) -> std::collections::BTreeMap<u32, u64> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        if let Ok(metadata) = cluster.describe_topics(vec![topic.to_string()]).await {
            let partitions = &metadata.topics[0].partitions;
            let leaders: std::collections::BTreeMap<u32, u64> = partitions
                .iter()
                .filter_map(|p| p.leader.map(|l| (p.partition, l)))
                .collect();
            if !partitions.is_empty() && leaders.len() == partitions.len() {
                return leaders;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "partitions of {topic} never all had leaders"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Writes one record, `{tag}-{partition}`, to each of partitions `0..partitions` of `topic`
/// with acks=all; records what went where in `written`.
pub async fn write_each(
    cluster: &client::Cluster,
    topic: &str,
    partitions: u32,
    tag: &str,
    written: &mut std::collections::BTreeMap<u32, Vec<String>>,
) {
    for partition in 0..partitions {
        let value = format!("{tag}-{partition}");
        cluster
            .produce(topic, partition, client::Acks::All, one_record_batch(&value))
            .await
            .unwrap_or_else(|e| panic!("{tag}: acks=all to partition {partition}: {e}"));
        written.entry(partition).or_default().push(value);
    }
}

/// Asserts that each partition of `topic` in `written` reads back exactly the values written.
pub async fn assert_read_back(
    cluster: &std::sync::Arc<client::Cluster>,
    topic: &str,
    written: &std::collections::BTreeMap<u32, Vec<String>>,
) {
    for (partition, values) in written {
        let read: Vec<String> = read_partition(cluster, topic, *partition)
            .await
            .into_iter()
            .map(|r| String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned())
            .collect();
        assert_eq!(&read, values, "partition {partition}");
    }
}

/// Every committed record of a partition, in offset order, read with the client's consumer.
pub async fn read_partition(
    cluster: &std::sync::Arc<client::Cluster>,
    topic: &str,
    partition: u32,
) -> Vec<client::ConsumerRecord> {
    let high_watermark = cluster
        .list_offsets(topic, partition, client::OffsetSpec::Latest, 0)
        .await
        .expect("high watermark")
        .unwrap_or(0);
    let mut consumer = client::Consumer::new(std::sync::Arc::clone(cluster), client::ConsumerConfig::default());
    consumer
        .assign(vec![(topic.to_string(), partition)])
        .await
        .expect("assign");
    consumer
        .seek(topic, partition, client::SeekTo::Earliest)
        .await
        .expect("seek");
    let mut records = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while consumer.position(topic, partition).unwrap_or(0) < high_watermark {
        assert!(
            std::time::Instant::now() < deadline,
            "{topic}/{partition}: could not read up to {high_watermark}"
        );
        records.extend(consumer.poll(std::time::Duration::from_secs(5)).await.expect("poll"));
    }
    records
}

/// The data directory of `broker`'s replica of `topic`/`partition`.
pub fn partition_dir(broker: &BrokerProcess, topic: &str, partition: u32) -> PathBuf {
    let parent = broker.data_dir.join("partitions");
    std::fs::read_dir(&parent)
        .expect("partitions directory")
        .map(|e| e.expect("directory entry").path())
        .find(|p| {
            p.file_name()
                .is_some_and(|name| name.to_string_lossy().starts_with(&format!("{topic}-{partition}-g")))
        })
        .unwrap_or_else(|| panic!("broker {} has no replica of {topic}/{partition}", broker.id))
}

/// A digest of every entry (Raft id, kind, body) of the log in `dir`; the broker must be stopped.
pub fn log_digest(dir: &Path) -> String {
    use std::hash::{Hash, Hasher};
    let flush = broker::storage::FlushWorker::start("digest").expect("flush worker");
    let (log, _) = broker::storage::SegmentLog::open(dir, broker::storage::LogConfig::default(), flush.handle(), 0)
        .expect("opening a replica's log");
    let entries = log
        .read_entries(broker::storage::RaftIndex(0), broker::storage::RaftIndex(u64::MAX))
        .expect("reading a replica's log");
    // DefaultHasher::new() has fixed keys: the same entries give the same digest in one run.
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    for entry in &entries {
        (entry.id.term, entry.id.leader_node, entry.id.index.0).hash(&mut hasher);
        (entry.kind as u8).hash(&mut hasher);
        entry.body.hash(&mut hasher);
    }
    format!("{} entries, {:016x}", entries.len(), hasher.finish())
}

/// Cuts the last `bytes` bytes off the newest segment file of the log in `dir` (a torn write
/// as a crash leaves it); the broker must be stopped.
pub fn truncate_active_segment(dir: &Path, bytes: u64) {
    let newest = newest_segment(dir);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&newest)
        .expect("open segment");
    let length = file.metadata().expect("segment metadata").len();
    file.set_len(length.saturating_sub(bytes)).expect("truncate segment");
}

/// Opens (appending) the log file of the broker whose data is in `data_dir`.
fn broker_log(data_dir: &Path) -> Stdio {
    std::fs::create_dir_all(data_dir).expect("broker data directory");
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(data_dir.join("broker.log"))
        .map_or_else(|_| Stdio::inherit(), Stdio::from)
}

/// Flips one bit at `fraction` of the length of the newest segment file of the log in `dir`
/// (storage damaging data it once wrote whole).
pub fn flip_bit_in_active_segment(dir: &Path, fraction: f64) {
    let newest = newest_segment(dir);
    let mut bytes = std::fs::read(&newest).expect("reading segment");
    if bytes.is_empty() {
        return;
    }
    let position = ((bytes.len() as f64 * fraction) as usize).min(bytes.len() - 1);
    bytes[position] ^= 0x10;
    std::fs::write(&newest, bytes).expect("writing segment");
}

/// Deletes every `.index` and `.timeindex` file of the log in `dir`.
pub fn delete_index_files(dir: &Path) {
    for entry in std::fs::read_dir(dir).expect("log directory") {
        let path = entry.expect("directory entry").path();
        if path.extension().is_some_and(|e| e == "index" || e == "timeindex") {
            std::fs::remove_file(&path).expect("deleting an index file");
        }
    }
}

fn newest_segment(dir: &Path) -> PathBuf {
    std::fs::read_dir(dir)
        .expect("log directory")
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .max()
        .expect("a segment file")
}

/// `topic` as the broker at `address` itself describes it — its own replicas' offsets and state,
/// not the leader's view (`None`: it did not answer).
pub async fn describe_on(address: &str, topic: &str) -> Option<proto::v1::TopicDescription> {
    let channel = security_of(address).endpoint(address).ok()?.connect().await.ok()?;
    let mut client = proto::v1::broker_client::BrokerClient::new(channel);
    let response = client
        .describe_topics(proto::v1::MetadataRequest {
            topics: vec![topic.to_string()],
        })
        .await
        .ok()?;
    response.into_inner().topics.into_iter().next()
}

/// The partitions of `topic` whose replica on broker `id` (at `address`) lost acknowledged
/// entries and is held out of elections, as that broker itself reports. `None` until it answers
/// *and* hosts every partition it is a replica of: a broker still starting describes a replica
/// it has not opened yet as not held, which would read as "recovered".
pub async fn partitions_held_from_elections(address: &str, id: u64, topic: &str) -> Option<Vec<u32>> {
    own_partitions_where(address, id, topic, |p| p.held_from_elections).await
}

/// The partitions of `topic` whose replica on broker `id` (at `address`) is quiet — idle, its
/// Raft timers stopped — as that broker reports. `None` as for
/// [`partitions_held_from_elections`].
pub async fn quiet_partitions(address: &str, id: u64, topic: &str) -> Option<Vec<u32>> {
    own_partitions_where(address, id, topic, |p| p.quiescent).await
}

/// The partitions of `topic` whose replica on broker `id` has `property`, as that broker
/// describes them; `None` until it answers and hosts every partition it is a replica of.
async fn own_partitions_where(
    address: &str,
    id: u64,
    topic: &str,
    property: impl Fn(&proto::v1::PartitionDescription) -> bool,
) -> Option<Vec<u32>> {
    let topic = describe_on(address, topic).await?;
    let mine: Vec<&proto::v1::PartitionDescription> =
        topic.partitions.iter().filter(|p| p.replicas.contains(&id)).collect();
    if mine.is_empty() || mine.iter().any(|p| p.high_watermark.is_none()) {
        return None;
    }
    Some(mine.into_iter().filter(|p| property(p)).map(|p| p.partition).collect())
}

/// Waits until every replica of every partition of `topic` (RF = number of brokers) is quiet on
/// every running broker in `brokers`; panics after `timeout`.
pub async fn wait_until_quiet(brokers: &[BrokerProcess], topic: &str, partitions: u32, timeout: std::time::Duration) {
    let deadline = std::time::Instant::now() + timeout;
    let all: Vec<u32> = (0..partitions).collect();
    loop {
        let mut quiet_everywhere = true;
        for broker in brokers.iter().filter(|b| b.is_running()) {
            if quiet_partitions(&broker.address, broker.id, topic).await.as_deref() != Some(&all[..]) {
                quiet_everywhere = false;
                break;
            }
        }
        if quiet_everywhere {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{topic}: not every replica quiesced within {timeout:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Brokers (three, or more joining them) whose every link goes through a [`proxy::FaultProxy`] the test controls: each
/// directed broker-to-broker link (`links[(from, to)]`: the connection `from` dials to reach
/// `to`, requests and answers) and each client-to-broker link (`client_links[broker]`).
pub struct ProxiedCluster {
    /// The broker processes, node ids 1..=n in order.
    pub brokers: Vec<BrokerProcess>,
    /// (from, to) → the proxy `from` dials to reach `to`.
    pub links: std::collections::HashMap<(u64, u64), proxy::FaultProxy>,
    /// broker → the proxy clients dial to reach it.
    pub client_links: std::collections::HashMap<u64, proxy::FaultProxy>,
}

impl ProxiedCluster {
    /// Starts the proxies and three brokers with data under `root`.
    pub async fn start(root: &Path) -> ProxiedCluster {
        Self::start_with(root, &[]).await
    }

    /// Like [`start`](Self::start), with extra `broker serve` arguments for every broker.
    pub async fn start_with(root: &Path, extra_args: &[&str]) -> ProxiedCluster {
        Self::start_n(root, 3, extra_args).await
    }

    /// Like [`start_with`](Self::start_with) with `count` brokers (at least 3): brokers 1–3
    /// form the cluster, and each one past them joins it on its own, knowing only the
    /// cluster's addresses (every link proxied from the start, as between the first three).
    pub async fn start_n(root: &Path, count: u64, extra_args: &[&str]) -> ProxiedCluster {
        Self::start_secured(root, count, extra_args, false).await
    }

    /// Like [`start_n`](Self::start_n); with `tls`, a local CA under `root/certs` issues every
    /// broker its certificate, brokers speak mutual TLS to each other (through the proxies,
    /// which only see ciphertext) and TLS to clients, and the test clients of these brokers
    /// ([`connect_when_ready`], [`describe_on`]) connect with TLS and a client certificate.
    pub async fn start_secured(root: &Path, count: u64, extra_args: &[&str], tls: bool) -> ProxiedCluster {
        assert!(count >= 3, "a proxied cluster has at least three brokers");
        let ports = free_ports(count as usize);
        let addresses: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let certs = root.join("certs");
        let ca = tls.then(|| broker::security::local_ca::LocalCa::new("test cluster CA").expect("a local CA"));
        if let Some(ca) = &ca {
            let client = ca.write_client(&certs, "test-client").expect("client certificate");
            let read = |path: &Path| std::fs::read(path).expect("certificate file");
            let (ca_pem, cert, key) = (read(&client.ca), read(&client.cert), read(&client.key));
            let security = client::Security::tls(&ca_pem, Some((&cert, &key)));
            let mut secured = SECURED_ADDRESSES.lock().expect("secured addresses");
            secured.extend(addresses.iter().map(|address| (address.clone(), security.clone())));
        }
        let mut links = std::collections::HashMap::new();
        for from in 1..=count {
            for to in 1..=count {
                if from != to {
                    let target = addresses[to as usize - 1].parse().expect("address");
                    links.insert((from, to), proxy::FaultProxy::start(target).await);
                }
            }
        }
        let mut client_links = std::collections::HashMap::new();
        for id in 1..=count {
            let target = addresses[id as usize - 1].parse().expect("address");
            client_links.insert(id, proxy::FaultProxy::start(target).await);
        }
        let brokers = (1..=count)
            .map(|id| {
                let args: Vec<String> = (1..=count)
                    .filter(|to| *to != id)
                    .flat_map(|to| {
                        [
                            "--dial-override".to_string(),
                            format!("{}={}", addresses[to as usize - 1], links[&(id, to)].address),
                        ]
                    })
                    .chain(extra_args.iter().map(|arg| arg.to_string()))
                    .chain(ca.iter().flat_map(|ca| {
                        let files = ca.write_broker(&certs, id).expect("broker certificate");
                        [
                            "--tls-cert".to_string(),
                            files.cert.display().to_string(),
                            "--tls-key".to_string(),
                            files.key.display().to_string(),
                            "--tls-ca".to_string(),
                            files.ca.display().to_string(),
                        ]
                    }))
                    .collect();
                // The founders know each other; a joiner knows them and itself.
                let known = (1..=3).chain((id > 3).then_some(id));
                let peers = known
                    .map(|peer| format!("{peer}={}", addresses[peer as usize - 1]))
                    .collect::<Vec<_>>()
                    .join(",");
                BrokerProcess::start_with(
                    id,
                    addresses[id as usize - 1].clone(),
                    root.join(format!("broker-{id}")),
                    peers,
                    args,
                )
            })
            .collect();
        ProxiedCluster {
            brokers,
            links,
            client_links,
        }
    }

    /// Where clients should dial each broker's address instead.
    pub fn client_overrides(&self) -> std::collections::HashMap<String, String> {
        client_overrides(&self.brokers, &self.client_links)
    }
}

/// Client dial overrides: each broker's address → its client proxy.
pub fn client_overrides(
    brokers: &[BrokerProcess],
    client_links: &std::collections::HashMap<u64, proxy::FaultProxy>,
) -> std::collections::HashMap<String, String> {
    brokers
        .iter()
        .map(|b| (b.address.clone(), client_links[&b.id].address.to_string()))
        .collect()
}

/// Stops every broker at the same moment (kill -9 to all, then reaps them), for comparing their
/// logs. Stopped one after another — a clean stop drains connections for up to 3 s — the others
/// see the first go: its idle partitions fail over within the failure detector's 500 ms, and the
/// new leader's first entry reaches only some logs. Nothing is lost by the kill: the cluster is
/// idle and every acknowledged entry is on disk (fsync = always).
pub fn stop_all_at_once(brokers: &mut [BrokerProcess]) {
    for broker in brokers.iter_mut() {
        broker.signal_kill();
    }
    for broker in brokers.iter_mut() {
        broker.kill9();
    }
}

/// `GET path` over HTTP/1.0 (one request per connection, the body delimited by the close): the
/// status code and the body. For the brokers' admin endpoint.
pub async fn http_get(address: &str, path: &str) -> std::io::Result<(u16, String)> {
    http_request(address, "GET", path, "").await
}

/// One HTTP/1.0 request with `body`; the status code and the body of the answer.
pub async fn http_request(address: &str, method: &str, path: &str, body: &str) -> std::io::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(address).await?;
    stream
        .write_all(
            format!(
                "{method} {path} HTTP/1.0\r\nHost: {address}\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        )
        .await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    Ok((status, body.to_string()))
}

/// Turns fault point `name` on in the broker whose admin endpoint is `admin` (`actions` in the
/// `fail` crate's syntax, e.g. `return(enospc)`; see `broker/src/storage/faults.rs`).
pub async fn set_failpoint(admin: &str, name: &str, actions: &str) {
    let (status, body) = http_request(admin, "PUT", &format!("/failpoints/{name}"), actions)
        .await
        .expect("admin endpoint");
    assert_eq!(
        status, 200,
        "setting {name}: {body} (is the broker built with --features failpoints?)"
    );
}

/// Turns fault point `name` off.
pub async fn clear_failpoint(admin: &str, name: &str) {
    let (status, body) = http_request(admin, "DELETE", &format!("/failpoints/{name}"), "")
        .await
        .expect("admin endpoint");
    assert_eq!(status, 200, "clearing {name}: {body}");
}

/// A counter or gauge of the broker whose admin endpoint is `admin` (summed over its labels).
pub async fn metric(admin: &str, name: &str) -> f64 {
    metric_where(admin, name, None).await
}

/// A counter or gauge of the broker whose admin endpoint is `admin`, only its samples with
/// `label` (name, value) when given.
pub async fn metric_where(admin: &str, name: &str, label: Option<(&str, &str)>) -> f64 {
    let (status, body) = http_get(admin, "/metrics").await.expect("scraping /metrics");
    assert_eq!(status, 200, "{body}");
    let scrape = prometheus_parse::Scrape::parse(body.lines().map(|line| Ok(line.to_string()))).expect("exposition");
    scrape
        .samples
        .iter()
        .filter(|sample| sample.metric == name)
        .filter(|sample| label.is_none_or(|(key, value)| sample.labels.get(key) == Some(value)))
        .map(|sample| match sample.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => panic!("{name} is not a counter or gauge"),
        })
        .sum()
}

/// A batch of one record holding `value`, stamped now, for the raw `Cluster::produce`.
pub fn one_record_batch(value: &str) -> bytes::Bytes {
    let records = vec![proto::record_batch::Record {
        timestamp: proto::record_batch::now_ms(),
        value: Some(bytes::Bytes::from(value.to_string())),
        ..proto::record_batch::Record::default()
    }];
    proto::record_batch::encode_batch(&records, proto::record_batch::ProducerStamp::NONE)
}
