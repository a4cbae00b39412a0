//! The gRPC service (`prescale serve`): tonic adapters over [`ServingState`], plus health, reflection and
//! the HTTP listener for Prometheus (`/metrics`, remote-write).
//!
//! [`serve`] takes its listener and its shutdown signal as arguments (mini-redis `server::run`), so
//! tests bind `127.0.0.1:0` and stop it when they like.

mod auth;
mod convert;
mod error;
mod fleet_status;
mod forward;
mod forward_push;
mod handlers;
mod layers;
mod local;
mod member_connector;
mod plan_route;
mod plan_watch;
mod prometheus_endpoint;
pub mod remote_write;
mod scaler;
mod scaler_handlers;
mod self_check;
mod streams;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Identity, Server, ServerTlsConfig};
use tonic_health::ServingStatus;

use crate::app::ServingState;

pub use convert::workload_message;
pub use fleet_status::{FLEET_HEALTH_SERVICE, member_health_service};
pub use layers::code_name;
pub use local::{LocalServer, spawn_local, spawn_local_with_scaler};
pub use prometheus_endpoint::{serve_http, serve_metrics};
pub use scaler::{SCALER_SERVICE_NAME, ScalerOptions, ScalerTls, serve_scaler};
pub use self_check::check_advertised;

/// The generated protobuf messages, clients and servers of `proto/prescale/v1`.
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
pub mod proto {
    tonic::include_proto!("prescale.v1");

    /// The encoded file descriptor set of every prescale proto, served by reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/prescale_descriptor.bin"));
}

/// The generated messages, client and server of KEDA's vendored `externalscaler.proto`.
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
pub mod externalscaler {
    tonic::include_proto!("externalscaler");

    /// The encoded file descriptor set of `externalscaler.proto`, served by reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/externalscaler_descriptor.bin"));
}

/// Names of the prescale services, as health checks and reflection know them.
pub const SERVICE_NAMES: [&str; 5] = [
    "prescale.v1.IngestService",
    "prescale.v1.ForecastService",
    "prescale.v1.PlanService",
    "prescale.v1.EventService",
    "prescale.v1.AdminService",
];

/// PEM files of the server's TLS identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// Certificate chain.
    pub cert: PathBuf,
    /// Private key.
    pub key: PathBuf,
}

/// The default bound on a call forwarded to another replica of a fleet (`[fleet]
/// forward_timeout`).
pub const FORWARD_TIMEOUT: Duration = Duration::from_secs(10);

/// How the server guards itself. Validated by [`crate::config::Config`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerOptions {
    /// Largest request or response message, in bytes; larger requests get `ResourceExhausted`.
    pub max_message_bytes: usize,
    /// Long-lived streams (`WatchPlans`, `Push`) open at once; more get `ResourceExhausted`.
    pub max_streams: usize,
    /// Long-lived streams one client address may hold open; more get `ResourceExhausted`.
    pub max_streams_per_client: usize,
    /// A `Push` that sends no message for this long is closed with `DeadlineExceeded`.
    pub stream_idle_timeout: Duration,
    /// A call (other than a `Push` stream) not answered within this gets `DeadlineExceeded`.
    pub request_timeout: Duration,
    /// Serve TLS with this identity; plaintext when `None`.
    pub tls: Option<TlsFiles>,
    /// Accepted bearer tokens; empty accepts every call. Health checks never need one.
    pub tokens: Vec<String>,
    /// In a fleet serving TLS: the CA (PEM) that signed every replica's certificate. Calls
    /// forwarded to the other replicas' APIs then use TLS and verify their certificates with it;
    /// `None` forwards in plaintext.
    pub peer_ca: Option<Vec<u8>>,
    /// In a fleet: bound on a unary call forwarded to another replica (with the caller's own
    /// deadline, the smaller of the two) and on opening a forwarded stream; the members'
    /// connections are pinged this often and dropped when a ping goes unanswered this long.
    pub forward_timeout: Duration,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            max_message_bytes: 16 << 20,
            max_streams: 1024,
            max_streams_per_client: 64,
            stream_idle_timeout: Duration::from_secs(300),
            request_timeout: Duration::from_secs(60),
            tls: None,
            tokens: Vec::new(),
            peer_ca: None,
            forward_timeout: FORWARD_TIMEOUT,
        }
    }
}

/// Errors starting or running the server.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// A TLS file could not be read.
    #[error("cannot read TLS file {path}: {source}")]
    TlsFile {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The transport failed (bad TLS identity, listener error).
    #[error("transport: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// A task serving beside the main listener (the KEDA scaler's) panicked or was cancelled.
    #[error("the {task} task failed: {reason}")]
    Task {
        /// Which task.
        task: &'static str,
        /// Its panic or cancellation.
        reason: String,
    },
    /// A replica's advertised address (`[fleet] advertise`) does not reach its own API, so the
    /// other replicas could not forward calls to it.
    #[error(
        "fleet.advertise {address} does not reach this replica (member {member_id}): {reason}; the other replicas could not forward calls to it"
    )]
    AdvertiseUnreachable {
        /// The advertised address.
        address: String,
        /// This replica's member id.
        member_id: String,
        /// What answered there instead, or why nothing did.
        reason: String,
    },
    /// Flushing the store after shutdown failed.
    #[error("flushing the store on shutdown: {0}")]
    Flush(crate::app::AppError),
}

fn read_tls(path: &PathBuf) -> Result<Vec<u8>, ServiceError> {
    std::fs::read(path).map_err(|source| ServiceError::TlsFile {
        path: path.clone(),
        source,
    })
}

