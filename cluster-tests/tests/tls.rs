//! Transport security on real brokers: a client listener and an internal listener, TLS on
//! both, mutual TLS between brokers. The cluster forms, replicates and serves over it; the
//! internal listener admits only a certificate from the cluster's CA whose principal names a
//! broker; clients without a certificate (when one is required), with an expired one, or
//! without TLS are refused with a clear error; a broker whose certificate comes from another
//! CA cannot join.

use broker::security::local_ca::{IssuedFiles, LocalCa, Role, Validity};
use client::{
    ClientError, Consumer, ConsumerConfig, NewTopic, OffsetReset, Producer, ProducerConfig, ProducerRecord,
    RetryPolicy, Security,
};
use cluster_tests::{create_topic, free_ports, BrokerProcess};
use proto::raft_v1::raft_client::RaftClient;
use proto::raft_v1::PingRequest;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

/// A broker's `serve` arguments for TLS with its own internal listener.
fn tls_args(internal: &str, files: &IssuedFiles) -> Vec<String> {
    let path = |p: &Path| p.display().to_string();
    vec![
        "--internal-listen".into(),
        internal.into(),
        "--tls-cert".into(),
        path(&files.cert),
        "--tls-key".into(),
        path(&files.key),
        "--tls-ca".into(),
        path(&files.ca),
        "--tls-client-auth".into(),
        "required".into(),
    ]
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap()
}

/// A client presenting `files`' certificate (or none), trusting `ca`.
fn client(bootstrap: &[String], ca: &Path, identity: Option<&IssuedFiles>, deadline: Duration) -> Arc<client::Cluster> {
    let (cert, key) = identity.map_or((Vec::new(), Vec::new()), |f| (read(&f.cert), read(&f.key)));
    let security = Security::tls(&read(ca), identity.map(|_| (&cert[..], &key[..])));
    Arc::new(
        client::Cluster::new(
            bootstrap.to_vec(),
            RetryPolicy {
                deadline,
                ..RetryPolicy::default()
            },
        )
        .with_security(security),
    )
}

/// A Raft `Ping` sent straight to `address`, over TLS with `tls` (or plaintext): what a
/// program that is not a broker gets from the internal listener.
async fn ping(address: &str, tls: Option<ClientTlsConfig>) -> Result<(), String> {
    let endpoint = match tls {
        Some(tls) => Endpoint::from_shared(format!("https://{address}"))
            .unwrap()
            .tls_config(tls)
            .unwrap(),
        None => Endpoint::from_shared(format!("http://{address}")).unwrap(),
    };
    let channel = endpoint
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(5))
        .connect()
        .await
        .map_err(|e| format!("connect: {e:?}"))?;
    RaftClient::new(channel)
        .ping(PingRequest {
            node: 99,
            incarnation: 1,
            stopping: false,
            opening: false,
        })
        .await
        .map(|_| ())
        .map_err(|status| format!("{status:?}"))
}

fn tls_with(ca: &Path, identity: Option<&IssuedFiles>) -> ClientTlsConfig {
    let config = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read(ca)));
    match identity {
        Some(files) => config.identity(Identity::from_pem(read(&files.cert), read(&files.key))),
        None => config,
    }
}

