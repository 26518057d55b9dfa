//! `broker serve`: one broker process, configured by a TOML file, flags and `BROKER_*` env.

use anyhow::Context;
use broker::node::{self, BrokerConfig, Peer};
use broker::replication::RaftTimers;
use broker::security::tls::{default_broker_principals, TlsSettings};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::signal::unix::{signal, Signal, SignalKind};

/// Flags of `broker serve`; each overrides the config file.
#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// TOML config file (same keys as the flags, snake_case).
    #[arg(long, env = "BROKER_CONFIG")]
    config: Option<PathBuf>,
    /// This broker's node id.
    #[arg(long, env = "BROKER_NODE_ID")]
    node_id: Option<u64>,
    /// Address of the client listener (and of the internal services without
    /// --internal-listen).
    #[arg(long, env = "BROKER_LISTEN")]
    listen: Option<SocketAddr>,
    /// Address of the internal listener (Raft, controller): peers dial it, clients cannot use
    /// it; --peers then names each broker's internal address.
    #[arg(long, env = "BROKER_INTERNAL_LISTEN")]
    internal_listen: Option<SocketAddr>,
    /// Address peers reach the internal listener at (default: --internal-listen).
    #[arg(long, env = "BROKER_INTERNAL_ADVERTISE")]
    internal_advertise: Option<String>,
    /// TLS: this broker's certificate chain (PEM), served on both listeners and presented to
    /// peers. Needs --tls-key and --tls-ca.
    #[arg(long, env = "BROKER_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// TLS: its private key (PEM).
    #[arg(long, env = "BROKER_TLS_KEY")]
    tls_key: Option<PathBuf>,
    /// TLS: the CA certificates (PEM) trusted for peers and client certificates.
    #[arg(long, env = "BROKER_TLS_CA")]
    tls_ca: Option<PathBuf>,
    /// TLS: client certificates on the client listener: none, optional (default), required.
    #[arg(long, env = "BROKER_TLS_CLIENT_AUTH", value_enum)]
    tls_client_auth: Option<broker::security::tls::ClientAuth>,
    /// TLS: certificate principals (subject CN) admitted to the internal listener as brokers,
    /// comma-separated, a trailing `*` matching any rest (default `broker-*`).
    #[arg(long, env = "BROKER_TLS_BROKER_PRINCIPALS", value_delimiter = ',')]
    tls_broker_principals: Vec<String>,
    /// Every client request must come from a principal: a valid client certificate or a
    /// SCRAM-SHA-256 session token (`[auth] required`).
    #[arg(long, env = "BROKER_AUTH_REQUIRED")]
    auth_required: bool,
    /// Authorisation: check every client request against the ACLs and deny what no rule
    /// allows (super users aside) (`[auth] authorization`).
    #[arg(long, env = "BROKER_AUTHORIZATION")]
    authorization: bool,
    /// Principals that may do anything, users and ACLs included, comma-separated (Kafka's
    /// `super.users`).
    #[arg(long, env = "BROKER_SUPER_USERS", value_delimiter = ',')]
    super_users: Vec<String>,
    /// How long a session token is valid (ms); default 3600000.
    #[arg(long, env = "BROKER_TOKEN_LIFETIME_MS")]
    token_lifetime_ms: Option<u64>,
    /// Address of the admin HTTP endpoint: `/metrics` (Prometheus), `/health`, `/ready`.
    #[arg(long, env = "BROKER_ADMIN_LISTEN")]
    admin_listen: Option<SocketAddr>,
    /// Address others reach this broker at (default: --listen).
    #[arg(long, env = "BROKER_ADVERTISE")]
    advertise: Option<String>,
    /// Every broker, comma-separated `id=host:port[@rack]`.
    #[arg(long, env = "BROKER_PEERS", value_delimiter = ',')]
    peers: Vec<Peer>,
    /// Data directory.
    #[arg(long, env = "BROKER_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Number of controller voters (lowest node ids).
    #[arg(long, env = "BROKER_CONTROLLER_VOTERS")]
    controller_voters: Option<usize>,
    /// Milliseconds a partition stays idle before its Raft timers stop (0 = never); default 1000.
    #[arg(long, env = "BROKER_QUIESCE_AFTER_MS")]
    quiesce_after_ms: Option<u64>,
    /// Milliseconds a replica's group stays quiet before its Raft node sleeps (no openraft
    /// instance until a request wakes it; 0 = never); default 10000.
    #[arg(long, env = "BROKER_DORMANT_AFTER_MS")]
    dormant_after_ms: Option<u64>,
    /// How often (ms) every replica applies its topic's retention; default 300000 (5 min).
    #[arg(long, env = "BROKER_RETENTION_CHECK_INTERVAL_MS")]
    retention_check_interval_ms: Option<u64>,
    /// Free bytes kept on the data directory's filesystem; below, produce is refused
    /// (retriable) until space returns; default 134217728 (128 MiB).
    #[arg(long, env = "BROKER_MIN_FREE_BYTES")]
    min_free_bytes: Option<u64>,
    /// Partition-log files kept open at once (least recently used closed beyond it); default:
    /// the open-file limit minus a reserve for sockets, at most 32768.
    #[arg(long, env = "BROKER_MAX_OPEN_FILES")]
    max_open_files: Option<u64>,
    /// Close a partition-log file unused this long (ms), so quiet partitions hold no
    /// descriptor; 0 = only the budget closes files; default 30000.
    #[arg(long, env = "BROKER_CLOSE_IDLE_FILES_MS")]
    close_idle_files_ms: Option<u64>,
    /// Controlled shutdown: how long (ms) a stopping broker hands its leaderships to caught-up
    /// replicas on other brokers before it stops serving; 0 = none; default 15000.
    #[arg(long, env = "BROKER_CONTROLLED_SHUTDOWN_MS")]
    controlled_shutdown_ms: Option<u64>,
    /// Automatic leader balance: how often (ms) this broker hands leaderships back to the
    /// partitions' preferred replicas; 0 = never; default 300000.
    #[arg(long, env = "BROKER_LEADER_BALANCE_INTERVAL_MS")]
    leader_balance_interval_ms: Option<u64>,
    /// … when more than this percent of the partitions preferring a broker are led elsewhere;
    /// default 10.
    #[arg(long, env = "BROKER_LEADER_IMBALANCE_PERCENT")]
    leader_imbalance_percent: Option<u32>,
    /// Automatic healing: the controller decommissions a broker silent (answering no ping) for
    /// this long (ms), so its partitions get their replicas back on live brokers; 0 = off (the
    /// default); at least 10000.
    #[arg(long, env = "BROKER_HEAL_DEAD_BROKERS_AFTER_MS")]
    heal_dead_brokers_after_ms: Option<u64>,
    /// Partitions of `__consumer_offsets` when it is created (default 50).
    #[arg(long, env = "BROKER_OFFSETS_TOPIC_PARTITIONS")]
    offsets_topic_partitions: Option<u32>,
    /// How long the committed offsets of an empty group are kept (default 7 days).
    #[arg(long, env = "BROKER_OFFSETS_RETENTION_MS")]
    offsets_retention_ms: Option<u64>,
    /// Dial B instead of A for broker-to-broker traffic (`A=B`, repeatable).
    #[arg(long = "dial-override", value_parser = parse_override)]
    dial_overrides: Vec<(String, String)>,
    /// Longest a stop may take (ms) before the process exits anyway: a replica stuck in its
    /// shutdown must not keep the broker alive. Default: the controlled shutdown's budget plus
    /// 10 s for the drain and closing the logs (25000 with the defaults).
    #[arg(long, env = "BROKER_SHUTDOWN_TIMEOUT_MS")]
    shutdown_timeout_ms: Option<u64>,
    /// Stop when standard input closes (used by `broker dev` so brokers never outlive it).
    #[arg(long, hide = true)]
    exit_on_stdin_close: bool,
}

