//! Three broker processes on loopback for the benchmarks: started from this binary with their
//! data under one scratch directory, ready once every broker has registered.

use super::admin::{connect, connect_with};
use super::dev::LocalTls;
use super::progress::Phase;
use anyhow::{bail, Context};
use client::{Cluster, TopicSpec};
use std::collections::HashMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::process::Child;

/// The brokers log errors only (the benchmarks print their own progress), unless
/// `PERF_BROKER_LOG` gives another filter.
fn log_filter() -> String {
    std::env::var("PERF_BROKER_LOG").unwrap_or_else(|_| "error".into())
}

/// A running local cluster.
pub struct LocalCluster {
    /// The broker processes, node ids 1..=3 (and any added since).
    pub brokers: Vec<Child>,
    /// A client of it.
    pub cluster: Arc<Cluster>,
    /// The brokers' client API addresses.
    pub addresses: Vec<String>,
    dir: PathBuf,
    admins: Option<Vec<String>>,
    env: Vec<(String, String)>,
    tls: Option<LocalTls>,
}

impl LocalCluster {
    /// Starts three brokers with data under `dir` (emptied first) and `env` added to their
    /// environment (e.g. `BROKER_QUIESCE_AFTER_MS`), and waits for them. With `admin`, each
    /// also serves its admin endpoint, so its metrics recorder is on (what metrics cost). With
    /// `tls`, as `broker dev --tls` runs them (mutual TLS between brokers, TLS to clients).
    pub async fn start(dir: &Path, env: &[(String, String)], admin: bool, tls: bool) -> anyhow::Result<LocalCluster> {
        let phase = Phase::open("starting brokers");
        phase.message(|| format!("3 processes, data under {}", dir.display()));
        let _ = std::fs::remove_dir_all(dir);
        let listeners: Vec<TcpListener> = (0..6)
            .map(|_| TcpListener::bind("127.0.0.1:0"))
            .collect::<Result<_, _>>()?;
        let mut addresses: Vec<String> = listeners
            .iter()
            .map(|l| l.local_addr().map(|a| a.to_string()))
            .collect::<Result<_, _>>()?;
        drop(listeners);
        let admins = addresses.split_off(3);
        let tls = match tls {
            true => Some(LocalTls::prepare(&dir.join("tls"))?),
            false => None,
        };
        let brokers = super::dev::spawn_local_brokers(
            &addresses,
            admin.then_some(&admins[..]),
            dir,
            Some(&log_filter()),
            env,
            tls.as_ref(),
        )?;
        let cluster = match &tls {
            Some(tls) => connect_with(&addresses.join(","), tls.client_security()?),
            None => connect(&addresses.join(",")),
        };
        super::dev::wait_until_registered(&cluster, 3, Duration::from_secs(60)).await?;
        phase.finish();
        Ok(LocalCluster {
            brokers,
            cluster,
            addresses,
            dir: dir.to_path_buf(),
            admins: admin.then_some(admins),
            env: env.to_vec(),
            tls,
        })
    }

    /// The brokers' admin endpoints, when started with them.
    pub fn admin_addresses(&self) -> Option<&[String]> {
        self.admins.as_deref()
    }

    /// A new client of the cluster (its own connections), secured as [`cluster`](Self::cluster).
    pub fn new_client(&self) -> anyhow::Result<Arc<Cluster>> {
        Ok(match &self.tls {
            Some(tls) => connect_with(&self.addresses.join(","), tls.client_security()?),
            None => connect(&self.addresses.join(",")),
        })
    }

