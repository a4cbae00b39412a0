//! The tokio runtime of the commands that run async code: `serve`, `demo` and `bench-grpc`.

use anyhow::{Context, Result};

/// A multi-threaded runtime with every driver (I/O, time, signals) enabled.
pub(crate) fn multi_threaded() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}
