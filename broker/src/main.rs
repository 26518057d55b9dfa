//! The `broker` binary: the server (`serve`), a local 3-broker cluster (`dev`), admin commands
//! (`topic`, `cluster`, `partition`, `group`, `produce`, `consume`) and benchmarks (`perf`).

mod cli;

use anyhow::Context;
use broker::perf::storage::{self, StoragePerfOptions};
use clap::{CommandFactory, Parser, Subcommand};
use cli::admin::{self, StartAt, TopicCommand};
use std::path::PathBuf;

/// jemalloc: keeps fetch buffers' pages between fetches, and thousands of idle replicas small
/// (docs/architecture.md, "Memory").
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(name = "broker", version, about = "A Raft-replicated message broker")]
struct Cli {
    /// A broker to contact (comma-separated for several); defaults to where `broker dev` listens.
    #[arg(long, global = true, env = "BROKER_BOOTSTRAP", default_value = "127.0.0.1:9092")]
    bootstrap: String,
    /// How admin commands print results: `text` for people, `json` for scripts (field names
    /// are stable, see docs/operations.md). Exit codes: 0 done, 1 failed, 2 bad usage.
    #[arg(long, global = true, value_enum, default_value_t = cli::output::OutputFormat::Text)]
    output: cli::output::OutputFormat,
    /// How to reach the brokers: `PLAINTEXT` (default) or `SSL` (Kafka's `security.protocol`).
    #[arg(long, global = true, env = "BROKER_SECURITY_PROTOCOL")]
    security_protocol: Option<String>,
    /// With `SSL`: the CA certificates (PEM) to trust (`ssl.ca.location`).
    #[arg(long, global = true, env = "BROKER_SSL_CA_LOCATION")]
    ssl_ca_location: Option<String>,
    /// With `SSL`: a client certificate (PEM) to present (`ssl.certificate.location`).
    #[arg(long, global = true, env = "BROKER_SSL_CERTIFICATE_LOCATION")]
    ssl_certificate_location: Option<String>,
    /// With `SSL`: the client certificate's key (PEM) (`ssl.key.location`).
    #[arg(long, global = true, env = "BROKER_SSL_KEY_LOCATION")]
    ssl_key_location: Option<String>,
    /// With `SASL_SSL`/`SASL_PLAINTEXT`: `SCRAM-SHA-256` (the only one, the default).
    #[arg(long, global = true, env = "BROKER_SASL_MECHANISM")]
    sasl_mechanism: Option<String>,
    /// With `SASL_SSL`/`SASL_PLAINTEXT`: the user (`sasl.username`).
    #[arg(long, global = true, env = "BROKER_SASL_USERNAME")]
    sasl_username: Option<String>,
    /// With `SASL_SSL`/`SASL_PLAINTEXT`: the password (`sasl.password`; prefer the variable).
    #[arg(long, global = true, env = "BROKER_SASL_PASSWORD", hide_env_values = true)]
    sasl_password: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one broker.
    Serve(Box<cli::serve::ServeArgs>),
    /// Run a local 3-broker cluster (one process per broker) until Ctrl-C.
    Dev(cli::dev::DevArgs),
    /// Create, list, describe and delete topics.
    Topic {
        #[command(subcommand)]
        command: TopicCommand,
    },
    /// Cluster-wide views (`status`, `partitions`), `balance-leaders`, `decommission`, `recommission`.
    Cluster {
        #[command(subcommand)]
        command: cli::cluster::ClusterCommand,
    },
    /// Move partitions between brokers: `reassign`, `reassignments`, `cancel`, `throttle`.
    Partition {
        #[command(subcommand)]
        command: cli::partition::PartitionCommand,
    },
    /// Consumer groups: `list`, `describe`, `reset-offsets`, `delete`.
    Group {
        #[command(subcommand)]
        command: cli::group::GroupCommand,
    },
    /// Access-control rules: `add`, `remove`, `list`.
    Acl {
        #[command(subcommand)]
        command: cli::acl::AclCommand,
    },
    /// SCRAM-SHA-256 users: `create`, `delete`, `list`.
    User {
        #[command(subcommand)]
        command: cli::user::UserCommand,
    },
    /// Produce lines of standard input (`key<TAB>value` or `value`); keyed lines go to the
    /// partition Kafka's default partitioner picks (murmur2), unkeyed ones to partition 0.
    Produce {
        /// Topic name.
        topic: String,
        /// Write every record to this partition instead.
        #[arg(long)]
        partition: Option<u32>,
        /// all (committed by a majority), 1 (leader appended) or 0 (no wait).
        #[arg(long, default_value = "all")]
        acks: String,
    },
    /// Print records of a topic (every partition, or `--partition`), `key<TAB>value` per line or
    /// JSON with `--output json`. With `--group`, as a member of a consumer group: the group's
    /// coordinator assigns the partitions, and what is printed is committed.
    Consume {
        /// Topic name.
        topic: String,
        /// Consume as a member of this consumer group, from its committed offsets (partitions
        /// without one start at the end, or at the log start with `--from-beginning`).
        #[arg(long, conflicts_with_all = ["partition", "offset"])]
        group: Option<String>,
        /// Partition to read (default: every partition of the topic).
        #[arg(long)]
        partition: Option<u32>,
        /// Print `partition<TAB>offset<TAB>` before each record.
        #[arg(long)]
        print_offsets: bool,
        /// Start at the log start offset (default: only new records).
        #[arg(long, conflicts_with = "offset")]
        from_beginning: bool,
        /// Start at this offset (of the one `--partition`).
        #[arg(long, requires = "partition")]
        offset: Option<u64>,
        /// Stop after this many records.
        #[arg(long)]
        max: Option<usize>,
        #[command(flatten)]
        member: cli::group::MemberArgs,
    },
    /// Print a shell completion script (`broker completions bash > /etc/bash_completion.d/broker`).
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Benchmarks that ship with the broker.
    Perf {
        #[command(subcommand)]
        target: PerfTarget,
    },
}

