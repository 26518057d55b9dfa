//! `broker perf storage`: the segment store's write and read speed on this machine's disk.
//!
//! Everything is measured in one run against one directory, so the figures can be compared
//! as ratios on a noisy machine:
//! 1. raw sequential write bandwidth (1 MiB writes, one fdatasync per 8 MiB);
//! 2. append throughput with `fsync = always` for each partition count, every partition keeping
//!    up to `inflight_bytes` of appends waiting for durability, as replication would;
//! 3. append→durable latency at half the 8-partition throughput;
//! 4. read throughput by offset from a warm page cache.

use crate::storage::{
    EntryId, EntryKind, FlushWorker, FsyncPolicy, LogConfig, NewEntry, Offset, RaftIndex, SegmentLog,
};
use anyhow::Context;
use bytes::Bytes;
use hdrhistogram::Histogram;
use proto::record_batch::{encode_batch, ProducerStamp, Record};
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Settings of a storage benchmark run.
#[derive(Debug, Clone)]
pub struct StoragePerfOptions {
    /// Scratch directory (on the disk to measure); emptied before and after.
    pub dir: PathBuf,
    /// Seconds per measurement.
    pub seconds: f64,
    /// Partition counts to measure.
    pub partitions: Vec<usize>,
    /// Bytes per record.
    pub record_bytes: usize,
    /// Bytes per batch (records per batch = batch / record).
    pub batch_bytes: usize,
    /// Appended-but-not-durable bytes allowed per partition.
    pub inflight_bytes: usize,
}

/// One append-throughput measurement.
#[derive(Debug, Clone)]
pub struct AppendResult {
    /// Partitions written concurrently.
    pub partitions: usize,
    /// Payload bytes per second made durable.
    pub bytes_per_sec: f64,
    /// Appends (batches) per second made durable.
    pub appends_per_sec: f64,
    /// fdatasync calls per second.
    pub fsyncs_per_sec: f64,
    /// Median append→durable latency (µs).
    pub p50_us: u64,
    /// 99th percentile append→durable latency (µs).
    pub p99_us: u64,
}

/// Where a run reports what it is measuring while it measures, so a caller can show it live
/// (the `broker` binary draws a progress line on a terminal). Every call comes from the thread
/// that called [`run`], and a measurement is finished before its line of the report is printed.
pub trait Progress {
    /// A measurement starts; `length` is how long it lasts, when that is known in advance.
    fn start(&mut self, measurement: &str, length: Option<Duration>);
    /// `bytes` were written (or read) in the first `elapsed` of the current measurement.
    fn update(&mut self, elapsed: Duration, bytes: u64);
    /// The current measurement is over.
    fn finish(&mut self);
}

/// Runs the whole benchmark and prints a report.
pub fn run(options: &StoragePerfOptions, progress: &mut dyn Progress) -> anyhow::Result<()> {
    let _ = std::fs::remove_dir_all(&options.dir);
    std::fs::create_dir_all(&options.dir).with_context(|| format!("creating {}", options.dir.display()))?;
    let records_per_batch = (options.batch_bytes / options.record_bytes).max(1);
    println!(
        "storage benchmark in {} — {} s per measurement, {} B records, {} per batch, {} KiB in flight per partition",
        options.dir.display(),
        options.seconds,
        options.record_bytes,
        records_per_batch,
        options.inflight_bytes / 1024
    );

    let raw = raw_write_bandwidth(&options.dir.join("raw"), options.seconds, progress)?;
    println!(
        "raw sequential write (1 MiB writes, fdatasync per 8 MiB): {:.0} MB/s",
        raw / 1e6
    );

    let mut results = Vec::new();
    for &partitions in &options.partitions {
        let result = append_run(options, partitions, None, progress)?;
        println!(
            "append fsync=always {:>3} partitions: {:>7.0} MB/s ({:>5.1} % of raw), {:>7.0} appends/s, {:>6.0} fsyncs/s, durable p50 {:>6} µs p99 {:>6} µs",
            partitions,
            result.bytes_per_sec / 1e6,
            100.0 * result.bytes_per_sec / raw,
            result.appends_per_sec,
            result.fsyncs_per_sec,
            result.p50_us,
            result.p99_us
        );
        results.push(result);
    }

    let eight = results
        .iter()
        .find(|r| r.partitions == 8)
        .cloned()
        .map_or_else(|| append_run(options, 8, None, progress), Ok)?;
    let half_rate = eight.appends_per_sec / 2.0;
    let paced = append_run(options, 8, Some(half_rate), progress)?;
    println!(
        "latency at half load (8 partitions, {:.0} appends/s = {:.0} MB/s): append→durable p50 {} µs, p99 {} µs",
        half_rate,
        paced.bytes_per_sec / 1e6,
        paced.p50_us,
        paced.p99_us
    );

    let read = read_throughput(options, progress)?;
    println!(
        "read by offset, warm page cache (1 MiB fetches): {:.2} GB/s",
        read / 1e9
    );
    let _ = std::fs::remove_dir_all(&options.dir);
    Ok(())
}

