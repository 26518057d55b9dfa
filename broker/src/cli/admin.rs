//! Admin commands against a running cluster: topics, cluster status, produce, consume.

use anyhow::{bail, Context};
use bytes::Bytes;
use client::{Acks, Cluster, ErrorCode, OffsetSpec, RetryPolicy, TopicSpec};
use proto::record_batch::{decode_records, encode_batch, ProducerStamp, Record};
use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// `broker topic ...`
#[derive(clap::Subcommand, Debug)]
pub enum TopicCommand {
    /// Create a topic.
    Create {
        /// Topic name.
        name: String,
        /// Partition count.
        #[arg(long, default_value_t = 1)]
        partitions: u32,
        /// Replicas per partition.
        #[arg(long, default_value_t = 3)]
        replication_factor: u32,
        /// Topic config overrides, `key=value` (e.g. retention_ms=31536000000, fsync=always).
        #[arg(long = "config", value_parser = parse_key_value)]
        configs: Vec<(String, String)>,
    },
    /// List topics.
    List,
    /// Show a topic's partitions, leaders, replicas, ISR, offsets and configs.
    Describe {
        /// Topic name.
        name: String,
    },
    /// Delete a topic and its data.
    Delete {
        /// Topic name.
        name: String,
    },
}

fn parse_key_value(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("{text:?}: expected key=value"))
}

/// A client with the CLI's retry policy.
pub fn connect(bootstrap: &str) -> Cluster {
    Cluster::new(
        bootstrap.split(',').map(str::to_string).collect(),
        RetryPolicy {
            deadline: Duration::from_secs(15),
            ..RetryPolicy::default()
        },
    )
}

fn check_results(results: Vec<proto::v1::TopicResult>, verb: &str) -> anyhow::Result<()> {
    let mut failed = false;
    for result in results {
        if result.error == ErrorCode::None as i32 {
            println!("{verb} topic {}", result.name);
        } else {
            failed = true;
            let code = ErrorCode::try_from(result.error).unwrap_or(ErrorCode::InvalidRequest);
            eprintln!("error: topic {}: {code:?}: {}", result.name, result.message);
        }
    }
    if failed {
        bail!("not every topic could be {verb}");
    }
    Ok(())
}

/// Runs a `broker topic` command.
pub async fn topic(bootstrap: &str, command: TopicCommand) -> anyhow::Result<()> {
    let cluster = connect(bootstrap);
    match command {
        TopicCommand::Create {
            name,
            partitions,
            replication_factor,
            configs,
        } => {
            let spec = TopicSpec {
                name,
                partitions,
                replication_factor,
                configs: configs.into_iter().collect::<HashMap<_, _>>(),
            };
            check_results(cluster.create_topics(vec![spec]).await?, "created")
        }
        TopicCommand::Delete { name } => check_results(cluster.delete_topics(vec![name]).await?, "deleted"),
        TopicCommand::List => {
            let metadata = cluster.metadata(Vec::new()).await?;
            for topic in metadata.topics {
                println!(
                    "{}\tpartitions={}\treplication_factor={}",
                    topic.name,
                    topic.partitions.len(),
                    topic.replication_factor
                );
            }
            Ok(())
        }
        TopicCommand::Describe { name } => {
            let metadata = cluster.describe_topics(vec![name]).await?;
            for topic in metadata.topics {
                if topic.error != ErrorCode::None as i32 {
                    bail!("{}", topic.message);
                }
                println!("topic {}  replication_factor={}", topic.name, topic.replication_factor);
                let mut configs: Vec<_> = topic.configs.into_iter().collect();
                configs.sort();
                for (key, value) in configs {
                    println!("  {key}={value}");
                }
                print_partitions(&topic.partitions);
            }
            Ok(())
        }
    }
}

fn list(ids: &[u64]) -> String {
    ids.iter().map(u64::to_string).collect::<Vec<_>>().join(",")
}

fn print_partitions(partitions: &[proto::v1::PartitionDescription]) {
    println!("  partition  leader  replicas  isr  high_watermark  log_start");
    for p in partitions {
        let opt = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
        println!(
            "  {:>9}  {:>6}  {:>8}  {:>3}  {:>14}  {:>9}",
            p.partition,
            opt(p.leader),
            list(&p.replicas),
            list(&p.isr),
            opt(p.high_watermark),
            opt(p.log_start_offset)
        );
    }
}

/// `broker cluster status`: brokers, controller, and every partition's leader, replicas, ISR
/// and high watermark.
pub async fn cluster_status(bootstrap: &str) -> anyhow::Result<()> {
    let cluster = connect(bootstrap);
    let metadata = cluster.describe_topics(Vec::new()).await?;
    println!(
        "controller: {}",
        metadata
            .controller
            .map_or("(none elected)".to_string(), |c| c.to_string())
    );
    for broker in &metadata.brokers {
        println!(
            "broker {}  {}{}",
            broker.id,
            broker.address,
            broker.rack.as_ref().map_or(String::new(), |r| format!("  rack={r}"))
        );
    }
    for topic in &metadata.topics {
        println!("topic {}", topic.name);
        print_partitions(&topic.partitions);
        let under = topic
            .partitions
            .iter()
            .filter(|p| p.leader.is_some() && p.isr.len() < p.replicas.len())
            .count();
        if under > 0 {
            println!("  under-replicated partitions: {under}");
        }
    }
    Ok(())
}

