//! A tower layer around every route: records request counts and latencies, and reports a request
//! message over the size limit as `ResourceExhausted` (tonic says `OutOfRange`).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use tonic::Code;
use tonic::codegen::http;
use tower::{Layer, Service};

use crate::app::telemetry::Telemetry;

/// Wraps services in [`Observe`].
#[derive(Debug, Clone)]
pub(crate) struct ObserveLayer {
    /// Where every wrapped service records its requests.
    metrics: Arc<Telemetry>,
}

impl ObserveLayer {
    pub(crate) fn new(metrics: Arc<Telemetry>) -> Self {
        Self { metrics }
    }
}

impl<S> Layer<S> for ObserveLayer {
    type Service = Observe<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Observe {
            inner,
            metrics: Arc::clone(&self.metrics),
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
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

impl<S, RequestBody, ResponseBody> Service<http::Request<RequestBody>> for Observe<S>
where
    S: Service<http::Request<RequestBody>, Response = http::Response<ResponseBody>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResponseBody: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<http::Response<ResponseBody>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(
        &mut self,
        request: http::Request<RequestBody>,
    ) -> BoxFuture<Result<http::Response<ResponseBody>, S::Error>> {
        let method = request.uri().path().to_owned();
        let started = Instant::now();
        let metrics = Arc::clone(&self.metrics);
        let response = self.inner.call(request);
        Box::pin(async move {
            let mut response = response.await?;
            // A status in the headers is a trailers-only answer: the call failed before any message.
            let code = response
                .headers()
                .get("grpc-status")
                .and_then(|value| value.to_str().ok())
                .and_then(|value| value.parse::<i32>().ok())
                .map_or(Code::Ok, Code::from_i32);
            let code = if code == Code::OutOfRange {
                response.headers_mut().insert(
                    "grpc-status",
                    http::HeaderValue::from(Code::ResourceExhausted as i32),
                );
                Code::ResourceExhausted
            } else {
                code
            };
            metrics.record_request(&method, code_name(code), started.elapsed());
            Ok(response)
        })
    }
}

/// The canonical name of a status code, as Prometheus label values.
fn code_name(code: Code) -> &'static str {
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
