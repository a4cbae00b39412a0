//! A fleet of three `prescale serve` processes on 127.0.0.1, coordinated through a real etcd, with a
//! real Prometheus as every workload's history: each workload is planned by exactly one replica
//! (the one following its source), and answered through every replica (GetPlan, Forecast and the
//! KEDA scaler's GetMetrics are forwarded to the owner; a forwarded call that reaches a non-owner
//! is refused, so nothing loops), and a report of applied replicas to any replica reaches the
//! owner, which records it in etcd: the next owner's plans start from it. After `kill -9` of a
//! replica, a call forwarded to it fails naming the member and its address, and its workloads
//! answer again through the other two once its lease (3 s here) has expired and they are replanned
//! (bounded at 60 s, for a loaded machine; the measured times are BENCHMARKS.md's, "Fleet").
//! Workloads given to one replica are held in etcd and followed by all.
//! A `WatchPlans` of every workload opens and streams the reachable owners' plans while the owner
//! of some is dead, and ends `UNAVAILABLE` once those have a new owner.
//! A replica frozen (SIGSTOP) past its lease makes no accepted write once resumed. And `prescale
//! serve` with `[fleet]` and no etcd, or as a member id a live member holds, fails at start,
//! clearly, without having said it serves.

mod etcd_support;
mod fleet_support;
mod prometheus_support;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::{Duration, Instant};

use fleet_support::{
    LEASE_TTL, Replica, ReplicaConfig, answered_alike, get_plan, identity, series_ref,
    settled_owner, upsert, workload_name,
};
use prescale::service::externalscaler::external_scaler_client::ExternalScalerClient;
use prescale::service::externalscaler::{GetMetricsRequest, ScaledObjectRef};
use prescale::service::proto::{
    ForecastRequest, GetPlanRequest, GetWorkloadRequest, ReportAppliedRequest, WatchPlansRequest,
    forecast_service_client::ForecastServiceClient, plan_service_client::PlanServiceClient,
};
use prometheus_support::free_port;

/// Workloads, each on its own Prometheus series.
const WORKLOADS: usize = 6;

/// Replica `id` of the fleet on `etcd`, with a KEDA scaler.
fn start(id: &str, etcd: &str) -> Replica {
    ReplicaConfig::new(id, etcd).scaler().start()
}

/// Replicas r0, r1 and r2 of the fleet on `etcd`.
fn start_three(etcd: &str) -> Vec<Replica> {
    ["r0", "r1", "r2"]
        .iter()
        .map(|id| start(id, etcd))
        .collect()
}

/// The replica (of those at `live` indexes) following workload `name`'s source: the one that
/// owns it.
async fn owner_of(replicas: &[Replica], live: &[usize], name: &str) -> Option<usize> {
    let mut owners = Vec::new();
    for index in live.iter().copied() {
        if replicas[index].follows(name).await.unwrap() {
            owners.push(index);
        }
    }
    assert!(owners.len() <= 1, "{name} followed by replicas {owners:?}");
    owners.first().copied()
}

