//! Two `prescale serve` processes on 127.0.0.1 coordinated through a real etcd, the owner of a
//! workload frozen (SIGSTOP): alive on TCP, answering nothing, its lease not yet expired. A
//! `GetPlan` forwarded to it through the other replica, with no deadline of the caller's, fails
//! with the forwarding timeout (`[fleet] forward_timeout`), naming the member and its address; a
//! `WatchPlans` already open through the other replica ends `UNAVAILABLE` naming it too (the
//! keepalive drops the frozen owner's connection, and its part is not reached again); and once the
//! owner resumes, the call is forwarded to it again.

mod etcd_support;
mod fleet_support;
mod prometheus_support;

use std::time::Duration;

use fleet_support::{Replica, ReplicaConfig, get_plan, share_of, upsert, workload_name};
use prescale::service::proto::{WatchPlansRequest, plan_service_client::PlanServiceClient};
use tonic::Code;

/// The replicas' forwarding timeout.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(2);

/// The replicas' lease: far longer than the test's bound on a call, so what ends a call to the
/// frozen owner is the forwarding timeout, never its lease expiring (and its workload moving).
const LEASE_TTL: Duration = Duration::from_secs(120);

/// How long the test waits for a call to the frozen owner to end before it calls it hung.
const HUNG_AFTER: Duration = Duration::from_secs(90);

/// `replica` stopped (SIGSTOP) until dropped (SIGCONT), so that a failing test leaves no stopped
/// process behind (the replica itself is killed on drop).
struct Frozen<'a>(&'a Replica);

impl<'a> Frozen<'a> {
    fn new(replica: &'a Replica) -> Self {
        replica.signal(libc::SIGSTOP);
        Self(replica)
    }
}

impl Drop for Frozen<'_> {
    fn drop(&mut self) {
        self.0.signal(libc::SIGCONT);
    }
}

/// Whether `status` names the member `replica` and its address.
fn names(status: &tonic::Status, replica: &Replica) -> bool {
    let message = status.message();
    message.contains(&format!("member {}", replica.id)) && message.contains(&replica.address)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_forwarded_to_a_frozen_owner_fails_naming_it() {
    if etcd_support::missing() {
        return;
    }
    let etcd = etcd_support::LocalEtcd::start();
    let start = |id: &str| {
        ReplicaConfig::new(id, &etcd.url)
            .lease_ttl(LEASE_TTL)
            .forward_timeout(FORWARD_TIMEOUT)
            .start()
    };
    let asker = start("r0");
    let owner = start("r1");
    let client = prescale::fleet::etcd::Etcd::connect(
        std::slice::from_ref(&etcd.url),
        Duration::from_secs(2),
    )
    .await
    .unwrap();
    fleet_support::fleet_view(&client, 2).await;
    let index = *share_of(&["r0", "r1"], "r1", 16)
        .first()
        .expect("r1 owns one of 16 workloads");
    let name = workload_name(index);
    PlanServiceClient::new(asker.channel().await)
        .upsert_workload(upsert(index, None))
        .await
        .unwrap();

    until_forwarded(&asker, &owner, &name).await;
    let mut watch = PlanServiceClient::new(asker.channel().await)
        .watch_plans(WatchPlansRequest {
            workloads: vec![name.clone()],
        })
        .await
        .unwrap()
        .into_inner();

    let frozen = Frozen::new(&owner);
    let failed = tokio::time::timeout(HUNG_AFTER, get_plan(asker.channel().await, &name))
        .await
        .expect("a GetPlan forwarded to the frozen owner hangs")
        .expect_err("a frozen owner answered");
    assert!(
        matches!(failed.code(), Code::DeadlineExceeded | Code::Unavailable),
        "{failed:?}"
    );
    assert!(names(&failed, &owner), "{failed:?}");
    let ended = loop {
        match tokio::time::timeout(HUNG_AFTER, watch.message())
            .await
            .expect("a WatchPlans forwarded to the frozen owner hangs")
        {
            Ok(Some(_plan)) => continue,
            Ok(None) => panic!("the WatchPlans ended without an error"),
            Err(status) => break status,
        }
    };
    assert_eq!(ended.code(), Code::Unavailable, "{ended:?}");
    assert!(names(&ended, &owner), "{ended:?}");

    drop(frozen);
    until_forwarded(&asker, &owner, &name).await;
}

/// Waits (at most 60 s) until a `GetPlan` of workload `name` through `asker` gets what `owner`
/// answers itself (the plan, or why it has none, by code): forwarded to it.
async fn until_forwarded(asker: &Replica, owner: &Replica, name: &str) {
    let started = std::time::Instant::now();
    loop {
        let direct = get_plan(owner.channel().await, name).await;
        let forwarded = get_plan(asker.channel().await, name).await;
        let code =
            |answer: &Result<_, tonic::Status>| answer.as_ref().err().map(tonic::Status::code);
        if code(&forwarded) == code(&direct) {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "through {}: {forwarded:?}, from its owner: {direct:?}",
            asker.id
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
