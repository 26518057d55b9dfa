//! Admin commands against a running cluster: topics, cluster status, produce, consume.

use super::output::{print_json, print_partitions, LeaderMoved, OutputFormat, TopicOutcome, TopicSummary, TopicView};
use anyhow::{bail, Context};
use bytes::Bytes;
use client::{
    Acks, Admin, Cluster, Consumer, ConsumerConfig, ConsumerRecord, ErrorCode, NewTopic, OffsetReset, Producer,
    ProducerConfig, ProducerRecord, RetryPolicy, SeekTo,
};
use std::io::{BufRead, Write};
use std::sync::Arc;
use std::time::Duration;

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
    /// Grow a topic to more partitions (existing ones keep their data; keyed records re-hash
    /// over the new count, as in Kafka).
    AddPartitions {
        /// Topic name.
        name: String,
        /// The partition count wanted (more than it has).
        #[arg(long)]
        partitions: u32,
    },
    /// Change a topic's configs: `--set key=value` overrides, `--reset key` restores the
    /// default; running replicas apply the change within moments.
    #[command(group(clap::ArgGroup::new("change").required(true).multiple(true).args(["set", "reset"])))]
    AlterConfig {
        /// Topic name.
        name: String,
        /// `key=value` to set (repeatable).
        #[arg(long = "set", value_parser = parse_key_value)]
        set: Vec<(String, String)>,
        /// Key to put back to its default (repeatable).
        #[arg(long = "reset")]
        reset: Vec<String>,
    },
    /// Delete a topic and its data.
    Delete {
        /// Topic name.
        name: String,
    },
    /// Move a partition's leadership to another of its replicas.
    MoveLeader {
        /// Topic name.
        name: String,
        /// Partition.
        #[arg(long)]
        partition: u32,
        /// The broker to lead it (must hold a replica).
        #[arg(long)]
        to: u64,
    },
}

fn parse_key_value(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("{text:?}: expected key=value"))
}

/// How the CLI's clients connect (its `--security-protocol` and `--ssl-*` flags), set once at
/// start; plaintext when never set.
static SECURITY: std::sync::OnceLock<client::Security> = std::sync::OnceLock::new();

/// Makes every client the CLI connects use `security`.
pub fn use_security(security: client::Security) {
    let _ = SECURITY.set(security);
}

/// A client with the CLI's retry policy and security.
pub fn connect(bootstrap: &str) -> Arc<Cluster> {
    connect_with(bootstrap, SECURITY.get().cloned().unwrap_or_default())
}

/// A client with the CLI's retry policy and `security`.
pub fn connect_with(bootstrap: &str, security: client::Security) -> Arc<Cluster> {
    Arc::new(
        Cluster::new(
            bootstrap.split(',').map(str::to_string).collect(),
            RetryPolicy {
                deadline: Duration::from_secs(15),
                ..RetryPolicy::default()
            },
        )
        .with_security(security),
    )
}

/// Reports a command on one topic: `<verb> topic <name>`, or the error (exit 1); with
/// `--output json`, `[{"topic", "ok", "error"}]`.
fn report_topic_outcome(
    name: String,
    outcome: Result<(), client::AdminError>,
    verb: &str,
    output: OutputFormat,
) -> anyhow::Result<()> {
    let outcome = TopicOutcome {
        topic: name,
        ok: outcome.is_ok(),
        error: outcome.err().map(|error| error.to_string()),
    };
    match (output, &outcome.error) {
        (OutputFormat::Json, _) => print_json(&[&outcome])?,
        (OutputFormat::Text, None) => println!("{verb} topic {}", outcome.topic),
        (OutputFormat::Text, Some(error)) => eprintln!("error: {error}"),
    }
    if !outcome.ok {
        bail!("topic {} could not be {verb}", outcome.topic);
    }
    Ok(())
}

