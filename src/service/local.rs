//! The gRPC server started in this process on a listener of the caller's, stopped by a handle:
//! what `prescale serve`, `prescale demo`, `prescale bench-grpc` and the integration tests share.
//! With a second listener, the KEDA external scaler runs beside it and stops with it.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::oneshot;
use tokio::task::{JoinError, JoinHandle};

use super::{ScalerOptions, ServerOptions, ServiceError, serve, serve_scaler};
use crate::app::ServingState;

/// A server running on a task of the current runtime; [`LocalServer::shutdown`] stops it.
///
/// Dropping it signals shutdown too, without waiting for the server to finish.
#[derive(Debug)]
pub struct LocalServer {
    /// Address the server accepts connections on (the port the system chose for port 0).
    pub addr: SocketAddr,
    /// Address of the KEDA external scaler's listener, when one is served.
    pub scaler_addr: Option<SocketAddr>,
    /// Completes the server's shutdown signal when sent to (or dropped).
    stop: oneshot::Sender<()>,
    /// The task running [`serve`]; it ends once the store is flushed after shutdown.
    join: JoinHandle<Result<(), ServiceError>>,
}

impl LocalServer {
    /// Serves `state` on `listener`, on a new task, until [`Self::shutdown`].
    pub fn start(
        listener: tokio::net::TcpListener,
        state: Arc<ServingState>,
        options: ServerOptions,
    ) -> std::io::Result<Self> {
        Self::start_with_scaler(listener, None, state, options)
    }

    /// As [`Self::start`], with the KEDA external scaler on `scaler`'s listener when given. The
    /// scaler stops when the server's shutdown begins; a scaler that fails (a bad TLS file) stops
    /// the server too, and its error is returned.
    pub fn start_with_scaler(
        listener: tokio::net::TcpListener,
        scaler: Option<(tokio::net::TcpListener, ScalerOptions)>,
        state: Arc<ServingState>,
        options: ServerOptions,
    ) -> std::io::Result<Self> {
        let addr = listener.local_addr()?;
        let scaler_addr = match &scaler {
            Some((listener, _)) => Some(listener.local_addr()?),
            None => None,
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let join = tokio::spawn(async move {
            let Some((scaler_listener, scaler_options)) = scaler else {
                return serve(listener, state, options, async move {
                    let _ = stopped.await;
                })
                .await;
            };
            let (scaler_failed, failed) = oneshot::channel::<()>();
            let scaler = tokio::spawn({
                let stopping = state.shutdown_token().clone();
                let state = Arc::clone(&state);
                async move {
                    let served = serve_scaler(
                        scaler_listener,
                        state,
                        scaler_options,
                        stopping.cancelled_owned(),
                    )
                    .await;
                    if served.is_err() {
                        let _ = scaler_failed.send(());
                    }
                    served
                }
            });
            let served = serve(listener, state, options, async move {
                tokio::select! {
                    _ = stopped => {}
                    Ok(()) = failed => tracing::error!("the scaler listener failed: stopping"),
                }
            })
            .await;
            let scaled = scaler.await.unwrap_or_else(|error| {
                Err(ServiceError::Task {
                    task: "scaler",
                    reason: error.to_string(),
                })
            });
            served.and(scaled)
        });
        Ok(Self {
            addr,
            scaler_addr,
            stop,
            join,
        })
    }

    /// Signals shutdown and waits until the server has drained and flushed the store. The outer
    /// error is the server task's panic or cancellation, the inner one the server's own.
    pub async fn shutdown(self) -> Result<Result<(), ServiceError>, JoinError> {
        let _ = self.stop.send(());
        self.join.await
    }

    /// Serves until `signal` completes, then shuts down as [`Self::shutdown`] does; returns early
    /// when the server stops by itself (it failed to start, or its transport failed).
    pub async fn shutdown_on(
        mut self,
        signal: impl Future<Output = ()>,
    ) -> Result<Result<(), ServiceError>, JoinError> {
        tokio::select! {
            () = signal => self.shutdown().await,
            ended = &mut self.join => ended,
        }
    }
}

/// Serves `state` on an ephemeral loopback port (`127.0.0.1:0`), on a new task.
pub async fn spawn_local(
    state: Arc<ServingState>,
    options: ServerOptions,
) -> std::io::Result<LocalServer> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    LocalServer::start(listener, state, options)
}

/// As [`spawn_local`], with the KEDA external scaler on a second ephemeral loopback port
/// ([`LocalServer::scaler_addr`]).
pub async fn spawn_local_with_scaler(
    state: Arc<ServingState>,
    options: ServerOptions,
    scaler: ScalerOptions,
) -> std::io::Result<LocalServer> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let scaler_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    LocalServer::start_with_scaler(listener, Some((scaler_listener, scaler)), state, options)
}
