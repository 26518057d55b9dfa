//! The admin endpoint of real broker processes (`--admin-listen`): `/health` answers while the
//! process is up, `/ready` once the broker has joined the cluster, and `/metrics` serves the
//! Prometheus text exposition — parsed here with a parser crate — whose figures move with the
//! traffic the test sends: produce, a leadership transfer, a consumer group, a paused broker.

use client::{GroupConfig, GroupConsumer, NewTopic, OffsetReset, Producer, ProducerConfig, ProducerRecord};
use cluster_tests::{connect_when_ready, create_topic, http_get, leaders, start_cluster_with_admin};
use prometheus_parse::{Scrape, Value};
use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

async fn scrape(address: &str) -> Scrape {
    let (status, body) = http_get(address, "/metrics").await.expect("scraping /metrics");
    assert_eq!(status, 200, "{body}");
    Scrape::parse(body.lines().map(|line| Ok(line.to_string()))).expect("a valid Prometheus exposition")
}

/// The value of an unlabelled counter or gauge (0 when the broker has not recorded it yet).
fn value(scrape: &Scrape, name: &str) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|sample| sample.metric == name)
        .map(|sample| match sample.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => v,
            _ => panic!("{name} is not a counter or gauge"),
        })
        .sum()
}

/// The value of a counter or gauge's series whose `group` label is `group` (0 if absent).
fn group_value(scrape: &Scrape, name: &str, group: &str) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|sample| sample.metric == name && sample.labels.get("group") == Some(group))
        .map(|sample| match sample.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => v,
            _ => panic!("{name} is not a counter or gauge"),
        })
        .sum()
}

/// How many observations an unlabelled histogram holds (0 when it has none yet).
fn histogram_count(scrape: &Scrape, name: &str) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|sample| sample.metric == name)
        .map(|sample| match &sample.value {
            Value::Histogram(buckets) => buckets.last().map_or(0.0, |b| b.count),
            _ => panic!("{name} is not a histogram"),
        })
        .sum()
}

/// The sum of `per_broker` over the scrapes.
fn total(scrapes: &[Scrape], per_broker: impl Fn(&Scrape) -> f64) -> f64 {
    scrapes.iter().map(per_broker).sum()
}