/// Runs a `broker topic` command.
pub async fn topic(bootstrap: &str, command: TopicCommand, output: OutputFormat) -> anyhow::Result<()> {
    let admin = Admin::new(connect(bootstrap));
    match command {
        TopicCommand::Create {
            name,
            partitions,
            replication_factor,
            configs,
        } => {
            let mut topic = NewTopic::new(name.clone(), partitions, replication_factor);
            topic.configs = configs.into_iter().collect();
            report_topic_outcome(name, admin.create_topic(topic).await, "created", output)
        }
        TopicCommand::Delete { name } => {
            let outcome = admin.delete_topic(&name).await;
            report_topic_outcome(name, outcome, "deleted", output)
        }
        TopicCommand::AddPartitions { name, partitions } => {
            let outcome = admin.create_partitions(&name, partitions).await;
            report_topic_outcome(name, outcome, "grown", output)
        }
        TopicCommand::AlterConfig { name, set, reset } => {
            let outcome = admin.alter_topic_config(&name, set.into_iter().collect(), reset).await;
            report_topic_outcome(name, outcome, "altered", output)
        }
        TopicCommand::MoveLeader { name, partition, to } => {
            admin.transfer_leadership(&name, partition, to).await?;
            match output {
                OutputFormat::Json => print_json(&LeaderMoved {
                    topic: name,
                    partition,
                    leader: to,
                })?,
                OutputFormat::Text => println!("{name}/{partition} is led by broker {to}"),
            }
            Ok(())
        }
        TopicCommand::List => {
            let topics: Vec<TopicSummary> = admin
                .list_topics()
                .await?
                .into_iter()
                .map(|topic| TopicSummary {
                    partitions: topic.partitions.len(),
                    name: topic.name,
                    replication_factor: topic.replication_factor,
                })
                .collect();
            match output {
                OutputFormat::Json => print_json(&topics)?,
                OutputFormat::Text => {
                    for topic in topics {
                        println!(
                            "{}\tpartitions={}\treplication_factor={}",
                            topic.name, topic.partitions, topic.replication_factor
                        );
                    }
                }
            }
            Ok(())
        }
        TopicCommand::Describe { name } => {
            let mut views = Vec::new();
            for topic in admin.describe_topics(vec![name]).await? {
                if topic.error != ErrorCode::None as i32 {
                    bail!("{}", topic.message);
                }
                views.push(TopicView::from(&topic));
            }
            match output {
                OutputFormat::Json => print_json(&views)?,
                OutputFormat::Text => {
                    for topic in views {
                        println!("topic {}  replication_factor={}", topic.name, topic.replication_factor);
                        for (key, value) in &topic.configs {
                            println!("  {key}={value}");
                        }
                        print_partitions(&topic.partitions);
                    }
                }
            }
            Ok(())
        }
    }
}

fn parse_acks(text: &str) -> anyhow::Result<Acks> {
    Ok(match text {
        "all" | "-1" => Acks::All,
        "1" | "leader" => Acks::Leader,
        "0" | "none" => Acks::None,
        other => bail!("--acks {other:?}: expected all, 1 or 0"),
    })
}

