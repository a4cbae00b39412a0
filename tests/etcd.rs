//! The fleet's etcd client against a real etcd on 127.0.0.1: KV, transactions with compares,
//! leases (renewal, expiry, revocation), a watch on a prefix, and a watch through a member of a
//! three-member cluster that lost its leader.

mod etcd_support;
mod prometheus_support;

use std::time::Duration;

use prescale::fleet::FleetError;
use prescale::fleet::etcd::{Compare, Etcd, Op, WatchEvent, prefix_end};

const TIMEOUT: Duration = Duration::from_secs(5);

async fn connect(etcd: &etcd_support::LocalEtcd) -> Etcd {
    Etcd::connect(std::slice::from_ref(&etcd.url), TIMEOUT)
        .await
        .expect("etcd answers")
}

#[tokio::test]
async fn keys_are_put_read_by_prefix_and_deleted() {
    if etcd_support::missing() {
        return;
    }
    let etcd = etcd_support::LocalEtcd::start();
    let client = connect(&etcd).await;
    let first = client.put("/t/a", b"1", 0).await.unwrap();
    let second = client.put("/t/b", b"2", 0).await.unwrap();
    client.put("/u/c", b"3", 0).await.unwrap();
    assert!(second > first);
    let (entries, revision) = client.get_prefix("/t/").await.unwrap();
    let keys: Vec<&str> = entries.iter().map(|entry| entry.key.as_str()).collect();
    assert_eq!(keys, ["/t/a", "/t/b"]);
    assert_eq!(entries[1].value, b"2");
    assert_eq!(entries[0].create_revision, first);
    assert!(revision >= second);
    assert_eq!(client.delete("/t/a").await.unwrap(), 1);
    assert_eq!(client.get("/t/a").await.unwrap(), None);
    assert_eq!(client.delete("/t/a").await.unwrap(), 0);
}

#[tokio::test]
async fn a_transaction_runs_its_success_branch_only_when_its_compares_hold() {
    if etcd_support::missing() {
        return;
    }
    let etcd = etcd_support::LocalEtcd::start();
    let client = connect(&etcd).await;
    let member = client.put("/m/one", b"x", 0).await.unwrap();
    let fenced = |revision| {
        vec![
            Compare::CreateRevisionEquals {
                key: "/m/one".to_owned(),
                revision,
            },
            Compare::CreateRevisionBelowInRange {
                key: "/m/".to_owned(),
                range_end: String::from_utf8(prefix_end("/m/")).unwrap(),
                revision: member + 1,
            },
        ]
    };
    let write = [Op::Put {
        key: "/w/plan".to_owned(),
        value: b"v1".to_vec(),
        lease: 0,
    }];
    let outcome = client.txn(&fenced(member), &write, &[]).await.unwrap();
    assert!(outcome.succeeded);
    assert_eq!(client.get("/w/plan").await.unwrap().unwrap().value, b"v1");

    // The member key re-created (a new incarnation): the old writer's compare fails.
    client.delete("/m/one").await.unwrap();
    client.put("/m/one", b"x", 0).await.unwrap();
    let stale = [Op::Put {
        key: "/w/plan".to_owned(),
        value: b"stale".to_vec(),
        lease: 0,
    }];
    let outcome = client.txn(&fenced(member), &stale, &[]).await.unwrap();
    assert!(!outcome.succeeded);
    assert_eq!(client.get("/w/plan").await.unwrap().unwrap().value, b"v1");

    // A member that joined after the writer's view also fails the range compare.
    let current = client.get("/m/one").await.unwrap().unwrap().create_revision;
    let outcome = client.txn(&fenced(current), &stale, &[]).await.unwrap();
    assert!(
        !outcome.succeeded,
        "a member created after revision {member}"
    );
    // A delete in the branch that ran tells how many keys it deleted: none once it is gone.
    let delete = [Op::Delete {
        key: "/w/plan".to_owned(),
    }];
    let mut revision = outcome.revision;
    for expected in [1, 0] {
        let compare = [Compare::ModRevisionBelow {
            key: "/w/plan".to_owned(),
            revision: revision + 1,
        }];
        let outcome = client.txn(&compare, &delete, &[]).await.unwrap();
        assert!(outcome.succeeded);
        assert_eq!(outcome.deleted, expected);
        assert_eq!(client.get("/w/plan").await.unwrap(), None);
        revision = outcome.revision;
    }
}

