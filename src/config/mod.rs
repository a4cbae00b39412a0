//! Configuration: `prescale.toml`, overridden by environment variables and flags, validated once.
//!
//! Precedence, lowest first: built-in defaults, the file, then [`Overrides`] (the CLI fills these from
//! flags and `PRESCALE_*` environment variables). Unknown keys are errors so that a typo is not silently
//! ignored.

mod file;
mod fleet;
mod fleet_tsdb;
mod sections;
mod validate;

use std::path::{Path, PathBuf};

use crate::app::{RetrainSettings, Settings};
use crate::store::StoreOptions;

pub use fleet::{FleetConfig, FleetMember};
pub use fleet_tsdb::FleetTsdb;
pub use sections::{ScalerConfig, ServerConfig, StoreConfig};

use file::FileConfig;

/// File read when no `--config` is given, if it exists.
pub const DEFAULT_CONFIG_FILE: &str = "prescale.toml";

/// Errors loading or validating configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The configuration file could not be read.
    #[error("cannot read config {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file is not valid TOML or holds an unknown key or a value of the wrong type.
    #[error("config {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message, naming the key and position.
        message: String,
    },
    /// A value is well-formed but out of range.
    #[error("config key `{key}`: {reason}")]
    Invalid {
        /// Dotted key, e.g. `store.retention`.
        key: &'static str,
        /// Why it is refused.
        reason: String,
    },
}

/// Values from flags and environment variables; `None` leaves the file's value.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    /// Replaces `data_dir`.
    pub data_dir: Option<PathBuf>,
    /// Replaces `store.fsync`.
    pub fsync: Option<bool>,
    /// Replaces `store.retention` (a duration such as `30d`, or `off`).
    pub retention: Option<String>,
    /// Replaces `server.listen`.
    pub listen: Option<String>,
    /// Replaces `server.metrics_listen` (`off` disables the endpoint).
    pub metrics_listen: Option<String>,
    /// Replaces `scaler.listen` (`off` disables the KEDA external scaler).
    pub scaler_listen: Option<String>,
    /// Replaces `fleet.member_id` (a StatefulSet pod's name, from the pod's environment).
    pub member_id: Option<String>,
    /// Replaces `fleet.advertise`.
    pub advertise: Option<String>,
    /// Replaces `fleet.scaler_advertise`.
    pub scaler_advertise: Option<String>,
    /// Set by `prescale serve`, the one command that joins the fleet as a member: only then are
    /// this replica's keys of `[fleet]` (`member_id`, `advertise`, `scaler_advertise`) required
    /// and read. Other commands use the fleet's etcd and model store, as no member.
    pub joins_fleet: bool,
}

/// Validated configuration: each key in one place, from which the store, the server, the demo
/// and the commands take it.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Directory of the metric store.
    pub data_dir: PathBuf,
    /// How the store writes (its retention is in `settings`).
    pub store: StoreConfig,
    /// How `prescale serve` listens.
    pub server: ServerConfig,
    /// The KEDA external scaler's listener; `None` (the default) serves none.
    pub scaler: Option<ScalerConfig>,
    /// The fleet this replica joins (`[fleet]`); `None` (the default) serves alone.
    pub fleet: Option<FleetConfig>,
    /// What the app runs with: `[planning]`, `[store] retention`, and the `[registry]` keys the
    /// server uses (directory, promotion margin, schedule, watch interval).
    pub settings: Settings,
    /// Series `prescale retrain` fits at once (`[registry] concurrency`; the server fits
    /// `planning.max_concurrent_fits` at once instead).
    pub retrain_concurrency: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./data"),
            store: StoreConfig::default(),
            server: ServerConfig::default(),
            scaler: None,
            fleet: None,
            settings: sections::default_settings(),
            retrain_concurrency: sections::default_retrain_concurrency(),
        }
    }
}

impl Config {
    /// The configured store's options, with the retention of [`Settings::retention`].
    pub fn store_options(&self) -> StoreOptions {
        StoreOptions {
            fsync: self.store.fsync,
            checkpoint_after_bytes: self.store.checkpoint_after_bytes,
            retention: self.settings.retention,
            max_series: self.store.max_series,
        }
    }

