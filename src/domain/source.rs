//! Where a workload's history comes from when it is pulled rather than pushed: a Prometheus-compatible
//! query API (Prometheus, Mimir, Thanos, VictoriaMetrics). Plain, validated values; the client that
//! uses them is `crate::ingest::prometheus`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{DomainError, Step, duration_text};

/// Shortest accepted per-request timeout.
const MIN_TIMEOUT: Duration = Duration::from_millis(100);
/// Longest accepted per-request timeout: a slower answer is better split into smaller chunks.
const MAX_TIMEOUT: Duration = Duration::from_secs(600);
/// Timeout of one request when the source does not set one.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// How requests to the source authenticate. Secrets stay in files, read when the client is built,
/// so they can be rotated (a Kubernetes Secret volume) and never sit in the workloads file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceAuth {
    /// No credentials.
    None,
    /// `Authorization: Bearer <file contents, trimmed>`.
    BearerTokenFile(PathBuf),
    /// HTTP basic auth; the password is the file's contents, trimmed.
    Basic {
        /// User name.
        username: String,
        /// File holding the password.
        password_file: PathBuf,
    },
}

impl SourceAuth {
    /// Credentials from the keys a user writes: a bearer token file, or a user name with a password
    /// file, or neither. Blank values count as unset, so an empty user name is refused rather than
    /// sent. `field` names the keys in the error.
    pub fn from_parts(
        field: &'static str,
        bearer_token_file: Option<PathBuf>,
        username: Option<String>,
        password_file: Option<PathBuf>,
    ) -> Result<Self, DomainError> {
        let path = |path: Option<PathBuf>| path.filter(|path| !path.as_os_str().is_empty());
        let username = username
            .map(|name| name.trim().to_owned())
            .filter(|name| !name.is_empty());
        match (path(bearer_token_file), username, path(password_file)) {
            (None, None, None) => Ok(Self::None),
            (Some(file), None, None) => Ok(Self::BearerTokenFile(file)),
            (None, Some(username), Some(password_file)) => Ok(Self::Basic {
                username,
                password_file,
            }),
            (Some(_), _, _) => Err(invalid(
                field,
                "set a bearer token file or basic auth, not both",
            )),
            (None, None, Some(_)) => Err(invalid(
                field,
                "a basic auth password file needs a non-empty user name",
            )),
            (None, Some(_), None) => Err(invalid(
                field,
                "a basic auth user name needs a password file",
            )),
        }
    }
}

/// A PromQL query whose single series is a workload's load, pulled every `step` from a
/// Prometheus-compatible HTTP API. Built from `source.prometheus` (see `PrometheusSourceParams` for the keys and ranges), so every value is in
/// range; files (credentials, CA) are read when used, with an error naming the file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "PrometheusSourceParams", into = "PrometheusSourceParams")]
pub struct PrometheusSource {
    url: String,
    query: String,
    step: Step,
    auth: SourceAuth,
    ca_file: Option<PathBuf>,
    timeout: Duration,
}

impl PrometheusSource {
    /// A source at `url` (http or https, the API's base: `http://prometheus:9090`) answering
    /// `query` at `step`, without credentials, with the default timeout.
    pub fn new(url: &str, query: &str, step: Step) -> Result<Self, DomainError> {
        PrometheusSourceParams {
            url: url.to_owned(),
            query: query.to_owned(),
            step: step.as_duration(),
            bearer_token_file: None,
            basic_auth: None,
            ca_file: None,
            timeout: DEFAULT_TIMEOUT,
        }
        .try_into()
    }

    /// Sets the credentials.
    #[must_use]
    pub fn with_auth(mut self, auth: SourceAuth) -> Self {
        self.auth = auth;
        self
    }

    /// Trusts the PEM certificates in `file` (besides the system's roots) for https.
    #[must_use]
    pub fn with_ca_file(mut self, file: Option<PathBuf>) -> Self {
        self.ca_file = file;
        self
    }

    /// Sets the timeout of one request; 100ms ..= 10m.
    pub fn with_timeout(self, timeout: Duration) -> Result<Self, DomainError> {
        check_timeout(timeout)?;
        Ok(Self { timeout, ..self })
    }

    /// Whether `other` reads the same series: the same query on the same server. The step, the
    /// timeout and the credentials change only how it is read.
    pub fn reads_same_series(&self, other: &Self) -> bool {
        self.url == other.url && self.query == other.query
    }

    /// Base URL of the API, without a trailing slash.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The PromQL expression.
    pub fn query(&self) -> &str {
        &self.query
    }

