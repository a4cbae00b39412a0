//! Proto messages to domain values and back. Every proto value is checked here or by the domain
//! constructor it feeds; nothing unchecked reaches the use cases.

use std::path::PathBuf;
use std::time::Duration;

use tonic::Status;

use super::error::invalid;
use super::proto;
use crate::app::{
    Applied, CachedModel, Job, JobState, PublishedPlan, ServedForecast, SourceStatus,
};
use crate::domain::{
    DomainError, Level, PrometheusSource, Sample, SeriesId, SourceAuth, Step, Timestamp,
};
use crate::events::EventSpec;
use crate::forecast::MemberStatus;
use crate::plan::{MaxCapacityBreach, Mode, PlanStep, Workload, WorkloadParams};
use crate::simulate::RuleChoice;
use crate::store::{SeriesSamples, SeriesSummary};

/// A series selector from the wire.
pub(crate) fn series_id(series: Option<&proto::SeriesRef>) -> Result<SeriesId, Status> {
    let series = series.ok_or_else(|| invalid("series is required"))?;
    SeriesId::with_labels(&series.name, series.labels.iter())
        .map_err(|error| invalid(format!("series: {error}")))
}

/// The workload a request names in `field`. An empty name is the caller's mistake, not an
/// unknown workload: `InvalidArgument` naming the field, where a lookup would answer `NotFound`.
pub(crate) fn workload_name<'a>(field: &str, name: &'a str) -> Result<&'a str, Status> {
    if name.is_empty() {
        return Err(invalid(format!("`{field}` is empty: name a workload")));
    }
    Ok(name)
}

/// A series selector for the wire.
pub(crate) fn series_ref(series: &SeriesId) -> proto::SeriesRef {
    proto::SeriesRef {
        name: series.name().to_owned(),
        labels: series
            .labels()
            .iter()
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect(),
    }
}

/// A write request as store batches. Values are checked by the store (all or nothing).
pub(crate) fn write_batch(request: proto::WriteRequest) -> Result<Vec<SeriesSamples>, Status> {
    if request.series.is_empty() {
        return Err(invalid("a write needs at least one series"));
    }
    request
        .series
        .into_iter()
        .map(|part| {
            let series = series_id(part.series.as_ref())?;
            if part.timestamps_ms.len() != part.values.len() {
                return Err(invalid(format!(
                    "series {series}: {} timestamps but {} values",
                    part.timestamps_ms.len(),
                    part.values.len()
                )));
            }
            if part.values.is_empty() {
                return Err(invalid(format!("series {series}: no samples")));
            }
            let samples = part
                .timestamps_ms
                .iter()
                .zip(&part.values)
                .map(|(time, value)| Sample::new(*time, *value))
                .collect();
            Ok(SeriesSamples { series, samples })
        })
        .collect()
}

/// Most interval levels one forecast request may ask for: each level is a lower and an upper bound
/// per step, so the levels multiply a response's size and the work of making it.
pub(crate) const MAX_LEVELS: usize = 16;

