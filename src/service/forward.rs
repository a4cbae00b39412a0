//! Fleet mode: any replica answers anything. A call about work another replica owns (`GetPlan`,
//! `GetWorkload`, `Forecast`, `WatchPlans`, `ReportApplied`, the KEDA scaler's `IsActive`,
//! `StreamIsActive` and `GetMetrics`) is forwarded to the owner over a pooled channel, marked with
//! [`FORWARDED_HEADER`] and carrying the caller's bearer token. A marked call that reaches a
//! replica which does not own the work (the members changed while it travelled) is answered
//! `UNAVAILABLE`, never forwarded again, so no call loops.
//!
//! An owner alive on TCP but not answering (stopped, wedged) holds no call for long: a forwarded
//! unary call has a deadline, the smaller of the caller's own `grpc-timeout` and the fleet's
//! forwarding timeout (`[fleet] forward_timeout`), and fails `DEADLINE_EXCEEDED` naming the member
//! past it; each member's connection is pinged every forwarding timeout and dropped when a ping
//! goes unanswered that long, which ends the streams forwarded over it (`UNAVAILABLE`). A failure
//! with a code the transport fails with names the member and its address. Design: docs/decisions.md, "Fleet mode:
//! replicas coordinated through etcd".

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use prost::bytes::Bytes;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::metadata::MetadataValue;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::{Code, Request, Response, Status, Streaming};

use super::handlers::PlanStream;
use super::member_connector::MemberConnector;
use super::proto;
use super::proto::forecast_service_client::ForecastServiceClient;
use super::proto::plan_service_client::PlanServiceClient;
use super::streams;
use crate::app::{Placement, ServingState};
use crate::fleet::FleetView;

/// The metadata key that marks a forwarded call.
pub(crate) const FORWARDED_HEADER: &str = "x-prescale-forwarded";

/// A stream of answers passed through from the owner.
pub(crate) type ProxiedStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// Which of a member's listeners a call goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Listener {
    /// The prescale gRPC API.
    Api,
    /// The KEDA external scaler.
    Scaler,
}

/// How long dialling a member may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// One lazily connected channel per member address, shared by every handler.
#[derive(Debug, Clone)]
pub(crate) struct Forwarder {
    /// Channels by member id and `host:port`; a channel reconnects by itself after its peer
    /// restarts.
    channels: Arc<parking_lot::Mutex<HashMap<(String, String), Channel>>>,
    /// TLS to the listeners this forwarder dials (the members' APIs, or their KEDA scalers),
    /// verifying their certificates with the fleet's CA (`[fleet] peer_ca_file`); plaintext when
    /// `None`.
    tls: Option<ClientTlsConfig>,
    /// The fleet's forwarding timeout (`[fleet] forward_timeout`): bound on a forwarded unary
    /// call and on opening a forwarded stream, and the keepalive interval and timeout of the
    /// members' connections.
    timeout: Duration,
}

impl Forwarder {
    /// Forwards over `tls` when given, else in plaintext, with forwarding timeout `timeout`.
    pub(crate) fn new(tls: Option<ClientTlsConfig>, timeout: Duration) -> Self {
        Self {
            channels: Arc::default(),
            tls,
            timeout,
        }
    }

    /// Forwards to the members' APIs, over TLS trusting the certificates `peer_ca` (PEM) signed
    /// when it is given (see [`ServerOptions::peer_ca`](super::ServerOptions::peer_ca)), with
    /// forwarding timeout `timeout`.
    pub(crate) fn to_apis(peer_ca: Option<&[u8]>, timeout: Duration) -> Self {
        Self::new(peer_ca.map(verifying), timeout)
    }

    /// Where a call placed at `placement` goes: `None` to answer it here, or its owner.
    pub(crate) fn target<T>(
        &self,
        placement: Placement,
        request: &Request<T>,
        listener: Listener,
    ) -> Result<Option<Owner>, Status> {
        match placement {
            Placement::Local => Ok(None),
            Placement::Unavailable(reason) => Err(Status::unavailable(reason.to_string())),
            Placement::Remote(member) => {
                if is_forwarded(request) {
                    return Err(Status::unavailable(format!(
                        "forwarded here, but member {} owns it (the fleet's members are changing); retry",
                        member.id
                    )));
                }
                let address = match listener {
                    Listener::Api => member.info.addr,
                    Listener::Scaler => member.info.scaler_addr.ok_or_else(|| {
                        Status::unavailable(format!(
                            "member {} owns it but serves no KEDA scaler",
                            member.id
                        ))
                    })?,
                };
                Ok(Some(Owner {
                    channel: self.channel(&member.id, &address)?,
                    member: member.id,
                    address,
                    timeout: self.timeout,
                }))
            }
        }
    }

