//! `broker perf idle`: what three idle brokers hosting many partitions (RF=3) cost — CPU over
//! a quiet period, resident memory and open descriptors, each broker its own process, measured
//! from /proc — and, with `--restart`, how long one of them takes to stop and come back; with
//! `--crash`, how long the others take to fail over its leaderships after a SIGKILL, and it to
//! come back; with `--crash-all`, how long a cold start of all three takes after a SIGKILL of
//! each.

use super::local_cluster::LocalCluster;
use super::progress::Phase;
use anyhow::Context;
use broker::controller::metadata::MAX_PARTITIONS;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

/// Flags of `broker perf idle`.
#[derive(clap::Args, Debug)]
pub struct IdleArgs {
    /// Partitions in all, replication factor 3 (in topics of at most 10,000: `idle`, `idle-2`, …).
    #[arg(long, default_value_t = 1000)]
    partitions: u32,
    /// Seconds of measurement once every partition has a leader.
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    /// Idle time before a partition's Raft timers stop (ms; 0 = never quiesce). Default: the
    /// broker's own default.
    #[arg(long)]
    quiesce_after_ms: Option<u64>,
    /// Afterwards, stop broker 3 cleanly and start it again: time the stop, and the start until
    /// it hosts every replica again with a leader known for each.
    #[arg(long)]
    restart: bool,
    /// Afterwards, kill broker 3 with SIGKILL: time until brokers 1 and 2 have a leader for
    /// every partition, then start it again and time until it hosts every replica again.
    #[arg(long)]
    crash: bool,
    /// Afterwards, kill all three brokers with SIGKILL (a power loss), start them again
    /// together and time until every partition has a leader known on every broker, and until
    /// every replica is quiet as well: a cold start, in which the replicas that led campaign.
    #[arg(long)]
    crash_all: bool,
    /// Each broker serves its admin endpoint (`/metrics`; addresses printed at the start), so
    /// the run can be watched — and its metrics recorder costs what it costs in production.
    #[arg(long)]
    admin: bool,
    /// Scratch directory for the brokers' data (emptied before and after).
    #[arg(long, default_value = "target/perf-idle")]
    dir: PathBuf,
    /// The brokers' log filter (`RUST_LOG` syntax; their standard error is this command's), e.g.
    /// `error,broker::node=info` to see the controlled shutdown's summary. Default: errors only.
    #[arg(long)]
    broker_log: Option<String>,
}

/// CPU time (user + system) of a process, in clock ticks, from /proc/<pid>/stat.
pub(crate) fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let after_name = stat.rsplit_once(')').context("malformed stat")?.1;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    Ok(fields[11].parse::<u64>()? + fields[12].parse::<u64>()?)
}

/// Open descriptors of a process (entries of /proc/<pid>/fd).
fn open_descriptors(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count)
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
        .chain(args.broker_log.map(|filter| ("RUST_LOG".to_string(), filter)))
        .collect();
    let mut local = LocalCluster::start(&args.dir, &env, args.admin, false).await?;
    if let Some(admins) = local.admin_addresses() {
        println!("admin endpoints (metrics): {}", admins.join(", "));
    }
    let topics = idle_topics(args.partitions);
    let mut led_after = Duration::ZERO;
    for (name, partitions) in &topics {
        led_after += local.create_topic(name, *partitions, Duration::from_secs(600)).await?;
    }
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
        let resident = resident_mib(*pid);
        // RF=3 on three brokers: each hosts one replica of every partition.
        println!(
            "broker {}: {percent:.1} % of one core, RSS {resident} MiB ({:.0} KiB per replica), {} open descriptors",
            i + 1,
            (resident * 1024) as f64 / f64::from(args.partitions.max(1)),
            open_descriptors(*pid)
        );
    }
    println!("idle CPU, all 3 brokers: {total:.1} % of one core");
    print_wakes(&local, "idle").await;
    if args.restart {
        restart_one(&mut local, &topics, args.partitions).await?;
    }
    if args.crash {
        crash_one(&mut local, &topics, args.partitions).await?;
    }
    if args.crash_all {
        crash_all(&mut local, &topics, args.partitions).await?;
    }
    local.stop().await
}

/// The idle topics for `partitions` partitions: `idle`, then `idle-2`, `idle-3`, … as a topic
/// holds at most [`MAX_PARTITIONS`] (created one after another; "all led" is the sum).
fn idle_topics(partitions: u32) -> Vec<(String, u32)> {
    (0..partitions.div_ceil(MAX_PARTITIONS))
        .map(|i| {
            let name = if i == 0 {
                "idle".to_string()
            } else {
                format!("idle-{}", i + 1)
            };
            (name, (partitions - i * MAX_PARTITIONS).min(MAX_PARTITIONS))
        })
        .collect()
}

