//! etcd lost while a fleet runs: three `prescale serve` replicas, a real etcd and a real Prometheus
//! on 127.0.0.1. Once etcd is killed, every replica steps down and keeps answering every
//! workload's plan through every replica (forwarding is peer to peer) from the plans it holds,
//! marked read-only and not replanned; gRPC health keeps the server `SERVING` for the probes and
//! says `NOT_SERVING` for the fleet, `/metrics` says read-only, and a workload upsert, an event's
//! addition and removal, a report of applied replicas and a write of samples are refused as
//! read-only (nothing stored).
//! `WatchPlans` streams open through two replicas are sent every plan again, read-only, as the
//! replicas step down. etcd restarted on the same port and data directory, the replicas register
//! again and all is as before: the streams carry on (every plan again, not read-only), plans are
//! fresh again, writes are accepted, health and `/metrics` are back.

mod etcd_support;
mod fleet_support;
mod prometheus_support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fleet_support::{
    LEASE_TTL, Replica, ReplicaConfig, answered_alike, get_plan, identity, series_name, series_ref,
    upsert, workload_name,
};
use prescale::service::FLEET_HEALTH_SERVICE;
use prescale::service::proto::{
    Event, GetWorkloadRequest, Plan, RemoveEventRequest, ReportAppliedRequest, SeriesSamples,
    WatchPlansRequest, WriteRequest, event_service_client::EventServiceClient,
    ingest_service_client::IngestServiceClient, plan_service_client::PlanServiceClient,
};
use tokio::sync::mpsc;
use tonic::{Code, Status};
use tonic_health::pb::health_check_response::ServingStatus;

/// Workloads, each on its own Prometheus series.
const WORKLOADS: usize = 6;

/// What a `WatchPlans` stream has sent so far, read on a task: each plan, and its ending (an error,
/// or `OK` when it ended without one).
type Watched = mpsc::UnboundedReceiver<Result<Plan, Status>>;

/// Watches `names` through `replica`.
async fn watch(replica: &Replica, names: &[String]) -> Watched {
    let mut stream = PlanServiceClient::new(replica.channel().await)
        .watch_plans(WatchPlansRequest {
            workloads: names.to_vec(),
        })
        .await
        .unwrap_or_else(|status| panic!("watching through {}: {status}", replica.id))
        .into_inner();
    let (sender, receiver) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let item = match stream.message().await {
                Ok(Some(plan)) => Ok(plan),
                Ok(None) => Err(Status::new(Code::Ok, "the stream ended")),
                Err(status) => Err(status),
            };
            let ended = item.is_err();
            if sender.send(item).is_err() || ended {
                return;
            }
        }
    });
    receiver
}

/// Waits (up to `within`) until `watched` has sent a plan of each of `names` marked `read_only`;
/// fails if the stream ends meanwhile.
async fn each_sent(watched: &mut Watched, names: &[String], read_only: bool, within: Duration) {
    let mut waiting: BTreeSet<&String> = names.iter().collect();
    let deadline = tokio::time::Instant::now() + within;
    while !waiting.is_empty() {
        let item = tokio::time::timeout_at(deadline, watched.recv())
            .await
            .unwrap_or_else(|_| panic!("no plan with read_only {read_only} of {waiting:?}"))
            .expect("the reading task ended");
        let plan = item.unwrap_or_else(|status| panic!("the stream ended: {status}"));
        if plan.read_only == read_only {
            waiting.remove(&plan.workload);
        }
    }
}

/// Fails if `watched` has ended.
fn still_open(watched: &mut Watched) {
    while let Ok(item) = watched.try_recv() {
        if let Err(status) = item {
            panic!("the stream ended: {status}");
        }
    }
}