/// `broker produce`: lines of standard input (`key<TAB>value` or `value`) as records, through
/// the batching producer (idempotent with `acks=all`). Keyed records go to the partition Kafka's
/// default partitioner would choose (murmur2 of the key) unless `partition` is given; unkeyed
/// records go to `partition`, or are spread by the sticky partitioner.
pub async fn produce(bootstrap: &str, topic: &str, partition: Option<u32>, acks: &str) -> anyhow::Result<()> {
    let acks = parse_acks(acks)?;
    let config = ProducerConfig {
        acks,
        enable_idempotence: acks == Acks::All,
        max_block: Duration::from_secs(15),
        delivery_timeout: Duration::from_secs(30),
        ..ProducerConfig::default()
    };
    let producer = Producer::new(connect(bootstrap), config)?;
    let mut deliveries = Vec::new();
    for line in std::io::stdin().lock().lines() {
        let line = line.context("reading standard input")?;
        let mut record = match line.split_once('\t') {
            Some((key, value)) => ProducerRecord::new(topic, value.to_string()).key(key.to_string()),
            None => ProducerRecord::new(topic, Bytes::from(line)),
        };
        record.partition = partition;
        deliveries.push(producer.send(record).await?);
    }
    producer.flush().await;
    let sent = deliveries.len();
    for delivery in deliveries {
        delivery.await.context("produce")?;
    }
    producer.close().await;
    eprintln!("produced {sent} records to {topic}");
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

/// `broker consume`: prints records of one partition, or of every partition of the topic, as
/// `key<TAB>value` lines (with `--print-offsets`, `partition<TAB>offset<TAB>` first), or as one
/// JSON object per record with `--output json`.
pub async fn consume(
    bootstrap: &str,
    topic: &str,
    partition: Option<u32>,
    start: StartAt,
    max: Option<usize>,
    print_offsets: bool,
    output: OutputFormat,
) -> anyhow::Result<()> {
    let cluster = connect(bootstrap);
    let partitions: Vec<u32> = match partition {
        Some(partition) => vec![partition],
        None => {
            let topics = Admin::new(Arc::clone(&cluster))
                .describe_topics(vec![topic.to_string()])
                .await?;
            match topics.first() {
                Some(t) if t.error == ErrorCode::None as i32 => t.partitions.iter().map(|p| p.partition).collect(),
                Some(t) => bail!("{}", t.message),
                None => bail!("unknown topic {topic:?}"),
            }
        }
    };
    let config = ConsumerConfig {
        auto_offset_reset: OffsetReset::None,
        ..ConsumerConfig::default()
    };
    let mut consumer = Consumer::new(cluster, config);
    consumer
        .assign(partitions.iter().map(|p| (topic.to_string(), *p)).collect())
        .await?;
    for partition in &partitions {
        let to = match start {
            StartAt::Beginning => SeekTo::Earliest,
            StartAt::End => SeekTo::Latest,
            StartAt::Offset(offset) => SeekTo::Offset(offset),
        };
        consumer.seek(topic, *partition, to).await?;
    }
    let mut printed = 0usize;
    let stdout = std::io::stdout();
    loop {
        for record in consumer.poll(Duration::from_secs(1)).await? {
            print_record(&mut stdout.lock(), &record, print_offsets, output)?;
            printed += 1;
            if max.is_some_and(|max| printed >= max) {
                return Ok(());
            }
        }
    }
}

/// Prints one consumed record as `consume` does: `key<TAB>value` (with `print_offsets`,
/// `partition<TAB>offset<TAB>` first), or one JSON object per line with `--output json`.
pub fn print_record(
    out: &mut impl Write,
    record: &ConsumerRecord,
    print_offsets: bool,
    output: OutputFormat,
) -> anyhow::Result<()> {
    let text = |bytes: &Option<Bytes>| bytes.as_ref().map(|b| String::from_utf8_lossy(b).into_owned());
    if output == OutputFormat::Json {
        let line = ConsumedRecord {
            partition: record.partition,
            offset: record.offset,
            timestamp: record.timestamp,
            key: text(&record.key),
            value: text(&record.value),
        };
        writeln!(out, "{}", serde_json::to_string(&line)?)?;
    } else {
        if print_offsets {
            write!(out, "{}\t{}\t", record.partition, record.offset)?;
        }
        let value = text(&record.value).unwrap_or_default();
        match text(&record.key) {
            Some(key) => writeln!(out, "{key}\t{value}")?,
            None => writeln!(out, "{value}")?,
        }
    }
    Ok(())
}

/// A record as `consume --output json` prints it (one JSON object per line).
#[derive(serde::Serialize)]
struct ConsumedRecord {
    partition: u32,
    offset: u64,
    timestamp: i64,
    key: Option<String>,
    value: Option<String>,
}
