//! `broker cluster ...`: the cluster-wide views (`status`, `partitions`), moving leadership
//! back to preferred replicas (`balance-leaders`), and emptying a broker (`decommission`,
//! `recommission`).

use super::admin::connect;
use super::output::{
    print_json, print_partitions, BrokerView, ClusterView, OutputFormat, PartitionView, TopicView, PARTITION_COLUMNS,
};
use anyhow::bail;
use client::Admin;
use proto::v1::TopicDescription;
use serde::Serialize;

/// `broker cluster ...`
#[derive(clap::Subcommand, Debug)]
pub enum ClusterCommand {
    /// Brokers, controller, and every partition's leader, replicas, ISR and high watermark.
    Status,
    /// Every partition of every topic, one line each: leader, replicas, ISR, high watermark, log
    /// start.
    Partitions,
    /// Move each partition's leadership back to its preferred replica (the first of its
    /// replicas, where topic creation put it) if that replica is in sync.
    BalanceLeaders,
    /// Move every replica off a broker (rack-aware, least loaded brokers first) and place
    /// nothing new on it; with `--wait`, return once it holds no replica: safe to stop.
    Decommission {
        /// The broker's id.
        broker: u64,
        /// Wait until it holds no replica.
        #[arg(long)]
        wait: bool,
        /// How long `--wait` waits.
        #[arg(long, default_value_t = 600)]
        timeout_secs: u64,
    },
    /// End a decommission: the broker takes replicas again; moves off it still in progress are
    /// cancelled.
    Recommission {
        /// The broker's id.
        broker: u64,
    },
    /// Print the controller's voters (its quorum), or, given brokers, make them the voters
    /// (to replace a dead voter, or grow the quorum): each catches up as a learner, then the
    /// voters switch by joint consensus; brokers that stop voting keep following the metadata.
    /// Returns once the switch has committed; if it fails half-way, run it again.
    ControllerVoters {
        /// The new voters, comma-separated (`2,3,4`); none to print the current ones.
        #[arg(value_delimiter = ',')]
        voters: Vec<u64>,
    },
}

/// Runs a `broker cluster` command.
pub async fn run(bootstrap: &str, command: ClusterCommand, output: OutputFormat) -> anyhow::Result<()> {
    let admin = Admin::new(connect(bootstrap));
    match command {
        ClusterCommand::Decommission {
            broker,
            wait,
            timeout_secs,
        } => {
            return decommission(
                &admin,
                broker,
                wait,
                std::time::Duration::from_secs(timeout_secs),
                output,
            )
            .await
        }
        ClusterCommand::ControllerVoters { voters } => {
            if !voters.is_empty() {
                admin.set_controller_voters(voters.clone()).await?;
            }
            let now = admin.describe_cluster().await?.controller_voters;
            return match output {
                OutputFormat::Json => print_json(&serde_json::json!({ "controller_voters": now })),
                OutputFormat::Text => {
                    let list = now.iter().map(u64::to_string).collect::<Vec<_>>().join(",");
                    println!("controller voters: {list}");
                    Ok(())
                }
            };
        }
        ClusterCommand::Recommission { broker } => {
            admin.recommission_broker(broker).await?;
            return match output {
                OutputFormat::Json => print_json(&serde_json::json!({ "recommissioned": broker })),
                OutputFormat::Text => {
                    println!("broker {broker} takes replicas again; moves off it still in progress are cancelled");
                    Ok(())
                }
            };
        }
        _ => {}
    }
    let metadata = admin.describe_cluster().await?;
    match command {
        ClusterCommand::Decommission { .. }
        | ClusterCommand::Recommission { .. }
        | ClusterCommand::ControllerVoters { .. } => unreachable!("handled above"),
        ClusterCommand::Status => {
            let view = ClusterView {
                controller: metadata.controller,
                controller_voters: metadata.controller_voters.clone(),
                brokers: metadata.brokers.iter().map(BrokerView::from).collect(),
                topics: metadata.topics.iter().map(TopicView::from).collect(),
            };
            print_status(&view, output)
        }
        ClusterCommand::Partitions => {
            let rows: Vec<PartitionRow> = metadata
                .topics
                .iter()
                .flat_map(|topic| {
                    topic.partitions.iter().map(|p| PartitionRow {
                        topic: topic.name.clone(),
                        partition: PartitionView::from(p),
                    })
                })
                .collect();
            match output {
                OutputFormat::Json => print_json(&rows),
                OutputFormat::Text => {
                    println!("{:<24} {PARTITION_COLUMNS}", "topic");
                    for row in rows {
                        println!("{:<24} {}", row.topic, row.partition.text_row());
                    }
                    Ok(())
                }
            }
        }
        ClusterCommand::BalanceLeaders => {
            let mut report = BalanceReport::default();
            for planned in leadership_moves(&metadata.topics) {
                match admin
                    .transfer_leadership(&planned.topic, planned.partition, planned.to)
                    .await
                {
                    Ok(()) => report.moved.push(planned),
                    Err(error) => report.failed.push(FailedMove {
                        planned,
                        error: error.to_string(),
                    }),
                }
            }
            match output {
                OutputFormat::Json => print_json(&report)?,
                OutputFormat::Text => {
                    for m in &report.moved {
                        println!("{}/{}: leader {} -> {}", m.topic, m.partition, m.from, m.to);
                    }
                    for f in &report.failed {
                        eprintln!(
                            "error: {}/{} could not move to broker {}: {}",
                            f.planned.topic, f.planned.partition, f.planned.to, f.error
                        );
                    }
                    println!("moved {} partition leaders", report.moved.len());
                }
            }
            if !report.failed.is_empty() {
                bail!(
                    "{} leadership moves failed (run it again once the cluster is healthy)",
                    report.failed.len()
                );
            }
            Ok(())
        }
    }
}

