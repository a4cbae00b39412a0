//! KEDA's `externalscaler.ExternalScaler` over [`ServingState`]: the replicas a workload's plan wants
//! now, as a metric KEDA's HPA follows exactly (see [`crate::plan::metric_value`] and
//! docs/decisions.md, "KEDA external scaler").
//!
//! The ScaledObject's trigger metadata names the workload (`workload: checkout`) and may set the
//! HPA's scale-up tolerance it runs with (`scaleUpTolerance: "0"` beside
//! `behavior.scaleUp.tolerance: 0`); the server's `[scaler] hpa_tolerance` is the default.
//! `forecast-only` workloads report and never act: `IsActive` is false and `GetMetrics` fails with
//! `FAILED_PRECONDITION`, which the HPA treats as a missing metric (no scaling on it).

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::{mpsc, watch};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use super::externalscaler::{
    GetMetricSpecResponse, GetMetricsRequest, GetMetricsResponse, IsActiveResponse, MetricSpec,
    MetricValue, ScaledObjectRef, external_scaler_client::ExternalScalerClient,
    external_scaler_server::ExternalScaler,
};
use super::forward::{self, Forwarder, Listener, Owner};
use super::handlers::servable_plan;
use super::streams::{self, StreamSlot, StreamSlots};
use crate::app::{PlanState, ServingState};
use crate::domain::Timestamp;
use crate::plan::{Mode, REPLICA_METRIC_TARGET, hpa_replicas, metric_value};

/// The metric every prescale trigger serves (KEDA prefixes it with the trigger's index).
pub(crate) const METRIC_NAME: &str = "prescale-replicas";

/// How often an open `StreamIsActive` re-reads the plan between plan changes: the plan for now
/// moves with the clock, and a change of activity is pushed at most this late.
const ACTIVITY_RECHECK: Duration = Duration::from_secs(30);

/// Triggers whose last value is remembered. The listener asks for no token, so a client could name
/// any number of ScaledObjects: past this many, the one served longest ago is forgotten (it starts
/// again from the plan, without a compensation, on its next call).
const MAX_TRIGGERS: usize = 10_000;

/// Why a scaler call is refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ScalerError {
    /// The trigger's metadata does not name a workload.
    #[error(
        "the trigger metadata of ScaledObject {scaled_object} has no `workload` key naming a prescale workload"
    )]
    MissingWorkload {
        /// `namespace/name` of the ScaledObject.
        scaled_object: String,
    },
    /// A metadata value is malformed.
    #[error("trigger metadata `{key}`: {reason}")]
    InvalidMetadata {
        /// The metadata key.
        key: &'static str,
        /// Why it is refused.
        reason: String,
    },
    /// The workload reports its plans and is not scaled by anyone.
    #[error(
        "workload {workload:?} is forecast-only: prescale publishes its plans but does not scale it (set mode = \"forecast-and-scale\")"
    )]
    ForecastOnly {
        /// The workload.
        workload: String,
    },
    /// The newest plan does not cover the current time.
    #[error(
        "the plan of workload {workload:?} does not cover {now} (it is stale; see the planner's log)"
    )]
    PlanDoesNotCoverNow {
        /// The workload.
        workload: String,
        /// The server's current time.
        now: Timestamp,
    },
}

/// A ScaledObject's trigger, as the scaler remembers what it served it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct TriggerKey {
    /// The ScaledObject's namespace.
    namespace: String,
    /// The ScaledObject's name.
    name: String,
    /// The workload its trigger names.
    workload: String,
}

/// What the scaler last served a trigger, so that repeated calls for the same plan get the same
/// value and a tolerance compensation starts from the count the HPA reached.
#[derive(Debug, Clone, Copy)]
struct Served {
    /// The replicas the plan wanted.
    desired: u32,
    /// The tolerance compensated for (the trigger's metadata may change).
    tolerance: f64,
    /// The metric value served for them.
    value: u32,
    /// The replicas the HPA runs once it followed `value` (modelled with the HPA's formula).
    hpa_replicas: u32,
    /// When `value` was first served.
    since: Timestamp,
}

/// The `ExternalScaler` service. Cheap to clone: every clone shares the same state.
#[derive(Debug, Clone)]
pub(crate) struct ScalerHandlers {
    /// The application plans are read from.
    state: Arc<ServingState>,
    /// The HPA tolerance compensated for when the trigger does not say (`[scaler] hpa_tolerance`).
    hpa_tolerance: f64,
    /// What each trigger was last served: one entry per ScaledObject polling, at most
    /// [`MAX_TRIGGERS`].
    served: Arc<Mutex<HashMap<TriggerKey, Served>>>,
    /// Open streams (`StreamIsActive`, `StreamMetricSpec`); beyond `max_streams`, `ResourceExhausted`.
    /// One quota for all callers: KEDA's operator is the one client here.
    streams: StreamSlots,
    /// In a fleet, forwards calls about other replicas' workloads to their owners' scalers (the
    /// owner keeps each trigger's `served` memory).
    forwarder: Forwarder,
}

