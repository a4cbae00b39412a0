//! `POST /api/v1/write`: Prometheus remote-write 1.0 on the HTTP listener that serves `/metrics`.
//!
//! The request is checked in the order that costs least first: the bearer token (401), the
//! spec's headers (415 for a body we cannot read, 400 for another protocol version), the body's
//! size (413, before reading more than the limit), then, on the blocking pool, the snappy block,
//! the protobuf and every series (400, nothing written), and the write through the same use case
//! as gRPC `Push` (a store failure is 5xx, so Prometheus retries). Stale markers and other
//! non-finite values are dropped and counted; a request with no samples (metadata) gets 204.
//!
//! In a fleet the samples are routed as a `Push` is (`forward_push`): each series' share goes to
//! its owner as a forwarded gRPC `Write` carrying the sender's bearer token, the share owned here is
//! written through to the fleet's TSDB and stored, and the 204 waits for every part.

mod decode;
mod encode;

use std::sync::Arc;

use axum::extract::Request;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use http_body::Body as _;

use super::auth::BearerAuth;
use super::forward::Forwarder;
use super::{ServerOptions, convert, forward_push, proto};
use crate::app::ServingState;
use crate::store::SeriesSamples;

pub use decode::{DecodeError, DecodedWrite, STALE_MARKER_BITS, decode};
pub(crate) use encode::encode;

/// Size limits of one remote-write request. Validated by [`crate::config::Config`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemoteWriteLimits {
    /// Largest compressed body, in bytes; a larger one is refused (413) before it is read whole.
    pub max_body_bytes: usize,
    /// Largest decompressed body, in bytes, as the snappy header states it; checked before the
    /// body is decompressed (413).
    pub max_decoded_bytes: usize,
}

impl Default for RemoteWriteLimits {
    /// Prometheus' requests are a few MiB at most (`max_samples_per_send` 2,000 by default).
    fn default() -> Self {
        Self {
            max_body_bytes: 8 << 20,
            max_decoded_bytes: 32 << 20,
        }
    }
}

/// What the remote-write endpoint writes into and how it guards itself.
#[derive(Debug, Clone)]
pub struct RemoteWrite {
    /// The application the samples are stored through (as gRPC `Push` stores them).
    state: Arc<ServingState>,
    /// The `[server.auth]` tokens; none accepts every request.
    auth: BearerAuth,
    /// Body size limits.
    limits: RemoteWriteLimits,
    /// Channels to the fleet's other members, for the series they own.
    forwarder: Forwarder,
    /// Largest gRPC message a forwarded share may be (the API's own limit, `options`'s).
    max_message_bytes: usize,
}

impl RemoteWrite {
    /// Receives into `state`, requiring one of `options`' tokens when there are any, and
    /// forwarding other members' shares within its message size.
    pub fn new(
        state: Arc<ServingState>,
        options: &ServerOptions,
        limits: RemoteWriteLimits,
    ) -> Self {
        Self {
            state,
            auth: BearerAuth::new(&options.tokens),
            limits,
            forwarder: Forwarder::to_apis(options.peer_ca.as_deref(), options.forward_timeout),
            max_message_bytes: options.max_message_bytes,
        }
    }

    /// Answers one request, counting it in `/metrics` by outcome.
    pub(super) async fn handle(self: Arc<Self>, request: Request) -> Response {
        let metrics = Arc::clone(self.state.metrics());
        match self.receive(request).await {
            Ok(decoded) => {
                metrics.record_remote_write("accepted");
                metrics.record_remote_write_samples("accepted", decoded.samples);
                metrics.record_remote_write_samples("stale_marker", decoded.stale_markers);
                metrics.record_remote_write_samples("non_finite", decoded.non_finite);
                StatusCode::NO_CONTENT.into_response()
            }
            Err(refusal) => {
                metrics.record_remote_write(refusal.outcome);
                if refusal.status.is_server_error() {
                    tracing::warn!(reason = %refusal.message, "remote-write request failed; the sender retries");
                } else {
                    tracing::debug!(reason = %refusal.message, status = %refusal.status, "remote-write request refused");
                }
                let mut response = (refusal.status, refusal.message + "\n").into_response();
                if refusal.status == StatusCode::UNAUTHORIZED {
                    response.headers_mut().insert(
                        header::WWW_AUTHENTICATE,
                        header::HeaderValue::from_static("Bearer"),
                    );
                }
                response
            }
        }
    }