fn parse_override(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(from, to)| (from.to_string(), to.to_string()))
        .ok_or_else(|| format!("{text:?}: expected address=address"))
}

impl ServeArgs {
    fn into_config(self) -> anyhow::Result<(BrokerConfig, ProcessOptions)> {
        let mut config = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
                toml::from_str::<BrokerConfig>(&text).with_context(|| format!("parsing {}", path.display()))?
            }
            None => BrokerConfig {
                node_id: self.node_id.context("--node-id is required without --config")?,
                listen: self.listen.context("--listen is required without --config")?,
                admin_listen: None,
                advertise: None,
                peers: Vec::new(),
                data_dir: self
                    .data_dir
                    .clone()
                    .context("--data-dir is required without --config")?,
                controller_voters: 3,
                raft: RaftTimers::default(),
                dial_overrides: Default::default(),
                groups: Default::default(),
                retention_check_interval_ms: 5 * 60 * 1000,
                min_free_bytes: 128 * 1024 * 1024,
                max_open_files: None,
                close_idle_files_ms: 30_000,
                controlled_shutdown_ms: 15_000,
                leader_balance_interval_ms: 300_000,
                leader_imbalance_percent: 10,
                heal_dead_brokers_after_ms: 0,
                internal_listen: None,
                internal_advertise: None,
                tls: None,
                auth: Default::default(),
            },
        };
        if let Some(node_id) = self.node_id {
            config.node_id = node_id;
        }
        if let Some(listen) = self.listen {
            config.listen = listen;
        }
        if self.admin_listen.is_some() {
            config.admin_listen = self.admin_listen;
        }
        if self.advertise.is_some() {
            config.advertise = self.advertise;
        }
        if self.internal_listen.is_some() {
            config.internal_listen = self.internal_listen;
        }
        config.auth.required |= self.auth_required;
        config.auth.authorization |= self.authorization;
        if !self.super_users.is_empty() {
            config.auth.super_users = self.super_users;
        }
        if let Some(ms) = self.token_lifetime_ms {
            config.auth.token_lifetime_ms = ms;
        }
        if self.internal_advertise.is_some() {
            config.internal_advertise = self.internal_advertise;
        }
        match (self.tls_cert, self.tls_key, self.tls_ca) {
            (Some(cert), Some(key), Some(ca)) => {
                config.tls = Some(TlsSettings {
                    cert,
                    key,
                    ca,
                    client_auth: Default::default(),
                    broker_principals: default_broker_principals(),
                })
            }
            (None, None, None) => {}
            _ => anyhow::bail!("--tls-cert, --tls-key and --tls-ca go together"),
        }
        if let Some(tls) = &mut config.tls {
            if let Some(client_auth) = self.tls_client_auth {
                tls.client_auth = client_auth;
            }
            if !self.tls_broker_principals.is_empty() {
                tls.broker_principals = self.tls_broker_principals;
            }
        } else if self.tls_client_auth.is_some() || !self.tls_broker_principals.is_empty() {
            anyhow::bail!("--tls-client-auth and --tls-broker-principals need TLS (--tls-cert, --tls-key, --tls-ca)");
        }
        if !self.peers.is_empty() {
            config.peers = self.peers;
        }
        if let Some(data_dir) = self.data_dir {
            config.data_dir = data_dir;
        }
        config.dial_overrides.extend(self.dial_overrides);
        if let Some(quiesce_after_ms) = self.quiesce_after_ms {
            config.raft.quiesce_after_ms = quiesce_after_ms;
        }
        if let Some(dormant_after_ms) = self.dormant_after_ms {
            config.raft.dormant_after_ms = dormant_after_ms;
        }
        if let Some(interval) = self.retention_check_interval_ms {
            config.retention_check_interval_ms = interval;
        }
        if let Some(bytes) = self.min_free_bytes {
            config.min_free_bytes = bytes;
        }
        if self.max_open_files.is_some() {
            config.max_open_files = self.max_open_files;
        }
        if let Some(ms) = self.close_idle_files_ms {
            config.close_idle_files_ms = ms;
        }
        if let Some(ms) = self.controlled_shutdown_ms {
            config.controlled_shutdown_ms = ms;
        }
        if let Some(ms) = self.leader_balance_interval_ms {
            config.leader_balance_interval_ms = ms;
        }
        if let Some(percent) = self.leader_imbalance_percent {
            config.leader_imbalance_percent = percent;
        }
        if let Some(ms) = self.heal_dead_brokers_after_ms {
            config.heal_dead_brokers_after_ms = ms;
        }
        if let Some(partitions) = self.offsets_topic_partitions {
            config.groups.offsets_topic_partitions = partitions;
        }
        if let Some(ms) = self.offsets_retention_ms {
            config.groups.offsets_retention_ms = ms;
        }
        if let Some(voters) = self.controller_voters {
            config.controller_voters = voters;
        }
        let options = ProcessOptions {
            exit_on_stdin_close: self.exit_on_stdin_close,
            shutdown_timeout: stop_bound(self.shutdown_timeout_ms, config.controlled_shutdown_ms),
        };
        Ok((config, options))
    }
}