#[tokio::test]
async fn a_key_on_a_lease_lives_while_renewed_and_goes_with_expiry_or_revocation() {
    if etcd_support::missing() {
        return;
    }
    let etcd = etcd_support::LocalEtcd::start();
    let client = connect(&etcd).await;
    let lease = client.grant(Duration::from_secs(2)).await.unwrap();
    client.put("/l/renewed", b"x", lease).await.unwrap();
    let mut keep_alive = client.keep_alive(lease).await.unwrap();
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert!(keep_alive.renew().await.unwrap() > 0);
    }
    let entry = client.get("/l/renewed").await.unwrap().expect("renewed");
    assert_eq!(entry.lease, lease);
    client.revoke(lease).await.unwrap();
    assert_eq!(client.get("/l/renewed").await.unwrap(), None);

    let short = client.grant(Duration::from_secs(1)).await.unwrap();
    client.put("/l/expiring", b"x", short).await.unwrap();
    let mut expiring = client.keep_alive(short).await.unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(client.get("/l/expiring").await.unwrap(), None);
    assert!(matches!(
        expiring.renew().await,
        Err(FleetError::LeaseExpired { .. })
    ));
}

#[tokio::test]
async fn a_watch_on_a_prefix_reports_puts_and_deletes_in_order() {
    if etcd_support::missing() {
        return;
    }
    let etcd = etcd_support::LocalEtcd::start();
    let client = connect(&etcd).await;
    let before = client.put("/other", b"x", 0).await.unwrap();
    let mut watch = client.watch_prefix("/w/", before + 1).await.unwrap();
    client.put("/w/a", b"1", 0).await.unwrap();
    client.put("/other", b"y", 0).await.unwrap();
    let deleted = {
        client.delete("/w/a").await.unwrap();
        client.get_prefix("/").await.unwrap().1
    };
    let mut events = Vec::new();
    while events.len() < 2 {
        let batch = tokio::time::timeout(TIMEOUT, watch.next())
            .await
            .expect("events within the timeout")
            .unwrap();
        events.extend(batch);
    }
    assert!(
        matches!(&events[0], WatchEvent::Put(entry) if entry.key == "/w/a" && entry.value == b"1")
    );
    assert_eq!(
        events[1],
        WatchEvent::Delete {
            key: "/w/a".to_owned(),
            revision: deleted
        }
    );
}

/// A watch through a member cut off from the rest of its cluster ends with an error instead of
/// staying open and silent: it asks for a leader (`hasleader`), and the member cancels it once it
/// has had none for a few election timeouts. Without that, the member (its process alive and
/// answering HTTP/2 pings) keeps the stream open, and the fleet's member view would never hear of
/// the changes made through the others.
#[tokio::test]
async fn a_watch_through_a_member_without_a_leader_ends() {
    if etcd_support::missing() {
        return;
    }
    let mut cluster = etcd_support::LocalCluster::start(3);
    let client = Etcd::connect(&cluster.urls[..1], TIMEOUT)
        .await
        .expect("etcd answers");
    let revision = client.put("/w/a", b"1", 0).await.unwrap();
    let mut watch = client.watch_prefix("/w/", revision + 1).await.unwrap();
    client.put("/w/b", b"2", 0).await.unwrap();
    let batch = tokio::time::timeout(TIMEOUT, watch.next())
        .await
        .expect("the put within the timeout")
        .unwrap();
    assert!(matches!(&batch[0], WatchEvent::Put(entry) if entry.key == "/w/b"));

    cluster.kill(1);
    cluster.kill(2);
    let ended = tokio::time::timeout(Duration::from_secs(30), watch.next())
        .await
        .expect("the watch ends once its member has no leader");
    match ended {
        Err(FleetError::Etcd { message, .. }) => {
            assert!(message.contains("no leader"), "{message}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn an_unreachable_etcd_is_a_clear_error_at_connect() {
    let port = prometheus_support::free_port();
    let endpoints = [format!("http://127.0.0.1:{port}")];
    let error = Etcd::connect(&endpoints, Duration::from_secs(1))
        .await
        .expect_err("nothing listens there");
    assert!(matches!(error, FleetError::Unreachable { .. }), "{error}");
    assert!(error.to_string().contains("etcd is unreachable"), "{error}");
}
