//! `broker dev`: a local 3-broker cluster on 127.0.0.1, each broker its own process (so one can
//! be killed to watch failover), data under one directory. Stops cleanly on Ctrl-C.

use anyhow::Context;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use tokio::process::{Child, Command};

/// Flags of `broker dev`.
#[derive(clap::Args, Debug)]
pub struct DevArgs {
    /// Directory holding every broker's data (`broker-1`, `broker-2`, `broker-3`).
    #[arg(long, default_value = "dev-cluster")]
    data_dir: PathBuf,
    /// Port of broker 1; brokers 2 and 3 use the next two.
    #[arg(long, default_value_t = 9092)]
    base_port: u16,
    /// Admin HTTP port (`/metrics`, `/health`, `/ready`) of broker 1; brokers 2 and 3 use the
    /// next two.
    #[arg(long, default_value_t = 9644)]
    admin_base_port: u16,
}

/// Starts one `broker serve` process per address (node ids 1..), each with its data in
/// `data_dir/broker-<id>` and, when `admin_addresses` are given, its admin endpoint on the
/// matching one; all stop when their standard input closes.
pub fn spawn_local_brokers(
    addresses: &[String],
    admin_addresses: Option<&[String]>,
    data_dir: &std::path::Path,
    log_filter: Option<&str>,
    env: &[(String, String)],
) -> anyhow::Result<Vec<Child>> {
    (0..addresses.len())
        .map(|i| spawn_local_broker(i, addresses, admin_addresses, data_dir, log_filter, env))
        .collect()
}

/// Starts broker `index + 1` of [`spawn_local_brokers`]'s cluster (also to restart it).
pub fn spawn_local_broker(
    index: usize,
    addresses: &[String],
    admin_addresses: Option<&[String]>,
    data_dir: &std::path::Path,
    log_filter: Option<&str>,
    env: &[(String, String)],
) -> anyhow::Result<Child> {
    let exe = std::env::current_exe().context("locating the broker binary")?;
    let peers = addresses
        .iter()
        .enumerate()
        .map(|(i, a)| format!("{}={a}", i + 1))
        .collect::<Vec<_>>()
        .join(",");
    let mut command = Command::new(&exe);
    command
        .arg("serve")
        .args([
            "--node-id",
            &(index + 1).to_string(),
            "--listen",
            &addresses[index],
            "--peers",
            &peers,
        ])
        .arg("--data-dir")
        .arg(data_dir.join(format!("broker-{}", index + 1)))
        .arg("--exit-on-stdin-close")
        .args(
            admin_addresses
                .map(|admin| ["--admin-listen", admin[index].as_str()])
                .into_iter()
                .flatten(),
        )
        .stdin(Stdio::piped())
        .kill_on_drop(true);
    if let Some(filter) = log_filter {
        command.env("RUST_LOG", filter);
    }
    command.envs(env.iter().map(|(k, v)| (k, v)));
    command
        .spawn()
        .with_context(|| format!("starting broker {}", index + 1))
}

/// Starts the three brokers, waits until all have registered with an elected controller (so
/// a `--replication-factor 3` topic can be created at once), prints where everything is, and
/// waits for Ctrl-C.
pub async fn run(args: DevArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.base_port.checked_add(2).is_some() && args.admin_base_port.checked_add(2).is_some(),
        "--base-port and --admin-base-port need two more ports above them (at most 65533)"
    );
    let addresses: Vec<String> = (0..3).map(|i| format!("127.0.0.1:{}", args.base_port + i)).collect();
    let admins: Vec<String> = (0..3)
        .map(|i| format!("127.0.0.1:{}", args.admin_base_port + i))
        .collect();
    let mut children = spawn_local_brokers(&addresses, Some(&admins), &args.data_dir, None, &[])?;
    let cluster = super::admin::connect(&addresses.join(","));
    tokio::select! {
        registered = wait_until_registered(&cluster, addresses.len(), Duration::from_secs(60)) => registered?,
        _ = tokio::signal::ctrl_c() => {
            println!("stopping before the cluster was ready...");
            stop_brokers(&mut children).await;
            return Ok(());
        }
    }
    for (i, child) in children.iter().enumerate() {
        println!(
            "broker {} (pid {}) on {}, data in {}",
            i + 1,
            child.id().unwrap_or(0),
            addresses[i],
            args.data_dir.join(format!("broker-{}", i + 1)).display()
        );
        println!(
            "  metrics http://{0}/metrics  health http://{0}/health  ready http://{0}/ready",
            admins[i]
        );
    }
    println!(
        "bootstrap: {}    (e.g. `broker topic create demo --partitions 3`)",
        addresses[0]
    );
    println!("Ctrl-C stops the cluster; kill one broker's pid to watch failover.");
    println!("ready");
    tokio::signal::ctrl_c().await.context("waiting for Ctrl-C")?;
    println!("stopping...");
    stop_brokers(&mut children).await;
    Ok(())
}

/// Waits until `count` brokers are registered in the cluster metadata (which also means a
/// controller leader was elected: registrations are its commands).
pub async fn wait_until_registered(cluster: &client::Cluster, count: usize, timeout: Duration) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    while cluster.metadata(Vec::new()).await.map_or(0, |m| m.brokers.len()) < count {
        if started.elapsed() > timeout {
            anyhow::bail!("brokers did not register within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// Asks each broker to stop cleanly (closing its standard input) and kills any that has not
/// stopped within 10 s.
async fn stop_brokers(children: &mut [Child]) {
    for child in children.iter_mut() {
        // Closing a broker's standard input asks it to shut down cleanly.
        drop(child.stdin.take());
    }
    for child in children.iter_mut() {
        if tokio::time::timeout(Duration::from_secs(10), child.wait())
            .await
            .is_err()
        {
            child.kill().await.ok();
        }
    }
}
