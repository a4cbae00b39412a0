//! The KEDA external scaler's own listener (`[scaler]`): `externalscaler.ExternalScaler`, gRPC
//! health and reflection, and nothing else.
//!
//! KEDA sends no bearer token, so this listener asks for none; in exchange it serves no write and
//! no prescale service, only the replicas each plan wants now. TLS is optional, and with a client
//! CA it accepts only clients holding a certificate that CA signed (KEDA's `tlsCertFile`).

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tonic::transport::server::TcpIncoming;
use tonic::transport::{Certificate, Identity, ServerTlsConfig};
use tonic_health::ServingStatus;

use super::externalscaler::{self, external_scaler_server::ExternalScalerServer};
use super::forward::{self, Forwarder};
use super::scaler_handlers::ScalerHandlers;
use super::{ServiceError, TlsFiles, observe_layer, read_tls, reflection, server_builder};
use crate::app::ServingState;
use crate::plan::HPA_TOLERANCE;

/// The service name health checks and reflection know the scaler by.
pub const SCALER_SERVICE_NAME: &str = "externalscaler.ExternalScaler";

/// TLS of the scaler's listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScalerTls {
    /// The server's certificate chain and key.
    pub identity: TlsFiles,
    /// PEM bundle of the CA that signs client certificates; when set, a client without a
    /// certificate it signed is refused during the handshake.
    pub client_ca: Option<PathBuf>,
}

/// How the scaler's listener serves. Validated by [`crate::config::Config`] (`[scaler]`).
#[derive(Debug, Clone, PartialEq)]
pub struct ScalerOptions {
    /// TLS, optionally with client certificates; plaintext when `None`.
    pub tls: Option<ScalerTls>,
    /// The HPA tolerance a scale-up is rounded past when the trigger does not set
    /// `scaleUpTolerance` (see [`crate::plan::metric_value`]); 0 turns the compensation off.
    pub hpa_tolerance: f64,
    /// `StreamIsActive` and `StreamMetricSpec` streams open at once; more get `ResourceExhausted`.
    pub max_streams: usize,
    /// In a fleet whose scalers serve TLS: the CA (PEM) that signed every replica's certificate.
    /// KEDA calls forwarded to the other replicas' scalers then use TLS and verify their
    /// certificates with it, presenting this scaler's own certificate where `client_ca` asks for
    /// one; `None` forwards in plaintext.
    pub peer_ca: Option<Vec<u8>>,
    /// In a fleet: bound on a KEDA call forwarded to another replica's scaler (see
    /// [`ServerOptions::forward_timeout`](super::ServerOptions::forward_timeout)).
    pub forward_timeout: Duration,
}

impl Default for ScalerOptions {
    fn default() -> Self {
        Self {
            tls: None,
            hpa_tolerance: HPA_TOLERANCE,
            max_streams: 1024,
            peer_ca: None,
            forward_timeout: super::FORWARD_TIMEOUT,
        }
    }
}

/// Serves the external scaler on `listener` until `shutdown` completes. Reads plans only: the
/// planner and the store belong to [`super::serve`], which this runs beside.
pub async fn serve_scaler(
    listener: tokio::net::TcpListener,
    state: Arc<ServingState>,
    options: ScalerOptions,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServiceError> {
    let (health, health_service) = tonic_health::server::health_reporter();
    for name in [SCALER_SERVICE_NAME, ""] {
        health
            .set_service_status(name, ServingStatus::Serving)
            .await;
    }
    let reflection_v1 = reflection(externalscaler::FILE_DESCRIPTOR_SET)
        .build_v1()
        .expect("invariant: the embedded descriptor sets decode");
    let reflection_v1alpha = reflection(externalscaler::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .expect("invariant: the embedded descriptor sets decode");
    let handlers = ScalerHandlers::new(
        Arc::clone(&state),
        options.hpa_tolerance,
        options.max_streams,
        forwarder(&options)?,
    );

    let mut builder = server_builder();
    if let Some(tls) = &options.tls {
        builder = builder.tls_config(tls_config(tls)?)?;
    }
    let router = builder
        .layer(observe_layer(&state, externalscaler::FILE_DESCRIPTOR_SET))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(ExternalScalerServer::new(handlers));
    let signal = async move {
        shutdown.await;
        for name in [SCALER_SERVICE_NAME, ""] {
            health
                .set_service_status(name, ServingStatus::NotServing)
                .await;
        }
    };
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    router
        .serve_with_incoming_shutdown(incoming, signal)
        .await?;
    Ok(())
}

/// What forwards KEDA calls to the other replicas' scalers: over TLS verifying with the fleet's CA
/// when `options` has one, with this scaler's identity as the client certificate when the
/// scalers ask for client certificates.
fn forwarder(options: &ScalerOptions) -> Result<Forwarder, ServiceError> {
    let Some(peer_ca) = &options.peer_ca else {
        return Ok(Forwarder::new(None, options.forward_timeout));
    };
    let mut tls = forward::verifying(peer_ca);
    if let Some(own) = options.tls.as_ref().filter(|tls| tls.client_ca.is_some()) {
        tls = tls.identity(Identity::from_pem(
            read_tls(&own.identity.cert)?,
            read_tls(&own.identity.key)?,
        ));
    }
    Ok(Forwarder::new(Some(tls), options.forward_timeout))
}

/// The server's identity and, when a client CA is given, mandatory client certificates.
fn tls_config(tls: &ScalerTls) -> Result<ServerTlsConfig, ServiceError> {
    let identity = Identity::from_pem(read_tls(&tls.identity.cert)?, read_tls(&tls.identity.key)?);
    let mut config = ServerTlsConfig::new().identity(identity);
    if let Some(client_ca) = &tls.client_ca {
        config = config.client_ca_root(Certificate::from_pem(read_tls(client_ca)?));
    }
    Ok(config)
}
