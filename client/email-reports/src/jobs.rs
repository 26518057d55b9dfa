//! # Jobs: the asynchronous operations of the reports API
//!
//! **Owns:** the job registry of one instance and the two jobs:
//! - **rebuild** recomputes the whole report state from the start of `email-events`: it writes
//!   a reset record of the next state generation to the changelog; every instance that
//!   applies it starts from an empty state, every owner counts its partitions again from their
//!   first offset, and records of the old generation are skipped from then on. Progress is
//!   each partition's next counted offset against the topic's end when the job started.
//! - **export** writes one tenant's daily figures for the last 365 days as CSV (one row per
//!   day and campaign, one column per kind) under the data directory.
//!
//! **Invariants:** a job is answered 202 with its id at once and runs in the background;
//! `GET /v1/jobs/{id}` shows its state. Jobs live in the instance that accepted them: a
//! restart forgets the job (a rebuild itself goes on — it lives in the changelog).

use proto::record_batch::now_ms;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use client::{Cluster, OffsetSpec, Producer, ProducerConfig, ProducerRecord};
use serde::Serialize;

use crate::event::EventKind;
use crate::reports::apply::{utc_date, ChangelogRecord};
use crate::reports::keys;
use crate::reports::model::DailyCounts;
use crate::reports::store::Store;

/// Where a job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    /// Still running.
    Running,
    /// Finished; an export's CSV is at `GET /v1/jobs/{id}/result`.
    Done,
    /// Stopped with `error`.
    Failed,
}

/// One job as `GET /v1/jobs/{id}` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Job {
    /// Its id.
    pub id: String,
    /// `rebuild` or `export`.
    pub kind: &'static str,
    /// Where it is.
    pub status: JobStatus,
    /// Work done so far out of `total` (source records for a rebuild, campaigns for an export).
    pub done: u64,
    /// Work in all.
    pub total: u64,
    /// Unix ms when it was accepted.
    pub started_at_ms: i64,
    /// Unix ms when it finished.
    pub finished_at_ms: Option<i64>,
    /// Why it failed.
    pub error: Option<String>,
    /// A rebuild's state generation; per partition, the end offset it must reach.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub generation: Option<u64>,
    /// An export's tenant.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<String>,
    /// An export's CSV file.
    #[serde(skip)]
    pub result: Option<PathBuf>,
}

/// The jobs of this instance.
#[derive(Clone)]
pub struct Jobs {
    inner: Arc<JobsInner>,
}

struct JobsInner {
    jobs: Mutex<BTreeMap<String, Job>>,
    store: Store,
    cluster: Arc<Cluster>,
    source_topic: String,
    changelog_topic: String,
    partitions: u32,
    export_dir: PathBuf,
}

impl Jobs {
    /// The registry of an instance.
    pub fn new(
        store: Store,
        cluster: Arc<Cluster>,
        source_topic: String,
        changelog_topic: String,
        partitions: u32,
        export_dir: PathBuf,
    ) -> Jobs {
        Jobs {
            inner: Arc::new(JobsInner {
                jobs: Mutex::new(BTreeMap::new()),
                store,
                cluster,
                source_topic,
                changelog_topic,
                partitions,
                export_dir,
            }),
        }
    }

    /// Whether the store has `key` (the routes check a tenant exists before exporting it).
    pub fn knows(&self, key: &str) -> bool {
        self.inner.store.get::<serde_json::Value>(key).is_some()
    }

    /// A job by id.
    pub fn get(&self, id: &str) -> Option<Job> {
        self.inner.jobs.lock().expect("jobs").get(id).cloned()
    }

    fn register(&self, kind: &'static str) -> Job {
        let mut jobs = self.inner.jobs.lock().expect("jobs");
        let job = Job {
            id: format!("{kind}-{}-{}", now_ms(), jobs.len() + 1),
            kind,
            status: JobStatus::Running,
            done: 0,
            total: 0,
            started_at_ms: now_ms(),
            finished_at_ms: None,
            error: None,
            generation: None,
            tenant_id: None,
            result: None,
        };
        jobs.insert(job.id.clone(), job.clone());
        job
    }

    fn update(&self, id: &str, change: impl FnOnce(&mut Job)) {
        if let Some(job) = self.inner.jobs.lock().expect("jobs").get_mut(id) {
            change(job);
        }
    }

    fn finish(&self, id: &str, outcome: anyhow::Result<()>) {
        self.update(id, |job| {
            job.finished_at_ms = Some(now_ms());
            match outcome {
                Ok(()) => job.status = JobStatus::Done,
                Err(error) => {
                    job.status = JobStatus::Failed;
                    job.error = Some(format!("{error:#}"));
                }
            }
        });
    }

    /// Starts a rebuild; returns the job at once.
    pub fn start_rebuild(&self) -> Job {
        let job = self.register("rebuild");
        let jobs = self.clone();
        let id = job.id.clone();
        tokio::spawn(async move {
            let outcome = jobs.rebuild(&id).await;
            jobs.finish(&id, outcome);
        });
        job
    }

