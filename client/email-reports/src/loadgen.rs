//! `email-reports loadgen` and `check`: realistic signed provider traffic, the ground truth
//! of what was acknowledged, and the comparison of that truth with the reports API.
//!
//! Traffic: tenants × campaigns, each campaign sent through one provider (all six in turn),
//! recipients drawn from a per-campaign list. Per message: ~95 % delivered (else hard bounce,
//! soft bounce or spam block), then opens (some twice), fewer clicks, rare complaints and
//! unsubscribes — each kind only where the provider can say it. Batching providers post many
//! events per request. A share of requests is posted again as a provider's duplicate delivery
//! (same events, freshly signed), and every request that does not get a 2xx is retried like a
//! provider retries. The truth counts each distinct event once, by the definitions the reports
//! document — computed here independently of the materialiser's code.
//!
//! Freshness: every `--probe-interval-ms`, one event of a probe campaign is posted alone and
//! the reports API is polled until it shows it; the 2xx→visible latency goes into a histogram.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use axum::http::HeaderMap;
use rand::rngs::{OsRng, SmallRng};
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::event::{EventKind, Provider};
use crate::payloads::{self, OutgoingEvent};
use crate::reports::model::is_sent_kind;
use crate::signing::DevSecrets;
use crate::time::EventTime;
use crate::CarrierKeys;

/// `email-reports loadgen` options.
#[derive(clap::Args, Debug, Clone)]
pub struct LoadgenArgs {
    /// The service's base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// The dev secrets file (`email-reports dev` writes it) to sign with.
    #[arg(long)]
    pub secrets: PathBuf,
    /// Events per second.
    #[arg(long, default_value_t = 200)]
    pub rate: u32,
    /// How long to post.
    #[arg(long, default_value_t = 10)]
    pub seconds: u32,
    /// Where to write the ground truth (JSON).
    #[arg(long)]
    pub truth: PathBuf,
    /// Tenants.
    #[arg(long, default_value_t = 3)]
    pub tenants: u32,
    /// Campaigns per tenant.
    #[arg(long, default_value_t = 4)]
    pub campaigns: u32,
    /// Recipients per campaign.
    #[arg(long, default_value_t = 1000)]
    pub recipients: u32,
    /// Percent of requests delivered a second time.
    #[arg(long, default_value_t = 3)]
    pub duplicate_percent: u32,
    /// Requests in flight at most.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Events per request for batching providers, at most.
    #[arg(long, default_value_t = 50)]
    pub batch: usize,
    /// Random seed (the same seed gives the same traffic).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Post a freshness probe this often (0: none).
    #[arg(long, default_value_t = 250)]
    pub probe_interval_ms: u64,
    /// Give up retrying one request after this long (a provider retries for hours).
    #[arg(long, default_value_t = 120)]
    pub retry_for_seconds: u64,
    /// The providers campaigns are sent through, in turn (default: all six). High-volume
    /// senders use the batching ones (sendgrid, sparkpost, mandrill); SNS's RSA signature per
    /// event makes `ses` the costliest to generate here.
    #[arg(long, value_delimiter = ',', default_values_t = Provider::ALL)]
    pub providers: Vec<Provider>,
    /// The service's `spam_alert_threshold`, recorded in the truth so `check` knows which
    /// campaigns must be alerting.
    #[arg(long, default_value_t = 0.001)]
    pub spam_alert_threshold: f64,
}

/// What was sent and acknowledged, by the reports' definitions.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Truth {
    /// Campaign → figures.
    pub campaigns: BTreeMap<String, TruthFigures>,
    /// Tenant → sums over its campaigns.
    pub tenants: BTreeMap<String, TruthFigures>,
    /// Tenant → suppressed recipients.
    pub suppressions: BTreeMap<String, BTreeSet<String>>,
    /// Campaign → recipients who clicked.
    pub engaged: BTreeMap<String, BTreeSet<String>>,
    /// Distinct events acknowledged.
    pub events: u64,
    /// Requests answered 2xx (duplicates and retries included).
    pub requests: u64,
    /// Requests posted again as duplicates.
    pub duplicate_requests: u64,
    /// Retries after a non-2xx or a connection error.
    pub retries: u64,
    /// Requests given up on (their events may or may not be counted; a check with any is void).
    pub abandoned: u64,
    /// The service's spam alert threshold the run assumed.
    #[serde(default = "default_spam_alert_threshold")]
    pub spam_alert_threshold: f64,
}

