//! Client authentication on real brokers (TLS on, `--auth-required`): SCRAM-SHA-256 users
//! created by a super user (from the CLI too), a user's password earning a session token that
//! every broker accepts, and every refusal with a clear, non-retried error — no credentials, a
//! wrong password, an unknown user (the same answer), a deleted user, user administration by
//! someone who is not a super user. The password is stored nowhere.

use broker::security::local_ca::{IssuedFiles, LocalCa};
use client::{
    ClientError, Consumer, ConsumerConfig, ErrorCode, NewTopic, OffsetReset, Producer, ProducerConfig, ProducerRecord,
    RetryPolicy, Security,
};
use cluster_tests::{create_topic, free_ports, run_cli_ok, BrokerProcess};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

const PASSWORD: &str = "correct horse battery staple";

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap()
}

fn client(bootstrap: &[String], security: Security) -> Arc<client::Cluster> {
    Arc::new(
        client::Cluster::new(
            bootstrap.to_vec(),
            RetryPolicy {
                deadline: Duration::from_secs(20),
                ..RetryPolicy::default()
            },
        )
        .with_security(security),
    )
}

fn tls_only(ca: &Path) -> Security {
    Security::tls(&read(ca), None)
}

fn with_certificate(files: &IssuedFiles) -> Security {
    Security::tls(&read(&files.ca), Some((&read(&files.cert), &read(&files.key))))
}

fn is_authentication_failure(error: &ClientError) -> bool {
    match error {
        ClientError::Authentication { .. } => true,
        ClientError::RetriesExhausted { last, .. } => is_authentication_failure(last),
        _ => false,
    }
}