/// Serves every prescale service on `listener` until `shutdown` completes, with the background
/// planner running beside it.
///
/// On shutdown: health turns `NOT_SERVING`, no new connection is accepted, watch streams end
/// (`WatchPlans` and the scaler's streams with `UNAVAILABLE`, so clients open them again), calls
/// in flight finish, plan refreshes in flight finish, and the store's log is flushed to the
/// device.
/// Every acknowledged write was already in the store's log before it was acknowledged; the next
/// start replays the log written since the last checkpoint.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<ServingState>,
    options: ServerOptions,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServiceError> {
    let (health, health_service) = tonic_health::server::health_reporter();
    set_health(&health, ServingStatus::Serving).await;

    let handlers = handlers::Handlers::new(Arc::clone(&state), &options);
    let auth = auth::BearerAuth::new(&options.tokens);
    let limit = options.max_message_bytes;
    let reflection_v1 = reflection(proto::FILE_DESCRIPTOR_SET)
        .build_v1()
        .expect("invariant: the embedded descriptor sets decode");
    let reflection_v1alpha = reflection(proto::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .expect("invariant: the embedded descriptor sets decode");

    // A prescale service with the message size limit, behind the token check.
    macro_rules! guarded {
        ($($server:ident)::+) => {
            InterceptedService::new(
                proto::$($server)::+::new(handlers.clone())
                    .max_decoding_message_size(limit)
                    .max_encoding_message_size(limit),
                auth.clone(),
            )
        };
    }

    let mut builder = server_builder();
    if let Some(tls) = &options.tls {
        let identity = Identity::from_pem(read_tls(&tls.cert)?, read_tls(&tls.key)?);
        builder = builder.tls_config(ServerTlsConfig::new().identity(identity))?;
    }
    let router = builder
        .layer(observe_layer(&state, proto::FILE_DESCRIPTOR_SET))
        .layer(layers::DeadlineLayer::new(
            options.request_timeout,
            layers::method_paths(&[proto::FILE_DESCRIPTOR_SET], |method| {
                method.client_streaming()
            }),
        ))
        .add_service(health_service)
        .add_service(InterceptedService::new(reflection_v1, auth.clone()))
        .add_service(InterceptedService::new(reflection_v1alpha, auth.clone()))
        .add_service(guarded!(ingest_service_server::IngestServiceServer))
        .add_service(guarded!(forecast_service_server::ForecastServiceServer))
        .add_service(InterceptedService::new(
            plan_route::PlanRoutes::new(handlers.clone(), limit),
            auth.clone(),
        ))
        .add_service(guarded!(event_service_server::EventServiceServer))
        .add_service(guarded!(admin_service_server::AdminServiceServer));

    let background = spawn_background(&state);
    let fleet_health = fleet_status::follow_fleet_health(health.clone(), Arc::clone(&state)).await;
    let token = state.shutdown_token().clone();
    let signal = async move {
        shutdown.await;
        tracing::info!("shutting down: draining calls and ending watch streams");
        set_health(&health, ServingStatus::NotServing).await;
        token.cancel();
    };
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let served = router.serve_with_incoming_shutdown(incoming, signal).await;
    state.shutdown_token().cancel();
    let _ = fleet_health.await;
    for (task, name) in background {
        if let Err(error) = task.await {
            tracing::error!(%error, task = name, "background task failed");
        }
    }
    // The stream feeders hold the state: none may outlive the server (its store stays locked while
    // one does).
    state.streams_ended().await;
    let flushed = {
        let state = Arc::clone(&state);
        tokio::task::spawn_blocking(move || state.flush()).await
    };
    served?;
    match flushed {
        Ok(result) => result.map_err(ServiceError::Flush),
        Err(error) => Err(ServiceError::Flush(crate::app::AppError::Worker {
            reason: error.to_string(),
        })),
    }
}

/// Reflection over `services` (an encoded descriptor set) and gRPC health, to build as v1 and
/// v1alpha (grpcurl speaks the first, grpcio's client the second).
fn reflection(services: &'static [u8]) -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(services)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
}

/// A server with HTTP/2 keepalives, so the peer of a long-lived stream that vanished is noticed.
fn server_builder() -> Server {
    Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
}

/// The request metrics layer, knowing every method of `services`, health and reflection.
fn observe_layer(state: &ServingState, services: &[u8]) -> layers::ObserveLayer {
    layers::ObserveLayer::new(
        Arc::clone(state.metrics()),
        layers::method_paths(
            &[
                services,
                tonic_health::pb::FILE_DESCRIPTOR_SET,
                tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
                tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
            ],
            |_| true,
        ),
    )
}

/// Sets the health of every prescale service and of the server as a whole (the empty name).
async fn set_health(health: &tonic_health::server::HealthReporter, status: ServingStatus) {
    for name in SERVICE_NAMES {
        health.set_service_status(name, status).await;
    }
    health.set_service_status("", status).await;
}

/// Starts the state's background work beside the server: the planner, retention, the retraining
/// schedule, the registry watch, the followers of history sources and, in a fleet, the re-sync on
/// membership changes; each ends when the state's
/// shutdown token is cancelled.
fn spawn_background(state: &Arc<ServingState>) -> [(JoinHandle<()>, &'static str); 6] {
    [
        (tokio::spawn(Arc::clone(state).run_planner()), "planner"),
        (
            tokio::spawn(Arc::clone(state).run_maintenance()),
            "maintenance",
        ),
        (
            tokio::spawn(Arc::clone(state).run_retrain_schedule()),
            "retrain schedule",
        ),
        (
            tokio::spawn(Arc::clone(state).run_registry_watch()),
            "registry watch",
        ),
        (
            tokio::spawn(Arc::clone(state).run_sources()),
            "history sources",
        ),
        (tokio::spawn(Arc::clone(state).run_fleet()), "fleet"),
    ]
}