    /// Resolution of the pulled series, and how often new points are polled.
    pub fn step(&self) -> Step {
        self.step
    }

    /// Credentials.
    pub fn auth(&self) -> &SourceAuth {
        &self.auth
    }

    /// Extra trusted CA certificates (PEM).
    pub fn ca_file(&self) -> Option<&Path> {
        self.ca_file.as_deref()
    }

    /// Timeout of one request.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }
}

/// `source.prometheus` as written in `workload.toml`.
///
/// | Name | Default | Purpose | Range |
/// |---|---|---|---|
/// | `url` | required | Base URL of the Prometheus-compatible API | `http://` or `https://` with a host |
/// | `query` | required | PromQL returning exactly one series | non-empty |
/// | `step` | required | Resolution pulled, and the poll interval | 1s ..= 1d, whole milliseconds |
/// | `bearer_token_file` | none | File whose contents are sent as a bearer token | |
/// | `basic_auth` | none | `{ username, password_file }` | not with a bearer token |
/// | `ca_file` | none | PEM certificates trusted for https | |
/// | `timeout` | `"30s"` | Timeout of one request | 100ms ..= 10m |
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct PrometheusSourceParams {
    url: String,
    query: String,
    #[serde(with = "duration_text")]
    step: Duration,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    bearer_token_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    basic_auth: Option<BasicAuthParams>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ca_file: Option<PathBuf>,
    #[serde(default = "default_timeout", with = "duration_text")]
    timeout: Duration,
}

/// `source.prometheus.basic_auth` as written.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct BasicAuthParams {
    username: String,
    password_file: PathBuf,
}

fn default_timeout() -> Duration {
    DEFAULT_TIMEOUT
}

fn invalid(field: &'static str, reason: impl Into<String>) -> DomainError {
    DomainError::InvalidSource {
        field,
        reason: reason.into(),
    }
}

fn check_timeout(timeout: Duration) -> Result<(), DomainError> {
    if !(MIN_TIMEOUT..=MAX_TIMEOUT).contains(&timeout) {
        return Err(invalid(
            "source.prometheus.timeout",
            format!(
                "{} is outside 100ms ..= 10m",
                humantime::format_duration(timeout)
            ),
        ));
    }
    Ok(())
}

impl TryFrom<PrometheusSourceParams> for PrometheusSource {
    type Error = DomainError;

    fn try_from(params: PrometheusSourceParams) -> Result<Self, Self::Error> {
        let url = params.url.trim().trim_end_matches('/').to_owned();
        let rest = url
            .strip_prefix("http://")
            .or_else(|| url.strip_prefix("https://"))
            .ok_or_else(|| {
                invalid(
                    "source.prometheus.url",
                    format!("{url:?} must start with http:// or https://"),
                )
            })?;
        if rest.is_empty() || rest.starts_with('/') || rest.contains(['?', '#', ' ']) {
            return Err(invalid(
                "source.prometheus.url",
                format!("{url:?} must name a host, with no query or fragment"),
            ));
        }
        if params.query.trim().is_empty() {
            return Err(invalid("source.prometheus.query", "must not be empty"));
        }
        if !(Duration::from_secs(1)..=Duration::from_secs(24 * 3600)).contains(&params.step) {
            return Err(invalid(
                "source.prometheus.step",
                format!(
                    "{} is outside 1s ..= 1d",
                    humantime::format_duration(params.step)
                ),
            ));
        }
        let step = Step::try_from(params.step)
            .map_err(|error| invalid("source.prometheus.step", error.to_string()))?;
        check_timeout(params.timeout)?;
        let (username, password_file) = params
            .basic_auth
            .map(|basic| (basic.username, basic.password_file))
            .unzip();
        let auth = SourceAuth::from_parts(
            "source.prometheus.basic_auth",
            params.bearer_token_file,
            username,
            password_file,
        )?;
        Ok(Self {
            url,
            query: params.query.trim().to_owned(),
            step,
            auth,
            ca_file: params.ca_file,
            timeout: params.timeout,
        })
    }
}