/// How many partitions' replicas (or move targets) still name `broker`.
async fn replicas_on(admin: &Admin, broker: u64) -> anyhow::Result<usize> {
    let topics = admin.list_topics().await?;
    let moving = admin.list_reassignments().await?;
    let held = topics
        .iter()
        .flat_map(|t| t.partitions.iter().map(move |p| (t.name.as_str(), p)))
        .filter(|(topic, p)| {
            p.replicas.contains(&broker)
                || moving
                    .iter()
                    .any(|m| m.topic == *topic && m.partition == p.partition && m.target.contains(&broker))
        })
        .count();
    Ok(held)
}

/// `cluster decommission`: starts it, and with `wait` follows it until the broker holds nothing.
async fn decommission(
    admin: &Admin,
    broker: u64,
    wait: bool,
    timeout: std::time::Duration,
    output: OutputFormat,
) -> anyhow::Result<()> {
    admin.decommission_broker(broker).await?;
    let started = std::time::Instant::now();
    let mut held = replicas_on(admin, broker).await?;
    if output == OutputFormat::Text {
        println!("decommissioning broker {broker}: {held} partition(s) to move off it");
    }
    while wait && held > 0 {
        if started.elapsed() > timeout {
            bail!("broker {broker} still holds {held} partition(s) after {timeout:?}");
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        held = replicas_on(admin, broker).await?;
    }
    let safe = held == 0;
    match output {
        OutputFormat::Json => {
            print_json(&serde_json::json!({ "broker": broker, "partitions_held": held, "safe_to_stop": safe }))
        }
        OutputFormat::Text => {
            if safe {
                println!(
                    "broker {broker} holds no replica: safe to stop ({:.1} s)",
                    started.elapsed().as_secs_f64()
                );
            } else {
                println!("moving; `broker cluster decommission {broker} --wait` or `broker cluster status` follows it");
            }
            Ok(())
        }
    }
}

fn print_status(view: &ClusterView, output: OutputFormat) -> anyhow::Result<()> {
    if output == OutputFormat::Json {
        return print_json(view);
    }
    println!(
        "controller: {}  voters: {}",
        view.controller.map_or("(none elected)".to_string(), |c| c.to_string()),
        view.controller_voters
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(",")
    );
    for broker in &view.brokers {
        let address = if broker.address.is_empty() {
            "(not registered yet)"
        } else {
            &broker.address
        };
        let internal = if broker.internal_address != broker.address && !broker.address.is_empty() {
            format!("  internal={}", broker.internal_address)
        } else {
            String::new()
        };
        println!(
            "broker {}  {address}{internal}{}{}",
            broker.id,
            broker.rack.as_ref().map_or(String::new(), |r| format!("  rack={r}")),
            if broker.decommissioning {
                "  decommissioning"
            } else {
                ""
            }
        );
    }
    for topic in &view.topics {
        println!("topic {}", topic.name);
        print_partitions(&topic.partitions);
        if topic.under_replicated_partitions > 0 {
            println!("  under-replicated partitions: {}", topic.under_replicated_partitions);
        }
    }
    Ok(())
}

/// A line of `cluster partitions`.
#[derive(Serialize, Debug)]
struct PartitionRow {
    topic: String,
    #[serde(flatten)]
    partition: PartitionView,
}

/// A leadership move `balance-leaders` makes.
#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
pub struct LeadershipMove {
    /// Topic name.
    pub topic: String,
    /// Partition.
    pub partition: u32,
    /// Its leader now.
    pub from: u64,
    /// Its preferred replica.
    pub to: u64,
}

#[derive(Serialize, Debug)]
struct FailedMove {
    #[serde(flatten)]
    planned: LeadershipMove,
    error: String,
}

#[derive(Serialize, Debug, Default)]
struct BalanceReport {
    moved: Vec<LeadershipMove>,
    failed: Vec<FailedMove>,
}

/// The moves that put every partition's leadership on its preferred replica (the first of its
/// replicas): only for partitions that have a leader elsewhere and whose preferred replica is
/// in sync (moving to a replica that lags would stall writes until it caught up).
pub fn leadership_moves(topics: &[TopicDescription]) -> Vec<LeadershipMove> {
    topics
        .iter()
        .flat_map(|topic| {
            topic.partitions.iter().filter_map(|p| {
                let preferred = *p.replicas.first()?;
                let leader = p.leader?;
                (leader != preferred && p.isr.contains(&preferred)).then(|| LeadershipMove {
                    topic: topic.name.clone(),
                    partition: p.partition,
                    from: leader,
                    to: preferred,
                })
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::v1::PartitionDescription;

    fn partition(partition: u32, leader: Option<u64>, replicas: &[u64], isr: &[u64]) -> PartitionDescription {
        PartitionDescription {
            partition,
            leader,
            replicas: replicas.to_vec(),
            isr: isr.to_vec(),
            ..Default::default()
        }
    }

    #[test]
    fn moves_only_to_an_in_sync_preferred_replica() {
        let topic = TopicDescription {
            name: "t".into(),
            partitions: vec![
                partition(0, Some(1), &[1, 2, 3], &[1, 2, 3]), // already preferred
                partition(1, Some(3), &[2, 3, 1], &[1, 2, 3]), // moves to 2
                partition(2, Some(1), &[3, 1, 2], &[1, 2]),    // 3 lags: stays
                partition(3, None, &[1, 2, 3], &[]),           // leaderless: nothing to move from
            ],
            ..Default::default()
        };
        assert_eq!(
            leadership_moves(&[topic]),
            vec![LeadershipMove {
                topic: "t".into(),
                partition: 1,
                from: 3,
                to: 2
            }]
        );
    }
}
