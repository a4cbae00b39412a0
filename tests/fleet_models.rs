//! Fleet models: `prescale serve` replicas on 127.0.0.1 with a real etcd, a real Prometheus as the
//! workloads' history and a model store in a shared directory (`[fleet] model_store`). The owner
//! of a series writes its model version to the store and moves the series' live pointer in etcd;
//! after `kill -9` of the owner, the new owner serves the same version without fitting;
//! `prescale models rollback` moves the pointer and the owner serves the version it names; a store
//! that refuses writes fails the retrain, and the live model and its pointer stay.

mod etcd_support;
mod prometheus_support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use prescale::fleet::etcd::Etcd;
use prescale::service::proto::{
    self, GetJobRequest, GetPlanRequest, GetWorkloadRequest, JobState, RetrainRequest,
    UpsertWorkloadRequest, admin_service_client::AdminServiceClient,
    plan_service_client::PlanServiceClient,
};
use prometheus_support::{LocalPrometheus, Seed, free_port, http_get};
use tonic::transport::Channel;

/// Days of 30-minute history each series has.
const HISTORY_DAYS: usize = 10;

/// A `prescale serve` replica sharing models through `store`; killed on drop.
struct Member {
    /// Its member id.
    id: String,
    /// Its gRPC address.
    address: String,
    /// Its `/metrics` base URL.
    metrics: String,
    /// Its config file.
    config: PathBuf,
    child: Child,
    /// Its data directory and config file.
    _directory: tempfile::TempDir,
}

