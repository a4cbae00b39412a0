//! Configuration: `prescale.toml`, overridden by environment variables and flags, validated once.
//!
//! Precedence, lowest first: built-in defaults, the file, then [`Overrides`] (the CLI fills these from
//! flags and `PRESCALE_*` environment variables). Unknown keys are errors so that a typo is not silently
//! ignored.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::store::StoreOptions;

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

/// The file as written: every field optional, unknown fields refused.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    data_dir: Option<PathBuf>,
    #[serde(default)]
    store: FileStoreConfig,
}

/// The `[store]` table as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileStoreConfig {
    fsync: Option<bool>,
    checkpoint_after_mib: Option<u64>,
    retention: Option<String>,
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
}

/// Validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Directory of the metric store.
    pub data_dir: PathBuf,
    /// How the store keeps data.
    pub store: StoreOptions,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./data"),
            store: StoreOptions::default(),
        }
    }
}

/// Parses a retention such as `90d`; `off`, `none` or `0` disable retention.
fn parse_retention(text: &str) -> Result<Option<Duration>, ConfigError> {
    let trimmed = text.trim();
    if matches!(trimmed, "off" | "none" | "0") {
        return Ok(None);
    }
    let duration = humantime::parse_duration(trimmed).map_err(|error| ConfigError::Invalid {
        key: "store.retention",
        reason: format!("{trimmed:?}: {error}"),
    })?;
    if duration < Duration::from_secs(3600) {
        return Err(ConfigError::Invalid {
            key: "store.retention",
            reason: format!("{trimmed:?} is under an hour; use `off` to keep everything"),
        });
    }
    Ok(Some(duration))
}

impl Config {
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
        let checkpoint_after_mib = raw
            .store
            .checkpoint_after_mib
            .unwrap_or(defaults.store.checkpoint_after_bytes >> 20);
        if !(1..=65_536).contains(&checkpoint_after_mib) {
            return Err(ConfigError::Invalid {
                key: "store.checkpoint_after_mib",
                reason: format!("{checkpoint_after_mib} is outside 1..=65536"),
            });
        }
        let retention = match overrides
            .retention
            .as_deref()
            .or(raw.store.retention.as_deref())
        {
            Some(text) => parse_retention(text)?,
            None => defaults.store.retention,
        };
        Ok(Self {
            data_dir,
            store: StoreOptions {
                fsync: overrides
                    .fsync
                    .or(raw.store.fsync)
                    .unwrap_or(defaults.store.fsync),
                checkpoint_after_bytes: checkpoint_after_mib << 20,
                retention,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml(text, Path::new("test.toml"), &Overrides::default())
    }

    #[test]
    fn shipped_example_is_valid() {
        let text = include_str!("../prescale.example.toml");
        let config = parse(text).unwrap();
        assert_eq!(
            config.store.retention,
            Some(Duration::from_secs(90 * 86_400))
        );
    }

    #[test]
    fn empty_file_gives_defaults() {
        assert_eq!(parse("").unwrap(), Config::default());
    }

    #[test]
    fn unknown_keys_and_bad_values_are_errors() {
        let unknown = parse("[store]\nfsynk = true\n").unwrap_err();
        assert!(unknown.to_string().contains("fsynk"), "{unknown}");
        assert!(matches!(
            parse("data_dir = 3"),
            Err(ConfigError::Parse { .. })
        ));
        assert!(matches!(
            parse("[store]\nretention = \"soon\""),
            Err(ConfigError::Invalid {
                key: "store.retention",
                ..
            })
        ));
        assert!(matches!(
            parse("[store]\ncheckpoint_after_mib = 0"),
            Err(ConfigError::Invalid {
                key: "store.checkpoint_after_mib",
                ..
            })
        ));
    }

    #[test]
    fn overrides_beat_the_file() {
        let overrides = Overrides {
            data_dir: Some(PathBuf::from("/tmp/elsewhere")),
            fsync: Some(true),
            retention: Some("off".to_owned()),
        };
        let config = Config::from_toml(
            "data_dir = \"here\"\n[store]\nfsync = false\nretention = \"7d\"\n",
            Path::new("test.toml"),
            &overrides,
        )
        .unwrap();
        assert_eq!(config.data_dir, PathBuf::from("/tmp/elsewhere"));
        assert!(config.store.fsync);
        assert_eq!(config.store.retention, None);
    }
}