/// The trigger's workload and tolerance, read from its metadata.
#[derive(Debug)]
struct Trigger {
    /// Identifies the trigger in `served`.
    key: TriggerKey,
    /// The HPA tolerance to compensate for.
    tolerance: f64,
}

impl ScalerHandlers {
    pub(crate) fn new(
        state: Arc<ServingState>,
        hpa_tolerance: f64,
        max_streams: usize,
        forwarder: Forwarder,
    ) -> Self {
        Self {
            state,
            hpa_tolerance,
            served: Arc::default(),
            streams: StreamSlots::new(max_streams, max_streams),
            forwarder,
        }
    }

    /// In a fleet, the scaler of the replica that owns `workload`, when that is not this one;
    /// `None` to answer here.
    fn owner<T>(&self, workload: &str, request: &Request<T>) -> Result<Option<Owner>, Status> {
        let placement = self
            .state
            .answering_placement(workload, forward::is_forwarded(request))?;
        self.forwarder.target(placement, request, Listener::Scaler)
    }

    /// Opens a stream on the workload `reference` names: a stream permit and its plan watch.
    fn watch(&self, reference: &ScaledObjectRef) -> Result<Watch, Status> {
        let permit = self.streams.acquire(None)?;
        let workload = self.trigger(reference)?.key.workload;
        let plans = self.state.watch_plan(&workload)?;
        Ok(Watch {
            permit,
            workload,
            plans,
            shutdown: self.state.shutdown_token().clone(),
        })
    }

    /// Reads the trigger's metadata.
    fn trigger(&self, reference: &ScaledObjectRef) -> Result<Trigger, Status> {
        let workload = reference
            .scaler_metadata
            .get("workload")
            .map(|name| name.trim())
            .filter(|name| !name.is_empty())
            .ok_or_else(|| ScalerError::MissingWorkload {
                scaled_object: format!("{}/{}", reference.namespace, reference.name),
            })?;
        let tolerance = match reference.scaler_metadata.get("scaleUpTolerance") {
            None => self.hpa_tolerance,
            Some(text) => parse_tolerance(text)?,
        };
        Ok(Trigger {
            key: TriggerKey {
                namespace: reference.namespace.clone(),
                name: reference.name.clone(),
                workload: workload.to_owned(),
            },
            tolerance,
        })
    }

    /// The workload's mode and the replicas its plan wants now: the executor rule
    /// `min(ceiling, max(planned, reactive))` of [`crate::plan::Plan::executor_target`], where the
    /// planned count is asked for a warm-up ahead.
    fn wanted_now(&self, workload: &str) -> Result<(Mode, u32), Status> {
        let mode = self.state.workload(workload)?.mode();
        let published = servable_plan(&self.state, workload)?;
        let plan = &published.plan;
        let now = self.state.now();
        let reactive = plan.reactive().map_or(0, |reactive| reactive.replicas);
        let replicas = plan.executor_target(now, reactive).ok_or_else(|| {
            ScalerError::PlanDoesNotCoverNow {
                workload: workload.to_owned(),
                now,
            }
        })?;
        Ok((mode, replicas))
    }

    /// Whether KEDA should keep the workload active: it is scaled by prescale and its plan wants
    /// at least one replica now.
    fn active(&self, workload: &str) -> Result<bool, Status> {
        let (mode, replicas) = self.wanted_now(workload)?;
        Ok(mode == Mode::ForecastAndScale && replicas >= 1)
    }

    /// The metric value to serve `trigger` now (see [`Served`] and [`metric_value`]).
    fn metric(&self, trigger: &Trigger) -> Result<u32, Status> {
        let workload = &trigger.key.workload;
        let (mode, desired) = self.wanted_now(workload)?;
        if mode != Mode::ForecastAndScale {
            return Err(ScalerError::ForecastOnly {
                workload: workload.clone(),
            }
            .into());
        }
        let applied = self.state.applied(workload)?;
        let now = self.state.now();
        let mut served = self.served.lock();
        let last = served.get(&trigger.key).copied();
        // An executor's report newer than what was served says what runs now.
        let reported = applied
            .filter(|applied| last.is_none_or(|last| applied.at > last.since))
            .map(|applied| applied.replicas);
        if let Some(last) = last
            && last.desired == desired
            && last.tolerance == trigger.tolerance
            && reported.is_none_or(|replicas| replicas == last.hpa_replicas)
        {
            // The same plan, polled again: the same value, so that a compensation is not undone
            // before the HPA acted on it.
            return Ok(last.value);
        }
        // The replicas running now: the report, otherwise the count the HPA reached by following
        // the last value.
        let current = reported.or(last.map(|last| last.hpa_replicas));
        let value = metric_value(desired, current, trigger.tolerance);
        let hpa = current.map_or(value, |current| {
            hpa_replicas(
                f64::from(value),
                REPLICA_METRIC_TARGET,
                current,
                trigger.tolerance,
            )
        });
        if last.is_none() && served.len() >= MAX_TRIGGERS {
            forget_oldest(&mut served);
        }
        served.insert(
            trigger.key.clone(),
            Served {
                desired,
                tolerance: trigger.tolerance,
                value,
                hpa_replicas: hpa,
                since: now,
            },
        );
        Ok(value)
    }
}