/// Sequential writes of 1 MiB with one fdatasync per 8 MiB, for `seconds`.
fn raw_write_bandwidth(path: &Path, seconds: f64, progress: &mut dyn Progress) -> anyhow::Result<f64> {
    let mut file = OpenOptions::new().create(true).write(true).truncate(true).open(path)?;
    let chunk = vec![0x5au8; 1024 * 1024];
    progress.start("raw sequential write", Some(Duration::from_secs_f64(seconds)));
    let start = Instant::now();
    let mut written = 0u64;
    while start.elapsed().as_secs_f64() < seconds {
        for _ in 0..8 {
            file.write_all(&chunk)?;
        }
        file.sync_data()?;
        written += 8 * chunk.len() as u64;
        progress.update(start.elapsed(), written);
    }
    let rate = written as f64 / start.elapsed().as_secs_f64();
    progress.finish();
    drop(file);
    std::fs::remove_file(path)?;
    Ok(rate)
}

fn sample_batch(options: &StoragePerfOptions) -> Bytes {
    let records: Vec<Record> = (0..(options.batch_bytes / options.record_bytes).max(1))
        .map(|i| Record {
            timestamp: 1_700_000_000_000 + i as i64,
            value: Some(Bytes::from(vec![(i % 251) as u8; options.record_bytes])),
            ..Record::default()
        })
        .collect();
    encode_batch(&records, ProducerStamp::NONE)
}

struct Partition {
    log: Mutex<SegmentLog>,
    next_index: AtomicU64,
    inflight: AtomicUsize,
}

