//! Checks the file's values and the overrides, and builds the validated sections from them; every
//! error names the key at fault.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use super::file::{
    FilePlanningConfig, FileRegistryConfig, FileRemoteWriteConfig, FileScalerConfig,
    FileServerConfig, FileSourcesConfig, FileStoreConfig,
};
use super::sections::{default_retrain_concurrency, default_settings};
use super::{ConfigError, Overrides, ScalerConfig, ServerConfig, StoreConfig};
use crate::app::{Settings, SourceTiming};
use crate::forecast::HistoryWindow;
use crate::service::remote_write::RemoteWriteLimits;
use crate::service::{FORWARD_TIMEOUT, ScalerOptions, ScalerTls, ServerOptions, TlsFiles};
use crate::store::StoreOptions;

/// Parses a duration key, refusing zero.
pub(super) fn parse_duration(key: &'static str, text: &str) -> Result<Duration, ConfigError> {
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
pub(super) fn check_range<T: PartialOrd + std::fmt::Display>(
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

pub(super) fn server_config(
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
    let max_streams_per_client = check_range(
        "server.max_streams_per_client",
        raw.max_streams_per_client
            .unwrap_or(defaults.options.max_streams_per_client.min(max_streams)),
        1..=max_streams,
    )?;
    let timeout = |key: &'static str, text: Option<&str>, default: Duration| match text {
        Some(text) => {
            let duration = parse_duration(key, text)?;
            check_range(key, duration.as_secs(), 1..=86_400).map(|_| duration)
        }
        None => Ok(default),
    };
    let stream_idle_timeout = timeout(
        "server.stream_idle_timeout",
        raw.stream_idle_timeout.as_deref(),
        defaults.options.stream_idle_timeout,
    )?;
    let request_timeout = timeout(
        "server.request_timeout",
        raw.request_timeout.as_deref(),
        defaults.options.request_timeout,
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
    let remote_write = remote_write_limits(&raw.remote_write)?;
    // Remote-write is a write endpoint: exposed without tokens it needs the same consent.
    let writes_exposed =
        remote_write.is_some() && metrics_listen.is_some_and(|address| !address.ip().is_loopback());
    if writes_exposed && tokens.is_empty() && !raw.allow_insecure.unwrap_or(false) {
        return Err(ConfigError::Invalid {
            key: "server.remote_write",
            reason: "the metrics listener is not on a loopback address; accepting remote-write \
                     there needs [server.auth] tokens, allow_insecure = true, or \
                     [server.remote_write] enabled = false"
                .to_owned(),
        });
    }
    Ok(ServerConfig {
        listen,
        metrics_listen,
        remote_write,
        options: ServerOptions {
            max_message_bytes: (max_message_mib << 20) as usize,
            max_streams,
            max_streams_per_client,
            stream_idle_timeout,
            request_timeout,
            tls,
            tokens,
            // Set with `[fleet] peer_ca_file` and `forward_timeout` (see `Config`).
            peer_ca: None,
            forward_timeout: FORWARD_TIMEOUT,
        },
    })
}

/// The `[scaler]` section: `None` unless `listen` (or `--scaler-listen`) names an address. The
/// listener asks for no token and serves no write, so plaintext on any address is allowed (KEDA's
/// own default); `[scaler.tls]` with `client_ca` restricts it to clients holding a certificate.
pub(super) fn scaler_config(
    raw: FileScalerConfig,
    overrides: &Overrides,
) -> Result<Option<ScalerConfig>, ConfigError> {
    let defaults = ScalerOptions::default();
    let listen = match overrides.scaler_listen.as_deref().or(raw.listen.as_deref()) {
        None | Some("off") => return Ok(None),
        Some(text) => parse_address("scaler.listen", text)?,
    };
    let hpa_tolerance = raw.hpa_tolerance.unwrap_or(defaults.hpa_tolerance);
    if !(0.0..1.0).contains(&hpa_tolerance) {
        return Err(ConfigError::Invalid {
            key: "scaler.hpa_tolerance",
            reason: format!("{hpa_tolerance} is outside [0, 1)"),
        });
    }
    let max_streams = check_range(
        "scaler.max_streams",
        raw.max_streams.unwrap_or(defaults.max_streams),
        1..=1_000_000,
    )?;
    let tls = raw.tls.map(|tls| ScalerTls {
        identity: TlsFiles {
            cert: tls.cert,
            key: tls.key,
        },
        client_ca: tls.client_ca,
    });
    Ok(Some(ScalerConfig {
        listen,
        options: ScalerOptions {
            tls,
            hpa_tolerance,
            max_streams,
            // Set with `[fleet] peer_ca_file` and `forward_timeout` (see `Config`).
            peer_ca: None,
            forward_timeout: FORWARD_TIMEOUT,
        },
    }))
}

/// `[server.remote_write]`: its limits, or `None` when disabled.
fn remote_write_limits(
    raw: &FileRemoteWriteConfig,
) -> Result<Option<RemoteWriteLimits>, ConfigError> {
    if !raw.enabled.unwrap_or(true) {
        return Ok(None);
    }
    let defaults = RemoteWriteLimits::default();
    let max_body_mib = check_range(
        "server.remote_write.max_body_mib",
        raw.max_body_mib
            .unwrap_or((defaults.max_body_bytes >> 20) as u64),
        1..=1024,
    )?;
    let max_decoded_mib = check_range(
        "server.remote_write.max_decoded_mib",
        raw.max_decoded_mib
            .unwrap_or((defaults.max_decoded_bytes >> 20) as u64),
        1..=4096,
    )?;
    Ok(Some(RemoteWriteLimits {
        max_body_bytes: (max_body_mib << 20) as usize,
        max_decoded_bytes: (max_decoded_mib << 20) as usize,
    }))
}

/// The app's [`Settings`]: `[planning]`, the store's `retention`, and the `[registry]` keys the
/// server uses (directory, promotion margin, schedule, watch interval), each over its default.
pub(super) fn settings(
    planning: FilePlanningConfig,
    registry: &FileRegistryConfig,
    retention: Option<Duration>,
) -> Result<Settings, ConfigError> {
    let planned = planning_settings(planning)?;
    let defaults = default_settings();
    let promotion_margin = registry
        .promotion_margin
        .unwrap_or(defaults.promotion_margin);
    if !(0.0..=1.0).contains(&promotion_margin) {
        return Err(ConfigError::Invalid {
            key: "registry.promotion_margin",
            reason: format!("{promotion_margin} is outside 0..=1"),
        });
    }
    let retrain_schedule = match registry.schedule.as_deref().map(str::trim) {
        None => defaults.retrain_schedule,
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
    let registry_watch = match registry.watch_interval.as_deref().map(str::trim) {
        None => defaults.registry_watch,
        Some("off") => None,
        Some(text) => Some(parse_duration("registry.watch_interval", text)?),
    };
    let keep_versions = registry.keep_versions.or(defaults.keep_versions);
    if keep_versions == Some(0) {
        return Err(ConfigError::Invalid {
            key: "registry.keep_versions",
            reason: "must keep at least 1 version per series".to_owned(),
        });
    }
    Ok(Settings {
        retention,
        models_dir: registry.dir.clone(),
        promotion_margin,
        retrain_schedule,
        keep_versions,
        registry_watch,
        ..planned
    })
}

/// The `[sources]` keys over their defaults.
pub(super) fn source_timing(raw: &FileSourcesConfig) -> Result<SourceTiming, ConfigError> {
    let defaults = SourceTiming::default();
    let duration = |key, text: &Option<String>, default| match text {
        Some(text) => parse_duration(key, text),
        None => Ok(default),
    };
    let timing = SourceTiming {
        poll_interval: raw
            .poll_interval
            .as_deref()
            .map(|text| parse_duration("sources.poll_interval", text))
            .transpose()?,
        retry_initial: duration(
            "sources.retry_initial",
            &raw.retry_initial,
            defaults.retry_initial,
        )?,
        retry_max: duration("sources.retry_max", &raw.retry_max, defaults.retry_max)?,
    };
    if timing.retry_initial > timing.retry_max {
        return Err(ConfigError::Invalid {
            key: "sources.retry_initial",
            reason: "is longer than sources.retry_max".to_owned(),
        });
    }
    Ok(timing)
}

/// The `[planning]` keys over their defaults; the other fields keep their defaults.
fn planning_settings(raw: FilePlanningConfig) -> Result<Settings, ConfigError> {
    let defaults = default_settings();
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
        history_window: match raw.history_window {
            Some(text) => HistoryWindow::Fixed(parse_duration("planning.history_window", &text)?),
            None => defaults.history_window,
        },
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
        ..defaults
    };
    if settings.plan_horizon > settings.max_horizon {
        return Err(ConfigError::Invalid {
            key: "planning.plan_horizon",
            reason: "is longer than planning.max_horizon".to_owned(),
        });
    }
    if matches!(settings.history_window, HistoryWindow::Fixed(span) if span < Duration::from_secs(86_400))
    {
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

/// `[registry] concurrency`: series `prescale retrain` fits at once.
pub(super) fn retrain_concurrency(raw: &FileRegistryConfig) -> Result<usize, ConfigError> {
    check_range(
        "registry.concurrency",
        raw.concurrency.unwrap_or_else(default_retrain_concurrency),
        1..=256,
    )
}

/// `[store]` fsync and checkpoint size: the file's values and `--fsync` over the defaults.
pub(super) fn store_config(
    raw: &FileStoreConfig,
    overrides: &Overrides,
) -> Result<StoreConfig, ConfigError> {
    let defaults = StoreConfig::default();
    let checkpoint_after_mib = check_range(
        "store.checkpoint_after_mib",
        raw.checkpoint_after_mib
            .unwrap_or(defaults.checkpoint_after_bytes >> 20),
        1..=65_536,
    )?;
    let max_series = check_range(
        "store.max_series",
        raw.max_series.unwrap_or(defaults.max_series),
        1..=10_000_000,
    )?;
    Ok(StoreConfig {
        fsync: overrides.fsync.or(raw.fsync).unwrap_or(defaults.fsync),
        checkpoint_after_bytes: checkpoint_after_mib << 20,
        max_series,
    })
}

/// `[store] retention` or `--retention`; none by default.
pub(super) fn retention(
    raw: &FileStoreConfig,
    overrides: &Overrides,
) -> Result<Option<Duration>, ConfigError> {
    match overrides.retention.as_deref().or(raw.retention.as_deref()) {
        Some(text) => parse_retention(text),
        None => Ok(StoreOptions::default().retention),
    }
}
