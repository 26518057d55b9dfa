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

/// Starts the three brokers and waits for Ctrl-C.
pub async fn run(args: DevArgs) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("locating the broker binary")?;
    let addresses: Vec<String> = (0..3).map(|i| format!("127.0.0.1:{}", args.base_port + i)).collect();
    let peers = addresses
        .iter()
        .enumerate()
        .map(|(i, a)| format!("{}={a}", i + 1))
        .collect::<Vec<_>>()
        .join(",");
    let mut children: Vec<Child> = Vec::new();
    for (i, address) in addresses.iter().enumerate() {
        let data_dir = args.data_dir.join(format!("broker-{}", i + 1));
        let child = Command::new(&exe)
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
            .arg(&data_dir)
            .arg("--exit-on-stdin-close")
            .stdin(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting broker {}", i + 1))?;
        println!(
            "broker {} (pid {}) on {address}, data in {}",
            i + 1,
            child.id().unwrap_or(0),
            data_dir.display()
        );
        children.push(child);
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