/// Raises the soft open-file limit to the hard one and logs both: the broker sizes its
/// open-file budget for partition logs from the limit (`max_open_files`, docs/operations.md,
/// "Open files"), so the usual soft limit of 1,024 would leave it needlessly small.
fn raise_open_file_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let limit = getrlimit(Resource::Nofile);
    let (soft, hard) = (limit.current, limit.maximum);
    if soft < hard {
        let raised = rustix::process::Rlimit {
            current: hard,
            maximum: hard,
        };
        if let Err(error) = setrlimit(Resource::Nofile, raised) {
            tracing::warn!(%error, ?soft, ?hard, "could not raise the open-file limit");
            return;
        }
    }
    let shown = |limit: Option<u64>| limit.map_or("unlimited".to_string(), |n| n.to_string());
    tracing::info!(soft_was = %shown(soft), now = %shown(hard), "open-file limit");
}

/// Runs one broker until Ctrl-C, SIGTERM or (optionally) standard input closing.
pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let (config, options) = args.into_config()?;
    raise_open_file_limit();
    let api = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let internal = match config.internal_listen {
        Some(address) => Some(
            tokio::net::TcpListener::bind(address)
                .await
                .with_context(|| format!("binding the internal listener {address}"))?,
        ),
        None => None,
    };
    let admin = match config.admin_listen {
        Some(address) => Some(
            tokio::net::TcpListener::bind(address)
                .await
                .with_context(|| format!("binding the admin endpoint {address}"))?,
        ),
        None => None,
    };
    let shutdown = async move {
        // One stream per signal for the whole stop: the watch for a second signal goes on
        // reading the same streams, so it counts only signals after the first.
        let mut terminate = signal(SignalKind::terminate()).expect("SIGTERM handler");
        let mut interrupt = signal(SignalKind::interrupt()).expect("SIGINT handler");
        let stdin_closed = async {
            if options.exit_on_stdin_close {
                let mut sink = [0u8; 64];
                let mut stdin = tokio::io::stdin();
                while matches!(stdin.read(&mut sink).await, Ok(n) if n > 0) {}
            } else {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
            () = stdin_closed => {}
        }
        tracing::warn!(
            "stopping: draining requests and closing logs (at most {:?}; a second Ctrl-C or SIGTERM exits at once)",
            options.shutdown_timeout
        );
        tokio::spawn(exit_if_stop_stalls(interrupt, terminate, options.shutdown_timeout));
    };
    node::run(config, node::Listeners { api, internal, admin }, shutdown).await?;
    Ok(())
}