    /// Stops broker `index + 1` cleanly (standard input closed) and returns how long it took.
    pub async fn stop_broker(&mut self, index: usize) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let child = &mut self.brokers[index];
        drop(child.stdin.take());
        let status = child.wait().await.context("waiting for a broker to stop")?;
        anyhow::ensure!(status.success(), "broker {} exited with {status}", index + 1);
        Ok(started.elapsed())
    }

    /// Kills broker `index + 1` with SIGKILL (a crash: no handover, nothing flushed beyond
    /// what its fsync policy already wrote) and waits until the process is gone.
    pub async fn kill_broker(&mut self, index: usize) -> anyhow::Result<()> {
        let child = &mut self.brokers[index];
        child.start_kill().context("killing a broker")?;
        child.wait().await.context("waiting for a killed broker")?;
        Ok(())
    }

    /// Starts broker `index + 1` again on its data (after [`stop_broker`](Self::stop_broker)).
    pub fn start_broker(&mut self, index: usize) -> anyhow::Result<()> {
        self.brokers[index] = super::dev::spawn_local_broker(
            index,
            &self.addresses,
            self.admins.as_deref(),
            &self.dir,
            Some(&log_filter()),
            &self.env,
            self.tls.as_ref(),
        )?;
        Ok(())
    }

    /// Starts one more broker (the next node id, told only the others' addresses: it joins
    /// as a new broker would) and waits until it has registered; returns its node id.
    pub async fn add_broker(&mut self) -> anyhow::Result<u64> {
        anyhow::ensure!(
            self.admins.is_none(),
            "a broker added to the cluster serves no admin endpoint"
        );
        let address = TcpListener::bind("127.0.0.1:0")?.local_addr()?.to_string();
        self.addresses.push(address);
        let index = self.addresses.len() - 1;
        let child = super::dev::spawn_local_broker(
            index,
            &self.addresses,
            None,
            &self.dir,
            Some(&log_filter()),
            &self.env,
            self.tls.as_ref(),
        )?;
        self.brokers.push(child);
        super::dev::wait_until_registered(&self.cluster, self.addresses.len(), Duration::from_secs(60)).await?;
        Ok(index as u64 + 1)
    }

    /// Creates an RF=3 topic and waits (up to `wait`) until every partition has a leader.
    pub async fn create_topic(&self, name: &str, partitions: u32, wait: Duration) -> anyhow::Result<Duration> {
        let results = self
            .cluster
            .create_topics(vec![TopicSpec {
                name: name.into(),
                partitions,
                replication_factor: 3,
                configs: HashMap::new(),
            }])
            .await?;
        if results[0].error != 0 {
            bail!("creating topic {name} failed: {}", results[0].message);
        }
        let created = Instant::now();
        let phase = Phase::counted("waiting for leaders", u64::from(partitions));
        phase.message(|| format!("partitions of {name} with a leader"));
        loop {
            let metadata = self.cluster.metadata(vec![name.into()]).await?;
            let led = metadata.topics[0]
                .partitions
                .iter()
                .filter(|p| p.leader.is_some())
                .count();
            phase.set_position(led as u64);
            if led == partitions as usize {
                phase.finish();
                return Ok(created.elapsed());
            }
            if created.elapsed() > wait {
                bail!("only {led} of {partitions} partitions elected a leader in {wait:?}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits until every replica of `name` holds its leader's whole log (so a benchmark that
    /// reads after filling does not share the machine with followers still catching up); then
    /// how many partitions each broker leads.
    pub async fn wait_replicas_caught_up(
        &self,
        name: &str,
        wait: Duration,
    ) -> anyhow::Result<std::collections::BTreeMap<u64, usize>> {
        let started = Instant::now();
        loop {
            let described = self.cluster.describe_topics(vec![name.into()]).await?;
            let behind = described.topics[0]
                .partitions
                .iter()
                .filter(|p| p.leader.is_none() || p.caught_up.len() < p.replicas.len())
                .count();
            if behind == 0 {
                let mut leaders = std::collections::BTreeMap::<u64, usize>::new();
                for partition in &described.topics[0].partitions {
                    *leaders.entry(partition.leader.unwrap_or_default()).or_default() += 1;
                }
                return Ok(leaders);
            }
            if started.elapsed() > wait {
                bail!("{behind} partitions of {name} still have replicas catching up after {wait:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops the brokers cleanly and removes their data.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        let phase = Phase::open("stopping brokers");
        for child in &mut self.brokers {
            drop(child.stdin.take());
        }
        for child in &mut self.brokers {
            child.wait().await.context("waiting for a broker to stop")?;
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        phase.finish();
        Ok(())
    }
}
