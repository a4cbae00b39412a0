//! `WatchPlans`: one stream of the plans of several workloads, each from where it is answered (this
//! replica's planner, or in a fleet its owner's, forwarded). In a fleet:
//!
//! - **Read-only.** When this replica turns read-only (it has lost etcd), and again when it leaves
//!   read-only, the stream sends the current plan of each workload answered here once more, with
//!   `read_only` as it now is: an executor knows at once that the plans it follows are no longer
//!   replanned, and when they are again. (A forwarded workload's owner does the same on its stream.)
//! - **Owners moving.** The stream ends with `UNAVAILABLE` ("the owner of workload ... changed")
//!   once a watched workload's owner differs from the one it had at open for [`SETTLE`]: the
//!   caller watches again and reaches the new owner. A member registering again (a new lease, as
//!   after an etcd outage) is the same owner, and members missing for a moment while they register
//!   again move nothing.
//! - **Unreachable owners.** A `Plan` carries no error, so a workload whose owner cannot be reached
//!   does not fail the whole call: its part is opened again every [`RETRY_EVERY`] (each time the
//!   owner sends its current plan again) while the other workloads' plans flow, and ends the
//!   stream with `UNAVAILABLE` only once the owner has not been reached for [`UNREACHABLE_FOR`].
//!   An owner that died is replaced well before that (its lease expires), and the stream ends as
//!   for any move.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{StreamExt, StreamMap};
use tonic::{Code, Request, Status};

use super::convert;
use super::forward::{self, Owner};
use super::handlers::{PlanStream, servable_plan};
use super::proto;
use super::streams::{self, StreamSlot};
use crate::app::{Placement, PublishedPlan, ServingState};

/// How long a watched workload's owner must differ from the one at open before the stream ends.
const SETTLE: Duration = Duration::from_secs(2);

/// How often the part of an unreachable owner is opened again.
const RETRY_EVERY: Duration = Duration::from_millis(500);

/// How long an owner may stay unreachable before its part ends the stream (three default leases).
const UNREACHABLE_FOR: Duration = Duration::from_secs(30);

type PlanSender = mpsc::Sender<Result<proto::Plan, Status>>;

/// One watched workload.
#[derive(Debug)]
pub(super) struct Watched {
    /// Its name.
    pub(super) name: String,
    /// Where it was placed when the stream opened.
    pub(super) placement: Placement,
    /// Whether its plans come from this replica's planner (not forwarded from its owner).
    pub(super) local: bool,
}

/// `plan` as this replica sends it: marked `read_only` while it serves read-only.
pub(super) fn plan_message(plan: &PublishedPlan, read_only: bool) -> proto::Plan {
    let mut message = convert::plan_message(plan);
    message.read_only = read_only;
    message
}

/// The `WatchPlans` stream of `watched`, whose plans `plans` carries by workload name, holding its
/// stream slot `slot` until it ends.
pub(super) fn serve(
    state: Arc<ServingState>,
    slot: StreamSlot,
    plans: StreamMap<String, PlanStream>,
    watched: Vec<Watched>,
) -> PlanStream {
    let (sender, receiver) = mpsc::channel(4);
    let streams = Arc::clone(&state);
    streams.spawn_stream(async move {
        let _slot = slot;
        run(&state, plans, &watched, &sender).await;
    });
    Box::pin(ReceiverStream::new(receiver))
}

async fn run(
    state: &ServingState,
    mut plans: StreamMap<String, PlanStream>,
    watched: &[Watched],
    sender: &PlanSender,
) {
    let shutdown = state.shutdown_token().clone();
    let mut fleet = state.fleet_view();
    let placements: Vec<(Placement, String)> = watched
        .iter()
        .map(|workload| (workload.placement.clone(), workload.name.clone()))
        .collect();
    let mut read_only = state.fleet_read_only();
    // Since when an owner has differed from the one at open, while one does.
    let mut moved_since: Option<Instant> = None;
    loop {
        let next = tokio::select! {
            () = streams::ended(&shutdown, sender) => return,
            () = forward::fleet_changed(&mut fleet) => {
                if state.fleet_read_only() != read_only {
                    read_only = !read_only;
                    if !send_again(state, watched, read_only, sender).await {
                        return;
                    }
                }
                moved_since = forward::moved(state, &placements)
                    .map(|_| moved_since.unwrap_or_else(Instant::now));
                continue;
            }
            () = settled(moved_since) => {
                if let Some(moved) = forward::moved(state, &placements) {
                    let _ = sender.send(Err(moved)).await;
                    return;
                }
                moved_since = None;
                continue;
            }
            next = plans.next() => next,
        };
        // Every watched workload was deleted.
        let Some((_, message)) = next else { return };
        let failed = message.is_err();
        if sender.send(message).await.is_err() || failed {
            return;
        }
    }
}

