//! The gRPC handlers: each one is proto -> domain -> a use case of [`ServingState`] -> proto. Anything that
//! blocks (store writes, fits) runs on the blocking pool.

use std::collections::{BTreeMap, HashMap};
use std::pin::Pin;
use std::sync::Arc;

use prost::bytes::Bytes;

use std::time::Duration;

use tokio_stream::wrappers::WatchStream;
use tokio_stream::{Stream, StreamExt, StreamMap};
use tonic::{Code, Request, Response, Status, Streaming};

use super::ServerOptions;
use super::convert;
use super::error::invalid;
use super::fleet_status;
use super::forward::{self, Forwarder, Listener, Owner};
use super::forward_push;
use super::plan_watch;
use super::proto;
use super::streams::{StreamSlot, StreamSlots};
use crate::app::{AppError, Applied, ModelChoice, PlanState, PublishedPlan, ServingState};
use crate::domain::{SeriesId, Timestamp};

/// The handlers of every prescale service, over one application state.
#[derive(Debug, Clone)]
pub(crate) struct Handlers {
    /// The application every call is answered from.
    state: Arc<ServingState>,
    /// The encoded `Plan` message of each workload's latest plan, keyed by its revision and time:
    /// `GetPlan` is the hot path executors poll (see [`super::plan_route`]).
    encoded: Arc<parking_lot::Mutex<HashMap<String, EncodedPlan>>>,
    /// Slots of the long-lived streams (WatchPlans, Push), server-wide and per client.
    streams: StreamSlots,
    /// How long a `Push` may wait for its next message before it is closed.
    stream_idle_timeout: Duration,
    /// In a fleet, forwards calls about other replicas' work to their owners.
    forwarder: Forwarder,
    /// Largest message, for the forwarded calls' clients as for the services.
    max_message_bytes: usize,
}

/// A plan's `Plan` message as bytes, with what identifies the plan it encodes.
#[derive(Debug)]
struct EncodedPlan {
    /// Revision of the plan encoded.
    revision: u64,
    /// When that plan was computed; with the revision, identifies the plan encoded.
    generated_at_ms: i64,
    /// The encoded message, shared by every response that sends it.
    bytes: Bytes,
}

impl Handlers {
    pub(crate) fn new(state: Arc<ServingState>, options: &ServerOptions) -> Self {
        Self {
            state,
            encoded: Arc::default(),
            streams: StreamSlots::new(options.max_streams, options.max_streams_per_client),
            stream_idle_timeout: options.stream_idle_timeout,
            forwarder: Forwarder::to_apis(options.peer_ca.as_deref(), options.forward_timeout),
            max_message_bytes: options.max_message_bytes,
        }
    }

    /// The encoded latest plan of the workload `request` names: this replica's, or in a fleet its
    /// owner's.
    pub(crate) async fn plan_bytes(
        &self,
        request: Request<proto::GetPlanRequest>,
    ) -> Result<Bytes, Status> {
        let name = convert::workload_name("workload", &request.get_ref().workload)?;
        match self.owner(name, &request)? {
            None if self.state.fleet_read_only() => {
                Ok(fleet_status::marked_read_only(self.encoded_plan(name)?))
            }
            None => self.encoded_plan(name),
            Some(owner) => forward::get_plan(&owner, &request, self.max_message_bytes).await,
        }
    }

    /// The stream of workload `name`'s plans from this replica's planner.
    fn local_plans(&self, name: &str) -> Result<PlanStream, Status> {
        let state = Arc::clone(&self.state);
        let plans =
            WatchStream::new(self.state.watch_plan(name)?).filter_map(move |plan| match plan {
                PlanState::Ready(plan) => {
                    Some(Ok(plan_watch::plan_message(&plan, state.fleet_read_only())))
                }
                PlanState::Pending | PlanState::Failed { .. } => None,
            });
        Ok(Box::pin(plans))
    }

    /// In a fleet, the API of the replica that answers for workload `name`, when that
    /// is not this one; `None` to answer here. The one routing of every call about a workload
    /// (`GetPlan`, `WatchPlans`, `GetWorkload`, `ReportApplied`), so they all answer from the same
    /// replica ([`ServingState::answering_placement`]): its owner; `UNAVAILABLE` naming why while
    /// none answers (the owner is loading the workload's pushed history after a handover, or no
    /// member is active); and a forwarded call that finds another owner in this replica's view is
    /// answered here if this replica holds a fresh plan of the workload (the members are changing
    /// and the views differ for a moment).
    fn owner<T>(&self, name: &str, request: &Request<T>) -> Result<Option<Owner>, Status> {
        let placement = self
            .state
            .answering_placement(name, forward::is_forwarded(request))?;
        self.forwarder.target(placement, request, Listener::Api)
    }

