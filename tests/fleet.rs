//! A fleet of three `prescale serve` processes on 127.0.0.1, coordinated through a real etcd, with a
//! real Prometheus as every workload's history: each workload is planned by exactly one replica
//! (the one following its source), and answered through every replica (GetPlan, Forecast and the
//! KEDA scaler's GetMetrics are forwarded to the owner; a forwarded call that reaches a non-owner
//! is refused, so nothing loops). After `kill -9` of a replica, its workloads answer again through
//! the other two within 10 s. Workloads given to one replica are held in etcd and followed by all.
//! A replica frozen (SIGSTOP) past its lease makes no accepted write once resumed. And `prescale
//! serve` with `[fleet]` and no etcd fails at start, clearly.

mod etcd_support;
mod fleet_support;
mod prometheus_support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use prescale::service::externalscaler::external_scaler_client::ExternalScalerClient;
use prescale::service::externalscaler::{GetMetricsRequest, ScaledObjectRef};
use prescale::service::proto::{
    self, ForecastRequest, GetPlanRequest, GetWorkloadRequest, UpsertWorkloadRequest,
    WatchPlansRequest, forecast_service_client::ForecastServiceClient,
    plan_service_client::PlanServiceClient,
};
use prometheus_support::{LocalPrometheus, Seed, free_port};
use tonic::transport::Channel;

/// Workloads, each on its own Prometheus series.
const WORKLOADS: usize = 6;
/// Days of 30-minute history each series has.
const HISTORY_DAYS: usize = 10;
/// The membership lease: a killed replica's workloads move after it.
const LEASE_TTL: &str = "3s";

/// A `prescale serve` replica of the fleet; killed on drop.
struct Replica {
    /// Its member id.
    id: String,
    /// Its gRPC address.
    address: String,
    /// Its KEDA scaler's address.
    scaler: String,
    child: Child,
    /// Its data directory and config file.
    _directory: tempfile::TempDir,
}

impl Replica {
    fn start(id: &str, etcd: &str) -> Self {
        let directory = tempfile::tempdir().unwrap();
        let address = format!("127.0.0.1:{}", free_port());
        let scaler = format!("127.0.0.1:{}", free_port());
        let config = directory.path().join("prescale.toml");
        std::fs::write(
            &config,
            config_text(directory.path(), id, &address, &scaler, etcd),
        )
        .unwrap();
        let child = fleet_support::spawn_joined(id, &config);
        Self {
            id: id.to_owned(),
            address,
            scaler,
            child,
            _directory: directory,
        }
    }