#[derive(Subcommand)]
enum PerfTarget {
    /// Segment store: raw disk bandwidth vs group-committed appends, latency, reads.
    Storage(StorageArgs),
    /// CPU of three idle brokers hosting many RF=3 partitions (separate processes).
    Idle(cli::perf_idle::IdleArgs),
    /// Records/s, MB/s and latency of the batching producer against three local brokers.
    Produce(cli::perf_produce::ProduceArgs),
    /// A consumer group reading a pre-filled topic (records/s, MB/s), or with `--rate` the
    /// produce → group-consumer latency.
    Consume(cli::perf_consume::ConsumeArgs),
    /// Time until every partition is owned again after a member joins a group.
    Rebalance(cli::perf_consume::RebalanceArgs),
    /// Moving a filled partition to a new broker, unthrottled and throttled, with a producer
    /// writing meanwhile: move time, and its throughput and latency before and during.
    Reassign(cli::perf_reassign::ReassignArgs),
}

#[derive(clap::Args)]
struct StorageArgs {
    /// Scratch directory on the disk to measure (emptied before and after).
    #[arg(long, default_value = "target/perf-storage")]
    dir: PathBuf,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Partition counts to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,8,64")]
    partitions: Vec<usize>,
    /// Bytes per record.
    #[arg(long, default_value_t = 1024)]
    record_bytes: usize,
    /// Bytes per batch.
    #[arg(long, default_value_t = 16 * 1024)]
    batch_bytes: usize,
    /// Bytes per partition appended but not yet durable.
    #[arg(long, default_value_t = 1024 * 1024)]
    inflight_bytes: usize,
}