fn default_spam_alert_threshold() -> f64 {
    0.001
}

/// The figures the check compares.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TruthFigures {
    /// The tenant (for campaigns).
    pub tenant_id: String,
    /// Distinct recipients with a sent kind.
    pub sent: u64,
    /// Distinct events per kind.
    pub counts: BTreeMap<EventKind, u64>,
    /// Distinct openers.
    pub unique_opens: u64,
    /// Distinct clickers.
    pub unique_clicks: u64,
}

/// Counts distinct acknowledged events. Hashed, not ordered, while it counts (it runs on the
/// machine under test, beside the service: ordered maps of strings were a sixth of its CPU);
/// ordered in [`Truth`] for a stable file.
#[derive(Default)]
struct TruthBuilder {
    seen: HashSet<(Provider, String)>,
    /// Per campaign: its tenant and figures so far.
    campaigns: HashMap<String, CampaignTally>,
    suppressions: HashMap<String, HashSet<String>>,
    requests: u64,
    duplicate_requests: u64,
    retries: u64,
    abandoned: u64,
}

/// One campaign's distinct events and recipients, as acknowledged so far.
#[derive(Default)]
struct CampaignTally {
    tenant: String,
    counts: BTreeMap<EventKind, u64>,
    sent: HashSet<String>,
    opens: HashSet<String>,
    clicks: HashSet<String>,
}

impl TruthBuilder {
    fn acknowledged(&mut self, provider: Provider, events: &[OutgoingEvent]) {
        self.requests += 1;
        for event in events {
            if !self.seen.insert((provider, event.provider_event_id.clone())) {
                continue;
            }
            if !self.campaigns.contains_key(&event.campaign) {
                let tally = CampaignTally {
                    tenant: event.tenant.clone(),
                    ..CampaignTally::default()
                };
                self.campaigns.insert(event.campaign.clone(), tally);
            }
            let tally = self.campaigns.get_mut(&event.campaign).expect("inserted above");
            *tally.counts.entry(event.kind).or_default() += 1;
            if is_sent_kind(event.kind) && !tally.sent.contains(&event.recipient) {
                tally.sent.insert(event.recipient.clone());
            }
            let distinct = match event.kind {
                EventKind::Open => Some(&mut tally.opens),
                EventKind::Click => Some(&mut tally.clicks),
                _ => None,
            };
            if let Some(set) = distinct.filter(|set| !set.contains(&event.recipient)) {
                set.insert(event.recipient.clone());
            }
            if matches!(event.kind, EventKind::HardBounce | EventKind::SpamComplaint) {
                self.suppressions
                    .entry(event.tenant.clone())
                    .or_default()
                    .insert(event.recipient.clone());
            }
        }
    }

    fn finish(self) -> Truth {
        let ordered = |set: &HashSet<String>| set.iter().cloned().collect::<BTreeSet<String>>();
        let mut truth = Truth {
            events: self.seen.len() as u64,
            requests: self.requests,
            duplicate_requests: self.duplicate_requests,
            retries: self.retries,
            abandoned: self.abandoned,
            suppressions: self
                .suppressions
                .iter()
                .map(|(tenant, recipients)| (tenant.clone(), ordered(recipients)))
                .collect(),
            engaged: self
                .campaigns
                .iter()
                .filter(|(_, tally)| !tally.clicks.is_empty())
                .map(|(campaign, tally)| (campaign.clone(), ordered(&tally.clicks)))
                .collect(),
            ..Truth::default()
        };
        for (campaign, tally) in &self.campaigns {
            let figures = TruthFigures {
                tenant_id: tally.tenant.clone(),
                sent: tally.sent.len() as u64,
                counts: tally.counts.clone(),
                unique_opens: tally.opens.len() as u64,
                unique_clicks: tally.clicks.len() as u64,
            };
            let sum = truth
                .tenants
                .entry(tally.tenant.clone())
                .or_insert_with(|| TruthFigures {
                    tenant_id: tally.tenant.clone(),
                    ..TruthFigures::default()
                });
            sum.sent += figures.sent;
            sum.unique_opens += figures.unique_opens;
            sum.unique_clicks += figures.unique_clicks;
            for (kind, count) in &figures.counts {
                *sum.counts.entry(*kind).or_default() += count;
            }
            truth.campaigns.insert(campaign.clone(), figures);
        }
        truth
    }
}

