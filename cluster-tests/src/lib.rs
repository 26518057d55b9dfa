//! Harness for tests that run real `broker` processes on loopback: start, kill -9, restart,
//! stop them, and find the binary (built on demand so the tests never run a stale one).

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
        .get_or_init(|| {
            // Test binaries live in target/<profile>/deps; the broker binary one level up.
            let exe = std::env::current_exe().expect("test binary path");
            let profile_dir = exe.parent().and_then(Path::parent).expect("target/<profile>");
            let binary = profile_dir.join("broker");
            let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root");
            let built = std::fs::metadata(&binary).and_then(|m| m.modified()).ok();
            let newest_source = ["broker", "client", "proto"]
                .iter()
                .filter_map(|dir| newest_modification(&workspace.join(dir)))
                .max();
            if built.is_none() || newest_source > built {
                let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
                let status = Command::new(cargo)
                    .args(["build", "--quiet", "-p", "broker", "--bin", "broker"])
                    .status()
                    .expect("running cargo build");
                assert!(status.success(), "building the broker binary failed");
            }
            assert!(binary.exists(), "no broker binary at {}", binary.display());
            binary
        })
        .clone()
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

/// Free loopback ports (bound and released; the brokers bind them right after).
pub fn free_ports(count: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..count)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("binding a free port"))
        .collect();
    listeners.iter().map(|l| l.local_addr().unwrap().port()).collect()
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
    child: Option<Child>,
}

impl BrokerProcess {
    /// Starts broker `id` of a cluster whose peers are `peers` (`id=addr,...`).
    pub fn start(id: u64, address: String, data_dir: PathBuf, peers: String) -> BrokerProcess {
        let mut process = BrokerProcess {
            id,
            address,
            data_dir,
            peers,
            child: None,
        };
        process.restart();
        process
    }

    /// (Re)starts the process on the same address and data.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "broker {} is running", self.id);
        let child = Command::new(broker_binary())
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
            .arg("--exit-on-stdin-close")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .env("RUST_LOG", "error")
            .spawn()
            .expect("starting a broker");
        self.child = Some(child);
    }

    /// SIGKILL: no chance to flush or close anything.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("kill -9");
            child.wait().expect("reaping the broker");
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

/// A cluster of `n` broker processes with data under `root`.
pub fn start_cluster(root: &Path, n: usize) -> Vec<BrokerProcess> {
    let ports = free_ports(n);
    let peers = ports
        .iter()
        .enumerate()
        .map(|(i, port)| format!("{}=127.0.0.1:{port}", i + 1))
        .collect::<Vec<_>>()
        .join(",");
    ports
        .iter()
        .enumerate()
        .map(|(i, port)| {
            BrokerProcess::start(
                i as u64 + 1,
                format!("127.0.0.1:{port}"),
                root.join(format!("broker-{}", i + 1)),
                peers.clone(),
            )
        })
        .collect()
}
