//! `prescale serve` replicas of one fleet on 127.0.0.1 for the fleet tests: each with its own data
//! directory, gRPC, KEDA scaler and `/metrics` listeners, joined through a real etcd, killed on
//! drop; and the workloads they share, each on its own series of a real Prometheus. A test that
//! uses it also declares `mod etcd_support;` and `mod prometheus_support;`.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use prescale::service::proto::{
    self, GetPlanRequest, UpsertWorkloadRequest, plan_service_client::PlanServiceClient,
};
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use crate::prometheus_support::{free_port, http_get};

/// The membership lease of the replicas.
pub(crate) const LEASE_TTL: Duration = Duration::from_secs(3);

/// Days of 30-minute history each workload's series has.
pub(crate) const HISTORY_DAYS: usize = 10;

/// A `prescale serve` replica; killed on drop.
pub(crate) struct Replica {
    /// Its member id.
    pub(crate) id: String,
    /// Its gRPC address.
    pub(crate) address: String,
    /// Its `/metrics` base URL.
    pub(crate) metrics: String,
    child: Child,
    /// Its data directory and config file.
    _directory: tempfile::TempDir,
}

impl Replica {
    /// Starts replica `id` against etcd at `etcd` and waits until its member key is in etcd.
    pub(crate) fn start(id: &str, etcd: &str) -> Self {
        let directory = tempfile::tempdir().unwrap();
        let address = format!("127.0.0.1:{}", free_port());
        let scaler = format!("127.0.0.1:{}", free_port());
        let metrics = format!("127.0.0.1:{}", free_port());
        let config = directory.path().join("prescale.toml");
        std::fs::write(
            &config,
            config_text(directory.path(), id, &address, &scaler, &metrics, etcd),
        )
        .unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_prescale"))
            .arg("--config")
            .arg(&config)
            .arg("serve")
            .env_remove("PRESCALE_CONFIG")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let joined = lines
            .by_ref()
            .map_while(Result::ok)
            .any(|line| line.starts_with("fleet member"));
        assert!(joined, "replica {id} did not join the fleet");
        // The rest is read, so the server never writes to a closed pipe.
        std::thread::spawn(move || lines.for_each(drop));
        Self {
            id: id.to_owned(),
            address,
            metrics: format!("http://{metrics}"),
            child,
            _directory: directory,
        }
    }

    /// A channel to its gRPC API.
    pub(crate) async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.address))
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    /// The value of gauge `name` on its `/metrics`, when it shows it.
    pub(crate) fn gauge(&self, name: &str) -> Option<f64> {
        let (status, body) = http_get(&self.metrics, "/metrics")?;
        assert_eq!(status, 200, "{body}");
        body.lines().find_map(|line| {
            line.strip_prefix(name)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
    }

    /// Its gRPC health of `service` (`""`: the server as a whole, as Kubernetes probes ask).
    pub(crate) async fn health(&self, service: &str) -> ServingStatus {
        let status = HealthClient::new(self.channel().await)
            .check(HealthCheckRequest {
                service: service.to_owned(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        ServingStatus::try_from(status).unwrap()
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn config_text(
    data: &Path,
    id: &str,
    address: &str,
    scaler: &str,
    metrics: &str,
    etcd: &str,
) -> String {
    format!(
        r#"data_dir = "{data}"
[server]
listen = "{address}"
metrics_listen = "{metrics}"
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
lease_ttl = "{ttl}s"
etcd_timeout = "1s"
"#,
        data = data.display(),
        ttl = LEASE_TTL.as_secs(),
    )
}

/// The name of workload `index`.
pub(crate) fn workload_name(index: usize) -> String {
    format!("w{index}")
}

/// The series of workload `index`.
pub(crate) fn series_name(index: usize) -> String {
    format!("load_{index}")
}

/// Workload `w<index>` on series `load_<index>`, pulled from `prometheus` when given.
pub(crate) fn upsert(index: usize, prometheus: Option<&str>) -> UpsertWorkloadRequest {
    UpsertWorkloadRequest {
        workload: Some(proto::Workload {
            name: workload_name(index),
            series: Some(proto::SeriesRef {
                name: series_name(index),
                labels: Default::default(),
            }),
            capacity_per_replica: 100.0,
            max_replicas: 100,
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

/// `count` series of the taxi demand, scaled apart, ending at the last half hour: the Prometheus
/// query `load{w="<index>"}` of each workload.
pub(crate) fn seeds(count: usize) -> Vec<(String, Vec<(i64, f64)>)> {
    let now = prescale::domain::Timestamp::now().as_millis();
    let last = now.div_euclid(30 * 60_000) * 30 * 60_000;
    let taxi = crate::prometheus_support::nyc_taxi_ending_at(last, HISTORY_DAYS);
    (0..count)
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

/// A real Prometheus holding the histories of `count` workloads ([`seeds`]).
pub(crate) fn prometheus_with(count: usize) -> crate::prometheus_support::LocalPrometheus {
    let series = seeds(count);
    crate::prometheus_support::LocalPrometheus::start(
        &series
            .iter()
            .map(|(name, samples)| crate::prometheus_support::Seed {
                name: name.clone(),
                samples,
            })
            .collect::<Vec<_>>(),
    )
}

/// Gives `count` workloads, each on its `prometheus` series, to the fleet through `replica`;
/// returns their names.
pub(crate) async fn upsert_all(replica: &Replica, count: usize, prometheus: &str) -> Vec<String> {
    let mut plans = PlanServiceClient::new(replica.channel().await);
    for index in 0..count {
        plans
            .upsert_workload(upsert(index, Some(prometheus)))
            .await
            .unwrap();
    }
    (0..count).map(workload_name).collect()
}

/// GetPlan of `name` through `channel`.
pub(crate) async fn get_plan(channel: Channel, name: &str) -> Result<proto::Plan, tonic::Status> {
    Ok(PlanServiceClient::new(channel)
        .get_plan(GetPlanRequest {
            workload: name.to_owned(),
        })
        .await?
        .into_inner())
}

/// The plan's revision and generation time, which identify it (and so the replica that made it).
pub(crate) fn identity(plan: &proto::Plan) -> (u64, i64) {
    (plan.revision, plan.generated_at_ms)
}

/// Waits (up to `bound`) until every workload of `names` answers the same plan through every
/// replica; returns each one's plan as answered.
pub(crate) async fn answered_alike(
    replicas: &[&Replica],
    names: &[String],
    bound: Duration,
) -> Vec<proto::Plan> {
    let started = std::time::Instant::now();
    let mut plans = Vec::new();
    for name in names {
        loop {
            let mut answers = Vec::new();
            for replica in replicas {
                answers.push(get_plan(replica.channel().await, name).await);
            }
            let first = answers[0].as_ref().ok().map(identity);
            if first.is_some()
                && answers
                    .iter()
                    .all(|answer| answer.as_ref().ok().map(identity) == first)
            {
                plans.push(answers.swap_remove(0).unwrap());
                break;
            }
            assert!(
                started.elapsed() < bound,
                "{name} not answered alike through every replica within {bound:?}: {:?}",
                answers
                    .iter()
                    .map(|answer| answer.as_ref().map(identity))
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
    plans
}