/// Stops broker 3 cleanly, starts it again and waits until it hosts every replica of the
/// topics with a leader known for each; prints both times.
async fn restart_one(local: &mut LocalCluster, topics: &[(String, u32)], partitions: u32) -> anyhow::Result<()> {
    const INDEX: usize = 2;
    let stopping = Phase::open("stopping broker 3");
    let stopped_in = local.stop_broker(INDEX).await?;
    stopping.finish();
    let back_in = start_and_await(local, topics, partitions).await?;
    println!(
        "broker 3 restart: stopped in {:.1} s; back with all {partitions} replicas {:.1} s after its start",
        stopped_in.as_secs_f64(),
        back_in.as_secs_f64()
    );
    Ok(())
}

/// Kills broker 3 with SIGKILL, waits until brokers 1 and 2 both know a leader other than it
/// for every partition, then starts it again and waits until it is back, and until every
/// broker knows a leader of every partition and every replica is quiet; prints the times.
async fn crash_one(local: &mut LocalCluster, topics: &[(String, u32)], partitions: u32) -> anyhow::Result<()> {
    const INDEX: usize = 2;
    local.kill_broker(INDEX).await?;
    let killed = Instant::now();
    let survivors = local.addresses[..INDEX].to_vec();
    let failed_over_in = await_partitions(
        "failing over broker 3's leaderships",
        &survivors,
        topics,
        partitions,
        killed,
        |p| p.leader.is_some_and(|leader| leader != 3),
    )
    .await?;
    print_wakes(local, "after the failover").await;
    let back_in = start_and_await(local, topics, partitions).await?;
    let started = Instant::now() - back_in;
    // Back on broker 3 is not settled everywhere: its restarted replicas may still campaign,
    // or wake the others' groups.
    let settled_in = await_partitions(
        "settling after the restart",
        &local.addresses[..=INDEX],
        topics,
        partitions,
        started,
        |p| p.leader.is_some() && p.quiescent,
    )
    .await?;
    println!(
        "broker 3 killed (SIGKILL): its leaderships failed over in {:.1} s; back with all {partitions} replicas {:.1} s after its start, all quiet with a leader on every broker after {:.1} s",
        failed_over_in.as_secs_f64(),
        back_in.as_secs_f64(),
        settled_in.as_secs_f64()
    );
    print_wakes(local, "after the return").await;
    Ok(())
}

/// Why groups woke so far, per broker, with `--admin` (counted since each broker's start): the
/// run's cost in elections and heartbeats, beyond its times.
async fn print_wakes(local: &LocalCluster, when: &str) {
    for (i, admin) in local.admin_addresses().unwrap_or_default().iter().enumerate() {
        match quiet_group_wakes(admin).await {
            Ok(wakes) => println!("{when}, broker {}: quiet-group wakes {wakes}", i + 1),
            Err(error) => println!("{when}, broker {}: no wake counts ({error:#})", i + 1),
        }
    }
}

/// `broker_quiet_group_wakes_total` of the broker whose admin endpoint is `admin`, by reason
/// (`reason=count`, the non-zero ones).
async fn quiet_group_wakes(admin: &str) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(admin).await?;
    stream
        .write_all(format!("GET /metrics HTTP/1.0\r\nHost: {admin}\r\n\r\n").as_bytes())
        .await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let gauge = |name: &str| {
        response
            .lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ').map(str::trim))
            .unwrap_or("?")
            .to_string()
    };
    let asleep = format!(
        "; Raft nodes asleep {} (built again {})",
        gauge("broker_dormant_groups"),
        gauge("broker_dormant_group_wakes_total")
    );
    let wakes: Vec<String> = response
        .lines()
        .filter_map(|line| line.strip_prefix("broker_quiet_group_wakes_total{reason=\""))
        .filter_map(|rest| {
            let (reason, count) = rest.split_once("\"} ")?;
            (count.trim() != "0").then(|| format!("{reason}={}", count.trim()))
        })
        .collect();
    Ok(if wakes.is_empty() {
        format!("none{asleep}")
    } else {
        format!("{}{asleep}", wakes.join(" "))
    })
}