    /// The channel to member `member`'s listener at `address` (connected on first use; a failure
    /// to connect names both). Its connection is pinged every forwarding timeout, idle or not,
    /// and dropped when a ping goes unanswered that long: the calls and streams on it then fail
    /// `UNAVAILABLE`, and the next call connects again.
    pub(crate) fn channel(&self, member: &str, address: &str) -> Result<Channel, Status> {
        let tls = self.tls.as_ref();
        let mut channels = self.channels.lock();
        let key = (member.to_owned(), address.to_owned());
        if let Some(channel) = channels.get(&key) {
            return Ok(channel.clone());
        }
        let invalid = |error: tonic::transport::Error| {
            Status::internal(format!("member address {address:?} is invalid: {error}"))
        };
        let scheme = if tls.is_some() { "https" } else { "http" };
        let mut endpoint = Endpoint::from_shared(format!("{scheme}://{address}"))
            .map_err(invalid)?
            .connect_timeout(CONNECT_TIMEOUT)
            .http2_keep_alive_interval(self.timeout)
            .keep_alive_timeout(self.timeout)
            .keep_alive_while_idle(true);
        if let Some(tls) = tls {
            endpoint = endpoint.tls_config(tls.clone()).map_err(invalid)?;
        }
        let channel = endpoint.connect_with_connector_lazy(MemberConnector::new(member, address));
        channels.insert(key, channel.clone());
        Ok(channel)
    }
}

/// TLS that trusts the certificates the fleet's CA `peer_ca` (PEM) signed.
pub(crate) fn verifying(peer_ca: &[u8]) -> ClientTlsConfig {
    ClientTlsConfig::new().ca_certificate(Certificate::from_pem(peer_ca))
}

/// Whether `request` was forwarded here by another replica.
pub(crate) fn is_forwarded<T>(request: &Request<T>) -> bool {
    request.metadata().contains_key(FORWARDED_HEADER)
}

/// `message` as the forwarded copy of `original`: marked, with the caller's bearer token.
fn forwarded<T, U>(original: &Request<U>, message: T) -> Request<T> {
    let mut request = Request::new(message);
    if let Some(token) = original.metadata().get("authorization") {
        request
            .metadata_mut()
            .insert("authorization", token.clone());
    }
    request
        .metadata_mut()
        .insert(FORWARDED_HEADER, MetadataValue::from_static("1"));
    request
}

/// What bounds a forwarded unary call besides the caller's own deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Bound {
    /// The forwarding timeout: an owner that has not answered by then is taken for stopped.
    ForwardTimeout,
    /// Nothing: for a call the owner may take longer to answer by design (a write, which it
    /// writes through to the fleet's TSDB with retries). The connection's keepalive still ends
    /// it when the owner stops answering.
    CallerDeadline,
}

/// The member a call is forwarded to: the channel to its listener, and what names it.
#[derive(Debug, Clone)]
pub(crate) struct Owner {
    /// The channel to its listener.
    channel: Channel,
    /// Its member id, for errors.
    member: String,
    /// The `host:port` dialled, for errors.
    address: String,
    /// The fleet's forwarding timeout (see [`Forwarder::timeout`]).
    timeout: Duration,
}

impl Owner {
    /// Its member id.
    pub(crate) fn member(&self) -> &str {
        &self.member
    }

    /// Forwards `message` as the copy of `original` by unary call `call`, within the smaller of
    /// `original`'s `grpc-timeout` and `bound`'s limit, when either is set (sent on as the copy's
    /// `grpc-timeout`, so the owner gives up then too); past it, `DEADLINE_EXCEEDED` naming the
    /// member.
    pub(crate) async fn unary<T, M, R, F>(
        &self,
        bound: Bound,
        original: &Request<T>,
        message: M,
        call: impl FnOnce(Channel, Request<M>) -> F,
    ) -> Result<R, Status>
    where
        F: Future<Output = Result<Response<R>, Status>>,
    {
        let limit = match bound {
            Bound::ForwardTimeout => Some(self.timeout),
            Bound::CallerDeadline => None,
        };
        let mut request = forwarded(original, message);
        let deadline = match (caller_timeout(original), limit) {
            (Some(caller), Some(limit)) => caller.min(limit),
            (Some(deadline), None) | (None, Some(deadline)) => deadline,
            (None, None) => {
                return call(self.channel.clone(), request)
                    .await
                    .map(Response::into_inner)
                    .map_err(|status| self.failed(status));
            }
        };
        request.set_timeout(deadline);
        let started = Instant::now();
        let answer = tokio::time::timeout(deadline, call(self.channel.clone(), request)).await;
        match answer {
            Ok(Ok(response)) => Ok(response.into_inner()),
            // The channel enforces the deadline sent on too, and may notice it first.
            Ok(Err(_)) | Err(_) if started.elapsed() >= deadline => Err(self.expired(deadline)),
            Ok(Err(status)) => Err(self.failed(status)),
            Err(_) => Err(self.expired(deadline)),
        }
    }

