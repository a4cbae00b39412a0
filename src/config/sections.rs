//! The validated `[server]` and `[registry]` sections of a [`super::Config`], with their defaults.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::registry::CronSchedule;
use crate::service::ServerOptions;

/// Where and how `prescale serve` listens.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    /// gRPC address.
    pub listen: SocketAddr,
    /// Address of the HTTP `/metrics` endpoint; `None` disables it.
    pub metrics_listen: Option<SocketAddr>,
    /// Limits, TLS and tokens.
    pub options: ServerOptions,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            metrics_listen: Some(SocketAddr::from(([127, 0, 0, 1], 9464))),
            options: ServerOptions::default(),
        }
    }
}

/// Where trained models live and how retraining runs (`[registry]`).
#[derive(Debug, Clone, PartialEq)]
pub struct RegistryConfig {
    /// The registry directory (default: `<data_dir>/models`).
    pub dir: PathBuf,
    /// A new model is promoted when its backtest MAE is at most `1 + margin` times the live
    /// model's on the same recent folds.
    pub promotion_margin: f64,
    /// When the server retrains every series; `None` (`"off"`) never.
    pub schedule: Option<CronSchedule>,
    /// Series fitted at once by `prescale retrain` (the server uses `max_concurrent_fits`).
    pub concurrency: usize,
    /// How often the server re-reads the manifest to serve versions another process promoted or
    /// rolled back; `None` (`"off"`) never.
    pub watch_interval: Option<Duration>,
}

impl RegistryConfig {
    /// The defaults for a store in `data_dir`.
    pub fn defaults_for(data_dir: &Path) -> Self {
        Self {
            dir: data_dir.join("models"),
            promotion_margin: 0.05,
            schedule: Some(
                CronSchedule::NIGHTLY
                    .parse()
                    .expect("invariant: the nightly schedule parses"),
            ),
            concurrency: std::thread::available_parallelism().map_or(2, usize::from),
            watch_interval: Some(Duration::from_secs(10)),
        }
    }
}
