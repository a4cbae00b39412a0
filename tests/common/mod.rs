//! A prescale server on 127.0.0.1:0 over a temporary store, for the integration tests.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use prescale::app::telemetry::Telemetry;
use prescale::app::{Clock, History, ServingState, Settings, SystemClock};
use prescale::service::{
    LocalServer, ScalerOptions, ServerOptions, spawn_local, spawn_local_with_scaler,
};
use prescale::store::{PolarsStore, StoreOptions};
use tonic::transport::{Channel, Endpoint};

/// A server over a temporary store, stopped by `shutdown`.
pub(crate) struct TestServer {
    pub(crate) address: std::net::SocketAddr,
    /// The KEDA external scaler's address, when the server was started with one.
    pub(crate) scaler_address: Option<std::net::SocketAddr>,
    pub(crate) directory: tempfile::TempDir,
    pub(crate) metrics: Arc<Telemetry>,
    /// The state the server serves, for tests that look at it directly (jobs, live models).
    pub(crate) state: Arc<ServingState>,
    server: LocalServer,
}

impl TestServer {
    pub(crate) async fn start(settings: Settings, options: ServerOptions) -> Self {
        let directory = tempfile::tempdir().unwrap();
        Self::start_in(directory, settings, options).await
    }

    pub(crate) async fn start_in(
        directory: tempfile::TempDir,
        settings: Settings,
        options: ServerOptions,
    ) -> Self {
        Self::start_with_clock(directory, settings, options, Arc::new(SystemClock)).await
    }

    /// As [`Self::start_in`], the server reading dates from `clock` (a `TokioClock` under paused
    /// time).
    pub(crate) async fn start_with_clock(
        directory: tempfile::TempDir,
        settings: Settings,
        options: ServerOptions,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self::start_with_scaler(directory, settings, options, clock, None).await
    }

    /// As [`Self::start_with_clock`], the store opened with `store_options`.
    pub(crate) async fn start_with_store(
        directory: tempfile::TempDir,
        settings: Settings,
        options: ServerOptions,
        clock: Arc<dyn Clock>,
        store_options: StoreOptions,
    ) -> Self {
        Self::launch(directory, settings, options, clock, None, store_options).await
    }

    /// As [`Self::start_with_clock`], with the KEDA external scaler on a second port when
    /// `scaler` is given.
    pub(crate) async fn start_with_scaler(
        directory: tempfile::TempDir,
        settings: Settings,
        options: ServerOptions,
        clock: Arc<dyn Clock>,
        scaler: Option<ScalerOptions>,
    ) -> Self {
        Self::launch(
            directory,
            settings,
            options,
            clock,
            scaler,
            StoreOptions::default(),
        )
        .await
    }

    async fn launch(
        directory: tempfile::TempDir,
        settings: Settings,
        options: ServerOptions,
        clock: Arc<dyn Clock>,
        scaler: Option<ScalerOptions>,
        store_options: StoreOptions,
    ) -> Self {
        let store = PolarsStore::open(directory.path(), store_options).unwrap();
        let metrics = Arc::new(Telemetry::default());
        let state = ServingState::open_with_clock(
            History::new(Arc::new(store)),
            directory.path(),
            settings,
            Arc::clone(&metrics),
            clock,
        )
        .unwrap();
        let server = match scaler {
            Some(scaler) => spawn_local_with_scaler(Arc::clone(&state), options, scaler).await,
            None => spawn_local(Arc::clone(&state), options).await,
        }
        .unwrap();
        Self {
            address: server.addr,
            scaler_address: server.scaler_addr,
            directory,
            metrics,
            state,
            server,
        }
    }