/// The default stop bound beyond the controlled shutdown's budget: the 3 s drain and closing
/// the logs of thousands of replicas.
const STOP_AFTER_HANDOVER_MS: u64 = 10_000;

/// The longest a stop may take: as given, else the controlled shutdown's budget plus
/// [`STOP_AFTER_HANDOVER_MS`] (so raising the budget never cuts a handover short).
fn stop_bound(given_ms: Option<u64>, controlled_shutdown_ms: u64) -> Duration {
    Duration::from_millis(given_ms.unwrap_or(controlled_shutdown_ms.saturating_add(STOP_AFTER_HANDOVER_MS)))
}

/// How the process runs besides the broker's own config.
struct ProcessOptions {
    /// Stop when standard input closes.
    exit_on_stdin_close: bool,
    /// Longest a stop may take.
    shutdown_timeout: Duration,
}

/// Runs once a stop has begun: exits the process at once on a second Ctrl-C or SIGTERM (the
/// operator insists), or with an error once `timeout` has passed without the stop completing.
/// Exiting skips closing the logs cleanly, which loses nothing acknowledged: acks=all records
/// are fsynced before they are acknowledged (`fsync = always`); under `interval`/`never` the
/// unsynced tail is what a crash would lose too, and replication restores it.
async fn exit_if_stop_stalls(mut interrupt: Signal, mut terminate: Signal, timeout: Duration) {
    tokio::select! {
        _ = interrupt.recv() => {
            tracing::warn!("second Ctrl-C: exiting now");
            std::process::exit(130);
        }
        _ = terminate.recv() => {
            tracing::warn!("second SIGTERM: exiting now");
            std::process::exit(143);
        }
        () = tokio::time::sleep(timeout) => {
            tracing::error!("stop did not complete within {timeout:?}; exiting");
            std::process::exit(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stop_bound_follows_the_handover_budget_unless_given() {
        assert_eq!(stop_bound(None, 15_000), Duration::from_secs(25));
        assert_eq!(stop_bound(None, 30_000), Duration::from_secs(40));
        assert_eq!(stop_bound(None, 0), Duration::from_secs(10));
        assert_eq!(stop_bound(Some(500), 15_000), Duration::from_millis(500));
    }

    #[test]
    fn example_config_in_deploy_loads() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/broker.example.toml");
        let text = std::fs::read_to_string(path).unwrap();
        let mut config: BrokerConfig = toml::from_str(&text).unwrap();
        config.validate().unwrap();
        assert_eq!(config.voters().len(), 3);
    }
}
