//! A tower layer around every route: records request counts and latencies, and reports a
//! message over the size limit as `ResourceExhausted` (tonic says `OutOfRange`), in the response
//! headers (a request refused before any answer) and in its trailers (an answer too large to send).
//!
//! Requests are recorded under their method only when it is one the server serves; any other path
//! (a scanner's, a typo's) is counted under [`UNKNOWN_METHOD`], so no client can grow `/metrics`.
//!
//! A second layer, [`DeadlineLayer`], answers `DeadlineExceeded` to a call its handler has not
//! answered within `server.request_timeout`. Client-streaming calls (`Push`) are exempt: they last
//! as long as their client sends, and `server.stream_idle_timeout` bounds their silences instead.
//! A server-streaming call (`WatchPlans`) is answered at once, so only its start is timed.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http_body::{Body, Frame, SizeHint};
use prost::Message;
use tonic::Code;
use tonic::codegen::http;
use tower::{Layer, Service};

use super::error::promised_code;
use crate::app::telemetry::Telemetry;

/// The method label of every request to a path that is not a served gRPC method.
pub(crate) const UNKNOWN_METHOD: &str = "unknown";

/// The methods of the encoded file descriptor sets that `keep` selects, as request paths
/// (`/package.Service/Method`).
pub(crate) fn method_paths(
    descriptor_sets: &[&[u8]],
    keep: impl Fn(&prost_types::MethodDescriptorProto) -> bool + Copy,
) -> HashSet<String> {
    descriptor_sets
        .iter()
        .flat_map(|encoded| {
            prost_types::FileDescriptorSet::decode(*encoded)
                .expect("invariant: the embedded descriptor sets decode")
                .file
        })
        .flat_map(|file| {
            let package = file.package().to_owned();
            file.service.into_iter().flat_map(move |service| {
                let prefix = match package.as_str() {
                    "" => format!("/{}/", service.name()),
                    package => format!("/{package}.{}/", service.name()),
                };
                service
                    .method
                    .into_iter()
                    .filter(move |method| keep(method))
                    .map(move |method| format!("{prefix}{}", method.name()))
            })
        })
        .collect()
}

/// Wraps services in [`Observe`].
#[derive(Debug, Clone)]
pub(crate) struct ObserveLayer {
    /// Where every wrapped service records its requests.
    metrics: Arc<Telemetry>,
    /// The paths recorded under their own name (see [`method_paths`]).
    methods: Arc<HashSet<String>>,
}

impl ObserveLayer {
    pub(crate) fn new(metrics: Arc<Telemetry>, methods: HashSet<String>) -> Self {
        Self {
            metrics,
            methods: Arc::new(methods),
        }
    }
}

impl<S> Layer<S> for ObserveLayer {
    type Service = Observe<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Observe {
            inner,
            metrics: Arc::clone(&self.metrics),
            methods: Arc::clone(&self.methods),
        }
    }
}

/// See the module documentation.
#[derive(Debug, Clone)]
pub(crate) struct Observe<S> {
    /// The service observed.
    inner: S,
    /// Where each finished request is recorded: method, status code and latency.
    metrics: Arc<Telemetry>,
    /// The paths recorded under their own name; others are [`UNKNOWN_METHOD`].
    methods: Arc<HashSet<String>>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

impl<S, RequestBody, ResponseBody> Service<http::Request<RequestBody>> for Observe<S>
where
    S: Service<http::Request<RequestBody>, Response = http::Response<ResponseBody>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResponseBody: Send + 'static,
{
    type Response = http::Response<ExhaustedBody<ResponseBody>>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<RequestBody>) -> Self::Future {
        let path = request.uri().path();
        let method = if self.methods.contains(path) {
            path.to_owned()
        } else {
            UNKNOWN_METHOD.to_owned()
        };
        let started = Instant::now();
        let metrics = Arc::clone(&self.metrics);
        let response = self.inner.call(request);
        Box::pin(async move {
            let mut response = response.await?;
            let outcome = Outcome {
                metrics,
                method,
                latency: started.elapsed(),
            };
            // A status in the headers is a trailers-only answer: the call failed before any
            // message. Otherwise the status comes in the trailers, after the last message (a
            // stream may fail long after its headers).
            let pending = match keep_promise(response.headers_mut()) {
                Some(code) => {
                    outcome.record(code);
                    None
                }
                None => Some(outcome),
            };
            Ok(response.map(|inner| ExhaustedBody { inner, pending }))
        })
    }
}

