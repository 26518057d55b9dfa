//! What admin commands print: a human table (`--output text`, the default) or JSON
//! (`--output json`) with stable field names for scripts. The JSON shapes are documented in
//! `docs/operations.md` ("Scripting the CLI"); renaming a field there is a breaking change.

use proto::v1::{BrokerDescription, PartitionDescription, TopicDescription};
use serde::Serialize;
use std::collections::BTreeMap;

/// `--output`: how admin commands print their results.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OutputFormat {
    /// Aligned text for people.
    #[default]
    Text,
    /// One JSON document on standard output.
    Json,
}

/// A partition as `topic describe` and `cluster status` show it.
#[derive(Serialize, Debug)]
pub struct PartitionView {
    /// Partition index.
    pub partition: u32,
    /// Leading broker, if any.
    pub leader: Option<u64>,
    /// Replica brokers.
    pub replicas: Vec<u64>,
    /// In-sync replicas (leader's view).
    pub isr: Vec<u64>,
    /// Committed offset (only where the answering broker hosts a replica).
    pub high_watermark: Option<u64>,
    /// First offset kept.
    pub log_start_offset: Option<u64>,
    /// Bytes of the answering broker's replica's log segments.
    pub log_size_bytes: Option<u64>,
    /// Idle with its Raft timers stopped.
    pub quiet: bool,
    /// The answering broker's replica failed an fsync and is out of service until it restarts.
    pub storage_failed: bool,
}

impl From<&PartitionDescription> for PartitionView {
    fn from(p: &PartitionDescription) -> Self {
        PartitionView {
            partition: p.partition,
            leader: p.leader,
            replicas: p.replicas.clone(),
            isr: p.isr.clone(),
            high_watermark: p.high_watermark,
            log_start_offset: p.log_start_offset,
            log_size_bytes: p.log_size_bytes,
            quiet: p.quiescent,
            storage_failed: p.storage_failed,
        }
    }
}

/// The header of the partition columns every text table shares.
pub const PARTITION_COLUMNS: &str =
    "partition  leader  replicas  isr  high_watermark  log_start  log_bytes  quiet  storage";

impl PartitionView {
    /// This partition's columns, aligned under [`PARTITION_COLUMNS`] (`-` where unknown;
    /// `quiet`: the leader's group is idle with its Raft timers stopped; `storage`: `FAILED` when
    /// the answering broker's replica failed an fsync).
    pub fn text_row(&self) -> String {
        let or_dash = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
        let ids = |ids: &[u64]| ids.iter().map(u64::to_string).collect::<Vec<_>>().join(",");
        format!(
            "{:>9}  {:>6}  {:>8}  {:>3}  {:>14}  {:>9}  {:>9}  {:>5}  {:>7}",
            self.partition,
            or_dash(self.leader),
            ids(&self.replicas),
            ids(&self.isr),
            or_dash(self.high_watermark),
            or_dash(self.log_start_offset),
            or_dash(self.log_size_bytes),
            if self.quiet { "yes" } else { "no" },
            if self.storage_failed { "FAILED" } else { "ok" }
        )
    }
}

/// Prints partitions as the table `topic describe` and `cluster status` share.
pub fn print_partitions(partitions: &[PartitionView]) {
    println!("  {PARTITION_COLUMNS}");
    for p in partitions {
        println!("  {}", p.text_row());
    }
}

/// A topic as `topic describe` shows it.
#[derive(Serialize, Debug)]
pub struct TopicView {
    /// Topic name.
    pub name: String,
    /// Replicas per partition.
    pub replication_factor: u32,
    /// Config overrides and defaults, by key.
    pub configs: BTreeMap<String, String>,
    /// Its partitions.
    pub partitions: Vec<PartitionView>,
    /// Partitions with a leader whose ISR is smaller than their replica set.
    pub under_replicated_partitions: usize,
}

impl From<&TopicDescription> for TopicView {
    fn from(topic: &TopicDescription) -> Self {
        TopicView {
            name: topic.name.clone(),
            replication_factor: topic.replication_factor,
            configs: topic.configs.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            partitions: topic.partitions.iter().map(PartitionView::from).collect(),
            under_replicated_partitions: topic
                .partitions
                .iter()
                .filter(|p| p.leader.is_some() && p.isr.len() < p.replicas.len())
                .count(),
        }
    }
}

/// A line of `topic list`.
#[derive(Serialize, Debug)]
pub struct TopicSummary {
    /// Topic name.
    pub name: String,
    /// Partition count.
    pub partitions: usize,
    /// Replicas per partition.
    pub replication_factor: u32,
}

/// A broker as `cluster status` shows it.
#[derive(Serialize, Debug)]
pub struct BrokerView {
    /// Node id.
    pub id: u64,
    /// Address clients reach it at (empty until it has registered itself).
    pub address: String,
    /// Address its peers reach it at (its internal listener when it has one).
    pub internal_address: String,
    /// Rack, if configured.
    pub rack: Option<String>,
    /// Being decommissioned (its replicas moving elsewhere).
    pub decommissioning: bool,
}

impl From<&BrokerDescription> for BrokerView {
    fn from(b: &BrokerDescription) -> Self {
        BrokerView {
            id: b.id,
            address: b.address.clone(),
            internal_address: b.internal_address.clone(),
            rack: b.rack.clone(),
            decommissioning: b.decommissioning,
        }
    }
}

/// `cluster status`.
#[derive(Serialize, Debug)]
pub struct ClusterView {
    /// The controller leader, if one is elected.
    pub controller: Option<u64>,
    /// The controller's voters (its quorum).
    pub controller_voters: Vec<u64>,
    /// Registered brokers.
    pub brokers: Vec<BrokerView>,
    /// Every topic.
    pub topics: Vec<TopicView>,
}

/// The outcome of a topic create or delete.
#[derive(Serialize, Debug)]
pub struct TopicOutcome {
    /// Topic name.
    pub topic: String,
    /// Whether it was done.
    pub ok: bool,
    /// Why not, when not.
    pub error: Option<String>,
}

/// `topic move-leader`.
#[derive(Serialize, Debug)]
pub struct LeaderMoved {
    /// Topic name.
    pub topic: String,
    /// Partition.
    pub partition: u32,
    /// Its leader now.
    pub leader: u64,
}

/// Prints `value` as one JSON document (a closed pipe, as in `... | head`, is an error, not a
/// panic).
pub fn print_json(value: &impl Serialize) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", serde_json::to_string_pretty(value)?)?;
    Ok(())
}
