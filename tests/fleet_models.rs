//! Fleet models: `prescale serve` replicas on 127.0.0.1 with a real etcd, a real Prometheus as the
//! workloads' history and a model store (`[fleet] model_store`) in a shared directory, in an S3
//! bucket (a real S3 server, `tests/s3_support`) or in an Azure Blob Storage container (Azurite,
//! `tests/azure_support`). The owner of a series writes its model version
//! to the store and moves the series' live pointer in etcd; after `kill -9` of the owner, the new
//! owner serves the same version without fitting;
//! `prescale models rollback` moves the pointer and the owner serves the version it names; a store
//! that refuses writes fails the retrain, and the live model and its pointer stay; a replica of a
//! second fleet pointed at the same store, or with refused credentials, does not start.

mod azure_support;
mod etcd_support;
mod fleet_support;
mod prometheus_support;
mod s3_support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use fleet_support::{Replica, ReplicaConfig, series_name, series_ref, settled_owner, upsert};
use prescale::fleet::etcd::Etcd;
use prescale::service::proto::{
    self, GetJobRequest, GetPlanRequest, JobState, RetrainRequest,
    admin_service_client::AdminServiceClient, plan_service_client::PlanServiceClient,
};
use tonic::transport::Channel;

/// Replica `id` of the fleet on `etcd`, with `/metrics`, sharing models through `store`.
fn start(id: &str, etcd: &str, store: &Path) -> Replica {
    Store::Directory(store.to_owned()).start(id, etcd)
}

/// Where the replicas of a test share their models.
enum Store {
    /// A directory.
    Directory(PathBuf),
    /// Under prefix `fleet` of bucket `models` of an S3 server.
    S3(s3_support::LocalS3),
    /// Under prefix `fleet` of container `models` of an Azure Blob service.
    Azure(azure_support::LocalAzure),
}

impl Store {
    /// Replica `id` of the fleet on `etcd`, with `/metrics`, sharing models through this store.
    fn start(&self, id: &str, etcd: &str) -> Replica {
        let config = ReplicaConfig::new(id, etcd).metrics();
        match self {
            Self::Directory(dir) => config.model_store(dir),
            Self::S3(server) => {
                config.cloud_model_store("s3://models/fleet", &server.url, server.env())
            }
            Self::Azure(server) => {
                config.cloud_model_store("az://models/fleet", &server.endpoint, server.env())
            }
        }
        .start()
    }

    /// Every version file in the store: as the S3 server keeps them, `<bucket>/<key>`; as the
    /// Azure one lists them, the blob's name.
    fn version_files(&self) -> Vec<PathBuf> {
        match self {
            Self::Directory(dir) => version_files(dir),
            Self::S3(server) => version_files(&server.bucket_dir("models").join("fleet")),
            Self::Azure(server) => server
                .blobs("models")
                .into_iter()
                .filter(|name| name.starts_with("fleet/") && name.ends_with(".model"))
                .map(PathBuf::from)
                .collect(),
        }
    }
}

/// `prescale models ARGS` as an operator runs it in a replica's pod (`kubectl exec`): with the
/// fleet's shared config, which names no member (the per-replica keys of `replica`'s config left
/// out); what it prints.
fn models(replica: &Replica, args: &[&str]) -> String {
    let (succeeded, printed) = models_run(replica, args);
    assert!(succeeded, "{printed}");
    printed
}

/// [`models`] that may fail: whether it succeeded, and its stdout and stderr.
fn models_run(replica: &Replica, args: &[&str]) -> (bool, String) {
    models_with(&replica.config, replica.env(), args)
}

/// `prescale models ARGS` with the shared part of the replica config `member_config` (written
/// beside it), in the environment `env`: whether it succeeded, and its stdout and stderr.
fn models_with(member_config: &Path, env: &[(String, String)], args: &[&str]) -> (bool, String) {
    let text = std::fs::read_to_string(member_config).unwrap();
    let shared: String = text
        .lines()
        .filter(|line| !line.starts_with("member_id") && !line.starts_with("advertise"))
        .map(|line| format!("{line}\n"))
        .collect();
    let config = member_config.with_file_name("shared.toml");
    std::fs::write(&config, shared).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_prescale"))
        .arg("--config")
        .arg(&config)
        .arg("models")
        .args(args)
        .env_remove("PRESCALE_CONFIG")
        .envs(env.iter().map(|(key, value)| (key, value)))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    if output.status.success() {
        (true, stdout)
    } else {
        (false, format!("{stdout}{stderr}"))
    }
}

