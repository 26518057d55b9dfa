//! `email-reports dev`: the whole product on one machine in one command — a local 3-broker
//! cluster (the `broker dev` process) and one instance of this service on it, with
//! development secrets generated once and kept in the data directory so `loadgen` can sign
//! what it posts.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use client::{Admin, Cluster, RetryPolicy};
use tokio::process::Command;

use crate::service::{self, ServiceConfig};
use crate::signing::DevSecrets;
use crate::Provider;

/// `email-reports dev` options.
#[derive(clap::Args, Debug)]
pub struct DevArgs {
    /// Everything this run keeps: the cluster's data, the report store, the dev secrets.
    #[arg(long, default_value = "dev-email")]
    pub data_dir: PathBuf,
    /// The `broker` binary (default: the one next to this executable).
    #[arg(long)]
    pub broker_bin: Option<PathBuf>,
    /// The service's HTTP listener.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// The first broker's port (the three use this and the next two).
    #[arg(long, default_value_t = 9092)]
    pub base_port: u16,
    /// Run the cluster with TLS (`broker dev --tls`: a local CA, mutual TLS between brokers,
    /// internal listeners of their own); this service connects with the dev client certificate.
    #[arg(long)]
    pub tls: bool,
}

/// Runs until Ctrl-C.
pub async fn run(args: DevArgs) -> anyhow::Result<()> {
    let broker_bin = match &args.broker_bin {
        Some(path) => path.clone(),
        None => std::env::current_exe()?.with_file_name("broker"),
    };
    anyhow::ensure!(
        broker_bin.exists(),
        "no broker binary at {} (build it with `cargo build --release -p broker`, or pass --broker-bin)",
        broker_bin.display()
    );
    std::fs::create_dir_all(&args.data_dir)?;
    let mut brokers = Command::new(&broker_bin)
        .arg("dev")
        .arg("--data-dir")
        .arg(args.data_dir.join("cluster"))
        .args(["--base-port", &args.base_port.to_string()])
        .args(args.tls.then_some("--tls"))
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", broker_bin.display()))?;
    let bootstrap: Vec<String> = (0..3).map(|i| format!("127.0.0.1:{}", args.base_port + i)).collect();
    let security = if args.tls {
        // `broker dev --tls` writes its CA and a client certificate before it starts brokers.
        let dir = args.data_dir.join("cluster").join("tls");
        let deadline = Instant::now() + Duration::from_secs(30);
        while !dir.join("dev-client.key").exists() {
            anyhow::ensure!(Instant::now() < deadline, "no dev certificates in {}", dir.display());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let read = |name: &str| std::fs::read(dir.join(name)).with_context(|| format!("reading {name}"));
        let (ca, cert, key) = (read("ca.pem")?, read("dev-client.pem")?, read("dev-client.key")?);
        client::Security::tls(&ca, Some((&cert, &key)))
    } else {
        client::Security::plaintext()
    };
    wait_for_cluster(&bootstrap, &security).await?;

    let secrets = load_or_create_secrets(&args.data_dir.join("dev-secrets.json"), &args.listen)?;
    let config = ServiceConfig {
        bootstrap: bootstrap.clone(),
        listen: args.listen.clone(),
        data_dir: args.data_dir.join("service"),
        signatures: secrets.verifier_config(),
        ..ServiceConfig::default()
    };
    let mut running = service::start(config, security).await?;
    let base = format!("http://{}", running.address);
    println!("email-reports ready on {base} (brokers {})", bootstrap.join(","));
    println!(
        "  webhooks: {}",
        Provider::ALL.map(|p| format!("{base}/webhooks/{p}")).join(" ")
    );
    println!("  reports:  {base}/v1/tenants  {base}/v1/alerts");
    println!("  secrets:  {}", args.data_dir.join("dev-secrets.json").display());
    let exe = std::env::current_exe().map_or_else(|_| "email-reports".into(), |exe| exe.display().to_string());
    println!(
        "  try:      {exe} loadgen --url {base} --secrets {} --rate 200 --seconds 10 --truth truth.json",
        args.data_dir.join("dev-secrets.json").display()
    );
    println!("            {exe} check --url {base} --truth truth.json");
    println!("Ctrl-C stops everything.");
    let outcome = tokio::select! {
        outcome = running.wait_any() => outcome,
        _ = tokio::signal::ctrl_c() => running.stop().await,
        status = brokers.wait() => Err(anyhow::anyhow!("the broker cluster exited: {status:?}")),
    };
    // Ask `broker dev` to stop its brokers cleanly (from a terminal it got the Ctrl-C too).
    if let Some(pid) = brokers.id() {
        let _ = Command::new("kill").args(["-INT", &pid.to_string()]).status().await;
    }
    if tokio::time::timeout(Duration::from_secs(15), brokers.wait())
        .await
        .is_err()
    {
        brokers.start_kill()?;
    }
    outcome
}

async fn wait_for_cluster(bootstrap: &[String], security: &client::Security) -> anyhow::Result<()> {
    let cluster = Arc::new(Cluster::new(bootstrap.to_vec(), RetryPolicy::default()).with_security(security.clone()));
    let admin = Admin::new(cluster);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(description) = admin.describe_cluster().await {
            if description.controller.is_some() && description.brokers.len() >= 3 {
                return Ok(());
            }
        }
        anyhow::ensure!(Instant::now() < deadline, "the local cluster was not ready within 60 s");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn load_or_create_secrets(path: &Path, listen: &str) -> anyhow::Result<DevSecrets> {
    if path.exists() {
        let text = std::fs::read_to_string(path)?;
        return serde_json::from_str(&text).with_context(|| format!("reading {}", path.display()));
    }
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs() as i64;
    let secrets = DevSecrets::generate(&mut rand::rngs::OsRng, now)?
        .with_mandrill_url(format!("http://{listen}/webhooks/mandrill"));
    std::fs::write(path, serde_json::to_vec_pretty(&secrets)?)?;
    Ok(secrets)
}