impl Member {
    fn start(id: &str, etcd: &str, store: &Path) -> Self {
        let directory = tempfile::tempdir().unwrap();
        let address = format!("127.0.0.1:{}", free_port());
        let metrics = format!("127.0.0.1:{}", free_port());
        let config = directory.path().join("prescale.toml");
        let text = format!(
            r#"data_dir = "{data}"
[server]
listen = "{address}"
metrics_listen = "{metrics}"
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
lease_ttl = "3s"
etcd_timeout = "2s"
model_store = "file://{store}"
"#,
            data = directory.path().display(),
            store = store.display(),
        );
        std::fs::write(&config, text).unwrap();
        let child = etcd_support::start_member(id, &config);
        Self {
            id: id.to_owned(),
            address,
            metrics: format!("http://{metrics}"),
            config,
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

    /// The value of counter `name` on its `/metrics`.
    fn counter(&self, name: &str) -> f64 {
        let (status, body) = http_get(&self.metrics, "/metrics").expect("/metrics answers");
        assert_eq!(status, 200);
        body.lines()
            .find_map(|line| line.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name} missing from /metrics"))
            .trim()
            .parse()
            .unwrap()
    }

    /// `prescale models rollback load_0 [version]` with its config; what it prints.
    fn rollback(&self, version: Option<u64>) -> String {
        let output = Command::new(env!("CARGO_BIN_EXE_prescale"))
            .arg("--config")
            .arg(&self.config)
            .args(["models", "rollback", "load_0"])
            .args(version.map(|version| version.to_string()))
            .env_remove("PRESCALE_CONFIG")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{stdout}{stderr}");
        stdout
    }

    /// Whether it follows workload `name`'s source (it owns the workload).
    async fn follows(&self, name: &str) -> bool {
        PlanServiceClient::new(self.channel().await)
            .get_workload(GetWorkloadRequest {
                name: name.to_owned(),
            })
            .await
            .is_ok_and(|workload| {
                workload
                    .into_inner()
                    .source_status
                    .is_some_and(|status| status.last_success_ms > 0)
            })
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A Prometheus holding `count` 10-day series `load{w="<i>"}`, and workloads `w<i>` on them.
fn prometheus(count: usize) -> LocalPrometheus {
    let now = prescale::domain::Timestamp::now().as_millis();
    let last = now.div_euclid(30 * 60_000) * 30 * 60_000;
    let taxi = prometheus_support::nyc_taxi_ending_at(last, HISTORY_DAYS);
    let series: Vec<(String, Vec<(i64, f64)>)> = (0..count)
        .map(|index| {
            let scale = 1.0 + index as f64 / 4.0;
            let samples = taxi.iter().map(|(at, v)| (*at, v * scale)).collect();
            (format!("load{{w=\"{index}\"}}"), samples)
        })
        .collect();
    LocalPrometheus::start(
        &series
            .iter()
            .map(|(name, samples)| Seed {
                name: name.clone(),
                samples,
            })
            .collect::<Vec<_>>(),
    )
}

fn upsert(index: usize, prometheus: &str) -> UpsertWorkloadRequest {
    UpsertWorkloadRequest {
        workload: Some(proto::Workload {
            name: format!("w{index}"),
            series: Some(series(index)),
            capacity_per_replica: 100.0,
            max_replicas: 100,
            // The plan starts at the step after the newest point; the warm-up makes it cover now.
            warm_up: "30m".to_owned(),
            mode: "forecast-and-scale".to_owned(),
            source: Some(proto::Source {
                kind: Some(proto::source::Kind::Prometheus(proto::PrometheusSource {
                    url: prometheus.to_owned(),
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

fn series(index: usize) -> proto::SeriesRef {
    proto::SeriesRef {
        name: format!("load_{index}"),
        labels: Default::default(),
    }
}

/// The registry version of the model behind workload `name`'s plan through `channel` (its
/// `model_version` ends in `-v<version>`).
async fn plan_model_version(channel: Channel, name: &str) -> Result<u64, tonic::Status> {
    let plan = PlanServiceClient::new(channel)
        .get_plan(GetPlanRequest {
            workload: name.to_owned(),
        })
        .await?
        .into_inner();
    let (_, version) = plan
        .model_version
        .rsplit_once("-v")
        .unwrap_or_else(|| panic!("{} names no version", plan.model_version));
    Ok(version.parse().unwrap())
}

/// Waits until workload `name` has a plan through `channel`; its model version.
async fn wait_for_plan(channel: &Channel, name: &str, within: Duration) -> u64 {
    let started = Instant::now();
    loop {
        match plan_model_version(channel.clone(), name).await {
            Ok(version) => return version,
            Err(status) => assert!(
                started.elapsed() < within,
                "{name} has no plan after {within:?}: {status}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The live version each series' pointer in etcd names, by series.
async fn pointers(etcd: &Etcd) -> BTreeMap<String, u64> {
    let (entries, _) = etcd.get_prefix("/prescale/models/").await.unwrap();
    entries
        .into_iter()
        .map(|entry| {
            let pointer: serde_json::Value = serde_json::from_slice(&entry.value).unwrap();
            let series = entry.key["/prescale/models/".len()..].to_owned();
            (series, pointer["live"]["version"].as_u64().unwrap())
        })
        .collect()
}

/// Every version file under the store directory.
fn version_files(store: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![store.to_owned()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|ext| ext == "model") {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_owner_stores_versions_and_a_new_owner_serves_them_without_fitting() {
    if etcd_support::missing() || prometheus_support::missing() {
        return;
    }
    const WORKLOADS: usize = 4;
    let etcd = etcd_support::LocalEtcd::start();
    let prometheus = prometheus(WORKLOADS);
    let store = tempfile::tempdir().unwrap();
    let mut members: Vec<Member> = ["m0", "m1"]
        .iter()
        .map(|id| Member::start(id, &etcd.url, store.path()))
        .collect();
    let mut plans = PlanServiceClient::new(members[0].channel().await);
    for index in 0..WORKLOADS {
        plans
            .upsert_workload(upsert(index, &prometheus.url))
            .await
            .unwrap();
    }
    let names: Vec<String> = (0..WORKLOADS).map(|index| format!("w{index}")).collect();
    let mut versions = BTreeMap::new();
    for name in &names {
        let channel = members[0].channel().await;
        versions.insert(
            name.clone(),
            wait_for_plan(&channel, name, Duration::from_secs(300)).await,
        );
    }

    // Each owner wrote its series' version file to the shared store and moved the pointer in etcd
    // to it; every plan is made with the version its pointer names.
    let client = Etcd::connect(std::slice::from_ref(&etcd.url), Duration::from_secs(2))
        .await
        .unwrap();
    let live = pointers(&client).await;
    assert_eq!(live.len(), WORKLOADS, "{live:?}");
    for (index, name) in names.iter().enumerate() {
        assert_eq!(live[&format!("load_{index}")], versions[name], "{name}");
    }
    assert_eq!(version_files(store.path()).len(), WORKLOADS);

    // kill -9 the owner of w0: the survivor serves its workloads with the same versions, read
    // from the store, and fits nothing.
    let mut owners = Vec::new();
    for name in &names {
        let mut owner = None;
        for (index, member) in members.iter().enumerate() {
            if member.follows(name).await {
                owner = Some(index);
            }
        }
        owners.push(owner.unwrap_or_else(|| panic!("nobody follows {name}")));
    }
    let victim = owners[0];
    let survivor = 1 - victim;
    let orphans: Vec<&String> = names
        .iter()
        .zip(&owners)
        .filter(|(_, owner)| **owner == victim)
        .map(|(name, _)| name)
        .collect();
    let fits_before = members[survivor].counter("prescale_model_fits_total");
    let loaded_before = members[survivor].counter("prescale_models_loaded_total");
    members[victim].child.kill().unwrap();
    members[victim].child.wait().unwrap();
    let killed = Instant::now();
    let channel = members[survivor].channel().await;
    for name in &orphans {
        let version = wait_for_plan(&channel, name, Duration::from_secs(60)).await;
        assert_eq!(version, versions[*name], "{name} through the new owner");
    }
    eprintln!(
        "{} workloads of {} answered again through {} after {:?}",
        orphans.len(),
        members[victim].id,
        members[survivor].id,
        killed.elapsed()
    );
    for name in &orphans {
        assert!(members[survivor].follows(name).await, "{name} not re-owned");
    }
    assert_eq!(
        members[survivor].counter("prescale_model_fits_total"),
        fits_before,
        "the new owner fitted instead of loading the live versions"
    );
    assert!(
        members[survivor].counter("prescale_models_loaded_total")
            >= loaded_before + orphans.len() as f64
    );
    assert_eq!(pointers(&client).await, live);
    assert_eq!(version_files(store.path()).len(), WORKLOADS);
}

/// Retrains `load_0` through `channel` and waits until the job has finished.
async fn retrain(channel: &Channel) -> proto::Job {
    let mut admin = AdminServiceClient::new(channel.clone());
    let job = admin
        .retrain(RetrainRequest {
            series: vec![series(0)],
            all: false,
        })
        .await
        .unwrap()
        .into_inner();
    let started = Instant::now();
    loop {
        let job = admin
            .get_job(GetJobRequest { id: job.id.clone() })
            .await
            .unwrap()
            .into_inner();
        if job.finished_at_ms > 0 {
            return job;
        }
        assert!(started.elapsed() < Duration::from_secs(300), "{job:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until workload `name`'s plan through `channel` is made with model version `version`.
async fn wait_for_version(channel: &Channel, name: &str, version: u64) {
    let started = Instant::now();
    loop {
        let served = plan_model_version(channel.clone(), name).await.unwrap();
        if served == version {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{name} still planned with v{served}, not v{version}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Makes a directory refuse new files for as long as it lives: `chmod 555`, and for root (whom
/// permissions do not stop) also the immutable attribute.
struct ReadOnlyDir(PathBuf);

impl ReadOnlyDir {
    fn new(dir: &Path) -> Self {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o555)).unwrap();
        // SAFETY: geteuid(2) has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            let status = Command::new("chattr").arg("+i").arg(dir).status().unwrap();
            assert!(status.success(), "chattr +i {}", dir.display());
        }
        Self(dir.to_owned())
    }
}

impl Drop for ReadOnlyDir {
    fn drop(&mut self) {
        use std::os::unix::fs::PermissionsExt;
        // SAFETY: geteuid(2) has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            let _ = Command::new("chattr").arg("-i").arg(&self.0).status();
        }
        let _ = std::fs::set_permissions(&self.0, std::fs::Permissions::from_mode(0o755));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_moves_the_pointer_and_a_store_refusing_writes_fails_the_retrain() {
    if etcd_support::missing() || prometheus_support::missing() {
        return;
    }
    let etcd = etcd_support::LocalEtcd::start();
    let prometheus = prometheus(1);
    let store = tempfile::tempdir().unwrap();
    let member = Member::start("alone", &etcd.url, store.path());
    let channel = member.channel().await;
    PlanServiceClient::new(channel.clone())
        .upsert_workload(upsert(0, &prometheus.url))
        .await
        .unwrap();
    let version = wait_for_plan(&channel, "w0", Duration::from_secs(300)).await;
    let client = Etcd::connect(std::slice::from_ref(&etcd.url), Duration::from_secs(2))
        .await
        .unwrap();
    assert_eq!(pointers(&client).await["load_0"], version);
    assert_eq!(version_files(store.path()).len(), 1);

    // A retrain on the same data is kept (no fold is newer than the live model's training data),
    // and its version file written next to the live one.
    let job = retrain(&channel).await;
    assert_eq!(job.state(), JobState::Succeeded, "{job:?}");
    assert_eq!(version_files(store.path()).len(), 2);
    assert_eq!(pointers(&client).await["load_0"], version);

    // `prescale models rollback` moves the pointer, to the retrained version and back to the
    // previous live one; the owner plans with each.
    let stdout = member.rollback(Some(version + 1));
    assert!(
        stdout.contains(&format!("v{} is live", version + 1)),
        "{stdout}"
    );
    assert_eq!(pointers(&client).await["load_0"], version + 1);
    wait_for_version(&channel, "w0", version + 1).await;
    member.rollback(None);
    assert_eq!(pointers(&client).await["load_0"], version);
    wait_for_version(&channel, "w0", version).await;

    let pointer = client
        .get("/prescale/models/load_0")
        .await
        .unwrap()
        .unwrap();
    let files = version_files(store.path());

    // The series' directory refuses new files: the retrain's version cannot be written.
    let _read_only = ReadOnlyDir::new(files[0].parent().unwrap());
    let failures_before = member.counter("prescale_model_store_failures_total");
    let job = retrain(&channel).await;
    assert_eq!(job.state(), JobState::Failed, "{job:?}");
    assert_eq!(job.failures.len(), 1, "{job:?}");
    assert!(
        job.failures[0].error.contains("model store"),
        "{}",
        job.failures[0].error
    );
    assert!(member.counter("prescale_model_store_failures_total") > failures_before);

    // The pointer did not move, and the live version still makes the plans.
    let after = client
        .get("/prescale/models/load_0")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(after.value, pointer.value);
    assert_eq!(after.mod_revision, pointer.mod_revision);
    assert_eq!(version_files(store.path()), files);
    PlanServiceClient::new(channel.clone())
        .get_plan(GetPlanRequest {
            workload: "w0".to_owned(),
        })
        .await
        .unwrap();
    assert_eq!(plan_model_version(channel, "w0").await.unwrap(), version);
}