    pub(crate) async fn channel(&self) -> Channel {
        Endpoint::from_shared(format!("http://{}", self.address))
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    /// Signals shutdown and waits for the server to return; gives back the data directory.
    pub(crate) async fn shutdown(self) -> tempfile::TempDir {
        tokio::time::timeout(Duration::from_secs(60), self.server.shutdown())
            .await
            .expect("server stops within a minute")
            .unwrap()
            .unwrap();
        self.directory
    }
}

/// A clock the test sets by hand: plans are stamped, and served for, the date it holds.
#[derive(Debug, Clone, Default)]
pub(crate) struct ManualClock {
    /// The date, epoch milliseconds.
    millis: Arc<std::sync::atomic::AtomicI64>,
}

impl ManualClock {
    pub(crate) fn set(&self, time: prescale::domain::Timestamp) {
        self.millis
            .store(time.as_millis(), std::sync::atomic::Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> chrono::DateTime<chrono::Utc> {
        chrono::DateTime::from_timestamp_millis(
            self.millis.load(std::sync::atomic::Ordering::SeqCst),
        )
        .expect("the test sets a date within chrono's range")
    }
}

/// Opens a `WatchPlans` stream on the named workloads.
pub(crate) async fn watch_plans(
    channel: &Channel,
    workloads: &[&str],
) -> tonic::Streaming<prescale::service::proto::Plan> {
    prescale::service::proto::plan_service_client::PlanServiceClient::new(channel.clone())
        .watch_plans(prescale::service::proto::WatchPlansRequest {
            workloads: workloads.iter().map(|name| (*name).to_owned()).collect(),
        })
        .await
        .unwrap()
        .into_inner()
}

/// The next plan on a `WatchPlans` stream, within two minutes.
pub(crate) async fn next_plan(
    stream: &mut tonic::Streaming<prescale::service::proto::Plan>,
) -> prescale::service::proto::Plan {
    tokio::time::timeout(
        Duration::from_secs(120),
        tokio_stream::StreamExt::next(stream),
    )
    .await
    .expect("a plan arrives within two minutes")
    .expect("the stream is open")
    .expect("the plan is not an error")
}

/// The repository's root.
pub(crate) fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The virtualenv's python (`target/grpc-venv`, or `PRESCALE_GRPC_VENV`) with the pinned packages importable; created on first use.
pub(crate) fn venv_python() -> PathBuf {
    let venv = std::env::var_os("PRESCALE_GRPC_VENV")
        .map_or_else(|| manifest_dir().join("target/grpc-venv"), PathBuf::from);
    let python = venv.join("bin/python");
    let ready = |python: &Path| {
        Command::new(python)
            .args([
                "-c",
                "import grpc, grpc_tools, grpc_health.v1, grpc_reflection.v1alpha",
            ])
            .status()
            .is_ok_and(|status| status.success())
    };
    if !ready(&python) {
        let created = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .expect("python3 runs");
        assert!(created.success(), "python3 -m venv {}", venv.display());
        let installed = Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet", "-r"])
            .arg(manifest_dir().join("tests/python/requirements.txt"))
            .status()
            .expect("pip runs");
        assert!(
            installed.success(),
            "pip install -r tests/python/requirements.txt"
        );
        assert!(
            ready(&python),
            "the pinned packages import after installing"
        );
    }
    python
}

/// A `prescale serve` child process, killed when dropped unless it has exited, so that a test that
/// fails before stopping it leaves no server behind. It dereferences to the [`std::process::Child`].
pub(crate) struct ServeChild(std::process::Child);

impl std::ops::Deref for ServeChild {
    type Target = std::process::Child;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for ServeChild {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl Drop for ServeChild {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Starts `prescale serve ARGS --data-dir ROOT/data` in `root`, with no configuration file;
/// its standard output, line by line.
pub(crate) fn spawn_serve(
    root: &Path,
    args: &[&str],
) -> (
    ServeChild,
    std::io::Lines<std::io::BufReader<std::process::ChildStdout>>,
) {
    use std::io::BufRead;

    let mut child = Command::new(env!("CARGO_BIN_EXE_prescale"))
        .arg("serve")
        .args(args)
        .arg("--data-dir")
        .arg(root.join("data"))
        .env_remove("PRESCALE_CONFIG")
        .current_dir(root)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    (ServeChild(child), lines)
}

/// Stops a `prescale serve` child with SIGTERM and checks that it drains, flushes the store and
/// exits cleanly; `lines` is the rest of its standard output.
pub(crate) fn stop_with_sigterm(
    child: &mut std::process::Child,
    lines: impl Iterator<Item = std::io::Result<String>>,
) {
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let rest: Vec<String> = lines.map(Result::unwrap).collect();
    let exit = child.wait().unwrap();
    assert!(exit.success(), "{exit:?} {rest:?}");
    assert!(
        rest.iter().any(|line| line.contains("store flushed")),
        "{rest:?}"
    );
}

/// The reference KEDA sends for ScaledObject `shop/NAME` with its trigger's `metadata`.
pub(crate) fn scaled_object(
    name: &str,
    metadata: &[(&str, &str)],
) -> prescale::service::externalscaler::ScaledObjectRef {
    prescale::service::externalscaler::ScaledObjectRef {
        name: name.to_owned(),
        namespace: "shop".to_owned(),
        scaler_metadata: metadata
            .iter()
            .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
            .collect(),
    }
}

/// A plaintext channel to `address`.
pub(crate) async fn connect(address: std::net::SocketAddr) -> Channel {
    Endpoint::from_shared(format!("http://{address}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// The queries of the shipped Grafana dashboard (`deploy/grafana/prescale.json`), as written (with
/// its `$job`, `$workload` and `$__rate_interval`), and the names of its template variables.
pub(crate) fn dashboard_queries() -> (Vec<String>, Vec<String>) {
    let text =
        std::fs::read_to_string(manifest_dir().join("deploy/grafana/prescale.json")).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&text).unwrap();
    fn panels(list: &serde_json::Value) -> Vec<&serde_json::Value> {
        list.as_array()
            .into_iter()
            .flatten()
            .flat_map(|panel| std::iter::once(panel).chain(panels(&panel["panels"])))
            .collect()
    }
    let queries = panels(&dashboard["panels"])
        .into_iter()
        .filter_map(|panel| panel["targets"].as_array())
        .flatten()
        .map(|target| target["expr"].as_str().expect("a PromQL target").to_owned())
        .collect();
    let variables = dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|variable| variable["name"].as_str().unwrap().to_owned())
        .collect();
    (queries, variables)
}

/// The metric names (`prescale_...`) in the PromQL expression `expr`.
pub(crate) fn metric_names(expr: &str) -> Vec<String> {
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|word| word.starts_with("prescale_"))
        .map(str::to_owned)
        .collect()
}
