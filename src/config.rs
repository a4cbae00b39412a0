//! Configuration: `prescale.toml`, overridden by environment variables and flags, validated once.
//!
//! Precedence, lowest first: built-in defaults, the file, then [`Overrides`] (the CLI fills these from
//! flags and `PRESCALE_*` environment variables). Unknown keys are errors so that a typo is not silently
//! ignored.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::app::{RetrainSettings, Settings};
use crate::registry::CronSchedule;
use crate::service::{ServerOptions, TlsFiles};
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
    #[serde(default)]
    server: FileServerConfig,
    #[serde(default)]
    planning: FilePlanningConfig,
    #[serde(default)]
    registry: FileRegistryConfig,
}

/// The `[registry]` table as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRegistryConfig {
    dir: Option<PathBuf>,
    promotion_margin: Option<f64>,
    schedule: Option<String>,
    concurrency: Option<usize>,
    watch_interval: Option<String>,
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

fn registry_config(
    raw: FileRegistryConfig,
    data_dir: &Path,
) -> Result<RegistryConfig, ConfigError> {
    let defaults = RegistryConfig::defaults_for(data_dir);
    let promotion_margin = raw.promotion_margin.unwrap_or(defaults.promotion_margin);
    if !(0.0..=1.0).contains(&promotion_margin) {
        return Err(ConfigError::Invalid {
            key: "registry.promotion_margin",
            reason: format!("{promotion_margin} is outside 0..=1"),
        });
    }
    let schedule = match raw.schedule.as_deref().map(str::trim) {
        None => defaults.schedule,
        Some("off") => None,
        Some(text) => Some(
            text.parse().map_err(
                |error: crate::registry::RegistryError| ConfigError::Invalid {
                    key: "registry.schedule",
                    reason: error.to_string(),
                },
            )?,
        ),
    };
    let watch_interval = match raw.watch_interval.as_deref().map(str::trim) {
        None => defaults.watch_interval,
        Some("off") => None,
        Some(text) => Some(parse_duration("registry.watch_interval", text)?),
    };
    Ok(RegistryConfig {
        dir: raw.dir.unwrap_or(defaults.dir),
        watch_interval,
        promotion_margin,
        schedule,
        concurrency: check_range(
            "registry.concurrency",
            raw.concurrency.unwrap_or(defaults.concurrency),
            1..=256,
        )?,
    })
}

/// The `[server]` table as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileServerConfig {
    listen: Option<String>,
    metrics_listen: Option<String>,
    allow_insecure: Option<bool>,
    max_message_mib: Option<u64>,
    max_streams: Option<usize>,
    #[serde(default)]
    tls: Option<FileTlsConfig>,
    #[serde(default)]
    auth: FileAuthConfig,
}

/// The `[server.tls]` table as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileTlsConfig {
    cert: PathBuf,
    key: PathBuf,
}

/// The `[server.auth]` table as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileAuthConfig {
    #[serde(default)]
    tokens: Vec<String>,
    tokens_file: Option<PathBuf>,
}

/// The `[planning]` table as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FilePlanningConfig {
    plan_horizon: Option<String>,
    max_horizon: Option<String>,
    history_window: Option<String>,
    replan_interval: Option<String>,
    replan_after_samples: Option<u64>,
    max_concurrent_fits: Option<usize>,
    model_cache_entries: Option<usize>,
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
    /// Replaces `server.listen`.
    pub listen: Option<String>,
    /// Replaces `server.metrics_listen` (`off` disables the endpoint).
    pub metrics_listen: Option<String>,
}

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

/// Parses a duration key, refusing zero.
fn parse_duration(key: &'static str, text: &str) -> Result<Duration, ConfigError> {
    let duration =
        humantime::parse_duration(text.trim()).map_err(|error| ConfigError::Invalid {
            key,
            reason: format!("{text:?}: {error}"),
        })?;
    if duration.is_zero() {
        return Err(ConfigError::Invalid {
            key,
            reason: "must be longer than zero".to_owned(),
        });
    }
    Ok(duration)
}

