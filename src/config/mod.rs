//! Configuration: `prescale.toml`, overridden by environment variables and flags, validated once.
//!
//! Precedence, lowest first: built-in defaults, the file, then [`Overrides`] (the CLI fills these from
//! flags and `PRESCALE_*` environment variables). Unknown keys are errors so that a typo is not silently
//! ignored.

mod file;
mod sections;
mod validate;

use std::path::{Path, PathBuf};

use crate::app::{RetrainSettings, Settings};
use crate::store::StoreOptions;

pub use sections::{RegistryConfig, ServerConfig};

use file::FileConfig;
use validate::{planning_settings, registry_config, server_config, store_options};

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
}

/// Validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Directory of the metric store.
    pub data_dir: PathBuf,
    /// How the store keeps data.
    pub store: StoreOptions,
    /// How `prescale serve` listens.
    pub server: ServerConfig,
    /// How the server plans and bounds its work.
    pub planning: Settings,
    /// Trained models and retraining.
    pub registry: RegistryConfig,
}

impl Default for Config {
    fn default() -> Self {
        let store = StoreOptions::default();
        Self {
            registry: RegistryConfig::defaults_for(Path::new("./data")),
            data_dir: PathBuf::from("./data"),
            planning: Settings {
                retention: store.retention,
                ..Settings::default()
            },
            store,
            server: ServerConfig::default(),
        }
    }
}

impl Config {
    /// Retraining as `[planning] history_window` and `[registry]` set it, on `concurrency` threads
    /// (default `registry.concurrency`), writing the registry, with no event masked.
    pub fn retrain_settings(&self, concurrency: Option<usize>) -> RetrainSettings {
        RetrainSettings {
            history_window: self.planning.history_window,
            promotion_margin: self.registry.promotion_margin,
            concurrency: concurrency.unwrap_or(self.registry.concurrency).max(1),
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
        let store = store_options(raw.store, overrides)?;
        let server = server_config(raw.server, origin, overrides)?;
        let mut planning = planning_settings(raw.planning)?;
        planning.retention = store.retention;
        let registry = registry_config(raw.registry, &data_dir)?;
        Ok(Self {
            registry,
            data_dir,
            server,
            planning,
            store,
        })
    }
}

#[cfg(test)]
mod tests;
