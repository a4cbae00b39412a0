//! A client of Prometheus' HTTP query API (`/api/v1/query_range`), as Prometheus, Mimir, Thanos and
//! VictoriaMetrics serve it: a workload's history is pulled from it in chunks, each checked whole
//! before the caller writes any of it.
//!
//! Prometheus refuses a range query of more than 11,000 points per series (`exceeded maximum
//! resolution of 11,000 points per timeseries`, HTTP 400), so a long range is split into chunks of
//! at most [`MAX_POINTS_PER_REQUEST`] points. Design: docs/decisions.md, "Prometheus as a history
//! source".

mod raw;
mod remote_write;
mod response;
mod series_labels;

use std::time::Duration;

use crate::domain::{PrometheusSource, Sample, SourceAuth, Step, Timestamp};

pub use remote_write::{RemoteWriteClient, RemoteWriteError};
pub use series_labels::{SERIES_LABEL, prometheus_labels, selector, series_of};

/// Most points one request asks for: below Prometheus' limit of 11,000 per series, with room for a
/// server that counts both ends of the range differently.
pub const MAX_POINTS_PER_REQUEST: i64 = 10_000;

/// Errors pulling from a Prometheus-compatible API. [`SourceError::reason`] gives each a short,
/// stable name for logs and `prescale_source_errors_total{reason}`.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// A credentials or CA file could not be read or used.
    #[error("cannot use {path}: {reason}")]
    File {
        /// The file.
        path: std::path::PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The server could not be reached (refused, unknown host, TLS handshake).
    #[error("cannot connect to {url}: {reason}")]
    Connect {
        /// The API's base URL.
        url: String,
        /// The underlying error.
        reason: String,
    },
    /// No answer within the source's timeout.
    #[error("no answer from {url} within {timeout:?}")]
    Timeout {
        /// The API's base URL.
        url: String,
        /// The source's timeout.
        timeout: Duration,
    },
    /// A status other than 2xx, without the API's error envelope.
    #[error("http status {status}: {body}")]
    HttpStatus {
        /// The status code.
        status: u16,
        /// The start of the body.
        body: String,
    },
    /// The API rejected the query (`errorType` and `error` of its answer; `bad_data` for a syntax
    /// error).
    #[error("query failed: {error_type}: {error}")]
    QueryError {
        /// Prometheus' `errorType`.
        error_type: String,
        /// Prometheus' `error`.
        error: String,
    },
    /// The answer is not a range query's matrix.
    #[error("bad response: {reason}")]
    BadResponse {
        /// What is wrong with it.
        reason: String,
    },
    /// The query returned more than one series; a workload's load must be one.
    #[error(
        "the query returned {count} series (e.g. {first} and {second}); aggregate it to one, e.g. sum(...)"
    )]
    SeveralSeries {
        /// How many.
        count: usize,
        /// Labels of the first.
        first: String,
        /// Labels of the second.
        second: String,
    },
    /// The query returned nothing over the range pulled.
    #[error("the query returned no series from {from} to {to}")]
    NoSeries {
        /// Start of the range.
        from: Timestamp,
        /// End of the range.
        to: Timestamp,
    },
    /// A value is NaN or infinite (e.g. a division by zero in the query); nothing of the chunk is
    /// written.
    #[error(
        "the query returned {value} at {at}; filter it out in the query (e.g. `> -Inf`) or fix the division"
    )]
    NanValues {
        /// Its timestamp.
        at: Timestamp,
        /// The value as sent.
        value: String,
    },
}

impl SourceError {
    /// Short, stable name of the kind of error, for the `reason` label.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::File { .. } => "file",
            Self::Connect { .. } => "connect",
            Self::Timeout { .. } => "timeout",
            Self::HttpStatus { .. } => "http_status",
            Self::QueryError { .. } => "query_error",
            Self::BadResponse { .. } => "bad_response",
            Self::SeveralSeries { .. } => "several_series",
            Self::NoSeries { .. } => "no_series",
            Self::NanValues { .. } => "nan_values",
        }
    }
}

/// One range query: evaluation times `start, start + step, ..., end` (both ends included, as
/// Prometheus evaluates them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chunk {
    /// First evaluation time.
    pub start: Timestamp,
    /// Last evaluation time.
    pub end: Timestamp,
}