/// What a stream of the scaler follows.
#[derive(Debug)]
struct Watch {
    /// Counts the stream against `max_streams` until dropped.
    permit: StreamSlot,
    /// The workload the trigger names.
    workload: String,
    /// Its plan state; the sender goes away when the workload is deleted.
    plans: watch::Receiver<PlanState>,
    /// Cancelled when the server shuts down.
    shutdown: CancellationToken,
}

/// Removes the trigger whose value was served longest ago.
fn forget_oldest(served: &mut HashMap<TriggerKey, Served>) {
    let oldest = served
        .iter()
        .min_by_key(|(_, served)| served.since)
        .map(|(key, _)| key.clone());
    if let Some(key) = oldest {
        served.remove(&key);
    }
}

/// Parses `scaleUpTolerance`: a fraction in `[0, 1)`, as the HPA's tolerance.
fn parse_tolerance(text: &str) -> Result<f64, ScalerError> {
    let invalid = |reason: String| ScalerError::InvalidMetadata {
        key: "scaleUpTolerance",
        reason,
    };
    let tolerance: f64 = text
        .trim()
        .parse()
        .map_err(|error| invalid(format!("{text:?} is not a number: {error}")))?;
    if (0.0..1.0).contains(&tolerance) {
        Ok(tolerance)
    } else {
        Err(invalid(format!("{tolerance} is outside [0, 1)")))
    }
}