/// Appends to `partitions` logs for the configured time; with `rate`, paces appends to that
/// many per second in total (for latency at a given load).
fn append_run(
    options: &StoragePerfOptions,
    partitions: usize,
    rate: Option<f64>,
    progress: &mut dyn Progress,
) -> anyhow::Result<AppendResult> {
    let run_dir = options.dir.join(format!("append-{partitions}-{}", rate.is_some()));
    let worker = FlushWorker::start("perf")?;
    let config = LogConfig {
        fsync: FsyncPolicy::Always,
        retention_ms: None,
        ..LogConfig::default()
    };
    let mut logs = Vec::with_capacity(partitions);
    for p in 0..partitions {
        let (log, _) = SegmentLog::open(&run_dir.join(format!("p{p}")), config.clone(), worker.handle(), 0)?;
        logs.push(Arc::new(Partition {
            log: Mutex::new(log),
            next_index: AtomicU64::new(0),
            inflight: AtomicUsize::new(0),
        }));
    }
    let batch = sample_batch(options);
    let max_inflight = (options.inflight_bytes / batch.len()).max(1);
    let wake = Arc::new((Mutex::new(()), Condvar::new()));
    let latencies = Arc::new(Mutex::new(Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?));
    let durable_bytes = Arc::new(AtomicU64::new(0));
    let durable_appends = Arc::new(AtomicU64::new(0));
    let fsyncs_before = worker.handle().stats().fsyncs.load(Ordering::Relaxed);
    let drivers = partitions.min(2);
    let measurement = match rate {
        Some(_) => format!("paced append, {partitions} partitions"),
        None => format!("append fsync=always {partitions} partitions"),
    };
    progress.start(&measurement, Some(Duration::from_secs_f64(options.seconds)));
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(options.seconds);
    std::thread::scope(|scope| -> anyhow::Result<()> {
        let mut handles = Vec::new();
        for driver in 0..drivers {
            let owned: Vec<Arc<Partition>> = logs.iter().skip(driver).step_by(drivers).cloned().collect();
            let (batch, wake, latencies) = (batch.clone(), Arc::clone(&wake), Arc::clone(&latencies));
            let (durable_bytes, durable_appends) = (Arc::clone(&durable_bytes), Arc::clone(&durable_appends));
            let driver_rate = rate.map(|r| r / drivers as f64);
            handles.push(scope.spawn(move || -> anyhow::Result<()> {
                let mut sent = 0u64;
                while Instant::now() < deadline {
                    let mut appended = false;
                    for partition in &owned {
                        if partition.inflight.load(Ordering::Acquire) >= max_inflight {
                            continue;
                        }
                        if let Some(rate) = driver_rate {
                            let due = start + Duration::from_secs_f64(sent as f64 / rate);
                            if Instant::now() < due {
                                continue;
                            }
                        }
                        let index = partition.next_index.fetch_add(1, Ordering::Relaxed);
                        let entry = NewEntry {
                            id: EntryId {
                                term: 1,
                                leader_node: 1,
                                index: RaftIndex(index),
                            },
                            kind: EntryKind::Data,
                            body: batch.clone(),
                        };
                        partition.inflight.fetch_add(1, Ordering::AcqRel);
                        let submitted = Instant::now();
                        let (done_partition, wake, latencies) =
                            (Arc::clone(partition), Arc::clone(&wake), Arc::clone(&latencies));
                        let (durable_bytes, durable_appends) =
                            (Arc::clone(&durable_bytes), Arc::clone(&durable_appends));
                        let len = batch.len() as u64;
                        let callback = Box::new(move |result: std::io::Result<()>| {
                            if result.is_ok() && Instant::now() <= deadline {
                                durable_bytes.fetch_add(len, Ordering::Relaxed);
                                durable_appends.fetch_add(1, Ordering::Relaxed);
                                let micros = submitted.elapsed().as_micros() as u64;
                                latencies.lock().expect("histogram").saturating_record(micros.max(1));
                            }
                            done_partition.inflight.fetch_sub(1, Ordering::AcqRel);
                            wake.1.notify_all();
                        });
                        partition.log.lock().expect("log").append(vec![entry], 0, callback)?;
                        appended = true;
                        sent += 1;
                    }
                    if !appended {
                        // Everything is in flight (or paced): wait for a completion.
                        let guard = wake.0.lock().expect("wake");
                        let _ = wake.1.wait_timeout(guard, Duration::from_millis(1));
                    }
                }
                Ok(())
            }));
        }
        // This thread only reports, until every driver has stopped.
        while !handles.iter().all(std::thread::ScopedJoinHandle::is_finished) {
            progress.update(start.elapsed(), durable_bytes.load(Ordering::Relaxed));
            let left = deadline.saturating_duration_since(Instant::now());
            std::thread::sleep(left.clamp(Duration::from_millis(1), Duration::from_millis(100)));
        }
        for handle in handles {
            handle.join().expect("driver thread")?;
        }
        Ok(())
    })?;
    let elapsed = options.seconds;
    // Let outstanding appends finish before closing the logs.
    while logs.iter().any(|p| p.inflight.load(Ordering::Acquire) > 0) {
        let guard = wake.0.lock().expect("wake");
        let _ = wake.1.wait_timeout(guard, Duration::from_millis(10));
    }
    progress.finish();
    let fsyncs = worker.handle().stats().fsyncs.load(Ordering::Relaxed) - fsyncs_before;
    let histogram = latencies.lock().expect("histogram");
    let result = AppendResult {
        partitions,
        bytes_per_sec: durable_bytes.load(Ordering::Relaxed) as f64 / elapsed,
        appends_per_sec: durable_appends.load(Ordering::Relaxed) as f64 / elapsed,
        fsyncs_per_sec: fsyncs as f64 / elapsed,
        p50_us: histogram.value_at_quantile(0.50),
        p99_us: histogram.value_at_quantile(0.99),
    };
    drop(histogram);
    drop(logs);
    drop(worker);
    if rate.is_some() || partitions != 8 {
        std::fs::remove_dir_all(&run_dir)?;
    }
    Ok(result)
}

/// Reads back the 8-partition run's data by offset, once to warm the cache and once timed.
fn read_throughput(options: &StoragePerfOptions, progress: &mut dyn Progress) -> anyhow::Result<f64> {
    let run_dir = options.dir.join("append-8-false");
    if !run_dir.exists() {
        append_run(options, 8, None, progress)?;
    }
    let worker = FlushWorker::start("perf-read")?;
    let mut logs = Vec::new();
    for p in 0..8 {
        let (log, _) = SegmentLog::open(&run_dir.join(format!("p{p}")), LogConfig::default(), worker.handle(), 0)?;
        logs.push(log);
    }
    let read_all = |logs: &[SegmentLog]| -> anyhow::Result<u64> {
        let mut bytes = 0u64;
        for log in logs {
            let end = log.log_end_offset();
            let mut offset = log.log_start_offset();
            while offset < end {
                let batches = log.read_batches(offset, 1024 * 1024, end)?;
                let last = batches.last().context("a batch below the end")?;
                offset = Offset(last.base_offset.0 + u64::from(last.record_count));
                bytes += batches.iter().map(|b| b.body.len() as u64).sum::<u64>();
            }
        }
        Ok(bytes)
    };
    progress.start("read: warming the page cache", None);
    read_all(&logs)?;
    progress.finish();
    let seconds = options.seconds.min(3.0);
    progress.start("read by offset", Some(Duration::from_secs_f64(seconds)));
    let start = Instant::now();
    let mut bytes = 0;
    while start.elapsed().as_secs_f64() < seconds {
        bytes += read_all(&logs)?;
        progress.update(start.elapsed(), bytes);
    }
    let rate = bytes as f64 / start.elapsed().as_secs_f64();
    progress.finish();
    Ok(rate)
}
