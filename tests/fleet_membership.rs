//! Fleet membership against a real etcd on 127.0.0.1: replicas join on leases and see each other,
//! ownership follows the live members, a replica that leaves or dies hands its keys over, a
//! duplicate id is refused, and writes are fenced by membership.

mod etcd_support;
mod prometheus_support;

use std::sync::Arc;
use std::time::Duration;

use prescale::fleet::etcd::{Etcd, Op};
use prescale::fleet::{
    Coordinator, EtcdCoordinator, FleetError, FleetView, MemberInfo, MemberState,
    MembershipSettings,
};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

const TIMEOUT: Duration = Duration::from_secs(3);

fn settings(id: &str, ttl: Duration) -> MembershipSettings {
    MembershipSettings {
        prefix: "/prescale/".to_owned(),
        member_id: id.to_owned(),
        info: MemberInfo {
            addr: format!("{id}.test:50051"),
            scaler_addr: None,
            state: MemberState::Active,
        },
        lease_ttl: ttl,
    }
}

async fn join(url: &str, id: &str, ttl: Duration) -> Arc<EtcdCoordinator> {
    let etcd = Etcd::connect(&[url.to_owned()], TIMEOUT).await.unwrap();
    let (coordinator, _task) =
        EtcdCoordinator::join(etcd, settings(id, ttl), CancellationToken::new())
            .await
            .unwrap();
    coordinator
}

/// Waits (at most `within`) until the view satisfies `check`; returns it.
async fn until(
    view: &mut watch::Receiver<Arc<FleetView>>,
    within: Duration,
    check: impl Fn(&FleetView) -> bool,
) -> Arc<FleetView> {
    tokio::time::timeout(within, view.wait_for(|view| check(view)))
        .await
        .expect("the view changes in time")
        .map(|view| Arc::clone(&view))
        .expect("the coordinator runs")
}