/// Splits the evaluation times `from, from + step, ... <= to` into chunks of at most `max_points`
/// points, oldest first; none when `to < from`.
pub fn chunks(from: Timestamp, to: Timestamp, step: Step, max_points: i64) -> Vec<Chunk> {
    let step = step.as_millis();
    let span = step.saturating_mul(max_points.max(1) - 1);
    let mut out = Vec::new();
    let mut start = from;
    while start <= to {
        let end = start.saturating_add_millis(span).min(to);
        // The last evaluation time at or before `end`.
        let end = end.saturating_add_millis(-(end.as_millis() - start.as_millis()) % step);
        out.push(Chunk { start, end });
        start = end.saturating_add_millis(step);
    }
    out
}

/// A client of one source: its base URL, query, step, credentials, CA and timeout.
#[derive(Debug, Clone)]
pub struct PrometheusClient {
    /// The source it queries.
    source: PrometheusSource,
    /// Connection pool with the source's timeout and trusted certificates.
    http: reqwest::Client,
    /// Credentials, read from the source's files when the client was built.
    credentials: Credentials,
}

/// What a request authenticates with.
#[derive(Clone)]
enum Credentials {
    None,
    Bearer(String),
    Basic { username: String, password: String },
}

impl std::fmt::Debug for Credentials {
    /// Names the kind only: secrets stay out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::None => "None",
            Self::Bearer(_) => "Bearer(..)",
            Self::Basic { .. } => "Basic(..)",
        })
    }
}

impl PrometheusClient {
    /// A client of `source`; reads its credentials and CA files now, so an unreadable file is an
    /// error naming it. Blocking (small file reads).
    pub fn new(source: &PrometheusSource) -> Result<Self, SourceError> {
        let mut builder = reqwest::Client::builder()
            .timeout(source.timeout())
            .connect_timeout(source.timeout().min(Duration::from_secs(10)))
            .user_agent(concat!("prescale/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = source.ca_file() {
            let pem = read_file(path)?;
            let certificates =
                reqwest::Certificate::from_pem_bundle(&pem).map_err(|error| SourceError::File {
                    path: path.to_owned(),
                    reason: format!("not PEM certificates: {error}"),
                })?;
            if certificates.is_empty() {
                return Err(SourceError::File {
                    path: path.to_owned(),
                    reason: "holds no PEM certificate".to_owned(),
                });
            }
            for certificate in certificates {
                builder = builder.add_root_certificate(certificate);
            }
        }
        let http = builder.build().map_err(|error| SourceError::Connect {
            url: source.url().to_owned(),
            reason: error.to_string(),
        })?;
        let credentials = match source.auth() {
            SourceAuth::None => Credentials::None,
            SourceAuth::BearerTokenFile(path) => Credentials::Bearer(secret_from(path)?),
            SourceAuth::Basic {
                username,
                password_file,
            } => Credentials::Basic {
                username: username.clone(),
                password: secret_from(password_file)?,
            },
        };
        Ok(Self {
            source: source.clone(),
            http,
            credentials,
        })
    }

    /// The source queried.
    pub fn source(&self) -> &PrometheusSource {
        &self.source
    }

    /// The chunks that cover evaluation times `from ..= to` at the source's step.
    pub fn chunks(&self, from: Timestamp, to: Timestamp) -> Vec<Chunk> {
        chunks(from, to, self.source.step(), MAX_POINTS_PER_REQUEST)
    }

    /// Runs the query over one chunk: its one series' samples, oldest first (none when it matched
    /// nothing there). The whole answer is checked before it is returned, so an error leaves
    /// nothing to write.
    pub async fn query_chunk(&self, chunk: Chunk) -> Result<Vec<Sample>, SourceError> {
        let url = format!("{}/api/v1/query_range", self.source.url());
        let form = [
            ("query", self.source.query().to_owned()),
            ("start", seconds_text(chunk.start.as_millis())),
            ("end", seconds_text(chunk.end.as_millis())),
            ("step", seconds_text(self.source.step().as_millis())),
        ];
        self.query(&url, &form, response::parse_matrix).await
    }

    /// Posts `form` to `url` with the source's credentials, and reads the answer with `parse`
    /// when it is a 2xx.
    async fn query<T>(
        &self,
        url: &str,
        form: &[(&str, String)],
        parse: impl FnOnce(&[u8]) -> Result<T, SourceError>,
    ) -> Result<T, SourceError> {
        let request = self.authorised(self.http.post(url).form(form));
        let response = request
            .send()
            .await
            .map_err(|error| self.transport(error))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|error| self.transport(error))?;
        if !status.is_success() {
            return Err(
                response::api_error(&body).unwrap_or_else(|| SourceError::HttpStatus {
                    status: status.as_u16(),
                    body: String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
                }),
            );
        }
        parse(&body)
    }

