//! A broker node: wires storage, replication, the controller, the partitions and the API into
//! one server, on a listener and a shutdown signal given by the caller (so tests bind port 0).

use crate::api::auth::AuthApi;
use crate::api::service::BrokerApi;
use crate::controller::forward::ControllerLink;
use crate::controller::metadata::{BrokerInfo, ClusterMetadata, MetadataCommand};
use crate::controller::{Controller, ControllerError, CONTROLLER_GROUP};
use crate::coordinator::offsets_partition::OffsetsPartitions;
use crate::coordinator::{GroupCoordinator, GroupSettings};
use crate::metrics::endpoint::AdminProbes;
use crate::metrics::requests::RequestsInFlight;
use crate::partition::leader_balance::{self, LeaderBalance};
use crate::partition::{handover, leadership, metrics as partition_metrics, reassign, PartitionManager};
use crate::replication::quiesce::{self, QuiesceConfig, Quiescence};
use crate::replication::{IsrBounds, PeerChannels, RaftGroups, RaftTimers, ReplicaHost, ReplicationError};
use crate::security::brokers_only::BrokersOnly;
use crate::security::identity::Identify;
use crate::security::incoming;
use crate::security::tls::BrokerTls;
use crate::storage::{open_files, DiskSpace, FlushWorker, LogHost, OpenFiles};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tonic::service::interceptor::InterceptedService;

/// How often the TLS files are checked for a renewed certificate.
const TLS_RELOAD_CHECK: Duration = Duration::from_secs(10);

/// How long a stopping broker lets in-flight requests finish (it goes on as soon as none is).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// How long a stopping broker waits to hear from its peers (one ping exchange) before it hands
/// its leaderships over, so it knows which of them are stopping too.
const HANDOVER_PEER_WAIT: Duration = Duration::from_millis(500);

/// A peer as configured: `id=host:port` or `id=host:port@rack`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Peer {
    /// Node id.
    pub id: u64,
    /// Address its peers reach it at: its internal listener (Raft, controller), or its only
    /// listener when it has one.
    pub address: String,
    /// Optional rack.
    pub rack: Option<String>,
}

impl std::str::FromStr for Peer {
    type Err = String;

    fn from_str(text: &str) -> Result<Peer, String> {
        let (id, rest) = text
            .split_once('=')
            .ok_or_else(|| format!("peer {text:?}: expected id=host:port[@rack]"))?;
        let id = id.trim().parse().map_err(|_| format!("peer {text:?}: bad node id"))?;
        let (address, rack) = match rest.split_once('@') {
            Some((address, rack)) => (address, Some(rack.to_string())),
            None => (rest, None),
        };
        if !address.contains(':') {
            return Err(format!("peer {text:?}: address needs a port"));
        }
        Ok(Peer {
            id,
            address: address.to_string(),
            rack,
        })
    }
}