    async fn rebuild(&self, id: &str) -> anyhow::Result<()> {
        let inner = &self.inner;
        let mut ends = BTreeMap::new();
        for partition in 0..inner.partitions {
            let end = inner
                .cluster
                .list_offsets(&inner.source_topic, partition, OffsetSpec::Latest, 0)
                .await?
                .unwrap_or(0);
            ends.insert(partition, end);
        }
        let total: u64 = ends.values().sum();
        // The next generation after every reset already written: this store must have applied
        // changelog partition 0 (where resets go) to its end before it can tell.
        let reset_end = inner
            .cluster
            .list_offsets(&inner.changelog_topic, 0, OffsetSpec::Latest, 0)
            .await?
            .unwrap_or(0);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while inner.store.changelog_position(0) < reset_end {
            anyhow::ensure!(
                std::time::Instant::now() < deadline,
                "this instance has not applied the changelog's resets within 60 s"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        let generation = inner.store.generation() + 1;
        self.update(id, |job| {
            job.total = total;
            job.generation = Some(generation);
        });
        // One reset record is enough: whichever instance applies it clears its state, and every
        // owner then sees its partitions' next offsets back at 0.
        let producer = Producer::new(Arc::clone(&inner.cluster), ProducerConfig::default())?;
        let value = serde_json::to_vec(&ChangelogRecord::reset(generation))?;
        producer
            .send_and_wait(ProducerRecord::new(inner.changelog_topic.clone(), value).partition(0))
            .await?;
        producer.close().await;
        tracing::info!(
            generation,
            total,
            "rebuild started: the state is being recounted from the start"
        );
        let mut ticker = tokio::time::interval(std::time::Duration::from_millis(200));
        loop {
            ticker.tick().await;
            let current = inner.store.generation();
            if current < generation {
                continue; // this instance has not applied the reset yet
            }
            anyhow::ensure!(
                current == generation,
                "a newer rebuild (generation {current}) replaced this one"
            );
            let done: u64 = ends
                .iter()
                .map(|(partition, end)| inner.store.next_offset(*partition).min(*end))
                .sum();
            self.update(id, |job| job.done = done);
            if done >= total {
                return Ok(());
            }
        }
    }

    /// Starts a CSV export of `tenant`'s last 365 days; returns the job at once.
    pub fn start_export(&self, tenant: &str) -> Job {
        let mut job = self.register("export");
        job.tenant_id = Some(tenant.to_owned());
        self.update(&job.id, |stored| stored.tenant_id = Some(tenant.to_owned()));
        let jobs = self.clone();
        let id = job.id.clone();
        let tenant = tenant.to_owned();
        tokio::spawn(async move {
            let outcome = jobs.export(&id, &tenant).await;
            jobs.finish(&id, outcome);
        });
        job
    }

    async fn export(&self, id: &str, tenant: &str) -> anyhow::Result<()> {
        let store = &self.inner.store;
        let campaigns = store.ids(&keys::tenant_campaigns_prefix(tenant));
        self.update(id, |job| job.total = campaigns.len() as u64);
        let oldest = utc_date((now_ms() - 365 * 86_400_000) * 1000).unwrap_or_default();
        let mut rows: Vec<(String, String, DailyCounts)> = Vec::new();
        for (index, campaign) in campaigns.iter().enumerate() {
            for (date, value) in store.list(&keys::days_prefix(campaign), None, 400) {
                if date < oldest {
                    continue;
                }
                if let Ok(counts) = serde_json::from_value::<DailyCounts>(value) {
                    rows.push((date, campaign.clone(), counts));
                }
            }
            self.update(id, |job| job.done = index as u64 + 1);
            // Let the server's other tasks run between campaigns.
            tokio::task::yield_now().await;
        }
        rows.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        let mut csv = String::from("date,campaign_id");
        for kind in EventKind::ALL {
            let _ = write!(csv, ",{kind}");
        }
        csv.push('\n');
        for (date, campaign, counts) in rows {
            let _ = write!(csv, "{date},{}", csv_field(&campaign));
            for kind in EventKind::ALL {
                let _ = write!(csv, ",{}", counts.get(&kind).copied().unwrap_or(0));
            }
            csv.push('\n');
        }
        std::fs::create_dir_all(&self.inner.export_dir)?;
        let path = self.inner.export_dir.join(format!("{id}.csv"));
        tokio::fs::write(&path, csv).await?;
        self.update(id, |job| job.result = Some(path));
        Ok(())
    }
}

/// A CSV field, quoted when it holds a comma, quote or line break (RFC 4180).
fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::csv_field;

    #[test]
    fn csv_fields_are_quoted_only_when_needed() {
        assert_eq!(csv_field("spring"), "spring");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
    }
}
