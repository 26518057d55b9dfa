//! `broker perf produce`: records/s, MB/s and send→acknowledgement latency (HDR histogram) of
//! the client's batching producer against three local broker processes (a topic with RF=3, the
//! topic defaults: fsync=always). Producer and brokers share the machine, as they would on a
//! developer's laptop; the brokers' CPU is reported alongside.

use super::local_cluster::LocalCluster;
use super::perf_idle::{clock_ticks_per_second, cpu_ticks};
use super::progress::{self, Phase};
use anyhow::bail;
use bytes::Bytes;
use client::{Acks, Compression, DeliveryFuture, Producer, ProducerConfig, ProducerRecord};
use hdrhistogram::Histogram;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Flags of `broker perf produce`.
#[derive(clap::Args, Debug)]
pub struct ProduceArgs {
    /// Bytes of each record's value.
    #[arg(long, default_value_t = 100)]
    record_size: usize,
    /// `all` or `1`.
    #[arg(long, default_value = "all")]
    acks: String,
    /// Seconds of sending.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Partitions of the topic (RF=3).
    #[arg(long, default_value_t = 6)]
    partitions: u32,
    /// Producer `batch.size` in bytes.
    #[arg(long, default_value_t = 256 * 1024)]
    batch_size: usize,
    /// Producer `linger.ms`.
    #[arg(long, default_value_t = 5)]
    linger_ms: u64,
    /// `none`, `lz4` or `zstd`.
    #[arg(long, default_value = "none")]
    compression: String,
    /// Records per second to offer (0: as fast as the producer takes them). Latency is only
    /// meaningful below saturation; at saturation it is the producer's queueing time.
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Scratch directory for the brokers' data (emptied before and after).
    #[arg(long, default_value = "target/perf-produce")]
    dir: PathBuf,
    /// Brokers serve their admin endpoint, so their Prometheus recorder is on: compare a run
    /// with and one without to see what metrics cost.
    #[arg(long)]
    metrics: bool,
    /// Run the brokers as `broker dev --tls` does (mutual TLS between brokers, TLS to this
    /// client): compare with a run without to see what TLS costs.
    #[arg(long)]
    tls: bool,
}

/// New connections timed for the connection set-up figure.
const SETUP_SAMPLES: usize = 50;

/// What one partition's acknowledgements showed.
pub(super) struct Collected {
    pub(super) latency: Histogram<u64>,
    pub(super) acked: u64,
    pub(super) failed: u64,
    last_ack: Option<Instant>,
    pub(super) first_error: Option<String>,
}

/// Awaits one partition's deliveries in send order (a partition acknowledges in order, so
/// nothing is measured late) and records each send→ack latency in microseconds.
pub(super) async fn collect(mut deliveries: mpsc::UnboundedReceiver<(Instant, DeliveryFuture)>) -> Collected {
    let mut collected = Collected {
        latency: Histogram::new_with_bounds(1, 120_000_000, 3).expect("valid histogram bounds"),
        acked: 0,
        failed: 0,
        last_ack: None,
        first_error: None,
    };
    while let Some((sent, delivery)) = deliveries.recv().await {
        match delivery.await {
            Ok(_) => {
                let now = Instant::now();
                let micros = now.duration_since(sent).as_micros().max(1) as u64;
                collected.latency.saturating_record(micros);
                collected.acked += 1;
                collected.last_ack = Some(now);
            }
            Err(error) => {
                collected.failed += 1;
                collected.first_error.get_or_insert_with(|| error.to_string());
            }
        }
    }
    collected
}