/// One request's events through one provider.
#[derive(Clone)]
struct Request {
    provider: Provider,
    events: Vec<OutgoingEvent>,
}

/// Builds the traffic: messages and their follow-up events.
struct Traffic {
    rng: SmallRng,
    args: LoadgenArgs,
    next_id: u64,
    /// Per campaign: (tenant, campaign, provider).
    campaigns: Vec<(String, String, Provider)>,
    /// Follow-up events not yet due (opens, clicks, complaints), by campaign index.
    follow_ups: Vec<(usize, OutgoingEvent)>,
    /// Events waiting to fill a batch, by campaign index.
    batching: HashMap<usize, Vec<OutgoingEvent>>,
}

impl Traffic {
    fn new(args: &LoadgenArgs) -> Traffic {
        let mut campaigns = Vec::new();
        for tenant in 0..args.tenants {
            for campaign in 0..args.campaigns {
                let provider = args.providers[campaigns.len() % args.providers.len()];
                // The seed is in the ids so runs with different seeds against one instance
                // have their own tenants and campaigns (a check compares one run's truth).
                campaigns.push((
                    format!("tenant-{tenant}-{}", args.seed),
                    format!("t{tenant}-campaign-{campaign}-{}", args.seed),
                    provider,
                ));
            }
        }
        Traffic {
            rng: SmallRng::seed_from_u64(args.seed),
            args: args.clone(),
            next_id: 0,
            campaigns,
            follow_ups: Vec::new(),
            batching: HashMap::new(),
        }
    }

    fn event(
        &mut self,
        campaign: usize,
        recipient: &str,
        message_id: &str,
        kind: EventKind,
        at_secs: i64,
    ) -> OutgoingEvent {
        self.next_id += 1;
        let (tenant, campaign_id, _) = &self.campaigns[campaign];
        OutgoingEvent {
            provider_event_id: format!("lg-{}-{}", self.args.seed, self.next_id),
            message_id: message_id.to_owned(),
            tenant: tenant.clone(),
            campaign: campaign_id.clone(),
            recipient: recipient.to_owned(),
            kind,
            occurred_at: EventTime::from_unix_micros(at_secs * 1_000_000).expect("now is representable"),
            url: (kind == EventKind::Click).then(|| format!("https://shop.example.com/offer/{}", self.next_id % 7)),
        }
    }

    /// The events of one new message and its follow-ups (queued to come later).
    fn message(&mut self, now_secs: i64) -> Vec<(usize, OutgoingEvent)> {
        let campaign = self.rng.gen_range(0..self.campaigns.len());
        let provider = self.campaigns[campaign].2;
        let recipient = format!(
            "user{}@example.{}",
            self.rng.gen_range(0..self.args.recipients),
            campaign % 5
        );
        self.next_id += 1;
        let message_id = format!("msg-{}-{}", self.args.seed, self.next_id);
        let roll: f64 = self.rng.gen();
        let outcome = if roll < 0.95 {
            EventKind::Delivered
        } else if roll < 0.97 {
            EventKind::HardBounce
        } else if roll < 0.99 {
            EventKind::SoftBounce
        } else {
            EventKind::SpamBlock
        };
        let outcome = if payloads::supports(provider, outcome) {
            outcome
        } else {
            EventKind::Delivered
        };
        let mut now = vec![(
            campaign,
            self.event(campaign, &recipient, &message_id, outcome, now_secs),
        )];
        if outcome == EventKind::Delivered {
            let mut later = Vec::new();
            if self.rng.gen_bool(0.25) {
                later.push(EventKind::Open);
                if self.rng.gen_bool(0.3) {
                    later.push(EventKind::Open);
                }
                if self.rng.gen_bool(0.3) {
                    later.push(EventKind::Click);
                }
            }
            if self.rng.gen_bool(0.003) {
                later.push(EventKind::SpamComplaint);
            }
            if self.rng.gen_bool(0.005) {
                later.push(EventKind::Unsubscribe);
            }
            for kind in later.into_iter().filter(|kind| payloads::supports(provider, *kind)) {
                let event = self.event(campaign, &recipient, &message_id, kind, now_secs);
                self.follow_ups.push((campaign, event));
            }
        }
        // Follow-ups come out over time: release a few of the queued ones with each message.
        let due = self.follow_ups.len().min(2);
        for _ in 0..due {
            let index = self.rng.gen_range(0..self.follow_ups.len());
            now.push(self.follow_ups.swap_remove(index));
        }
        now
    }

