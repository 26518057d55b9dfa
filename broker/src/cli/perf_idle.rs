//! `broker perf idle`: CPU used by three idle brokers hosting many partitions (RF=3), each
//! broker its own process, measured from /proc over a quiet period.

use super::local_cluster::LocalCluster;
use super::progress::Phase;
use anyhow::Context;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

/// Flags of `broker perf idle`.
#[derive(clap::Args, Debug)]
pub struct IdleArgs {
    /// Partitions of the (idle) topic, replication factor 3.
    #[arg(long, default_value_t = 1000)]
    partitions: u32,
    /// Seconds of measurement once every partition has a leader.
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    /// Idle time before a partition's Raft timers stop (ms; 0 = never quiesce). Default: the
    /// broker's own default.
    #[arg(long)]
    quiesce_after_ms: Option<u64>,
    /// Scratch directory for the brokers' data (emptied before and after).
    #[arg(long, default_value = "target/perf-idle")]
    dir: PathBuf,
}

/// CPU time (user + system) of a process, in clock ticks, from /proc/<pid>/stat.
pub(crate) fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let after_name = stat.rsplit_once(')').context("malformed stat")?.1;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    Ok(fields[11].parse::<u64>()? + fields[12].parse::<u64>()?)
}

fn resident_mib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|kb| kb.parse::<u64>().ok()))
        })
        .map_or(0, |kb| kb / 1024)
}

pub(crate) fn clock_ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// Runs the benchmark and prints the figures.
pub async fn run(args: IdleArgs) -> anyhow::Result<()> {
    let env: Vec<(String, String)> = args
        .quiesce_after_ms
        .map(|ms| ("BROKER_QUIESCE_AFTER_MS".to_string(), ms.to_string()))
        .into_iter()
        .collect();
    let local = LocalCluster::start(&args.dir, &env, false).await?;
    let led_after = local
        .create_topic("idle", args.partitions, Duration::from_secs(600))
        .await?;
    println!(
        "{} partitions x 3 replicas on 3 brokers: all led after {:.1} s; settling 5 s, measuring {} s",
        args.partitions,
        led_after.as_secs_f64(),
        args.seconds
    );
    let settling = Phase::timed("settling", Duration::from_secs(5));
    settling.message(|| "before measuring".into());
    tokio::time::sleep(Duration::from_secs(5)).await;
    settling.finish();
    let pids: Vec<u32> = local.brokers.iter().filter_map(tokio::process::Child::id).collect();
    let ticks = clock_ticks_per_second();
    let measuring = Phase::timed("measuring", Duration::from_secs(args.seconds));
    let before: Vec<u64> = pids.iter().map(|p| cpu_ticks(*p)).collect::<Result<_, _>>()?;
    let measured = Instant::now();
    let end = measured + Duration::from_secs(args.seconds);
    // Woken once a second for the live figure (read from /proc only when it is shown).
    while Instant::now() < end {
        tokio::time::sleep_until(end.min(Instant::now() + Duration::from_secs(1)).into()).await;
        measuring.message(|| {
            let now: u64 = pids.iter().map(|p| cpu_ticks(*p).unwrap_or(0)).sum();
            let used = now.saturating_sub(before.iter().sum()) as f64;
            format!(
                "3 brokers at {:.1} % of one core so far",
                100.0 * used / ticks / measured.elapsed().as_secs_f64()
            )
        });
    }
    let after: Vec<u64> = pids.iter().map(|p| cpu_ticks(*p)).collect::<Result<_, _>>()?;
    let elapsed = measured.elapsed().as_secs_f64();
    measuring.finish();
    let mut total = 0.0;
    for (i, pid) in pids.iter().enumerate() {
        let percent = 100.0 * (after[i] - before[i]) as f64 / ticks / elapsed;
        total += percent;
        println!(
            "broker {}: {percent:.1} % of one core, RSS {} MiB",
            i + 1,
            resident_mib(*pid)
        );
    }
    println!("idle CPU, all 3 brokers: {total:.1} % of one core");
    local.stop().await
}