/// Reports through `replica` that `replicas` of workload `name` run now.
async fn report_applied(replica: &Replica, name: &str, replicas: u32) {
    PlanServiceClient::new(replica.channel().await)
        .report_applied(ReportAppliedRequest {
            workload: name.to_owned(),
            replicas,
            time_ms: 0,
        })
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_share_the_workloads_and_survive_a_kill_9() {
    if etcd_support::missing() || prometheus_support::missing() {
        return;
    }
    let etcd = etcd_support::LocalEtcd::start();
    let prometheus = fleet_support::prometheus_with(WORKLOADS);
    let mut replicas = start_three(&etcd.url);
    // The workloads are given to one replica; the fleet holds them in etcd and every replica
    // follows them.
    let names = fleet_support::upsert_all(&replicas[0], WORKLOADS, &prometheus.url).await;

    // Every workload is planned, and answered alike through every replica: the owner's plan.
    let started = Instant::now();
    answered_alike(
        &replicas.iter().collect::<Vec<_>>(),
        &names,
        Duration::from_secs(300),
    )
    .await;
    eprintln!("every workload planned in {:?}", started.elapsed());

    // Exactly one replica follows each workload's source; between them they follow all. Plans
    // may answer while a replica still joins, and a joining replica warms (follows) its future
    // share before the current owner hands it over, so this is waited for.
    let mut owners = BTreeMap::new();
    for name in &names {
        let owner = settled_owner(&replicas, &[0, 1, 2], name).await;
        owners.insert(name.clone(), owner);
    }
    eprintln!("owners: {owners:?}");
    let victim = (0..replicas.len())
        .max_by_key(|index| owners.values().filter(|owner| *owner == index).count())
        .unwrap();
    let orphans: Vec<&String> = names
        .iter()
        .filter(|name| owners[*name] == victim)
        .collect();
    assert!(!orphans.is_empty());

    // Forecast and the KEDA scaler answer alike through every replica.
    let name = orphans[0];
    let index: usize = name[1..].parse().unwrap();
    let mut forecasts = Vec::new();
    let mut metrics = Vec::new();
    for replica in &replicas {
        let forecast = ForecastServiceClient::new(replica.channel().await)
            .forecast(ForecastRequest {
                series: Some(series_ref(index)),
                horizon: "2h".to_owned(),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|status| panic!("forecast through {}: {status}", replica.id))
            .into_inner();
        forecasts.push(format!("{:?}", forecast.mean));
        let scaler = replica.scaler_channel().await;
        let reference = ScaledObjectRef {
            name: "checkout".to_owned(),
            namespace: "shop".to_owned(),
            scaler_metadata: [("workload".to_owned(), name.clone())].into(),
        };
        let values = ExternalScalerClient::new(scaler)
            .get_metrics(GetMetricsRequest {
                scaled_object_ref: Some(reference),
                metric_name: String::new(),
            })
            .await
            .unwrap_or_else(|status| panic!("GetMetrics through {}: {status}", replica.id))
            .into_inner();
        metrics.push(values.metric_values[0].metric_value);
    }
    assert!(forecasts.iter().all(|forecast| *forecast == forecasts[0]));
    assert!(!forecasts[0].is_empty());
    assert!(
        metrics
            .iter()
            .all(|value| *value == metrics[0] && *value > 0),
        "{metrics:?}"
    );

    // A call marked as forwarded that reaches a replica which does not own the workload is
    // refused, not forwarded again.
    let bystander = (victim + 1) % replicas.len();
    let mut marked = tonic::Request::new(GetPlanRequest {
        workload: name.clone(),
    });
    marked
        .metadata_mut()
        .insert("x-prescale-forwarded", "1".parse().unwrap());
    let refused = PlanServiceClient::new(replicas[bystander].channel().await)
        .get_plan(marked)
        .await
        .expect_err("a forwarded call to a non-owner");
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused}");

    // WatchPlans through a non-owner streams the owner's plans.
    let mut watch = PlanServiceClient::new(replicas[bystander].channel().await)
        .watch_plans(WatchPlansRequest {
            workloads: vec![name.clone()],
        })
        .await
        .unwrap()
        .into_inner();
    let first = tokio::time::timeout(Duration::from_secs(30), watch.message())
        .await
        .expect("a plan within 30 s")
        .unwrap()
        .expect("the stream is open");
    assert_eq!(first.workload, *name);
    assert_eq!(
        (first.revision, first.generated_at_ms),
        identity(
            &get_plan(replicas[bystander].channel().await, name)
                .await
                .unwrap()
        )
    );

    // kill -9 the replica owning the most: its workloads answer again through the others.
    replicas[victim].kill();
    let killed = Instant::now();
    let survivors: Vec<usize> = (0..replicas.len())
        .filter(|index| *index != victim)
        .collect();
    // Until its lease expires the survivors still forward its workloads' calls to it: those fail
    // naming the owner and its address (once the pooled connection's reset has been seen).
    let gone = format!(
        "member {} at {}",
        replicas[victim].id, replicas[victim].address
    );
    let mut named = None;
    while named.is_none() && killed.elapsed() < LEASE_TTL {
        match get_plan(replicas[survivors[0]].channel().await, orphans[0]).await {
            Err(status) if status.message().contains(&gone) => named = Some(status),
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    let named = named.unwrap_or_else(|| panic!("no forwarded call failed naming {gone}"));
    assert_eq!(named.code(), tonic::Code::Unavailable, "{named}");
    let mut pending: Vec<&String> = orphans.clone();
    while !pending.is_empty() && killed.elapsed() < Duration::from_secs(60) {
        let mut still = Vec::new();
        for name in pending {
            let mut answered = true;
            for survivor in &survivors {
                answered &= get_plan(replicas[*survivor].channel().await, name)
                    .await
                    .is_ok();
            }
            if !answered {
                still.push(name);
            }
        }
        pending = still;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let recovered = killed.elapsed();
    eprintln!(
        "{} workloads of the killed replica answered again after {recovered:?}",
        orphans.len()
    );
    // How fast is a benchmark's question (BENCHMARKS.md, "Fleet"); a test under load only
    // checks that the workloads are re-owned.
    assert!(pending.is_empty(), "{pending:?} not answered after 60 s");
    // The proxied watch ended when its workload's owner went; it says why.
    let ended = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match watch.message().await {
                Ok(Some(_)) => continue,
                other => return other,
            }
        }
    })
    .await
    .expect("the watch ends within 30 s");
    let status = ended.expect_err("the watch ends with a status");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status}");
    for name in &orphans {
        let owner = owner_of(&replicas, &survivors, name).await;
        assert!(owner.is_some(), "{name}: followed by no survivor");
    }
    drop(etcd);
}