impl From<PrometheusSource> for PrometheusSourceParams {
    fn from(source: PrometheusSource) -> Self {
        let (bearer_token_file, basic_auth) = match source.auth {
            SourceAuth::None => (None, None),
            SourceAuth::BearerTokenFile(file) => (Some(file), None),
            SourceAuth::Basic {
                username,
                password_file,
            } => (
                None,
                Some(BasicAuthParams {
                    username,
                    password_file,
                }),
            ),
        };
        Self {
            url: source.url,
            query: source.query,
            step: source.step.as_duration(),
            bearer_token_file,
            basic_auth,
            ca_file: source.ca_file,
            timeout: source.timeout,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<PrometheusSource, String> {
        toml::from_str::<PrometheusSource>(text).map_err(|error| error.to_string())
    }

    #[test]
    fn credentials_are_a_token_or_a_named_user_with_a_password_never_both() {
        let file = |path: &str| Some(PathBuf::from(path));
        let auth = |token, user: Option<&str>, password| {
            SourceAuth::from_parts("k", token, user.map(str::to_owned), password)
        };
        assert_eq!(auth(None, None, None).unwrap(), SourceAuth::None);
        assert_eq!(
            auth(file("/t"), None, None).unwrap(),
            SourceAuth::BearerTokenFile("/t".into())
        );
        assert_eq!(
            auth(None, Some(" u "), file("/p")).unwrap(),
            SourceAuth::Basic {
                username: "u".into(),
                password_file: "/p".into()
            }
        );
        // Blank values are unset: an empty token path is no token, an empty user is refused.
        assert_eq!(auth(file(""), None, None).unwrap(), SourceAuth::None);
        for (token, user, password, reason) in [
            (file("/t"), Some("u"), file("/p"), "not both"),
            (file("/t"), None, file("/p"), "not both"),
            (None, Some("  "), file("/p"), "non-empty user name"),
            (None, None, file("/p"), "non-empty user name"),
            (None, Some("u"), None, "needs a password file"),
        ] {
            let error = auth(token, user, password).unwrap_err().to_string();
            assert!(error.contains(reason) && error.contains("k"), "{error}");
        }
    }

    #[test]
    fn the_same_query_on_the_same_server_reads_the_same_series() {
        let minute = Step::try_from(60_000).unwrap();
        let source = PrometheusSource::new("http://p:9090", "up", minute).unwrap();
        let slower = PrometheusSource::new("http://p:9090", "up", Step::try_from(300_000).unwrap())
            .unwrap()
            .with_timeout(Duration::from_secs(30))
            .unwrap()
            .with_auth(SourceAuth::BearerTokenFile("/t".into()));
        assert!(source.reads_same_series(&slower));
        for other in [
            PrometheusSource::new("http://p:9090", "up * 2", minute).unwrap(),
            PrometheusSource::new("http://q:9090", "up", minute).unwrap(),
        ] {
            assert!(!source.reads_same_series(&other));
        }
    }

    #[test]
    fn reads_a_source_and_writes_it_back() {
        let source = parse(
            "url = \"https://prom:9090/\"\nquery = 'sum(rate(x[5m]))'\nstep = \"5m\"\n\
             basic_auth = { username = \"u\", password_file = \"/p\" }\ntimeout = \"5s\"",
        )
        .unwrap();
        assert_eq!(source.url(), "https://prom:9090");
        assert_eq!(source.step(), Step::FIVE_MINUTES);
        assert_eq!(source.timeout(), Duration::from_secs(5));
        assert!(matches!(source.auth(), SourceAuth::Basic { username, .. } if username == "u"));
        let written = toml::to_string(&source).unwrap();
        assert_eq!(parse(&written).unwrap(), source);
    }

    #[test]
    fn rejects_bad_values_naming_the_key() {
        let cases = [
            ("url = \"ftp://a\"\nquery = 'x'\nstep = \"5m\"", "url"),
            ("url = \"http://\"\nquery = 'x'\nstep = \"5m\"", "url"),
            ("url = \"http://a\"\nquery = ' '\nstep = \"5m\"", "query"),
            ("url = \"http://a\"\nquery = 'x'\nstep = \"0s\"", "step"),
            (
                "url = \"http://a\"\nquery = 'x'\nstep = \"5m\"\ntimeout = \"1h\"",
                "timeout",
            ),
            (
                "url = \"http://a\"\nquery = 'x'\nstep = \"5m\"\nbearer_token_file = \"/t\"\n\
                 basic_auth = { username = \"u\", password_file = \"/p\" }",
                "basic_auth",
            ),
            (
                "url = \"http://a\"\nquery = 'x'\nstep = \"5m\"\nurl_typo = 1",
                "url_typo",
            ),
        ];
        for (text, key) in cases {
            let error = parse(text).unwrap_err();
            assert!(error.contains(key), "{text}: {error}");
        }
    }
}