    /// `request` with the source's credentials.
    fn authorised(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.credentials {
            Credentials::None => request,
            Credentials::Bearer(token) => request.bearer_auth(token),
            Credentials::Basic { username, password } => {
                request.basic_auth(username, Some(password))
            }
        }
    }

    fn transport(&self, error: reqwest::Error) -> SourceError {
        if error.is_timeout() {
            return SourceError::Timeout {
                url: self.source.url().to_owned(),
                timeout: self.source.timeout(),
            };
        }
        if error.is_connect() || error.is_request() {
            return SourceError::Connect {
                url: self.source.url().to_owned(),
                reason: error_chain(&error),
            };
        }
        SourceError::BadResponse {
            reason: error_chain(&error),
        }
    }
}

/// An error and its causes on one line ("error sending request: connection refused").
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        cause = inner.source();
    }
    text
}

/// Milliseconds as the API's float seconds ("1700000000.5").
fn seconds_text(millis: i64) -> String {
    let sign = if millis < 0 { "-" } else { "" };
    let millis = millis.unsigned_abs();
    format!("{sign}{}.{:03}", millis / 1000, millis % 1000)
}

fn read_file(path: &std::path::Path) -> Result<Vec<u8>, SourceError> {
    std::fs::read(path).map_err(|error| SourceError::File {
        path: path.to_owned(),
        reason: error.to_string(),
    })
}

/// A secret file's contents without surrounding whitespace (the newline editors add).
fn secret_from(path: &std::path::Path) -> Result<String, SourceError> {
    let bytes = read_file(path)?;
    let text = String::from_utf8(bytes).map_err(|_| SourceError::File {
        path: path.to_owned(),
        reason: "not UTF-8 text".to_owned(),
    })?;
    let secret = text.trim();
    if secret.is_empty() {
        return Err(SourceError::File {
            path: path.to_owned(),
            reason: "empty".to_owned(),
        });
    }
    Ok(secret.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(millis: i64) -> Timestamp {
        Timestamp::from_millis(millis)
    }

    #[test]
    fn chunks_cover_every_point_once_and_stay_under_the_limit() {
        let step = Step::FIVE_MINUTES;
        let step_ms = step.as_millis();
        for (points, max) in [
            (1, 10_000),
            (10_000, 10_000),
            (10_001, 10_000),
            (40_320, 10_000),
            (7, 3),
        ] {
            let from = at(1_700_000_100_000);
            let to = from.saturating_add_millis((points - 1) * step_ms);
            let parts = chunks(from, to, step, max);
            let mut expected = from;
            for part in &parts {
                assert_eq!(part.start, expected);
                let count = (part.end.as_millis() - part.start.as_millis()) / step_ms + 1;
                assert!(count <= max && count >= 1, "{part:?}");
                expected = part.end.saturating_add_millis(step_ms);
            }
            assert_eq!(
                expected,
                to.saturating_add_millis(step_ms),
                "{points} points"
            );
            assert_eq!(parts.len() as i64, (points + max - 1) / max);
        }
    }

    #[test]
    fn a_range_ending_between_steps_stops_at_the_last_step() {
        let step = Step::FIVE_MINUTES;
        let parts = chunks(at(0), at(5 * 60_000 + 10), step, 100);
        assert_eq!(
            parts,
            vec![Chunk {
                start: at(0),
                end: at(300_000)
            }]
        );
        assert!(chunks(at(10), at(0), step, 100).is_empty());
    }

    #[test]
    fn writes_seconds_with_millisecond_precision() {
        assert_eq!(seconds_text(1_700_000_000_500), "1700000000.500");
        assert_eq!(seconds_text(300_000), "300.000");
        assert_eq!(seconds_text(-1_500), "-1.500");
    }

    #[test]
    fn unreadable_credential_files_name_the_file() {
        let source = PrometheusSource::new("http://127.0.0.1:1", "up", Step::FIVE_MINUTES)
            .unwrap()
            .with_auth(SourceAuth::BearerTokenFile("/nonexistent/token".into()));
        let error = PrometheusClient::new(&source).unwrap_err();
        assert_eq!(error.reason(), "file");
        assert!(error.to_string().contains("/nonexistent/token"), "{error}");
    }
}
