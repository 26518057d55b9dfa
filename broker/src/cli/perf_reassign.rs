//! `broker perf reassign`: what moving a large partition costs. Three local brokers hold a
//! filled topic; a fourth joins; one partition moves onto it unthrottled, another with the
//! catch-up throttle, while a producer writes to another topic at a fixed rate. Reports each
//! move's time and rate, and the producer's throughput and latency before and during each.

use super::local_cluster::LocalCluster;
use super::perf_produce::{collect, Collected};
use super::progress::Phase;
use anyhow::{bail, Context};
use bytes::Bytes;
use client::{Admin, PartitionReplicas, Producer, ProducerConfig, ProducerRecord};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// `broker perf reassign` options.
#[derive(clap::Args, Debug)]
pub struct ReassignArgs {
    /// MiB written into each of the two partitions that move.
    #[arg(long, default_value_t = 1024)]
    fill_mib: u64,
    /// The throttle of the second move, MiB/s.
    #[arg(long, default_value_t = 50)]
    throttle_mib: u64,
    /// Records per second the live producer writes meanwhile (open loop).
    #[arg(long, default_value_t = 2000)]
    rate: u64,
    /// Bytes per live record.
    #[arg(long, default_value_t = 1024)]
    record_size: usize,
    /// Seconds the live producer is measured with no move.
    #[arg(long, default_value_t = 5)]
    baseline_seconds: u64,
    /// Scratch directory for the brokers' data (emptied before and after).
    #[arg(long, default_value = "target/perf-reassign")]
    dir: PathBuf,
}

/// The live producer's figures over one stretch.
struct Live {
    seconds: f64,
    collected: Collected,
}

impl Live {
    fn row(&self, label: &str) -> String {
        let p = |q: f64| self.collected.latency.value_at_quantile(q) as f64 / 1000.0;
        format!(
            "{label:<28} {:>8.1} s {:>10.0} rec/s  p50 {:>7.1} ms  p99 {:>7.1} ms  max {:>8.1} ms  failed {}",
            self.seconds,
            self.collected.acked as f64 / self.seconds,
            p(0.5),
            p(0.99),
            self.collected.latency.max() as f64 / 1000.0,
            self.collected.failed
        )
    }
}

/// Runs the benchmark and prints the figures.
pub async fn run(args: ReassignArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.fill_mib > 0 && args.throttle_mib > 0 && args.rate > 0,
        "sizes and rates must be positive"
    );
    let mut local = LocalCluster::start(&args.dir, &[], false, false).await?;
    local.create_topic("bulk", 2, Duration::from_secs(60)).await?;
    local.create_topic("live", 3, Duration::from_secs(60)).await?;
    fill(&local, args.fill_mib).await?;
    local.wait_replicas_caught_up("bulk", Duration::from_secs(600)).await?;
    let new_broker = local.add_broker().await?;
    let admin = Admin::new(Arc::clone(&local.cluster));
    let producer = Producer::new(Arc::clone(&local.cluster), ProducerConfig::default())?;
    let payload = Bytes::from(vec![b'x'; args.record_size]);
    producer
        .send_and_wait(ProducerRecord::new("live", payload.clone()).partition(0))
        .await?;

    let baseline = measure_live(&producer, &payload, args.rate, async {
        tokio::time::sleep(Duration::from_secs(args.baseline_seconds)).await;
        Ok(())
    })
    .await?;
    let mut rows = vec![baseline.row("no move")];
    let mib = args.fill_mib as f64;
    for (partition, throttle) in [(0u32, None), (1u32, Some(args.throttle_mib))] {
        admin
            .set_reassignment_throttle(throttle.map(|t| t << 20))
            .await
            .context("setting the throttle")?;
        let metadata = local.cluster.metadata(vec!["bulk".into()]).await?;
        let replicas = metadata.topics[0].partitions[partition as usize].replicas.clone();
        // The last replica gives its place to the new broker (the leader stays).
        let target: Vec<u64> = replicas[..replicas.len() - 1]
            .iter()
            .copied()
            .chain(std::iter::once(new_broker))
            .collect();
        let phase = Phase::open("moving");
        let label = match throttle {
            None => format!("bulk/{partition}: {mib} MiB, unthrottled"),
            Some(t) => format!("bulk/{partition}: {mib} MiB at {t} MiB/s"),
        };
        phase.message(|| label.clone());
        let started = Instant::now();
        let live = measure_live(&producer, &payload, args.rate, async {
            admin
                .reassign_partitions(vec![PartitionReplicas {
                    topic: "bulk".into(),
                    partition,
                    replicas: target.clone(),
                }])
                .await?;
            while !admin.list_reassignments().await?.is_empty() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Ok(())
        })
        .await?;
        let moved = started.elapsed().as_secs_f64();
        phase.finish();
        rows.push(format!("{label}: moved in {moved:.1} s ({:.1} MiB/s)", mib / moved));
        rows.push(live.row("  producer during the move"));
    }
    admin.set_reassignment_throttle(None).await?;
    producer.close().await;
    println!(
        "live producer: {} records/s of {} B, acks=all",
        args.rate, args.record_size
    );
    for row in rows {
        println!("{row}");
    }
    local.stop().await
}

