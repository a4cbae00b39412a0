//! Fleet mode: any replica answers anything. A call about work another replica owns (`GetPlan`,
//! `GetWorkload`, `Forecast`, `WatchPlans`, `ReportApplied`, the KEDA scaler's `IsActive`,
//! `StreamIsActive` and `GetMetrics`) is forwarded to the owner over a pooled channel, marked with
//! [`FORWARDED_HEADER`] and carrying the caller's bearer token. A marked call that reaches a
//! replica which does not own the work (the members changed while it travelled) is answered
//! `UNAVAILABLE`, never forwarded again, so no call loops. Design: docs/decisions.md, "Fleet mode:
//! replicas coordinated through etcd".

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use prost::bytes::Bytes;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::metadata::MetadataValue;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::{Request, Status};

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

/// One lazily connected channel per member address, shared by every handler.
#[derive(Debug, Clone, Default)]
pub(crate) struct Forwarder {
    /// Channels by member id and `host:port`; a channel reconnects by itself after its peer
    /// restarts.
    channels: Arc<parking_lot::Mutex<HashMap<(String, String), Channel>>>,
    /// TLS to the listeners this forwarder dials (the members' APIs, or their KEDA scalers),
    /// verifying their certificates with the fleet's CA (`[fleet] peer_ca_file`); plaintext when
    /// `None`.
    tls: Option<ClientTlsConfig>,
}

impl Forwarder {
    /// Forwards over `tls` when given, else in plaintext.
    pub(crate) fn new(tls: Option<ClientTlsConfig>) -> Self {
        Self {
            channels: Arc::default(),
            tls,
        }
    }

    /// Forwards to the members' APIs, over TLS trusting the certificates `peer_ca` (PEM) signed
    /// when it is given (see [`ServerOptions::peer_ca`](super::ServerOptions::peer_ca)).
    pub(crate) fn to_apis(peer_ca: Option<&[u8]>) -> Self {
        Self::new(peer_ca.map(verifying))
    }

    /// Where a call placed at `placement` goes: `None` to answer it here, or the owner's channel.
    pub(crate) fn target<T>(
        &self,
        placement: Placement,
        request: &Request<T>,
        listener: Listener,
    ) -> Result<Option<Channel>, Status> {
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
                self.channel(&member.id, &address).map(Some)
            }
        }
    }

    /// The channel to member `member`'s listener at `address` (connected on first use; a failure
    /// to connect names both).
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
            .connect_timeout(Duration::from_secs(2));
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
pub(crate) fn forwarded<T, U>(original: &Request<U>, message: T) -> Request<T> {
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

/// `GetPlan` on the owner; the plan's encoding, as the local answer is.
pub(crate) async fn get_plan(
    channel: Channel,
    original: &Request<proto::GetPlanRequest>,
    limit: usize,
) -> Result<Bytes, Status> {
    let plan = PlanServiceClient::new(channel)
        .max_decoding_message_size(limit)
        .get_plan(forwarded(original, original.get_ref().clone()))
        .await?
        .into_inner();
    Ok(Bytes::from(prost::Message::encode_to_vec(&plan)))
}

/// `GetWorkload` on the owner, which holds the status of the workload's source and the rule of
/// its plan. An owner that cannot be reached makes it `UNAVAILABLE` (as tonic reports the
/// transport's failure), never an answer without the status, which would read as "not pulled".
pub(crate) async fn get_workload(
    channel: Channel,
    original: &Request<proto::GetWorkloadRequest>,
    limit: usize,
) -> Result<proto::Workload, Status> {
    Ok(PlanServiceClient::new(channel)
        .max_decoding_message_size(limit)
        .get_workload(forwarded(original, original.get_ref().clone()))
        .await?
        .into_inner())
}

/// `Forecast` on the owner.
pub(crate) async fn forecast(
    channel: Channel,
    original: &Request<proto::ForecastRequest>,
    limit: usize,
) -> Result<proto::ForecastResponse, Status> {
    Ok(ForecastServiceClient::new(channel)
        .max_decoding_message_size(limit)
        .max_encoding_message_size(limit)
        .forecast(forwarded(original, original.get_ref().clone()))
        .await?
        .into_inner())
}

/// `ReportApplied` on the owner, which plans the workload and serves KEDA from the report.
pub(crate) async fn report_applied(
    channel: Channel,
    original: &Request<proto::ReportAppliedRequest>,
) -> Result<proto::ReportAppliedResponse, Status> {
    Ok(PlanServiceClient::new(channel)
        .report_applied(forwarded(original, original.get_ref().clone()))
        .await?
        .into_inner())
}

/// `WatchPlans` of one workload on its owner.
pub(crate) async fn watch_plan<T>(
    channel: Channel,
    original: &Request<T>,
    name: &str,
    limit: usize,
) -> Result<PlanStream, Status> {
    let message = proto::WatchPlansRequest {
        workloads: vec![name.to_owned()],
    };
    let stream = PlanServiceClient::new(channel)
        .max_decoding_message_size(limit)
        .watch_plans(forwarded(original, message))
        .await?
        .into_inner();
    Ok(Box::pin(
        stream.map(|item| item.map_err(owner_stream_failed)),
    ))
}

/// A proxied stream that failed (the owner went away, most often) ends `UNAVAILABLE`: the caller
/// opens it again and reaches the new owner.
fn owner_stream_failed(status: Status) -> Status {
    Status::unavailable(format!(
        "the owner's stream failed ({:?}: {}); open it again",
        status.code(),
        status.message()
    ))
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

/// A forwarded stream about workload `name`, passed through until it ends or the workload's owner
/// changes (then it ends with `UNAVAILABLE`, and the caller opens it again on the new owner); on
/// this replica's shutdown it ends with `UNAVAILABLE` too.
pub(crate) fn until_moved<T: Send + 'static>(
    state: Arc<ServingState>,
    name: String,
    mut stream: tonic::Streaming<T>,
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
                    Some(message) => message.map_err(owner_stream_failed),
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
