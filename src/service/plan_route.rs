//! `PlanService` with `GetPlan` answered from bytes encoded once per plan revision.
//!
//! `GetPlan` is the call executors poll, and a day's plan at 5 minutes is 288 steps (about 14 KB).
//! Generated tonic services take an owned message and encode it on every call, which cost a third of
//! the server's time under load (docs/BENCHMARKS.md). This route decodes the request as usual, and
//! writes the plan's cached encoding as the response body: on the wire it is the same `Plan` message,
//! so clients see no difference. Every other `PlanService` method goes to the generated server.

use std::convert::Infallible;
use std::task::{Context, Poll};

use prost::bytes::{BufMut, Bytes};
use tonic::body::Body;
use tonic::codec::{Codec, EncodeBuf, Encoder};
use tonic::codegen::{BoxFuture, Service, StdError, http};
use tonic::server::{Grpc, NamedService, UnaryService};
use tonic::{Request, Response, Status};

use super::handlers::Handlers;
use super::proto;
use super::proto::plan_service_server::PlanServiceServer;

const GET_PLAN_PATH: &str = "/prescale.v1.PlanService/GetPlan";

/// The `PlanService` as the server mounts it.
#[derive(Debug, Clone)]
pub(crate) struct PlanRoutes {
    /// The generated server, for every method but `GetPlan`.
    generated: PlanServiceServer<Handlers>,
    /// The handlers `GetPlan` is answered from (their cached encodings).
    handlers: Handlers,
    /// Message size limit of `GetPlan`'s request and response, as the generated server has.
    max_message_bytes: usize,
}

impl PlanRoutes {
    pub(crate) fn new(handlers: Handlers, max_message_bytes: usize) -> Self {
        Self {
            generated: PlanServiceServer::new(handlers.clone())
                .max_decoding_message_size(max_message_bytes)
                .max_encoding_message_size(max_message_bytes),
            handlers,
            max_message_bytes,
        }
    }
}

impl NamedService for PlanRoutes {
    const NAME: &'static str = proto::plan_service_server::SERVICE_NAME;
}

impl<B> Service<http::Request<B>> for PlanRoutes
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if request.uri().path() != GET_PLAN_PATH {
            return self.generated.call(request);
        }
        let method = GetPlan(self.handlers.clone());
        let limit = Some(self.max_message_bytes);
        Box::pin(async move {
            let mut grpc = Grpc::new(EncodedPlanCodec).apply_max_message_size_config(limit, limit);
            Ok(grpc.unary(method, request).await)
        })
    }
}

/// `GetPlan` as a unary service whose response is the plan's encoded bytes.
struct GetPlan(Handlers);

impl UnaryService<proto::GetPlanRequest> for GetPlan {
    type Response = Bytes;
    type Future = BoxFuture<Response<Bytes>, Status>;

    fn call(&mut self, request: Request<proto::GetPlanRequest>) -> Self::Future {
        let handlers = self.0.clone();
        Box::pin(async move { handlers.plan_bytes(request).await.map(Response::new) })
    }
}

/// Decodes `GetPlanRequest` with prost; encodes a response that is already a `Plan`'s encoding.
struct EncodedPlanCodec;

impl Codec for EncodedPlanCodec {
    type Encode = Bytes;
    type Decode = proto::GetPlanRequest;
    type Encoder = EncodedEncoder;
    type Decoder = tonic_prost::ProstDecoder<proto::GetPlanRequest>;

    fn encoder(&mut self) -> Self::Encoder {
        EncodedEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        tonic_prost::ProstDecoder::default()
    }
}

struct EncodedEncoder;

impl Encoder for EncodedEncoder {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}