/// Writes `mib` MiB into each partition of `bulk`, in 64 KiB records.
async fn fill(local: &LocalCluster, mib: u64) -> anyhow::Result<()> {
    const RECORD: usize = 64 * 1024;
    let config = ProducerConfig {
        batch_size: 1 << 20,
        ..ProducerConfig::default()
    };
    let producer = Producer::new(Arc::clone(&local.cluster), config)?;
    let records = mib * 16;
    let phase = Phase::counted("filling", 2 * records);
    phase.message(|| format!("{mib} MiB into each of bulk/0 and bulk/1"));
    let payload = Bytes::from(vec![b'b'; RECORD]);
    let mut pending = std::collections::VecDeque::new();
    for n in 0..2 * records {
        let record = ProducerRecord::new("bulk", payload.clone()).partition((n % 2) as u32);
        pending.push_back(producer.send(record).await?);
        if pending.len() > 256 {
            pending.pop_front().expect("not empty").await?;
        }
        phase.set_position(n);
    }
    for delivery in pending {
        delivery.await?;
    }
    producer.close().await;
    phase.finish();
    Ok(())
}

/// Runs the live producer at `rate` records/s until `during` ends; its figures meanwhile.
async fn measure_live(
    producer: &Producer,
    payload: &Bytes,
    rate: u64,
    during: impl std::future::Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<Live> {
    let (sender, receiver) = mpsc::unbounded_channel();
    let collector = tokio::spawn(collect(receiver));
    let done = Arc::new(AtomicBool::new(false));
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let started = Instant::now();
    let sending = {
        let (producer, payload, done) = (producer.clone(), payload.clone(), Arc::clone(&done));
        tokio::spawn(async move {
            let mut sent = 0u64;
            while !done.load(Ordering::Relaxed) {
                // Open loop: a record is due every interval from the start, and its latency
                // counts from then.
                let due = started + interval.mul_f64(sent as f64);
                tokio::time::sleep_until(due.into()).await;
                let record = ProducerRecord::new("live", payload.clone()).partition((sent % 3) as u32);
                match producer.send(record).await {
                    Ok(delivery) => {
                        let _ = sender.send((due, delivery));
                    }
                    Err(error) => return Err(anyhow::anyhow!(error)),
                }
                sent += 1;
            }
            Ok(())
        })
    };
    let outcome = during.await;
    done.store(true, Ordering::Relaxed);
    let seconds = started.elapsed().as_secs_f64();
    sending.await.context("live producer")??;
    outcome?;
    let collected = collector.await?;
    if let Some(error) = &collected.first_error {
        bail!("live producer: {error}");
    }
    Ok(Live { seconds, collected })
}
