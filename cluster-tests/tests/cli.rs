//! The `broker` command line against a real 3-process cluster: topic administration (and its
//! errors), keyed produce landing where Kafka's partitioner would put it, consume, status, and
//! consumer groups (consume as a member, list, describe with lag, reset, delete, expiry).

use client::partitioner::partition_for_key;
use cluster_tests::{broker_binary, start_cluster};
use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn cli(bootstrap: &str, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(broker_binary())
        .args(args)
        .env("BROKER_BOOTSTRAP", bootstrap)
        .env("RUST_LOG", "error")
        .env_remove("RUST_BACKTRACE")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running the broker CLI");
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn topic_admin_keyed_produce_and_consume_through_the_cli() {
    let root = tempfile::tempdir().unwrap();
    let brokers = start_cluster(root.path(), 3);
    let bootstrap = brokers.iter().map(|b| b.address.clone()).collect::<Vec<_>>().join(",");

    // The cluster needs a moment to elect a controller and register brokers: retry creation
    // until it stops failing for that reason.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let created = cli(&bootstrap, &["topic", "create", "clicks", "--partitions", "4"], None);
        if created.status.success() {
            assert!(stdout(&created).contains("created topic clicks"));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "create never succeeded: {}",
            String::from_utf8_lossy(&created.stderr)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let duplicate = cli(&bootstrap, &["topic", "create", "clicks"], None);
    assert!(!duplicate.status.success());
    assert!(String::from_utf8_lossy(&duplicate.stderr).contains("TopicAlreadyExists"));
    let too_wide = cli(
        &bootstrap,
        &["topic", "create", "wide", "--replication-factor", "5"],
        None,
    );
    assert!(String::from_utf8_lossy(&too_wide.stderr).contains("InvalidReplicationFactor"));
    assert!(stdout(&cli(&bootstrap, &["topic", "list"], None)).contains("clicks\tpartitions=4\treplication_factor=3"));

    // Scriptable output: one JSON document with stable field names; exit 1 on failure, 2 on
    // bad usage (docs/operations.md).
    assert_eq!(duplicate.status.code(), Some(1));
    assert_eq!(cli(&bootstrap, &["topic", "create"], None).status.code(), Some(2));
    let listed: serde_json::Value =
        serde_json::from_str(&stdout(&cli(&bootstrap, &["topic", "list", "--output", "json"], None))).unwrap();
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["name"] == "clicks" && t["partitions"] == 4 && t["replication_factor"] == 3),
        "{listed}"
    );
    // Leaders are elected a moment after creation: describe until every partition has one.
    let deadline = Instant::now() + Duration::from_secs(30);
    let described = loop {
        let described: serde_json::Value = serde_json::from_str(&stdout(&cli(
            &bootstrap,
            &["--output", "json", "topic", "describe", "clicks"],
            None,
        )))
        .unwrap();
        if described[0]["partitions"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["leader"].is_u64())
        {
            break described;
        }
        assert!(Instant::now() < deadline, "leaders never elected: {described}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let topic = &described[0];
    assert_eq!(topic["name"], "clicks");
    assert_eq!(topic["replication_factor"], 3);
    assert_eq!(topic["partitions"].as_array().unwrap().len(), 4, "{topic}");
    for partition in topic["partitions"].as_array().unwrap() {
        assert_eq!(partition["replicas"].as_array().unwrap().len(), 3, "{partition}");
        assert!(partition["quiet"].is_boolean(), "{partition}");
        assert!(partition["high_watermark"].is_u64(), "{partition}");
        assert!(partition["log_size_bytes"].is_u64(), "{partition}");
    }
    let failed = cli(&bootstrap, &["topic", "create", "clicks", "--output", "json"], None);
    assert_eq!(failed.status.code(), Some(1));
    let outcome: serde_json::Value = serde_json::from_str(&stdout(&failed)).unwrap();
    assert_eq!(outcome[0]["topic"], "clicks");
    assert_eq!(outcome[0]["ok"], false);
    assert!(
        outcome[0]["error"].as_str().unwrap().contains("TopicAlreadyExists"),
        "{outcome}"
    );

    // Keyed lines go to murmur2(key) % 4, like a Kafka producer would send them.
    let keys = ["alice", "bob", "carol", "dave", "erin", "frank"];
    let input: String = keys.iter().map(|k| format!("{k}\tclicked-{k}\n")).collect();
    let produced = cli(&bootstrap, &["produce", "clicks"], Some(&input));
    assert!(
        produced.status.success(),
        "{}",
        String::from_utf8_lossy(&produced.stderr)
    );

    let mut seen = 0;
    for partition in 0..4u32 {
        let expected: Vec<String> = keys
            .iter()
            .filter(|k| partition_for_key(k.as_bytes(), 4) == partition)
            .map(|k| format!("{k}\tclicked-{k}"))
            .collect();
        if expected.is_empty() {
            continue;
        }
        let max = expected.len().to_string();
        let consumed = cli(
            &bootstrap,
            &[
                "consume",
                "clicks",
                "--partition",
                &partition.to_string(),
                "--from-beginning",
                "--max",
                &max,
            ],
            None,
        );
        assert!(
            consumed.status.success(),
            "{}",
            String::from_utf8_lossy(&consumed.stderr)
        );
        let lines: Vec<String> = stdout(&consumed).lines().map(str::to_string).collect();
        assert_eq!(lines, expected, "partition {partition}");
        seen += lines.len();
    }
    assert_eq!(seen, keys.len());

    // Without --partition, consume reads every partition; --print-offsets and --output json
    // say where each record is.
    let all = cli(
        &bootstrap,
        &["consume", "clicks", "--from-beginning", "--max", "6", "--print-offsets"],
        None,
    );
    assert!(all.status.success(), "{}", String::from_utf8_lossy(&all.stderr));
    let mut printed: Vec<(u32, String)> = stdout(&all)
        .lines()
        .map(|line| {
            let fields: Vec<&str> = line.split('\t').collect();
            assert_eq!(fields.len(), 4, "partition, offset, key, value: {line}");
            fields[1].parse::<u64>().expect("an offset");
            (
                fields[0].parse().expect("a partition"),
                format!("{}\t{}", fields[2], fields[3]),
            )
        })
        .collect();
    printed.sort();
    let mut expected: Vec<(u32, String)> = keys
        .iter()
        .map(|k| (partition_for_key(k.as_bytes(), 4), format!("{k}\tclicked-{k}")))
        .collect();
    expected.sort();
    assert_eq!(printed, expected);
    let json = cli(
        &bootstrap,
        &[
            "consume",
            "clicks",
            "--from-beginning",
            "--max",
            "6",
            "--output",
            "json",
        ],
        None,
    );
    let records: Vec<serde_json::Value> = stdout(&json)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(records.len(), 6);
    for record in &records {
        let key = record["key"].as_str().unwrap();
        assert_eq!(record["partition"], partition_for_key(key.as_bytes(), 4), "{record}");
        assert_eq!(record["value"], format!("clicked-{key}"));
        assert!(record["offset"].is_u64() && record["timestamp"].is_i64(), "{record}");
    }
    let offset_alone = cli(&bootstrap, &["consume", "clicks", "--offset", "3"], None);
    assert_eq!(offset_alone.status.code(), Some(2), "--offset needs --partition");
    let unknown = cli(&bootstrap, &["consume", "no-such-topic", "--max", "1"], None);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&unknown.stderr).contains("no-such-topic"),
        "{}",
        String::from_utf8_lossy(&unknown.stderr)
    );
    let nothing_to_alter = cli(&bootstrap, &["topic", "alter-config", "clicks"], None);
    assert_eq!(
        nothing_to_alter.status.code(),
        Some(2),
        "alter-config needs --set or --reset"
    );

    let status: serde_json::Value = serde_json::from_str(&stdout(&cli(
        &bootstrap,
        &["cluster", "status", "--output", "json"],
        None,
    )))
    .unwrap();
    assert!(status["controller"].is_u64(), "{status}");
    assert_eq!(status["brokers"].as_array().unwrap().len(), 3, "{status}");
    assert!(
        status["topics"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["name"] == "clicks" && t["under_replicated_partitions"].is_u64()),
        "{status}"
    );
    let status = stdout(&cli(&bootstrap, &["cluster", "status"], None));
    assert!(status.contains("controller: "), "{status}");
    assert_eq!(status.matches("broker ").count(), 3, "{status}");
    assert!(status.contains("topic clicks"));

    // Partition 0's leadership moves to broker 2 (or stays there); a broker without a replica
    // is refused with the reason.
    let moved = cli(
        &bootstrap,
        &["topic", "move-leader", "clicks", "--partition", "0", "--to", "2"],
        None,
    );
    assert!(moved.status.success(), "{}", String::from_utf8_lossy(&moved.stderr));
    assert_eq!(stdout(&moved).trim(), "clicks/0 is led by broker 2");
    let refused = cli(
        &bootstrap,
        &["topic", "move-leader", "clicks", "--partition", "0", "--to", "9"],
        None,
    );
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("holds no replica"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );

    // balance-leaders moves leadership back to each partition's preferred replica (the first
    // of its replicas): partition 0 was just moved away from it unless broker 2 was preferred.
    let balanced = cli(&bootstrap, &["cluster", "balance-leaders", "--output", "json"], None);
    assert!(
        balanced.status.success(),
        "{}",
        String::from_utf8_lossy(&balanced.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(&stdout(&balanced)).unwrap();
    assert_eq!(report["failed"].as_array().unwrap().len(), 0, "{report}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        // (The preferred replica may still be catching up into the ISR: balance again.)
        assert!(cli(&bootstrap, &["cluster", "balance-leaders"], None).status.success());
        let listed = cli(&bootstrap, &["cluster", "partitions", "--output", "json"], None);
        let rows: serde_json::Value = serde_json::from_str(&stdout(&listed)).unwrap();
        let clicks: Vec<&serde_json::Value> = rows
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["topic"] == "clicks")
            .collect();
        assert_eq!(clicks.len(), 4, "{rows}");
        if clicks.iter().all(|r| r["leader"] == r["replicas"][0]) {
            break;
        }
        assert!(Instant::now() < deadline, "leaders never all preferred: {rows}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let text = stdout(&cli(&bootstrap, &["cluster", "partitions"], None));
    assert!(text.lines().any(|l| l.starts_with("clicks")), "{text}");

    // Topics grow, never shrink.
    let shrink = cli(
        &bootstrap,
        &["topic", "add-partitions", "clicks", "--partitions", "3"],
        None,
    );
    assert_eq!(shrink.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&shrink.stderr).contains("can only grow"),
        "{}",
        String::from_utf8_lossy(&shrink.stderr)
    );
    let grown = cli(
        &bootstrap,
        &["topic", "add-partitions", "clicks", "--partitions", "6"],
        None,
    );
    assert!(grown.status.success(), "{}", String::from_utf8_lossy(&grown.stderr));
    let listed = stdout(&cli(&bootstrap, &["topic", "list"], None));
    assert!(listed.contains("clicks\tpartitions=6"), "{listed}");

    assert!(cli(&bootstrap, &["topic", "delete", "clicks"], None).status.success());
    let after = stdout(&cli(&bootstrap, &["topic", "list"], None));
    assert!(!after.contains("clicks"), "{after}");
}

#[test]
fn shell_completions_name_the_subcommands() {
    for shell in ["bash", "zsh", "fish"] {
        let output = cli("127.0.0.1:1", &["completions", shell], None);
        assert!(
            output.status.success(),
            "{shell}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let script = stdout(&output);
        for word in ["topic", "cluster", "consume", "perf"] {
            assert!(script.contains(word), "{shell} completion lacks {word}");
        }
    }
    assert_eq!(
        cli("127.0.0.1:1", &["completions", "tcsh"], None).status.code(),
        Some(2)
    );
}

/// `broker group …` waits on a condition through repeated calls: the group's view as JSON.
fn describe_group(bootstrap: &str, group: &str) -> Option<serde_json::Value> {
    let described = cli(bootstrap, &["--output", "json", "group", "describe", group], None);
    described
        .status
        .success()
        .then(|| serde_json::from_str(&stdout(&described)).unwrap())
}

/// Committed offset and lag of each partition of `view` (a `group describe` JSON).
fn committed_and_lag(view: &serde_json::Value) -> Vec<(u64, u64, u64)> {
    let mut partitions: Vec<(u64, u64, u64)> = view["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["partition"].as_u64().unwrap(),
                p["committed"].as_u64().unwrap_or(0),
                p["lag"].as_u64().unwrap_or(u64::MAX),
            )
        })
        .collect();
    partitions.sort();
    partitions
}

fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "{what} within {limit:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn consumer_groups_through_the_cli_consume_list_describe_reset_delete_and_expire() {
    let root = tempfile::tempdir().unwrap();
    // Offsets of a group empty for 20 s expire (checked every quarter of that).
    let retention = Duration::from_secs(20);
    let brokers = cluster_tests::start_cluster_with(
        root.path(),
        3,
        &["--offsets-topic-partitions", "3", "--offsets-retention-ms", "20000"],
    );
    let bootstrap = brokers.iter().map(|b| b.address.clone()).collect::<Vec<_>>().join(",");
    wait_for("the topic created", Duration::from_secs(60), || {
        cli(&bootstrap, &["topic", "create", "orders", "--partitions", "3"], None)
            .status
            .success()
    });
    let lines: String = (0..9).map(|i| format!("key-{i}\torder-{i}\n")).collect();
    let produced = cli(&bootstrap, &["produce", "orders"], Some(&lines));
    assert!(
        produced.status.success(),
        "{}",
        String::from_utf8_lossy(&produced.stderr)
    );

    // A group that reads and leaves at once: its offsets expire once it has been empty for the
    // retention. (Started first, so its clock runs while the rest of the test does.)
    let read = |group: &str| {
        cli(
            &bootstrap,
            &["consume", "orders", "--group", group, "--from-beginning", "--max", "9"],
            None,
        )
    };
    let forgotten = read("forgotten");
    assert!(
        forgotten.status.success(),
        "{}",
        String::from_utf8_lossy(&forgotten.stderr)
    );
    let expiring_since = Instant::now();
    assert!(
        describe_group(&bootstrap, "forgotten").is_some(),
        "kept while within its retention"
    );

    // `consume --group` reads every partition from the beginning and commits what it printed.
    let consumed = read("billing");
    assert!(
        consumed.status.success(),
        "{}",
        String::from_utf8_lossy(&consumed.stderr)
    );
    let mut printed: Vec<String> = stdout(&consumed).lines().map(str::to_string).collect();
    printed.sort();
    let mut expected: Vec<String> = lines.lines().map(str::to_string).collect();
    expected.sort();
    assert_eq!(printed, expected);

    let listed: serde_json::Value =
        serde_json::from_str(&stdout(&cli(&bootstrap, &["--output", "json", "group", "list"], None))).unwrap();
    let billing = listed["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["group"] == "billing")
        .unwrap_or_else(|| panic!("billing is listed: {listed}"));
    assert_eq!(billing["members"], 0, "{billing}");
    assert!(stdout(&cli(&bootstrap, &["group", "list"], None)).contains("billing"));

    // Describe: every record committed, no lag; three more records make a lag of three.
    let view = describe_group(&bootstrap, "billing").expect("billing described");
    let at_end = committed_and_lag(&view);
    assert_eq!(at_end.len(), 3, "{view}");
    assert_eq!(
        at_end.iter().map(|(_, committed, _)| committed).sum::<u64>(),
        9,
        "{view}"
    );
    assert!(at_end.iter().all(|(_, _, lag)| *lag == 0), "{view}");
    let more: String = (9..12).map(|i| format!("key-{i}\torder-{i}\n")).collect();
    assert!(cli(&bootstrap, &["produce", "orders"], Some(&more)).status.success());
    let view = describe_group(&bootstrap, "billing").unwrap();
    assert_eq!(
        committed_and_lag(&view).iter().map(|(_, _, lag)| lag).sum::<u64>(),
        3,
        "{view}"
    );
    assert!(stdout(&cli(&bootstrap, &["group", "describe", "billing"], None)).contains("lag"));

    // Resets of the empty group: to the start, to an offset (clamped to each log), to the end.
    let reset = |to: &[&str]| {
        let mut args = vec!["group", "reset-offsets", "billing", "--topic", "orders"];
        args.extend_from_slice(to);
        cli(&bootstrap, &args, None)
    };
    let committed = || -> Vec<u64> {
        committed_and_lag(&describe_group(&bootstrap, "billing").unwrap())
            .into_iter()
            .map(|(_, committed, _)| committed)
            .collect()
    };
    let ends: Vec<u64> = committed_and_lag(&describe_group(&bootstrap, "billing").unwrap())
        .into_iter()
        .map(|(_, committed, lag)| committed + lag)
        .collect();
    let earliest = reset(&["--to-earliest"]);
    assert!(
        earliest.status.success(),
        "{}",
        String::from_utf8_lossy(&earliest.stderr)
    );
    assert_eq!(committed(), vec![0, 0, 0]);
    assert!(reset(&["--to-offset", "2"]).status.success());
    assert_eq!(committed(), ends.iter().map(|end| (*end).min(2)).collect::<Vec<_>>());
    assert!(reset(&["--to-latest"]).status.success());
    assert_eq!(committed(), ends);
    assert!(reset(&["--to-datetime", "2000-01-01T00:00:00Z"]).status.success());
    assert_eq!(committed(), vec![0, 0, 0], "every record is newer than 2000");
    assert_eq!(reset(&[]).status.code(), Some(2), "a reset needs a target");

    // With a member, reset and delete are refused and say why; nothing changes.
    let mut member = Command::new(broker_binary())
        .args(["consume", "orders", "--group", "billing"])
        .env("BROKER_BOOTSTRAP", &bootstrap)
        .env("RUST_LOG", "error")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("the member joined", Duration::from_secs(30), || {
        describe_group(&bootstrap, "billing").is_some_and(|v| !v["members"].as_array().unwrap().is_empty())
    });
    let refused = reset(&["--to-earliest"]);
    assert_eq!(refused.status.code(), Some(1));
    let reason = String::from_utf8_lossy(&refused.stderr);
    assert!(
        reason.contains("NON_EMPTY_GROUP") && reason.contains("stop its consumers"),
        "{reason}"
    );
    let refused = cli(&bootstrap, &["group", "delete", "billing"], None);
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("NON_EMPTY_GROUP"));

    // Ctrl-C: the member commits, leaves at once (no session timeout to wait out), and the
    // delete goes through; the group is gone.
    let interrupted = Command::new("kill")
        .args(["-INT", &member.id().to_string()])
        .status()
        .unwrap();
    assert!(interrupted.success());
    assert!(member.wait().unwrap().success());
    wait_for("the member left", Duration::from_secs(10), || {
        describe_group(&bootstrap, "billing").is_some_and(|v| v["members"].as_array().unwrap().is_empty())
    });
    let deleted = cli(&bootstrap, &["group", "delete", "billing"], None);
    assert!(deleted.status.success(), "{}", String::from_utf8_lossy(&deleted.stderr));
    let gone = cli(&bootstrap, &["group", "describe", "billing"], None);
    assert_eq!(gone.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&gone.stderr).contains("GROUP_ID_NOT_FOUND"));

    // The group left empty at the start expires after its retention, not before (the
    // broker's clock started a moment before ours: a second of slack).
    wait_for("the empty group's offsets expired", retention * 2, || {
        describe_group(&bootstrap, "forgotten").is_none()
    });
    assert!(
        expiring_since.elapsed() + Duration::from_secs(1) >= retention,
        "expired after {:?}",
        expiring_since.elapsed()
    );
}
