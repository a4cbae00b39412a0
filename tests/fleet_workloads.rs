//! Workloads across a fleet of `prescale serve` processes on 127.0.0.1, coordinated through a
//! real etcd, with a real Prometheus as the sourced workloads' history: `DeleteWorkload` through
//! any replica answers OK for a workload that existed, however its own watch of the fleet's table
//! and its local delete interleave (even one upserted through another replica a moment before and
//! not yet applied by the one deleting it), and `NOT_FOUND` only for one that did not; `GetWorkload`
//! through any replica answers the owner's status of the workload's source, and `UNAVAILABLE`
//! while the owner cannot be reached; a report of applied replicas reaching the owner just after
//! its workload was deleted is `NOT_FOUND` and leaves no record; and a workload's plan gauges and
//! its source's error counters leave the `/metrics` of a replica that hands it over to a member
//! joining.

mod etcd_support;
mod fleet_support;
mod grpc_support;
mod prometheus_support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use fleet_support::{
    Replica, ReplicaConfig, answered_alike, series_name, settled_owner, share_of, upsert,
    upsert_all, workload_name,
};
use grpc_support::workload_names;
use prescale::fleet::etcd::Etcd;
use prescale::service::proto::{
    DeleteWorkloadRequest, GetWorkloadRequest, ReportAppliedRequest,
    plan_service_client::PlanServiceClient,
};
use prometheus_support::free_port;
use tonic_health::pb::health_check_response::ServingStatus;

/// Workloads on Prometheus series, in the tests where they are planned.
const SOURCED: usize = 4;

/// Replicas `r0` and `r1` (with `/metrics`) of the fleet on `etcd`, once the [`SOURCED`]
/// workloads on `prometheus` given through `r0` are planned and answered alike through both; with
/// the workloads' names.
async fn planning_pair(etcd: &str, prometheus: &str) -> (Vec<Replica>, Vec<String>) {
    let replicas: Vec<Replica> = ["r0", "r1"]
        .iter()
        .map(|id| ReplicaConfig::new(id, etcd).metrics().start())
        .collect();
    let names = upsert_all(&replicas[0], SOURCED, prometheus).await;
    answered_alike(
        &replicas.iter().collect::<Vec<_>>(),
        &names,
        Duration::from_secs(300),
    )
    .await;
    (replicas, names)
}

