//! A Prometheus remote-write 1.0 sender: samples written through to a Prometheus-compatible TSDB
//! (Prometheus with `--web.enable-remote-write-receiver`, Mimir, VictoriaMetrics), as a protobuf
//! `WriteRequest` compressed with snappy's block format and posted with the specification's
//! headers (<https://prometheus.io/docs/specs/remote_write_spec/>).
//!
//! As the specification asks of senders, a 5xx or 429 answer, a refused connection and a timeout
//! are retried (a few times, with a doubling pause); another 4xx is the receiver refusing the data
//! and is not. The body is encoded by the caller (the service layer owns the protobuf), with
//! series named as [`super::prometheus_labels`] maps them.

use std::time::Duration;

use super::{PrometheusClient, SourceError, error_chain};
use crate::domain::PrometheusSource;

/// Attempts of one write, the first included.
const ATTEMPTS: u32 = 3;
/// Pause after the first failed attempt; doubled after each.
const FIRST_PAUSE: Duration = Duration::from_millis(200);

/// Errors writing through to the TSDB.
#[derive(Debug, thiserror::Error)]
pub enum RemoteWriteError {
    /// The TSDB could not be reached or answered 5xx/429, on every attempt.
    #[error("the tsdb at {url} is unavailable after {attempts} attempts: {reason}")]
    Unavailable {
        /// The remote-write URL.
        url: String,
        /// Attempts made.
        attempts: u32,
        /// The last failure.
        reason: String,
    },
    /// The TSDB refused the samples (a 4xx other than 429: e.g. too old for its head block).
    #[error("the tsdb at {url} refused the samples (http status {status}): {body}")]
    Refused {
        /// The remote-write URL.
        url: String,
        /// The status code.
        status: u16,
        /// The start of its answer.
        body: String,
    },
    /// The client could not be built (a credentials or CA file).
    #[error("remote-write client: {0}")]
    Client(#[from] SourceError),
}

/// Writes samples to one TSDB's remote-write endpoint with the credentials, CA and per-attempt
/// timeout of `source` (the same TSDB's query API, which the fleet refills from).
#[derive(Debug, Clone)]
pub struct RemoteWriteClient {
    /// The HTTP client and credentials, shared with the query side.
    client: PrometheusClient,
    /// Where requests are posted (`http://host:9090/api/v1/write`).
    url: String,
}

impl RemoteWriteClient {
    /// A client posting to `url` as `source` is queried. Blocking (reads credential files).
    pub fn new(source: &PrometheusSource, url: &str) -> Result<Self, RemoteWriteError> {
        Ok(Self {
            client: PrometheusClient::new(source)?,
            url: url.to_owned(),
        })
    }

    /// The remote-write URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The longest a [`RemoteWriteClient::write`] can take: every attempt running to its timeout
    /// (which covers connecting and reading the answer), and the pauses between them.
    pub fn longest_write(&self) -> Duration {
        let pauses = FIRST_PAUSE * (2u32.pow(ATTEMPTS - 1) - 1);
        self.client.source.timeout() * ATTEMPTS + pauses
    }

    /// Writes one request's `body` (a snappy-compressed protobuf `WriteRequest`); `Ok` once the
    /// TSDB answered 2xx.
    pub async fn write(&self, body: &[u8]) -> Result<(), RemoteWriteError> {
        let mut pause = FIRST_PAUSE;
        let mut attempt = 1;
        loop {
            match self.attempt(body).await {
                Ok(()) => return Ok(()),
                Err(Failure::Permanent(error)) => return Err(error),
                Err(Failure::Retryable(reason)) if attempt >= ATTEMPTS => {
                    return Err(RemoteWriteError::Unavailable {
                        url: self.url.clone(),
                        attempts: attempt,
                        reason,
                    });
                }
                Err(Failure::Retryable(reason)) => {
                    tracing::debug!(url = %self.url, attempt, %reason, "remote-write failed; retrying");
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                    attempt += 1;
                }
            }
        }
    }

    async fn attempt(&self, body: &[u8]) -> Result<(), Failure> {
        let request = self
            .client
            .authorised(self.client.http.post(&self.url))
            .header("Content-Type", "application/x-protobuf")
            .header("Content-Encoding", "snappy")
            .header("X-Prometheus-Remote-Write-Version", "0.1.0")
            .body(body.to_vec());
        let response = request
            .send()
            .await
            .map_err(|error| Failure::Retryable(error_chain(&error)))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let text = response.text().await.unwrap_or_default();
        let text = text.trim();
        let text: String = text.chars().take(200).collect();
        if status.is_server_error() || status.as_u16() == 429 {
            return Err(Failure::Retryable(format!("http status {status}: {text}")));
        }
        Err(Failure::Permanent(RemoteWriteError::Refused {
            url: self.url.clone(),
            status: status.as_u16(),
            body: text,
        }))
    }
}

/// How an attempt failed.
enum Failure {
    /// Worth another attempt: unreachable, timed out, 5xx, 429.
    Retryable(String),
    /// The receiver refused the data; another attempt would be refused alike.
    Permanent(RemoteWriteError),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Step;

    #[test]
    fn the_longest_write_is_every_attempt_timing_out_and_the_pauses_between() {
        let source = PrometheusSource::new("http://127.0.0.1:9090", "up", Step::FIVE_MINUTES)
            .unwrap()
            .with_timeout(Duration::from_secs(2))
            .unwrap();
        let client = RemoteWriteClient::new(&source, "http://127.0.0.1:9090/api/v1/write").unwrap();
        // Three attempts of 2 s, with 200 ms and then 400 ms between them.
        assert_eq!(client.longest_write(), Duration::from_millis(6_600));
    }
}