/// Runs the benchmark and prints the figures.
pub async fn run(args: ProduceArgs) -> anyhow::Result<()> {
    let acks = match args.acks.as_str() {
        "all" | "-1" => Acks::All,
        "1" => Acks::Leader,
        other => bail!("--acks {other:?}: expected all or 1"),
    };
    let Some(compression) = Compression::from_name(&args.compression) else {
        bail!("--compression {:?}: expected none, lz4 or zstd", args.compression);
    };
    let local = LocalCluster::start(&args.dir, &[], args.metrics, args.tls).await?;
    // Connection set-up (with TLS: the handshake), each on a new client's first request.
    let mut setups = Vec::with_capacity(SETUP_SAMPLES);
    for _ in 0..SETUP_SAMPLES {
        let fresh = local.new_client()?;
        let started = Instant::now();
        fresh.metadata(Vec::new()).await?;
        setups.push(started.elapsed());
    }
    setups.sort();
    local
        .create_topic("perf", args.partitions, Duration::from_secs(120))
        .await?;
    let config = ProducerConfig {
        acks,
        enable_idempotence: acks == Acks::All,
        batch_size: args.batch_size,
        linger: Duration::from_millis(args.linger_ms),
        compression,
        ..ProducerConfig::default()
    };
    let producer = Producer::new(Arc::clone(&local.cluster), config)?;
    // Printable bytes in a pseudo-random order: not trivially compressible.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let payload: Bytes = (0..args.record_size)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            b'!' + (state % 90) as u8
        })
        .collect::<Vec<u8>>()
        .into();
    // Warm up: connections, leaders, producer id.
    let warming = Phase::open("warming up");
    warming.message(|| "connections, leaders, producer id".into());
    producer
        .send_and_wait(ProducerRecord::new("perf", payload.clone()).partition(0))
        .await?;
    warming.finish();

    let mut senders = Vec::new();
    let mut collectors = Vec::new();
    for _ in 0..args.partitions {
        let (sender, receiver) = mpsc::unbounded_channel();
        senders.push(sender);
        collectors.push(tokio::spawn(collect(receiver)));
    }
    let pids: Vec<u32> = local.brokers.iter().filter_map(tokio::process::Child::id).collect();
    let cpu_before: Vec<u64> = pids.iter().map(|p| cpu_ticks(*p)).collect::<Result<_, _>>()?;
    let own_before = cpu_ticks(std::process::id())?;
    // Records go to partitions a batch at a time, like the sticky partitioner, but chosen
    // here so each partition's acknowledgements can be awaited in order.
    let per_batch = (args.batch_size / (args.record_size + 16)).max(1) as u64;
    let started = Instant::now();
    let stop_at = started + Duration::from_secs(args.seconds);
    let mut sent = 0u64;
    let interval = (args.rate > 0).then(|| Duration::from_secs_f64(1.0 / args.rate as f64));
    let sending = Phase::timed("sending", Duration::from_secs(args.seconds));
    loop {
        // Every 8192 records: keeps even the phase's throttle (a clock read) off the per-record path.
        if sent.is_multiple_of(8192) {
            sending.message(|| {
                let rates = progress::throughput(sent, sent * args.record_size as u64, started.elapsed());
                format!("{sent} records sent, {rates}")
            });
        }
        // Latency counts from before `send`, so time blocked on a full buffer is included
        // (as in Kafka's producer-perf-test).
        let now = Instant::now();
        if now >= stop_at {
            break;
        }
        let mut sent_at = now;
        if let Some(interval) = interval {
            // Open loop at a fixed rate: a record is due every `interval` from the start, and its
            // latency counts from then — a sender that falls behind cannot hide the queueing.
            let due = started + interval.mul_f64(sent as f64);
            if due > now {
                tokio::time::sleep_until(due.into()).await;
            }
            sent_at = due;
        }
        let partition = ((sent / per_batch) % u64::from(args.partitions)) as u32;
        let record = ProducerRecord::new("perf", payload.clone()).partition(partition);
        let delivery = producer.send(record).await?;
        let _ = senders[partition as usize].send((sent_at, delivery));
        sent += 1;
    }
    drop(senders);
    sending.finish();
    let acknowledging = Phase::open("acknowledging");
    acknowledging.message(|| format!("{sent} records sent; waiting for the last acknowledgements"));
    let mut latency = Histogram::<u64>::new_with_bounds(1, 120_000_000, 3)?;
    let (mut acked, mut failed, mut last_ack, mut first_error) = (0u64, 0u64, started, None);
    for collector in collectors {
        let collected = collector.await?;
        latency.add(&collected.latency)?;
        acked += collected.acked;
        failed += collected.failed;
        if let Some(at) = collected.last_ack {
            last_ack = last_ack.max(at);
        }
        first_error = first_error.or(collected.first_error);
    }
    acknowledging.finish();
    let elapsed = last_ack.duration_since(started).as_secs_f64();
    let cpu_after: Vec<u64> = pids.iter().map(|p| cpu_ticks(*p)).collect::<Result<_, _>>()?;
    let own_after = cpu_ticks(std::process::id())?;
    let ticks = clock_ticks_per_second();
    let broker_cpu: f64 = cpu_before
        .iter()
        .zip(&cpu_after)
        .map(|(b, a)| 100.0 * (a - b) as f64 / ticks / elapsed)
        .sum();
    let client_cpu = 100.0 * (own_after - own_before) as f64 / ticks / elapsed;
    producer.close().await;
    local.stop().await?;

    let records_per_second = acked as f64 / elapsed;
    let megabytes_per_second = records_per_second * args.record_size as f64 / 1e6;
    let ms = |q: f64| latency.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "{} B records, acks={}, {} partitions RF=3, batch.size={} linger.ms={} compression={}, broker metrics {}, TLS {}",
        args.record_size,
        args.acks,
        args.partitions,
        args.batch_size,
        args.linger_ms,
        args.compression,
        if args.metrics { "on" } else { "off" },
        if args.tls { "on" } else { "off" }
    );
    println!(
        "sent {sent}, acknowledged {acked}, failed {failed} in {elapsed:.2} s: {records_per_second:.0} records/s, {megabytes_per_second:.1} MB/s"
    );
    println!(
        "latency send->ack: p50 {:.2} ms, p99 {:.2} ms, p999 {:.2} ms, max {:.2} ms",
        ms(0.5),
        ms(0.99),
        ms(0.999),
        latency.max() as f64 / 1000.0
    );
    println!("CPU: brokers {broker_cpu:.0} % of one core in total, this client {client_cpu:.0} %");
    println!(
        "connection set-up ({}): median {:.2} ms, max {:.2} ms over {SETUP_SAMPLES} new connections (each with its first metadata request)",
        if args.tls { "TLS" } else { "plaintext" },
        setups[SETUP_SAMPLES / 2].as_secs_f64() * 1000.0,
        setups[SETUP_SAMPLES - 1].as_secs_f64() * 1000.0
    );
    if let Some(error) = first_error {
        println!("first failure: {error}");
    }
    Ok(())
}