    /// The latest plan of workload `name` that can be served (see [`servable_plan`]).
    fn servable_plan(&self, name: &str) -> Result<Arc<PublishedPlan>, Status> {
        servable_plan(&self.state, name)
    }

    /// The encoded `Plan` message of workload `name`'s latest plan, encoded once per revision.
    pub(crate) fn encoded_plan(&self, name: &str) -> Result<Bytes, Status> {
        let plan = self.servable_plan(name)?;
        let generated_at_ms = plan.generated_at.as_millis();
        if let Some(cached) = self.encoded.lock().get(name)
            && cached.revision == plan.revision
            && cached.generated_at_ms == generated_at_ms
        {
            return Ok(cached.bytes.clone());
        }
        let bytes = Bytes::from(prost::Message::encode_to_vec(&convert::plan_message(&plan)));
        self.encoded.lock().insert(
            name.to_owned(),
            EncodedPlan {
                revision: plan.revision,
                generated_at_ms,
                bytes: bytes.clone(),
            },
        );
        Ok(bytes)
    }

    /// Stores a pushed `message` where its series are owned (see [`forward_push`]); `caller`
    /// carries the call's metadata.
    async fn write_routed(
        &self,
        caller: &Request<()>,
        message: proto::WriteRequest,
    ) -> Result<usize, Status> {
        forward_push::write_routed(
            &self.state,
            &self.forwarder,
            caller,
            message,
            self.max_message_bytes,
        )
        .await
    }

    /// A stream slot for the caller of `request`.
    fn stream_slot<T>(&self, request: &Request<T>) -> Result<StreamSlot, Status> {
        self.streams
            .acquire(request.remote_addr().map(|address| address.ip()))
    }

    /// Runs blocking, non-CPU-bound `work` (store and file writes) off the async threads.
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&ServingState) -> Result<T, AppError> + Send + 'static,
    ) -> Result<T, Status> {
        let state = Arc::clone(&self.state);
        tokio::task::spawn_blocking(move || work(&state))
            .await
            .map_err(|error| Status::internal(format!("worker failed: {error}")))?
            .map_err(Status::from)
    }
}

/// tonic reports a message over the size limit as `OutOfRange`; the API promises
/// `ResourceExhausted` (see [`super::layers`] for unary calls).
fn oversized(status: Status) -> Status {
    if status.code() == Code::OutOfRange {
        Status::resource_exhausted(status.message().to_owned())
    } else {
        status
    }
}

/// The latest plan of workload `name` that can be served: the newest, or the last good one while
/// refreshes fail.
pub(super) fn servable_plan(
    state: &ServingState,
    name: &str,
) -> Result<Arc<PublishedPlan>, Status> {
    match state.plan(name)? {
        PlanState::Ready(plan)
        | PlanState::Failed {
            last: Some(plan), ..
        } => Ok(plan),
        PlanState::Pending => Err(AppError::PlanPending {
            workload: name.to_owned(),
        }
        .into()),
        PlanState::Failed { error, last: None } => {
            Err(super::error::plan_failure_status(name, &error))
        }
    }
}

#[tonic::async_trait]
impl proto::ingest_service_server::IngestService for Handlers {
    async fn push(
        &self,
        request: Request<Streaming<proto::WriteRequest>>,
    ) -> Result<Response<proto::WriteResponse>, Status> {
        let _slot = self.stream_slot(&request)?;
        let (metadata, extensions, mut stream) = request.into_parts();
        // The caller's metadata (token, forwarded marker) for the parts sent to other owners.
        let caller = Request::from_parts(metadata, extensions, ());
        let mut reply = proto::WriteResponse::default();
        let idle = self.stream_idle_timeout;
        while let Some(message) = tokio::time::timeout(idle, stream.next())
            .await
            .map_err(|_| {
                Status::deadline_exceeded(format!(
                    "no message for {}: the stream is closed (server.stream_idle_timeout); \
                     what was acknowledged before stays stored",
                    humantime::format_duration(idle)
                ))
            })?
        {
            let accepted = self
                .write_routed(&caller, message.map_err(oversized)?)
                .await?;
            reply.accepted += accepted as u64;
            reply.batches += 1;
        }
        Ok(Response::new(reply))
    }

    async fn write(
        &self,
        request: Request<proto::WriteRequest>,
    ) -> Result<Response<proto::WriteResponse>, Status> {
        let (metadata, extensions, message) = request.into_parts();
        let caller = Request::from_parts(metadata, extensions, ());
        let accepted = self.write_routed(&caller, message).await?;
        Ok(Response::new(proto::WriteResponse {
            accepted: accepted as u64,
            batches: 1,
        }))
    }
}

