//! The validated `[server]` and `[store]` sections of a [`super::Config`], and the defaults of the
//! keys a file may leave out.

use std::net::SocketAddr;

use crate::app::Settings;
use crate::registry::CronSchedule;
use crate::service::remote_write::RemoteWriteLimits;
use crate::service::{ScalerOptions, ServerOptions};
use crate::store::StoreOptions;

/// Where and how `prescale serve` listens.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    /// gRPC address.
    pub listen: SocketAddr,
    /// Address of the HTTP `/metrics` endpoint; `None` disables it.
    pub metrics_listen: Option<SocketAddr>,
    /// Limits, TLS and tokens.
    pub options: ServerOptions,
    /// `POST /api/v1/write` on the metrics listener, with these limits; `None` disables it.
    pub remote_write: Option<RemoteWriteLimits>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            metrics_listen: Some(SocketAddr::from(([127, 0, 0, 1], 9464))),
            options: ServerOptions::default(),
            remote_write: Some(RemoteWriteLimits::default()),
        }
    }
}

/// Where and how `prescale serve` serves the KEDA external scaler (`[scaler]`).
#[derive(Debug, Clone, PartialEq)]
pub struct ScalerConfig {
    /// The scaler's own gRPC address (no token asked, no write served).
    pub listen: SocketAddr,
    /// TLS, the HPA tolerance compensated for, the stream limit.
    pub options: ScalerOptions,
}

/// How the store writes (`[store]`); its retention is [`Settings::retention`], which the store
/// and the server's hourly enforcement both take from there (see [`super::Config::store_options`]).
#[derive(Debug, Clone, PartialEq)]
pub struct StoreConfig {
    /// Flush each log record to the device before acknowledging it.
    pub fsync: bool,
    /// Write a checkpoint once this many bytes were logged since the last one.
    pub checkpoint_after_bytes: u64,
    /// Most series the store holds.
    pub max_series: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        let defaults = StoreOptions::default();
        Self {
            fsync: defaults.fsync,
            checkpoint_after_bytes: defaults.checkpoint_after_bytes,
            max_series: defaults.max_series,
        }
    }
}

/// The app's settings when no file sets them: [`Settings::default`], but retraining nightly
/// (`[registry] schedule` defaults to [`CronSchedule::NIGHTLY`]).
pub(super) fn default_settings() -> Settings {
    Settings {
        retrain_schedule: Some(
            CronSchedule::NIGHTLY
                .parse()
                .expect("invariant: the nightly schedule parses"),
        ),
        ..Settings::default()
    }
}

/// Series `prescale retrain` fits at once when `[registry] concurrency` is not set: one per core.
pub(super) fn default_retrain_concurrency() -> usize {
    std::thread::available_parallelism().map_or(2, usize::from)
}