/// Kills all three brokers with SIGKILL, starts them again together, and waits until every
/// broker knows a leader of every partition, then until every replica is quiet as well;
/// prints both times and the wakes.
async fn crash_all(local: &mut LocalCluster, topics: &[(String, u32)], partitions: u32) -> anyhow::Result<()> {
    for index in 0..3 {
        local.kill_broker(index).await?;
    }
    for index in 0..3 {
        local.start_broker(index)?;
    }
    let started = Instant::now();
    let all = local.addresses.clone();
    let led_in = await_partitions("electing after a cold start", &all, topics, partitions, started, |p| {
        p.leader.is_some()
    })
    .await?;
    let settled_in = await_partitions("settling after a cold start", &all, topics, partitions, started, |p| {
        p.leader.is_some() && p.quiescent
    })
    .await?;
    println!(
        "all 3 brokers killed (SIGKILL) and started together: a leader of every partition known on every broker {:.1} s after the start, all quiet after {:.1} s",
        led_in.as_secs_f64(),
        settled_in.as_secs_f64()
    );
    print_wakes(local, "after the cold start").await;
    Ok(())
}

/// Starts broker 3 again and waits until it hosts every replica of the topics with a leader
/// known for each; returns how long that took.
async fn start_and_await(
    local: &mut LocalCluster,
    topics: &[(String, u32)],
    partitions: u32,
) -> anyhow::Result<Duration> {
    const INDEX: usize = 2;
    local.start_broker(INDEX)?;
    await_partitions(
        "restarting broker 3",
        &local.addresses[INDEX..=INDEX],
        topics,
        partitions,
        Instant::now(),
        |p| p.high_watermark.is_some() && p.leader.is_some(),
    )
    .await
}

/// Waits until every one of `brokers` describes all `partitions` of the topics as passing
/// `test` (each its own replicas' view), at most 600 s from `since`; returns the time since
/// `since`. Two minutes in, with at most ten partitions left, prints them as each broker sees
/// them.
async fn await_partitions(
    what: &'static str,
    brokers: &[String],
    topics: &[(String, u32)],
    partitions: u32,
    since: Instant,
    test: impl Fn(&proto::v1::PartitionDescription) -> bool + Copy,
) -> anyhow::Result<Duration> {
    let phase = Phase::counted(what, u64::from(partitions));
    phase.message(|| "partitions ready on every broker asked".into());
    let mut reported = false;
    loop {
        let mut ready = usize::MAX;
        for address in brokers {
            ready = ready.min(described(address, topics, test).await);
        }
        phase.set_position(ready as u64);
        if ready == partitions as usize {
            phase.finish();
            return Ok(since.elapsed());
        }
        if !reported && since.elapsed() > Duration::from_secs(120) && partitions as usize - ready <= 10 {
            reported = true;
            for address in brokers {
                for (topic, partition) in described_by(address, topics).await {
                    if !test(&partition) {
                        println!(
                            "{what}: still waiting for {topic}/{} on {address}: {partition:?}",
                            partition.partition
                        );
                    }
                }
            }
        }
        anyhow::ensure!(
            since.elapsed() < Duration::from_secs(600),
            "{what}: only {ready} of {partitions} partitions ready after 600 s"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// How many partitions of the topics, as the broker at `address` describes them, pass `test`
/// (0 while it does not answer).
async fn described(
    address: &str,
    topics: &[(String, u32)],
    test: impl Fn(&proto::v1::PartitionDescription) -> bool,
) -> usize {
    described_by(address, topics)
        .await
        .iter()
        .filter(|(_, p)| test(p))
        .count()
}

/// The partitions of the topics as the broker at `address` itself sees them (its own replicas'
/// view, not the cluster's), with their topics; none while it does not answer.
async fn described_by(address: &str, topics: &[(String, u32)]) -> Vec<(String, proto::v1::PartitionDescription)> {
    let Ok(mut client) = proto::v1::broker_client::BrokerClient::connect(format!("http://{address}")).await else {
        return Vec::new();
    };
    let Ok(answer) = client
        .describe_topics(proto::v1::MetadataRequest {
            topics: topics.iter().map(|(name, _)| name.clone()).collect(),
        })
        .await
    else {
        return Vec::new();
    };
    answer
        .into_inner()
        .topics
        .into_iter()
        .flat_map(|topic| {
            let name = topic.name;
            topic.partitions.into_iter().map(move |p| (name.clone(), p))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_past_a_topics_maximum_go_to_more_topics() {
        assert_eq!(idle_topics(3000), [("idle".to_string(), 3000)]);
        assert_eq!(
            idle_topics(25_000),
            [
                ("idle".to_string(), 10_000),
                ("idle-2".to_string(), 10_000),
                ("idle-3".to_string(), 5_000)
            ]
        );
    }
}