/// Waits (up to 30 s) until every replica's `/metrics` shows `read_only` and `connected`, and its
/// fleet health entry agrees: `SERVING` once it is an active member again (not read-only, and past
/// joining: replicas started together may still be warming their share), `NOT_SERVING` read-only.
async fn wait_for_gauges(replicas: &[Replica], read_only: f64, connected: f64) {
    let started = Instant::now();
    for replica in replicas {
        loop {
            let now = (
                replica.gauge("prescale_fleet_read_only"),
                replica.gauge("prescale_fleet_etcd_connected"),
            );
            if now == (Some(read_only), Some(connected)) {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "{}: read-only and connected are {now:?}, not ({read_only}, {connected})",
                replica.id
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let expected = if read_only == 0.0 {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        loop {
            let now = replica.health(FLEET_HEALTH_SERVICE).await;
            if now == expected {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "{}: fleet health {now:?}, not {expected:?}",
                replica.id
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The samples each of `replicas` stores of each workload's series.
async fn stored_everywhere(replicas: &[Replica]) -> Vec<u64> {
    let mut stored = Vec::new();
    for replica in replicas {
        for index in 0..WORKLOADS {
            stored.push(replica.stored(&series_name(index)).await);
        }
    }
    stored
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_serve_their_last_plans_read_only_while_etcd_is_lost() {
    if etcd_support::missing() || prometheus_support::missing() {
        return;
    }
    let mut etcd = etcd_support::LocalEtcd::start();
    let prometheus = fleet_support::prometheus_with(WORKLOADS);
    let replicas: Vec<Replica> = ["r0", "r1", "r2"]
        .iter()
        .map(|id| {
            ReplicaConfig::new(id, &etcd.url)
                .metrics()
                .scaler()
                .etcd_timeout(Duration::from_secs(1))
                .start()
        })
        .collect();
    let all: Vec<&Replica> = replicas.iter().collect();
    let names = fleet_support::upsert_all(&replicas[0], WORKLOADS, &prometheus.url).await;
    let before = answered_alike(&all, &names, Duration::from_secs(300)).await;
    assert!(before.iter().all(|plan| !plan.read_only));
    wait_for_gauges(&replicas, 0.0, 1.0).await;

    // Streams of every workload through two replicas: each owner's plans, forwarded or not.
    let mut streams = Vec::new();
    for replica in &replicas[1..] {
        let mut watched = watch(replica, &names).await;
        each_sent(&mut watched, &names, false, Duration::from_secs(10)).await;
        streams.push(watched);
    }

    // etcd goes away: every replica steps down within its lease and says so.
    etcd.kill();
    let lost = Instant::now();
    wait_for_gauges(&replicas, 1.0, 0.0).await;
    eprintln!("read-only {:?} after etcd was killed", lost.elapsed());
    for replica in &replicas {
        assert_eq!(
            replica.health("").await,
            ServingStatus::Serving,
            "{}",
            replica.id
        );
    }

    // The open streams are told at once: every plan again, read-only.
    for watched in &mut streams {
        each_sent(watched, &names, true, Duration::from_secs(5)).await;
    }

    // Every plan answers through every replica, read-only, and past the lease nothing replans.
    let held = answered_alike(&all, &names, Duration::from_secs(10)).await;
    assert!(held.iter().all(|plan| plan.read_only), "{held:?}");
    tokio::time::sleep(LEASE_TTL * 2).await;
    for (name, plan) in names.iter().zip(&held) {
        for replica in &replicas {
            let answer = get_plan(replica.channel().await, name)
                .await
                .unwrap_or_else(|status| panic!("{name} through {}: {status}", replica.id));
            assert_eq!(identity(&answer), identity(plan), "{name} was replanned");
            assert!(answer.read_only);
        }
    }

    // A fleet-wide write is refused, and says why.
    let refused = PlanServiceClient::new(replicas[1].channel().await)
        .upsert_workload(upsert(WORKLOADS, None))
        .await
        .expect_err("an upsert while etcd is lost");
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused}");
    assert!(refused.message().contains("read-only"), "{refused}");
    let mut events = EventServiceClient::new(replicas[1].channel().await);
    let now_ms = i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap();
    let event = Event {
        name: "launch".to_owned(),
        start_ms: now_ms + 3_600_000,
        end_ms: now_ms + 7_200_000,
        multiplier: Some(2.0),
        like: String::new(),
    };
    let refused_event = events
        .add_event(event)
        .await
        .expect_err("an event while etcd is lost");
    let refused_removal = events
        .remove_event(RemoveEventRequest {
            name: "launch".to_owned(),
        })
        .await
        .expect_err("an event removal while etcd is lost");
    // Its owner would record the report in etcd: it is refused as the other writes, not held
    // where no later owner would find it.
    let refused_report = PlanServiceClient::new(replicas[1].channel().await)
        .report_applied(ReportAppliedRequest {
            workload: names[0].clone(),
            replicas: 3,
            time_ms: 0,
        })
        .await
        .expect_err("a report of applied replicas while etcd is lost");
    // So is a write of samples, of the series of every replica (its series may have moved since:
    // a new owner would never read them), and no replica stores any of it.
    let stored_before = stored_everywhere(&replicas).await;
    let refused_write = IngestServiceClient::new(replicas[1].channel().await)
        .write(WriteRequest {
            series: (0..WORKLOADS)
                .map(|index| SeriesSamples {
                    series: Some(series_ref(index)),
                    timestamps_ms: vec![now_ms - 1_000],
                    values: vec![1.0],
                })
                .collect(),
        })
        .await
        .expect_err("a write of samples while etcd is lost");
    assert_eq!(stored_everywhere(&replicas).await, stored_before);
    for refused in [
        refused_event,
        refused_removal,
        refused_report,
        refused_write,
    ] {
        assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused}");
        assert!(refused.message().contains("read-only"), "{refused}");
    }

    // etcd returns: the replicas register again and leave read-only.
    etcd.restart();
    let back = Instant::now();
    wait_for_gauges(&replicas, 0.0, 1.0).await;
    eprintln!("normal {:?} after etcd returned", back.elapsed());
    let after = answered_alike(&all, &names, Duration::from_secs(60)).await;
    assert!(after.iter().all(|plan| !plan.read_only), "{after:?}");
    // The same members own the same workloads: the streams carry on, no longer read-only.
    for watched in &mut streams {
        each_sent(watched, &names, false, Duration::from_secs(10)).await;
    }
    // Their owners plan them again.
    for (name, plan) in names.iter().zip(&held) {
        let replanned = Instant::now();
        while get_plan(replicas[0].channel().await, name)
            .await
            .is_ok_and(|now| now.generated_at_ms <= plan.generated_at_ms)
        {
            assert!(
                replanned.elapsed() < Duration::from_secs(60),
                "{name} not planned again after etcd returned"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    for replica in &replicas {
        assert_eq!(
            replica.health(FLEET_HEALTH_SERVICE).await,
            ServingStatus::Serving
        );
    }
    for watched in &mut streams {
        still_open(watched);
    }
    let accepted = Instant::now();
    loop {
        let upserted = PlanServiceClient::new(replicas[1].channel().await)
            .upsert_workload(upsert(WORKLOADS, None))
            .await;
        if upserted.is_ok() {
            break;
        }
        assert!(
            accepted.elapsed() < Duration::from_secs(30),
            "upserts still refused: {upserted:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let seen = Instant::now();
    while PlanServiceClient::new(replicas[2].channel().await)
        .get_workload(GetWorkloadRequest {
            name: workload_name(WORKLOADS),
        })
        .await
        .is_err()
    {
        assert!(
            seen.elapsed() < Duration::from_secs(10),
            "the new workload never reached another replica"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