    /// Requests ready to post after adding `events`; `flush` empties every batch.
    fn requests(&mut self, events: Vec<(usize, OutgoingEvent)>, flush: bool) -> Vec<Request> {
        let mut ready = Vec::new();
        for (campaign, event) in events {
            let provider = self.campaigns[campaign].2;
            if !payloads::batches(provider) {
                ready.push(Request {
                    provider,
                    events: vec![event],
                });
                continue;
            }
            let batch = self.batching.entry(campaign).or_default();
            batch.push(event);
            if batch.len() >= self.args.batch {
                ready.push(Request {
                    provider,
                    events: std::mem::take(batch),
                });
            }
        }
        if flush {
            for (campaign, batch) in self.batching.drain() {
                if !batch.is_empty() {
                    ready.push(Request {
                        provider: self.campaigns[campaign].2,
                        events: batch,
                    });
                }
            }
        }
        ready
    }
}

/// Signs and posts requests.
struct Poster {
    http: reqwest::Client,
    url: String,
    secrets: DevSecrets,
    keys: CarrierKeys,
    retry_for: Duration,
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs() as i64)
}

impl Poster {
    /// The signed body and headers of a request, signed now.
    fn sign(&self, request: &Request) -> anyhow::Result<(Vec<u8>, HeaderMap)> {
        let now = unix_now();
        let event = request.events.first().context("a request has events")?;
        Ok(match request.provider {
            Provider::SendGrid => {
                let payload = payloads::build(request.provider, &request.events, &self.keys)?;
                let headers = self.secrets.sign_sendgrid(&payload.body, now);
                (payload.body, headers)
            }
            Provider::Mailgun => {
                let data = payloads::mailgun_event_data(event, &self.keys)?;
                let body = self.secrets.sign_mailgun(&data, now, &mut OsRng);
                (body, json_headers())
            }
            Provider::Ses => {
                let message = payloads::ses_message(event, &self.keys)?;
                let body = self.secrets.sign_sns_notification(
                    &message,
                    self.secrets.sns_topic_arn(),
                    &event.provider_event_id,
                    now,
                );
                let mut headers = HeaderMap::new();
                headers.insert("content-type", "text/plain; charset=UTF-8".parse()?);
                (body, headers)
            }
            Provider::Postmark | Provider::SparkPost => {
                let payload = payloads::build(request.provider, &request.events, &self.keys)?;
                let headers = self
                    .secrets
                    .basic_auth_headers(request.provider)
                    .context("basic credentials")?;
                (payload.body, headers)
            }
            Provider::Mandrill => {
                let payload = payloads::build(request.provider, &request.events, &self.keys)?;
                let headers = self.secrets.mandrill_headers(&payload.body);
                (payload.body, headers)
            }
        })
    }

    /// Posts until a 2xx (re-signing each attempt, as providers do) or `retry_for` passes.
    /// Returns the retries it took, or an error when it gave up.
    async fn post(&self, request: &Request) -> anyhow::Result<u64> {
        let deadline = Instant::now() + self.retry_for;
        let mut retries = 0;
        let mut backoff = Duration::from_millis(100);
        loop {
            let (body, headers) = self.sign(request)?;
            let url = format!("{}/webhooks/{}", self.url, request.provider);
            let outcome = self.http.post(&url).headers(headers).body(body).send().await;
            let why = match outcome {
                Ok(response) if response.status().is_success() => return Ok(retries),
                Ok(response) => {
                    let status = response.status();
                    let text = response.text().await.unwrap_or_default();
                    if status.is_client_error() && status != reqwest::StatusCode::TOO_MANY_REQUESTS {
                        anyhow::bail!("{url}: {status}: {text}");
                    }
                    format!("{status}: {text}")
                }
                Err(error) => error.to_string(),
            };
            if Instant::now() >= deadline {
                anyhow::bail!("{url}: gave up after {retries} retries: {why}");
            }
            tracing::debug!(%url, %why, "retrying");
            retries += 1;
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }
}

fn json_headers() -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert("content-type", axum::http::HeaderValue::from_static("application/json"));
    headers
}