/// Parses a socket address key.
fn parse_address(key: &'static str, text: &str) -> Result<SocketAddr, ConfigError> {
    text.trim().parse().map_err(|error| ConfigError::Invalid {
        key,
        reason: format!("{text:?} is not an address such as 127.0.0.1:50051: {error}"),
    })
}

/// Checks that a count lies in `range`.
fn check_range<T: PartialOrd + std::fmt::Display>(
    key: &'static str,
    value: T,
    range: std::ops::RangeInclusive<T>,
) -> Result<T, ConfigError> {
    if range.contains(&value) {
        Ok(value)
    } else {
        Err(ConfigError::Invalid {
            key,
            reason: format!("{value} is outside {}..={}", range.start(), range.end()),
        })
    }
}

fn server_config(
    raw: FileServerConfig,
    origin: &Path,
    overrides: &Overrides,
) -> Result<ServerConfig, ConfigError> {
    let defaults = ServerConfig::default();
    let listen = match overrides.listen.as_deref().or(raw.listen.as_deref()) {
        Some(text) => parse_address("server.listen", text)?,
        None => defaults.listen,
    };
    let metrics_listen = match overrides
        .metrics_listen
        .as_deref()
        .or(raw.metrics_listen.as_deref())
    {
        Some("off") => None,
        Some(text) => Some(parse_address("server.metrics_listen", text)?),
        None => defaults.metrics_listen,
    };
    let max_message_mib = check_range(
        "server.max_message_mib",
        raw.max_message_mib
            .unwrap_or((defaults.options.max_message_bytes >> 20) as u64),
        1..=1024,
    )?;
    let max_streams = check_range(
        "server.max_streams",
        raw.max_streams.unwrap_or(defaults.options.max_streams),
        1..=1_000_000,
    )?;
    let mut tokens = raw.auth.tokens;
    if let Some(path) = &raw.auth.tokens_file {
        let path = origin
            .parent()
            .map_or_else(|| path.clone(), |dir| dir.join(path));
        let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Io {
            path: path.clone(),
            source,
        })?;
        tokens.extend(
            text.lines()
                .map(str::trim)
                .filter(|line| !line.is_empty() && !line.starts_with('#'))
                .map(str::to_owned),
        );
    }
    if let Some(short) = tokens.iter().find(|token| token.len() < 16) {
        return Err(ConfigError::Invalid {
            key: "server.auth.tokens",
            reason: format!(
                "a token of {} characters is too short to be a secret; use at least 16",
                short.len()
            ),
        });
    }
    let tls = raw.tls.map(|tls| TlsFiles {
        cert: tls.cert,
        key: tls.key,
    });
    let exposed = !listen.ip().is_loopback();
    if exposed && tls.is_none() && tokens.is_empty() && !raw.allow_insecure.unwrap_or(false) {
        return Err(ConfigError::Invalid {
            key: "server.listen",
            reason: format!(
                "{listen} is not a loopback address; serving plaintext without authentication \
                 there needs [server.tls], [server.auth] tokens, or allow_insecure = true"
            ),
        });
    }
    Ok(ServerConfig {
        listen,
        metrics_listen,
        options: ServerOptions {
            max_message_bytes: (max_message_mib << 20) as usize,
            max_streams,
            tls,
            tokens,
        },
    })
}

