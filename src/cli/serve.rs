//! `prescale serve`: the store, the planner and the gRPC and metrics endpoints (and the KEDA
//! external scaler, when `[scaler]` sets its listener) until a signal.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Args;
use prescale::app::ServingState;
use prescale::app::telemetry::Telemetry;
use prescale::config::{Config, FleetConfig, FleetMember, Overrides, ScalerConfig};
use prescale::fleet::EtcdCoordinator;
use prescale::registry::StoreClaim;
use prescale::service::remote_write::RemoteWrite;
use prescale::service::{LocalServer, ServiceError, check_advertised};
use prescale::store::MetricStore;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::args::{Override, StoreArgs};
use super::{DataDirUse, open};
use crate::output::outln;

#[derive(Debug, Args)]
pub(super) struct ServeArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// gRPC address [default: 127.0.0.1:50051].
    #[arg(long, env = "PRESCALE_LISTEN")]
    listen: Option<String>,
    /// Address of the `/metrics` endpoint, or `off` [default: 127.0.0.1:9464].
    #[arg(long, env = "PRESCALE_METRICS_LISTEN")]
    metrics_listen: Option<String>,
    /// Address of the KEDA external scaler, or `off` [default: `[scaler] listen`, else off].
    #[arg(long, env = "PRESCALE_SCALER_LISTEN")]
    scaler_listen: Option<String>,
    /// This replica's `[fleet] member_id` (in a StatefulSet, the pod's name).
    #[arg(long, env = "PRESCALE_MEMBER_ID")]
    member_id: Option<String>,
    /// `[fleet] advertise`: the host:port the other replicas dial for this one's gRPC API.
    #[arg(long, env = "PRESCALE_ADVERTISE")]
    advertise: Option<String>,
    /// `[fleet] scaler_advertise`: the host:port of this replica's KEDA scaler for the others.
    #[arg(long, env = "PRESCALE_SCALER_ADVERTISE")]
    scaler_advertise: Option<String>,
}

impl Override for ServeArgs {
    fn apply(&self, overrides: &mut Overrides) {
        self.store.apply(overrides);
        overrides.listen.clone_from(&self.listen);
        overrides.metrics_listen.clone_from(&self.metrics_listen);
        overrides.scaler_listen.clone_from(&self.scaler_listen);
        overrides.member_id.clone_from(&self.member_id);
        overrides.advertise.clone_from(&self.advertise);
        overrides
            .scaler_advertise
            .clone_from(&self.scaler_advertise);
        overrides.joins_fleet = true;
    }
}

/// Runs the server until SIGINT or SIGTERM, then drains it and flushes the store.
pub(super) fn serve(config: &Config) -> Result<()> {
    let (app, store) = open(config, DataDirUse::Create)?;
    if let Some(retention) = config.settings.retention {
        store.enforce_retention(prescale::domain::Timestamp::now(), retention)?;
    }
    let metrics = Arc::new(Telemetry::default());
    let state = ServingState::open(
        app,
        &config.data_dir,
        config.settings.clone(),
        Arc::clone(&metrics),
    )?;
    crate::runtime::multi_threaded()?.block_on(async {
        let listener = tokio::net::TcpListener::bind(config.server.listen)
            .await
            .with_context(|| format!("binding {}", config.server.listen))?;
        let coordinator = match &config.fleet {
            Some(fleet) => Some(join_fleet(fleet, &state).await?),
            None => None,
        };
        // Only now: a replica that cannot join the fleet never said it serves.
        outln!(
            "prescale serving gRPC on {} ({}, {})",
            listener.local_addr()?,
            if config.server.options.tls.is_some() {
                "TLS"
            } else {
                "plaintext"
            },
            if config.server.options.tokens.is_empty() {
                "no auth"
            } else {
                "bearer tokens"
            },
        )?;
        let stop_metrics = CancellationToken::new();
        let remote_write = config
            .server
            .remote_write
            .map(|limits| RemoteWrite::new(Arc::clone(&state), &config.server.options, limits));
        let metrics_task = match config.server.metrics_listen {
            Some(address) => {
                Some(serve_metrics(address, metrics, remote_write, &stop_metrics).await?)
            }
            None => None,
        };
        let scaler = match &config.scaler {
            Some(scaler) => Some(bind_scaler(scaler).await?),
            None => None,
        };
        let server = LocalServer::start_with_scaler(
            listener,
            scaler,
            Arc::clone(&state),
            config.server.options.clone(),
        )?;
        // A replica that cannot turn active (its advertised address does not reach it) stops.
        let (refuse, refused) = oneshot::channel();
        if let (Some(fleet), Some(coordinator)) = (&config.fleet, coordinator) {
            tokio::spawn(activate(
                fleet.clone(),
                config.server.options.peer_ca.clone(),
                state,
                coordinator,
                refuse,
            ));
        }
        let mut failure = None;
        server
            .shutdown_on(async {
                tokio::select! {
                    () = shutdown_signal() => {}
                    Ok(error) = refused => failure = Some(error),
                }
            })
            .await??;
        stop_metrics.cancel();
        if let Some(task) = metrics_task {
            task.await??;
        }
        if let Some(error) = failure {
            return Err(error.into());
        }
        outln!("prescale stopped; store flushed")?;
        Ok(())
    })
}