/// Settings of one broker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrokerConfig {
    /// This broker's node id (unique, never reused after its disk is lost).
    pub node_id: u64,
    /// Address of the client listener (`broker.v1`, consumer groups); also of the internal
    /// services unless `internal_listen` is given.
    pub listen: SocketAddr,
    /// Address of the internal listener: Raft (`raft.v1`) and controller forwarding
    /// (`cluster.v1`), which the client listener then no longer serves. With `[tls]`, only
    /// brokers' certificates get through it.
    #[serde(default)]
    pub internal_listen: Option<SocketAddr>,
    /// Address peers reach the internal listener at (default: `internal_listen`).
    #[serde(default)]
    pub internal_advertise: Option<String>,
    /// TLS on both listeners and to peers (`[tls]`); plaintext when absent.
    #[serde(default)]
    pub tls: Option<crate::security::tls::TlsSettings>,
    /// Client authentication (`[auth]`): whether it is required, the super users, the session
    /// tokens' lifetime.
    #[serde(default)]
    pub auth: crate::security::identity::AuthSettings,
    /// Address of the admin HTTP endpoint (`/metrics`, `/health`, `/ready`); none by default.
    #[serde(default)]
    pub admin_listen: Option<SocketAddr>,
    /// Address clients (and, without an internal listener, peers) reach this broker at
    /// (default: `listen`).
    #[serde(default)]
    pub advertise: Option<String>,
    /// Every broker of the cluster, this one included, at the address its peers reach it at
    /// (its internal listener's when it has one).
    pub peers: Vec<Peer>,
    /// Where logs and metadata live.
    pub data_dir: PathBuf,
    /// How many brokers (lowest ids first) vote in the controller group.
    #[serde(default = "default_controller_voters")]
    pub controller_voters: usize,
    /// Raft timers of every group.
    #[serde(default)]
    pub raft: RaftTimers,
    /// Dial the value instead of the key for broker-to-broker traffic (`host:port` → `host:port`):
    /// routes this broker's links through a proxy (fault injection, tunnels) without changing
    /// the addresses the cluster knows.
    #[serde(default)]
    pub dial_overrides: BTreeMap<String, String>,
    /// Consumer groups: the offsets topic and session bounds (`[groups]`).
    #[serde(default)]
    pub groups: GroupSettings,
    /// How often every replica applies its topic's retention (Kafka's
    /// `log.retention.check.interval.ms`, the same default: 5 minutes).
    #[serde(default = "default_retention_check_interval_ms")]
    pub retention_check_interval_ms: u64,
    /// Free space (bytes) the broker keeps on its data directory's filesystem: below it, leaders
    /// refuse produce requests with the retriable `STORAGE_UNAVAILABLE` until space returns.
    #[serde(default = "default_min_free_bytes")]
    pub min_free_bytes: u64,
    /// Partition-log files (segments, acknowledged marks) kept open at once; the least recently
    /// used are closed beyond it and reopened on demand, so idle replicas hold no descriptor.
    /// Default (absent): the process's open-file limit minus a reserve for sockets, at most
    /// 32768. The broker refuses to start when the limit cannot cover it.
    #[serde(default)]
    pub max_open_files: Option<u64>,
    /// A partition-log file unused this long is closed even within the budget, so a quiet
    /// partition holds no descriptor (0 = only the budget closes files). Default 30000.
    #[serde(default = "default_close_idle_files_ms")]
    pub close_idle_files_ms: u64,
    /// Controlled shutdown: how long (ms) a stopping broker spends handing the leadership of
    /// its groups to caught-up replicas elsewhere before it stops serving (0 = none: its
    /// groups fail over as after a crash). Default 15000: a broker leading 3,333 partitions
    /// hands them over in about 8 s on a 2-core machine (docs/benchmarks.md).
    #[serde(default = "default_controlled_shutdown_ms")]
    pub controlled_shutdown_ms: u64,
    /// Automatic leader balance: how often (ms) this broker hands leaderships back to
    /// preferred replicas (0 = never; `broker cluster balance-leaders` still works). Default
    /// 300000, Kafka's `leader.imbalance.check.interval.seconds`.
    #[serde(default = "default_leader_balance_interval_ms")]
    pub leader_balance_interval_ms: u64,
    /// … when more than this percent of the partitions preferring a broker are led elsewhere
    /// (Kafka's `leader.imbalance.per.broker.percentage`). Default 10.
    #[serde(default = "default_leader_imbalance_percent")]
    pub leader_imbalance_percent: u32,
    /// Automatic healing: the controller leader decommissions a broker that holds replicas and
    /// has answered none of its pings for this long (ms), so its partitions get their replicas
    /// back on live brokers; 0 (the default) = off. Needs the failure detector
    /// (`raft.quiesce_after_ms` > 0) and at least 10000.
    #[serde(default)]
    pub heal_dead_brokers_after_ms: u64,
}

/// The shortest automatic-healing time accepted (see `heal_dead_brokers_after_ms`).
const MIN_HEAL_AFTER_MS: u64 = 10_000;

fn default_controlled_shutdown_ms() -> u64 {
    15_000
}

fn default_leader_balance_interval_ms() -> u64 {
    300_000
}

fn default_leader_imbalance_percent() -> u32 {
    10
}

fn default_close_idle_files_ms() -> u64 {
    30_000
}

/// The process's soft open-file limit (`None` when unlimited).
fn current_open_file_limit() -> Option<u64> {
    rustix::process::getrlimit(rustix::process::Resource::Nofile).current
}

fn default_controller_voters() -> usize {
    3
}

fn default_retention_check_interval_ms() -> u64 {
    5 * 60 * 1000
}

fn default_min_free_bytes() -> u64 {
    128 * 1024 * 1024
}