/// Whether an error is the TLS refusal the client names as such (looking through retries).
fn is_tls_refusal(error: &ClientError) -> bool {
    match error {
        ClientError::Authentication { .. } => true,
        ClientError::RetriesExhausted { last, .. } => is_tls_refusal(last),
        _ => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn brokers_replicate_over_mutual_tls_and_only_brokers_reach_the_internal_listener() {
    let root = tempfile::tempdir().unwrap();
    let certs = root.path().join("certs");
    let ca = LocalCa::new("cluster CA").unwrap();
    let ports = free_ports(8);
    let address = |i: usize| format!("127.0.0.1:{}", ports[i]);
    let clients: Vec<String> = (0..4).map(address).collect();
    let internals: Vec<String> = (4..8).map(address).collect();
    let peers = |n: usize| {
        (0..n)
            .map(|i| format!("{}={}", i + 1, internals[i]))
            .collect::<Vec<_>>()
            .join(",")
    };
    let mut brokers: Vec<BrokerProcess> = (0..3)
        .map(|i| {
            let files = ca.write_broker(&certs, i as u64 + 1).unwrap();
            BrokerProcess::start_with(
                i as u64 + 1,
                clients[i].clone(),
                root.path().join(format!("broker-{}", i + 1)),
                peers(3),
                tls_args(&internals[i], &files),
            )
        })
        .collect();
    let app = ca.write_client(&certs, "orders-app").unwrap();
    let ca_file = app.ca.clone();

    // A client with the CA and its certificate works: brokers register, a topic replicates
    // over mutual TLS (every replica in sync), records go in with acks=all and come back.
    let cluster = client(&clients[..3], &ca_file, Some(&app), Duration::from_secs(30));
    let deadline = Instant::now() + Duration::from_secs(60);
    let metadata = loop {
        match cluster.metadata(Vec::new()).await {
            Ok(metadata) if metadata.brokers.iter().filter(|b| !b.address.is_empty()).count() == 3 => break metadata,
            _ => {
                assert!(Instant::now() < deadline, "brokers never registered over TLS");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    for broker in &metadata.brokers {
        let i = broker.id as usize - 1;
        assert_eq!(broker.address, clients[i], "clients are sent to the client listener");
        assert_eq!(broker.internal_address, internals[i]);
    }
    create_topic(&cluster, NewTopic::new("orders", 3, 3)).await;
    let producer = Producer::new(Arc::clone(&cluster), ProducerConfig::default()).unwrap();
    for i in 0..300 {
        producer
            .send(ProducerRecord::new("orders", format!("order-{i}")).partition(i % 3))
            .await
            .unwrap();
    }
    producer.flush().await;
    let config = ConsumerConfig {
        auto_offset_reset: OffsetReset::Earliest,
        ..ConsumerConfig::default()
    };
    let mut consumer = Consumer::new(Arc::clone(&cluster), config);
    consumer
        .assign((0..3).map(|p| ("orders".to_string(), p)).collect())
        .await
        .unwrap();
    let mut read_back = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while read_back < 300 {
        read_back += consumer.poll(Duration::from_secs(5)).await.unwrap().len();
        assert!(Instant::now() < deadline, "read {read_back} of 300 records back");
    }
    assert_eq!(read_back, 300);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let described = cluster.describe_topics(vec!["orders".into()]).await.unwrap();
        if described.topics[0].partitions.iter().all(|p| p.isr.len() == 3) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "replicas never all in sync over mTLS: {described:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The internal listener: a broker's certificate gets through (the control), nothing
    // else does — not a client certificate from the same CA, not TLS without a certificate,
    // not plaintext, not a "broker" certificate from another CA.
    let broker_3 = ca.write_broker(&certs, 3).unwrap();
    ping(&internals[0], Some(tls_with(&ca_file, Some(&broker_3))))
        .await
        .expect("a broker's certificate reaches the internal listener");
    let intruder_ca = LocalCa::new("intruder CA").unwrap();
    let intruder_dir = root.path().join("intruder");
    let forged = intruder_ca.write_broker(&intruder_dir, 4).unwrap();
    let refusals = [
        ("a client certificate", Some(tls_with(&ca_file, Some(&app)))),
        ("TLS without a certificate", Some(tls_with(&ca_file, None))),
        ("plaintext", None),
        (
            "another CA's broker certificate",
            Some(tls_with(&ca_file, Some(&forged))),
        ),
    ];
    for (what, tls) in refusals {
        let refused = ping(&internals[0], tls).await;
        assert!(refused.is_err(), "{what} reached the internal listener");
    }
    // The client listener does not serve the internal services.
    let unimplemented = ping(&clients[0], Some(tls_with(&ca_file, Some(&app))))
        .await
        .unwrap_err();
    assert!(unimplemented.contains("Unimplemented"), "{unimplemented}");

    // Clients: no certificate, an expired one, or no TLS at all are refused; the first two
    // as a TLS refusal, at once (not retried).
    let no_cert = client(&clients[..1], &ca_file, None, Duration::from_secs(5));
    let error = no_cert.metadata(Vec::new()).await.unwrap_err();
    assert!(is_tls_refusal(&error), "no client certificate: {error}");
    assert!(error.to_string().contains("requires a client certificate"), "{error}");
    let expired = ca
        .write(&certs, "expired", "orders-app", Role::Client, Validity::Expired)
        .unwrap();
    let started = Instant::now();
    let error = client(&clients[..1], &ca_file, Some(&expired), Duration::from_secs(5))
        .metadata(Vec::new())
        .await
        .unwrap_err();
    assert!(is_tls_refusal(&error), "expired certificate: {error}");
    assert!(error.to_string().to_lowercase().contains("expired"), "{error}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "a TLS refusal is not retried"
    );
    let plaintext = client::Cluster::new(
        clients[..1].to_vec(),
        RetryPolicy {
            deadline: Duration::from_secs(2),
            ..RetryPolicy::default()
        },
    );
    assert!(
        plaintext.metadata(Vec::new()).await.is_err(),
        "plaintext reached a TLS listener"
    );
    // A client that does not trust the brokers' CA refuses them.
    let other_ca_file = intruder_dir.join("ca.pem");
    let error = client(&clients[..1], &other_ca_file, Some(&app), Duration::from_secs(5))
        .metadata(Vec::new())
        .await
        .unwrap_err();
    assert!(is_tls_refusal(&error), "an unknown CA: {error}");
    assert!(error.to_string().contains("certificate"), "{error}");

    // A broker with a certificate from another CA cannot join: its peers refuse it in the
    // handshake, and it never registers (a broker with a good certificate registers within
    // a second or two; see the start above).
    let mut intruder = BrokerProcess::start_with(
        4,
        clients[3].clone(),
        root.path().join("broker-4"),
        peers(4),
        tls_args(&internals[3], &forged),
    );
    let watched = Instant::now();
    while watched.elapsed() < Duration::from_secs(8) {
        let metadata = cluster.metadata(Vec::new()).await.unwrap();
        assert!(
            metadata.brokers.iter().all(|b| b.id != 4),
            "a broker with another CA's certificate joined"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let logs: String = brokers
        .iter()
        .map(|b| std::fs::read_to_string(b.log_path()).unwrap_or_default())
        .collect();
    assert!(
        logs.contains("TLS handshake refused") && logs.contains("internal"),
        "the brokers logged no refused handshake on their internal listener"
    );
    intruder.stop();
    for broker in &mut brokers {
        broker.stop();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_listener_with_tls_serves_the_internal_api_to_brokers_only() {
    // A broker without an internal listener serves Raft on its client listener: there a
    // client certificate is accepted by the handshake, and the internal services refuse it.
    let root = tempfile::tempdir().unwrap();
    let certs = root.path().join("certs");
    let ca = LocalCa::new("cluster CA").unwrap();
    let files = ca.write_broker(&certs, 1).unwrap();
    let app = ca.write_client(&certs, "orders-app").unwrap();
    let address = format!("127.0.0.1:{}", free_ports(1)[0]);
    let path = |p: &Path| p.display().to_string();
    let mut broker = BrokerProcess::start_with(
        1,
        address.clone(),
        root.path().join("broker-1"),
        format!("1={address}"),
        vec![
            "--controller-voters".into(),
            "1".into(),
            "--tls-cert".into(),
            path(&files.cert),
            "--tls-key".into(),
            path(&files.key),
            "--tls-ca".into(),
            path(&files.ca),
        ],
    );
    // The client certificate works for the client API...
    let cluster = client(
        std::slice::from_ref(&address),
        &files.ca,
        Some(&app),
        Duration::from_secs(30),
    );
    let metadata = cluster.metadata(Vec::new()).await.unwrap();
    assert_eq!(metadata.brokers.len(), 1);
    // ... not for the internal one, nor does TLS without a certificate; a broker's does.
    let refused = ping(&address, Some(tls_with(&files.ca, Some(&app)))).await.unwrap_err();
    assert!(
        refused.contains("PermissionDenied") && refused.contains("orders-app"),
        "{refused}"
    );
    let anonymous = ping(&address, Some(tls_with(&files.ca, None))).await.unwrap_err();
    assert!(anonymous.contains("PermissionDenied"), "{anonymous}");
    ping(&address, Some(tls_with(&files.ca, Some(&files))))
        .await
        .expect("a broker's certificate reaches the internal API");
    broker.stop();
}