    /// [`Owner::unary`] of `original`'s own message, within the forwarding timeout.
    pub(crate) async fn forward<M: Clone, R, F>(
        &self,
        original: &Request<M>,
        call: impl FnOnce(Channel, Request<M>) -> F,
    ) -> Result<R, Status>
    where
        F: Future<Output = Result<Response<R>, Status>>,
    {
        self.unary(
            Bound::ForwardTimeout,
            original,
            original.get_ref().clone(),
            call,
        )
        .await
    }

    /// Opens a stream by forwarding `message` as the copy of `original` with `open`, waiting for
    /// the owner's answer within the forwarding timeout; the stream itself runs as long as it
    /// lasts (the connection's keepalive ends it when the owner stops answering).
    pub(crate) async fn open<T, M, R, F>(
        &self,
        original: &Request<T>,
        message: M,
        open: impl FnOnce(Channel, Request<M>) -> F,
    ) -> Result<Streaming<R>, Status>
    where
        F: Future<Output = Result<Response<Streaming<R>>, Status>>,
    {
        let request = forwarded(original, message);
        match tokio::time::timeout(self.timeout, open(self.channel.clone(), request)).await {
            Ok(Ok(response)) => Ok(response.into_inner()),
            Ok(Err(status)) => Err(self.failed(status)),
            Err(_) => Err(self.expired(self.timeout)),
        }
    }

    /// The call did not end within `deadline`.
    fn expired(&self, deadline: Duration) -> Status {
        Status::deadline_exceeded(format!(
            "member {} at {} did not answer within {}",
            self.member,
            self.address,
            humantime::format_duration(deadline)
        ))
    }

    /// `status`, a failure of a call to this member, naming it when its code is one the
    /// transport fails with (`UNAVAILABLE`, `UNKNOWN`, `CANCELLED`, `DEADLINE_EXCEEDED`) and it
    /// does not name it already. An owner's own answer with one of those codes is named too: a
    /// `Status` does not tell where it was made, and the name says where the call went either way.
    fn failed(&self, status: Status) -> Status {
        let on_the_way = matches!(
            status.code(),
            Code::Unavailable | Code::Unknown | Code::Cancelled | Code::DeadlineExceeded
        );
        if !on_the_way || status.message().contains(&self.address) {
            return status;
        }
        Status::new(
            status.code(),
            format!(
                "member {} at {}: {}",
                self.member,
                self.address,
                status.message()
            ),
        )
    }

    /// A forwarded stream that failed (the owner went away, most often) ends `UNAVAILABLE`
    /// naming the member: the caller opens it again and reaches the new owner.
    fn stream_failed(&self, status: Status) -> Status {
        Status::unavailable(format!(
            "the stream from member {} at {} failed ({:?}: {}); open it again",
            self.member,
            self.address,
            status.code(),
            status.message()
        ))
    }
}

/// The timeout `request`'s caller set (its `grpc-timeout`: digits and a unit, `H`, `M`, `S`,
/// `m`, `u` or `n`), when it set one that parses.
fn caller_timeout<T>(request: &Request<T>) -> Option<Duration> {
    let text = request.metadata().get("grpc-timeout")?.to_str().ok()?;
    let unit = text.chars().last()?;
    let value: u64 = text[..text.len() - unit.len_utf8()].parse().ok()?;
    match unit {
        'H' => Some(Duration::from_secs(value.checked_mul(3600)?)),
        'M' => Some(Duration::from_secs(value.checked_mul(60)?)),
        'S' => Some(Duration::from_secs(value)),
        'm' => Some(Duration::from_millis(value)),
        'u' => Some(Duration::from_micros(value)),
        'n' => Some(Duration::from_nanos(value)),
        _ => None,
    }
}

/// `GetPlan` on the owner; the plan's encoding, as the local answer is.
pub(crate) async fn get_plan(
    owner: &Owner,
    original: &Request<proto::GetPlanRequest>,
    limit: usize,
) -> Result<Bytes, Status> {
    let plan = owner
        .forward(original, |channel, request| async move {
            PlanServiceClient::new(channel)
                .max_decoding_message_size(limit)
                .get_plan(request)
                .await
        })
        .await?;
    Ok(Bytes::from(prost::Message::encode_to_vec(&plan)))
}