fn ids(view: &FleetView) -> Vec<&str> {
    view.members
        .iter()
        .map(|member| member.id.as_str())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_see_each_other_and_keys_move_only_when_a_member_goes() {
    if etcd_support::missing() {
        return;
    }
    let etcd = etcd_support::LocalEtcd::start();
    let ttl = Duration::from_secs(3);
    let a = join(&etcd.url, "a", ttl).await;
    let b = join(&etcd.url, "b", ttl).await;
    let c = join(&etcd.url, "c", ttl).await;
    let mut view_a = a.view();
    let full = until(&mut view_a, TIMEOUT, |view| view.members.len() == 3).await;
    assert_eq!(ids(&full), ["a", "b", "c"]);
    assert_eq!(full.members[1].info.addr, "b.test:50051");
    let keys: Vec<String> = (0..300).map(|index| format!("series-{index}")).collect();
    let owned_by = |view: &FleetView, id: &str| {
        keys.iter()
            .filter(|key| view.owner_of(key).is_some_and(|owner| owner.id == id))
            .count()
    };
    assert!(owned_by(&full, "a") > 50 && owned_by(&full, "b") > 50 && owned_by(&full, "c") > 50);
    let c_view = until(&mut c.view(), TIMEOUT, |view| view.members.len() == 3).await;
    for key in &keys {
        assert_eq!(
            full.owner_of(key),
            c_view.owner_of(key),
            "replicas agree on {key}"
        );
    }

    // Leaving revokes the lease: the others see it at once, not after the TTL.
    b.leave().await;
    let two = until(&mut view_a, Duration::from_secs(1), |view| {
        view.members.len() == 2
    })
    .await;
    assert_eq!(ids(&two), ["a", "c"]);
    for key in &keys {
        let before = full.owner_of(key).unwrap();
        if before.id != "b" {
            assert_eq!(two.owner_of(key).unwrap().id, before.id, "{key} moved");
        }
    }
    assert_eq!(owned_by(&two, "a") + owned_by(&two, "c"), keys.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_replica_drops_out_when_its_lease_expires() {
    if etcd_support::missing() {
        return;
    }
    let etcd = etcd_support::LocalEtcd::start();
    let ttl = Duration::from_secs(2);
    let a = join(&etcd.url, "a", ttl).await;
    let stop_b = CancellationToken::new();
    let client = Etcd::connect(std::slice::from_ref(&etcd.url), TIMEOUT)
        .await
        .unwrap();
    let (_b, task) = EtcdCoordinator::join(client, settings("b", ttl), stop_b.clone())
        .await
        .unwrap();
    let mut view = a.view();
    until(&mut view, TIMEOUT, |view| view.members.len() == 2).await;
    // b stops renewing without revoking, as a killed process would.
    stop_b.cancel();
    task.await.unwrap();
    let alone = until(&mut view, Duration::from_secs(6), |view| {
        view.members.len() == 1
    })
    .await;
    assert_eq!(ids(&alone), ["a"]);
    assert!(alone.owns("anything"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_replica_with_a_live_id_is_refused() {
    if etcd_support::missing() {
        return;
    }
    let etcd = etcd_support::LocalEtcd::start();
    let _a = join(&etcd.url, "a", Duration::from_secs(5)).await;
    let client = Etcd::connect(std::slice::from_ref(&etcd.url), TIMEOUT)
        .await
        .unwrap();
    let error = EtcdCoordinator::join(
        client,
        settings("a", Duration::from_secs(5)),
        CancellationToken::new(),
    )
    .await
    .expect_err("the id is live");
    assert!(matches!(error, FleetError::MemberIdTaken { .. }), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_are_fenced_by_the_writers_membership() {
    if etcd_support::missing() {
        return;
    }
    let etcd = etcd_support::LocalEtcd::start();
    let client = Etcd::connect(std::slice::from_ref(&etcd.url), TIMEOUT)
        .await
        .unwrap();
    let ttl = Duration::from_secs(3);
    let a = join(&etcd.url, "a", ttl).await;
    let put = |value: &str| {
        vec![Op::Put {
            key: "/prescale/test/value".to_owned(),
            value: value.as_bytes().to_vec(),
            lease: 0,
        }]
    };
    assert!(a.fenced_write(&put("first")).await.unwrap().applied());

    // A member joined: a's write is accepted once its view has the member (the compare of a view
    // older than the newest member is the etcd test's `a_transaction_runs_its_success_branch...`).
    let mut view = a.view();
    let _b = join(&etcd.url, "b", ttl).await;
    until(&mut view, TIMEOUT, |view| view.members.len() == 2).await;
    assert!(a.fenced_write(&put("second")).await.unwrap().applied());

    // a's member key deleted under it (its lease gone): a steps down and writes nothing.
    client.delete("/prescale/members/a").await.unwrap();
    until(&mut view, TIMEOUT, |view| view.incarnation.is_none()).await;
    assert!(!a.fenced_write(&put("third")).await.unwrap().applied());
    assert_eq!(
        client
            .get("/prescale/test/value")
            .await
            .unwrap()
            .unwrap()
            .value,
        b"second"
    );
    // Once etcd answers again, a registers as a new incarnation and may write.
    let back = until(&mut view, Duration::from_secs(5), |view| {
        view.incarnation.is_some()
    })
    .await;
    assert!(back.members.iter().any(|member| member.id == "a"));
    assert!(a.fenced_write(&put("fourth")).await.unwrap().applied());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_cannot_renew_steps_down_before_its_lease_could_expire() {
    if etcd_support::missing() {
        return;
    }
    let etcd = etcd_support::LocalEtcd::start();
    let ttl = Duration::from_secs(3);
    let a = join(&etcd.url, "a", ttl).await;
    let mut view = a.view();
    let joined = until(&mut view, TIMEOUT, |view| view.incarnation.is_some()).await;
    assert!(joined.owns("series"));
    let lost = tokio::time::Instant::now();
    drop(etcd);
    let down = until(&mut view, ttl * 2, |view| view.incarnation.is_none()).await;
    let after = lost.elapsed();
    assert!(
        !down.owns("series"),
        "a stepped-down replica serves nothing it owns"
    );
    assert_eq!(down.route("series"), prescale::fleet::Route::Unavailable);
    // The last successful renewal was at most a third of the TTL before etcd went: stepping down
    // within the TTL of it leaves no moment where another replica owns a's series while a works.
    assert!(after < ttl, "stepped down {after:?} after etcd went");
}