    /// Checks, decodes and stores one request; the samples stored and dropped, or why not.
    async fn receive(&self, request: Request) -> Result<DecodedWrite, Refusal> {
        let (parts, body) = request.into_parts();
        let authorization = parts.headers.get(header::AUTHORIZATION);
        self.auth
            .check(authorization.map(|value| value.as_bytes()))
            .map_err(|reason| Refusal::new(StatusCode::UNAUTHORIZED, "unauthorized", reason))?;
        check_headers(&parts.headers)?;
        let limit = self.limits.max_body_bytes;
        let declared = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|length| length > limit as u64) {
            return Err(too_large(limit));
        }
        let compressed = read_body(body, limit).await?;
        let state = Arc::clone(&self.state);
        let max_decoded = self.limits.max_decoded_bytes;
        if self.state.fleet_view().is_none() {
            return on_blocking_pool(move || store(&state, &compressed, max_decoded)).await;
        }
        let mut decoded =
            on_blocking_pool(move || decode(&compressed, max_decoded).map_err(undecodable)).await?;
        if !decoded.batch.is_empty() {
            // The sender's token goes with the shares forwarded to their owners.
            let mut original = tonic::Request::new(());
            if let Some(value) = authorization
                .and_then(|value| tonic::metadata::MetadataValue::try_from(value.as_bytes()).ok())
            {
                original.metadata_mut().insert("authorization", value);
            }
            let message = write_request(std::mem::take(&mut decoded.batch));
            forward_push::write_routed(
                &self.state,
                &self.forwarder,
                &original,
                message,
                self.max_message_bytes,
            )
            .await
            .map_err(|status| unstored(&status))?;
        }
        Ok(decoded)
    }
}

/// Runs `work` on the blocking pool.
async fn on_blocking_pool<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, Refusal> + Send + 'static,
) -> Result<T, Refusal> {
    tokio::task::spawn_blocking(work).await.map_err(|error| {
        Refusal::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "store_failure",
            format!("worker failed: {error}"),
        )
    })?
}

/// `batch` as a gRPC `Write` message.
fn write_request(batch: Vec<SeriesSamples>) -> proto::WriteRequest {
    proto::WriteRequest {
        series: batch
            .into_iter()
            .map(|part| {
                let (timestamps_ms, values) = part
                    .samples
                    .iter()
                    .map(|sample| (sample.timestamp.as_millis(), sample.value))
                    .unzip();
                proto::SeriesSamples {
                    series: Some(convert::series_ref(&part.series)),
                    timestamps_ms,
                    values,
                }
            })
            .collect(),
    }
}

/// Why a body could not be decoded, as the sender is told.
fn undecodable(error: DecodeError) -> Refusal {
    let (status, outcome) = match error {
        DecodeError::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
        DecodeError::NotSnappy { .. } => (StatusCode::BAD_REQUEST, "not_snappy"),
        DecodeError::BadProtobuf { .. } => (StatusCode::BAD_REQUEST, "bad_protobuf"),
        DecodeError::InvalidSeries { .. } => (StatusCode::BAD_REQUEST, "invalid_series"),
    };
    Refusal::new(status, outcome, error.to_string())
}

/// A write that failed with `status` (the one mapping of use-case errors to gRPC codes, or an
/// owner's answer), as an HTTP status: 400 for a sample the store refuses, 503 when it may
/// succeed later, 500 otherwise, so Prometheus retries the last two.
fn unstored(status: &tonic::Status) -> Refusal {
    let (code, outcome) = match status.code() {
        tonic::Code::InvalidArgument => (StatusCode::BAD_REQUEST, "invalid_sample"),
        tonic::Code::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "store_failure"),
    };
    Refusal::new(code, outcome, status.message().to_owned())
}

