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
}

/// Starts one `broker serve` process per address (node ids 1..), each with its data in
/// `data_dir/broker-<id>`, all stopping when their standard input closes.
pub fn spawn_local_brokers(
    addresses: &[String],
    data_dir: &std::path::Path,
    log_filter: Option<&str>,
    env: &[(String, String)],
) -> anyhow::Result<Vec<Child>> {
    let exe = std::env::current_exe().context("locating the broker binary")?;
    let peers = addresses
        .iter()
        .enumerate()
        .map(|(i, a)| format!("{}={a}", i + 1))
        .collect::<Vec<_>>()
        .join(",");
    let mut children = Vec::new();
    for (i, address) in addresses.iter().enumerate() {
        let mut command = Command::new(&exe);
        command
            .arg("serve")
            .args([
                "--node-id",
                &(i + 1).to_string(),
                "--listen",
                address,
                "--peers",
                &peers,
            ])
            .arg("--data-dir")
            .arg(data_dir.join(format!("broker-{}", i + 1)))
            .arg("--exit-on-stdin-close")
            .stdin(Stdio::piped())
            .kill_on_drop(true);
        if let Some(filter) = log_filter {
            command.env("RUST_LOG", filter);
        }
        command.envs(env.iter().map(|(k, v)| (k, v)));
        children.push(command.spawn().with_context(|| format!("starting broker {}", i + 1))?);
    }
    Ok(children)
}

/// Starts the three brokers and waits for Ctrl-C.
pub async fn run(args: DevArgs) -> anyhow::Result<()> {
    let addresses: Vec<String> = (0..3).map(|i| format!("127.0.0.1:{}", args.base_port + i)).collect();
    let mut children = spawn_local_brokers(&addresses, &args.data_dir, None, &[])?;
    for (i, child) in children.iter().enumerate() {
        println!(
            "broker {} (pid {}) on {}, data in {}",
            i + 1,
            child.id().unwrap_or(0),
            addresses[i],
            args.data_dir.join(format!("broker-{}", i + 1)).display()
        );
    }
    println!(
        "bootstrap: {}    (e.g. `broker topic create demo --partitions 3`)",
        addresses[0]
    );
    println!("Ctrl-C stops the cluster; kill one broker's pid to watch failover.");
    tokio::signal::ctrl_c().await.context("waiting for Ctrl-C")?;
    println!("stopping...");
    for child in &mut children {
        // Closing a broker's standard input asks it to shut down cleanly.
        drop(child.stdin.take());
    }
    for child in &mut children {
        if tokio::time::timeout(Duration::from_secs(10), child.wait())
            .await
            .is_err()
        {
            child.kill().await.ok();
        }
    }
    Ok(())
}