/// `prescale models rollback load_0 [version]` (see [`models`]); what it prints.
fn rollback(replica: &Replica, version: Option<u64>) -> String {
    let version = version.map(|version| version.to_string());
    let mut args = vec!["rollback", "load_0"];
    args.extend(version.as_deref());
    models(replica, &args)
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
    s3_support::files(store)
        .into_iter()
        .filter(|path| path.extension().is_some_and(|ext| ext == "model"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_owner_stores_versions_and_a_new_owner_serves_them_without_fitting() {
    if etcd_support::missing() || prometheus_support::missing() {
        return;
    }
    let store = tempfile::tempdir().unwrap();
    owners_store_versions_and_a_new_owner_serves_them(Store::Directory(store.path().to_owned()))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_an_s3_bucket_the_owner_stores_versions_and_a_new_owner_serves_them() {
    if etcd_support::missing() || prometheus_support::missing() || s3_support::missing() {
        return;
    }
    let server = s3_support::LocalS3::start(&["models"]);
    owners_store_versions_and_a_new_owner_serves_them(Store::S3(server)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_an_azure_container_the_owner_stores_versions_and_a_new_owner_serves_them() {
    if etcd_support::missing() || prometheus_support::missing() || azure_support::missing() {
        return;
    }
    let server = azure_support::LocalAzure::start(&["models"]);
    owners_store_versions_and_a_new_owner_serves_them(Store::Azure(server)).await;
}

/// Two replicas sharing `store`: each owner writes one version file per series and moves its
/// pointer; after `kill -9` of one, the survivor serves its series with the same versions, read
/// from the store, without fitting; `prescale models list` (the fleet's shared config, the
/// replicas' environment) names every live version.
async fn owners_store_versions_and_a_new_owner_serves_them(store: Store) {
    const WORKLOADS: usize = 4;
    let etcd = etcd_support::LocalEtcd::start();
    let prometheus = fleet_support::prometheus_with(WORKLOADS);
    let mut members: Vec<Replica> = ["m0", "m1"]
        .iter()
        .map(|id| store.start(id, &etcd.url))
        .collect();
    let client = Etcd::connect(std::slice::from_ref(&etcd.url), Duration::from_secs(2))
        .await
        .unwrap();
    // Both members active before any workload: a series that changed owner while its first fit
    // ran would leave the refused owner's version file beside the new owner's.
    fleet_support::fleet_view(&client, members.len()).await;
    let names = fleet_support::upsert_all(&members[0], WORKLOADS, &prometheus.url).await;
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
    let live = pointers(&client).await;
    assert_eq!(live.len(), WORKLOADS, "{live:?}");
    for (index, name) in names.iter().enumerate() {
        assert_eq!(live[&series_name(index)], versions[name], "{name}");
    }
    assert_eq!(store.version_files().len(), WORKLOADS);

    // kill -9 the owner of w0: the survivor serves its workloads with the same versions, read
    // from the store, and fits nothing. Each workload's owner is the one member following it,
    // waited for: a member whose view has not yet seen the other turn active still follows the
    // other's share for a moment.
    let mut owners = Vec::new();
    for name in &names {
        owners.push(settled_owner(&members, &[0, 1], name).await);
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
    members[victim].kill();
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
        assert!(
            members[survivor].follows(name).await.unwrap_or(false),
            "{name} not re-owned"
        );
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
    assert_eq!(store.version_files().len(), WORKLOADS);
    let listed = models(&members[survivor], &["list"]);
    for (index, name) in names.iter().enumerate() {
        let line = format!(
            "{}  live v{}  1 version ",
            series_name(index),
            versions[name]
        );
        assert!(listed.contains(&line), "{line:?} not in\n{listed}");
    }
}

/// Retrains `load_0` through `channel` and waits until the job has finished.
async fn retrain(channel: &Channel) -> proto::Job {
    let mut admin = AdminServiceClient::new(channel.clone());
    let job = admin
        .retrain(RetrainRequest {
            series: vec![series_ref(0)],
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
    let prometheus = fleet_support::prometheus_with(1);
    let store = tempfile::tempdir().unwrap();
    let member = start("alone", &etcd.url, store.path());
    let channel = member.channel().await;
    // Before any fit, the fleet has no pointer: `models list` says so rather than print nothing.
    assert_eq!(
        models(&member, &["list"]),
        "no models trained yet (no live model pointer under /prescale/models/ in etcd)\n"
    );
    PlanServiceClient::new(channel.clone())
        .upsert_workload(upsert(0, Some(&prometheus.url)))
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

    // `prescale models list` and `show` read the fleet's store and pointers, not the local
    // registry (which holds nothing in a fleet with a model store).
    let listed = models(&member, &["list"]);
    assert!(
        listed.contains(&format!("load_0  live v{version}  2 versions")),
        "{listed}"
    );
    let shown = models(&member, &["show", "load_0"]);
    assert!(
        shown.contains(&format!("v{version} is live in the fleet")),
        "{shown}"
    );
    assert!(shown.contains(&format!("* v{version} ")), "{shown}");
    assert!(shown.contains(&format!("  v{} ", version + 1)), "{shown}");

    // `prescale models rollback` moves the pointer, to the retrained version and back to the
    // previous live one; the owner plans with each.
    let stdout = rollback(&member, Some(version + 1));
    assert!(
        stdout.contains(&format!("v{} is live", version + 1)),
        "{stdout}"
    );
    assert_eq!(pointers(&client).await["load_0"], version + 1);
    let shown = models(&member, &["show", "load_0"]);
    assert!(shown.contains(&format!("* v{} ", version + 1)), "{shown}");
    assert!(shown.contains(&format!("  v{version} ")), "{shown}");
    assert!(shown.contains("earlier"), "{shown}");
    wait_for_version(&channel, "w0", version + 1).await;
    rollback(&member, None);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_beyond_keep_versions_are_deleted_but_not_those_the_pointer_names() {
    if etcd_support::missing() || prometheus_support::missing() {
        return;
    }
    let etcd = etcd_support::LocalEtcd::start();
    let prometheus = fleet_support::prometheus_with(1);
    let store = tempfile::tempdir().unwrap();
    let member = ReplicaConfig::new("alone", &etcd.url)
        .metrics()
        .model_store(store.path())
        .keep_versions(1)
        .start();
    let channel = member.channel().await;
    PlanServiceClient::new(channel.clone())
        .upsert_workload(upsert(0, Some(&prometheus.url)))
        .await
        .unwrap();
    let live = wait_for_plan(&channel, "w0", Duration::from_secs(300)).await;
    let names = |files: Vec<PathBuf>| -> Vec<String> {
        files
            .iter()
            .map(|file| file.file_name().unwrap().to_string_lossy().into_owned())
            .collect()
    };
    // Retrains on the same data are kept beside the live version, not promoted. With one version
    // kept, each drops the one before it, but never the live one its pointer names.
    let mut first_retrained = None;
    for retrained in [live + 1, live + 2] {
        let job = retrain(&channel).await;
        assert_eq!(job.state(), JobState::Succeeded, "{job:?}");
        let files = version_files(store.path());
        assert_eq!(
            names(files.clone()),
            [
                format!("v{live:06}.model"),
                format!("v{retrained:06}.model")
            ]
        );
        first_retrained.get_or_insert_with(|| {
            let file = files[1].clone();
            let bytes = std::fs::read(&file).unwrap();
            (file, bytes)
        });
    }
    assert_eq!(
        plan_model_version(channel.clone(), "w0").await.unwrap(),
        live
    );
    assert_eq!(member.counter("prescale_model_store_failures_total"), 0.0);

    // The deleted version is retired in the pointer before its file goes: even with the file
    // back (a deletion a rollback raced with), a rollback to it is refused and the plans stay.
    let (file, bytes) = first_retrained.unwrap();
    std::fs::write(&file, bytes).unwrap();
    let (succeeded, printed) =
        models_run(&member, &["rollback", "load_0", &(live + 1).to_string()]);
    assert!(!succeeded, "{printed}");
    assert!(
        printed.contains(&format!("v{} of load_0 is retired", live + 1)),
        "{printed}"
    );
    let shown = models(&member, &["show", "load_0"]);
    assert!(
        shown.contains(&format!(
            "versions below v{} that the pointer does not name are retired",
            live + 2
        )),
        "{shown}"
    );
    assert_eq!(plan_model_version(channel, "w0").await.unwrap(), live);
    // The newest version, kept though never live, stays a rollback target.
    rollback(&member, Some(live + 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_whose_s3_credentials_are_refused_does_not_start_or_join() {
    if etcd_support::missing() || s3_support::missing() {
        return;
    }
    let etcd = etcd_support::LocalEtcd::start();
    let server = s3_support::LocalS3::start(&["models"]);
    let wrong = server.env_with_wrong_secret();
    let directory = tempfile::tempdir().unwrap();
    let written = ReplicaConfig::new("refused", &etcd.url)
        .cloud_model_store("s3://models/fleet", &server.url, Vec::new())
        .write(directory.path());
    let stderr = refused_start(&written.config, &wrong);
    assert!(
        stderr.contains(&format!(
            "the fleet's model store s3://models/fleet at {}",
            server.url
        )),
        "{stderr}"
    );
    assert!(members(&etcd.url, "/prescale/").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_fleet_on_the_same_store_is_refused_until_the_store_is_claimed_for_it() {
    if etcd_support::missing() {
        return;
    }
    let etcd = etcd_support::LocalEtcd::start();
    let store = tempfile::tempdir().unwrap();
    // Fleet A, under the default etcd prefix, claims the store as its first replica starts.
    let mut a = start("a-0", &etcd.url, store.path());
    let claim = std::fs::read_to_string(store.path().join("fleet.json")).unwrap();
    assert!(claim.contains("\"claimed_by\":\"a-0\""), "{claim}");

    // Fleet B, under another prefix, is pointed at the same store: refused before it joins.
    let directory = tempfile::tempdir().unwrap();
    let b = ReplicaConfig::new("b-0", &etcd.url)
        .prefix("/staging/")
        .model_store(store.path());
    let written = b.write(directory.path());
    let stderr = refused_start(&written.config, &[]);
    assert!(stderr.contains("is used by another fleet"), "{stderr}");
    assert!(stderr.contains("claimed by a-0"), "{stderr}");
    assert!(members(&etcd.url, "/staging/").await.is_empty());

    // An operator decides the store is B's (A's etcd was rebuilt as B, say): B starts, and A is
    // refused in turn.
    let (claimed, printed) = models_with(&written.config, &[], &["claim-store"]);
    assert!(claimed, "{printed}");
    assert!(printed.contains("claimed by a-0"), "{printed}");
    let _b = b.start();
    assert_eq!(
        members(&etcd.url, "/staging/").await,
        ["/staging/members/b-0"]
    );
    a.kill();
    let stderr = refused_start(&a.config, a.env());
    assert!(
        stderr.contains("claimed by prescale models claim-store"),
        "{stderr}"
    );
}

/// Starts `prescale serve` on `config` with `env`, which must exit with an error within a minute
/// without having joined its fleet; what it wrote to stderr.
fn refused_start(config: &Path, env: &[(String, String)]) -> String {
    let directory = config.parent().unwrap();
    let log = directory.join("refused.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_prescale"))
        .arg("--config")
        .arg(config)
        .arg("serve")
        .env_remove("PRESCALE_CONFIG")
        .envs(env.iter().map(|(key, value)| (key, value)))
        .stdout(std::fs::File::create(directory.join("refused.out")).unwrap())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let Some(status) = fleet_support::exit_status_within(&mut child, Duration::from_secs(60))
    else {
        panic!(
            "prescale serve still runs after 60 s:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    };
    let stdout = std::fs::read_to_string(directory.join("refused.out")).unwrap();
    let stderr = std::fs::read_to_string(&log).unwrap();
    assert!(!status.success(), "{stdout}{stderr}");
    assert!(!stdout.contains("fleet member"), "{stdout}");
    stderr
}

/// The member keys of the fleet under `prefix` in the etcd at `url`.
async fn members(url: &str, prefix: &str) -> Vec<String> {
    let client = Etcd::connect(&[url.to_owned()], Duration::from_secs(2))
        .await
        .unwrap();
    let (members, _) = client
        .get_prefix(&format!("{prefix}members/"))
        .await
        .unwrap();
    members.into_iter().map(|member| member.key).collect()
}
