//! The email pipeline on real processes: 3 brokers, `email-reports serve` instances, signed
//! provider traffic from the load generator, and the reports compared with its ground truth —
//! through duplicate deliveries, a kill -9 of a materialiser instance and of a broker.

use std::path::Path;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cluster_tests::email::ReportsProcess;
use cluster_tests::{connect_when_ready, free_ports, start_cluster};
use email_reports::loadgen::{self, LoadgenArgs, Truth};
use email_reports::service::ServiceConfig;
use email_reports::DevSecrets;
use rand::SeedableRng;

fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

/// Dev secrets (one RSA key per test binary: generating it is the slow part) and the
/// service config that verifies them, written under `dir`.
fn write_config(
    dir: &Path,
    bootstrap: &[String],
    partitions: u32,
) -> (std::path::PathBuf, std::path::PathBuf, DevSecrets) {
    static SECRETS: std::sync::OnceLock<DevSecrets> = std::sync::OnceLock::new();
    let secrets = SECRETS
        .get_or_init(|| {
            let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(7);
            DevSecrets::generate(&mut rng, unix_now()).expect("dev secrets")
        })
        .clone();
    let secrets_path = dir.join("dev-secrets.json");
    std::fs::write(&secrets_path, serde_json::to_vec(&secrets).unwrap()).unwrap();
    let mut config = ServiceConfig {
        bootstrap: bootstrap.to_vec(),
        signatures: secrets.verifier_config(),
        ..ServiceConfig::default()
    };
    config.events.partitions = partitions;
    config.materialiser.session_timeout_ms = 3_000;
    config.materialiser.heartbeat_interval_ms = 300;
    let config_path = dir.join("email-reports.toml");
    std::fs::write(&config_path, toml::to_string(&config).unwrap()).unwrap();
    (config_path, secrets_path, secrets)
}

