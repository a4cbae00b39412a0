//! The HTTP listener for Prometheus: `GET /metrics` in the text exposition format (the counters are
//! kept in [`crate::app::telemetry`]).

use std::future::Future;
use std::sync::Arc;

use axum::http::header::CONTENT_TYPE;

use crate::app::telemetry::Telemetry;

/// Serves `GET /metrics` on `listener` until `shutdown` completes.
pub async fn serve_metrics(
    listener: tokio::net::TcpListener,
    metrics: Arc<Telemetry>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let router = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let metrics = Arc::clone(&metrics);
            async move {
                (
                    [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
                    metrics.render(),
                )
            }
        }),
    );
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}