fn planning_settings(raw: FilePlanningConfig) -> Result<Settings, ConfigError> {
    let defaults = Settings::default();
    let duration = |key, text: Option<String>, default| match text {
        Some(text) => parse_duration(key, &text),
        None => Ok(default),
    };
    let settings = Settings {
        plan_horizon: duration(
            "planning.plan_horizon",
            raw.plan_horizon,
            defaults.plan_horizon,
        )?,
        max_horizon: duration(
            "planning.max_horizon",
            raw.max_horizon,
            defaults.max_horizon,
        )?,
        history_window: duration(
            "planning.history_window",
            raw.history_window,
            defaults.history_window,
        )?,
        replan_interval: duration(
            "planning.replan_interval",
            raw.replan_interval,
            defaults.replan_interval,
        )?,
        replan_after_samples: check_range(
            "planning.replan_after_samples",
            raw.replan_after_samples
                .unwrap_or(defaults.replan_after_samples),
            1..=u64::MAX,
        )?,
        max_concurrent_fits: check_range(
            "planning.max_concurrent_fits",
            raw.max_concurrent_fits
                .unwrap_or(defaults.max_concurrent_fits),
            1..=1024,
        )?,
        model_cache_entries: check_range(
            "planning.model_cache_entries",
            raw.model_cache_entries
                .unwrap_or(defaults.model_cache_entries),
            1..=1_000_000,
        )?,
        retention: None,
        // `[registry]` holds these; `prescale serve` copies them in.
        models_dir: None,
        promotion_margin: defaults.promotion_margin,
        retrain_schedule: None,
        registry_watch: defaults.registry_watch,
    };
    if settings.plan_horizon > settings.max_horizon {
        return Err(ConfigError::Invalid {
            key: "planning.plan_horizon",
            reason: "is longer than planning.max_horizon".to_owned(),
        });
    }
    if settings.history_window < Duration::from_secs(86_400) {
        return Err(ConfigError::Invalid {
            key: "planning.history_window",
            reason: "must be at least a day: models need a daily cycle to learn from".to_owned(),
        });
    }
    Ok(settings)
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
        let server = server_config(raw.server, origin, overrides)?;
        let mut planning = planning_settings(raw.planning)?;
        planning.retention = retention;
        let registry = registry_config(raw.registry, &data_dir)?;
        Ok(Self {
            registry,
            data_dir,
            server,
            planning,
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
            listen: Some("127.0.0.1:7000".to_owned()),
            metrics_listen: Some("off".to_owned()),
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
        assert_eq!(config.server.listen.port(), 7000);
        assert_eq!(config.server.metrics_listen, None);
    }

    #[test]
    fn server_and_planning_tables_are_validated() {
        let config = parse(
            "[server]\nlisten = \"127.0.0.1:6000\"\nmax_streams = 8\n\
             [server.auth]\ntokens = [\"0123456789abcdef\"]\n\
             [planning]\nreplan_interval = \"1m\"\nreplan_after_samples = 1\n",
        )
        .unwrap();
        assert_eq!(config.server.listen.port(), 6000);
        assert_eq!(config.server.options.max_streams, 8);
        assert_eq!(config.server.options.tokens.len(), 1);
        assert_eq!(config.planning.replan_interval, Duration::from_secs(60));
        for (text, key) in [
            ("[server]\nlisten = \"0.0.0.0:50051\"", "server.listen"),
            ("[server]\nlisten = \"nowhere\"", "server.listen"),
            ("[server.auth]\ntokens = [\"short\"]", "server.auth.tokens"),
            ("[server]\nmax_streams = 0", "server.max_streams"),
            (
                "[planning]\nplan_horizon = \"30d\"",
                "planning.plan_horizon",
            ),
            (
                "[planning]\nreplan_interval = \"0s\"",
                "planning.replan_interval",
            ),
        ] {
            match parse(text) {
                Err(ConfigError::Invalid { key: got, .. }) => assert_eq!(got, key, "{text}"),
                other => panic!("{text}: {other:?}"),
            }
        }
        let open = parse("[server]\nlisten = \"0.0.0.0:50051\"\nallow_insecure = true").unwrap();
        assert!(!open.server.listen.ip().is_loopback());
    }

    #[test]
    fn the_registry_watch_interval_is_a_duration_or_off() {
        assert_eq!(
            parse("").unwrap().registry.watch_interval,
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            parse("[registry]\nwatch_interval = \"30s\"")
                .unwrap()
                .registry
                .watch_interval,
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse("[registry]\nwatch_interval = \"off\"")
                .unwrap()
                .registry
                .watch_interval,
            None
        );
        for text in ["0s", "soon"] {
            match parse(&format!("[registry]\nwatch_interval = \"{text}\"")) {
                Err(ConfigError::Invalid { key, .. }) => assert_eq!(key, "registry.watch_interval"),
                other => panic!("{text}: {other:?}"),
            }
        }
    }
}
