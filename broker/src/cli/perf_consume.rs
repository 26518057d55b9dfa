//! `broker perf consume` and `broker perf rebalance`: consumer groups against three local broker
//! processes (RF=3 topics, fsync=always), clients and brokers sharing the machine.
//!
//! - `consume`: a topic pre-filled with `--records` records is read by `--members` group
//!   consumers in this process: records/s and MB/s from the first record to the last. With
//!   `--rate`, instead: records produced at that fixed rate, each carrying its send time, and
//!   the produce → group-consumer latency (HDR histogram, p50/p99).
//! - `rebalance`: `--members` members over `--partitions` partitions, then one more joins: the
//!   time until every partition is owned again (the group stable with its new member).

use super::local_cluster::LocalCluster;
use super::progress::{self, Phase};
use anyhow::{bail, Context};
use bytes::Bytes;
use client::{Admin, GroupConfig, GroupConsumer, OffsetReset, Producer, ProducerConfig, ProducerRecord};
use hdrhistogram::Histogram;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Flags of `broker perf consume`.
#[derive(clap::Args, Debug)]
pub struct ConsumeArgs {
    /// Bytes of each record's value.
    #[arg(long, default_value_t = 100)]
    record_size: usize,
    /// Records to pre-fill and read (throughput mode).
    #[arg(long, default_value_t = 2_000_000)]
    records: u64,
    /// Partitions of the topic (RF=3).
    #[arg(long, default_value_t = 6)]
    partitions: u32,
    /// Group members reading it, in this process.
    #[arg(long, default_value_t = 1)]
    members: usize,
    /// Produce at this many records/s for `--seconds` and report produce → consume latency
    /// instead of throughput (keep it below saturation).
    #[arg(long)]
    rate: Option<u64>,
    /// Seconds of producing at `--rate`.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// The producer's `linger.ms` with `--rate`: longer lingers make fewer, larger batches, so
    /// each partition's 5 in-flight acks=all batches carry more records.
    #[arg(long, default_value_t = 5)]
    linger_ms: u64,
    /// The members' `max_partition_fetch_bytes`: at most this much per partition per fetch.
    #[arg(long, default_value_t = 4 * 1024 * 1024)]
    fetch_bytes: u32,
    /// Scratch directory for the brokers' data (emptied before and after).
    #[arg(long, default_value = "target/perf-consume")]
    dir: PathBuf,
}

/// Flags of `broker perf rebalance`.
#[derive(clap::Args, Debug)]
pub struct RebalanceArgs {
    /// Members before the one that joins.
    #[arg(long, default_value_t = 9)]
    members: usize,
    /// Partitions of the topic (RF=3).
    #[arg(long, default_value_t = 120)]
    partitions: u32,
    /// How many joins to time (the joiner leaves again between them).
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Members' heartbeat interval in ms (Kafka's default is 3000; a joiner waits for the
    /// others' next heartbeats to release its partitions).
    #[arg(long, default_value_t = 3000)]
    heartbeat_interval_ms: u64,
    /// Scratch directory for the brokers' data (emptied before and after).
    #[arg(long, default_value = "target/perf-rebalance")]
    dir: PathBuf,
}

fn member_config(group: &str, heartbeat_interval: Duration) -> GroupConfig {
    GroupConfig {
        auto_offset_reset: OffsetReset::Earliest,
        heartbeat_interval,
        max_partition_fetch_bytes: 4 * 1024 * 1024,
        prefetch_chunks: 32,
        ..GroupConfig::new(group)
    }
}

fn payload(size: usize) -> Bytes {
    // Printable bytes in a pseudo-random order: not trivially compressible.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    (0..size)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            b'!' + (state % 90) as u8
        })
        .collect::<Vec<u8>>()
        .into()
}

fn micros_since_epoch() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Runs `broker perf consume`.
pub async fn run_consume(args: ConsumeArgs) -> anyhow::Result<()> {
    if args.members == 0 || args.record_size < 8 {
        bail!("--members must be at least 1 and --record-size at least 8");
    }
    let local = LocalCluster::start(&args.dir, &[], false, false).await?;
    local
        .create_topic("perf", args.partitions, Duration::from_secs(120))
        .await?;
    let outcome = match args.rate {
        None => throughput(&local, &args).await,
        Some(rate) => latency(&local, &args, rate).await,
    };
    local.stop().await?;
    outcome
}

