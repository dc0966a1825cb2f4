//! Against real etcd servers started by the `sandcron-tests` harness
//! (Debian's `etcd-server`): the two conformance suites, an outage, a
//! cluster losing its leader, and the client-side checks.

use std::net::TcpListener;

use etcd_client::Client;
use futures::StreamExt;
use jiff::{SignedDuration, Timestamp};
use sandcron_tests::etcd::{EtcdCluster, EtcdServer};
use sandcron_tests::wait_for;
use tokio::time::{Instant, timeout};

use super::*;
use crate::coord::{ClaimOutcome, ClaimRequest, Coordinator, MAX_VALUE_BYTES, WatchEvent};
use crate::ids::JobName;
use crate::testkit::{coordinator_suite, kv_suite};

const PROMPT: Duration = Duration::from_secs(10);

fn config(endpoints: Vec<String>) -> EtcdConfig {
    EtcdConfig {
        dial_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(5),
        ..EtcdConfig::new(endpoints)
    }
}

async fn connect(endpoints: Vec<String>) -> Arc<EtcdStore> {
    match EtcdStore::connect(&config(endpoints)).await {
        Ok(store) => store,
        Err(error) => panic!("cannot connect to etcd: {error}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_primitive_conformance_suite_passes_against_etcd() {
    let server = EtcdServer::start();
    let store = connect(vec![server.endpoint()]).await;
    kv_suite::run_all(store, "/conformance/").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sandcron_suite_passes_against_etcd() {
    let server = EtcdServer::start();
    let store = connect(vec![server.endpoint()]).await;
    coordinator_suite::run_all(store, "/sandcron/").await;
}

/// While etcd is down every call fails promptly with `Unavailable` and a
/// watch reports the outage and ends; once etcd is back the same client
/// works again and a watch from the last revision seen resumes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_is_unavailable_and_the_client_recovers_after_it() {
    let mut server = EtcdServer::start();
    let store = connect(vec![server.endpoint()]).await;
    let written = store.put("/outage/a", b"1".to_vec(), None).await.unwrap();
    let lease = store.lease_grant(Duration::from_secs(60)).await.unwrap();
    let mut watch = store.watch("/outage/", written - 1).await.unwrap();
    let batch = timeout(PROMPT, watch.next()).await.expect("the first event");
    let seen = match batch {
        Some(Ok(batch)) => batch.last().map(WatchEvent::revision).unwrap(),
        other => panic!("expected the put of /outage/a, got {other:?}"),
    };
    assert_eq!(seen, written);

    server.stop();
    match timeout(PROMPT, watch.next()).await {
        Ok(Some(Err(StoreError::Unavailable(_)))) => {}
        other => panic!("a watch must report the outage as Unavailable, got {other:?}"),
    }
    match timeout(PROMPT, watch.next()).await {
        Ok(None) => {}
        other => panic!("a watch must end after its error, got {other:?}"),
    }
    let started = Instant::now();
    let unavailable = |what: &str, result: Result<(), StoreError>| match result {
        Err(StoreError::Unavailable(_)) => {}
        other => panic!("{what} during an outage must be Unavailable, got {other:?}"),
    };
    unavailable("get", store.get("/outage/a").await.map(drop));
    unavailable("range", store.range("/outage/").await.map(drop));
    unavailable("put", store.put("/outage/b", b"x".to_vec(), None).await.map(drop));
    unavailable("delete", store.delete("/outage/a").await.map(drop));
    unavailable(
        "txn",
        store
            .txn(Txn::new().and_then([TxnOp::put("/outage/b", "x")]))
            .await
            .map(drop),
    );
    unavailable("watch", store.watch("/outage/", seen).await.map(drop));
    unavailable("lease grant", store.lease_grant(Duration::from_secs(5)).await.map(drop));
    unavailable("keep-alive", store.lease_keep_alive(lease).await);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "with nothing listening, calls must fail at once, not wait for their timeout ({:?})",
        started.elapsed()
    );

    server.start_again();
    let rewritten = wait_for("a put once etcd is back", PROMPT, || async {
        store.put("/outage/b", b"2".to_vec(), None).await.ok()
    })
    .await;
    assert_eq!(store.get("/outage/a").await.unwrap().unwrap().value, &b"1"[..]);
    store.lease_keep_alive(lease).await.unwrap();
    let mut resumed = store.watch("/outage/", seen).await.unwrap();
    match timeout(PROMPT, resumed.next()).await {
        Ok(Some(Ok(batch))) => {
            assert_eq!(batch.len(), 1, "{batch:?}");
            assert_eq!((batch[0].key(), batch[0].revision()), ("/outage/b", rewritten));
        }
        other => panic!("a watch from the last revision seen must resume, got {other:?}"),
    }

    // A crash loses nothing etcd acknowledged.
    server.kill9();
    server.start_again();
    let kv = wait_for("a read after a crash", PROMPT, || async {
        store.get("/outage/b").await.ok()
    })
    .await;
    assert_eq!(
        kv.map(|kv| (kv.value, kv.mod_revision)),
        Some((bytes::Bytes::from_static(b"2"), rewritten))
    );
}

/// With the leader of a 3-member cluster killed, the client steers
/// around the dead endpoint (its first) and puts, claims, keep-alives and
/// watches succeed through the others; the member later catches up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_keeps_serving_when_its_leader_dies() {
    let mut cluster = EtcdCluster::start(3);
    let leader = cluster.leader();
    let mut endpoints = cluster.endpoints();
    // The preferred endpoint is the first: make it the leader's.
    endpoints.swap(0, leader);
    let store = connect(endpoints).await;
    let coord = Coordinator::new(store.clone(), "/cluster/");
    let lease = store.lease_grant(Duration::from_secs(30)).await.unwrap();
    let job = JobName::new("survivor").unwrap();
    let tick = Timestamp::now();
    let claim = |seen_revision, tick| ClaimRequest {
        job: job.clone(),
        tick,
        seen_revision,
        run: None,
        lease,
        skipped: false,
        catchup: Vec::new(),
        plan: None,
    };
    let ClaimOutcome::Won { fence } = coord.claim(&[claim(0, tick)]).await.unwrap()[0] else {
        panic!("the first claim must win");
    };
    let before = store.put("/cluster/data/0", b"0".to_vec(), None).await.unwrap();

    cluster.kill_member(leader);
    let killed = Instant::now();
    // Writes sent while the others elect a new leader may fail, always
    // as Unavailable; one succeeds as soon as there is a leader.
    wait_for("a put after the leader died", Duration::from_secs(30), || async {
        match store.put("/cluster/data/1", b"1".to_vec(), None).await {
            Ok(revision) => Some(revision),
            Err(StoreError::Unavailable(_)) => None,
            Err(other) => panic!("a put during an election must be Unavailable, got {other:?}"),
        }
    })
    .await;
    let recovered_after = killed.elapsed();
    assert_ne!(cluster.leader(), leader, "a new leader must be elected");

    let mut watch = store.watch("/cluster/data/", before).await.unwrap();
    let mut last = 0;
    for i in 2..22 {
        last = store
            .put(&format!("/cluster/data/{i}"), i.to_string().into_bytes(), Some(lease))
            .await
            .unwrap_or_else(|error| panic!("put {i} with the leader dead: {error}"));
    }
    let mut seen_revision = fence;
    for second in 1..=10 {
        let tick = tick + SignedDuration::from_secs(second);
        match coord.claim(&[claim(seen_revision, tick)]).await.unwrap()[0] {
            ClaimOutcome::Won { fence } => seen_revision = fence,
            ClaimOutcome::Lost => panic!("claim {second} lost with nobody else claiming"),
        }
    }
    store.lease_keep_alive(lease).await.unwrap();
    let mut watched = Vec::new();
    while watched.last().map(WatchEvent::revision) != Some(last) {
        match timeout(PROMPT, watch.next()).await {
            Ok(Some(Ok(batch))) => watched.extend(batch),
            other => panic!("the watch stopped after {} events: {other:?}", watched.len()),
        }
    }
    assert_eq!(watched.len(), 21, "the put during the election and the 20 after it");

    cluster.restart_member(leader);
    let member = connect(vec![cluster.endpoint(leader)]).await;
    let kv = wait_for("the restarted member to catch up", PROMPT, || async {
        member.get("/cluster/data/21").await.ok().flatten()
    })
    .await;
    assert_eq!((kv.mod_revision, kv.lease), (last, Some(lease)));
    eprintln!("writes resumed {recovered_after:?} after the leader was killed");
}