/// Polls every admin endpoint until `check` holds for the scrapes of all of them.
async fn wait_for_scrapes(admins: &[String], what: &str, check: impl Fn(&[Scrape]) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut scrapes = Vec::new();
        for admin in admins {
            scrapes.push(scrape(admin).await);
        }
        if check(&scrapes) {
            return;
        }
        assert!(Instant::now() < deadline, "never saw {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_endpoint_serves_health_readiness_and_metrics_that_move_with_traffic() {
    let root = tempfile::tempdir().unwrap();
    let (brokers, _, admins) = start_cluster_with_admin(root.path(), 3, &[]);

    // Ready means: a controller leader is known and this broker is registered with it.
    let deadline = Instant::now() + Duration::from_secs(60);
    for admin in &admins {
        loop {
            match http_get(admin, "/ready").await {
                Ok((200, body)) => {
                    assert_eq!(body, "ready\n");
                    break;
                }
                Ok((503, body)) => assert!(body.starts_with("not ready: "), "{body}"),
                Ok((status, body)) => panic!("/ready answered {status}: {body}"),
                Err(_) => {} // not listening yet
            }
            assert!(Instant::now() < deadline, "{admin} never became ready");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(http_get(admin, "/health").await.unwrap(), (200, "ok\n".to_string()));
    }
    let (status, _) = http_get(&admins[0], "/no-such-page").await.unwrap();
    assert_eq!(status, 404);

    let cluster = connect_when_ready(&brokers, HashMap::new()).await;
    create_topic(&cluster, NewTopic::new("observed", 3, 3)).await;
    wait_for_scrapes(&admins, "3 replicas on each broker and 3 leaders in all", |scrapes| {
        scrapes.iter().all(|s| value(s, "broker_partition_replicas") == 3.0)
            && scrapes.iter().map(|s| value(s, "broker_partitions_led")).sum::<f64>() == 3.0
    })
    .await;
    // The leadership sampler counts the elections that gave each partition its leader.
    wait_for_scrapes(&admins, "the 3 partitions' elections counted", |scrapes| {
        total(scrapes, |s| value(s, "broker_leader_elections_won_total")) >= 3.0
    })
    .await;

    let mut before = Vec::new();
    for admin in &admins {
        before.push(scrape(admin).await);
    }
    // 2,000 records of 100 bytes, acks=all: every broker hosts a replica of each partition, so
    // every broker appends at least 200,000 bytes and, under fsync=always, fsyncs them.
    let producer = Producer::new(Arc::clone(&cluster), ProducerConfig::default()).unwrap();
    let mut deliveries = Vec::new();
    for i in 0..2_000u32 {
        let record = ProducerRecord::new("observed", vec![b'x'; 100]).key(i.to_string());
        deliveries.push(producer.send(record).await.unwrap());
    }
    for delivery in deliveries {
        delivery.await.unwrap();
    }
    producer.close().await;

    wait_for_scrapes(&admins, "every replica's appends and fsyncs counted", |after| {
        after.iter().zip(&before).all(|(after, before)| {
            value(after, "storage_appended_bytes_total") - value(before, "storage_appended_bytes_total") >= 200_000.0
                && value(after, "storage_fsyncs_total") > value(before, "storage_fsyncs_total")
                && value(after, "storage_flush_rounds_total") > value(before, "storage_flush_rounds_total")
        })
    })
    .await;
    let after = scrape(&admins[0]).await;
    let fsyncs = after
        .samples
        .iter()
        .find(|sample| sample.metric == "storage_fsyncs_total")
        .expect("storage_fsyncs_total exported");
    assert!(matches!(fsyncs.value, Value::Counter(_)), "{:?}", fsyncs.value);
    // Every flush round is timed: the histogram's count is the rounds counter.
    let rounds = value(&after, "storage_flush_rounds_total");
    let timed = after
        .samples
        .iter()
        .find_map(|sample| match &sample.value {
            Value::Histogram(buckets) if sample.metric == "storage_flush_round_duration_seconds" => {
                buckets.last().map(|b| b.count)
            }
            _ => None,
        })
        .expect("storage_flush_round_duration_seconds exported as a histogram");
    assert!(timed >= 1.0 && timed <= rounds, "{timed} timed rounds of {rounds}");
    // Every request is counted and timed per API: the produce requests went to the partitions'
    // leaders, spread over the brokers.
    let mut produce_requests = 0.0;
    let mut produce_timings = 0;
    for admin in &admins {
        let scrape = scrape(admin).await;
        for sample in &scrape.samples {
            if sample.labels.get("api") != Some("Produce") {
                continue;
            }
            match &sample.value {
                Value::Counter(n) if sample.metric == "broker_requests_total" => produce_requests += n,
                Value::Histogram(buckets) if sample.metric == "broker_request_duration_seconds" => {
                    produce_timings += buckets.last().map_or(0.0, |b| b.count) as u64
                }
                _ => {}
            }
        }
    }
    assert!(produce_requests >= 1.0, "no Produce request counted");
    assert_eq!(produce_timings as f64, produce_requests, "every Produce request timed");
    // Produce counts what the leaders accepted: every record once (no retry counted twice).
    let mut scrapes = Vec::new();
    for admin in &admins {
        scrapes.push(scrape(admin).await);
    }
    // (A batch whose answer was lost in a leader change is answered as a duplicate on retry
    // and not counted again, so an election during the burst may leave the sum below 2,000;
    // it can never exceed it.)
    let produced: f64 = scrapes.iter().map(|s| value(s, "broker_produced_records_total")).sum();
    assert!(
        produced > 0.0 && produced <= 2_000.0,
        "{produced} records counted by the leaders"
    );
    // All of them under the topic's own label (the first topic these brokers serve).
    let labelled = |scrape: &Scrape, name: &str| -> f64 {
        scrape
            .samples
            .iter()
            .filter(|sample| sample.metric == name && sample.labels.get("topic") == Some("observed"))
            .map(|sample| match sample.value {
                Value::Counter(v) | Value::Untyped(v) => v,
                _ => panic!("{name} is not a counter"),
            })
            .sum()
    };
    let produced_observed: f64 = scrapes
        .iter()
        .map(|s| labelled(s, "broker_produced_records_total"))
        .sum();
    assert_eq!(produced_observed, produced, "produced records carry their topic");
    // Reading a partition back counts its records as fetched, under the topic's label.
    let read = cluster_tests::read_partition(&cluster, "observed", 0).await.len() as f64;
    let mut fetched = 0.0;
    for admin in &admins {
        fetched += labelled(&scrape(admin).await, "broker_fetched_records_total");
    }
    assert!(read > 0.0 && fetched >= read, "{fetched} records fetched, {read} read");
    // Every acks=all batch the leaders committed was timed from proposal to commit: at least one
    // per partition.
    let committed = total(&scrapes, |s| histogram_count(s, "broker_raft_commit_duration_seconds"))
        - total(&before, |s| histogram_count(s, "broker_raft_commit_duration_seconds"));
    assert!(committed >= 3.0, "{committed} commits timed");
    // Every broker holds a replica of each partition: all 200,000 bytes of records (in segments
    // of their own), and the idempotent producer in each replica's producer table.
    for scrape in &scrapes {
        let size = value(scrape, "broker_log_size_bytes");
        assert!(size >= 200_000.0, "{size} bytes of logs");
        let segments = value(scrape, "broker_log_segments");
        assert!(segments >= 3.0, "{segments} segments");
        let producers = value(scrape, "broker_producer_ids");
        assert!(producers >= 3.0, "{producers} producer ids");
    }
    // A refused request is counted by API and error code (on the controller, which answers it).
    let admin_client = client::Admin::new(Arc::clone(&cluster));
    let refused = admin_client.create_partitions("no-such-topic", 2).await.unwrap_err();
    assert_eq!(refused.code(), Some(client::ErrorCode::UnknownTopicOrPartition));
    let mut errors = 0.0;
    let mut scrapes = Vec::new();
    for admin in &admins {
        let scrape = scrape(admin).await;
        errors += scrape
            .samples
            .iter()
            .filter(|s| {
                s.metric == "broker_request_errors_total"
                    && s.labels.get("api") == Some("TopicCommands")
                    && s.labels.get("code") == Some("UNKNOWN_TOPIC_OR_PARTITION")
            })
            .map(|s| match s.value {
                Value::Counter(n) => n,
                _ => 0.0,
            })
            .sum::<f64>();
        scrapes.push(scrape);
    }
    assert_eq!(errors, 1.0, "the refusal counted once, by API and code");
    check_deploy_files_and_docs_name_only_exported_metrics(&scrapes);

    // A leadership transfer: every broker's replica sees partition 0's leader change, and the
    // new leader's replica won an election.
    let from = leaders(&cluster, "observed").await[&0];
    let to = (1..=3).find(|id| *id != from).unwrap();
    let before = scrapes;
    admin_client
        .transfer_leadership("observed", 0, to)
        .await
        .expect("transfer");
    wait_for_scrapes(&admins, "the leader change seen by every replica", |after| {
        let moved = |scrape: &Scrape, before: &Scrape, name: &str| value(scrape, name) > value(before, name);
        after
            .iter()
            .zip(&before)
            .all(|(after, before)| moved(after, before, "broker_leader_changes_total"))
            && moved(
                &after[to as usize - 1],
                &before[to as usize - 1],
                "broker_leader_elections_won_total",
            )
    })
    .await;

    // A consumer group on the coordinator: a member joins (a rebalance), is given the three
    // partitions and commits offset 10 on each, so the group lags 2,000 - 30 records; it leaves
    // (another rebalance).
    const GROUP: &str = "metrics-group";
    let config = GroupConfig {
        enable_auto_commit: false,
        heartbeat_interval: Duration::from_millis(200),
        auto_offset_reset: OffsetReset::Earliest,
        ..GroupConfig::new(GROUP)
    };
    let mut consumer = GroupConsumer::new(Arc::clone(&cluster), config).unwrap();
    consumer.subscribe(vec!["observed".into()]).await.expect("subscribe");
    let deadline = Instant::now() + Duration::from_secs(30);
    while consumer.assignment().len() < 3 {
        assert!(Instant::now() < deadline, "the member never got all 3 partitions");
        consumer.poll(Duration::from_millis(200)).await.expect("poll");
    }
    let offsets = (0..3)
        .map(|partition| (("observed".to_string(), partition), 10))
        .collect();
    consumer.commit_offsets(offsets).await.expect("commit");
    wait_for_scrapes(&admins, "the group's member, lag and rebalance", |scrapes| {
        total(scrapes, |s| group_value(s, "broker_group_members", GROUP)) == 1.0
            && total(scrapes, |s| group_value(s, "broker_group_lag", GROUP)) == 1_970.0
            && total(scrapes, |s| group_value(s, "broker_group_rebalances_total", GROUP)) >= 1.0
    })
    .await;
    consumer.close().await.expect("close");
    wait_for_scrapes(&admins, "the member gone and its leave counted", |scrapes| {
        total(scrapes, |s| group_value(s, "broker_group_members", GROUP)) == 0.0
            && total(scrapes, |s| group_value(s, "broker_group_rebalances_total", GROUP)) >= 2.0
    })
    .await;

    // A follower frozen past the ISR's 10 s lag bound leaves the ISR of partition 0 on its
    // leader, and rejoins once it runs again.
    let leader = leaders(&cluster, "observed").await[&0];
    let frozen = (1..=3).find(|id| *id != leader).unwrap();
    let leader_admin = [admins[leader as usize - 1].clone()];
    let before = scrape(&leader_admin[0]).await;
    brokers[frozen as usize - 1].signal_pause(true);
    wait_for_scrapes(&leader_admin, "the frozen follower dropped from the ISR", |after| {
        value(&after[0], "broker_isr_shrinks_total") > value(&before, "broker_isr_shrinks_total")
    })
    .await;
    brokers[frozen as usize - 1].signal_pause(false);
    wait_for_scrapes(&leader_admin, "the follower back in the ISR", |after| {
        value(&after[0], "broker_isr_expands_total") > value(&before, "broker_isr_expands_total")
    })
    .await;
    wait_for_scrapes(&admins, "no under-replicated partition", |scrapes| {
        scrapes
            .iter()
            .all(|s| value(s, "broker_partitions_under_replicated") == 0.0)
    })
    .await;
    drop(brokers);
}

/// The metric names a PromQL expression uses: tokens of our prefixes, with a histogram's
/// `_bucket` / `_sum` / `_count` series mapped to the histogram.
fn metric_names_in(expression: &str, exported: &BTreeSet<String>) -> Vec<String> {
    expression
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|token| token.starts_with("broker_") || token.starts_with("storage_"))
        .map(|token| {
            ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| token.strip_suffix(suffix).filter(|base| exported.contains(*base)))
                .unwrap_or(token)
                .to_string()
        })
        .collect()
}

