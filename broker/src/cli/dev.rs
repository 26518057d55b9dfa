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
    /// TLS on: a local CA made once under `<data-dir>/tls` issues each broker and a
    /// `dev-client` a certificate; brokers talk mutual TLS on internal listeners of their own
    /// (the client ports plus 100), clients TLS on the usual ports.
    #[arg(long)]
    tls: bool,
}

/// How many brokers a local cluster's CA issues certificates for (brokers added later, too).
const LOCAL_TLS_BROKERS: u64 = 8;
/// Where a TLS local cluster's internal listeners are: each broker's client port plus this.
pub const INTERNAL_PORT_OFFSET: u16 = 100;

/// TLS of a local cluster: the certificates in `dir`, each broker's internal listener.
#[derive(Debug, Clone)]
pub struct LocalTls {
    /// `ca.pem`, `broker-<id>.pem`/`.key`, `dev-client.pem`/`.key`.
    pub dir: PathBuf,
}

impl LocalTls {
    /// The certificates under `dir`, made (by a new local CA) unless a previous run left them.
    pub fn prepare(dir: &std::path::Path) -> anyhow::Result<LocalTls> {
        if !dir.join("dev-client.key").exists() {
            // Written aside and renamed into place: whoever waits for the files (`email-reports
            // dev --tls`) never reads half of them.
            let staging = dir.with_extension("staging");
            let _ = std::fs::remove_dir_all(&staging);
            let ca = broker::security::local_ca::LocalCa::new("broker dev CA").context("making a local CA")?;
            for id in 1..=LOCAL_TLS_BROKERS {
                ca.write_broker(&staging, id)?;
            }
            ca.write_client(&staging, "dev-client")?;
            let _ = std::fs::remove_dir_all(dir);
            std::fs::rename(&staging, dir).with_context(|| format!("moving certificates to {}", dir.display()))?;
        }
        Ok(LocalTls { dir: dir.to_path_buf() })
    }

    /// The internal listener of the broker whose client listener is `address`.
    pub fn internal_address(address: &str) -> anyhow::Result<String> {
        let (host, port) = address.rsplit_once(':').context("address without a port")?;
        let port: u16 = port.parse().context("bad port")?;
        let internal = port
            .checked_add(INTERNAL_PORT_OFFSET)
            .context("no room for the internal port")?;
        Ok(format!("{host}:{internal}"))
    }

    /// The `serve` arguments of broker `id` at `address`.
    fn serve_args(&self, id: usize, address: &str) -> anyhow::Result<Vec<String>> {
        anyhow::ensure!(
            id as u64 <= LOCAL_TLS_BROKERS,
            "the local CA issued certificates for {LOCAL_TLS_BROKERS} brokers"
        );
        let file = |name: String| self.dir.join(name).display().to_string();
        Ok(vec![
            "--internal-listen".into(),
            Self::internal_address(address)?,
            "--tls-cert".into(),
            file(format!("broker-{id}.pem")),
            "--tls-key".into(),
            file(format!("broker-{id}.key")),
            "--tls-ca".into(),
            file("ca.pem".into()),
            // The dev client certificate may administer users (`broker user create ...`).
            "--super-users".into(),
            "dev-client".into(),
        ])
    }

    /// A client of the cluster: trusting the CA, presenting `dev-client`.
    pub fn client_security(&self) -> anyhow::Result<client::Security> {
        let read = |name: &str| {
            let path = self.dir.join(name);
            std::fs::read(&path).with_context(|| format!("reading {}", path.display()))
        };
        let (ca, cert, key) = (read("ca.pem")?, read("dev-client.pem")?, read("dev-client.key")?);
        Ok(client::Security::tls(&ca, Some((&cert, &key))))
    }
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
    tls: Option<&LocalTls>,
) -> anyhow::Result<Vec<Child>> {
    (0..addresses.len())
        .map(|i| spawn_local_broker(i, addresses, admin_addresses, data_dir, log_filter, env, tls))
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
    tls: Option<&LocalTls>,
) -> anyhow::Result<Child> {
    let exe = std::env::current_exe().context("locating the broker binary")?;
    // With TLS, peers reach each other on their internal listeners.
    let peer_address = |address: &String| match tls {
        Some(_) => LocalTls::internal_address(address),
        None => Ok(address.clone()),
    };
    let peers = addresses
        .iter()
        .enumerate()
        .map(|(i, a)| Ok(format!("{}={}", i + 1, peer_address(a)?)))
        .collect::<anyhow::Result<Vec<_>>>()?
        .join(",");
    let tls_args = match tls {
        Some(tls) => tls.serve_args(index + 1, &addresses[index])?,
        None => Vec::new(),
    };
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
        .args(tls_args)
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
    let tls = match args.tls {
        true => Some(LocalTls::prepare(&args.data_dir.join("tls"))?),
        false => None,
    };
    let mut children = spawn_local_brokers(&addresses, Some(&admins), &args.data_dir, None, &[], tls.as_ref())?;
    let cluster = match &tls {
        Some(tls) => std::sync::Arc::new(
            client::Cluster::new(addresses.clone(), client::RetryPolicy::default())
                .with_security(tls.client_security()?),
        ),
        None => super::admin::connect(&addresses.join(",")),
    };
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
    if let Some(tls) = &tls {
        let dir = tls.dir.display();
        println!("TLS: brokers speak mutual TLS on internal ports +{INTERNAL_PORT_OFFSET}; clients need TLS:");
        println!("  export BROKER_SECURITY_PROTOCOL=SSL BROKER_SSL_CA_LOCATION={dir}/ca.pem \\");
        println!("         BROKER_SSL_CERTIFICATE_LOCATION={dir}/dev-client.pem BROKER_SSL_KEY_LOCATION={dir}/dev-client.key");
    }
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
    // An empty address: named in the peer lists, not registered by itself yet.
    let registered = |m: client::MetadataResponse| m.brokers.iter().filter(|b| !b.address.is_empty()).count();
    while cluster.metadata(Vec::new()).await.map_or(0, registered) < count {
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
