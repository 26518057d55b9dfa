//! The `broker` binary. Today: `broker perf storage`. The server (`serve`, `dev`) and the admin
//! commands arrive with the replication work.

use anyhow::Context;
use broker::perf::storage::{self, StoragePerfOptions};
use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "broker", version, about = "A Raft-replicated message broker")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
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
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .init();
    match Cli::parse().command {
        Command::Perf {
            target: PerfTarget::Storage(args),
        } => storage::run(&args.into_options()?).context("storage benchmark"),
    }
}