#[tonic::async_trait]
impl proto::forecast_service_server::ForecastService for Handlers {
    async fn forecast(
        &self,
        request: Request<proto::ForecastRequest>,
    ) -> Result<Response<proto::ForecastResponse>, Status> {
        if let Some(selector) = &request.get_ref().series
            && let Ok(exact) = SeriesId::with_labels(
                &selector.name,
                selector
                    .labels
                    .iter()
                    .map(|(key, value)| (key.clone(), value.clone()))
                    .collect::<BTreeMap<String, String>>(),
            )
            && let Some(owner) =
                self.forwarder
                    .target(self.state.placement(&exact), &request, Listener::Api)?
        {
            return forward::forecast(&owner, &request, self.max_message_bytes)
                .await
                .map(Response::new);
        }
        let request = request.into_inner();
        let selector = request
            .series
            .as_ref()
            .ok_or_else(|| invalid("series is required"))?;
        let labels = selector
            .labels
            .iter()
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect();
        let series = self.state.resolve_series(&selector.name, &labels)?;
        let levels = convert::levels(&request.levels)?;
        let choice = if request.model.trim().is_empty() {
            ModelChoice::Ensemble
        } else {
            request.model.parse::<ModelChoice>()?
        };
        let served = self
            .state
            .forecast(series, request.horizon, levels, choice)
            .await?;
        Ok(Response::new(convert::forecast_response(&served)))
    }
}

pub(crate) type PlanStream = Pin<Box<dyn Stream<Item = Result<proto::Plan, Status>> + Send>>;

#[tonic::async_trait]
impl proto::plan_service_server::PlanService for Handlers {
    async fn upsert_workload(
        &self,
        request: Request<proto::UpsertWorkloadRequest>,
    ) -> Result<Response<proto::Workload>, Status> {
        let workload = convert::workload(request.into_inner().workload)?;
        let stored = self.state.store_workload(workload).await?;
        Ok(Response::new(convert::workload_message(&stored)))
    }

    async fn get_workload(
        &self,
        request: Request<proto::GetWorkloadRequest>,
    ) -> Result<Response<proto::Workload>, Status> {
        let name = convert::workload_name("name", &request.get_ref().name)?;
        // Its source's status, its plan's rule and the report of what runs are its owner's: in a
        // fleet, ask the owner, and while the owner refills its history answer UNAVAILABLE as
        // GetPlan does, rather than a workload without the rule of a plan it is about to make.
        if let Some(owner) = self.owner(name, &request)? {
            return forward::get_workload(&owner, &request, self.max_message_bytes)
                .await
                .map(Response::new);
        }
        let workload = self.state.workload(name)?;
        let mut message = convert::workload_message(&workload);
        message.source_status = self
            .state
            .source_status(workload.name())
            .map(|status| convert::source_status_message(&status));
        message.slo_status = self
            .state
            .plan_rule(workload.name())
            .map(|rule| convert::slo_status_message(&rule));
        message.applied = self
            .state
            .reported_applied(workload.name())
            .await?
            .map(|applied| convert::applied_message(&applied));
        Ok(Response::new(message))
    }

    async fn list_workloads(
        &self,
        _request: Request<proto::ListWorkloadsRequest>,
    ) -> Result<Response<proto::ListWorkloadsResponse>, Status> {
        Ok(Response::new(proto::ListWorkloadsResponse {
            workloads: self
                .state
                .workloads()
                .iter()
                .map(convert::workload_message)
                .collect(),
        }))
    }

    async fn delete_workload(
        &self,
        request: Request<proto::DeleteWorkloadRequest>,
    ) -> Result<Response<proto::DeleteWorkloadResponse>, Status> {
        let name = request.into_inner().name;
        convert::workload_name("name", &name)?;
        self.state.remove_workload(&name).await?;
        self.encoded.lock().remove(&name);
        Ok(Response::new(proto::DeleteWorkloadResponse {}))
    }

    async fn get_plan(
        &self,
        request: Request<proto::GetPlanRequest>,
    ) -> Result<Response<proto::Plan>, Status> {
        // The server routes GetPlan to `plan_route`, which sends `plan_bytes`; this is the same
        // answer for callers of the generated service.
        let bytes = self.plan_bytes(request).await?;
        let plan = prost::Message::decode(bytes)
            .map_err(|error| Status::internal(format!("a plan does not decode: {error}")))?;
        Ok(Response::new(plan))
    }

    type WatchPlansStream = PlanStream;