/// Every file under `dir` (recursively).
fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_users_authenticate_and_everyone_else_is_refused_clearly() {
    let root = tempfile::tempdir().unwrap();
    let certs = root.path().join("certs");
    let ca = LocalCa::new("cluster CA").unwrap();
    let ports = free_ports(6);
    let address = |i: usize| format!("127.0.0.1:{}", ports[i]);
    let clients: Vec<String> = (0..3).map(address).collect();
    let internals: Vec<String> = (3..6).map(address).collect();
    let peers = (0..3)
        .map(|i| format!("{}={}", i + 1, internals[i]))
        .collect::<Vec<_>>()
        .join(",");
    let mut brokers: Vec<BrokerProcess> = (0..3)
        .map(|i| {
            let files = ca.write_broker(&certs, i as u64 + 1).unwrap();
            let path = |p: &Path| p.display().to_string();
            BrokerProcess::start_with(
                i as u64 + 1,
                clients[i].clone(),
                root.path().join(format!("broker-{}", i + 1)),
                peers.clone(),
                vec![
                    "--internal-listen".into(),
                    internals[i].clone(),
                    "--tls-cert".into(),
                    path(&files.cert),
                    "--tls-key".into(),
                    path(&files.key),
                    "--tls-ca".into(),
                    path(&files.ca),
                    "--auth-required".into(),
                    "--super-users".into(),
                    "admin".into(),
                ],
            )
        })
        .collect();
    let admin_files = ca.write_client(&certs, "admin").unwrap();
    let bob_files = ca.write_client(&certs, "bob").unwrap();
    let ca_file = admin_files.ca.clone();

    // The super user (a client certificate) creates alice once the cluster is up.
    let admin = client(&clients, with_certificate(&admin_files));
    let deadline = Instant::now() + Duration::from_secs(60);
    while let Err(error) = admin.upsert_user("alice", PASSWORD, 8192).await {
        assert!(Instant::now() < deadline, "creating a user never worked: {error}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let users = admin.list_users().await.unwrap();
    assert_eq!(users.len(), 1);
    assert_eq!((users[0].name.as_str(), users[0].iterations), ("alice", 8192));

    // Alice, with her password over TLS (no client certificate): topics, produce, consume, on
    // partitions led by every broker (the token is valid on each).
    let alice = client(&clients, tls_only(&ca_file).with_scram("alice", PASSWORD));
    create_topic(&alice, NewTopic::new("orders", 3, 3)).await;
    let producer = Producer::new(Arc::clone(&alice), ProducerConfig::default()).unwrap();
    for i in 0..30u32 {
        producer
            .send_and_wait(ProducerRecord::new("orders", format!("order-{i}")).partition(i % 3))
            .await
            .unwrap();
    }
    let leaders = cluster_tests::leaders(&alice, "orders").await;
    assert_eq!(
        leaders.values().collect::<std::collections::BTreeSet<_>>().len(),
        3,
        "one leader per broker: {leaders:?}"
    );
    let config = ConsumerConfig {
        auto_offset_reset: OffsetReset::Earliest,
        ..ConsumerConfig::default()
    };
    let mut consumer = Consumer::new(Arc::clone(&alice), config);
    consumer
        .assign((0..3).map(|p| ("orders".to_string(), p)).collect())
        .await
        .unwrap();
    let mut read_back = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while read_back < 30 {
        read_back += consumer.poll(Duration::from_secs(5)).await.unwrap().len();
        assert!(Instant::now() < deadline, "read {read_back} of 30 back");
    }

    // Refusals, each an authentication failure (not retried) saying why.
    let refusal = |security: Security| {
        let clients = clients.clone();
        async move {
            let started = Instant::now();
            let error = client(&clients, security).metadata(Vec::new()).await.unwrap_err();
            assert!(is_authentication_failure(&error), "{error}");
            assert!(started.elapsed() < Duration::from_secs(10), "retried: {error}");
            error.to_string()
        }
    };
    let anonymous = refusal(tls_only(&ca_file)).await;
    assert!(anonymous.contains("authentication required"), "{anonymous}");
    let wrong = refusal(tls_only(&ca_file).with_scram("alice", "tr0ub4dor")).await;
    assert!(wrong.contains("unknown user or wrong password"), "{wrong}");
    let unknown = refusal(tls_only(&ca_file).with_scram("mallory", PASSWORD)).await;
    assert!(unknown.contains("unknown user or wrong password"), "{unknown}");

    // Bob has a valid certificate, so he is someone, but not a super user.
    let bob = client(&clients, with_certificate(&bob_files));
    let denied = bob.upsert_user("bob", "x".repeat(12).as_str(), 4096).await.unwrap_err();
    assert_eq!(denied.code(), Some(ErrorCode::ClusterAuthorizationFailed), "{denied}");
    assert!(bob.list_users().await.is_err());
    bob.metadata(Vec::new())
        .await
        .expect("an authenticated client is served");

    // The CLI, as the super user and as alice.
    let path = |p: &Path| p.display().to_string();
    let tls_flags = [
        "--security-protocol".to_string(),
        "SSL".into(),
        "--ssl-ca-location".into(),
        path(&ca_file),
        "--ssl-certificate-location".into(),
        path(&admin_files.cert),
        "--ssl-key-location".into(),
        path(&admin_files.key),
    ];
    let as_admin = |args: &[&str]| {
        let mut all: Vec<&str> = tls_flags.iter().map(String::as_str).collect();
        all.extend_from_slice(args);
        run_cli_ok(&clients[0], &all)
    };
    as_admin(&[
        "user",
        "create",
        "carol",
        "--password",
        "s3cret-carol",
        "--iterations",
        "4096",
    ]);
    let listed = as_admin(&["user", "list", "--output", "json"]);
    assert!(listed.contains("\"alice\"") && listed.contains("\"carol\""), "{listed}");
    let ca_path = path(&ca_file);
    let topics = run_cli_ok(
        &clients[1],
        &[
            "--security-protocol",
            "SASL_SSL",
            "--ssl-ca-location",
            &ca_path,
            "--sasl-username",
            "carol",
            "--sasl-password",
            "s3cret-carol",
            "topic",
            "list",
        ],
    );
    assert!(topics.contains("orders"), "{topics}");

    // A deleted user cannot earn a new token.
    as_admin(&["user", "delete", "carol"]);
    let gone = refusal(tls_only(&ca_file).with_scram("carol", "s3cret-carol")).await;
    assert!(gone.contains("unknown user or wrong password"), "{gone}");

    // Neither password is stored anywhere the brokers write.
    for file in files_under(root.path()) {
        let bytes = std::fs::read(&file).unwrap_or_default();
        for password in [PASSWORD, "s3cret-carol"] {
            assert!(
                !bytes.windows(password.len()).any(|w| w == password.as_bytes()),
                "{} holds a password",
                file.display()
            );
        }
    }
    for broker in &mut brokers {
        broker.stop();
    }
}
