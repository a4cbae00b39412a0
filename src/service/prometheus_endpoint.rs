//! The HTTP listener for Prometheus: `GET /metrics` (the telemetry of [`crate::app::telemetry`],
//! in OpenMetrics when the scraper asks for it, the text format 0.0.4 otherwise) and, when
//! configured, `POST /api/v1/write` (see [`super::remote_write`]).

use std::future::Future;
use std::sync::Arc;

use axum::http::HeaderMap;
use axum::http::header::{ACCEPT, CONTENT_TYPE};

use super::remote_write::RemoteWrite;
use crate::app::telemetry::{OPENMETRICS_CONTENT_TYPE, PROMETHEUS_TEXT_CONTENT_TYPE, Telemetry};

/// Serves `GET /metrics` on `listener` until `shutdown` completes.
pub async fn serve_metrics(
    listener: tokio::net::TcpListener,
    metrics: Arc<Telemetry>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_http(listener, metrics, None, shutdown).await
}

/// Serves `GET /metrics` and, with `remote_write`, `POST /api/v1/write` on `listener` until
/// `shutdown` completes.
pub async fn serve_http(
    listener: tokio::net::TcpListener,
    metrics: Arc<Telemetry>,
    remote_write: Option<RemoteWrite>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let mut router = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move |headers: HeaderMap| {
            let metrics = Arc::clone(&metrics);
            async move { exposition(&metrics, &headers) }
        }),
    );
    if let Some(receiver) = remote_write {
        let receiver = Arc::new(receiver);
        router = router.route(
            "/api/v1/write",
            axum::routing::post(move |request| Arc::clone(&receiver).handle(request)),
        );
    }
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

/// The telemetry in OpenMetrics when the `Accept` header names it (Prometheus does), otherwise
/// in the text format 0.0.4 (what a person's `curl` gets).
fn exposition(
    metrics: &Telemetry,
    headers: &HeaderMap,
) -> ([(axum::http::HeaderName, &'static str); 1], String) {
    let openmetrics = headers
        .get_all(ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .any(|value| value.contains("application/openmetrics-text"));
    if openmetrics {
        (
            [(CONTENT_TYPE, OPENMETRICS_CONTENT_TYPE)],
            metrics.render_openmetrics(),
        )
    } else {
        (
            [(CONTENT_TYPE, PROMETHEUS_TEXT_CONTENT_TYPE)],
            metrics.render(),
        )
    }
}