impl StorageArgs {
    fn into_options(self) -> anyhow::Result<StoragePerfOptions> {
        anyhow::ensure!(self.seconds > 0.0, "--seconds must be positive");
        anyhow::ensure!(
            self.record_bytes > 0 && self.batch_bytes >= self.record_bytes,
            "--batch-bytes must be >= --record-bytes > 0"
        );
        anyhow::ensure!(self.partitions.iter().all(|&p| p > 0), "--partitions must be positive");
        Ok(StoragePerfOptions {
            dir: self.dir,
            seconds: self.seconds,
            partitions: self.partitions,
            record_bytes: self.record_bytes,
            batch_bytes: self.batch_bytes,
            inflight_bytes: self.inflight_bytes,
        })
    }
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        // openraft logs every failed heartbeat to a stopped peer as a warning; those are
        // expected during failover and shutdown, so only its errors show by default.
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn,openraft=error".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    // Fault points set from the start (`FAILPOINTS=name=action;…`), for those that act before
    // a test could set them through the admin endpoint; kept for the process's life.
    #[cfg(feature = "failpoints")]
    let _failpoints = fail::FailScenario::setup();
    let cli = Cli::parse();
    let properties = [
        (client::security::SECURITY_PROTOCOL, cli.security_protocol.clone()),
        (client::security::SSL_CA_LOCATION, cli.ssl_ca_location.clone()),
        (
            client::security::SSL_CERTIFICATE_LOCATION,
            cli.ssl_certificate_location.clone(),
        ),
        (client::security::SSL_KEY_LOCATION, cli.ssl_key_location.clone()),
        (client::security::SASL_MECHANISM, cli.sasl_mechanism.clone()),
        (client::security::SASL_USERNAME, cli.sasl_username.clone()),
        (client::security::SASL_PASSWORD, cli.sasl_password.clone()),
    ];
    admin::use_security(client::Security::from_properties(|name| {
        properties
            .iter()
            .find(|(key, _)| *key == name)
            .and_then(|(_, value)| value.clone())
    })?);
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => cli::serve::run(*args).await,
            Command::Dev(args) => cli::dev::run(args).await,
            Command::Topic { command } => admin::topic(&cli.bootstrap, command, cli.output).await,
            Command::Cluster { command } => cli::cluster::run(&cli.bootstrap, command, cli.output).await,
            Command::Partition { command } => cli::partition::run(&cli.bootstrap, command, cli.output).await,
            Command::Produce { topic, partition, acks } => {
                admin::produce(&cli.bootstrap, &topic, partition, &acks).await
            }
            Command::Group { command } => cli::group::run(&cli.bootstrap, command, cli.output).await,
            Command::Acl { command } => cli::acl::run(&cli.bootstrap, command, cli.output).await,
            Command::User { command } => cli::user::run(&cli.bootstrap, command, cli.output).await,
            Command::Consume {
                topic,
                group: Some(group),
                print_offsets,
                from_beginning,
                max,
                member,
                ..
            } => {
                cli::group::consume(
                    &cli.bootstrap,
                    &topic,
                    &group,
                    &member,
                    from_beginning,
                    max,
                    print_offsets,
                    cli.output,
                )
                .await
            }
            Command::Consume {
                topic,
                group: None,
                partition,
                print_offsets,
                from_beginning,
                offset,
                max,
                member: _,
            } => {
                let start = match (from_beginning, offset) {
                    (true, _) => StartAt::Beginning,
                    (false, Some(offset)) => StartAt::Offset(offset),
                    (false, None) => StartAt::End,
                };
                admin::consume(&cli.bootstrap, &topic, partition, start, max, print_offsets, cli.output).await
            }
            Command::Completions { shell } => {
                clap_complete::generate(shell, &mut Cli::command(), "broker", &mut std::io::stdout());
                Ok(())
            }
            Command::Perf {
                target: PerfTarget::Storage(args),
            } => storage::run(&args.into_options()?, &mut cli::progress::StoragePhases::default())
                .context("storage benchmark"),
            Command::Perf {
                target: PerfTarget::Idle(args),
            } => cli::perf_idle::run(args).await.context("idle benchmark"),
            Command::Perf {
                target: PerfTarget::Produce(args),
            } => cli::perf_produce::run(args).await.context("produce benchmark"),
            Command::Perf {
                target: PerfTarget::Consume(args),
            } => cli::perf_consume::run_consume(args).await.context("consume benchmark"),
            Command::Perf {
                target: PerfTarget::Reassign(args),
            } => cli::perf_reassign::run(args).await.context("reassignment benchmark"),
            Command::Perf {
                target: PerfTarget::Rebalance(args),
            } => cli::perf_consume::run_rebalance(args)
                .await
                .context("rebalance benchmark"),
        }
    });
    // A blocking read of standard input (`serve --exit-on-stdin-close`) cannot be cancelled;
    // dropping the runtime would wait for it forever after a SIGTERM stop.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    result
}
