//! The model registry end to end: a restarted server serves plans from the promoted models without
//! fitting (and from the previous version when the live file is corrupt), and a `prescale retrain`
//! killed midway leaves a registry that lists, verifies and retrains, versions promoted or
//! rolled back by another process are served without a restart, the retraining schedule fires on
//! time (under tokio's paused clock), and `prescale retrain --server` retrains through a serving
//! server, whose store another process cannot open.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::TestServer;
use prescale::app::{Settings, TokioClock};
use prescale::domain::{Sample, SeriesId, Timestamp};
use prescale::plan::Workload;
use prescale::registry::Registry;
use prescale::service::proto::{
    self, admin_service_client::AdminServiceClient, forecast_service_client::ForecastServiceClient,
    ingest_service_client::IngestServiceClient, plan_service_client::PlanServiceClient,
};
use prescale::service::{ServerOptions, workload_message};
use prescale::store::{MetricStore, PolarsStore, StoreOptions};
use tonic::transport::Channel;

const STEP_MS: i64 = 300_000;
const DAY_MS: i64 = 86_400_000;
/// 2025-03-03T00:00:00Z, a Monday.
const START_MS: i64 = 1_740_960_000_000;

/// `days` of 5-minute samples: a daily cycle whose level and amplitude depend on `seed`, with
/// bounded deterministic noise.
fn history(seed: u64, days: i64) -> Vec<Sample> {
    let level = 300.0 + 40.0 * seed as f64;
    (0..days * 288)
        .map(|index| {
            let time = START_MS + index * STEP_MS;
            let phase = (time % DAY_MS) as f64 / DAY_MS as f64 * std::f64::consts::TAU;
            let noise = ((index as u64 * 7919 + seed * 104_729) % 17) as f64 - 8.0;
            Sample {
                timestamp: Timestamp::from_millis(time),
                value: level + 0.6 * level * phase.sin() + noise,
            }
        })
        .collect()
}

/// Stores `days` of history for each of `names` in the store in `dir`, checkpointed.
fn store_histories(dir: &Path, names: &[&str], days: i64) {
    let store = PolarsStore::open(dir, StoreOptions::default()).unwrap();
    for (seed, name) in names.iter().enumerate() {
        let series = SeriesId::new(name).unwrap();
        store.append(&series, &history(seed as u64, days)).unwrap();
    }
    store.checkpoint().unwrap();
}

/// Replan only when asked (upsert), never on the clock; no retraining schedule.
fn settings() -> Settings {
    Settings {
        replan_interval: Duration::from_secs(24 * 3600),
        ..Settings::default()
    }
}

fn series_ref(name: &str) -> Option<proto::SeriesRef> {
    Some(proto::SeriesRef {
        name: name.to_owned(),
        labels: Default::default(),
    })
}

/// Upserts workload `api` on series `load` and returns its first plan.
async fn first_plan(channel: &Channel) -> proto::Plan {
    let mut plans = PlanServiceClient::new(channel.clone());
    let workload = Workload::from_toml(
        r#"
            name = "api"
            series = "load"
            capacity_per_replica = 50
            max_replicas = 100
            warm_up = "10m"
            mode = "forecast-and-scale"
        "#,
    )
    .unwrap();
    plans
        .upsert_workload(proto::UpsertWorkloadRequest {
            workload: Some(workload_message(&workload)),
        })
        .await
        .unwrap();
    let mut watch = common::watch_plans(channel, &["api"]).await;
    common::next_plan(&mut watch).await
}