async fn throughput(local: &LocalCluster, args: &ConsumeArgs) -> anyhow::Result<()> {
    let producer = Producer::new(
        Arc::clone(&local.cluster),
        // acks=all: when the fill ends every record is committed, so the read measures the
        // consumer, not the followers catching up (the high watermark bounds every fetch).
        ProducerConfig {
            batch_size: 512 * 1024,
            linger: Duration::from_millis(5),
            ..ProducerConfig::default()
        },
    )?;
    let value = payload(args.record_size);
    let filling = Instant::now();
    let fill = Phase::counted("filling the topic", args.records);
    let record_bytes = args.record_size as u64;
    for n in 0..args.records {
        // Every 8192 records: keeps even the phase's throttle (a clock read) off the per-record path.
        if n.is_multiple_of(8192) {
            fill.set_position(n);
            fill.message(|| progress::throughput(n, n * record_bytes, filling.elapsed()));
        }
        let partition = ((n / 1000) % u64::from(args.partitions)) as u32;
        // Deliveries are not awaited one by one: flush waits for all of them.
        drop(
            producer
                .send(ProducerRecord::new("perf", value.clone()).partition(partition))
                .await?,
        );
    }
    fill.finish();
    let acknowledging = Phase::open("acknowledging");
    acknowledging.message(|| format!("{} records sent; waiting for the last acknowledgements", args.records));
    producer.flush().await;
    producer.close().await;
    acknowledging.finish();
    // acks=all returns once two replicas have a batch: the third may still be appending, and
    // would share the machine with the read.
    let catching_up = Phase::open("followers catching up");
    let leaders = local.wait_replicas_caught_up("perf", Duration::from_secs(300)).await?;
    catching_up.finish();
    eprintln!(
        "filled {} records in {:.1} s",
        args.records,
        filling.elapsed().as_secs_f64()
    );

    let consumed = Arc::new(AtomicU64::new(0));
    let bytes = Arc::new(AtomicU64::new(0));
    let first_record: Arc<Mutex<Option<Instant>>> = Arc::default();
    let done = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut members = Vec::new();
    for _ in 0..args.members {
        let mut consumer = GroupConsumer::new(
            Arc::clone(&local.cluster),
            GroupConfig {
                max_partition_fetch_bytes: args.fetch_bytes,
                ..member_config("perf-consume", Duration::from_secs(3))
            },
        )?;
        let (consumed, bytes, first_record, done, target) = (
            Arc::clone(&consumed),
            Arc::clone(&bytes),
            Arc::clone(&first_record),
            Arc::clone(&done),
            args.records,
        );
        members.push(tokio::spawn(async move {
            consumer.subscribe(vec!["perf".into()]).await?;
            while !done.load(Ordering::Relaxed) {
                let records = consumer.poll(Duration::from_millis(200)).await?;
                if records.is_empty() {
                    continue;
                }
                first_record
                    .lock()
                    .expect("first record")
                    .get_or_insert_with(Instant::now);
                let size: usize = records.iter().map(|r| r.value.as_ref().map_or(0, Bytes::len)).sum();
                bytes.fetch_add(size as u64, Ordering::Relaxed);
                if consumed.fetch_add(records.len() as u64, Ordering::Relaxed) + records.len() as u64 >= target {
                    done.store(true, Ordering::Relaxed);
                }
            }
            consumer.close().await?;
            anyhow::Ok(())
        }));
    }
    let reading = Phase::counted("reading", args.records);
    let deadline = Instant::now() + Duration::from_secs(600);
    while !done.load(Ordering::Relaxed) {
        let records = consumed.load(Ordering::Relaxed);
        reading.set_position(records);
        reading.message(|| match *first_record.lock().expect("first record") {
            Some(first) => progress::throughput(records, bytes.load(Ordering::Relaxed), first.elapsed()),
            None => format!("{} member(s) joining the group", args.members),
        });
        if Instant::now() > deadline {
            bail!(
                "read only {} of {} records in 10 minutes",
                consumed.load(Ordering::Relaxed),
                args.records
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let finished = Instant::now();
    reading.finish();
    let closing = Phase::open("closing the members");
    for member in members {
        member.await.context("member task")??;
    }
    closing.finish();
    let first = first_record.lock().expect("first record").unwrap_or(started);
    let elapsed = finished.duration_since(first).as_secs_f64();
    let records = consumed.load(Ordering::Relaxed);
    let records_per_second = records as f64 / elapsed;
    let megabytes_per_second = bytes.load(Ordering::Relaxed) as f64 / elapsed / 1e6;
    let leaders: Vec<String> = leaders
        .iter()
        .map(|(broker, count)| format!("broker {broker} leads {count}"))
        .collect();
    println!(
        "{} B records, {} partitions RF=3 ({}), {} group member(s)",
        args.record_size,
        args.partitions,
        leaders.join(", "),
        args.members
    );
    println!(
        "consumed {records} records in {elapsed:.2} s (first record to last): {records_per_second:.0} records/s, {megabytes_per_second:.1} MB/s; join to first record {:.2} s",
        first.duration_since(started).as_secs_f64()
    );
    Ok(())
}

async fn latency(local: &LocalCluster, args: &ConsumeArgs, rate: u64) -> anyhow::Result<()> {
    let histogram = Arc::new(Mutex::new(Histogram::<u64>::new_with_bounds(1, 120_000_000, 3)?));
    let done = Arc::new(AtomicBool::new(false));
    let mut members = Vec::new();
    for _ in 0..args.members {
        let mut consumer = GroupConsumer::new(
            Arc::clone(&local.cluster),
            GroupConfig {
                auto_offset_reset: OffsetReset::Latest,
                ..member_config("perf-latency", Duration::from_secs(3))
            },
        )?;
        let (histogram, done) = (Arc::clone(&histogram), Arc::clone(&done));
        members.push(tokio::spawn(async move {
            consumer.subscribe(vec!["perf".into()]).await?;
            while !done.load(Ordering::Relaxed) {
                for record in consumer.poll(Duration::from_millis(100)).await? {
                    let now = micros_since_epoch();
                    let sent = record
                        .value
                        .as_ref()
                        .and_then(|v| v.get(..8))
                        .map_or(now, |b| u64::from_be_bytes(b.try_into().expect("8 bytes")));
                    if sent == 0 {
                        continue; // a warm-up record
                    }
                    histogram
                        .lock()
                        .expect("histogram")
                        .saturating_record(now.saturating_sub(sent).max(1));
                }
            }
            consumer.close().await?;
            anyhow::Ok(())
        }));
    }
    // Members own every partition before the clock starts.
    let admin = Admin::new(Arc::clone(&local.cluster));
    let deadline = Instant::now() + Duration::from_secs(60);
    let joining = Phase::counted("joining the group", u64::from(args.partitions));
    joining.message(|| format!("partitions owned by the {} member(s)", args.members));
    loop {
        let owned = admin
            .describe_group("perf-latency")
            .await
            .map_or(0, |d| d.members.iter().map(|m| m.assigned.len()).sum::<usize>());
        joining.set_position(owned as u64);
        if owned == args.partitions as usize {
            joining.finish();
            break;
        }
        if Instant::now() > deadline {
            bail!("the group never owned every partition");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let producer = Producer::new(
        Arc::clone(&local.cluster),
        ProducerConfig {
            linger: Duration::from_millis(args.linger_ms),
            ..ProducerConfig::default()
        },
    )?;
    let filler = payload(args.record_size);
    // Warm up (connections, the producer id, every partition woken from quiescence) with
    // records stamped 0, which the members do not count.
    let warming = Phase::counted("warming up", u64::from(args.partitions));
    warming.message(|| "a record to every partition".into());
    for partition in 0..args.partitions {
        producer
            .send_and_wait(ProducerRecord::new("perf", vec![0u8; args.record_size]).partition(partition))
            .await?;
        warming.set_position(u64::from(partition) + 1);
    }
    warming.finish();
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let started = Instant::now();
    let total = rate * args.seconds;
    let producing = Phase::timed("producing", Duration::from_secs(args.seconds));
    for n in 0..total {
        producing.message(|| {
            let seen = histogram.lock().expect("histogram").len();
            format!("{n} of {total} records sent at {rate}/s, {seen} seen by the group")
        });
        let due = started + interval.mul_f64(n as f64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            tokio::time::sleep(wait).await;
        }
        let mut value = filler.to_vec();
        value[..8].copy_from_slice(&micros_since_epoch().to_be_bytes());
        let partition = (n % u64::from(args.partitions)) as u32;
        drop(
            producer
                .send(ProducerRecord::new("perf", value).partition(partition))
                .await?,
        );
    }
    producing.finish();
    let draining = Phase::open("draining");
    draining.message(|| "the last records reaching the group".into());
    producer.flush().await;
    producer.close().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    done.store(true, Ordering::Relaxed);
    for member in members {
        member.await.context("member task")??;
    }
    draining.finish();
    let histogram = histogram.lock().expect("histogram");
    let ms = |q: f64| histogram.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "{} B records at {rate}/s for {} s, {} partitions RF=3 (acks=all, idempotent, linger {} ms), {} group member(s)",
        args.record_size, args.seconds, args.partitions, args.linger_ms, args.members
    );
    println!(
        "produce -> group consumer: {} of {total} records seen, p50 {:.2} ms, p99 {:.2} ms, p999 {:.2} ms, max {:.2} ms",
        histogram.len(),
        ms(0.5),
        ms(0.99),
        ms(0.999),
        histogram.max() as f64 / 1000.0
    );
    Ok(())
}

/// Runs `broker perf rebalance`.
pub async fn run_rebalance(args: RebalanceArgs) -> anyhow::Result<()> {
    let local = LocalCluster::start(&args.dir, &[], false, false).await?;
    local
        .create_topic("perf", args.partitions, Duration::from_secs(120))
        .await?;
    let outcome = rebalance(&local, &args).await;
    local.stop().await?;
    outcome
}

/// A member that polls until told to stop.
fn spawn_member(
    local: &LocalCluster,
    heartbeat_interval: Duration,
    stop: &Arc<AtomicBool>,
) -> anyhow::Result<tokio::task::JoinHandle<anyhow::Result<()>>> {
    let mut consumer = GroupConsumer::new(
        Arc::clone(&local.cluster),
        member_config("perf-rebalance", heartbeat_interval),
    )?;
    let stop = Arc::clone(stop);
    Ok(tokio::spawn(async move {
        consumer.subscribe(vec!["perf".into()]).await?;
        while !stop.load(Ordering::Relaxed) {
            consumer.poll(Duration::from_millis(100)).await?;
        }
        consumer.close().await?;
        Ok(())
    }))
}

/// Waits until the group is stable with `members` members owning every partition, showing
/// where it is in `phase`'s message.
async fn wait_owned(admin: &Admin, members: usize, partitions: u32, phase: &Phase) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(described) = admin.describe_group("perf-rebalance").await {
            let owned: usize = described.members.iter().map(|m| m.assigned.len()).sum();
            phase.message(|| {
                format!(
                    "{}/{members} members, {owned}/{partitions} partitions owned, group {}",
                    described.members.len(),
                    described.state
                )
            });
            if described.state == "stable" && described.members.len() == members && owned == partitions as usize {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            bail!("the group never settled with {members} members");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn rebalance(local: &LocalCluster, args: &RebalanceArgs) -> anyhow::Result<()> {
    let heartbeat = Duration::from_millis(args.heartbeat_interval_ms);
    let admin = Admin::new(Arc::clone(&local.cluster));
    let stop_all = Arc::new(AtomicBool::new(false));
    let mut members = Vec::new();
    for _ in 0..args.members {
        members.push(spawn_member(local, heartbeat, &stop_all)?);
    }
    let forming = Phase::open("forming the group");
    forming.message(|| format!("{} members subscribing", args.members));
    wait_owned(&admin, args.members, args.partitions, &forming).await?;
    forming.finish();
    let mut times = Vec::new();
    let joins = Phase::counted("timing joins", args.runs as u64);
    for _ in 0..args.runs {
        let stop_joiner = Arc::new(AtomicBool::new(false));
        let joined = Instant::now();
        let joiner = spawn_member(local, heartbeat, &stop_joiner)?;
        wait_owned(&admin, args.members + 1, args.partitions, &joins).await?;
        times.push(joined.elapsed());
        stop_joiner.store(true, Ordering::Relaxed);
        joiner.await.context("joiner task")??;
        wait_owned(&admin, args.members, args.partitions, &joins).await?;
        joins.set_position(times.len() as u64);
    }
    joins.finish();
    let closing = Phase::open("closing the members");
    stop_all.store(true, Ordering::Relaxed);
    for member in members {
        member.await.context("member task")??;
    }
    closing.finish();
    times.sort();
    let ms = |d: &Duration| d.as_secs_f64() * 1000.0;
    println!(
        "member {} joining a {}-member group over {} partitions (heartbeat interval {} ms), {} runs",
        args.members + 1,
        args.members,
        args.partitions,
        args.heartbeat_interval_ms,
        times.len()
    );
    println!(
        "until every partition is owned again: median {:.0} ms (min {:.0}, max {:.0}); runs {:?}",
        ms(&times[times.len() / 2]),
        ms(&times[0]),
        ms(&times[times.len() - 1]),
        times.iter().map(|t| ms(t).round() as u64).collect::<Vec<_>>()
    );
    Ok(())
}