/// Values over `MAX_VALUE_BYTES` are refused by the client: with etcd
/// down, a request that reached the network would be `Unavailable`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_values_are_refused_before_reaching_etcd() {
    let mut server = EtcdServer::start();
    let store = connect(vec![server.endpoint()]).await;
    server.stop();
    let huge = vec![7u8; MAX_VALUE_BYTES + 1];
    match store.put("/big", huge.clone(), None).await {
        Err(StoreError::Invalid(message)) => assert!(message.contains("/big"), "{message}"),
        other => panic!("an oversized put must be Invalid, got {other:?}"),
    }
    let txn = Txn::new()
        .and_then([TxnOp::put("/small", "v")])
        .or_else([TxnOp::put("/big", huge)]);
    match store.txn(txn).await {
        Err(StoreError::Invalid(_)) => {}
        other => panic!("a txn with an oversized value in either branch must be Invalid, got {other:?}"),
    }
    match store.put("/big", vec![7u8; MAX_VALUE_BYTES], None).await {
        Err(StoreError::Unavailable(_)) => {}
        other => panic!("a value at the limit is sent (and finds etcd down), got {other:?}"),
    }
}

/// With etcd's access control on, the client authenticates, is refused
/// with wrong credentials, and re-authenticates by itself after etcd
/// restarts (which forgets its tokens).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_authenticate_and_survive_a_restart() {
    let mut server = EtcdServer::start();
    let mut admin = Client::connect([server.endpoint()], None).await.unwrap();
    admin.user_add("root", "root-secret", None).await.unwrap();
    admin.user_grant_role("root", "root").await.unwrap();
    admin.auth_enable().await.unwrap();
    let with = |user: &str, password: &str| EtcdConfig {
        username: Some(user.to_owned()),
        password: Some(password.to_owned()),
        ..config(vec![server.endpoint()])
    };
    match EtcdStore::connect(&with("root", "wrong")).await {
        Err(StoreError::Other(message)) => assert!(message.contains("authentication failed"), "{message}"),
        other => panic!("wrong credentials must be refused, got {other:?}"),
    }
    let store = EtcdStore::connect(&with("root", "root-secret")).await.unwrap();
    let written = store.put("/auth/a", b"1".to_vec(), None).await.unwrap();

    server.stop();
    server.start_again();
    let kv = wait_for("a read with credentials after a restart", PROMPT, || async {
        store.get("/auth/a").await.ok().flatten()
    })
    .await;
    assert_eq!(kv.mod_revision, written);
    let mut watch = store.watch("/auth/", written - 1).await.unwrap();
    match timeout(PROMPT, watch.next()).await {
        Ok(Some(Ok(batch))) => assert_eq!(batch[0].revision(), written),
        other => panic!("a watch with credentials must work, got {other:?}"),
    }
}