/// Decodes `compressed` and stores its samples (all or nothing). Blocking.
fn store(
    state: &ServingState,
    compressed: &[u8],
    max_decoded_bytes: usize,
) -> Result<DecodedWrite, Refusal> {
    let decoded = decode(compressed, max_decoded_bytes).map_err(undecodable)?;
    if !decoded.batch.is_empty() {
        state
            .ingest(&decoded.batch)
            .map_err(|error| unstored(&super::error::status(&error)))?;
    }
    Ok(decoded)
}

/// Why a request was refused: its status, the `outcome` label it is counted under and the message
/// the sender gets.
#[derive(Debug)]
struct Refusal {
    /// HTTP status answered.
    status: StatusCode,
    /// Label value of `prescale_remote_write_requests_total{outcome}`.
    outcome: &'static str,
    /// Body of the answer.
    message: String,
}

impl Refusal {
    fn new(status: StatusCode, outcome: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            outcome,
            message: message.into(),
        }
    }
}

fn too_large(limit: usize) -> Refusal {
    Refusal::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_large",
        format!("body larger than the limit of {limit} bytes"),
    )
}

/// The spec's headers: `Content-Encoding: snappy` and `Content-Type: application/x-protobuf`
/// (415 otherwise: we cannot read the body), and `X-Prometheus-Remote-Write-Version` 0.1.x when
/// present (400 otherwise: another protocol). A `proto=` parameter other than 1.0's message is
/// remote-write 2.0, which we do not speak (415, as 2.0 says).
fn check_headers(headers: &HeaderMap) -> Result<(), Refusal> {
    let text = |name| {
        headers
            .get(name)
            .and_then(|value: &header::HeaderValue| value.to_str().ok())
            .map(str::trim)
    };
    let unsupported = |message: String| {
        Refusal::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            message,
        )
    };
    let encoding = text(header::CONTENT_ENCODING.as_str());
    if !encoding.is_some_and(|value| value.eq_ignore_ascii_case("snappy")) {
        return Err(unsupported(format!(
            "Content-Encoding must be snappy, got {encoding:?}"
        )));
    }
    let content_type = text(header::CONTENT_TYPE.as_str()).unwrap_or("");
    let mut parameters = content_type.split(';').map(str::trim);
    let media_type = parameters.next().unwrap_or("");
    let proto = parameters
        .filter_map(|parameter| parameter.split_once('='))
        .find(|(key, _)| key.trim().eq_ignore_ascii_case("proto"))
        .map(|(_, value)| value.trim());
    if !media_type.eq_ignore_ascii_case("application/x-protobuf")
        || proto.is_some_and(|proto| proto != "prometheus.WriteRequest")
    {
        return Err(unsupported(format!(
            "Content-Type must be application/x-protobuf (remote-write 1.0), got {content_type:?}"
        )));
    }
    if let Some(version) = text("x-prometheus-remote-write-version")
        && !version.starts_with("0.1.")
    {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "unsupported_version",
            format!("remote-write version {version:?} is not supported; 0.1.0 is"),
        ));
    }
    Ok(())
}

/// The whole body, refused (413) as soon as it passes `limit` bytes: the rest is never read.
async fn read_body(body: axum::body::Body, limit: usize) -> Result<Vec<u8>, Refusal> {
    let mut body = std::pin::pin!(body);
    let mut bytes = Vec::new();
    while let Some(frame) = std::future::poll_fn(|cx| body.as_mut().poll_frame(cx)).await {
        let frame = frame.map_err(|error| {
            Refusal::new(
                StatusCode::BAD_REQUEST,
                "unreadable_body",
                format!("reading the body: {error}"),
            )
        })?;
        if let Ok(data) = frame.into_data() {
            if bytes.len() + data.len() > limit {
                return Err(too_large(limit));
            }
            bytes.extend_from_slice(&data);
        }
    }
    Ok(bytes)
}