    /// The model registry's directory: `[registry] dir`, by default `<data_dir>/models` (as
    /// [`crate::app::ServingState::open`] resolves [`Settings::models_dir`]).
    pub fn models_dir(&self) -> PathBuf {
        self.settings
            .models_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("models"))
    }

    /// The settings of a server over a temporary store (`prescale demo`, `prescale bench-grpc`):
    /// the configured ones, but with its registry in the temporary directory, never retrained on
    /// a schedule.
    pub fn temporary_server_settings(&self) -> Settings {
        Settings {
            models_dir: None,
            retrain_schedule: None,
            ..self.settings.clone()
        }
    }

    /// Retraining as `[planning] history_window` and `[registry]` set it, on `concurrency` threads
    /// (default `registry.concurrency`), writing the registry, with no event masked.
    pub fn retrain_settings(&self, concurrency: Option<usize>) -> RetrainSettings {
        RetrainSettings {
            history_window: self.settings.history_window,
            promotion_margin: self.settings.promotion_margin,
            concurrency: concurrency.unwrap_or(self.retrain_concurrency).max(1),
            dry_run: false,
            events: crate::events::EventCalendar::default(),
        }
    }

    /// Loads `path`, or [`DEFAULT_CONFIG_FILE`] when it exists, or the defaults; then applies overrides.
    pub fn load(path: Option<&Path>, overrides: &Overrides) -> Result<Self, ConfigError> {
        let file = match path {
            Some(path) => Some(path.to_owned()),
            None => Some(PathBuf::from(DEFAULT_CONFIG_FILE)).filter(|default| default.exists()),
        };
        let text = match &file {
            Some(path) => std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
                path: path.clone(),
                source,
            })?,
            None => String::new(),
        };
        Self::from_toml(
            &text,
            file.as_deref().unwrap_or(Path::new("<defaults>")),
            overrides,
        )
    }

    /// Parses and validates TOML text; `origin` names it in errors.
    pub fn from_toml(
        text: &str,
        origin: &Path,
        overrides: &Overrides,
    ) -> Result<Self, ConfigError> {
        let raw: FileConfig = toml::from_str(text).map_err(|error| ConfigError::Parse {
            path: origin.to_owned(),
            message: error.to_string(),
        })?;
        let defaults = Self::default();
        let data_dir = overrides
            .data_dir
            .clone()
            .or(raw.data_dir)
            .unwrap_or(defaults.data_dir);
        if data_dir.as_os_str().is_empty() {
            return Err(ConfigError::Invalid {
                key: "data_dir",
                reason: "must not be empty".to_owned(),
            });
        }
        let store = validate::store_config(&raw.store, overrides)?;
        let retention = validate::retention(&raw.store, overrides)?;
        let mut server = validate::server_config(raw.server, origin, overrides)?;
        let mut scaler = validate::scaler_config(raw.scaler, overrides)?;
        let fleet = fleet::fleet_config(
            fleet::with_overrides(raw.fleet, overrides)?,
            &server,
            scaler.as_ref(),
            overrides.joins_fleet,
        )?;
        // In a fleet, each TLS listener's forwarded calls verify with the fleet's CA, and every
        // listener's forwarded calls have the fleet's forwarding timeout.
        let peer_ca = fleet.as_ref().and_then(|fleet| fleet.peer_ca.clone());
        if server.options.tls.is_some() {
            server.options.peer_ca.clone_from(&peer_ca);
        }
        if let Some(scaler) = scaler
            .as_mut()
            .filter(|scaler| scaler.options.tls.is_some())
        {
            scaler.options.peer_ca = peer_ca;
        }
        if let Some(fleet) = &fleet {
            server.options.forward_timeout = fleet.forward_timeout;
            if let Some(scaler) = scaler.as_mut() {
                scaler.options.forward_timeout = fleet.forward_timeout;
            }
        }
        let settings = Settings {
            sources: validate::source_timing(&raw.sources)?,
            ..validate::settings(raw.planning, &raw.registry, retention)?
        };
        let retrain_concurrency = validate::retrain_concurrency(&raw.registry)?;
        Ok(Self {
            data_dir,
            store,
            server,
            scaler,
            fleet,
            settings,
            retrain_concurrency,
        })
    }
}

#[cfg(test)]
mod tests;
