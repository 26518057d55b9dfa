//! `broker partition ...`: moving partitions between brokers — `reassign` (one partition, or a
//! JSON plan for many, like `kafka-reassign-partitions`), `reassignments` (the moves in
//! progress), `cancel`, and `throttle` (the copy traffic's rate per broker).

use super::admin::connect;
use super::output::{print_json, OutputFormat};
use anyhow::{bail, Context};
use client::{Admin, PartitionReplicas, ReassignmentDescription};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// `broker partition ...`
#[derive(clap::Subcommand, Debug)]
pub enum PartitionCommand {
    /// Move partitions to new replica sets while they serve: the new replicas copy the log as
    /// Raft learners, the voters switch once they have caught up, and the replicas dropped
    /// delete their data. One partition (`TOPIC --partition P --replicas 1,2,4`) or a plan
    /// (`--plan FILE`: `{"partitions":[{"topic":"t","partition":0,"replicas":[1,2,4]}]}`,
    /// Kafka's reassignment JSON), checked whole and started whole or not at all.
    Reassign {
        /// Topic of the one partition to move.
        #[arg(required_unless_present = "plan", requires_all = ["partition", "replicas"])]
        topic: Option<String>,
        /// The partition to move.
        #[arg(long)]
        partition: Option<u32>,
        /// Its new replicas, preferred leader first (comma-separated broker ids).
        #[arg(long, value_delimiter = ',')]
        replicas: Option<Vec<u64>>,
        /// A JSON plan of moves instead.
        #[arg(long, conflicts_with_all = ["topic", "partition", "replicas"])]
        plan: Option<PathBuf>,
        /// Wait until every move of the plan has completed (or, after `--timeout-secs`, fail).
        #[arg(long)]
        wait: bool,
        /// How long `--wait` waits.
        #[arg(long, default_value_t = 600)]
        timeout_secs: u64,
    },
    /// The moves in progress: replicas, target, the replicas being added and dropped.
    Reassignments,
    /// Limit the bytes per second each broker's partition leaders send to replicas still
    /// copying a moving partition's log (`off` lifts it), so moving data does not starve producers. Appends to
    /// in-sync voters never wait on it.
    Throttle {
        /// Bytes per second, or `off`.
        rate: String,
    },
    /// Cancel moves in progress: each partition returns to the replicas it had (the replicas
    /// it was gaining delete what they copied).
    Cancel {
        /// Topic of the partition.
        topic: String,
        /// The partition.
        #[arg(long)]
        partition: u32,
    },
}

/// A reassignment plan, as `kafka-reassign-partitions --reassignment-json-file` reads it.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    /// Kafka's plans carry `"version": 1`; accepted and ignored.
    #[serde(default)]
    pub version: Option<u32>,
    /// The moves.
    pub partitions: Vec<PlannedMove>,
}

/// One move of a plan.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlannedMove {
    /// Topic name.
    pub topic: String,
    /// Partition index.
    pub partition: u32,
    /// The replicas wanted, preferred leader first.
    pub replicas: Vec<u64>,
    /// Kafka's plans may name log directories; there is one per broker here.
    #[serde(default)]
    pub log_dirs: Option<Vec<String>>,
}

/// A move in progress, as printed.
#[derive(Debug, Serialize)]
struct MoveView {
    topic: String,
    partition: u32,
    replicas: Vec<u64>,
    target: Vec<u64>,
    adding: Vec<u64>,
    removing: Vec<u64>,
    cancelled: bool,
}

impl From<&ReassignmentDescription> for MoveView {
    fn from(d: &ReassignmentDescription) -> Self {
        MoveView {
            topic: d.topic.clone(),
            partition: d.partition,
            replicas: d.replicas.clone(),
            target: d.target.clone(),
            adding: d.adding.clone(),
            removing: d.removing.clone(),
            cancelled: d.cancelled,
        }
    }
}

fn ids(list: &[u64]) -> String {
    list.iter().map(u64::to_string).collect::<Vec<_>>().join(",")
}

