//! Three brokers in one process (each a full `node::run` on its own loopback listener), driven
//! through the real `broker.v1` gRPC API: topic administration with its errors, produce with
//! every acks level, fetch bounded by the high watermark, list offsets.

use broker::node::{self, BrokerConfig, Peer};
use broker::replication::RaftTimers;
use bytes::Bytes;
use proto::record_batch::{decode_records, encode_batch, ProducerStamp, Record};
use proto::v1::broker_client::BrokerClient;
use proto::v1::{
    Acks, CreateTopicsRequest, DeleteTopicsRequest, ErrorCode, FetchRequest, ListOffsetsRequest, MetadataRequest,
    OffsetSpec, ProduceRequest, TopicSpec,
};
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tonic::transport::Channel;

const WAIT: Duration = Duration::from_secs(30);

struct Cluster {
    addresses: Vec<String>,
    stops: Vec<oneshot::Sender<()>>,
    nodes: Vec<tokio::task::JoinHandle<Result<(), node::NodeError>>>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    async fn start() -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let mut listeners = Vec::new();
        for _ in 0..3 {
            listeners.push(TcpListener::bind("127.0.0.1:0").await.unwrap());
        }
        let addresses: Vec<String> = listeners.iter().map(|l| l.local_addr().unwrap().to_string()).collect();
        let peers: Vec<Peer> = addresses
            .iter()
            .enumerate()
            .map(|(i, a)| format!("{}={a}", i + 1).parse().unwrap())
            .collect();
        let mut stops = Vec::new();
        let mut nodes = Vec::new();
        for (i, listener) in listeners.into_iter().enumerate() {
            let config = BrokerConfig {
                node_id: i as u64 + 1,
                listen: listener.local_addr().unwrap(),
                admin_listen: None,
                advertise: None,
                peers: peers.clone(),
                data_dir: dir.path().join(format!("broker{}", i + 1)),
                controller_voters: 3,
                raft: RaftTimers::default(),
                dial_overrides: Default::default(),
                groups: Default::default(),
                retention_check_interval_ms: 300_000,
                max_open_files: None,
                close_idle_files_ms: 30_000,
                controlled_shutdown_ms: 15_000,
                leader_balance_interval_ms: 300_000,
                leader_imbalance_percent: 10,
                heal_dead_brokers_after_ms: 0,
                internal_listen: None,
                internal_advertise: None,
                tls: None,
                auth: Default::default(),
                min_free_bytes: 0,
            };
            let (stop, stopped) = oneshot::channel::<()>();
            stops.push(stop);
            nodes.push(tokio::spawn(node::run(
                config,
                node::Listeners::api_only(listener),
                async {
                    let _ = stopped.await;
                },
            )));
        }
        Cluster {
            addresses,
            stops,
            nodes,
            _dir: dir,
        }
    }

    async fn client(&self, i: usize) -> BrokerClient<Channel> {
        BrokerClient::connect(format!("http://{}", self.addresses[i]))
            .await
            .unwrap()
    }

    /// The client of the controller leader, once all three brokers are registered.
    async fn controller(&self) -> BrokerClient<Channel> {
        let deadline = Instant::now() + WAIT;
        loop {
            // UNAVAILABLE until broker 1's own metadata lists it.
            let metadata = self
                .client(0)
                .await
                .metadata(MetadataRequest::default())
                .await
                .map(tonic::Response::into_inner);
            if let Ok(metadata) = metadata {
                if let (Some(controller), 3) = (metadata.controller, metadata.brokers.len()) {
                    return self.client(controller as usize - 1).await;
                }
            }
            assert!(Instant::now() < deadline, "no controller with 3 registered brokers");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The client of the leader of `topic`/`partition`, once it has one that accepts writes.
    async fn leader(&self, topic: &str, partition: u32) -> BrokerClient<Channel> {
        let deadline = Instant::now() + WAIT;
        loop {
            let metadata = self
                .client(0)
                .await
                .metadata(MetadataRequest {
                    topics: vec![topic.into()],
                })
                .await
                .unwrap()
                .into_inner();
            let leader = metadata.topics[0]
                .partitions
                .iter()
                .find(|p| p.partition == partition)
                .and_then(|p| p.leader);
            if let Some(leader) = leader {
                let mut client = self.client(leader as usize - 1).await;
                let probe = client
                    .list_offsets(ListOffsetsRequest {
                        topic: topic.into(),
                        partition,
                        spec: OffsetSpec::Latest as i32,
                        timestamp: 0,
                    })
                    .await
                    .unwrap()
                    .into_inner();
                if probe.error == ErrorCode::None as i32 {
                    return client;
                }
            }
            assert!(Instant::now() < deadline, "no leader for {topic}/{partition}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn stop(self) {
        for stop in self.stops {
            let _ = stop.send(());
        }
        for node in self.nodes {
            node.await.unwrap().unwrap();
        }
    }
}

fn spec(name: &str, partitions: u32, replication_factor: u32) -> TopicSpec {
    TopicSpec {
        name: name.into(),
        partitions,
        replication_factor,
        configs: HashMap::new(),
    }
}

fn batch(values: &[&str]) -> Bytes {
    let records: Vec<Record> = values
        .iter()
        .map(|v| Record {
            timestamp: 1_700_000_000_000,
            value: Some(Bytes::copy_from_slice(v.as_bytes())),
            ..Record::default()
        })
        .collect();
    encode_batch(&records, ProducerStamp::NONE)
}

fn produce(topic: &str, acks: Acks, records: Bytes) -> ProduceRequest {
    ProduceRequest {
        topic: topic.into(),
        partition: 0,
        acks: acks as i32,
        records,
        timeout_ms: 10_000,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_produce_fetch_and_errors_over_the_api() {
    if let Ok(filter) = std::env::var("RUST_LOG") {
        let _ = tracing_subscriber::fmt().with_env_filter(filter).try_init();
    }
    let cluster = Cluster::start().await;
    let mut controller = cluster.controller().await;
    tracing::info!("controller found");

    // Topic administration and its errors.
    let created = controller
        .create_topics(CreateTopicsRequest {
            topics: vec![
                spec("orders", 3, 3),
                spec("bad name!", 1, 1),
                spec("too-wide", 1, 4),
                spec("empty", 0, 1),
            ],
        })
        .await
        .unwrap()
        .into_inner()
        .results;
    let codes: Vec<i32> = created.iter().map(|r| r.error).collect();
    assert_eq!(
        codes,
        vec![
            ErrorCode::None as i32,
            ErrorCode::InvalidTopic as i32,
            ErrorCode::InvalidReplicationFactor as i32,
            ErrorCode::InvalidPartitions as i32
        ],
        "{created:?}"
    );
    let again = controller
        .create_topics(CreateTopicsRequest {
            topics: vec![spec("orders", 3, 3)],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.results[0].error, ErrorCode::TopicAlreadyExists as i32);

    tracing::info!("// Produce with each acks leve");
    // Produce with each acks level to the partition leader.
    let mut leader = cluster.leader("orders", 0).await;
    let all = leader
        .produce(produce("orders", Acks::All, batch(&["a", "b"])))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((all.error, all.base_offset), (ErrorCode::None as i32, Some(0)));
    let one = leader
        .produce(produce("orders", Acks::Leader, batch(&["c"])))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((one.error, one.base_offset), (ErrorCode::None as i32, Some(2)));
    let none = leader
        .produce(produce("orders", Acks::None, batch(&["d"])))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((none.error, none.base_offset), (ErrorCode::None as i32, None));

    tracing::info!("// Fetch long-polls");
    // Fetch long-polls until the acks=0 write is committed, and never passes the watermark.
    let mut values = Vec::new();
    let mut offset = 0;
    let deadline = Instant::now() + WAIT;
    while values.len() < 4 {
        assert!(Instant::now() < deadline, "records not visible: {values:?}");
        let fetched = leader
            .fetch(FetchRequest {
                topic: "orders".into(),
                partition: 0,
                offset,
                max_bytes: 1 << 20,
                min_bytes: 1,
                max_wait_ms: 1000,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(fetched.error, ErrorCode::None as i32, "{}", fetched.message);
        for stored in fetched.batches {
            for record in decode_records(&stored.records).unwrap() {
                let at = stored.base_offset + record.offset_delta as u64;
                assert!(at < fetched.high_watermark, "record at {at} beyond the high watermark");
                values.push(String::from_utf8(record.value.unwrap().to_vec()).unwrap());
                offset = at + 1;
            }
        }
    }
    assert_eq!(values, vec!["a", "b", "c", "d"]);

    let latest = leader
        .list_offsets(ListOffsetsRequest {
            topic: "orders".into(),
            partition: 0,
            spec: OffsetSpec::Latest as i32,
            timestamp: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(latest.offset, Some(4));

    tracing::info!("// Bad produce requests");
    // Bad produce requests get precise errors and change nothing.
    let unknown = leader
        .produce(ProduceRequest {
            topic: "nope".into(),
            ..produce("orders", Acks::All, batch(&["x"]))
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(unknown.error, ErrorCode::UnknownTopicOrPartition as i32);
    let garbage = leader
        .produce(produce("orders", Acks::All, Bytes::from_static(b"not a batch")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(garbage.error, ErrorCode::InvalidRequest as i32);
    let huge = leader
        .produce(produce("orders", Acks::All, batch(&[&"x".repeat(2 * 1024 * 1024)])))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(huge.error, ErrorCode::RecordTooLarge as i32);
    let out_of_range = leader
        .fetch(FetchRequest {
            topic: "orders".into(),
            partition: 0,
            offset: 99,
            max_bytes: 1024,
            min_bytes: 0,
            max_wait_ms: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(out_of_range.error, ErrorCode::OffsetOutOfRange as i32);

    tracing::info!("// The ISR converges");
    // The ISR converges to all three replicas; a follower answers NOT_LEADER naming the leader.
    let deadline = Instant::now() + WAIT;
    let partition = loop {
        let metadata = cluster
            .client(0)
            .await
            .metadata(MetadataRequest {
                topics: vec!["orders".into()],
            })
            .await
            .unwrap()
            .into_inner();
        let partition = metadata.topics[0].partitions[0].clone();
        if partition.isr.len() == 3 {
            break partition;
        }
        assert!(Instant::now() < deadline, "ISR never reached 3: {partition:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let leader_id = partition.leader.unwrap();
    assert_eq!(partition.isr, vec![1, 2, 3]);
    let follower = (1..=3u64).find(|id| *id != leader_id).unwrap();
    let redirected = cluster
        .client(follower as usize - 1)
        .await
        .produce(produce("orders", Acks::All, batch(&["z"])))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(redirected.error, ErrorCode::NotLeader as i32);
    assert_eq!(redirected.leader, Some(leader_id));

    tracing::info!("// Deleting the topic");
    // Deleting the topic removes it.
    let deleted = controller
        .delete_topics(DeleteTopicsRequest {
            topics: vec!["orders".into(), "never-created".into()],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(deleted.results[0].error, ErrorCode::None as i32);
    assert_eq!(deleted.results[1].error, ErrorCode::UnknownTopicOrPartition as i32);

    tracing::info!("stopping");
    cluster.stop().await;
}
