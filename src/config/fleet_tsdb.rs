//! The TSDB keys of `[fleet]`: where the fleet writes pushed samples through to (Prometheus
//! remote-write) and reads them back from (the query API), with the credentials, CA and timeout of
//! both. Design: docs/decisions.md, "Fleet mode: pushed samples and events".

use std::path::PathBuf;

use super::ConfigError;
use super::validate::parse_duration;
use crate::domain::{PrometheusSource, SourceAuth, Step};

/// The `tsdb_*` keys of `[fleet]` as written.
#[derive(Debug, Default)]
pub(super) struct FileTsdbKeys {
    pub(super) tsdb_url: Option<String>,
    pub(super) tsdb_remote_write_url: Option<String>,
    pub(super) tsdb_timeout: Option<String>,
    pub(super) tsdb_bearer_token_file: Option<PathBuf>,
    pub(super) tsdb_basic_auth_username: Option<String>,
    pub(super) tsdb_basic_auth_password_file: Option<PathBuf>,
    pub(super) tsdb_ca_file: Option<PathBuf>,
}

/// The fleet's TSDB: the source of truth of pushed samples.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetTsdb {
    /// Its query API (`tsdb_url`), with credentials, CA and the timeout of one request
    /// (`tsdb_timeout`); its query and step are unused (refills select exact series).
    pub query: PrometheusSource,
    /// Where pushed samples are written through to (`tsdb_remote_write_url`).
    pub remote_write_url: String,
}

fn invalid(key: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        reason: reason.into(),
    }
}

/// The TSDB of the fleet, `None` when neither URL is set; both or neither.
pub(super) fn fleet_tsdb(keys: FileTsdbKeys) -> Result<Option<FleetTsdb>, ConfigError> {
    let (url, remote_write_url) = match (keys.tsdb_url, keys.tsdb_remote_write_url) {
        (None, None) => return Ok(None),
        (Some(url), Some(remote)) => (url, remote),
        (None, Some(_)) => {
            return Err(invalid(
                "fleet.tsdb_url",
                "required with tsdb_remote_write_url: the query API pushed samples are refilled from",
            ));
        }
        (Some(_), None) => {
            return Err(invalid(
                "fleet.tsdb_remote_write_url",
                "required with tsdb_url: where pushed samples are written through to",
            ));
        }
    };
    let remote_write_url = remote_write_url.trim().to_owned();
    let remote_ok = ["http://", "https://"].iter().any(|scheme| {
        remote_write_url
            .strip_prefix(scheme)
            .is_some_and(|rest| !rest.is_empty())
    });
    if !remote_ok {
        return Err(invalid(
            "fleet.tsdb_remote_write_url",
            format!("{remote_write_url:?} is not an http(s) URL"),
        ));
    }
    let timeout = parse_duration(
        "fleet.tsdb_timeout",
        keys.tsdb_timeout.as_deref().unwrap_or("10s"),
    )?;
    let auth = SourceAuth::from_parts(
        "credentials",
        keys.tsdb_bearer_token_file,
        keys.tsdb_basic_auth_username,
        keys.tsdb_basic_auth_password_file,
    )
    .map_err(|error| invalid("fleet.tsdb_bearer_token_file", error.to_string()))?;
    let query = PrometheusSource::new(url.trim(), "up", Step::FIVE_MINUTES)
        .and_then(|source| source.with_timeout(timeout))
        .map_err(|error| invalid("fleet.tsdb_url", error.to_string()))?
        .with_auth(auth)
        .with_ca_file(keys.tsdb_ca_file);
    Ok(Some(FleetTsdb {
        query,
        remote_write_url,
    }))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::{Config, ConfigError};

    const FLEET: &str = "[fleet]\netcd_endpoints = [\"http://127.0.0.1:2379\"]\nmember_id = \"p\"\nadvertise = \"p:1\"\n";

    fn parse(extra: &str) -> Result<Config, ConfigError> {
        Config::from_toml(
            &format!("{FLEET}{extra}"),
            Path::new("t.toml"),
            &Default::default(),
        )
    }

    fn refused(extra: &str) -> &'static str {
        match parse(extra) {
            Err(ConfigError::Invalid { key, .. }) => key,
            other => panic!("expected a refused key, got {other:?}"),
        }
    }

    #[test]
    fn the_tsdb_is_both_urls_or_none() {
        assert_eq!(parse("").unwrap().fleet.unwrap().tsdb, None);
        let both = "tsdb_url = \"http://prom:9090\"\ntsdb_remote_write_url = \"http://prom:9090/api/v1/write\"\n";
        let tsdb = parse(both).unwrap().fleet.unwrap().tsdb.unwrap();
        assert_eq!(tsdb.query.url(), "http://prom:9090");
        assert_eq!(tsdb.remote_write_url, "http://prom:9090/api/v1/write");
        assert_eq!(tsdb.query.timeout(), std::time::Duration::from_secs(10));
        assert_eq!(
            refused("tsdb_url = \"http://prom:9090\"\n"),
            "fleet.tsdb_remote_write_url"
        );
        assert_eq!(
            refused("tsdb_remote_write_url = \"http://prom:9090/api/v1/write\"\n"),
            "fleet.tsdb_url"
        );
        assert_eq!(
            refused(&both.replace("http://prom:9090/api", "prom:9090/api")),
            "fleet.tsdb_remote_write_url"
        );
        assert_eq!(
            refused(&format!(
                "{both}tsdb_bearer_token_file = \"t\"\ntsdb_basic_auth_username = \"u\"\n"
            )),
            "fleet.tsdb_bearer_token_file"
        );
        assert_eq!(
            refused(&format!(
                "{both}tsdb_basic_auth_username = \" \"\ntsdb_basic_auth_password_file = \"p\"\n"
            )),
            "fleet.tsdb_bearer_token_file"
        );
        assert_eq!(
            refused(&format!("{both}tsdb_timeout = \"1h\"\n")),
            "fleet.tsdb_url"
        );
    }
}