/// Waits (at most 10 s) until every replica of `replicas` holds workload `name`, or none does.
async fn until_held_everywhere(replicas: &[Replica], name: &str, expected: bool) {
    let started = Instant::now();
    loop {
        let mut everywhere = true;
        for replica in replicas {
            // `ListWorkloads` is answered locally: what this replica holds itself.
            let held = workload_names(&mut PlanServiceClient::new(replica.channel().await)).await;
            everywhere &= held.iter().any(|held| held == name) == expected;
        }
        if everywhere {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{name} held: expected {expected} on every replica within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A local etcd, a client of it, and replicas `r0` and `r1` of a fleet on it.
async fn two_replicas() -> (etcd_support::LocalEtcd, Etcd, Vec<Replica>) {
    let etcd_process = etcd_support::LocalEtcd::start();
    let etcd = Etcd::connect(
        std::slice::from_ref(&etcd_process.url),
        Duration::from_secs(2),
    )
    .await
    .unwrap();
    let replicas = ["r0", "r1"]
        .iter()
        .map(|id| ReplicaConfig::new(id, &etcd_process.url).start())
        .collect();
    (etcd_process, etcd, replicas)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_workload_answers_ok_through_any_replica() {
    if etcd_support::missing() {
        return;
    }
    /// Rounds of upsert and delete: the replica's watch applied the deletion before its own
    /// delete in most of them when that race answered `NOT_FOUND`.
    const ROUNDS: usize = 12;
    let (_etcd_process, etcd, replicas) = two_replicas().await;
    let name = workload_name(0);
    let key = format!("/prescale/workloads/{name}");
    for round in 0..ROUNDS {
        let writer = &replicas[round % 2];
        let deleter = &replicas[(round / 2) % 2];
        PlanServiceClient::new(writer.channel().await)
            .upsert_workload(upsert(0, None))
            .await
            .unwrap();
        until_held_everywhere(&replicas, &name, true).await;

        let mut plans = PlanServiceClient::new(deleter.channel().await);
        let delete = || DeleteWorkloadRequest { name: name.clone() };
        plans
            .delete_workload(delete())
            .await
            .unwrap_or_else(|status| {
                panic!(
                    "round {round}: deleting {name} through {}: {status}",
                    deleter.id
                )
            });
        assert_eq!(etcd.get(&key).await.unwrap(), None, "round {round}");
        until_held_everywhere(&replicas, &name, false).await;
        let missing = plans
            .delete_workload(delete())
            .await
            .expect_err("a workload deleted already");
        assert_eq!(missing.code(), tonic::Code::NotFound, "{missing}");
    }
}

/// `GetWorkload` of `name` through `replica`.
async fn get_workload(
    replica: &Replica,
    name: &str,
) -> Result<prescale::service::proto::Workload, tonic::Status> {
    Ok(PlanServiceClient::new(replica.channel().await)
        .get_workload(GetWorkloadRequest {
            name: name.to_owned(),
        })
        .await?
        .into_inner())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_workload_through_any_replica_answers_the_owners_source_status() {
    if etcd_support::missing() || prometheus_support::missing() {
        return;
    }
    let etcd = etcd_support::LocalEtcd::start();
    let prometheus = fleet_support::prometheus_with(SOURCED);
    let (mut replicas, names) = planning_pair(&etcd.url, &prometheus.url).await;

    let mut owners = BTreeMap::new();
    for name in &names {
        // Plans answer alike while a replica still joins and warms (follows) its future share,
        // before the other hands it over: the owner is the one follower, once there is one.
        let owner = settled_owner(&replicas, &[0, 1], name).await;
        owners.insert(name.clone(), owner);
        let pulled = get_workload(&replicas[owner], name)
            .await
            .unwrap()
            .source_status
            .expect("the owner's source status");
        for replica in &replicas {
            let status = get_workload(replica, name)
                .await
                .unwrap_or_else(|status| panic!("{name} through {}: {status}", replica.id))
                .source_status
                .unwrap_or_else(|| panic!("{name} through {}: no source status", replica.id));
            assert!(
                status.last_success_ms > 0 && status.points_pulled > 0,
                "{name} through {}: {status:?}",
                replica.id
            );
            assert_eq!(
                status.history_available_from_ms, pulled.history_available_from_ms,
                "{name} through {}",
                replica.id
            );
        }
    }

    // The owner killed: until its lease expires the other still sends it the call, which cannot
    // reach it, and says so rather than answer a status that reads as "never pulled".
    let (name, owner) = owners.iter().next().unwrap();
    let other = 1 - owner;
    replicas[*owner].kill();
    let status = get_workload(&replicas[other], name)
        .await
        .expect_err("the owner of the status is gone");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workload_upserted_through_one_replica_is_deleted_at_once_through_another() {
    if etcd_support::missing() {
        return;
    }
    /// Rounds of an upsert through one replica and at once a delete through the other. Before
    /// each upsert a [`BACKLOG`] keeps the deleting replica's watch busy, so it has not yet
    /// applied the upsert when the delete reaches it (the upserting one applied the upsert
    /// itself), and its own copy judged `NOT_FOUND` in most rounds.
    const ROUNDS: usize = 20;
    let (_etcd_process, etcd, replicas) = two_replicas().await;
    let mut writer = PlanServiceClient::new(replicas[0].channel().await);
    let mut deleter = PlanServiceClient::new(replicas[1].channel().await);
    let never = deleter
        .delete_workload(DeleteWorkloadRequest {
            name: "never-upserted".to_owned(),
        })
        .await
        .expect_err("a workload that never existed");
    assert_eq!(never.code(), tonic::Code::NotFound, "{never}");

    let name = workload_name(0);
    let key = format!("/prescale/workloads/{name}");
    for round in 0..ROUNDS {
        write_backlog(&etcd, 1..=BACKLOG, round).await;
        writer.upsert_workload(upsert(0, None)).await.unwrap();
        deleter
            .delete_workload(DeleteWorkloadRequest { name: name.clone() })
            .await
            .unwrap_or_else(|status| panic!("round {round}: deleting {name} through r1: {status}"));
        assert_eq!(etcd.get(&key).await.unwrap(), None, "round {round}");
    }
    until_held_everywhere(&replicas, &name, false).await;
    until_held_everywhere(&replicas, &workload_name(BACKLOG), true).await;
}

/// Workloads the fleet takes from elsewhere (written to etcd as another replica would, by
/// [`write_backlog`]) just before the step of a race: the replicas' watches apply them one by one,
/// so a replica's copy of the fleet's table stays behind etcd for a while.
const BACKLOG: usize = 40;

/// Writes workloads `indexes` to etcd as another replica would (their capacity from `round`, so
/// each round changes them): the replicas' watches of the fleet's table apply them one by one.
async fn write_backlog(etcd: &Etcd, indexes: std::ops::RangeInclusive<usize>, round: usize) {
    for other in indexes {
        let workload = serde_json::json!({
            "name": workload_name(other),
            "series": series_name(other),
            "capacity_per_replica": 100 + round,
            "max_replicas": 100,
            "warm_up": "30m",
        });
        let record = format!("/prescale/workloads/{}", workload_name(other));
        etcd.put(&record, workload.to_string().as_bytes(), 0)
            .await
            .unwrap();
    }
}

/// A report of applied replicas that reaches a workload's owner at once after the workload was
/// deleted through the other replica answers `NOT_FOUND` and leaves no record in etcd, so the
/// workload created again by that name shows no report. The owner's copy has not applied the
/// deletion yet (a [`BACKLOG`] written to etcd just before keeps its watch busy), so it still
/// takes the report; written without requiring the workload's record, it was acknowledged and
/// left `<prefix>applied/<name>` behind in most rounds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_racing_the_delete_of_its_workload_is_not_found_and_leaves_no_record() {
    if etcd_support::missing() {
        return;
    }
    /// Rounds of a delete through one replica (after a [`BACKLOG`]) and at once a report
    /// through the owner.
    const ROUNDS: usize = 10;
    let (_etcd_process, etcd, replicas) = two_replicas().await;
    for replica in &replicas {
        until_active(replica).await;
    }
    // A workload `r0` owns; the backlog's indexes come after it.
    let index = *share_of(&["r0", "r1"], "r0", 8)
        .first()
        .expect("r0 owns one of 8 workloads");
    let name = workload_name(index);
    let report_key = format!("/prescale/applied/{name}");
    let mut owner = PlanServiceClient::new(replicas[0].channel().await);
    let mut deleter = PlanServiceClient::new(replicas[1].channel().await);
    for round in 0..ROUNDS {
        owner.upsert_workload(upsert(index, None)).await.unwrap();
        until_held_everywhere(&replicas, &name, true).await;
        let created = get_workload(&replicas[1], &name).await.unwrap();
        assert_eq!(created.applied, None, "round {round}: created again");

        write_backlog(&etcd, 10..=10 + BACKLOG, round).await;
        deleter
            .delete_workload(DeleteWorkloadRequest { name: name.clone() })
            .await
            .unwrap();
        let report = owner
            .report_applied(ReportAppliedRequest {
                workload: name.clone(),
                replicas: u32::try_from(round).unwrap() + 1,
                time_ms: 0,
            })
            .await;
        assert_eq!(
            etcd.get(&report_key).await.unwrap(),
            None,
            "round {round}: a report left behind its workload, answered {report:?}"
        );
        let status = report
            .err()
            .unwrap_or_else(|| panic!("round {round}: a report of a deleted workload taken"));
        assert_eq!(
            status.code(),
            tonic::Code::NotFound,
            "round {round}: {status}"
        );
        until_held_everywhere(&replicas, &name, false).await;
    }
}

/// Waits (at most 120 s) until `replica`, joining, turns active: its health `SERVING`.
async fn until_active(replica: &Replica) {
    let joined = Instant::now();
    while replica.health("").await != ServingStatus::Serving {
        assert!(
            joined.elapsed() < Duration::from_secs(120),
            "{} not active within 120 s",
            replica.id
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits (at most 60 s) until each workload of `names` has its series (as `shown` reads them off
/// a replica's `/metrics`: its plan gauges, its source's error counters) on the `/metrics` of
/// exactly one replica of `replicas`, the one at its index in `expected`.
async fn until_shown_by(
    replicas: &[Replica],
    names: &[String],
    expected: &[usize],
    shown: fn(&Replica) -> BTreeSet<String>,
) {
    let started = Instant::now();
    loop {
        let shown: Vec<_> = replicas.iter().map(shown).collect();
        let by: BTreeMap<&String, Vec<&str>> = names
            .iter()
            .map(|name| {
                let showing = replicas
                    .iter()
                    .zip(&shown)
                    .filter(|(_, gauges)| gauges.contains(name))
                    .map(|(replica, _)| replica.id.as_str())
                    .collect();
                (name, showing)
            })
            .collect();
        let wanted: BTreeMap<&String, Vec<&str>> = names
            .iter()
            .zip(expected)
            .map(|(name, owner)| (name, vec![replicas[*owner].id.as_str()]))
            .collect();
        if by == wanted {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "series shown by {by:?}, not by their owners {wanted:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_gauges_leave_a_replica_with_the_workloads_it_hands_over() {
    if etcd_support::missing() || prometheus_support::missing() {
        return;
    }
    let etcd = etcd_support::LocalEtcd::start();
    let prometheus = fleet_support::prometheus_with(SOURCED);
    // The joining member's id: the first that rendezvous hashing gives a share of the workloads.
    let joiner = (2..)
        .map(|number| format!("r{number}"))
        .find(|id| !share_of(&["r0", "r1", id], id, SOURCED).is_empty())
        .unwrap();
    let first = share_of(&["r0", "r1"], "r0", SOURCED);
    let moving = share_of(&["r0", "r1", &joiner], &joiner, SOURCED);
    let (mut replicas, names) = planning_pair(&etcd.url, &prometheus.url).await;
    let before: Vec<usize> = (0..SOURCED)
        .map(|index| usize::from(!first.contains(&index)))
        .collect();
    until_shown_by(&replicas, &names, &before, Replica::plan_gauges).await;

    replicas.push(ReplicaConfig::new(&joiner, &etcd.url).metrics().start());
    until_active(&replicas[2]).await;
    // The workloads it took are shown by it alone; the others stay with their owners.
    let after: Vec<usize> = (0..SOURCED)
        .map(|index| {
            if moving.contains(&index) {
                2
            } else {
                before[index]
            }
        })
        .collect();
    until_shown_by(&replicas, &names, &after, Replica::plan_gauges).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_errors_leave_a_replica_with_the_workloads_it_hands_over() {
    if etcd_support::missing() {
        return;
    }
    let etcd = etcd_support::LocalEtcd::start();
    // The joining member's id: the first that rendezvous hashing gives a share of the workloads.
    let joiner = (1..)
        .map(|number| format!("r{number}"))
        .find(|id| !share_of(&["r0", id], id, SOURCED).is_empty())
        .unwrap();
    let moving = share_of(&["r0", &joiner], &joiner, SOURCED);
    let mut replicas = vec![ReplicaConfig::new("r0", &etcd.url).metrics().start()];
    // A source where nothing listens: every pull of every workload fails (`connect`).
    let unreachable = format!("http://127.0.0.1:{}", free_port());
    let mut plans = PlanServiceClient::new(replicas[0].channel().await);
    for index in 0..SOURCED {
        plans
            .upsert_workload(upsert(index, Some(&unreachable)))
            .await
            .unwrap();
    }
    let names: Vec<String> = (0..SOURCED).map(workload_name).collect();
    until_shown_by(&replicas, &names, &[0; SOURCED], Replica::source_errors).await;

    // Its share has no plan to warm (no source answers): it turns active after `join_timeout`.
    replicas.push(
        ReplicaConfig::new(&joiner, &etcd.url)
            .metrics()
            .join_timeout(Duration::from_secs(5))
            .start(),
    );
    until_active(&replicas[1]).await;
    // The failures of the sources it took are counted by it alone; the others stay with r0.
    let after: Vec<usize> = (0..SOURCED)
        .map(|index| usize::from(moving.contains(&index)))
        .collect();
    until_shown_by(&replicas, &names, &after, Replica::source_errors).await;
}