/// Completes [`SETTLE`] after `since`; never without one.
async fn settled(since: Option<Instant>) {
    match since {
        Some(since) => tokio::time::sleep_until(since + SETTLE).await,
        None => std::future::pending().await,
    }
}

/// Sends the current plan of each workload answered here again, marked `read_only`; `false` once
/// the client has gone.
async fn send_again(
    state: &ServingState,
    watched: &[Watched],
    read_only: bool,
    sender: &PlanSender,
) -> bool {
    for workload in watched.iter().filter(|workload| workload.local) {
        // One with no plan yet has none to send again; its first comes on its own stream.
        let Ok(plan) = servable_plan(state, &workload.name) else {
            continue;
        };
        if sender
            .send(Ok(plan_message(&plan, read_only)))
            .await
            .is_err()
        {
            return false;
        }
    }
    true
}

/// The plans of workload `name` from its owner `owner` (`WatchPlans` forwarded with
/// `original`'s metadata), opened again while the owner cannot be reached (see the module's doc).
pub(super) fn from_owner<T>(
    owner: Owner,
    original: &Request<T>,
    name: &str,
    limit: usize,
) -> PlanStream {
    let mut caller = Request::new(());
    *caller.metadata_mut() = original.metadata().clone();
    let name = name.to_owned();
    let (sender, receiver) = mpsc::channel(4);
    tokio::spawn(async move {
        let mut unreachable_since: Option<Instant> = None;
        loop {
            let failure = tokio::select! {
                () = sender.closed() => return,
                failure = pass_on(&owner, &caller, &name, limit, &sender, &mut unreachable_since) => failure,
            };
            let Some(failure) = failure else { return };
            let since = *unreachable_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= UNREACHABLE_FOR {
                let _ = sender
                    .send(Err(Status::unavailable(format!(
                        "the owner of workload {name} has not been reached for {} ({}); watch again",
                        humantime::format_duration(UNREACHABLE_FOR),
                        failure.message()
                    ))))
                    .await;
                return;
            }
            tokio::select! {
                () = sender.closed() => return,
                () = tokio::time::sleep(RETRY_EVERY) => {}
            }
        }
    });
    Box::pin(ReceiverStream::new(receiver))
}

/// Opens the owner's stream of workload `name` and passes its plans on to `sender` (each one
/// clears `unreachable_since`). Returns the failure to open it again after; `None` when it ended,
/// the client went away, or the owner refused it for good (that status passed on).
async fn pass_on(
    owner: &Owner,
    caller: &Request<()>,
    name: &str,
    limit: usize,
    sender: &PlanSender,
    unreachable_since: &mut Option<Instant>,
) -> Option<Status> {
    let mut plans = match forward::watch_plan(owner, caller, name, limit).await {
        Ok(plans) => plans,
        Err(status) if transient(status.code()) => return Some(status),
        Err(status) => {
            let _ = sender.send(Err(status)).await;
            return None;
        }
    };
    while let Some(message) = plans.next().await {
        // The owner's stream failing mid-way: it went away, most often.
        let plan = match message {
            Ok(plan) => plan,
            Err(status) => return Some(status),
        };
        *unreachable_since = None;
        if sender.send(Ok(plan)).await.is_err() {
            return None;
        }
    }
    None
}

/// Whether a failure to open an owner's stream may pass when opened again (the owner is away, or
/// its members are changing), unlike a refusal of the call itself.
fn transient(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable | Code::Unknown | Code::Cancelled | Code::DeadlineExceeded
    )
}