/// Every metric the Grafana dashboard and the alert rules in `deploy/` query is one the real
/// brokers export (`scrapes`: one per broker), every exported metric has a help text, and the table in
/// `docs/operations.md` lists exactly the exported metrics.
fn check_deploy_files_and_docs_name_only_exported_metrics(scrapes: &[Scrape]) {
    // The parser reports a histogram's `_sum` and `_count` lines as samples of their own.
    let names: BTreeSet<&str> = scrapes
        .iter()
        .flat_map(|scrape| scrape.samples.iter().map(|s| s.metric.as_str()))
        .collect();
    let exported: BTreeSet<String> = names
        .iter()
        .filter(|name| {
            !["_sum", "_count"]
                .iter()
                .any(|suffix| name.strip_suffix(suffix).is_some_and(|base| names.contains(base)))
        })
        .map(|name| name.to_string())
        .collect();
    for name in &exported {
        assert!(
            scrapes.iter().any(|scrape| scrape.docs.contains_key(name)),
            "{name} is exported without a help text"
        );
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let mut expressions = Vec::new();
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("deploy/grafana/broker-dashboard.json")).unwrap())
            .unwrap();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            expressions.push(("dashboard", target["expr"].as_str().unwrap().to_string()));
        }
    }
    let rules = std::fs::read_to_string(root.join("deploy/prometheus/alerts.yml")).unwrap();
    for line in rules.lines() {
        if let Some(expression) = line.trim().strip_prefix("expr:") {
            expressions.push(("alert rules", expression.to_string()));
        }
    }
    assert!(expressions.len() >= 10, "{expressions:?}");
    let mut queried = BTreeSet::new();
    for (file, expression) in &expressions {
        for name in metric_names_in(expression, &exported) {
            assert!(
                exported.contains(&name),
                "the {file} query `{expression}` names {name}, which no broker exports"
            );
            queried.insert(name);
        }
    }
    assert!(queried.len() >= 8, "{queried:?}");
    let operations = std::fs::read_to_string(root.join("docs/operations.md")).unwrap();
    let documented: BTreeSet<String> = operations
        .lines()
        .filter_map(|line| line.strip_prefix("| `"))
        .filter_map(|rest| rest.split(['`', '{']).next())
        .filter(|name| name.starts_with("broker_") || name.starts_with("storage_"))
        .map(str::to_string)
        .collect();
    assert_eq!(
        documented, exported,
        "docs/operations.md's metric table and the exposition differ"
    );
}