/// `ReportApplied` sent to a replica that does not own the workload is recorded by the owner,
/// which serves the workload's KEDA metric from it: reported one replica short of the plan, under
/// a `scaleUpTolerance` of 0.5 the owner serves a value past the tolerance band, where without a
/// report it serves the plan itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_of_applied_replicas_to_any_replica_reaches_the_owner() {
    if etcd_support::missing() || prometheus_support::missing() {
        return;
    }
    let etcd = etcd_support::LocalEtcd::start();
    let prometheus = fleet_support::prometheus_with(2);
    let replicas: Vec<Replica> = ["r0", "r1"].iter().map(|id| start(id, &etcd.url)).collect();
    let names = fleet_support::upsert_all(&replicas[0], 2, &prometheus.url).await;
    answered_alike(
        &replicas.iter().collect::<Vec<_>>(),
        &names,
        Duration::from_secs(300),
    )
    .await;
    let name = &names[0];
    let owner = settled_owner(&replicas, &[0, 1], name).await;
    let bystander = 1 - owner;

    let trigger = ScaledObjectRef {
        name: "reported".to_owned(),
        namespace: "shop".to_owned(),
        scaler_metadata: [
            ("workload".to_owned(), name.clone()),
            ("scaleUpTolerance".to_owned(), "0.5".to_owned()),
        ]
        .into(),
    };
    let mut scaler = ExternalScalerClient::new(replicas[owner].scaler_channel().await);
    let mut served = async || {
        scaler
            .get_metrics(GetMetricsRequest {
                scaled_object_ref: Some(trigger.clone()),
                metric_name: String::new(),
            })
            .await
            .unwrap()
            .into_inner()
            .metric_values[0]
            .metric_value
    };
    let planned = served().await;
    assert!(planned >= 3, "a plan of {planned} replicas");
    // The report is newer than the value served (the owner takes a time of 0 as its now).
    tokio::time::sleep(Duration::from_millis(20)).await;
    let running = u32::try_from(planned - 1).unwrap();
    report_applied(&replicas[bystander], name, running).await;
    // The owner knows `running` replicas run: `planned` of them is inside the HPA's tolerance of
    // `running`, so it serves the smallest count past it.
    let compensated = served().await;
    assert!(
        compensated > planned,
        "{compensated} served after a report of {running} with {planned} planned"
    );
    drop(etcd);
}