    async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.address))
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    /// `kill -9`.
    fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Sends `signal` (SIGSTOP, SIGCONT) to the process.
    fn signal(&self, signal: libc::c_int) {
        let pid = libc::pid_t::try_from(self.child.id()).unwrap();
        // SAFETY: kill(2) on a child this test started and has not reaped.
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn config_text(data: &Path, id: &str, address: &str, scaler: &str, etcd: &str) -> String {
    format!(
        r#"data_dir = "{data}"
[server]
listen = "{address}"
metrics_listen = "off"
[scaler]
listen = "{scaler}"
[registry]
schedule = "off"
[sources]
poll_interval = "1s"
retry_initial = "200ms"
retry_max = "1s"
[fleet]
etcd_endpoints = ["{etcd}"]
member_id = "{id}"
advertise = "{address}"
scaler_advertise = "{scaler}"
lease_ttl = "{LEASE_TTL}"
etcd_timeout = "2s"
"#,
        data = data.display()
    )
}

fn workload_name(index: usize) -> String {
    format!("w{index}")
}

/// Workload `w<index>` on series `load_<index>`, pulled from `prometheus` when given.
fn upsert(index: usize, prometheus: Option<&str>) -> UpsertWorkloadRequest {
    UpsertWorkloadRequest {
        workload: Some(proto::Workload {
            name: workload_name(index),
            series: Some(proto::SeriesRef {
                name: format!("load_{index}"),
                labels: Default::default(),
            }),
            capacity_per_replica: 100.0,
            max_replicas: 100,
            // The plan starts at the step after the newest point (the last half hour); a 30-minute
            // warm-up makes it cover now, which the scaler answers for.
            warm_up: "30m".to_owned(),
            mode: "forecast-and-scale".to_owned(),
            source: prometheus.map(|url| proto::Source {
                kind: Some(proto::source::Kind::Prometheus(proto::PrometheusSource {
                    url: url.to_owned(),
                    query: format!("load{{w=\"{index}\"}}"),
                    step: "30m".to_owned(),
                    timeout: "5s".to_owned(),
                    ..Default::default()
                })),
            }),
            ..Default::default()
        }),
    }
}

/// GetPlan of `name` through `channel`: the plan's revision and generation time, which identify
/// the plan (and so the replica that made it).
async fn plan_identity(channel: Channel, name: &str) -> Result<(u64, i64), tonic::Status> {
    let plan = PlanServiceClient::new(channel)
        .get_plan(GetPlanRequest {
            workload: name.to_owned(),
        })
        .await?
        .into_inner();
    Ok((plan.revision, plan.generated_at_ms))
}

/// The replica (of those at `live` indexes) following workload `name`'s source: the one that
/// owns it.
async fn owner_of(replicas: &[Replica], live: &[usize], name: &str) -> Option<usize> {
    let mut owners = Vec::new();
    for index in live.iter().copied() {
        let replica = &replicas[index];
        let workload = PlanServiceClient::new(replica.channel().await)
            .get_workload(GetWorkloadRequest {
                name: name.to_owned(),
            })
            .await
            .unwrap()
            .into_inner();
        if workload
            .source_status
            .is_some_and(|status| status.last_success_ms > 0)
        {
            owners.push(index);
        }
    }
    assert!(owners.len() <= 1, "{name} followed by replicas {owners:?}");
    owners.first().copied()
}

fn seeds() -> Vec<(String, Vec<(i64, f64)>)> {
    let now = prescale::domain::Timestamp::now().as_millis();
    let last = now.div_euclid(30 * 60_000) * 30 * 60_000;
    let taxi = prometheus_support::nyc_taxi_ending_at(last, HISTORY_DAYS);
    (0..WORKLOADS)
        .map(|index| {
            let scale = 1.0 + index as f64 / 4.0;
            let samples = taxi
                .iter()
                .map(|(at, value)| (*at, value * scale))
                .collect();
            (format!("load{{w=\"{index}\"}}"), samples)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_share_the_workloads_and_survive_a_kill_9() {
    if etcd_support::missing() || prometheus_support::missing() {
        return;
    }
    let etcd = etcd_support::LocalEtcd::start();
    let series = seeds();
    let prometheus = LocalPrometheus::start(
        &series
            .iter()
            .map(|(name, samples)| Seed {
                name: name.clone(),
                samples,
            })
            .collect::<Vec<_>>(),
    );
    let mut replicas: Vec<Replica> = ["r0", "r1", "r2"]
        .iter()
        .map(|id| Replica::start(id, &etcd.url))
        .collect();
    // The workloads are given to one replica; the fleet holds them in etcd and every replica
    // follows them.
    let mut plans = PlanServiceClient::new(replicas[0].channel().await);
    for index in 0..WORKLOADS {
        plans
            .upsert_workload(upsert(index, Some(&prometheus.url)))
            .await
            .unwrap();
    }

    // Every workload is planned, and answered alike through every replica: the owner's plan.
    let names: Vec<String> = (0..WORKLOADS).map(workload_name).collect();
    let started = Instant::now();
    let mut identities = BTreeMap::new();
    for name in &names {
        loop {
            let mut answers = Vec::new();
            for replica in &replicas {
                answers.push(plan_identity(replica.channel().await, name).await);
            }
            let first = answers[0].as_ref().ok().copied();
            if let Some(first) = first
                && answers
                    .iter()
                    .all(|answer| answer.as_ref().ok() == Some(&first))
            {
                identities.insert(name.clone(), first);
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(300),
                "{name} not answered alike through every replica: {answers:?}"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    eprintln!("every workload planned in {:?}", started.elapsed());

    // Exactly one replica follows each workload's source; between them they follow all.
    let mut owners = BTreeMap::new();
    for name in &names {
        let owner = owner_of(&replicas, &[0, 1, 2], name)
            .await
            .unwrap_or_else(|| panic!("nobody follows {name}"));
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
                series: Some(proto::SeriesRef {
                    name: format!("load_{index}"),
                    labels: Default::default(),
                }),
                horizon: "2h".to_owned(),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|status| panic!("forecast through {}: {status}", replica.id))
            .into_inner();
        forecasts.push(format!("{:?}", forecast.mean));
        let scaler = Channel::from_shared(format!("http://{}", replica.scaler))
            .unwrap()
            .connect()
            .await
            .unwrap();
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
        plan_identity(replicas[bystander].channel().await, name)
            .await
            .unwrap()
    );

    // kill -9 the replica owning the most: its workloads answer again through the others.
    replicas[victim].kill();
    let killed = Instant::now();
    let survivors: Vec<usize> = (0..replicas.len())
        .filter(|index| *index != victim)
        .collect();
    let mut pending: Vec<&String> = orphans.clone();
    while !pending.is_empty() && killed.elapsed() < Duration::from_secs(60) {
        let mut still = Vec::new();
        for name in pending {
            let mut answered = true;
            for survivor in &survivors {
                answered &= plan_identity(replicas[*survivor].channel().await, name)
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
    assert!(pending.is_empty(), "{pending:?} not answered after 60 s");
    assert!(
        recovered <= Duration::from_secs(10),
        "re-owned after {recovered:?}"
    );
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

#[test]
fn serve_in_fleet_mode_without_etcd_fails_at_start_and_says_why() {
    let directory = tempfile::tempdir().unwrap();
    let address = format!("127.0.0.1:{}", free_port());
    let dead = format!("http://127.0.0.1:{}", free_port());
    let config = directory.path().join("prescale.toml");
    let text = config_text(directory.path(), "lonely", &address, "127.0.0.1:1", &dead)
        .replace("[scaler]\nlisten = \"127.0.0.1:1\"\n", "")
        .replace("scaler_advertise = \"127.0.0.1:1\"\n", "");
    std::fs::write(&config, text).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_prescale"))
        .arg("--config")
        .arg(&config)
        .arg("serve")
        .env_remove("PRESCALE_CONFIG")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains("etcd is unreachable"), "{stderr}");
    assert!(stderr.contains("[fleet]"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_frozen_past_its_lease_makes_no_accepted_write() {
    if etcd_support::missing() {
        return;
    }
    let etcd = etcd_support::LocalEtcd::start();
    let frozen = Replica::start("frozen", &etcd.url);
    let other = Replica::start("other", &etcd.url);
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
    let ttl = humantime::parse_duration(LEASE_TTL).unwrap();
    tokio::time::sleep(ttl * 2 + Duration::from_secs(1)).await;
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