/// Connects to etcd (an unreachable etcd is an error here, at start) and joins the fleet as a
/// joining member; the membership tasks stop with the state's shutdown, which also leaves the
/// fleet. Returns the membership, which [`activate`] turns active once the server runs.
async fn join_fleet(
    fleet: &FleetConfig,
    state: &Arc<ServingState>,
) -> Result<Arc<EtcdCoordinator>> {
    if let Some(tsdb) = &fleet.tsdb {
        let (query, remote_write_url) = (tsdb.query.clone(), tsdb.remote_write_url.clone());
        let joined = Arc::clone(state);
        tokio::task::spawn_blocking(move || joined.use_tsdb(&query, &remote_write_url))
            .await?
            .context("the fleet's tsdb ([fleet] tsdb_*)")?;
    }
    let member = member(fleet);
    // A store that refuses this replica is found before it joins and takes a share.
    let store = match &fleet.model_store {
        Some(location) => {
            let store = prescale::registry::ModelStore::open(location)
                .with_context(|| format!("opening the fleet's model store {location}"))?;
            store.check().await.with_context(|| {
                format!("the fleet's model store {location} ([fleet] model_store)")
            })?;
            Some(store)
        }
        None => None,
    };
    let etcd = super::connect_etcd(fleet).await?;
    // A store another fleet uses is refused before this replica joins: each fleet's retention
    // would delete the other's versions.
    if let Some(store) = &store {
        let fleet_id = prescale::fleet::fleet_id(&etcd, &fleet.prefix)
            .await
            .context("the fleet's id in etcd")?;
        let claim = StoreClaim::new(fleet_id, &fleet.prefix, &member.member_id);
        store.claim_for(&claim).await.with_context(|| {
            format!(
                "the fleet's model store {} ([fleet] model_store)",
                store.location()
            )
        })?;
    }
    let (coordinator, _membership) = EtcdCoordinator::join(
        etcd,
        fleet.membership(member),
        state.shutdown_token().child_token(),
    )
    .await
    .context("joining the fleet")?;
    if let Some(store) = store {
        outln!(
            "models shared through {}, live pointers in etcd",
            store.location()
        )?;
        state.share_models(store);
    }
    state.join_fleet(Arc::clone(&coordinator) as Arc<dyn prescale::fleet::Coordinator>);
    outln!(
        "fleet member {} (advertised as {}) through etcd at {}",
        member.member_id,
        member.advertise,
        fleet.etcd_endpoints.join(",")
    )?;
    if let Some(tsdb) = &fleet.tsdb {
        outln!(
            "pushed samples are written through to {} and refilled from {}",
            tsdb.remote_write_url,
            tsdb.query.url()
        )?;
    }
    Ok(coordinator)
}

/// This replica's keys of `[fleet]`.
fn member(fleet: &FleetConfig) -> &FleetMember {
    fleet
        .member
        .as_ref()
        .expect("invariant: serve loads its config as a joining member, which names it")
}

/// Turns this replica, registered as joining and serving, active: once its advertised address is
/// shown to reach its own API (within `join_timeout`; `peer_ca` verifies it when the API serves
/// TLS) and it has warmed its share. An address that does not reach it is sent to `refuse`
/// instead, and the server stops: other replicas could not forward calls to it.
async fn activate(
    fleet: FleetConfig,
    peer_ca: Option<Vec<u8>>,
    state: Arc<ServingState>,
    coordinator: Arc<EtcdCoordinator>,
    refuse: oneshot::Sender<ServiceError>,
) {
    let member = member(&fleet);
    let reached = check_advertised(
        &member.advertise,
        &member.member_id,
        peer_ca.as_deref(),
        fleet.join_timeout,
    )
    .await;
    match reached {
        Ok(()) => {
            state
                .warm_then_activate(coordinator, fleet.join_timeout)
                .await
        }
        Err(error) => {
            let _ = refuse.send(error);
        }
    }
}

/// Binds the `/metrics` endpoint (and remote-write, when given) and serves it on a task until
/// `stop` is cancelled.
async fn serve_metrics(
    address: SocketAddr,
    metrics: Arc<Telemetry>,
    remote_write: Option<RemoteWrite>,
    stop: &CancellationToken,
) -> Result<JoinHandle<std::io::Result<()>>> {
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("binding the metrics endpoint {address}"))?;
    let local = listener.local_addr()?;
    outln!("metrics on http://{local}/metrics")?;
    if remote_write.is_some() {
        outln!("Prometheus remote-write on http://{local}/api/v1/write")?;
    }
    Ok(tokio::spawn(prescale::service::serve_http(
        listener,
        metrics,
        remote_write,
        stop.clone().cancelled_owned(),
    )))
}

/// Binds the KEDA external scaler's listener.
async fn bind_scaler(
    scaler: &ScalerConfig,
) -> Result<(tokio::net::TcpListener, prescale::service::ScalerOptions)> {
    let listener = tokio::net::TcpListener::bind(scaler.listen)
        .await
        .with_context(|| format!("binding the KEDA scaler {}", scaler.listen))?;
    outln!(
        "KEDA external scaler on {} ({}, no token asked, no write served)",
        listener.local_addr()?,
        match &scaler.options.tls {
            Some(tls) if tls.client_ca.is_some() => "TLS with client certificates",
            Some(_) => "TLS",
            None => "plaintext",
        },
    )?;
    Ok((listener, scaler.options.clone()))
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    let interrupt = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => tracing::info!("received SIGINT"),
        () = terminate => tracing::info!("received SIGTERM"),
    }
}