/// Requested levels in percent; empty means the defaults. More than [`MAX_LEVELS`] (repeated ones
/// included) are refused.
pub(crate) fn levels(percents: &[f64]) -> Result<Vec<Level>, Status> {
    if percents.is_empty() {
        return Ok(Level::DEFAULTS.to_vec());
    }
    if percents.len() > MAX_LEVELS {
        return Err(invalid(format!(
            "at most {MAX_LEVELS} levels per request, got {}",
            percents.len()
        )));
    }
    let mut levels = percents
        .iter()
        .map(|percent| {
            Level::from_percent(*percent).map_err(|error| invalid(format!("level: {error}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    levels.sort_by(|left, right| left.fraction().total_cmp(&right.fraction()));
    levels.dedup();
    Ok(levels)
}

fn model_info(served: &ServedForecast) -> proto::ModelInfo {
    let model: &CachedModel = &served.model;
    let step = served.forecast.step().as_millis();
    proto::ModelInfo {
        version: model.version.clone(),
        kind: served.choice.to_string(),
        trained_from_ms: model.trained.from().as_millis(),
        trained_to_ms: model.trained.to().as_millis(),
        seasonal_periods_ms: model
            .model
            .preprocessing()
            .seasonality
            .periods()
            .iter()
            .map(|period| period.steps as i64 * step)
            .collect(),
        backtest_mase: model
            .model
            .report()
            .combined
            .as_ref()
            .and_then(|scores| scores.mase)
            .unwrap_or(f64::NAN),
    }
}

/// A forecast for the wire, with its members and model.
pub(crate) fn forecast_response(served: &ServedForecast) -> proto::ForecastResponse {
    let forecast = &served.forecast;
    let report = served.model.model.report();
    let weights = served.model.model.weights();
    let members = report
        .members
        .iter()
        .filter(|member| !matches!(member.status, MemberStatus::Skipped { .. }))
        .map(|member| proto::Member {
            name: member.kind.to_string(),
            weight: weights
                .iter()
                .find(|(kind, _)| *kind == member.kind)
                .map_or(0.0, |(_, weight)| *weight),
            backtest_mase: member
                .scores
                .as_ref()
                .and_then(|scores| scores.mase)
                .unwrap_or(f64::NAN),
        })
        .collect();
    proto::ForecastResponse {
        start_ms: forecast.start().as_millis(),
        step_ms: forecast.step().as_millis(),
        timestamps_ms: (0..forecast.len())
            .map(|index| forecast.time_at(index).as_millis())
            .collect(),
        mean: forecast.point().to_vec(),
        bands: forecast
            .intervals()
            .iter()
            .map(|interval| proto::Band {
                level: interval.level.percent(),
                lower: interval.lower.clone(),
                upper: interval.upper.clone(),
            })
            .collect(),
        members,
        skipped_members: report
            .skipped()
            .into_iter()
            .map(|(kind, why)| format!("{kind}: {why}"))
            .collect(),
        model: Some(model_info(served)),
        applied_events: served
            .applied_events
            .iter()
            .map(|event| {
                format!(
                    "{} {}..{} x{:.2}",
                    event.name,
                    event.pre_warm_from,
                    event.range.to(),
                    event.peak_multiplier
                )
            })
            .collect(),
        skipped_events: served.skipped_events.clone(),
    }
}

fn duration_text(field: &str, text: &str) -> Result<Duration, Status> {
    humantime::parse_duration(text.trim())
        .map_err(|error| invalid(format!("{field}: duration {text:?}: {error}")))
}

/// A workload from the wire, validated.
pub(crate) fn workload(message: Option<proto::Workload>) -> Result<Workload, Status> {
    let message = message.ok_or_else(|| invalid("workload is required"))?;
    let series = series_id(message.series.as_ref())?;
    if message.warm_up.trim().is_empty() {
        return Err(invalid("warm_up is required, e.g. \"10m\""));
    }
    let mut params = WorkloadParams::new(
        &message.name,
        &series.to_string(),
        message.capacity_per_replica,
        message.max_replicas,
        duration_text("warm_up", &message.warm_up)?,
    );
    if let Some(percent) = message.target_utilisation {
        params = params.target_utilisation(percent);
    }
    if let Some(replicas) = message.min_replicas {
        params = params.min_replicas(replicas);
    }
    if let Some(percent) = message.planning_level {
        params = params.planning_level(percent);
    }
    if let Some(slo) = &message.slo {
        params = params.slo_max_short_steps(Some(&slo.max_short_steps));
    }
    params = params.mode(match message.mode.trim() {
        "" | "forecast-only" => Mode::ForecastOnly,
        "forecast-and-scale" => Mode::ForecastAndScale,
        other => {
            return Err(invalid(format!(
                "mode {other:?}: expected forecast-only or forecast-and-scale"
            )));
        }
    });
    if let Some(scale_in) = message.scale_in {
        params = params.max_step_down(Some(scale_in.max_step_down).filter(|step| *step > 0));
        if !scale_in.stabilisation_window.trim().is_empty() {
            params = params.stabilisation_window(duration_text(
                "scale_in.stabilisation_window",
                &scale_in.stabilisation_window,
            )?);
        }
    }
    if let Some(max_capacity) = message.max_capacity {
        let breach = match max_capacity.breach.trim() {
            "" | "honour" => {
                if max_capacity.buffer_percent.is_some() {
                    return Err(invalid(
                        "max_capacity.buffer_percent only applies with breach = \"increase\"",
                    ));
                }
                MaxCapacityBreach::Honour
            }
            "increase" => MaxCapacityBreach::Increase {
                buffer_percent: max_capacity.buffer_percent.unwrap_or(10.0),
            },
            other => {
                return Err(invalid(format!(
                    "max_capacity.breach {other:?}: expected honour or increase"
                )));
            }
        };
        params = params.max_capacity_breach(breach);
    }
    if let Some(source) = message.source {
        params = params.source(prometheus_source(source)?);
    }
    params.check().map_err(|error| invalid(error.to_string()))
}

/// A history source from the wire, validated.
fn prometheus_source(message: proto::Source) -> Result<Option<PrometheusSource>, Status> {
    let Some(proto::source::Kind::Prometheus(prometheus)) = message.kind else {
        return Ok(None);
    };
    let step: Step = prometheus
        .step
        .parse()
        .map_err(|error: DomainError| invalid(format!("source.prometheus.step: {error}")))?;
    let file = |text: &str| (!text.trim().is_empty()).then(|| PathBuf::from(text.trim()));
    let auth = SourceAuth::from_parts(
        "source.prometheus",
        file(&prometheus.bearer_token_file),
        Some(prometheus.basic_auth_username),
        file(&prometheus.basic_auth_password_file),
    )
    .map_err(|error| invalid(error.to_string()))?;
    let mut source = PrometheusSource::new(&prometheus.url, &prometheus.query, step)
        .map_err(|error| invalid(error.to_string()))?
        .with_auth(auth)
        .with_ca_file(file(&prometheus.ca_file));
    if !prometheus.timeout.trim().is_empty() {
        source = source
            .with_timeout(duration_text(
                "source.prometheus.timeout",
                &prometheus.timeout,
            )?)
            .map_err(|error| invalid(error.to_string()))?;
    }
    Ok(Some(source))
}

/// A history source for the wire.
fn source_message(source: &PrometheusSource) -> proto::Source {
    let path = |path: Option<&std::path::Path>| {
        path.map(|path| path.display().to_string())
            .unwrap_or_default()
    };
    let (bearer_token_file, basic_auth_username, basic_auth_password_file) = match source.auth() {
        SourceAuth::None => (String::new(), String::new(), String::new()),
        SourceAuth::BearerTokenFile(file) => (path(Some(file)), String::new(), String::new()),
        SourceAuth::Basic {
            username,
            password_file,
        } => (String::new(), username.clone(), path(Some(password_file))),
    };
    proto::Source {
        kind: Some(proto::source::Kind::Prometheus(proto::PrometheusSource {
            url: source.url().to_owned(),
            query: source.query().to_owned(),
            step: source.step().to_string(),
            bearer_token_file,
            basic_auth_username,
            basic_auth_password_file,
            ca_file: path(source.ca_file()),
            timeout: humantime::format_duration(source.timeout()).to_string(),
        })),
    }
}

/// A source follower's status for the wire.
pub(crate) fn source_status_message(status: &SourceStatus) -> proto::SourceStatus {
    proto::SourceStatus {
        last_error: status.last_error.clone().unwrap_or_default(),
        last_error_reason: status.last_error_reason.unwrap_or_default().to_owned(),
        last_success_ms: status.last_success.map_or(0, Timestamp::as_millis),
        points_pulled: status.points_pulled,
        history_available_from_ms: status.history_from.map_or(0, Timestamp::as_millis),
        history_short: status.history_short,
    }
}

/// A workload as the API sends it.
pub fn workload_message(workload: &Workload) -> proto::Workload {
    let scale_in = workload.scale_in();
    let (breach, buffer_percent) = match workload.max_capacity() {
        MaxCapacityBreach::Honour => ("honour", None),
        MaxCapacityBreach::Increase { buffer_percent } => ("increase", Some(buffer_percent)),
    };
    proto::Workload {
        name: workload.name().to_owned(),
        series: Some(series_ref(workload.series())),
        capacity_per_replica: workload.capacity_per_replica(),
        target_utilisation: Some(workload.target_utilisation() * 100.0),
        min_replicas: Some(workload.min_replicas()),
        max_replicas: workload.max_replicas(),
        warm_up: humantime::format_duration(workload.warm_up()).to_string(),
        // Unset when an SLO chooses the level, so that the workload sent back keeps choosing.
        planning_level: (workload.planning_level_is_explicit() || workload.slo().is_none())
            .then(|| workload.planning_level().percent()),
        mode: workload.mode().as_str().to_owned(),
        scale_in: Some(proto::ScaleIn {
            max_step_down: scale_in.max_step_down.unwrap_or(0),
            stabilisation_window: humantime::format_duration(scale_in.stabilisation_window)
                .to_string(),
        }),
        max_capacity: Some(proto::MaxCapacity {
            breach: breach.to_owned(),
            buffer_percent,
        }),
        source: workload.source().map(source_message),
        source_status: None,
        slo: workload.slo().map(|slo| proto::Slo {
            max_short_steps: slo.text(),
        }),
        slo_status: None,
        applied: None,
    }
}

/// A report of applied replicas for the wire.
pub(crate) fn applied_message(applied: &Applied) -> proto::AppliedReport {
    proto::AppliedReport {
        replicas: applied.replicas,
        time_ms: applied.at.as_millis(),
    }
}

/// The rule an SLO chose, for the wire.
pub(crate) fn slo_status_message(rule: &RuleChoice) -> proto::SloStatus {
    let chosen = &rule.chosen;
    proto::SloStatus {
        source: rule.source.as_str().to_owned(),
        met: rule.met(),
        level: chosen.rule.level.percent(),
        headroom: chosen.rule.headroom,
        replayed_short_steps: u32::try_from(chosen.short_steps).unwrap_or(u32::MAX),
        replayed_short_share: chosen.short_share(),
        replayed_steps: u32::try_from(chosen.scored_steps).unwrap_or(u32::MAX),
        replayed_replica_hours: chosen.replica_hours,
        replayed_vs_oracle: chosen.vs_oracle(),
        folds: u32::try_from(rule.folds).unwrap_or(u32::MAX),
        reason: rule.to_string(),
    }
}

/// A published plan for the wire.
pub(crate) fn plan_message(published: &PublishedPlan) -> proto::Plan {
    let plan = &published.plan;
    proto::Plan {
        workload: plan.workload().to_owned(),
        revision: published.revision,
        generated_at_ms: published.generated_at.as_millis(),
        mode: plan.mode().as_str().to_owned(),
        step_ms: plan.step().as_millis(),
        warm_up_ms: i64::try_from(plan.warm_up().as_millis()).unwrap_or(i64::MAX),
        planning_level: plan.level().percent(),
        planning_headroom: plan.headroom(),
        steps: Some(plan_steps(plan.steps())),
        reactive: plan.reactive().map(|reactive| proto::Reactive {
            replicas: reactive.replicas,
            observed_load: reactive.observation.load,
            observed_at_ms: reactive.observation.at.as_millis(),
        }),
        model_version: published.model_version.clone(),
        applied_events: published.applied_events.clone(),
        skipped_events: published.skipped_events.clone(),
        slo: published.rule.as_ref().map(slo_status_message),
        read_only: false,
    }
}

/// A plan's steps as the wire's columns.
fn plan_steps(steps: &[PlanStep]) -> proto::PlanSteps {
    let column = |field: fn(&PlanStep) -> u32| steps.iter().map(field).collect();
    proto::PlanSteps {
        at_ms: steps.iter().map(|step| step.at.as_millis()).collect(),
        request_at_ms: steps
            .iter()
            .map(|step| step.request_at.as_millis())
            .collect(),
        desired: column(|step| step.desired),
        low: column(|step| step.low),
        high: column(|step| step.high),
        ceiling: column(|step| step.ceiling),
        expected_load: steps.iter().map(|step| step.expected_load).collect(),
        planned_load: steps.iter().map(|step| step.planned_load).collect(),
        reasons: steps
            .iter()
            .enumerate()
            .filter_map(|(index, step)| {
                Some(proto::StepReason {
                    step: u32::try_from(index).ok()?,
                    reason: step.reason.as_ref()?.to_string(),
                })
            })
            .collect(),
    }
}

/// An event from the wire (checked by the event store).
pub(crate) fn event_spec(event: proto::Event) -> EventSpec {
    EventSpec {
        name: event.name,
        start: event.start_ms.to_string(),
        end: event.end_ms.to_string(),
        multiplier: event.multiplier,
        like: Some(event.like).filter(|like| !like.trim().is_empty()),
    }
}

/// A stored event for the wire.
pub(crate) fn event_message(event: &crate::events::Event) -> proto::Event {
    let spec = EventSpec::from(event);
    proto::Event {
        name: event.name().to_owned(),
        start_ms: event.range().from().as_millis(),
        end_ms: event.range().to().as_millis(),
        multiplier: spec.multiplier,
        like: spec.like.unwrap_or_default(),
    }
}

/// A series summary for the wire.
pub(crate) fn series_info(summary: &SeriesSummary) -> proto::SeriesInfo {
    proto::SeriesInfo {
        series: Some(series_ref(&summary.series)),
        samples: summary.samples as u64,
        first_ms: summary.first.map_or(0, Timestamp::as_millis),
        last_ms: summary.last.map_or(0, Timestamp::as_millis),
        median_step_ms: summary.median_step.map_or(0, |step| step.as_millis()),
    }
}

/// Series in a `ListSeries` page when the request asks for none.
pub(crate) const DEFAULT_PAGE_SIZE: usize = 1000;
/// Most series in a `ListSeries` page; a larger `page_size` is taken as this (AIP-158).
pub(crate) const MAX_PAGE_SIZE: usize = 10_000;

/// The page size a `ListSeries` request asks for, defaulted and clamped.
pub(crate) fn page_size(requested: u32) -> usize {
    match requested {
        0 => DEFAULT_PAGE_SIZE,
        size => (size as usize).min(MAX_PAGE_SIZE),
    }
}

/// The token of the page after `last`: the series' canonical text, hex-encoded so that clients
/// treat it as opaque.
pub(crate) fn page_token(last: &SeriesId) -> String {
    use std::fmt::Write;
    last.to_string()
        .bytes()
        .fold(String::new(), |mut token, byte| {
            let _ = write!(token, "{byte:02x}");
            token
        })
}

/// The series a page token names (the last one of the previous page); `None` for the first page.
pub(crate) fn page_position(token: &str) -> Result<Option<SeriesId>, Status> {
    if token.is_empty() {
        return Ok(None);
    }
    let refused = || invalid("page_token is not a token this server gave");
    let bytes = (0..token.len())
        .step_by(2)
        .map(|at| {
            token
                .get(at..at + 2)
                .and_then(|pair| u8::from_str_radix(pair, 16).ok())
        })
        .collect::<Option<Vec<u8>>>()
        .ok_or_else(refused)?;
    let text = String::from_utf8(bytes).map_err(|_| refused())?;
    text.parse().map(Some).map_err(|_| refused())
}

/// A job for the wire.
pub(crate) fn job_message(job: &Job) -> proto::Job {
    let failures = job.failures();
    proto::Job {
        id: job.id.clone(),
        state: match job.state() {
            JobState::Running => proto::JobState::Running,
            JobState::Succeeded => proto::JobState::Succeeded,
            JobState::Failed => proto::JobState::Failed,
            JobState::Cancelled => proto::JobState::Cancelled,
        } as i32,
        total: job.total,
        done: job.done(),
        failed: u32::try_from(failures.len()).unwrap_or(u32::MAX),
        failures: failures
            .iter()
            .map(|(series, error)| proto::JobFailure {
                series: Some(series_ref(series)),
                error: error.clone(),
            })
            .collect(),
        started_at_ms: job.started_at.as_millis(),
        finished_at_ms: job.finished_at().map_or(0, Timestamp::as_millis),
    }
}