/// What an executor reported it runs outlives its workload's owner: reported through the replica
/// that does not own the workload, it is recorded in etcd by the owner (`GetWorkload` through
/// either replica shows it), and after `kill -9` of the owner the replica that takes the workload
/// over starts its first plan from the report, one replica a step down under a `max_step_down` of
/// 1, where the owner's plan, made before the report, starts at what the load needs, and shows the
/// same report, time included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_of_applied_replicas_outlives_a_kill_9_of_the_owner() {
    const REPORTED: u32 = 150;
    if etcd_support::missing() || prometheus_support::missing() {
        return;
    }
    let etcd = etcd_support::LocalEtcd::start();
    let prometheus = fleet_support::prometheus_with(1);
    let mut replicas: Vec<Replica> = ["r0", "r1"].iter().map(|id| start(id, &etcd.url)).collect();
    let mut stepping_down = upsert(0, Some(&prometheus.url));
    let workload = stepping_down.workload.as_mut().unwrap();
    workload.capacity_per_replica = 5000.0;
    workload.max_replicas = 200;
    workload.scale_in = Some(prescale::service::proto::ScaleIn {
        max_step_down: 1,
        stabilisation_window: String::new(),
    });
    let name = workload.name.clone();
    PlanServiceClient::new(replicas[0].channel().await)
        .upsert_workload(stepping_down)
        .await
        .unwrap();
    let names = [name.clone()];
    let before = answered_alike(
        &replicas.iter().collect::<Vec<_>>(),
        &names,
        Duration::from_secs(300),
    )
    .await
    .remove(0);
    let first_desired =
        |plan: &prescale::service::proto::Plan| plan.steps.as_ref().unwrap().desired[0];
    assert!(
        first_desired(&before) < REPORTED / 2,
        "the load needs {}",
        first_desired(&before)
    );
    let owner = settled_owner(&replicas, &[0, 1], &name).await;
    let survivor = 1 - owner;
    report_applied(&replicas[survivor], &name, REPORTED).await;
    // GetWorkload through either replica shows the owner's report.
    let reported = applied_shown(&replicas[survivor], &name).await;
    assert_eq!(reported.map(|report| report.replicas), Some(REPORTED));
    assert_eq!(applied_shown(&replicas[owner], &name).await, reported);

    replicas[owner].kill();
    let killed = Instant::now();
    let taken_over = loop {
        match get_plan(replicas[survivor].channel().await, &name).await {
            Ok(plan) if identity(&plan) != identity(&before) => break plan,
            _ => {
                assert!(
                    killed.elapsed() < Duration::from_secs(120),
                    "{name} not planned by replica {survivor} within 120 s of the kill"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    assert_eq!(first_desired(&taken_over), REPORTED - 1);
    // The new owner shows the report it read from etcd, with its time.
    assert_eq!(applied_shown(&replicas[survivor], &name).await, reported);
    drop(etcd);
}

/// The report of applied replicas `GetWorkload` of `name` through `replica` shows.
async fn applied_shown(
    replica: &Replica,
    name: &str,
) -> Option<prescale::service::proto::AppliedReport> {
    PlanServiceClient::new(replica.channel().await)
        .get_workload(GetWorkloadRequest {
            name: name.to_owned(),
        })
        .await
        .unwrap()
        .into_inner()
        .applied
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_of_many_workloads_outlives_one_unreachable_owner() {
    if etcd_support::missing() || prometheus_support::missing() {
        return;
    }
    let etcd = etcd_support::LocalEtcd::start();
    let prometheus = fleet_support::prometheus_with(WORKLOADS);
    let mut replicas = start_three(&etcd.url);
    let names = fleet_support::upsert_all(&replicas[0], WORKLOADS, &prometheus.url).await;
    answered_alike(
        &replicas.iter().collect::<Vec<_>>(),
        &names,
        Duration::from_secs(300),
    )
    .await;
    let victim = settled_owner(&replicas, &[0, 1, 2], &names[0]).await;
    let through = (victim + 1) % replicas.len();
    let mut reachable = Vec::new();
    for name in &names {
        if settled_owner(&replicas, &[0, 1, 2], name).await != victim {
            reachable.push(name.clone());
        }
    }
    assert!(
        !reachable.is_empty(),
        "replica {victim} owns every workload"
    );

    // The owner of some is killed: a watch of all opens at once, and the others' plans flow.
    replicas[victim].kill();
    let mut stream = PlanServiceClient::new(replicas[through].channel().await)
        .watch_plans(WatchPlansRequest {
            workloads: names.clone(),
        })
        .await
        .expect("a watch opened while one owner is unreachable")
        .into_inner();
    let opened = Instant::now();
    let mut waiting: BTreeSet<String> = reachable.iter().cloned().collect();
    while !waiting.is_empty() {
        let plan = tokio::time::timeout(Duration::from_secs(2), stream.message())
            .await
            .unwrap_or_else(|_| panic!("no plan of {waiting:?} within 2 s"))
            .unwrap_or_else(|status| panic!("the stream ended: {status}"))
            .expect("the stream ended without a status");
        waiting.remove(&plan.workload);
    }
    // Once the dead owner's lease has expired, its workloads have a new owner: the stream ends
    // `UNAVAILABLE`, and a new watch reaches every plan.
    let ended = loop {
        match tokio::time::timeout(Duration::from_secs(30), stream.message()).await {
            Ok(Ok(Some(_))) => continue,
            Ok(Ok(None)) => panic!("the stream ended without a status"),
            Ok(Err(status)) => break status,
            Err(_) => panic!("the stream never ended after the owner died"),
        }
    };
    assert_eq!(ended.code(), tonic::Code::Unavailable, "{ended}");
    eprintln!(
        "the stream ended {:?} after it opened: {ended}",
        opened.elapsed()
    );
    let survivors: Vec<&Replica> = (0..replicas.len())
        .filter(|index| *index != victim)
        .map(|index| &replicas[index])
        .collect();
    answered_alike(&survivors, &names, Duration::from_secs(120)).await;
    let mut again = PlanServiceClient::new(replicas[through].channel().await)
        .watch_plans(WatchPlansRequest {
            workloads: names.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut waiting: BTreeSet<String> = names.iter().cloned().collect();
    while !waiting.is_empty() {
        let plan = tokio::time::timeout(Duration::from_secs(10), again.message())
            .await
            .unwrap_or_else(|_| panic!("no plan of {waiting:?} within 10 s"))
            .unwrap()
            .unwrap();
        waiting.remove(&plan.workload);
    }
}

#[test]
fn serve_in_fleet_mode_without_etcd_fails_at_start_and_says_why() {
    let directory = tempfile::tempdir().unwrap();
    let dead = format!("http://127.0.0.1:{}", free_port());
    let written = ReplicaConfig::new("lonely", &dead).write(directory.path());
    let output = serve_until_it_exits(&written.config);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains("etcd is unreachable"), "{stderr}");
    assert!(stderr.contains("[fleet]"), "{stderr}");
    assert_never_said_serving(&output.stdout);
}

#[test]
fn serve_as_a_member_id_already_live_fails_at_start_without_saying_it_serves() {
    if etcd_support::missing() {
        return;
    }
    let etcd = etcd_support::LocalEtcd::start();
    let _live = ReplicaConfig::new("twin", &etcd.url).start();
    let directory = tempfile::tempdir().unwrap();
    let written = ReplicaConfig::new("twin", &etcd.url).write(directory.path());
    let output = serve_until_it_exits(&written.config);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains("is taken"), "{stderr}");
    assert_never_said_serving(&output.stdout);
}

/// Runs `prescale serve --config <config>` until it exits, and what it said.
fn serve_until_it_exits(config: &std::path::Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_prescale"))
        .arg("--config")
        .arg(config)
        .arg("serve")
        .env_remove("PRESCALE_CONFIG")
        .output()
        .unwrap()
}

/// A server that failed to join the fleet never said it served.
fn assert_never_said_serving(stdout: &[u8]) {
    let stdout = String::from_utf8_lossy(stdout);
    assert!(!stdout.contains("serving gRPC"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_frozen_past_its_lease_makes_no_accepted_write() {
    if etcd_support::missing() {
        return;
    }
    let etcd = etcd_support::LocalEtcd::start();
    let frozen = start("frozen", &etcd.url);
    let other = start("other", &etcd.url);
    PlanServiceClient::new(frozen.channel().await)
        .upsert_workload(upsert(0, None))
        .await
        .unwrap();
    let mut others = PlanServiceClient::new(other.channel().await);
    let seen = Instant::now();
    while others
        .get_workload(GetWorkloadRequest {
            name: workload_name(0),
        })
        .await
        .is_err()
    {
        assert!(
            seen.elapsed() < Duration::from_secs(10),
            "w0 never reached the other replica"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Frozen for twice the lease: etcd expires its member key meanwhile.
    frozen.signal(libc::SIGSTOP);
    tokio::time::sleep(LEASE_TTL * 2 + Duration::from_secs(1)).await;
    let client = prescale::fleet::etcd::Etcd::connect(
        std::slice::from_ref(&etcd.url),
        Duration::from_secs(2),
    )
    .await
    .unwrap();
    assert_eq!(client.get("/prescale/members/frozen").await.unwrap(), None);
    frozen.signal(libc::SIGCONT);

    // Its first write after waking is refused: the transaction requires its member key as it was.
    let refused = PlanServiceClient::new(frozen.channel().await)
        .upsert_workload(upsert(1, None))
        .await
        .expect_err("a write by a replica whose lease expired");
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused}");
    assert_eq!(client.get("/prescale/workloads/w1").await.unwrap(), None);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let missing = others
        .get_workload(GetWorkloadRequest {
            name: workload_name(1),
        })
        .await
        .expect_err("w1 was never written");
    assert_eq!(missing.code(), tonic::Code::NotFound);
}

/// `prescale serve` of a replica of the fleet on `etcd` advertising `advertise`, with a 3 s
/// `join_timeout`: it must stop by itself within 60 s; its exit status and standard error.
fn serve_advertising(etcd: &str, advertise: &str) -> (std::process::ExitStatus, String) {
    let directory = tempfile::tempdir().unwrap();
    let written = ReplicaConfig::new("misled", etcd)
        .join_timeout(Duration::from_secs(3))
        .write(directory.path());
    let mut child = Command::new(env!("CARGO_BIN_EXE_prescale"))
        .arg("--config")
        .arg(&written.config)
        .args(["serve", "--advertise", advertise])
        .env_remove("PRESCALE_CONFIG")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let Some(status) = fleet_support::exit_status_within(&mut child, Duration::from_secs(60))
    else {
        panic!("a replica advertising {advertise} still runs after 60 s");
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    (status, stderr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_whose_advertised_address_does_not_reach_it_refuses_to_start() {
    if etcd_support::missing() {
        return;
    }
    let etcd = etcd_support::LocalEtcd::start();
    let other = ReplicaConfig::new("r0", &etcd.url).start();
    // Nothing listens at the first address; the other replica answers at the second.
    for (advertise, reason) in [
        (
            "127.0.0.1:1",
            "cannot connect to member misled at 127.0.0.1:1",
        ),
        (other.address.as_str(), "another server answers there"),
    ] {
        let (status, stderr) = serve_advertising(&etcd.url, advertise);
        assert!(!status.success(), "{stderr}");
        assert!(
            stderr.contains(&format!(
                "fleet.advertise {advertise} does not reach this replica (member misled)"
            )),
            "{stderr}"
        );
        assert!(stderr.contains(reason), "{stderr}");
    }
    // It left the fleet: the other replica is its only member.
    let client = prescale::fleet::etcd::Etcd::connect(
        std::slice::from_ref(&etcd.url),
        Duration::from_secs(2),
    )
    .await
    .unwrap();
    let (members, _) = client.get_prefix("/prescale/members/").await.unwrap();
    assert_eq!(members.len(), 1, "{members:?}");
    drop(other);
    drop(etcd);
}
