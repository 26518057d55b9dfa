//! `broker perf idle`: CPU used by three idle brokers hosting many partitions (RF=3), each
//! broker its own process, measured from /proc over a quiet period.

use super::admin::connect;
use anyhow::{bail, Context};
use client::TopicSpec;
use std::collections::HashMap;
use std::net::TcpListener;
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
    /// Scratch directory for the brokers' data (emptied before and after).
    #[arg(long, default_value = "target/perf-idle")]
    dir: PathBuf,
}

/// CPU time (user + system) of a process, in clock ticks, from /proc/<pid>/stat.
fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
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

fn clock_ticks_per_second() -> f64 {
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
    let _ = std::fs::remove_dir_all(&args.dir);
    let ports: Vec<u16> = {
        let listeners: Vec<TcpListener> = (0..3)
            .map(|_| TcpListener::bind("127.0.0.1:0"))
            .collect::<Result<_, _>>()?;
        listeners
            .iter()
            .map(|l| l.local_addr().map(|a| a.port()))
            .collect::<Result<_, _>>()?
    };
    let addresses: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let mut brokers = super::dev::spawn_local_brokers(&addresses, &args.dir, Some("error"))?;
    let cluster = connect(&addresses.join(","));
    let started = Instant::now();
    while cluster.metadata(Vec::new()).await.map_or(0, |m| m.brokers.len()) < 3 {
        if started.elapsed() > Duration::from_secs(60) {
            bail!("brokers did not register within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let results = cluster
        .create_topics(vec![TopicSpec {
            name: "idle".into(),
            partitions: args.partitions,
            replication_factor: 3,
            configs: HashMap::new(),
        }])
        .await?;
    if results[0].error != 0 {
        bail!("creating the topic failed: {}", results[0].message);
    }
    let created = Instant::now();
    loop {
        let metadata = cluster.metadata(vec!["idle".into()]).await?;
        let led = metadata.topics[0]
            .partitions
            .iter()
            .filter(|p| p.leader.is_some())
            .count();
        if led == args.partitions as usize {
            break;
        }
        if created.elapsed() > Duration::from_secs(600) {
            bail!("only {led} of {} partitions elected a leader in 600 s", args.partitions);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    println!(
        "{} partitions x 3 replicas on 3 brokers: all led after {:.1} s; settling 5 s, measuring {} s",
        args.partitions,
        created.elapsed().as_secs_f64(),
        args.seconds
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    let pids: Vec<u32> = brokers.iter().filter_map(tokio::process::Child::id).collect();
    let before: Vec<u64> = pids.iter().map(|p| cpu_ticks(*p)).collect::<Result<_, _>>()?;
    let measured = Instant::now();
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    let after: Vec<u64> = pids.iter().map(|p| cpu_ticks(*p)).collect::<Result<_, _>>()?;
    let elapsed = measured.elapsed().as_secs_f64();
    let ticks = clock_ticks_per_second();
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
    for child in &mut brokers {
        drop(child.stdin.take());
    }
    for child in &mut brokers {
        child.wait().await?;
    }
    let _ = std::fs::remove_dir_all(&args.dir);
    Ok(())
}