/// Runs the load and writes the truth.
pub async fn run(args: LoadgenArgs) -> anyhow::Result<()> {
    anyhow::ensure!(!args.providers.is_empty(), "--providers: name at least one");
    let secrets: DevSecrets = serde_json::from_slice(
        &std::fs::read(&args.secrets).with_context(|| format!("reading {}", args.secrets.display()))?,
    )?;
    let poster = Arc::new(Poster {
        http: reqwest::Client::builder()
            .pool_max_idle_per_host(args.concurrency)
            .build()?,
        url: args.url.trim_end_matches('/').to_owned(),
        secrets,
        keys: CarrierKeys::default(),
        retry_for: Duration::from_secs(args.retry_for_seconds),
    });
    let truth = Arc::new(Mutex::new(TruthBuilder::default()));
    let limit = Arc::new(tokio::sync::Semaphore::new(args.concurrency));
    let mut traffic = Traffic::new(&args);
    let mut tasks = tokio::task::JoinSet::new();
    let probes = if args.probe_interval_ms > 0 {
        Some(tokio::spawn(probe_freshness(
            Arc::clone(&poster),
            Arc::clone(&truth),
            Duration::from_millis(args.probe_interval_ms),
            Duration::from_secs(u64::from(args.seconds)),
            args.seed,
        )))
    } else {
        None
    };
    let started = Instant::now();
    let total = u64::from(args.rate) * u64::from(args.seconds);
    let mut made = 0u64;
    let tick = Duration::from_millis(10);
    let mut ticker = tokio::time::interval(tick);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    while made < total {
        ticker.tick().await;
        let due = ((started.elapsed().as_secs_f64() * f64::from(args.rate)) as u64).min(total);
        let mut events = Vec::new();
        while made + (events.len() as u64) < due {
            events.extend(traffic.message(unix_now()));
        }
        made += events.len() as u64;
        let last = made >= total;
        for request in traffic.requests(events, last) {
            let duplicate = traffic.rng.gen_range(0..100) < args.duplicate_percent;
            let copies = if duplicate { 2 } else { 1 };
            for copy in 0..copies {
                let permit = Arc::clone(&limit).acquire_owned().await?;
                let poster = Arc::clone(&poster);
                let truth = Arc::clone(&truth);
                let request = request.clone();
                tasks.spawn(async move {
                    let outcome = poster.post(&request).await;
                    drop(permit);
                    let mut truth = truth.lock().expect("truth");
                    if copy == 1 {
                        truth.duplicate_requests += 1;
                    }
                    match outcome {
                        Ok(retries) => {
                            truth.retries += retries;
                            truth.acknowledged(request.provider, &request.events);
                        }
                        Err(error) => {
                            tracing::warn!(%error, "request abandoned");
                            truth.abandoned += 1;
                        }
                    }
                });
            }
        }
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    let elapsed = started.elapsed();
    let freshness = match probes {
        Some(probes) => Some(probes.await??),
        None => None,
    };
    let truth = Arc::try_unwrap(truth)
        .map_err(|_| anyhow::anyhow!("truth still shared"))?
        .into_inner()
        .expect("truth");
    let mut truth = truth.finish();
    truth.spam_alert_threshold = args.spam_alert_threshold;
    std::fs::write(&args.truth, serde_json::to_vec_pretty(&truth)?)?;
    println!(
        "posted {} distinct events in {:.1} s ({:.0} events/s acknowledged), {} requests ({} duplicates, {} retries, {} abandoned); truth in {}",
        truth.events,
        elapsed.as_secs_f64(),
        truth.events as f64 / elapsed.as_secs_f64(),
        truth.requests,
        truth.duplicate_requests,
        truth.retries,
        truth.abandoned,
        args.truth.display()
    );
    if let Some(freshness) = freshness {
        println!("{freshness}");
    }
    anyhow::ensure!(truth.abandoned == 0, "{} requests were abandoned", truth.abandoned);
    Ok(())
}

/// Posts one probe event at a time and times 2xx → visible in the reports.
async fn probe_freshness(
    poster: Arc<Poster>,
    truth: Arc<Mutex<TruthBuilder>>,
    interval: Duration,
    run_for: Duration,
    seed: u64,
) -> anyhow::Result<String> {
    let mut histogram = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 600_000, 3)?;
    let campaign = format!("probe-campaign-{seed}");
    let started = Instant::now();
    let mut n = 0u64;
    while started.elapsed() < run_for {
        n += 1;
        let event = OutgoingEvent {
            provider_event_id: format!("probe-{seed}-{n}"),
            message_id: format!("probe-msg-{seed}-{n}"),
            tenant: format!("probe-tenant-{seed}"),
            campaign: campaign.clone(),
            recipient: format!("probe{n}@example.com"),
            kind: EventKind::Delivered,
            occurred_at: EventTime::from_unix_micros(unix_now() * 1_000_000).expect("now"),
            url: None,
        };
        let request = Request {
            provider: Provider::Postmark,
            events: vec![event],
        };
        poster.post(&request).await?;
        let acknowledged = Instant::now();
        truth
            .lock()
            .expect("truth")
            .acknowledged(request.provider, &request.events);
        let url = format!("{}/v1/campaigns/{campaign}", poster.url);
        loop {
            let delivered = match poster.http.get(&url).send().await {
                Ok(response) if response.status().is_success() => response
                    .json::<Value>()
                    .await
                    .ok()
                    .and_then(|report| report["counts"]["delivered"].as_u64())
                    .unwrap_or(0),
                _ => 0,
            };
            if delivered >= n {
                break;
            }
            anyhow::ensure!(
                acknowledged.elapsed() < Duration::from_secs(60),
                "probe {n} not visible after 60 s"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        histogram.record(acknowledged.elapsed().as_millis().max(1) as u64)?;
        tokio::time::sleep(interval).await;
    }
    Ok(format!(
        "freshness (2xx -> visible in the report) over {} probes: p50 {} ms, p99 {} ms, max {} ms",
        histogram.len(),
        histogram.value_at_quantile(0.5),
        histogram.value_at_quantile(0.99),
        histogram.max()
    ))
}

/// `email-reports check` options.
#[derive(clap::Args, Debug)]
pub struct CheckArgs {
    /// The service's base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// The truth `loadgen` wrote.
    #[arg(long)]
    pub truth: PathBuf,
    /// Keep comparing until equal or this long has passed (the reports trail the ingest).
    #[arg(long, default_value_t = 60)]
    pub wait_seconds: u64,
}

/// Compares the reports API with a truth; an error lists every difference.
pub async fn check(args: CheckArgs) -> anyhow::Result<()> {
    let truth: Truth = serde_json::from_slice(&std::fs::read(&args.truth)?)?;
    let differences = compare_until_equal(&args.url, &truth, Duration::from_secs(args.wait_seconds)).await?;
    if differences.is_empty() {
        println!(
            "reports match the truth: {} campaigns, {} tenants, {} events",
            truth.campaigns.len(),
            truth.tenants.len(),
            truth.events
        );
        Ok(())
    } else {
        anyhow::bail!("reports differ from the truth:\n{}", differences.join("\n"))
    }
}

/// Compares repeatedly until the reports equal `truth` or `wait` passes; the last differences.
pub async fn compare_until_equal(url: &str, truth: &Truth, wait: Duration) -> anyhow::Result<Vec<String>> {
    let http = reqwest::Client::new();
    let url = url.trim_end_matches('/');
    let deadline = Instant::now() + wait;
    loop {
        let differences = compare(&http, url, truth).await?;
        if differences.is_empty() || Instant::now() >= deadline {
            return Ok(differences);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn get_json(http: &reqwest::Client, url: &str) -> anyhow::Result<Option<Value>> {
    let response = http.get(url).send().await?;
    if response.status() == reqwest::StatusCode::NOT_FOUND {
        return Ok(None);
    }
    anyhow::ensure!(response.status().is_success(), "{url}: {}", response.status());
    Ok(Some(response.json().await?))
}

async fn list_all(http: &reqwest::Client, url: &str, id_field: &str) -> anyhow::Result<BTreeSet<String>> {
    let mut ids = BTreeSet::new();
    let mut cursor: Option<String> = None;
    loop {
        let page_url = match &cursor {
            Some(cursor) => format!("{url}?limit=1000&cursor={}", urlencode(cursor)),
            None => format!("{url}?limit=1000"),
        };
        let Some(page) = get_json(http, &page_url).await? else {
            return Ok(ids);
        };
        for item in page["items"].as_array().into_iter().flatten() {
            if let Some(id) = item[id_field].as_str() {
                ids.insert(id.to_owned());
            }
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return Ok(ids),
        }
    }
}

/// Percent-encodes a path segment or query value (the form encoder writes a space as `+`,
/// which a path would keep literally; a literal `+` it writes as `%2B`).
fn urlencode(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

fn figures_differ(what: &str, expected: &TruthFigures, report: Option<&Value>) -> Vec<String> {
    let Some(report) = report else {
        return vec![format!("{what}: missing from the reports")];
    };
    let mut differences = Vec::new();
    let mut expect = |field: &str, expected: u64, actual: Option<u64>| {
        if actual != Some(expected) {
            differences.push(format!("{what}: {field} expected {expected}, reported {actual:?}"));
        }
    };
    expect("sent", expected.sent, report["sent"].as_u64());
    expect("unique_opens", expected.unique_opens, report["unique_opens"].as_u64());
    expect(
        "unique_clicks",
        expected.unique_clicks,
        report["unique_clicks"].as_u64(),
    );
    for kind in EventKind::ALL {
        let wanted = expected.counts.get(&kind).copied().unwrap_or(0);
        expect(
            &format!("counts.{kind}"),
            wanted,
            report["counts"][kind.as_str()].as_u64(),
        );
    }
    differences
}

async fn compare(http: &reqwest::Client, url: &str, truth: &Truth) -> anyhow::Result<Vec<String>> {
    // The figures first: while they differ the service is still counting, and listing every
    // engaged recipient and suppression each round would only take CPU from it (the benchmark
    // times how long counting takes, polling all the while).
    let mut differences = Vec::new();
    for (campaign, expected) in &truth.campaigns {
        let report = get_json(http, &format!("{url}/v1/campaigns/{}", urlencode(campaign))).await?;
        differences.extend(figures_differ(
            &format!("campaign {campaign}"),
            expected,
            report.as_ref(),
        ));
        if let Some(report) = &report {
            if report["tenant_id"].as_str() != Some(expected.tenant_id.as_str()) {
                differences.push(format!("campaign {campaign}: tenant {:?}", report["tenant_id"]));
            }
        }
    }
    if !differences.is_empty() {
        return Ok(differences);
    }
    for campaign in truth.campaigns.keys() {
        let engaged = list_all(
            http,
            &format!("{url}/v1/campaigns/{}/engaged", urlencode(campaign)),
            "recipient",
        )
        .await?;
        let wanted = truth.engaged.get(campaign).cloned().unwrap_or_default();
        if engaged != wanted {
            differences.push(format!(
                "campaign {campaign}: {} engaged recipients reported, {} expected",
                engaged.len(),
                wanted.len()
            ));
        }
    }
    // Alerts: exactly the campaigns whose complaints / delivered is over the threshold (the
    // service's default minimum of one delivery).
    let alerting: BTreeSet<String> = list_all(http, &format!("{url}/v1/alerts"), "campaign_id")
        .await?
        .into_iter()
        .filter(|campaign| truth.campaigns.contains_key(campaign))
        .collect();
    let expected_alerts: BTreeSet<String> = truth
        .campaigns
        .iter()
        .filter(|(_, figures)| {
            let delivered = figures.counts.get(&EventKind::Delivered).copied().unwrap_or(0);
            let complaints = figures.counts.get(&EventKind::SpamComplaint).copied().unwrap_or(0);
            delivered > 0 && complaints as f64 / delivered as f64 > truth.spam_alert_threshold
        })
        .map(|(campaign, _)| campaign.clone())
        .collect();
    if alerting != expected_alerts {
        differences.push(format!("alerts: reported {alerting:?}, expected {expected_alerts:?}"));
    }
    for (tenant, expected) in &truth.tenants {
        let report = get_json(http, &format!("{url}/v1/tenants/{}", urlencode(tenant))).await?;
        differences.extend(figures_differ(&format!("tenant {tenant}"), expected, report.as_ref()));
        let suppressed = list_all(
            http,
            &format!("{url}/v1/tenants/{}/suppressions", urlencode(tenant)),
            "recipient",
        )
        .await?;
        let wanted = truth.suppressions.get(tenant).cloned().unwrap_or_default();
        if suppressed != wanted {
            differences.push(format!(
                "tenant {tenant}: {} suppressions reported, {} expected",
                suppressed.len(),
                wanted.len()
            ));
        }
    }
    Ok(differences)
}
