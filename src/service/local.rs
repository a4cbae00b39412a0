//! The gRPC server started in this process on a listener of the caller's, stopped by a handle:
//! what `prescale serve`, `prescale demo`, `prescale bench-grpc` and the integration tests share.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::oneshot;
use tokio::task::{JoinError, JoinHandle};

use super::{ServerOptions, ServiceError, serve};
use crate::app::ServingState;

/// A server running on a task of the current runtime; [`LocalServer::shutdown`] stops it.
///
/// Dropping it signals shutdown too, without waiting for the server to finish.
#[derive(Debug)]
pub struct LocalServer {
    /// Address the server accepts connections on (the port the system chose for port 0).
    pub addr: SocketAddr,
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
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let join = tokio::spawn(serve(listener, state, options, async move {
            let _ = stopped.await;
        }));
        Ok(Self { addr, stop, join })
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