/// The version of the ensemble model an API forecast of `load` is served from.
async fn forecast_model_version(channel: &Channel) -> String {
    ForecastServiceClient::new(channel.clone())
        .forecast(proto::ForecastRequest {
            series: series_ref("load"),
            horizon: "2h".to_owned(),
            levels: vec![80.0],
            model: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .model
        .unwrap()
        .version
}

/// Starts a server over `directory`, checks it loaded `loaded` live models, and returns its first
/// plan, which must come from registry version 1.
async fn start_and_plan(
    directory: tempfile::TempDir,
    loaded: u64,
    settings: Settings,
) -> (TestServer, Channel, proto::Plan) {
    let server = TestServer::start_in(directory, settings, ServerOptions::default()).await;
    assert_eq!(server.metrics.models_loaded.get(), loaded);
    let channel = server.channel().await;
    let plan = first_plan(&channel).await;
    assert!(
        plan.model_version.ends_with("-v1"),
        "{}",
        plan.model_version
    );
    (server, channel, plan)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_server_plans_from_the_promoted_model_without_fitting() {
    let directory = tempfile::tempdir().unwrap();
    store_histories(directory.path(), &["load"], 4);
    let series = SeriesId::new("load").unwrap();

    // First start: no model yet, so the first plan trains one and registers it as v1.
    let (server, _, _) = start_and_plan(directory, 0, settings()).await;
    assert_eq!(server.metrics.model_fits.get(), 1, "trained on first use");
    assert_eq!(server.metrics.models_promoted.get(), 1);
    let directory = server.shutdown().await;
    let models = directory.path().join("models");
    assert_eq!(
        Registry::open(&models)
            .unwrap()
            .entry(&series)
            .unwrap()
            .live,
        Some(1)
    );

    // Restart: the promoted model is loaded and serves plans and forecasts; nothing is fitted.
    let (server, channel, plan) = start_and_plan(directory, 1, settings()).await;
    assert_eq!(server.metrics.model_load_failures.get(), 0);
    assert_eq!(plan.steps.as_ref().unwrap().at_ms.len(), 288);
    let version = forecast_model_version(&channel).await;
    assert!(version.ends_with("-v1"), "{version}");
    assert_eq!(
        server.metrics.model_fits.get(),
        0,
        "a restarted server serves the stored model without fitting"
    );
    let directory = server.shutdown().await;

    // A newer live version whose file is corrupt: reported, and v1 served instead, still unfitted.
    let registry = Registry::open(&models).unwrap();
    let model = registry.load(&series, 1).unwrap();
    let v2 = registry
        .add(&series, &model, true, "test: promoted, then corrupted")
        .unwrap();
    let entry = registry.entry(&series).unwrap();
    drop(registry);
    let path = models.join(&entry.dir).join(&v2.file);
    let mut bytes = std::fs::read(&path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(&path, bytes).unwrap();

    let (server, _, _) = start_and_plan(directory, 1, settings()).await;
    assert_eq!(server.metrics.model_load_failures.get(), 1);
    assert_eq!(server.metrics.model_fits.get(), 0);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_retrain_rpc_promotes_swaps_the_model_in_and_replans() {
    let directory = tempfile::tempdir().unwrap();
    store_histories(directory.path(), &["load"], 4);
    let (server, channel, _) = start_and_plan(directory, 0, settings()).await;

    // A fifth day arrives; the plan follows it on the same model (re-anchored, not refitted).
    let day: Vec<Sample> = history(0, 5).split_off(4 * 288);
    IngestServiceClient::new(channel.clone())
        .write(proto::WriteRequest {
            series: vec![proto::SeriesSamples {
                series: series_ref("load"),
                timestamps_ms: day.iter().map(|s| s.timestamp.as_millis()).collect(),
                values: day.iter().map(|s| s.value).collect(),
            }],
        })
        .await
        .unwrap();

    let mut admin = AdminServiceClient::new(channel.clone());
    let job = admin
        .retrain(proto::RetrainRequest {
            series: vec![series_ref("load").unwrap()],
            all: false,
        })
        .await
        .unwrap()
        .into_inner();
    let mut plans = PlanServiceClient::new(channel.clone());
    let plan = tokio::time::timeout(Duration::from_secs(120), async {
        loop {
            let state = admin
                .get_job(proto::GetJobRequest { id: job.id.clone() })
                .await
                .unwrap()
                .into_inner();
            let plan = current_plan(&mut plans).await;
            if state.finished_at_ms != 0 && plan.model_version.ends_with("-v2") {
                assert_eq!((state.done, state.failed), (1, 0));
                return plan;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the job promotes v2 and the workload is replanned on it");
    assert_eq!(plan.steps.as_ref().unwrap().at_ms[0], START_MS + 5 * DAY_MS);
    assert_eq!(
        server.metrics.model_fits.get(),
        2,
        "one first-use fit and one retrain; new samples refit nothing"
    );
    assert_eq!(server.metrics.models_promoted.get(), 2);
    let directory = server.shutdown().await;
    let registry = Registry::open(directory.path().join("models")).unwrap();
    let entry = registry.entry(&SeriesId::new("load").unwrap()).unwrap();
    assert_eq!(entry.live, Some(2));
    assert!(
        entry.versions[1].decision.starts_with("promoted: MAE"),
        "{}",
        entry.versions[1].decision
    );
}

/// Polls `done` from tokio's blocking pool, every 20 ms of real time for at most `limit`; true once
/// it holds. A blocking task holds tokio's paused clock still, so the paused time of the test does
/// not run ahead while the fit threads work.
async fn wait_in_real_time(limit: Duration, done: impl Fn() -> bool + Send + 'static) -> bool {
    tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + limit;
        while !done() {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        true
    })
    .await
    .unwrap()
}

/// Under tokio's paused time: the server's clock starts 30 s before a minute, so the every-minute
/// schedule fires 30 s of paused time later and not before; the retraining itself is real work.
#[tokio::test(start_paused = true)]
async fn the_server_runs_the_retraining_job_on_its_schedule() {
    let directory = tempfile::tempdir().unwrap();
    store_histories(directory.path(), &["load"], 4);
    let every_minute = Settings {
        retrain_schedule: Some("* * * * *".parse().unwrap()),
        ..settings()
    };
    let at = |text: &str| Timestamp::parse(text).unwrap();
    let clock = TokioClock::starting_at(at("2025-03-10T00:00:30Z"));
    let server = TestServer::start_with_clock(
        directory,
        every_minute,
        ServerOptions::default(),
        Arc::new(clock),
    )
    .await;
    let state = Arc::clone(&server.state);

    tokio::time::sleep(Duration::from_secs(29)).await;
    assert!(state.job("retrain-1").is_err(), "nothing runs before 00:01");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let job = state.job("retrain-1").expect("the job starts at 00:01");
    assert!(
        (at("2025-03-10T00:01:00Z")..at("2025-03-10T00:01:01Z")).contains(&job.started_at),
        "{}",
        job.started_at
    );
    let finished = Arc::clone(&job);
    assert!(
        wait_in_real_time(Duration::from_secs(150), move || finished
            .finished_at()
            .is_some())
        .await,
        "the scheduled job finishes"
    );
    assert_eq!((job.total, job.done(), job.failures().len()), (1, 1, 0));
    assert_eq!(server.metrics.models_promoted.get(), 1);
    drop(state);
    let directory = server.shutdown().await;
    let registry = Registry::open(directory.path().join("models")).unwrap();
    let entry = registry.entry(&SeriesId::new("load").unwrap()).unwrap();
    assert_eq!(entry.live, Some(1));
    assert_eq!(entry.versions[0].decision, "no live model");
}

/// The `vNNNNNN.model` files under the registry directory `models`.
fn model_files(models: &Path) -> usize {
    let Ok(series_dirs) = std::fs::read_dir(models) else {
        return 0;
    };
    series_dirs
        .filter_map(Result::ok)
        .filter_map(|dir| std::fs::read_dir(dir.path()).ok())
        .flatten()
        .filter_map(Result::ok)
        .filter(|file| {
            let name = file.file_name().to_string_lossy().into_owned();
            name.starts_with('v') && name.ends_with(".model")
        })
        .count()
}

fn prescale(data: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_prescale"));
    command
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .env_remove("PRESCALE_CONFIG")
        .env_remove("RUST_LOG")
        .current_dir(data.parent().unwrap());
    command
}

/// Every version the manifest names reads back with a matching CRC-32.
fn assert_every_version_verifies(registry: &Registry) {
    for (name, entry) in registry.list() {
        let series: SeriesId = name.parse().unwrap();
        for info in &entry.versions {
            registry
                .load(&series, info.version)
                .unwrap_or_else(|error| panic!("{name} v{}: {error}", info.version));
        }
    }
}

#[test]
fn a_retrain_killed_midway_leaves_the_registry_consistent() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let names = ["s0", "s1", "s2", "s3", "s4", "s5"];
    store_histories(&data, &names, 4);
    let models = data.join("models");

    let mut child = prescale(&data, &["retrain", "--all", "--concurrency", "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while model_files(&models) == 0 {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the retrain ended before writing a model"
        );
        assert!(
            Instant::now() < deadline,
            "no model file within two minutes"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    let registry = Registry::open(&models).unwrap();
    let listed = registry.list();
    assert!(
        listed.len() < names.len(),
        "the kill landed before every series was retrained ({} listed)",
        listed.len()
    );
    assert_every_version_verifies(&registry);
    drop(registry);

    let list = prescale(&data, &["models", "list"]).output().unwrap();
    assert!(
        list.status.success(),
        "{}",
        String::from_utf8_lossy(&list.stderr)
    );

    let again = prescale(&data, &["retrain", "--all", "--concurrency", "2"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&again.stdout);
    assert!(
        again.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert!(stdout.contains("retrained 6 series"), "{stdout}");
    assert!(stdout.contains("0 failed"), "{stdout}");
    let registry = Registry::open(&models).unwrap();
    for name in names {
        let entry = registry
            .entry(&SeriesId::new(name).unwrap())
            .unwrap_or_else(|| panic!("{name} has no models"));
        assert!(entry.live.is_some(), "{name} has a live model");
    }
    assert_every_version_verifies(&registry);
}

/// `prescale retrain` from another process while a server holds the store (a Kubernetes CronJob
/// beside the StatefulSet): on the store it is refused, as the data directory is locked; with
/// `--server` the server runs the job, which promotes a model, and the command follows it to the
/// end, sending the bearer token the server requires.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retrain_with_server_runs_the_job_on_the_serving_server() {
    let directory = tempfile::tempdir().unwrap();
    store_histories(directory.path(), &["load"], 4);
    let token = "retrain-cronjob-token-0123456789";
    let options = ServerOptions {
        tokens: vec![token.to_owned()],
        ..ServerOptions::default()
    };
    let server = TestServer::start_in(directory, settings(), options).await;
    let data = server.directory.path().to_owned();
    let secrets = tempfile::tempdir().unwrap();
    let token_file = secrets.path().join("tokens.txt");
    std::fs::write(&token_file, format!("# the CronJob's token\n{token}\n")).unwrap();
    let url = format!("http://{}", server.address);
    let run = |args: Vec<String>| {
        let data = data.clone();
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            prescale(&data, &args).output().unwrap()
        })
    };

    let on_store = run(vec!["retrain".into(), "--all".into()]).await.unwrap();
    let stderr = String::from_utf8_lossy(&on_store.stderr);
    assert!(!on_store.status.success());
    assert!(stderr.contains("in use by another process"), "{stderr}");

    let no_token = run(vec![
        "retrain".into(),
        "--all".into(),
        "--server".into(),
        url.clone(),
    ])
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&no_token.stderr);
    assert!(!no_token.status.success());
    assert!(
        stderr.contains("starting the retrain job: UNAUTHENTICATED: "),
        "{stderr}"
    );
    assert_eq!(server.metrics.models_promoted.get(), 0);

    let remote = run(vec![
        "retrain".into(),
        "--all".into(),
        "--server".into(),
        url,
        "--token-file".into(),
        token_file.to_string_lossy().into_owned(),
    ])
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&remote.stdout);
    assert!(
        remote.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&remote.stderr)
    );
    assert!(stdout.contains("started: 1 series"), "{stdout}");
    assert!(
        stdout.contains("JOB_STATE_SUCCEEDED: 1 of 1 series done"),
        "{stdout}"
    );
    assert_eq!(server.metrics.models_promoted.get(), 1);
    let directory = server.shutdown().await;
    let registry = Registry::open(directory.path().join("models")).unwrap();
    let entry = registry.entry(&SeriesId::new("load").unwrap()).unwrap();
    assert_eq!(entry.live, Some(1));
}

/// `prescale retrain --server` names each series that failed by its full key, so two labelled
/// series of one metric are told apart in its output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retrain_with_server_names_each_failed_series_with_its_labels() {
    let names = [r#"load{svc="a"}"#, r#"load{svc="b"}"#];
    // The series go in through the server's own store: a store opened and dropped here before
    // the server opens the directory can still be locked by a process another test is spawning
    // (a forked child holds the lock's descriptor until it executes).
    let server = TestServer::start(settings(), ServerOptions::default()).await;
    let store = server.state.history().store();
    for name in names {
        // Far too little history to fit: both fail.
        let short: Vec<Sample> = history(0, 1).into_iter().take(10).collect();
        store.append(&name.parse().unwrap(), &short).unwrap();
    }
    let data = server.directory.path().to_owned();
    let url = format!("http://{}", server.address);
    let output = tokio::task::spawn_blocking(move || {
        let args = ["retrain", "--server", &url, "--series", names[0], names[1]];
        prescale(&data, &args).output().unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success(), "{stdout}");
    assert!(
        stdout.contains("JOB_STATE_FAILED: 2 of 2 series done"),
        "{stdout}"
    );
    for name in names {
        assert!(stdout.contains(&format!("\n{name}: failed: ")), "{stdout}");
    }
    server.shutdown().await;
}

/// `GetPlan` of workload `api`.
async fn current_plan(plans: &mut PlanServiceClient<Channel>) -> proto::Plan {
    plans
        .get_plan(proto::GetPlanRequest {
            workload: "api".to_owned(),
        })
        .await
        .unwrap()
        .into_inner()
}

/// Waits until both `GetPlan` of workload `api` and an API forecast of `load` come from the model
/// version ending in `suffix`.
async fn wait_until_served(channel: &Channel, suffix: &str) {
    let mut plans = PlanServiceClient::new(channel.clone());
    tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let plan = current_plan(&mut plans).await;
            if plan.model_version.ends_with(suffix)
                && forecast_model_version(channel).await.ends_with(suffix)
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the server never served {suffix}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_promoted_or_rolled_back_outside_the_server_are_served_without_a_restart() {
    let directory = tempfile::tempdir().unwrap();
    store_histories(directory.path(), &["load"], 4);
    let data = directory.path().to_path_buf();
    let watching = Settings {
        registry_watch: Some(Duration::from_millis(100)),
        ..settings()
    };
    let (server, channel, _) = start_and_plan(directory, 0, watching).await;

    // A retrain outside the server (its own registry handle, as `prescale retrain` has) promotes v2.
    let series = SeriesId::new("load").unwrap();
    let registry = Registry::open(data.join("models")).unwrap();
    let model = registry.load(&series, 1).unwrap();
    registry
        .add(&series, &model, true, "test: promoted by another process")
        .unwrap();
    wait_until_served(&channel, "-v2").await;

    // An operator rolls back with the CLI, in another process.
    let output = prescale(&data, &["models", "rollback", "load", "1"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    wait_until_served(&channel, "-v1").await;
    assert_eq!(server.metrics.models_loaded.get(), 2, "v2, then v1 again");
    assert_eq!(
        server.metrics.model_fits.get(),
        1,
        "only the first-use fit: versions from the registry are loaded, not refitted"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_manifest_is_moved_aside_and_the_server_starts_with_an_empty_registry() {
    let directory = tempfile::tempdir().unwrap();
    store_histories(directory.path(), &["load"], 4);
    let models = directory.path().join("models");
    std::fs::create_dir_all(&models).unwrap();
    std::fs::write(models.join("manifest.json"), b"{\"series\": {").unwrap();

    // It starts, reports the reset, and trains the series on first use as its version 1.
    let (server, _, _) = start_and_plan(directory, 0, settings()).await;
    assert_eq!(server.metrics.manifest_resets.get(), 1);
    assert_eq!(server.metrics.model_fits.get(), 1);
    let directory = server.shutdown().await;
    let moved: Vec<_> = std::fs::read_dir(&models)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.starts_with("manifest.json.corrupt-"))
        .collect();
    assert_eq!(moved.len(), 1, "{moved:?}");
    assert_eq!(
        std::fs::read(models.join(&moved[0])).unwrap(),
        b"{\"series\": {"
    );

    // The manifest written since is good: a restart loads the model and resets nothing.
    let (server, _, _) = start_and_plan(directory, 1, settings()).await;
    assert_eq!(server.metrics.manifest_resets.get(), 0);
    server.shutdown().await;
}