/// `GetWorkload` on the owner, which holds the status of the workload's source and the rule of
/// its plan. An owner that cannot be reached makes it `UNAVAILABLE` (as tonic reports the
/// transport's failure), never an answer without the status, which would read as "not pulled".
pub(crate) async fn get_workload(
    owner: &Owner,
    original: &Request<proto::GetWorkloadRequest>,
    limit: usize,
) -> Result<proto::Workload, Status> {
    owner
        .forward(original, |channel, request| async move {
            PlanServiceClient::new(channel)
                .max_decoding_message_size(limit)
                .get_workload(request)
                .await
        })
        .await
}

/// `Forecast` on the owner.
pub(crate) async fn forecast(
    owner: &Owner,
    original: &Request<proto::ForecastRequest>,
    limit: usize,
) -> Result<proto::ForecastResponse, Status> {
    owner
        .forward(original, |channel, request| async move {
            ForecastServiceClient::new(channel)
                .max_decoding_message_size(limit)
                .max_encoding_message_size(limit)
                .forecast(request)
                .await
        })
        .await
}

/// `ReportApplied` on the owner, which plans the workload and serves KEDA from the report.
pub(crate) async fn report_applied(
    owner: &Owner,
    original: &Request<proto::ReportAppliedRequest>,
) -> Result<proto::ReportAppliedResponse, Status> {
    owner
        .forward(original, |channel, request| async move {
            PlanServiceClient::new(channel)
                .report_applied(request)
                .await
        })
        .await
}

/// `WatchPlans` of one workload on its owner.
pub(crate) async fn watch_plan<T>(
    owner: &Owner,
    original: &Request<T>,
    name: &str,
    limit: usize,
) -> Result<PlanStream, Status> {
    let message = proto::WatchPlansRequest {
        workloads: vec![name.to_owned()],
    };
    let stream = owner
        .open(original, message, |channel, request| async move {
            PlanServiceClient::new(channel)
                .max_decoding_message_size(limit)
                .watch_plans(request)
                .await
        })
        .await?;
    let owner = owner.clone();
    Ok(Box::pin(stream.map(move |item| {
        item.map_err(|status| owner.stream_failed(status))
    })))
}

/// Completes when the fleet's view changes; never when the replica runs alone (`None`) or its
/// membership has ended.
pub(crate) async fn fleet_changed(view: &mut Option<watch::Receiver<Arc<FleetView>>>) {
    let changed = match view {
        Some(receiver) => receiver.changed().await.is_ok(),
        None => false,
    };
    if !changed {
        std::future::pending::<()>().await;
    }
}

/// The status ending a stream when one of `placements` (as placed when it opened) has moved.
pub(crate) fn moved(state: &ServingState, placements: &[(Placement, String)]) -> Option<Status> {
    placements.iter().find_map(|(placement, name)| {
        let now = state.workload_placement(name).ok();
        (now.as_ref() != Some(placement)).then(|| {
            Status::unavailable(format!(
                "the owner of workload {name} changed; watch again to reach the new one"
            ))
        })
    })
}

/// A stream about workload `name` forwarded to `owner`, passed through until it ends or the
/// workload's owner changes (then it ends with `UNAVAILABLE`, and the caller opens it again on
/// the new owner); on this replica's shutdown it ends with `UNAVAILABLE` too.
pub(crate) fn until_moved<T: Send + 'static>(
    state: Arc<ServingState>,
    owner: Owner,
    name: String,
    mut stream: Streaming<T>,
) -> Result<ProxiedStream<T>, Status> {
    let placements = [(state.workload_placement(&name)?, name)];
    let mut fleet = state.fleet_view();
    let shutdown = state.shutdown_token().clone();
    let (sender, receiver) = mpsc::channel(4);
    let streams = Arc::clone(&state);
    streams.spawn_stream(async move {
        loop {
            let message = tokio::select! {
                () = streams::ended(&shutdown, &sender) => break,
                () = fleet_changed(&mut fleet) => match moved(&state, &placements) {
                    Some(moved) => Err(moved),
                    None => continue,
                },
                message = stream.message() => match message.transpose() {
                    Some(message) => message.map_err(|status| owner.stream_failed(status)),
                    None => break,
                },
            };
            let failed = message.is_err();
            if sender.send(message).await.is_err() || failed {
                break;
            }
        }
    });
    Ok(Box::pin(ReceiverStream::new(receiver)))
}