/// Runs a `broker partition` command.
pub async fn run(bootstrap: &str, command: PartitionCommand, output: OutputFormat) -> anyhow::Result<()> {
    let admin = Admin::new(connect(bootstrap));
    match command {
        PartitionCommand::Reassign {
            topic,
            partition,
            replicas,
            plan,
            wait,
            timeout_secs,
        } => {
            let moves: Vec<PartitionReplicas> = match (plan, topic, partition, replicas) {
                (Some(path), ..) => {
                    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
                    let plan: Plan = serde_json::from_str(&text)
                        .with_context(|| format!("{} is not a reassignment plan", path.display()))?;
                    plan.partitions
                        .into_iter()
                        .map(|m| PartitionReplicas {
                            topic: m.topic,
                            partition: m.partition,
                            replicas: m.replicas,
                        })
                        .collect()
                }
                (None, Some(topic), Some(partition), Some(replicas)) => vec![PartitionReplicas {
                    topic,
                    partition,
                    replicas,
                }],
                _ => bail!("give TOPIC --partition P --replicas IDS, or --plan FILE"),
            };
            let count = moves.len();
            let wanted: Vec<(String, u32)> = moves.iter().map(|m| (m.topic.clone(), m.partition)).collect();
            admin.reassign_partitions(moves).await?;
            if output == OutputFormat::Text {
                println!("started {count} partition move(s)");
            }
            if wait {
                wait_until_done(&admin, &wanted, Duration::from_secs(timeout_secs), output).await?;
            } else if output == OutputFormat::Json {
                print_json(&serde_json::json!({ "started": count }))?;
            }
            Ok(())
        }
        PartitionCommand::Reassignments => {
            let moves: Vec<MoveView> = admin.list_reassignments().await?.iter().map(MoveView::from).collect();
            match output {
                OutputFormat::Json => print_json(&moves),
                OutputFormat::Text => {
                    println!(
                        "{:<24} {:>9} {:<12} {:<12} {:<10} {:<10} state",
                        "topic", "partition", "replicas", "target", "adding", "removing"
                    );
                    for m in &moves {
                        println!(
                            "{:<24} {:>9} {:<12} {:<12} {:<10} {:<10} {}",
                            m.topic,
                            m.partition,
                            ids(&m.replicas),
                            ids(&m.target),
                            ids(&m.adding),
                            ids(&m.removing),
                            if m.cancelled { "cancelling" } else { "moving" }
                        );
                    }
                    println!("{} move(s) in progress", moves.len());
                    Ok(())
                }
            }
        }
        PartitionCommand::Throttle { rate } => {
            let bytes_per_sec =
                match rate.as_str() {
                    "off" | "none" => None,
                    number => Some(number.parse::<u64>().ok().filter(|n| *n > 0).with_context(|| {
                        format!("{number:?} is not a positive number of bytes per second, nor `off`")
                    })?),
                };
            admin.set_reassignment_throttle(bytes_per_sec).await?;
            match output {
                OutputFormat::Json => print_json(&serde_json::json!({ "bytes_per_sec": bytes_per_sec })),
                OutputFormat::Text => {
                    match bytes_per_sec {
                        Some(rate) => println!("replica moves send at most {rate} bytes/s from each broker"),
                        None => println!("replica moves are not throttled"),
                    }
                    Ok(())
                }
            }
        }
        PartitionCommand::Cancel { topic, partition } => {
            admin.cancel_reassignments(vec![(topic.clone(), partition)]).await?;
            match output {
                OutputFormat::Json => {
                    print_json(&serde_json::json!({ "cancelled": [{"topic": topic, "partition": partition}] }))
                }
                OutputFormat::Text => {
                    println!("cancelling the move of {topic}/{partition}");
                    Ok(())
                }
            }
        }
    }
}

/// Polls the moves in progress until none of `wanted` is among them.
async fn wait_until_done(
    admin: &Admin,
    wanted: &[(String, u32)],
    timeout: Duration,
    output: OutputFormat,
) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        let moving: Vec<ReassignmentDescription> = admin
            .list_reassignments()
            .await?
            .into_iter()
            .filter(|d| wanted.iter().any(|(t, p)| *t == d.topic && *p == d.partition))
            .collect();
        if moving.is_empty() {
            let elapsed = started.elapsed().as_secs_f64();
            match output {
                OutputFormat::Json => {
                    print_json(&serde_json::json!({ "completed": wanted.len(), "seconds": elapsed }))?
                }
                OutputFormat::Text => println!("all {} move(s) complete in {elapsed:.1} s", wanted.len()),
            }
            return Ok(());
        }
        if started.elapsed() > timeout {
            bail!("{} move(s) still in progress after {timeout:?}", moving.len());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafkas_reassignment_json_is_a_plan_and_typos_are_refused() {
        let plan: Plan = serde_json::from_str(
            r#"{"version":1,"partitions":[
                {"topic":"orders","partition":0,"replicas":[4,2,3]},
                {"topic":"orders","partition":1,"replicas":[1,4,3],"log_dirs":["any","any","any"]}]}"#,
        )
        .unwrap();
        assert_eq!(plan.partitions.len(), 2);
        assert_eq!(plan.partitions[1].replicas, vec![1, 4, 3]);
        assert!(serde_json::from_str::<Plan>(r#"{"partitions":[{"topic":"t","partition":0,"replica":[1]}]}"#).is_err());
    }
}
