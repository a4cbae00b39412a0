//! A prescale server on 127.0.0.1:0 over a temporary store, for the integration tests.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use prescale::app::telemetry::Telemetry;
use prescale::app::{Clock, History, ServingState, Settings, SystemClock};
use prescale::service::{LocalServer, ServerOptions, spawn_local};
use prescale::store::{PolarsStore, StoreOptions};
use tonic::transport::{Channel, Endpoint};

/// A server over a temporary store, stopped by `shutdown`.
pub(crate) struct TestServer {
    pub(crate) address: std::net::SocketAddr,
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
        Self::start_with_store(directory, settings, options, clock, StoreOptions::default()).await
    }

    /// As [`Self::start_with_clock`], the store opened with `store_options`.
    pub(crate) async fn start_with_store(
        directory: tempfile::TempDir,
        settings: Settings,
        options: ServerOptions,
        clock: Arc<dyn Clock>,
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
        let server = spawn_local(Arc::clone(&state), options).await.unwrap();
        Self {
            address: server.addr,
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
