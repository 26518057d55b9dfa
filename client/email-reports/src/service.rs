//! # Service: the `email-reports` process
//!
//! **Owns:** the service config file (TOML: `bootstrap`, `listen`, `data_dir`, `[carrier]`,
//! `[events]`, `[materialiser]`, `[signatures]`), and starting and stopping the parts of one
//! instance: the topics, the changelog applier, the materialiser's group member, and the HTTP
//! listener (ingest and reports). Several instances may run against one cluster, each with
//! its own `data_dir`; each serves every query.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use client::{Acks, Cluster, Producer, ProducerConfig, RetryPolicy};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::http::{self, ingest::Ingest};
use crate::jobs::Jobs;
use crate::materialiser::{self, applier, owner::Owner, MaterialiserConfig, TopicSettings};
use crate::reports::store::Store;
use crate::signature::{SignatureConfig, Verifier};
use crate::CarrierKeys;

/// The service config file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServiceConfig {
    /// Brokers to connect to first.
    pub bootstrap: Vec<String>,
    /// The HTTP listener (webhooks and reports).
    pub listen: String,
    /// Where this instance keeps its report store.
    pub data_dir: PathBuf,
    /// Largest webhook body accepted (413 above). SendGrid batches reach 768 KB and Mandrill
    /// posts up to 1,000 events.
    pub max_body_bytes: usize,
    /// Run the webhook ingest on this instance.
    pub ingest: bool,
    /// Run the materialiser's group member on this instance (the applier always runs: it is
    /// what lets this instance answer queries).
    pub materialise: bool,
    /// Which metadata keys carry tenant and campaign.
    pub carrier: CarrierKeys,
    /// The events topic.
    pub events: TopicSettings,
    /// The consumer group and what it counts.
    pub materialiser: MaterialiserConfig,
    /// Webhook signatures and credentials.
    pub signatures: SignatureConfig,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        ServiceConfig {
            bootstrap: vec!["127.0.0.1:9092".into()],
            listen: "127.0.0.1:8080".into(),
            data_dir: PathBuf::from("email-reports-data"),
            max_body_bytes: 4 * 1024 * 1024,
            ingest: true,
            materialise: true,
            carrier: CarrierKeys::default(),
            events: TopicSettings::default(),
            materialiser: MaterialiserConfig::default(),
            signatures: SignatureConfig::default(),
        }
    }
}

impl ServiceConfig {
    /// Reads a config file (TOML).
    pub fn load(path: &Path) -> anyhow::Result<ServiceConfig> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))
    }
}

/// A started instance: where it listens, and how to stop it.
pub struct Running {
    /// The HTTP listener's address.
    pub address: SocketAddr,
    shutdown: watch::Sender<bool>,
    tasks: Vec<(&'static str, tokio::task::JoinHandle<anyhow::Result<()>>)>,
}

impl Running {
    /// Stops every part (leaving the group cleanly) and waits for them.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.send_replace(true);
        let mut outcome = Ok(());
        for (name, task) in self.tasks {
            match tokio::time::timeout(Duration::from_secs(15), task).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(error))) => outcome = Err(error.context(name)),
                Ok(Err(join)) => outcome = Err(anyhow::anyhow!("the {name} panicked: {join}")),
                Err(_) => outcome = Err(anyhow::anyhow!("the {name} did not stop within 15 s")),
            }
        }
        outcome
    }

    /// Waits until a part stops by itself (an error) — for a process that runs until killed.
    pub async fn wait_any(&mut self) -> anyhow::Result<()> {
        if self.tasks.is_empty() {
            return Ok(());
        }
        let (outcome, index, _) = futures_util::future::select_all(self.tasks.iter_mut().map(|(_, task)| task)).await;
        let (name, _) = self.tasks.remove(index);
        match outcome {
            Ok(result) => result.map_err(|error| error.context(name)),
            Err(join) => Err(anyhow::anyhow!("the {name} panicked: {join}")),
        }
    }
}

/// Starts an instance: topics, applier, materialiser, HTTP; reaching the brokers with
/// `security` (plaintext or TLS).
pub async fn start(config: ServiceConfig, security: client::Security) -> anyhow::Result<Running> {
    config.carrier.validate().map_err(anyhow::Error::msg)?;
    let verifier = Verifier::new(&config.signatures).context("signatures config")?;
    let cluster = Arc::new(Cluster::new(config.bootstrap.clone(), RetryPolicy::default()).with_security(security));
    let partitions =
        materialiser::ensure_topics(&cluster, &config.events, &config.materialiser.changelog_topic).await?;
    std::fs::create_dir_all(&config.data_dir).with_context(|| format!("creating {}", config.data_dir.display()))?;
    let store = Store::open(&config.data_dir.join("store"))?;
    let (shutdown, shutdown_rx) = watch::channel(false);
    let mut tasks = Vec::new();

    let (positions_tx, positions_rx) = watch::channel(applier::Positions::new());
    tasks.push((
        "changelog applier",
        tokio::spawn(applier::run(
            Arc::clone(&cluster),
            store.clone(),
            config.materialiser.changelog_topic.clone(),
            partitions,
            positions_tx,
            shutdown_rx.clone(),
        )),
    ));
    if config.materialise {
        let owner = Owner::new(
            Arc::clone(&cluster),
            store.clone(),
            config.materialiser.clone(),
            config.events.name.clone(),
            positions_rx,
        )?;
        tasks.push(("materialiser", tokio::spawn(owner.run(shutdown_rx.clone()))));
    }
    let ingest = if config.ingest {
        let producer = Producer::new(
            Arc::clone(&cluster),
            ProducerConfig {
                acks: Acks::All,
                enable_idempotence: true,
                linger: Duration::from_millis(2),
                // Providers wait about 10 s for an answer (SparkPost); answer 503 before that.
                delivery_timeout: Duration::from_secs(8),
                request_timeout: Duration::from_secs(4),
                max_block: Duration::from_secs(4),
                ..ProducerConfig::default()
            },
        )?;
        Some(Arc::new(Ingest {
            producer,
            topic: config.events.name.clone(),
            keys: config.carrier.clone(),
            verifier,
        }))
    } else {
        None
    };
    let jobs = Jobs::new(
        store.clone(),
        Arc::clone(&cluster),
        config.events.name.clone(),
        config.materialiser.changelog_topic.clone(),
        partitions,
        config.data_dir.join("exports"),
    );
    let router = http::router(store, jobs, ingest, partitions, config.max_body_bytes);
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let address = listener.local_addr()?;
    let mut http_shutdown = shutdown_rx.clone();
    tasks.push((
        "HTTP server",
        tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async move {
                    let _ = http_shutdown.wait_for(|stop| *stop).await;
                })
                .await
                .context("HTTP server")
        }),
    ));
    tracing::info!(%address, partitions, "email-reports serving");
    Ok(Running {
        address,
        shutdown,
        tasks,
    })
}