/// Rewrites the `grpc-status` of `headers` (response headers or trailers) to the code the API
/// promises (see [`promised_code`]); returns the code, if there is one.
fn keep_promise(headers: &mut http::HeaderMap) -> Option<Code> {
    let code = headers
        .get("grpc-status")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<i32>().ok())
        .map(Code::from_i32)?;
    let promised = promised_code(code);
    if promised != code {
        headers.insert("grpc-status", http::HeaderValue::from(promised as i32));
    }
    Some(promised)
}

/// A call to record once its status is known: its method and the latency to its response headers.
struct Outcome {
    /// Where the call is recorded.
    metrics: Arc<Telemetry>,
    /// The method's path, or [`UNKNOWN_METHOD`].
    method: String,
    /// Time from the request to the response headers.
    latency: std::time::Duration,
}

impl Outcome {
    fn record(self, code: Code) {
        self.metrics
            .record_request(&self.method, code_name(code), self.latency);
    }
}

impl std::fmt::Debug for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outcome")
            .field("method", &self.method)
            .field("latency", &self.latency)
            .finish_non_exhaustive()
    }
}

/// A response body whose trailers carry the status code the API promises (a response message over
/// the size limit fails after the headers went out, so its `OutOfRange` is in the trailers), and
/// record the call with that code; a body dropped before its trailers (the client went away) is
/// recorded as `CANCELLED`.
#[derive(Debug)]
pub(crate) struct ExhaustedBody<B> {
    /// The body as the service wrote it.
    inner: B,
    /// The call, until its trailers are seen.
    pending: Option<Outcome>,
}

impl<B> Drop for ExhaustedBody<B> {
    fn drop(&mut self) {
        if let Some(outcome) = self.pending.take() {
            outcome.record(Code::Cancelled);
        }
    }
}

impl<B: Body + Unpin> Body for ExhaustedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let this = &mut *self;
        Pin::new(&mut this.inner).poll_frame(cx).map(|polled| {
            polled.map(|frame| {
                frame.map(|mut frame| {
                    if let Some(trailers) = frame.trailers_mut() {
                        let code = keep_promise(trailers).unwrap_or(Code::Ok);
                        if let Some(outcome) = this.pending.take() {
                            outcome.record(code);
                        }
                    }
                    frame
                })
            })
        })
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The canonical name of a status code (`NOT_FOUND`): Prometheus label values, and the CLI's
/// errors from a server.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// Wraps services in [`Deadline`].
#[derive(Debug, Clone)]
pub(crate) struct DeadlineLayer {
    /// How long a call may take to be answered.
    timeout: Duration,
    /// Paths not timed: the client-streaming methods.
    exempt: Arc<HashSet<String>>,
}

impl DeadlineLayer {
    pub(crate) fn new(timeout: Duration, exempt: HashSet<String>) -> Self {
        Self {
            timeout,
            exempt: Arc::new(exempt),
        }
    }
}

impl<S> Layer<S> for DeadlineLayer {
    type Service = Deadline<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Deadline {
            inner,
            timeout: self.timeout,
            exempt: Arc::clone(&self.exempt),
        }
    }
}

/// See [`DeadlineLayer`].
#[derive(Debug, Clone)]
pub(crate) struct Deadline<S> {
    /// The service timed.
    inner: S,
    /// How long a call may take to be answered.
    timeout: Duration,
    /// Paths not timed.
    exempt: Arc<HashSet<String>>,
}

impl<S, RequestBody, ResponseBody> Service<http::Request<RequestBody>> for Deadline<S>
where
    S: Service<http::Request<RequestBody>, Response = http::Response<ResponseBody>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResponseBody: Default + Send + 'static,
{
    type Response = http::Response<ResponseBody>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<RequestBody>) -> Self::Future {
        let exempt = self.exempt.contains(request.uri().path());
        let timeout = self.timeout;
        let response = self.inner.call(request);
        if exempt {
            return Box::pin(response);
        }
        Box::pin(async move {
            match tokio::time::timeout(timeout, response).await {
                Ok(response) => response,
                Err(_) => Ok(tonic::Status::deadline_exceeded(format!(
                    "not answered within {} (server.request_timeout)",
                    humantime::format_duration(timeout)
                ))
                .into_http()),
            }
        })
    }
}