fn parse_acks(text: &str) -> anyhow::Result<Acks> {
    Ok(match text {
        "all" | "-1" => Acks::All,
        "1" | "leader" => Acks::Leader,
        "0" | "none" => Acks::None,
        other => bail!("--acks {other:?}: expected all, 1 or 0"),
    })
}

/// `broker produce`: lines of standard input (`key<TAB>value` or `value`) as records. Keyed
/// records go to the partition Kafka's default partitioner would choose (murmur2 of the key)
/// unless `partition` is given; unkeyed records go to `partition` or 0.
pub async fn produce(bootstrap: &str, topic: &str, partition: Option<u32>, acks: &str) -> anyhow::Result<()> {
    let acks = parse_acks(acks)?;
    let cluster = connect(bootstrap);
    let metadata = cluster.metadata(vec![topic.to_string()]).await?;
    let description = metadata.topics.first().context("no answer for the topic")?;
    if description.error != ErrorCode::None as i32 {
        bail!("{}", description.message);
    }
    let partitions = description.partitions.len() as u32;
    if let Some(p) = partition.filter(|p| *p >= partitions) {
        bail!("topic {topic} has {partitions} partitions; there is no partition {p}");
    }
    let mut pending: HashMap<u32, (Vec<Record>, usize)> = HashMap::new();
    let mut sent = 0usize;
    for line in std::io::stdin().lock().lines() {
        let line = line.context("reading standard input")?;
        let (key, value) = match line.split_once('\t') {
            Some((key, value)) => (Some(Bytes::from(key.to_string())), value.to_string()),
            None => (None, line),
        };
        let target = match (partition, &key) {
            (Some(p), _) => p,
            (None, Some(key)) => client::partitioner::partition_for_key(key, partitions),
            (None, None) => 0,
        };
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let (records, bytes) = pending.entry(target).or_default();
        *bytes += value.len() + key.as_ref().map_or(0, Bytes::len);
        records.push(Record {
            timestamp,
            key,
            value: Some(Bytes::from(value)),
            ..Record::default()
        });
        if records.len() >= 1000 || *bytes >= 256 * 1024 {
            sent += records.len();
            send(&cluster, topic, target, acks, &std::mem::take(records)).await?;
            *bytes = 0;
        }
    }
    for (target, (records, _)) in pending {
        if !records.is_empty() {
            sent += records.len();
            send(&cluster, topic, target, acks, &records).await?;
        }
    }
    eprintln!("produced {sent} records to {topic}");
    Ok(())
}

async fn send(cluster: &Cluster, topic: &str, partition: u32, acks: Acks, records: &[Record]) -> anyhow::Result<()> {
    let batch = encode_batch(records, ProducerStamp::NONE);
    cluster
        .produce(topic, partition, acks, batch)
        .await
        .context("produce")?;
    Ok(())
}

/// Where `broker consume` starts.
pub enum StartAt {
    /// The log start offset.
    Beginning,
    /// The high watermark (only new records).
    End,
    /// A given offset.
    Offset(u64),
}

/// `broker consume`: prints records (`key<TAB>value` or `value`), up to `max` of them.
pub async fn consume(
    bootstrap: &str,
    topic: &str,
    partition: u32,
    start: StartAt,
    max: Option<usize>,
) -> anyhow::Result<()> {
    let cluster = connect(bootstrap);
    let mut offset = match start {
        StartAt::Beginning => cluster
            .list_offsets(topic, partition, OffsetSpec::Earliest, 0)
            .await?
            .unwrap_or(0),
        StartAt::End => cluster
            .list_offsets(topic, partition, OffsetSpec::Latest, 0)
            .await?
            .unwrap_or(0),
        StartAt::Offset(offset) => offset,
    };
    let mut printed = 0usize;
    let stdout = std::io::stdout();
    loop {
        let (batches, _high_watermark) = cluster
            .fetch(topic, partition, offset, 1024 * 1024, Duration::from_millis(500))
            .await?;
        for batch in batches {
            for record in decode_records(&batch.records).context("decoding a fetched batch")? {
                let at = batch.base_offset + record.offset_delta as u64;
                if at < offset {
                    continue;
                }
                let value = record
                    .value
                    .map(|v| String::from_utf8_lossy(&v).into_owned())
                    .unwrap_or_default();
                let mut out = stdout.lock();
                match record.key {
                    Some(key) => writeln!(out, "{}\t{value}", String::from_utf8_lossy(&key))?,
                    None => writeln!(out, "{value}")?,
                }
                offset = at + 1;
                printed += 1;
                if max.is_some_and(|max| printed >= max) {
                    return Ok(());
                }
            }
        }
    }
}
