//! Fleet mode: pushed samples go to their owners. A `Push` message or a `Write` reaching any
//! replica is split by series: the owner's share of each other member is sent to it as one
//! `Write` marked [`FORWARDED_HEADER`] (with the caller's bearer token), this replica's own share
//! is stored here (written through to the fleet's TSDB first), and the message is acknowledged
//! only once every part was. A marked write that holds a series this replica does not own is
//! refused `UNAVAILABLE` (the members changed while it travelled), never forwarded again, so no
//! write loops. A part that fails fails the message; parts already stored stay stored, and a
//! client that sends the message again rewrites them with the same values. Design:
//! docs/decisions.md, "Fleet mode: pushed samples and events".

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::task::JoinSet;
use tonic::{Request, Status};

use super::convert;
use super::forward::{Bound, Forwarder, Listener, Owner};
use super::proto;
use super::proto::ingest_service_client::IngestServiceClient;
use super::remote_write;
use crate::app::ServingState;

/// Stores `message` where its series are owned; returns the samples accepted. `original` carries
/// the caller's metadata (its token, and the marker of a forwarded call).
pub(crate) async fn write_routed<T>(
    state: &Arc<ServingState>,
    forwarder: &Forwarder,
    original: &Request<T>,
    message: proto::WriteRequest,
    limit: usize,
) -> Result<usize, Status> {
    let (local, remote) = split(state, forwarder, original, message)?;
    let mut owners = JoinSet::new();
    for (_, (owner, series)) in remote {
        // The caller's metadata, without its message, for each part sent on.
        let mut caller = Request::new(());
        *caller.metadata_mut() = original.metadata().clone();
        owners.spawn(async move {
            owner
                .unary(
                    Bound::CallerDeadline,
                    &caller,
                    proto::WriteRequest { series },
                    |channel, request| async move {
                        IngestServiceClient::new(channel)
                            .max_encoding_message_size(limit)
                            .write(request)
                            .await
                    },
                )
                .await
                .map(|response| response.accepted as usize)
        });
    }
    let mut accepted = 0;
    let mut failure = None;
    // An empty message is refused here, as a write with nothing in it.
    if !local.is_empty() || owners.is_empty() {
        let batch = convert::write_batch(proto::WriteRequest { series: local })?;
        match state.ingest_owned(batch, remote_write::encode).await {
            Ok(stored) => accepted += stored,
            Err(error) => failure = Some(Status::from(error)),
        }
    }
    while let Some(joined) = owners.join_next().await {
        match joined {
            Ok(Ok(stored)) => accepted += stored,
            Ok(Err(status)) => {
                failure.get_or_insert(owner_failed(status));
            }
            Err(error) => {
                failure.get_or_insert(Status::internal(format!("worker failed: {error}")));
            }
        }
    }
    match failure {
        Some(status) => Err(status),
        None => Ok(accepted),
    }
}

/// The series parts of `message` stored here, and those for each other owner (by member id) with
/// the owner. Alone, everything is stored here.
#[allow(clippy::type_complexity)]
fn split<T>(
    state: &ServingState,
    forwarder: &Forwarder,
    original: &Request<T>,
    message: proto::WriteRequest,
) -> Result<
    (
        Vec<proto::SeriesSamples>,
        BTreeMap<String, (Owner, Vec<proto::SeriesSamples>)>,
    ),
    Status,
> {
    if state.fleet_view().is_none() {
        return Ok((message.series, BTreeMap::new()));
    }
    // Every part is checked before any is sent, so a malformed message stores nothing anywhere.
    convert::write_batch(message.clone())?;
    let mut local = Vec::new();
    let mut remote: BTreeMap<String, (Owner, Vec<proto::SeriesSamples>)> = BTreeMap::new();
    for part in message.series {
        let series = convert::series_id(part.series.as_ref())?;
        match forwarder.target(state.write_placement(&series), original, Listener::Api)? {
            Some(owner) => {
                remote
                    .entry(owner.member().to_owned())
                    .or_insert_with(|| (owner, Vec::new()))
                    .1
                    .push(part);
            }
            None => local.push(part),
        }
    }
    Ok((local, remote))
}

/// An owner's refusal, as the caller sees it: its code, naming that it came from the owner.
fn owner_failed(status: Status) -> Status {
    Status::new(
        status.code(),
        format!(
            "the owner of some series refused them: {}",
            status.message()
        ),
    )
}
