//! The configuration file as written: every key optional, unknown keys refused
//! (`deny_unknown_fields`), values still unchecked. `validate` turns it into a `Config`.

use std::path::PathBuf;

use serde::Deserialize;

/// The file as written: every field optional, unknown fields refused.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileConfig {
    pub(super) data_dir: Option<PathBuf>,
    #[serde(default)]
    pub(super) store: FileStoreConfig,
    #[serde(default)]
    pub(super) server: FileServerConfig,
    #[serde(default)]
    pub(super) planning: FilePlanningConfig,
    #[serde(default)]
    pub(super) registry: FileRegistryConfig,
    #[serde(default)]
    pub(super) scaler: FileScalerConfig,
    #[serde(default)]
    pub(super) sources: FileSourcesConfig,
    pub(super) fleet: Option<super::fleet::FileFleetConfig>,
}

/// The `[scaler]` table as written (the KEDA external scaler's listener).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileScalerConfig {
    pub(super) listen: Option<String>,
    pub(super) hpa_tolerance: Option<f64>,
    pub(super) max_streams: Option<usize>,
    #[serde(default)]
    pub(super) tls: Option<FileScalerTlsConfig>,
}

/// The `[scaler.tls]` table as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileScalerTlsConfig {
    pub(super) cert: PathBuf,
    pub(super) key: PathBuf,
    pub(super) client_ca: Option<PathBuf>,
}

/// The `[sources]` table as written: how workloads' history sources are polled and retried.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileSourcesConfig {
    pub(super) poll_interval: Option<String>,
    pub(super) retry_initial: Option<String>,
    pub(super) retry_max: Option<String>,
}

/// The `[registry]` table as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileRegistryConfig {
    pub(super) dir: Option<PathBuf>,
    pub(super) promotion_margin: Option<f64>,
    pub(super) schedule: Option<String>,
    pub(super) concurrency: Option<usize>,
    pub(super) watch_interval: Option<String>,
    pub(super) keep_versions: Option<usize>,
}

/// The `[server]` table as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileServerConfig {
    pub(super) listen: Option<String>,
    pub(super) metrics_listen: Option<String>,
    pub(super) allow_insecure: Option<bool>,
    pub(super) max_message_mib: Option<u64>,
    pub(super) max_streams: Option<usize>,
    pub(super) max_streams_per_client: Option<usize>,
    pub(super) stream_idle_timeout: Option<String>,
    pub(super) request_timeout: Option<String>,
    #[serde(default)]
    pub(super) tls: Option<FileTlsConfig>,
    #[serde(default)]
    pub(super) auth: FileAuthConfig,
    #[serde(default)]
    pub(super) remote_write: FileRemoteWriteConfig,
}

/// The `[server.remote_write]` table as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileRemoteWriteConfig {
    pub(super) enabled: Option<bool>,
    pub(super) max_body_mib: Option<u64>,
    pub(super) max_decoded_mib: Option<u64>,
}

/// The `[server.tls]` table as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileTlsConfig {
    pub(super) cert: PathBuf,
    pub(super) key: PathBuf,
}

/// The `[server.auth]` table as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileAuthConfig {
    #[serde(default)]
    pub(super) tokens: Vec<String>,
    pub(super) tokens_file: Option<PathBuf>,
}

/// The `[planning]` table as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FilePlanningConfig {
    pub(super) plan_horizon: Option<String>,
    pub(super) max_horizon: Option<String>,
    pub(super) history_window: Option<String>,
    pub(super) replan_interval: Option<String>,
    pub(super) replan_after_samples: Option<u64>,
    pub(super) max_concurrent_fits: Option<usize>,
    pub(super) model_cache_entries: Option<usize>,
}

/// The `[store]` table as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileStoreConfig {
    pub(super) fsync: Option<bool>,
    pub(super) checkpoint_after_mib: Option<u64>,
    pub(super) retention: Option<String>,
    pub(super) max_series: Option<usize>,
}