fn loadgen_args(url: &str, secrets: &Path, truth: &Path, rate: u32, seconds: u32, seed: u64) -> LoadgenArgs {
    LoadgenArgs {
        url: url.to_owned(),
        secrets: secrets.to_owned(),
        rate,
        seconds,
        truth: truth.to_owned(),
        tenants: 3,
        campaigns: 4,
        recipients: 300,
        duplicate_percent: 10,
        concurrency: 16,
        batch: 20,
        seed,
        probe_interval_ms: 200,
        retry_for_seconds: 120,
        providers: email_reports::Provider::ALL.to_vec(),
        spam_alert_threshold: 0.001,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reports_equal_the_truth_through_redeliveries_and_kill9_of_a_materialiser_and_a_broker() {
    let root = tempfile::tempdir().unwrap();
    let mut brokers = start_cluster(root.path(), 3);
    let cluster = connect_when_ready(&brokers, Default::default()).await;
    drop(cluster);
    let bootstrap: Vec<String> = brokers.iter().map(|broker| broker.address.clone()).collect();
    let (config, secrets, _) = write_config(root.path(), &bootstrap, 6);
    let ports = free_ports(2);
    let mut steady = ReportsProcess::start(&config, ports[0], root.path().join("instance-a"), &[]);
    steady.wait_healthy(Duration::from_secs(60)).await;
    let mut victim = ReportsProcess::start(&config, ports[1], root.path().join("instance-b"), &[]);
    victim.wait_healthy(Duration::from_secs(60)).await;

    let truth_path = root.path().join("truth.json");
    let load = tokio::spawn(loadgen::run(loadgen_args(
        &steady.url,
        &secrets,
        &truth_path,
        300,
        24,
        11,
    )));

    // Mid-run: kill -9 one materialiser instance (its partitions move to the other after the
    // session timeout), then a broker; both come back while the load goes on.
    tokio::time::sleep(Duration::from_secs(5)).await;
    victim.kill9();
    tokio::time::sleep(Duration::from_secs(4)).await;
    brokers[1].kill9();
    tokio::time::sleep(Duration::from_secs(4)).await;
    victim.restart();
    tokio::time::sleep(Duration::from_secs(3)).await;
    brokers[1].restart();

    load.await
        .unwrap()
        .expect("the load generator ran and nothing was abandoned");
    let truth: Truth = serde_json::from_slice(&std::fs::read(&truth_path).unwrap()).unwrap();
    assert!(truth.events > 3_000, "{} events", truth.events);
    assert!(truth.duplicate_requests > 0, "the run redelivered requests");
    victim.wait_healthy(Duration::from_secs(60)).await;
    for instance in [&steady, &victim] {
        let differences = loadgen::compare_until_equal(&instance.url, &truth, Duration::from_secs(120))
            .await
            .unwrap();
        assert!(
            differences.is_empty(),
            "{}: {} differences, first: {:?}\nlog:\n{}",
            instance.url,
            differences.len(),
            &differences[..differences.len().min(20)],
            instance.log()
        );
    }

    // A tenant's year as CSV: the day rows add up to the tenant's counts.
    let http = reqwest::Client::new();
    let (tenant, figures) = truth
        .tenants
        .iter()
        .find(|(tenant, _)| tenant.starts_with("tenant-"))
        .unwrap();
    let job = http
        .post(format!("{}/v1/tenants/{tenant}/exports", steady.url))
        .send()
        .await
        .unwrap();
    assert_eq!(job.status().as_u16(), 202);
    let job: serde_json::Value = job.json().await.unwrap();
    wait_for_job(&http, &steady.url, job["id"].as_str().unwrap()).await;
    let csv = http
        .get(format!("{}/v1/jobs/{}/result", steady.url, job["id"].as_str().unwrap()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
    let delivered_column = header.iter().position(|name| *name == "delivered").unwrap();
    let delivered: u64 = csv
        .lines()
        .skip(1)
        .map(|row| row.split(',').nth(delivered_column).unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(delivered, figures.counts[&email_reports::EventKind::Delivered], "{csv}");

    // A rebuild recomputes everything from the start of email-events: the same reports after.
    let job = http.post(format!("{}/v1/rebuilds", victim.url)).send().await.unwrap();
    assert_eq!(job.status().as_u16(), 202);
    let job: serde_json::Value = job.json().await.unwrap();
    let finished = wait_for_job(&http, &victim.url, job["id"].as_str().unwrap()).await;
    assert_eq!(finished["generation"], 1, "{finished}");
    for instance in [&steady, &victim] {
        let differences = loadgen::compare_until_equal(&instance.url, &truth, Duration::from_secs(60))
            .await
            .unwrap();
        assert!(
            differences.is_empty(),
            "after the rebuild, {}: {differences:?}",
            instance.url
        );
    }
    steady.stop();
    victim.stop();
}

/// Polls a job until it is done; its final state.
async fn wait_for_job(http: &reqwest::Client, url: &str, id: &str) -> serde_json::Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let job: serde_json::Value = http
            .get(format!("{url}/v1/jobs/{id}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        match job["status"].as_str() {
            Some("done") => return job,
            Some("running") => {}
            _ => panic!("job {id}: {job}"),
        }
        assert!(std::time::Instant::now() < deadline, "job {id} not done: {job}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Each way a webhook can fail gets its own status, and nothing that got 2xx is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_answers_each_failure_with_its_status() {
    let root = tempfile::tempdir().unwrap();
    let mut brokers = start_cluster(root.path(), 3);
    drop(connect_when_ready(&brokers, Default::default()).await);
    let bootstrap: Vec<String> = brokers.iter().map(|broker| broker.address.clone()).collect();
    let (config, _, secrets) = write_config(root.path(), &bootstrap, 3);
    let port = free_ports(1)[0];
    let mut service = ReportsProcess::start(&config, port, root.path().join("instance"), &["--no-materialise"]);
    service.wait_healthy(Duration::from_secs(60)).await;
    let http = reqwest::Client::new();
    let webhook = |provider: &str| format!("{}/webhooks/{provider}", service.url);
    let postmark_body = br#"{"RecordType":"Delivery","MessageID":"m-1","Recipient":"A@example.com","DeliveredAt":"2026-12-01T10:00:00Z","Metadata":{"tenant_id":"t","campaign_id":"c"}}"#;
    let postmark = secrets.basic_auth_headers(email_reports::Provider::Postmark).unwrap();

    let status = |response: &reqwest::Response| response.status().as_u16();
    let ok = http
        .post(webhook("postmark"))
        .headers(postmark.clone())
        .body(&postmark_body[..])
        .send()
        .await
        .unwrap();
    assert_eq!(status(&ok), 200);

    let unknown = http.post(webhook("mailchimp")).body("{}").send().await.unwrap();
    assert_eq!(status(&unknown), 404);

    let wrong_password = http
        .post(webhook("postmark"))
        .basic_auth("postmark", Some("wrong"))
        .body(&postmark_body[..])
        .send()
        .await
        .unwrap();
    assert_eq!(status(&wrong_password), 401);

    let sendgrid_body = br#"[{"email":"a@example.com","timestamp":1764583200,"event":"delivered","sg_event_id":"e1","tenant_id":"t","campaign_id":"c"}]"#;
    let signed = secrets.sign_sendgrid(sendgrid_body, unix_now());
    let mut tampered = sendgrid_body.to_vec();
    tampered[20] ^= 1;
    let refused = http
        .post(webhook("sendgrid"))
        .headers(signed.clone())
        .body(tampered)
        .send()
        .await
        .unwrap();
    assert_eq!(status(&refused), 401);
    let stale = secrets.sign_sendgrid(sendgrid_body, unix_now() - 3_600);
    let refused = http
        .post(webhook("sendgrid"))
        .headers(stale)
        .body(&sendgrid_body[..])
        .send()
        .await
        .unwrap();
    assert_eq!(status(&refused), 401);
    let accepted = http
        .post(webhook("sendgrid"))
        .headers(signed)
        .body(&sendgrid_body[..])
        .send()
        .await
        .unwrap();
    assert_eq!(status(&accepted), 200);

    let malformed = http
        .post(webhook("postmark"))
        .headers(postmark.clone())
        .body("{\"RecordType\":")
        .send()
        .await
        .unwrap();
    assert_eq!(status(&malformed), 400);
    let missing = http
        .post(webhook("postmark"))
        .headers(postmark.clone())
        .body(r#"{"RecordType":"Delivery","MessageID":"m-2","DeliveredAt":"2026-12-01T10:00:00Z"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(status(&missing), 400);
    let text = missing.text().await.unwrap();
    assert!(text.contains("Recipient"), "the 400 names the missing field: {text}");

    let oversized = vec![b' '; 5 * 1024 * 1024];
    let too_big = http
        .post(webhook("postmark"))
        .headers(postmark.clone())
        .body(oversized)
        .send()
        .await
        .unwrap();
    assert_eq!(status(&too_big), 413);
    // The unread body ends the connection: the answer says so, so no next request is sent on it.
    assert_eq!(
        too_big.headers().get("connection").and_then(|v| v.to_str().ok()),
        Some("close")
    );

    // SNS asks to confirm a subscription: verified, answered 200 with the URL to confirm.
    let confirmation = secrets.sign_sns_subscription_confirmation(
        secrets.sns_topic_arn(),
        "confirm-1",
        "token-1",
        "https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription&Token=token-1",
        unix_now(),
    );
    let confirmed = http.post(webhook("ses")).body(confirmation).send().await.unwrap();
    assert_eq!(status(&confirmed), 200);
    let text = confirmed.text().await.unwrap();
    assert!(text.contains("ConfirmSubscription"), "{text}");

    // Jobs: an export of a tenant the reports do not know, and a job id never issued.
    let export = http
        .post(format!("{}/v1/tenants/nobody/exports", service.url))
        .send()
        .await
        .unwrap();
    assert_eq!(status(&export), 404);
    let job = http
        .get(format!("{}/v1/jobs/export-0-0", service.url))
        .send()
        .await
        .unwrap();
    assert_eq!(status(&job), 404);
    let result = http
        .get(format!("{}/v1/jobs/export-0-0/result", service.url))
        .send()
        .await
        .unwrap();
    assert_eq!(status(&result), 404);

    // The cluster is gone: the provider is told to retry.
    for broker in &mut brokers {
        broker.kill9();
    }
    let started = std::time::Instant::now();
    let unavailable = http
        .post(webhook("postmark"))
        .headers(postmark)
        .body(&postmark_body[..])
        .send()
        .await
        .unwrap();
    assert_eq!(status(&unavailable), 503);
    assert!(unavailable.headers().contains_key("retry-after"));
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "answered before a provider's 10 s timeout"
    );
    service.stop();
}
