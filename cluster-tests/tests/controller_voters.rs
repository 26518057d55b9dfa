//! Changing the controller's voters online (`broker cluster controller-voters`, issue 14): the
//! quorum moves off brokers, and the controller then survives losing brokers it could not have
//! survived before; a former voter restarted follows the metadata and forms no quorum of its
//! own; bad requests change nothing.

use client::{Admin, ErrorCode, NewTopic};
use cluster_tests::{connect_when_ready, start_cluster_with};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The controller voters as the broker at `address` itself has them.
async fn voters_on(address: &str) -> Option<Vec<u64>> {
    let mut client = proto::v1::broker_client::BrokerClient::connect(format!("http://{address}"))
        .await
        .ok()?;
    let metadata = client
        .metadata(proto::v1::MetadataRequest { topics: Vec::new() })
        .await
        .ok()?;
    Some(metadata.into_inner().controller_voters)
}

/// Waits until the broker at `address` has `voters` as the controller's voters.
async fn wait_for_voters(address: &str, voters: &[u64]) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let seen = voters_on(address).await;
        if seen.as_deref() == Some(voters) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{address} has voters {seen:?}, not {voters:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controller_quorum_moves_online_and_survives_losing_its_old_voters() {
    let root = tempfile::tempdir().unwrap();
    let mut brokers = start_cluster_with(root.path(), 4, &[]);
    let client = connect_when_ready(&brokers, HashMap::new()).await;
    let admin = Admin::new(Arc::clone(&client));
    assert_eq!(admin.describe_cluster().await.unwrap().controller_voters, [1, 2, 3]);

    // Bad requests: a clear error each, and nothing changes.
    let unknown = admin.set_controller_voters(vec![2, 3, 9]).await.unwrap_err();
    assert_eq!(unknown.code(), Some(ErrorCode::UnknownBroker), "{unknown}");
    let twice = admin.set_controller_voters(vec![2, 2, 3]).await.unwrap_err();
    assert_eq!(twice.code(), Some(ErrorCode::InvalidRequest), "{twice}");
    let none = admin.set_controller_voters(Vec::new()).await.unwrap_err();
    assert_eq!(none.code(), Some(ErrorCode::InvalidRequest), "{none}");
    assert_eq!(admin.describe_cluster().await.unwrap().controller_voters, [1, 2, 3]);

    // Through the CLI, as an operator would: the quorum moves off broker 1 (its leader, very
    // likely: the lowest id forms the quorum), onto broker 4.
    let stdout = cluster_tests::run_cli_ok(&brokers[0].address, &["cluster", "controller-voters", "2,3,4"]);
    assert!(stdout.contains("controller voters: 2,3,4"), "{stdout}");
    for broker in &brokers {
        wait_for_voters(&broker.address, &[2, 3, 4]).await;
    }

    // Brokers 1 and 2 die: with the old quorum {1, 2, 3} the controller would be gone; with
    // {2, 3, 4} two of three voters remain, and a command commits.
    for id in [1, 2] {
        brokers.iter_mut().find(|b| b.id == id).unwrap().kill9();
    }
    let survivors = Arc::new(client::Cluster::new(
        vec![brokers[2].address.clone(), brokers[3].address.clone()],
        client::RetryPolicy::default(),
    ));
    let created = Admin::new(survivors)
        .create_topics(vec![NewTopic::new("after-the-change", 1, 2)])
        .await
        .unwrap();
    assert!(created[0].is_ok(), "{created:?}");

    // Broker 1 comes back: no longer a voter, it forms no quorum of its own (it is still the
    // lowest id) but follows the controller as a learner and sees what was decided without it.
    brokers.iter_mut().find(|b| b.id == 1).unwrap().restart();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let topic = cluster_tests::describe_on(&brokers[0].address, "after-the-change").await;
        if topic.is_some_and(|t| t.error == ErrorCode::None as i32) {
            break;
        }
        assert!(Instant::now() < deadline, "broker 1 never caught up with the metadata");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    wait_for_voters(&brokers[0].address, &[2, 3, 4]).await;
}
