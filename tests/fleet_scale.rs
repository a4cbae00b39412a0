//! Scaling a fleet from three replicas to four with no failed `GetPlan`: a real etcd, a real
//! Prometheus holding 16 workloads' histories, and a client asking every workload's plan through
//! every replica in a loop while the fourth joins. The fourth registers as joining, plans the
//! share it will own while the others keep serving it, then turns active; a forwarded call that
//! meets a replica whose view is a moment behind or ahead is answered from the fresh plan it
//! holds. The fourth is not ready (health `NOT_SERVING`) until it is active, and is asked from
//! then on, as a Kubernetes Service would send it calls. Afterwards the fourth owns exactly the workloads rendezvous hashing gives it (about a
//! quarter), follows their sources and serves their plans through every replica.

mod etcd_support;
mod fleet_support;
mod prometheus_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use fleet_support::{Replica, ReplicaConfig, answered_alike, get_plan, identity, share_of};
use prescale::service::FLEET_HEALTH_SERVICE;
use prescale::service::proto::{GetPlanRequest, plan_service_client::PlanServiceClient};
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;

/// Workloads, each on its own Prometheus series.
const WORKLOADS: usize = 16;

/// Replica `id` of the fleet on `etcd`, with `/metrics` and a KEDA scaler.
fn start(id: &str, etcd: &str) -> Replica {
    ReplicaConfig::new(id, etcd)
        .metrics()
        .scaler()
        .etcd_timeout(Duration::from_secs(1))
        .start()
}

/// Stops the asking loops when dropped, also when the test fails.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

/// A GetPlan of `name` marked as forwarded by another replica.
fn marked(name: &str) -> tonic::Request<GetPlanRequest> {
    let mut request = tonic::Request::new(GetPlanRequest {
        workload: name.to_owned(),
    });
    request
        .metadata_mut()
        .insert("x-prescale-forwarded", "1".parse().unwrap());
    request
}

/// Asks every workload's plan through `channels` in a loop until `stop`; counts the calls and
/// prints the failures.
fn ask_until(
    channels: Vec<(String, Channel)>,
    names: Vec<String>,
    stop: Arc<AtomicBool>,
    calls: Arc<AtomicU64>,
    failures: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while !stop.load(Ordering::Acquire) {
            for name in &names {
                for (id, channel) in &channels {
                    calls.fetch_add(1, Ordering::Relaxed);
                    if let Err(status) = get_plan(channel.clone(), name).await {
                        if failures.fetch_add(1, Ordering::Relaxed) < 20 {
                            eprintln!("GetPlan {name} through {id} failed: {status}");
                        }
                        // A replica gone (the test failed and is unwinding) fails at once: yield.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fourth_replica_takes_its_quarter_with_no_failed_get_plan() {
    if etcd_support::missing() || prometheus_support::missing() {
        return;
    }
    let ids = ["r0", "r1", "r2", "r3"];
    let joining = share_of(&ids, "r3", WORKLOADS);
    eprintln!("r3's share: {joining:?}");
    assert!(
        (2..=8).contains(&joining.len()),
        "r3 gets {} of {WORKLOADS}",
        joining.len()
    );
    let etcd = etcd_support::LocalEtcd::start();
    let prometheus = fleet_support::prometheus_with(WORKLOADS);
    let mut replicas: Vec<Replica> = ids[..3].iter().map(|id| start(id, &etcd.url)).collect();
    let names = fleet_support::upsert_all(&replicas[0], WORKLOADS, &prometheus.url).await;
    answered_alike(
        &replicas.iter().collect::<Vec<_>>(),
        &names,
        Duration::from_secs(600),
    )
    .await;

    // A client asks every plan through every replica while the fourth joins.
    let stop = Arc::new(AtomicBool::new(false));
    let _stop_on_drop = StopOnDrop(Arc::clone(&stop));
    let calls = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(AtomicU64::new(0));
    let mut channels = Vec::new();
    for replica in &replicas {
        channels.push((replica.id.clone(), replica.channel().await));
    }
    let three = ask_until(
        channels,
        names.clone(),
        Arc::clone(&stop),
        Arc::clone(&calls),
        Arc::clone(&failures),
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let joined = Instant::now();
    replicas.push(start("r3", &etcd.url));
    // Joining, it is not ready: a Service sends it nothing until it has warmed its share.
    assert_eq!(replicas[3].health("").await, ServingStatus::NotServing);
    while replicas[3].health("").await != ServingStatus::Serving {
        assert!(
            joined.elapsed() < Duration::from_secs(120),
            "r3 not ready within 120 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        replicas[3].health(FLEET_HEALTH_SERVICE).await,
        ServingStatus::Serving
    );
    let fourth = ask_until(
        vec![("r3".to_owned(), replicas[3].channel().await)],
        names.clone(),
        Arc::clone(&stop),
        Arc::clone(&calls),
        Arc::clone(&failures),
    );
    eprintln!("r3 active {:?} after it started", joined.elapsed());

    // r3 follows exactly its share; each of those is followed by r3 alone.
    for (index, name) in names.iter().enumerate() {
        let mine = joining.contains(&index);
        let settled = Instant::now();
        loop {
            let mut followers = Vec::new();
            for replica in &replicas {
                if replica.follows(name).await.unwrap() {
                    followers.push(replica.id.as_str());
                }
            }
            if (followers == ["r3"]) == mine && followers.len() == 1 {
                break;
            }
            assert!(
                settled.elapsed() < Duration::from_secs(60),
                "{name} (hashed to r3: {mine}) followed by {followers:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let all: Vec<&Replica> = replicas.iter().collect();
    let after = answered_alike(&all, &names, Duration::from_secs(30)).await;
    for index in &joining {
        let direct = get_plan(replicas[3].channel().await, &names[*index])
            .await
            .unwrap();
        assert_eq!(identity(&after[*index]), identity(&direct));
    }
    // A forwarded call that reaches the old owner of a moved workload (the sender's view a moment
    // behind) is answered from the fresh plan it still holds, not refused; one that reaches the
    // replica of a workload it never held is refused, not forwarded again.
    let moved = *joining.first().unwrap();
    let old_owner = (0..3)
        .find(|replica| share_of(&ids[..3], ids[*replica], WORKLOADS).contains(&moved))
        .unwrap();
    let held = PlanServiceClient::new(replicas[old_owner].channel().await)
        .get_plan(marked(&names[moved]))
        .await
        .unwrap_or_else(|status| panic!("marked GetPlan on the old owner: {status}"))
        .into_inner();
    assert_ne!(
        identity(&held),
        identity(&after[moved]),
        "the old owner's own plan"
    );
    let never = (0..WORKLOADS)
        .find(|index| !joining.contains(index))
        .unwrap();
    let refused = PlanServiceClient::new(replicas[3].channel().await)
        .get_plan(marked(&names[never]))
        .await
        .expect_err("a marked call to a replica that never held the workload");
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused}");

    // The loop keeps asking a while after the move.
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Release);
    three.await.unwrap();
    fourth.await.unwrap();
    let calls = calls.load(Ordering::Relaxed);
    eprintln!("{calls} GetPlan calls during the move");
    assert!(calls > 100, "{calls} calls");
    assert_eq!(failures.load(Ordering::Relaxed), 0, "failed GetPlan calls");
}