/// The one metric every trigger has: the replicas, against a target of one per replica.
fn metric_spec() -> GetMetricSpecResponse {
    GetMetricSpecResponse {
        metric_specs: vec![MetricSpec {
            metric_name: METRIC_NAME.to_owned(),
            // KEDA before 2.17 reads the integer, later ones the float when it is set.
            target_size: REPLICA_METRIC_TARGET as i64,
            target_size_float: REPLICA_METRIC_TARGET,
        }],
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl ExternalScaler for ScalerHandlers {
    async fn is_active(
        &self,
        request: Request<ScaledObjectRef>,
    ) -> Result<Response<IsActiveResponse>, Status> {
        let trigger = self.trigger(request.get_ref())?;
        if let Some(owner) = self.owner(&trigger.key.workload, &request)? {
            return owner
                .forward(&request, |channel, message| async move {
                    ExternalScalerClient::new(channel).is_active(message).await
                })
                .await
                .map(Response::new);
        }
        let result = self.active(&trigger.key.workload)?;
        Ok(Response::new(IsActiveResponse { result }))
    }

    type StreamIsActiveStream = BoxStream<IsActiveResponse>;

    /// Sends the activity at once (once the first plan is ready), again on every new plan, and
    /// when the clock moves the plan for now across zero; ends with `UNAVAILABLE` on shutdown (KEDA
    /// opens it again), and when the workload is deleted.
    async fn stream_is_active(
        &self,
        request: Request<ScaledObjectRef>,
    ) -> Result<Response<Self::StreamIsActiveStream>, Status> {
        let workload = self.trigger(request.get_ref())?.key.workload;
        if let Some(owner) = self.owner(&workload, &request)? {
            let stream = owner
                .open(
                    &request,
                    request.get_ref().clone(),
                    |channel, message| async move {
                        ExternalScalerClient::new(channel)
                            .stream_is_active(message)
                            .await
                    },
                )
                .await?;
            let proxied = forward::until_moved(Arc::clone(&self.state), owner, workload, stream)?;
            return Ok(Response::new(proxied));
        }
        let Watch {
            permit,
            workload,
            mut plans,
            shutdown,
        } = self.watch(request.get_ref())?;
        let (sender, receiver) = mpsc::channel(4);
        let handlers = self.clone();
        self.state.spawn_stream(async move {
            let _permit = permit;
            let first_recheck = tokio::time::Instant::now() + ACTIVITY_RECHECK;
            let mut recheck = tokio::time::interval_at(first_recheck, ACTIVITY_RECHECK);
            let mut last_sent = None;
            // The first pass reads the plan as it is now, before any change.
            plans.mark_changed();
            loop {
                let plan_changed = tokio::select! {
                    () = streams::ended(&shutdown, &sender) => break,
                    changed = plans.changed() => match changed {
                        Ok(()) => true,
                        Err(_deleted) => break,
                    },
                    _ = recheck.tick() => false,
                };
                if !plan_is_ready(&plans) {
                    continue;
                }
                let message = handlers.active(&workload);
                if let Ok(active) = &message
                    && !plan_changed
                    && last_sent == Some(*active)
                {
                    continue;
                }
                last_sent = message.as_ref().ok().copied();
                let message = message.map(|result| IsActiveResponse { result });
                if sender.send(message).await.is_err() {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
    }

    async fn get_metric_spec(
        &self,
        request: Request<ScaledObjectRef>,
    ) -> Result<Response<GetMetricSpecResponse>, Status> {
        // A spec for an unknown workload would make a ScaledObject that never scales: refuse it.
        let trigger = self.trigger(request.get_ref())?;
        self.state.workload(&trigger.key.workload)?;
        Ok(Response::new(metric_spec()))
    }

    async fn get_metrics(
        &self,
        request: Request<GetMetricsRequest>,
    ) -> Result<Response<GetMetricsResponse>, Status> {
        let reference = request
            .get_ref()
            .scaled_object_ref
            .clone()
            .unwrap_or_default();
        let trigger = self.trigger(&reference)?;
        if let Some(owner) = self.owner(&trigger.key.workload, &request)? {
            return owner
                .forward(&request, |channel, message| async move {
                    ExternalScalerClient::new(channel)
                        .get_metrics(message)
                        .await
                })
                .await
                .map(Response::new);
        }
        let request = request.into_inner();
        let value = self.metric(&trigger)?;
        let metric_name = if request.metric_name.is_empty() {
            METRIC_NAME.to_owned()
        } else {
            request.metric_name
        };
        Ok(Response::new(GetMetricsResponse {
            metric_values: vec![MetricValue {
                metric_name,
                // KEDA before 2.17 reads the integer, later ones the float when it is set.
                metric_value: i64::from(value),
                metric_value_float: f64::from(value),
            }],
        }))
    }

    type StreamMetricSpecStream = BoxStream<GetMetricSpecResponse>;

    /// The spec never changes (a target of one per replica): it is sent once, as the protocol
    /// asks, and the stream stays open until the workload's deletion, or until shutdown, when it
    /// ends with `UNAVAILABLE` (KEDA opens it again), so KEDA keeps its cached spec.
    async fn stream_metric_spec(
        &self,
        request: Request<ScaledObjectRef>,
    ) -> Result<Response<Self::StreamMetricSpecStream>, Status> {
        let Watch {
            permit,
            mut plans,
            shutdown,
            ..
        } = self.watch(request.get_ref())?;
        let (sender, receiver) = mpsc::channel(1);
        sender
            .send(Ok(metric_spec()))
            .await
            .expect("invariant: the receiver is held here and the channel has room");
        self.state.spawn_stream(async move {
            let _permit = permit;
            loop {
                tokio::select! {
                    () = streams::ended(&shutdown, &sender) => break,
                    changed = plans.changed() => if changed.is_err() { break },
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
    }
}

/// Whether the watched workload has a plan to read (not still computing its first).
fn plan_is_ready(plans: &watch::Receiver<PlanState>) -> bool {
    !matches!(
        &*plans.borrow(),
        PlanState::Pending | PlanState::Failed { last: None, .. }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_trigger_served_longest_ago_is_forgotten_first() {
        let key = |name: &str| TriggerKey {
            namespace: "shop".to_owned(),
            name: name.to_owned(),
            workload: "checkout".to_owned(),
        };
        let served = |since_ms: i64| Served {
            desired: 3,
            tolerance: 0.1,
            value: 3,
            hpa_replicas: 3,
            since: Timestamp::from_millis(since_ms),
        };
        let mut map = HashMap::from([
            (key("new"), served(2_000)),
            (key("old"), served(1_000)),
            (key("newer"), served(3_000)),
        ]);
        forget_oldest(&mut map);
        assert!(!map.contains_key(&key("old")));
        assert_eq!(map.len(), 2);
    }

    #[test]
    fn scale_up_tolerance_is_a_fraction_below_one() {
        assert_eq!(parse_tolerance(" 0 ").unwrap(), 0.0);
        assert_eq!(parse_tolerance("0.05").unwrap(), 0.05);
        for bad in ["1", "-0.1", "ten percent", "NaN"] {
            assert!(parse_tolerance(bad).is_err(), "{bad}");
        }
    }
}
