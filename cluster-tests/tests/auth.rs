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
use proto::record_batch::{encode_batch, ProducerStamp, Record};
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

/// The CLI against `bootstrap` over TLS, presenting `files`' certificate.
fn cli_as(bootstrap: &str, files: &IssuedFiles, args: &[&str]) -> String {
    let path = |p: &Path| p.display().to_string();
    let (ca, cert, key) = (path(&files.ca), path(&files.cert), path(&files.key));
    let mut all = vec![
        "--security-protocol",
        "SSL",
        "--ssl-ca-location",
        &ca,
        "--ssl-certificate-location",
        &cert,
        "--ssl-key-location",
        &key,
    ];
    all.extend_from_slice(args);
    run_cli_ok(bootstrap, &all)
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

/// Three brokers with TLS, internal listeners, `--auth-required`, super user `admin`, and
/// `extra` arguments; their client addresses.
fn start_secured(root: &Path, ca: &LocalCa, extra: &[&str]) -> (Vec<BrokerProcess>, Vec<String>) {
    let certs = root.join("certs");
    let ports = free_ports(6);
    let address = |i: usize| format!("127.0.0.1:{}", ports[i]);
    let clients: Vec<String> = (0..3).map(address).collect();
    let internals: Vec<String> = (3..6).map(address).collect();
    let peers = (0..3)
        .map(|i| format!("{}={}", i + 1, internals[i]))
        .collect::<Vec<_>>()
        .join(",");
    let brokers = (0..3)
        .map(|i| {
            let files = ca.write_broker(&certs, i as u64 + 1).unwrap();
            let path = |p: &Path| p.display().to_string();
            let mut args = vec![
                "--internal-listen".to_string(),
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
            ];
            args.extend(extra.iter().map(|a| a.to_string()));
            BrokerProcess::start_with(
                i as u64 + 1,
                clients[i].clone(),
                root.join(format!("broker-{}", i + 1)),
                peers.clone(),
                args,
            )
        })
        .collect();
    (brokers, clients)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_users_authenticate_and_everyone_else_is_refused_clearly() {
    let root = tempfile::tempdir().unwrap();
    let certs = root.path().join("certs");
    let ca = LocalCa::new("cluster CA").unwrap();
    let (mut brokers, clients) = start_secured(root.path(), &ca, &[]);
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
    let as_admin = |args: &[&str]| cli_as(&clients[0], &admin_files, args);
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

/// The case: an ACL granting read on `orders-*` lets a principal read `orders-eu` and
/// not `payments`, and produce nowhere; what it may not describe it cannot even see.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acls_let_a_principal_read_a_topic_prefix_and_nothing_else() {
    let root = tempfile::tempdir().unwrap();
    let certs = root.path().join("certs");
    let ca = LocalCa::new("cluster CA").unwrap();
    let (mut brokers, clients) = start_secured(root.path(), &ca, &["--authorization"]);
    let admin_files = ca.write_client(&certs, "admin").unwrap();
    let bob_files = ca.write_client(&certs, "bob").unwrap();
    let ca_file = admin_files.ca.clone();

    // The super user sets everything up.
    let admin = client(&clients, with_certificate(&admin_files));
    let deadline = Instant::now() + Duration::from_secs(60);
    while let Err(error) = admin.upsert_user("alice", PASSWORD, 4096).await {
        assert!(Instant::now() < deadline, "creating a user never worked: {error}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    create_topic(&admin, NewTopic::new("orders-eu", 1, 3)).await;
    create_topic(&admin, NewTopic::new("payments", 1, 3)).await;
    create_topic(&admin, NewTopic::new("audit", 1, 3)).await;
    let producer = Producer::new(Arc::clone(&admin), ProducerConfig::default()).unwrap();
    for topic in ["orders-eu", "payments", "audit"] {
        producer
            .send_and_wait(ProducerRecord::new(topic, format!("first of {topic}")).partition(0))
            .await
            .unwrap();
    }
    let admin_cli = |args: &[&str]| cli_as(&clients[0], &admin_files, args);
    admin_cli(&[
        "acl",
        "add",
        "--principal",
        "alice",
        "--operation",
        "read",
        "--topic",
        "orders-*",
    ]);
    admin_cli(&[
        "acl",
        "add",
        "--principal",
        "alice",
        "--operation",
        "describe",
        "--topic",
        "audit",
    ]);
    let listed = admin_cli(&["acl", "list", "--output", "json"]);
    assert!(
        listed.contains("\"orders-*\"") && listed.contains("\"alice\"") && listed.contains("\"read\""),
        "{listed}"
    );

    let alice = client(&clients, tls_only(&ca_file).with_scram("alice", PASSWORD));
    // She sees only what she may describe; a named topic she may not describe is refused the
    // same way whether it exists or not.
    // (Every broker applies the rules as the controller's log reaches it: asked of one that
    // has not yet, she sees less.)
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let all = alice.metadata(Vec::new()).await.unwrap();
        let names: Vec<&str> = all.topics.iter().map(|t| t.name.as_str()).collect();
        if names == ["audit", "orders-eu"] {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "alice sees {names:?}; rules {}",
            admin_cli(&["acl", "list", "--output", "json"])
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let named = alice
        .metadata(vec!["payments".into(), "no-such-topic".into()])
        .await
        .unwrap();
    for topic in &named.topics {
        assert_eq!(topic.error, ErrorCode::TopicAuthorizationFailed as i32, "{topic:?}");
        assert!(topic.message.contains("may not describe"), "{}", topic.message);
    }
    assert_eq!(
        named.topics[0].message.replace("payments", "X"),
        named.topics[1].message.replace("no-such-topic", "X")
    );

    // Reading orders-eu works; audit (described, not readable) is refused by the fetch,
    // naming principal, operation and topic; payments is refused already when her client asks
    // where it is.
    let (orders, _) = alice
        .fetch("orders-eu", 0, 0, 1 << 20, Duration::from_millis(100))
        .await
        .unwrap();
    assert!(!orders.is_empty(), "alice reads orders-eu");
    let refused = alice
        .fetch("audit", 0, 0, 1 << 20, Duration::from_millis(100))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Some(ErrorCode::TopicAuthorizationFailed), "{refused}");
    assert!(
        refused.to_string().contains("\"alice\" may not read topic \"audit\""),
        "{refused}"
    );
    let refused = alice
        .fetch("payments", 0, 0, 1 << 20, Duration::from_millis(100))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Some(ErrorCode::TopicAuthorizationFailed), "{refused}");
    assert!(
        refused
            .to_string()
            .contains("\"alice\" may not describe topic \"payments\""),
        "{refused}"
    );

    // Producing: nowhere, not even to the topic she reads.
    let batch = encode_batch(
        &[Record {
            value: Some(bytes::Bytes::from_static(b"forged")),
            ..Record::default()
        }],
        ProducerStamp::NONE,
    );
    for topic in ["orders-eu", "audit"] {
        let refused = alice
            .produce_attempt(topic, 0, client::Acks::All, batch.clone(), Duration::from_secs(5))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Some(ErrorCode::TopicAuthorizationFailed), "{refused}");
        assert!(refused.to_string().contains("may not write"), "{refused}");
    }
    let idempotent = Producer::new(Arc::clone(&alice), ProducerConfig::default()).unwrap();
    let started = Instant::now();
    let refused = idempotent
        .send_and_wait(ProducerRecord::new("orders-eu", "forged").partition(0))
        .await
        .unwrap_err();
    assert!(
        matches!(
            refused,
            client::ProduceError::Broker {
                code: ErrorCode::ClusterAuthorizationFailed,
                ..
            }
        ),
        "an idempotent producer gets no producer id: {refused}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "failed at once, not at its delivery timeout"
    );
    // Nor may she create topics or read the rules.
    let created = alice
        .create_topics(vec![client::TopicSpec {
            name: "orders-new".into(),
            partitions: 1,
            replication_factor: 3,
            configs: Default::default(),
        }])
        .await
        .unwrap();
    assert_eq!(
        created[0].error,
        ErrorCode::TopicAuthorizationFailed as i32,
        "{created:?}"
    );
    let rules = alice.list_acls(None).await.unwrap_err();
    assert_eq!(rules.code(), Some(ErrorCode::ClusterAuthorizationFailed), "{rules}");

    // A group she may describe shows her only the offsets of topics she may see.
    for topic in ["orders-eu", "payments"] {
        admin_cli(&["group", "reset-offsets", "shared", "--topic", topic, "--to-earliest"]);
    }
    admin_cli(&[
        "acl",
        "add",
        "--principal",
        "alice",
        "--operation",
        "describe",
        "--group",
        "shared",
    ]);
    let deadline = Instant::now() + Duration::from_secs(10);
    let described = loop {
        match client::Admin::new(Arc::clone(&alice)).describe_group("shared").await {
            Ok(described) => break described,
            Err(error) => {
                assert!(Instant::now() < deadline, "describing the group: {error}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let topics: Vec<&str> = described.partitions.iter().map(|p| p.topic.as_str()).collect();
    assert_eq!(topics, ["orders-eu"], "{described:?}");

    // Bob is authenticated (his certificate) but allowed nothing: he sees no topic.
    let bob = client(&clients, with_certificate(&bob_files));
    assert!(bob.metadata(Vec::new()).await.unwrap().topics.is_empty());

    // Removing the rule takes it away again.
    admin_cli(&[
        "acl",
        "remove",
        "--principal",
        "alice",
        "--operation",
        "read",
        "--topic",
        "orders-*",
    ]);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let refused = alice
            .fetch("orders-eu", 0, 0, 1 << 20, Duration::from_millis(100))
            .await;
        if refused.as_ref().err().and_then(ClientError::code) == Some(ErrorCode::TopicAuthorizationFailed) {
            break;
        }
        assert!(Instant::now() < deadline, "the rule stayed in force");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for broker in &mut brokers {
        broker.stop();
    }
}
