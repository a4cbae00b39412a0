//! Loading and validating configuration: defaults, overrides, and refused values.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::from_toml(text, Path::new("test.toml"), &Overrides::default())
}

#[test]
fn shipped_example_is_valid() {
    let text = include_str!("../../prescale.example.toml");
    let config = parse(text).unwrap();
    assert_eq!(
        config.settings.retention,
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
        scaler_listen: None,
        ..Overrides::default()
    };
    let config = Config::from_toml(
        "data_dir = \"here\"\n[store]\nfsync = false\nretention = \"7d\"\n",
        Path::new("test.toml"),
        &overrides,
    )
    .unwrap();
    assert_eq!(config.data_dir, PathBuf::from("/tmp/elsewhere"));
    assert!(config.store.fsync);
    assert_eq!(config.settings.retention, None);
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
    // Unset, the per-client quota is its default capped at the server-wide one.
    assert_eq!(config.server.options.max_streams_per_client, 8);
    assert_eq!(config.server.options.tokens.len(), 1);
    assert_eq!(config.settings.replan_interval, Duration::from_secs(60));
    for (text, key) in [
        ("[server]\nlisten = \"0.0.0.0:50051\"", "server.listen"),
        ("[server]\nlisten = \"nowhere\"", "server.listen"),
        ("[server.auth]\ntokens = [\"short\"]", "server.auth.tokens"),
        ("[server]\nmax_streams = 0", "server.max_streams"),
        (
            "[server]\nmax_streams = 8\nmax_streams_per_client = 9",
            "server.max_streams_per_client",
        ),
        (
            "[server]\nrequest_timeout = \"0s\"",
            "server.request_timeout",
        ),
        (
            "[server]\nstream_idle_timeout = \"2d\"",
            "server.stream_idle_timeout",
        ),
        ("[store]\nmax_series = 0", "store.max_series"),
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
    assert!(open.server.remote_write.is_some());
    assert!(!open.server.listen.ip().is_loopback());
}

#[test]
fn the_registry_watch_interval_is_a_duration_or_off() {
    assert_eq!(
        parse("").unwrap().settings.registry_watch,
        Some(Duration::from_secs(10))
    );
    assert_eq!(
        parse("[registry]\nwatch_interval = \"30s\"")
            .unwrap()
            .settings
            .registry_watch,
        Some(Duration::from_secs(30))
    );
    assert_eq!(
        parse("[registry]\nwatch_interval = \"off\"")
            .unwrap()
            .settings
            .registry_watch,
        None
    );
    for text in ["0s", "soon"] {
        match parse(&format!("[registry]\nwatch_interval = \"{text}\"")) {
            Err(ConfigError::Invalid { key, .. }) => assert_eq!(key, "registry.watch_interval"),
            other => panic!("{text}: {other:?}"),
        }
    }
}

#[test]
fn registry_keys_reach_the_settings_and_temporary_servers_keep_their_own_registry() {
    let config = parse(
        "data_dir = \"here\"\n[store]\nretention = \"7d\"\n\
         [registry]\ndir = \"models-elsewhere\"\npromotion_margin = 0.1\nschedule = \"off\"\n\
         watch_interval = \"30s\"\nconcurrency = 3\nkeep_versions = 4\n",
    )
    .unwrap();
    assert_eq!(config.settings.keep_versions, Some(4));
    assert_eq!(parse("").unwrap().settings.keep_versions, Some(10));
    assert!(matches!(
        parse("[registry]\nkeep_versions = 0\n"),
        Err(ConfigError::Invalid {
            key: "registry.keep_versions",
            ..
        })
    ));
    assert_eq!(
        config.settings.models_dir,
        Some(PathBuf::from("models-elsewhere"))
    );
    assert_eq!(config.models_dir(), PathBuf::from("models-elsewhere"));
    assert_eq!(config.settings.promotion_margin, 0.1);
    assert_eq!(config.settings.retrain_schedule, None);
    assert_eq!(
        config.settings.registry_watch,
        Some(Duration::from_secs(30))
    );
    assert_eq!(config.retrain_settings(None).concurrency, 3);
    assert_eq!(config.retrain_settings(None).promotion_margin, 0.1);
    let retention = Some(Duration::from_secs(7 * 86_400));
    assert_eq!(config.settings.retention, retention);
    assert_eq!(config.store_options().retention, retention);

    let temporary = config.temporary_server_settings();
    assert_eq!(temporary.models_dir, None);
    assert_eq!(temporary.retrain_schedule, None);
    assert_eq!(temporary.retention, retention);
    assert_eq!(
        parse("").unwrap().models_dir(),
        PathBuf::from("./data/models")
    );
    assert!(parse("").unwrap().settings.retrain_schedule.is_some());
}

#[test]
fn the_scaler_listens_only_when_configured_and_checks_its_keys() {
    assert_eq!(parse("").unwrap().scaler, None);
    let config = parse(
        r#"
        [scaler]
        listen = "0.0.0.0:50052"
        hpa_tolerance = 0
        [scaler.tls]
        cert = "tls/scaler.crt"
        key = "tls/scaler.key"
        client_ca = "tls/keda-ca.crt"
        "#,
    )
    .unwrap();
    let scaler = config.scaler.expect("a listen address serves the scaler");
    assert_eq!(scaler.listen, "0.0.0.0:50052".parse().unwrap());
    assert_eq!(scaler.options.hpa_tolerance, 0.0);
    let tls = scaler.options.tls.expect("[scaler.tls] is read");
    assert_eq!(tls.client_ca, Some(PathBuf::from("tls/keda-ca.crt")));
    let default_tolerance = parse("[scaler]\nlisten = \"127.0.0.1:50052\"").unwrap();
    assert_eq!(
        default_tolerance.scaler.unwrap().options.hpa_tolerance,
        crate::plan::HPA_TOLERANCE
    );
    let off = Config::from_toml(
        "[scaler]\nlisten = \"127.0.0.1:50052\"",
        Path::new("test.toml"),
        &Overrides {
            scaler_listen: Some("off".to_owned()),
            ..Overrides::default()
        },
    )
    .unwrap();
    assert_eq!(off.scaler, None, "--scaler-listen off wins over the file");
    assert!(matches!(
        parse("[scaler]\nlisten = \"127.0.0.1:50052\"\nhpa_tolerance = 1.5"),
        Err(ConfigError::Invalid {
            key: "scaler.hpa_tolerance",
            ..
        })
    ));
    assert!(matches!(
        parse("[scaler]\nlisten = \"nowhere\""),
        Err(ConfigError::Invalid {
            key: "scaler.listen",
            ..
        })
    ));
    let unknown = parse("[scaler]\nlisen = \"127.0.0.1:50052\"").unwrap_err();
    assert!(unknown.to_string().contains("lisen"), "{unknown}");
}

#[test]
fn remote_write_limits_and_exposure_are_validated() {
    let config = parse("[server.remote_write]\nmax_body_mib = 2\nmax_decoded_mib = 10\n").unwrap();
    let limits = config.server.remote_write.unwrap();
    assert_eq!(
        (limits.max_body_bytes, limits.max_decoded_bytes),
        (2 << 20, 10 << 20)
    );
    let off = parse(
        "[server]\nmetrics_listen = \"0.0.0.0:9464\"\n[server.remote_write]\nenabled = false\n",
    )
    .unwrap();
    assert_eq!(off.server.remote_write, None);
    for (text, key) in [
        (
            "[server.remote_write]\nmax_body_mib = 0",
            "server.remote_write.max_body_mib",
        ),
        (
            "[server]\nmetrics_listen = \"0.0.0.0:9464\"",
            "server.remote_write",
        ),
    ] {
        match parse(text) {
            Err(ConfigError::Invalid { key: got, .. }) => assert_eq!(got, key, "{text}"),
            other => panic!("{text}: {other:?}"),
        }
    }
}

#[test]
fn sources_table_sets_polling_and_backoff() {
    let config =
        parse("[sources]\npoll_interval = \"30s\"\nretry_initial = \"2s\"\nretry_max = \"1m\"\n")
            .unwrap();
    assert_eq!(
        config.settings.sources.poll_interval,
        Some(Duration::from_secs(30))
    );
    assert_eq!(
        config.settings.sources.retry_initial,
        Duration::from_secs(2)
    );
    assert_eq!(config.settings.sources.retry_max, Duration::from_secs(60));
    assert!(matches!(
        parse("[sources]\nretry_initial = \"10m\"\nretry_max = \"1m\"\n"),
        Err(ConfigError::Invalid {
            key: "sources.retry_initial",
            ..
        })
    ));
    assert!(matches!(
        parse("[sources]\npoll_interval = \"0s\"\n"),
        Err(ConfigError::Invalid {
            key: "sources.poll_interval",
            ..
        })
    ));
}