    async fn watch_plans(
        &self,
        request: Request<proto::WatchPlansRequest>,
    ) -> Result<Response<Self::WatchPlansStream>, Status> {
        for (index, name) in request.get_ref().workloads.iter().enumerate() {
            convert::workload_name(&format!("workloads[{index}]"), name)?;
        }
        let permit = self.stream_slot(&request)?;
        let mut names = request.get_ref().workloads.clone();
        if names.is_empty() {
            names = self.state.workload_names();
        }
        if names.is_empty() {
            return Err(invalid("no workload to watch"));
        }
        let mut plans = StreamMap::new();
        let mut watched = Vec::with_capacity(names.len());
        for name in names {
            let placement = self.state.workload_placement(&name)?;
            let owner = self.owner(&name, &request)?;
            let local = owner.is_none();
            let stream = match owner {
                None => self.local_plans(&name)?,
                Some(owner) => {
                    plan_watch::from_owner(owner, &request, &name, self.max_message_bytes)
                }
            };
            plans.insert(name.clone(), stream);
            watched.push(plan_watch::Watched {
                name,
                placement,
                local,
            });
        }
        Ok(Response::new(plan_watch::serve(
            Arc::clone(&self.state),
            permit,
            plans,
            watched,
        )))
    }

    async fn report_applied(
        &self,
        request: Request<proto::ReportAppliedRequest>,
    ) -> Result<Response<proto::ReportAppliedResponse>, Status> {
        let name = convert::workload_name("workload", &request.get_ref().workload)?;
        // The owner plans the workload and serves KEDA its metric, which both start from the
        // report: it is recorded there.
        if let Some(owner) = self.owner(name, &request)? {
            return forward::report_applied(&owner, &request)
                .await
                .map(Response::new);
        }
        let request = request.into_inner();
        let at = if request.time_ms == 0 {
            self.state.now()
        } else {
            Timestamp::from_millis(request.time_ms)
        };
        self.state
            .report_applied(
                &request.workload,
                Applied {
                    replicas: request.replicas,
                    at,
                },
            )
            .await?;
        Ok(Response::new(proto::ReportAppliedResponse {}))
    }
}

#[tonic::async_trait]
impl proto::event_service_server::EventService for Handlers {
    async fn add_event(
        &self,
        request: Request<proto::Event>,
    ) -> Result<Response<proto::Event>, Status> {
        let spec = convert::event_spec(request.into_inner());
        let event = self.state.publish_event(spec).await?;
        Ok(Response::new(convert::event_message(&event)))
    }

    async fn list_events(
        &self,
        _request: Request<proto::ListEventsRequest>,
    ) -> Result<Response<proto::ListEventsResponse>, Status> {
        let calendar = self.blocking(|state| state.events().load()).await?;
        Ok(Response::new(proto::ListEventsResponse {
            events: calendar
                .events()
                .iter()
                .map(convert::event_message)
                .collect(),
        }))
    }

    async fn remove_event(
        &self,
        request: Request<proto::RemoveEventRequest>,
    ) -> Result<Response<proto::RemoveEventResponse>, Status> {
        let name = request.into_inner().name;
        let removed = self.state.withdraw_event(&name).await?;
        Ok(Response::new(proto::RemoveEventResponse {
            removed: u32::try_from(removed).unwrap_or(u32::MAX),
        }))
    }
}

#[tonic::async_trait]
impl proto::admin_service_server::AdminService for Handlers {
    async fn list_series(
        &self,
        request: Request<proto::ListSeriesRequest>,
    ) -> Result<Response<proto::ListSeriesResponse>, Status> {
        let request = request.into_inner();
        let size = convert::page_size(request.page_size);
        let after = convert::page_position(&request.page_token)?;
        let (summaries, next) = self
            .blocking(move |state| state.list_series_page(after.as_ref(), size))
            .await?;
        Ok(Response::new(proto::ListSeriesResponse {
            series: summaries.iter().map(convert::series_info).collect(),
            next_page_token: next.as_ref().map(convert::page_token).unwrap_or_default(),
        }))
    }

    async fn delete_series(
        &self,
        request: Request<proto::DeleteSeriesRequest>,
    ) -> Result<Response<proto::DeleteSeriesResponse>, Status> {
        let series = convert::series_id(request.into_inner().series.as_ref())?;
        let samples = self
            .blocking(move |state| state.delete_series(&series))
            .await?;
        Ok(Response::new(proto::DeleteSeriesResponse {
            samples: samples as u64,
        }))
    }

    async fn retrain(
        &self,
        request: Request<proto::RetrainRequest>,
    ) -> Result<Response<proto::Job>, Status> {
        let request = request.into_inner();
        let series = if request.all {
            None
        } else if request.series.is_empty() {
            return Err(invalid("name series to retrain, or set all"));
        } else {
            Some(
                request
                    .series
                    .iter()
                    .map(|series| convert::series_id(Some(series)))
                    .collect::<Result<Vec<_>, _>>()?,
            )
        };
        let job = self.state.retrain(series)?;
        Ok(Response::new(convert::job_message(&job)))
    }

    async fn get_job(
        &self,
        request: Request<proto::GetJobRequest>,
    ) -> Result<Response<proto::Job>, Status> {
        let job = self.state.job(&request.into_inner().id)?;
        Ok(Response::new(convert::job_message(&job)))
    }
}