/// Over TLS with a client certificate (the server requires one) every
/// kind of call works; without the certificate the server refuses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_client_certificate_works() {
    let server = EtcdServer::start_tls();
    let files = server.tls().unwrap();
    let read = |path: &std::path::Path| std::fs::read(path).unwrap();
    let tls = EtcdTls {
        ca_pem: read(&files.ca),
        client_cert_pem: Some(read(&files.client_cert)),
        client_key_pem: Some(read(&files.client_key)),
        server_name: None,
    };
    let secure = |tls: EtcdTls| EtcdConfig {
        tls: Some(tls),
        ..config(vec![server.endpoint()])
    };
    let store = EtcdStore::connect(&secure(tls.clone())).await.unwrap();
    let lease = store.lease_grant(Duration::from_secs(10)).await.unwrap();
    let written = store.put("/tls/a", b"1".to_vec(), Some(lease)).await.unwrap();
    store.lease_keep_alive(lease).await.unwrap();
    let mut watch = store.watch("/tls/", written - 1).await.unwrap();
    match timeout(PROMPT, watch.next()).await {
        Ok(Some(Ok(batch))) => assert_eq!(batch[0].revision(), written),
        other => panic!("a watch over TLS must work, got {other:?}"),
    }
    let anonymous = EtcdTls {
        client_cert_pem: None,
        client_key_pem: None,
        ..tls
    };
    match EtcdStore::connect(&secure(anonymous)).await {
        Err(StoreError::Unavailable(_) | StoreError::Other(_)) => {}
        other => panic!("a client without a certificate must be refused, got {other:?}"),
    }
}

#[tokio::test]
async fn connecting_with_no_member_listening_is_unavailable() {
    // A port that was free a moment ago: nothing listens on it.
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let started = Instant::now();
    match EtcdStore::connect(&config(vec![format!("http://127.0.0.1:{port}")])).await {
        Err(StoreError::Unavailable(message)) => assert!(message.contains(&port.to_string()), "{message}"),
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "a refused connection fails at once"
    );
}

#[tokio::test]
async fn configurations_etcd_cannot_be_reached_with_are_refused() {
    let plain = "http://127.0.0.1:2379".to_owned();
    let tls = EtcdTls {
        ca_pem: Vec::new(),
        client_cert_pem: None,
        client_key_pem: None,
        server_name: None,
    };
    let cases = [
        ("no endpoints", config(Vec::new())),
        ("no scheme", config(vec!["127.0.0.1:2379".to_owned()])),
        (
            "https without TLS settings",
            config(vec!["https://127.0.0.1:2379".to_owned()]),
        ),
        (
            "TLS settings on http",
            EtcdConfig {
                tls: Some(tls.clone()),
                ..config(vec![plain.clone()])
            },
        ),
        (
            "a certificate without its key",
            EtcdConfig {
                tls: Some(EtcdTls {
                    client_cert_pem: Some(Vec::new()),
                    ..tls
                }),
                ..config(vec!["https://127.0.0.1:2379".to_owned()])
            },
        ),
        (
            "a user without a password",
            EtcdConfig {
                username: Some("root".to_owned()),
                ..config(vec![plain])
            },
        ),
    ];
    for (what, config) in cases {
        match EtcdStore::connect(&config).await {
            Err(StoreError::Other(_)) => {}
            other => panic!("{what}: expected a configuration error, got {other:?}"),
        }
    }
}

#[test]
fn the_password_stays_out_of_debug_output() {
    let config = EtcdConfig {
        username: Some("sandcron".into()),
        password: Some("hunter2".into()),
        ..EtcdConfig::new(["http://127.0.0.1:2379"])
    };
    let shown = format!("{config:?}");
    assert!(shown.contains("sandcron") && !shown.contains("hunter2"), "{shown}");
}