/// Why a node could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The configuration is invalid.
    #[error("invalid broker config: {0}")]
    Config(String),
    /// A filesystem or socket error.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        source: std::io::Error,
    },
    /// The controller failed.
    #[error(transparent)]
    Controller(#[from] ControllerError),
    /// Replication failed.
    #[error(transparent)]
    Replication(#[from] ReplicationError),
    /// The gRPC server failed.
    #[error("gRPC server: {0}")]
    Server(#[from] tonic::transport::Error),
}

impl BrokerConfig {
    /// Checks the settings and fills in defaults that depend on others.
    pub fn validate(&mut self) -> Result<(), NodeError> {
        if self.advertise.is_none() {
            self.advertise = Some(self.listen.to_string());
        }
        if let Some(internal) = self.internal_listen {
            if internal == self.listen {
                return Err(NodeError::Config(
                    "internal_listen must differ from listen (leave it out to serve everything on one)".into(),
                ));
            }
            if self.internal_advertise.is_none() {
                self.internal_advertise = Some(internal.to_string());
            }
        } else if self.internal_advertise.is_some() {
            return Err(NodeError::Config("internal_advertise needs internal_listen".into()));
        }
        if !self.peers.iter().any(|p| p.id == self.node_id) {
            self.peers.push(Peer {
                id: self.node_id,
                address: self.peer_address(),
                rack: None,
            });
        }
        if (self.auth.required || self.auth.authorization) && self.tls.is_none() && self.internal_listen.is_none() {
            // The controller's `cluster.v1` would be served to clients, unchecked: a client
            // could propose users, ACLs or topics straight to it.
            return Err(NodeError::Config(
                "auth.required and auth.authorization need TLS (which admits only brokers to the internal \
                 services) or an internal listener of their own (internal_listen)"
                    .into(),
            ));
        }
        if let Some(tls) = &self.tls {
            if self.internal_listen.is_none() && tls.client_auth == crate::security::tls::ClientAuth::None {
                return Err(NodeError::Config(
                    "with TLS on one listener, tls.client_auth = \"none\" would hide the peers' certificates \
                     (the internal services admit brokers by them): use optional or required, or an \
                     internal listener"
                        .into(),
                ));
            }
        }
        let mut ids: Vec<u64> = self.peers.iter().map(|p| p.id).collect();
        ids.sort_unstable();
        if ids.windows(2).any(|w| w[0] == w[1]) {
            return Err(NodeError::Config("a node id appears twice in peers".into()));
        }
        if self.controller_voters == 0 {
            return Err(NodeError::Config("controller_voters must be at least 1".into()));
        }
        if self.raft.dormant_after_ms > 0 && self.raft.dormant_after_ms <= self.raft.election_timeout_max_ms {
            // A follower put to sleep forgets its leader's last contact: its lease must have
            // run out by then, or it could vote while its leader still serves reads on it.
            return Err(NodeError::Config(format!(
                "raft.dormant_after_ms must be 0 (never) or above raft.election_timeout_max_ms ({} ms): a sleeping \
                 replica forgets its leader's lease",
                self.raft.election_timeout_max_ms
            )));
        }
        if self.heal_dead_brokers_after_ms > 0 {
            if self.raft.quiesce_after_ms == 0 {
                return Err(NodeError::Config(
                    "heal_dead_brokers_after_ms needs the failure detector: raft.quiesce_after_ms must be above 0"
                        .into(),
                ));
            }
            if self.heal_dead_brokers_after_ms < MIN_HEAL_AFTER_MS {
                return Err(NodeError::Config(format!(
                    "heal_dead_brokers_after_ms must be 0 (off) or at least {MIN_HEAL_AFTER_MS}: a shorter \
                     time would move replicas off a broker for a restart or a short network cut"
                )));
            }
        }
        self.raft
            .raft_config("check")
            .map_err(|e| NodeError::Config(e.to_string()))?;
        self.groups.validate().map_err(NodeError::Config)?;
        Ok(())
    }

    /// Where peers reach this broker: its internal listener, else its only one.
    fn peer_address(&self) -> String {
        self.internal_advertise
            .clone()
            .or_else(|| self.advertise.clone())
            .unwrap_or_else(|| self.listen.to_string())
    }

    /// Where clients reach this broker.
    fn client_address(&self) -> String {
        self.advertise.clone().unwrap_or_else(|| self.listen.to_string())
    }

    /// The controller voters: the `controller_voters` lowest node ids, with their addresses.
    pub fn voters(&self) -> BTreeMap<u64, String> {
        let mut peers: Vec<&Peer> = self.peers.iter().collect();
        peers.sort_by_key(|p| p.id);
        peers
            .into_iter()
            .take(self.controller_voters)
            .map(|p| (p.id, p.address.clone()))
            .collect()
    }
}

/// The sockets a broker serves on, bound by its caller (so tests bind port 0).
pub struct Listeners {
    /// The client API (`broker.v1`, groups), and the internal services unless `internal`.
    pub api: TcpListener,
    /// The internal services (`raft.v1`, `cluster.v1`), if on a listener of their own (bound
    /// at the config's `internal_listen`).
    pub internal: Option<TcpListener>,
    /// The admin HTTP endpoint (`/metrics`, `/health`, `/ready`), if served.
    pub admin: Option<TcpListener>,
}

impl Listeners {
    /// Only the API listener: internal services on it too, no admin endpoint.
    pub fn api_only(api: TcpListener) -> Listeners {
        Listeners {
            api,
            internal: None,
            admin: None,
        }
    }
}

/// A gRPC server counting its requests into `in_flight` (both listeners count into one).
fn server_builder(
    in_flight: &RequestsInFlight,
) -> tonic::transport::Server<
    tower::layer::util::Stack<crate::metrics::requests::RequestMetricsLayer, tower::layer::util::Identity>,
> {
    tonic::transport::Server::builder()
        .http2_max_pending_accept_reset_streams(Some(crate::replication::MAX_RESET_STREAMS))
        .http2_max_local_error_reset_streams(Some(crate::replication::MAX_RESET_STREAMS))
        .layer(crate::metrics::requests::RequestMetricsLayer::counting(
            in_flight.clone(),
        ))
}

/// Waits until no request has been in flight for a moment (true), or `grace` has passed
/// (false). Connections that merely stay open — peers' and clients' idle HTTP/2 connections —
/// do not hold a stop up; requests being answered (a long-poll fetch, a Raft append) get up to
/// `grace` to finish.
async fn drain(in_flight: &RequestsInFlight, grace: Duration) -> bool {
    /// How long the count must stay at zero (a request may be between two of its steps).
    const QUIET_FOR: Duration = Duration::from_millis(50);
    let deadline = tokio::time::Instant::now() + grace;
    let mut idle_since: Option<tokio::time::Instant> = None;
    loop {
        let now = tokio::time::Instant::now();
        if in_flight.count() == 0 {
            if now.duration_since(*idle_since.get_or_insert(now)) >= QUIET_FOR {
                return true;
            }
        } else {
            idle_since = None;
        }
        if now >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Controlled shutdown (see `partition::handover`): the leaderships of this broker's
/// partition groups and of the controller group go to caught-up replicas elsewhere, within
/// `budget` (zero: skipped).
async fn hand_over(
    node_id: u64,
    partitions: &PartitionManager,
    controller: &Controller,
    quiescence: &Quiescence,
    peers: &[u64],
    budget: Duration,
) {
    if budget.is_zero() {
        return;
    }
    let started = std::time::Instant::now();
    // Tell the peers first, and hear which of them are stopping too.
    quiescence.announce_stopping(peers, HANDOVER_PEER_WAIT).await;
    let liveness = quiescence.liveness();
    let replicas = partitions.replicas();
    let mut groups: Vec<(String, &crate::replication::PartitionReplica)> = replicas
        .iter()
        .map(|(partition, replica)| (format!("{}/{}", partition.topic, partition.partition), replica.as_ref()))
        .collect();
    groups.push(("controller".to_string(), controller.replica()));
    let stopping = |peer: u64| liveness.is_stopping(peer);
    let handover = handover::hand_over_leaderships(node_id, &groups, budget, &stopping).await;
    if handover.led > 0 {
        tracing::info!(
            node = node_id,
            led = handover.led,
            handed_over = handover.handed_over,
            moved_meanwhile = handover.moved_meanwhile,
            no_target = handover.no_target,
            failed = handover.failed,
            given = ?handover.given,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "controlled shutdown: handed over {} of {} leaderships",
            handover.handed_over,
            handover.led
        );
    }
}

/// Runs a broker until `shutdown` resolves, then stops it cleanly (logs closed durably).
pub async fn run(
    mut config: BrokerConfig,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), NodeError> {
    config.validate()?;
    let Listeners {
        api: listener,
        internal: internal_listener,
        admin,
    } = listeners;
    if internal_listener.is_some() != config.internal_listen.is_some() {
        return Err(NodeError::Config(
            "an internal listener is served exactly when internal_listen is configured".into(),
        ));
    }
    let tls = match &config.tls {
        Some(settings) => Some(Arc::new(
            BrokerTls::load(settings).map_err(|e| NodeError::Config(format!("TLS: {e}")))?,
        )),
        None => None,
    };
    // The admin endpoint comes up first, so `/health` answers while the broker recovers its
    // logs; `/ready` says so until the controller is known.
    let started: Arc<OnceLock<Started>> = Arc::new(OnceLock::new());
    let (stop_admin, admin_stopped) = oneshot::channel::<()>();
    if admin.is_some() {
        // Installed before anything records, so no count from start-up is lost; without an
        // admin listener nothing is installed and the `metrics` macros cost a no-op call.
        crate::metrics::recorder();
        crate::metrics::requests::describe();
        crate::api::metrics::describe();
        crate::metrics::disk::describe();
        crate::storage::metrics::describe();
        crate::replication::metrics::describe();
        partition_metrics::describe();
        leadership::describe();
        crate::coordinator::metrics::describe();
    }
    let admin_task = admin.map(|listener| {
        let probes = admin_probes(config.node_id, config.data_dir.clone(), Arc::clone(&started));
        tokio::spawn(async move {
            let shutdown = async {
                let _ = admin_stopped.await;
            };
            if let Err(error) = crate::metrics::endpoint::serve(listener, probes, shutdown).await {
                tracing::error!(%error, "admin endpoint failed");
            }
        })
    });
    std::fs::create_dir_all(&config.data_dir).map_err(|source| NodeError::Io {
        context: format!("creating {}", config.data_dir.display()),
        source,
    })?;
    let open_files = OpenFiles::new(
        open_files::budget_for(config.max_open_files, current_open_file_limit()).map_err(NodeError::Config)?,
    );
    tracing::info!(
        max_open_files = open_files.capacity(),
        "open-file budget for partition logs"
    );
    let flush = FlushWorker::start(&format!("node{}", config.node_id)).map_err(|source| NodeError::Io {
        context: "starting the flush worker".into(),
        source,
    })?;
    let host = ReplicaHost {
        node_id: config.node_id,
        logs: LogHost {
            flush: flush.handle(),
            files: open_files,
        },
        peers: {
            let peers = PeerChannels::with_dial_overrides(config.dial_overrides.clone().into_iter().collect());
            match &tls {
                Some(tls) => peers.with_tls(tls.peer_client_config()),
                None => peers,
            }
        },
        groups: RaftGroups::default(),
        raft_config: config
            .raft
            .raft_config("broker")
            .map_err(|e| NodeError::Config(e.to_string()))?,
    };
    if config.raft.quiesce_after_ms > 0 {
        host.groups.quiescence().await_leaders_on_restart();
    }
    let voters = config.voters();
    let controller = Arc::new(Controller::start(&host, &config.data_dir.join("controller"), &voters).await?);
    let offsets_partitions = Arc::new(OffsetsPartitions::default());
    let partitions = Arc::new(
        PartitionManager::new(host.clone(), config.data_dir.clone()).with_observers(offsets_partitions.clone()),
    );
    let coordinator = Arc::new(GroupCoordinator::new(
        config.node_id,
        config.groups.clone(),
        Arc::clone(&controller),
        Arc::clone(&partitions),
        offsets_partitions,
        host.peers.clone(),
    ));
    let expiry = tokio::spawn(Arc::clone(&coordinator).expire_forever());
    let _ = started.set(Started {
        controller: Arc::clone(&controller),
        partitions: Arc::clone(&partitions),
        coordinator: Arc::clone(&coordinator),
    });
    let follower = tokio::spawn(Arc::clone(&partitions).follow(controller.subscribe()));
    let retention = tokio::spawn(
        Arc::clone(&partitions).apply_retention_every(Duration::from_millis(config.retention_check_interval_ms.max(1))),
    );
    let link = ControllerLink::new(
        Arc::clone(&controller),
        host.peers.clone(),
        config
            .peers
            .iter()
            .filter(|p| p.id != config.node_id)
            .map(|p| p.address.clone())
            .collect(),
    );
    let own_info = config
        .peers
        .iter()
        .find(|p| p.id == config.node_id)
        .map(|p| BrokerInfo {
            id: p.id,
            address: p.address.clone(),
            rack: p.rack.clone(),
            client_address: Some(config.client_address()),
        })
        .expect("validate adds this broker to its peers");
    let membership = tokio::spawn(keep_membership(
        Arc::clone(&controller),
        config.peers.clone(),
        config.internal_listen.is_some(),
    ));
    let registration = tokio::spawn(keep_registered(link.clone(), own_info));
    let mover = tokio::spawn(reassign::drive_forever(config.node_id, Arc::clone(&partitions), link));
    let (peer_addresses, peers_known) =
        tokio::sync::watch::channel(known_peers(config.node_id, &config.peers, &controller.metadata()));
    let throttle_follower = tokio::spawn(follow_throttle(
        host.groups.catch_up_throttle().clone(),
        controller.subscribe(),
    ));
    let peer_watcher = tokio::spawn(follow_peers(
        config.node_id,
        config.peers.clone(),
        controller.subscribe(),
        peer_addresses,
    ));
    let leadership_sampler = tokio::spawn(leadership::sample_forever(
        Arc::clone(&partitions),
        IsrBounds::default(),
    ));
    // Stopped when the stop begins, like the balancer.
    let stop_healer = (config.heal_dead_brokers_after_ms > 0).then(|| {
        tokio::spawn(crate::controller::heal::heal_forever(
            Arc::clone(&controller),
            host.groups.liveness().clone(),
            Duration::from_millis(config.heal_dead_brokers_after_ms),
        ))
        .abort_handle()
    });
    let quiescer = match config.raft.quiesce_after_ms {
        0 => Vec::new(),
        quiesce_after_ms => quiesce::spawn(
            host.groups.quiescence().clone(),
            host.peers.clone(),
            QuiesceConfig {
                node_id: config.node_id,
                peers: peers_known.clone(),
                quiesce_after: Duration::from_millis(quiesce_after_ms),
                dead_after: Duration::from_millis(2 * config.raft.election_timeout_min_ms),
                resume_delay: Duration::from_millis(config.raft.election_timeout_max_ms),
                never: [CONTROLLER_GROUP].into_iter().collect(),
                dormant_after: (config.raft.dormant_after_ms > 0)
                    .then(|| Duration::from_millis(config.raft.dormant_after_ms)),
            },
        ),
    };

    // Stopped when the stop begins: no leadership comes back to this broker while it hands
    // them over.
    let stop_balancer = (config.leader_balance_interval_ms > 0).then(|| {
        tokio::spawn(leader_balance::balance_forever(
            config.node_id,
            Arc::clone(&partitions),
            Arc::clone(&controller),
            host.groups.quiescence().clone(),
            LeaderBalance {
                interval: Duration::from_millis(config.leader_balance_interval_ms),
                imbalance_percent: config.leader_imbalance_percent,
            },
        ))
        .abort_handle()
    });
    let stop_quiescer: Vec<tokio::task::AbortHandle> =
        quiescer.iter().map(tokio::task::JoinHandle::abort_handle).collect();
    let space = DiskSpace::of(&config.data_dir, config.min_free_bytes);
    let space_sampler = tokio::spawn(space.clone().sample_every());
    let idle_files = (config.close_idle_files_ms > 0).then(|| {
        tokio::spawn(
            host.logs
                .files
                .clone()
                .close_idle_every(Duration::from_millis(config.close_idle_files_ms)),
        )
    });
    let api = BrokerApi::new(Arc::clone(&controller), Arc::clone(&partitions), IsrBounds::default())
        .refusing_writes_below(space)
        .with_auth(config.auth.clone());
    let tls_reloader = tls.clone().map(|tls| tokio::spawn(tls.reload_every(TLS_RELOAD_CHECK)));
    tracing::info!(
        node = config.node_id,
        listen = %config.listen,
        internal_listen = ?config.internal_listen,
        tls = tls.is_some(),
        "broker serving"
    );
    // Graceful shutdown waits for open connections to close; peers' idle HTTP/2 connections
    // may never close on their own, so the drain ends once no request is in flight (see
    // `drain`), or after the grace.
    let (draining, drain_started) = oneshot::channel::<()>();
    let in_flight = RequestsInFlight::default();
    let node_id = config.node_id;
    let handover_partitions = Arc::clone(&partitions);
    let handover_controller = Arc::clone(&controller);
    let handover_budget = Duration::from_millis(config.controlled_shutdown_ms);
    let handover_quiescence = host.groups.quiescence().clone();
    let handover_peers = peers_known.clone();
    let (stop_serving, serving_stopped) = tokio::sync::watch::channel(false);
    let stopper = tokio::spawn(async move {
        shutdown.await;
        if let Some(balancer) = &stop_balancer {
            balancer.abort();
        }
        // A stopping broker hears no peer for long (it refuses their pings while it drains):
        // it must not take them for dead.
        if let Some(healer) = &stop_healer {
            healer.abort();
        }
        // Still serving, so the peers taking over reach this broker while they do.
        let peers: Vec<u64> = handover_peers.borrow().keys().copied().collect();
        hand_over(
            node_id,
            &handover_partitions,
            &handover_controller,
            &handover_quiescence,
            &peers,
            handover_budget,
        )
        .await;
        // A stopping broker refuses new RPCs while it drains, peers' pings among them: its
        // failure detector would take every peer for dead and wake every quiet group it
        // hosts — thousands of elections fighting the stop (3,000 replicas overran the
        // bound). Its peers detect it and fail over what it did not hand over, as after a
        // crash.
        for stop in &stop_quiescer {
            stop.abort();
        }
        let _ = stop_serving.send(true);
        let _ = draining.send(());
    });
    let stopped = |mut serving: tokio::sync::watch::Receiver<bool>| async move {
        let _ = serving.wait_for(|stopped| *stopped).await;
    };
    // The internal services go where peers dial: the internal listener when there is one.
    let internal_apart = internal_listener.is_some();
    let brokers_only = BrokersOnly::new(config.tls.as_ref().map(|tls| tls.broker_principals.clone()));
    let raft_service = || InterceptedService::new(host.groups.service(), brokers_only.clone());
    let cluster_service = || {
        InterceptedService::new(
            crate::api::cluster::ClusterApi::new(Arc::clone(&controller)).into_service(),
            brokers_only.clone(),
        )
    };
    let identify = Identify::new(Arc::clone(&controller), config.auth.required);
    let client_server = server_builder(&in_flight)
        .add_service(InterceptedService::new(api.into_service(), identify.clone()))
        .add_service(InterceptedService::new(
            crate::api::groups::GroupsApi::new(Arc::clone(&coordinator))
                .with_auth(config.auth.clone())
                .into_service(),
            identify,
        ))
        // How a client earns a token: served to anyone the TLS handshake admitted.
        .add_service(InterceptedService::new(
            AuthApi::new(
                Arc::clone(&controller),
                Duration::from_millis(config.auth.token_lifetime_ms.max(1)),
            )
            .into_service(),
            Identify::new(Arc::clone(&controller), false),
        ))
        .add_optional_service((!internal_apart).then(raft_service))
        .add_optional_service((!internal_apart).then(cluster_service))
        .serve_with_incoming_shutdown(
            incoming::connections(listener, tls.as_ref().map(|t| t.client_listener.clone()), "client"),
            stopped(serving_stopped.clone()),
        );
    let internal_server = internal_listener.map(|internal_listener| {
        server_builder(&in_flight)
            .add_service(raft_service())
            .add_service(cluster_service())
            .serve_with_incoming_shutdown(
                incoming::connections(
                    internal_listener,
                    tls.as_ref().map(|t| t.internal_listener.clone()),
                    "internal",
                ),
                stopped(serving_stopped.clone()),
            )
    });
    let internal_server = async {
        match internal_server {
            Some(server) => server.await,
            None => Ok(()),
        }
    };
    let server = async { tokio::try_join!(client_server, internal_server).map(|_| ()) };
    tokio::pin!(server);
    let served = tokio::select! {
        served = &mut server => served,
        drained = async {
            if drain_started.await.is_ok() {
                drain(&in_flight, SHUTDOWN_GRACE).await
            } else {
                std::future::pending::<bool>().await
            }
        } => {
            if drained {
                tracing::info!(node = config.node_id, "no request in flight; closing the connections still open");
            } else {
                tracing::warn!(node = config.node_id, "requests still in flight after {SHUTDOWN_GRACE:?}; closing them");
            }
            Ok(())
        }
    };
    stopper.abort();
    if let Some(task) = tls_reloader {
        task.abort();
    }
    tracing::info!(node = config.node_id, "server stopped; stopping replicas");
    let _ = stop_admin.send(());
    if let Some(mut task) = admin_task {
        // A scraper that keeps its connection open must not hold up closing the logs.
        if tokio::time::timeout(Duration::from_secs(1), &mut task).await.is_err() {
            task.abort();
        }
    }
    membership.abort();
    registration.abort();
    mover.abort();
    peer_watcher.abort();
    throttle_follower.abort();
    expiry.abort();
    drop(coordinator);
    for task in quiescer {
        task.abort();
    }
    follower.abort();
    retention.abort();
    space_sampler.abort();
    if let Some(task) = idle_files {
        task.abort();
    }
    leadership_sampler.abort();
    partitions.shutdown().await;
    tracing::info!(node = config.node_id, "partitions stopped");
    controller.shutdown().await?;
    drop(partitions);
    drop(controller);
    drop(host);
    drop(flush);
    tracing::info!(node = config.node_id, "broker stopped");
    Ok(served?)
}

/// The parts of a running broker the admin endpoint looks at, once they exist.
struct Started {
    controller: Arc<Controller>,
    partitions: Arc<PartitionManager>,
    coordinator: Arc<GroupCoordinator>,
}

/// Readiness (a controller leader is known and this broker is registered in the metadata) and
/// the partition and group gauges refreshed before each scrape.
fn admin_probes(node_id: u64, data_dir: PathBuf, started: Arc<OnceLock<Started>>) -> AdminProbes {
    let for_ready = Arc::clone(&started);
    AdminProbes {
        ready: Arc::new(move || {
            let started = for_ready.get().ok_or("recovering local state")?;
            if started.controller.leader().is_none() {
                return Err("no controller leader known yet".into());
            }
            if !started.controller.metadata().brokers.contains_key(&node_id) {
                return Err(format!("broker {node_id} not registered with the controller yet"));
            }
            Ok(())
        }),
        before_scrape: Arc::new(move || {
            crate::metrics::disk::record(&data_dir);
            if let Some(started) = started.get() {
                partition_metrics::record(&started.partitions, IsrBounds::default());
                started.coordinator.record_metrics();
            }
        }),
    }
}

/// Every other broker, by id, with its address: the configured peers, and those the metadata
/// registered since (brokers that joined later).
fn known_peers(node_id: u64, configured: &[Peer], metadata: &ClusterMetadata) -> BTreeMap<u64, String> {
    let mut peers: BTreeMap<u64, String> = configured.iter().map(|p| (p.id, p.address.clone())).collect();
    peers.extend(metadata.brokers.values().map(|b| (b.id, b.address.clone())));
    peers.remove(&node_id);
    peers
}

/// Keeps `peers` equal to [`known_peers`] as the metadata changes.
async fn follow_peers(
    node_id: u64,
    configured: Vec<Peer>,
    mut metadata: tokio::sync::watch::Receiver<Arc<ClusterMetadata>>,
    peers: tokio::sync::watch::Sender<BTreeMap<u64, String>>,
) {
    loop {
        let known = known_peers(node_id, &configured, &metadata.borrow_and_update());
        peers.send_if_modified(|current| {
            let changed = *current != known;
            *current = known;
            changed
        });
        if metadata.changed().await.is_err() {
            return;
        }
    }
}

/// Keeps this broker's catch-up throttle at the rate the metadata sets.
async fn follow_throttle(
    throttle: crate::replication::CatchUpThrottle,
    mut metadata: tokio::sync::watch::Receiver<Arc<ClusterMetadata>>,
) {
    loop {
        let rate = metadata.borrow_and_update().reassignment_throttle;
        throttle.set_rate(rate);
        if metadata.changed().await.is_err() {
            return;
        }
    }
}

/// Registers this broker with the controller (through whichever broker leads it), and again
/// whenever the metadata has it otherwise (a new address or rack after a restart): a broker
/// started with a new id and the cluster's addresses joins this way.
async fn keep_registered(link: ControllerLink, info: BrokerInfo) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if link.controller().metadata().brokers.get(&info.id) == Some(&info) {
            continue;
        }
        match link.propose(MetadataCommand::RegisterBroker(info.clone())).await {
            Ok(()) => tracing::info!(node = info.id, address = %info.address, "registered with the controller"),
            Err(error) => tracing::debug!(%error, "registering with the controller failed; will retry"),
        }
    }
}

/// While this broker leads the controller: registers every configured broker in the metadata
/// and adds every registered broker that does not vote in the controller group to it as a
/// learner (so it sees the metadata).
async fn keep_membership(controller: Arc<Controller>, peers: Vec<Peer>, internal_apart: bool) {
    let mut tick = tokio::time::interval(Duration::from_millis(300));
    loop {
        tick.tick().await;
        if !controller.is_leader() {
            continue;
        }
        let metadata = controller.metadata();
        for peer in &peers {
            // The configured address is where peers reach it. Where clients do, the broker
            // registers itself (and that is kept); with one listener per broker (this one's
            // way, taken as the cluster's) it is the same address.
            let registered = metadata.brokers.get(&peer.id);
            let client_address = match registered.and_then(|b| b.client_address.clone()) {
                Some(known) => Some(known),
                None if !internal_apart => Some(peer.address.clone()),
                None => None,
            };
            let info = BrokerInfo {
                id: peer.id,
                address: peer.address.clone(),
                rack: peer.rack.clone(),
                client_address,
            };
            if registered != Some(&info) {
                if let Err(error) = controller.submit(MetadataCommand::RegisterBroker(info)).await {
                    tracing::debug!(%error, peer = peer.id, "registering broker failed; will retry");
                }
            }
        }
        if metadata.token_key.is_none() {
            let key = crate::security::tokens::new_key();
            if let Err(error) = controller.submit(MetadataCommand::SetTokenKey { key }).await {
                tracing::debug!(%error, "setting the token key failed; will retry");
            }
        }
        let members = controller.replica().members();
        let metadata = controller.metadata();
        let brokers = peers
            .iter()
            .map(|p| (p.id, p.address.clone()))
            .chain(metadata.brokers.values().map(|b| (b.id, b.address.clone())));
        for (id, address) in brokers {
            if !members.contains(&id) {
                match controller.replica().add_learner(id, address).await {
                    Ok(()) => tracing::info!(broker = id, "added to the controller group as a learner"),
                    Err(error) => tracing::debug!(%error, broker = id, "adding controller learner failed; will retry"),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_parse_with_and_without_rack() {
        let peer: Peer = "2=127.0.0.1:9093@rack-b".parse().unwrap();
        assert_eq!(peer.id, 2);
        assert_eq!(peer.address, "127.0.0.1:9093");
        assert_eq!(peer.rack.as_deref(), Some("rack-b"));
        assert!("x=1:2".parse::<Peer>().is_err());
        assert!("1=localhost".parse::<Peer>().is_err());
    }

    #[test]
    fn voters_are_the_lowest_ids_and_self_is_added() {
        let mut config = BrokerConfig {
            node_id: 4,
            listen: "127.0.0.1:9095".parse().unwrap(),
            admin_listen: None,
            advertise: None,
            peers: ["3=h:3", "1=h:1", "2=h:2"].iter().map(|p| p.parse().unwrap()).collect(),
            data_dir: "/tmp/x".into(),
            controller_voters: 3,
            raft: RaftTimers::default(),
            dial_overrides: BTreeMap::new(),
            groups: GroupSettings::default(),
            retention_check_interval_ms: default_retention_check_interval_ms(),
            min_free_bytes: default_min_free_bytes(),
            max_open_files: None,
            close_idle_files_ms: default_close_idle_files_ms(),
            controlled_shutdown_ms: default_controlled_shutdown_ms(),
            leader_balance_interval_ms: default_leader_balance_interval_ms(),
            leader_imbalance_percent: default_leader_imbalance_percent(),
            heal_dead_brokers_after_ms: 0,
            internal_listen: None,
            internal_advertise: None,
            tls: None,
            auth: Default::default(),
        };
        config.validate().unwrap();
        assert_eq!(config.voters().keys().copied().collect::<Vec<_>>(), vec![1, 2, 3]);
        assert!(config.peers.iter().any(|p| p.id == 4 && p.address == "127.0.0.1:9095"));
        config.peers.push("1=h:9".parse().unwrap());
        assert!(config.validate().is_err(), "duplicate ids are refused");
        config.peers.pop();

        // Automatic healing: at least the minimum time, and only with the failure detector.
        config.heal_dead_brokers_after_ms = MIN_HEAL_AFTER_MS - 1;
        let short = config.validate().unwrap_err().to_string();
        assert!(short.contains("at least 10000"), "{short}");
        config.heal_dead_brokers_after_ms = MIN_HEAL_AFTER_MS;
        config.validate().unwrap();
        config.raft.quiesce_after_ms = 0;
        let blind = config.validate().unwrap_err().to_string();
        assert!(blind.contains("failure detector"), "{blind}");
        config.raft.quiesce_after_ms = 1000;
        config.heal_dead_brokers_after_ms = 0;

        // A replica must not sleep within its leader's lease: it forgets the lease asleep.
        config.raft.dormant_after_ms = config.raft.election_timeout_max_ms;
        let within_lease = config.validate().unwrap_err().to_string();
        assert!(within_lease.contains("dormant_after_ms"), "{within_lease}");
        config.raft.dormant_after_ms = 0;
        config.validate().unwrap();
        config.raft.dormant_after_ms = 10_000;

        // Authentication without TLS or an internal listener would serve the controller to
        // clients unchecked.
        config.auth.required = true;
        let open = config.validate().unwrap_err().to_string();
        assert!(open.contains("need TLS"), "{open}");
        config.internal_listen = Some("127.0.0.1:9195".parse().unwrap());
        config.validate().unwrap();

        // TLS on one listener must see the peers' certificates.
        config.internal_listen = None;
        config.internal_advertise = None;
        config.tls = Some(crate::security::tls::TlsSettings {
            cert: "b.pem".into(),
            key: "b.key".into(),
            ca: "ca.pem".into(),
            client_auth: crate::security::tls::ClientAuth::None,
            broker_principals: crate::security::tls::default_broker_principals(),
        });
        let anonymous_peers = config.validate().unwrap_err().to_string();
        assert!(anonymous_peers.contains("client_auth"), "{anonymous_peers}");
        config.tls.as_mut().unwrap().client_auth = crate::security::tls::ClientAuth::Optional;
        config.validate().unwrap();
    }
}
