//! Planning use cases: planned events kept beside the store, plans built from forecasts, and replays.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::domain::{Forecast, Horizon, Level, TimeSeries};
use crate::events::{Event, EventCalendar, EventError, EventSpec};
use crate::forecast::Predict;
use crate::plan::{Annotation, Observation, Plan, PlanError, Planner, Workload};
use crate::simulate::{RuleChoice, SimulateError};
use crate::store::write_file_atomically;

use super::slo::{choose_rule, rule_levels};
use super::{AppError, ModelChoice, fit, forecast_with_events, forecaster};

/// Name of the events file in the data directory.
pub const EVENTS_FILE: &str = "events.toml";

/// Planned events stored durably in the data directory, as `[[event]]` TOML.
#[derive(Debug, Clone)]
pub struct EventStore {
    /// The data directory holding the events file.
    dir: PathBuf,
    /// Held across each read-modify-write of the file (add, remove), so concurrent calls of one
    /// process (and its clones) apply one after another and none loses another's event. Only file
    /// I/O happens under it, never an `.await`.
    writes: Arc<Mutex<()>>,
}

impl EventStore {
    /// The events kept in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            writes: Arc::default(),
        }
    }

    /// The stored calendar (empty when nothing was stored yet).
    pub fn load(&self) -> Result<EventCalendar, AppError> {
        let path = self.dir.join(EVENTS_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok(EventCalendar::from_toml(&text)?),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                Ok(EventCalendar::default())
            }
            Err(source) => Err(AppError::Input { path, source }),
        }
    }

    fn save(&self, calendar: &EventCalendar) -> Result<(), AppError> {
        std::fs::create_dir_all(&self.dir).map_err(|source| AppError::Output {
            path: self.dir.clone(),
            source,
        })?;
        write_file_atomically(&self.dir, EVENTS_FILE, calendar.to_toml().as_bytes())?;
        Ok(())
    }

    /// Validates and stores an event, returning it; an event with the same name and start is replaced.
    pub fn add(&self, spec: &EventSpec) -> Result<Event, AppError> {
        let event = spec.check()?;
        let _writing = self.writes.lock();
        let mut events: Vec<_> = self
            .load()?
            .events()
            .iter()
            .filter(|existing| {
                !(existing.name() == event.name()
                    && existing.range().from() == event.range().from())
            })
            .cloned()
            .collect();
        events.push(event.clone());
        self.save(&EventCalendar::new(events))?;
        Ok(event)
    }

    /// Makes the stored calendar `calendar` (a fleet's events, followed from etcd); returns whether
    /// that changed it.
    pub fn replace(&self, calendar: &EventCalendar) -> Result<bool, AppError> {
        let _writing = self.writes.lock();
        if self.load()? == *calendar {
            return Ok(false);
        }
        self.save(calendar)?;
        Ok(true)
    }

    /// Removes every event called `name`; returns how many went. The other events are kept as
    /// written, unchecked, so an event the file cannot hold can be removed by name.
    pub fn remove(&self, name: &str) -> Result<usize, AppError> {
        let _writing = self.writes.lock();
        let path = self.dir.join(EVENTS_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(source) => return Err(AppError::Input { path, source }),
        };
        let (kept, removed) = EventCalendar::remove_from_toml(&text, name)?;
        if removed == 0 {
            return Err(AppError::NotFound {
                kind: "event",
                name: name.to_owned(),
            });
        }
        write_file_atomically(&self.dir, EVENTS_FILE, kept.as_bytes())?;
        Ok(removed)
    }
}

/// Reads and validates a workload file.
pub fn load_workload(path: &Path) -> Result<Workload, AppError> {
    let text = std::fs::read_to_string(path).map_err(|source| AppError::Input {
        path: path.to_owned(),
        source,
    })?;
    Ok(Workload::from_toml(&text)?)
}

/// The levels a plan's forecast must carry: the defaults, the planning level, and 99% for the high bound.
pub(super) fn plan_levels(workload: &Workload) -> Vec<Level> {
    let mut levels = Level::DEFAULTS.to_vec();
    levels.push(workload.planning_level());
    levels.push(Level::try_from(0.99).expect("invariant: 0.99 is a valid level"));
    levels.sort_by(|left, right| left.fraction().total_cmp(&right.fraction()));
    levels.dedup();
    levels
}

/// A plan with what went into it.
#[derive(Debug)]
pub struct PlanOutcome {
    /// The schedule.
    pub plan: Plan,
    /// Events whose uplift was applied, as annotations on the plan.
    pub applied_events: Vec<Annotation>,
    /// Events that could not be applied, with why (e.g. no past occurrence to learn from).
    pub skipped_events: Vec<String>,
    /// The planning rule the workload's SLO chose, with its replay (`None` without an SLO, or
    /// when the model holds no backtest forecasts to replay).
    pub rule: Option<RuleChoice>,
}

/// Forecasts `history` `horizon` ahead with `choice` (event windows masked out of training), applies
/// upcoming events' uplift, and turns the result into a plan for `workload`, on the level its SLO
/// chooses from the fitted model's backtest when it has one. `running` is the number of replicas
/// running now, if known; otherwise what the latest load needs.
pub fn build_plan(
    history: &TimeSeries,
    workload: &Workload,
    horizon: Horizon,
    calendar: &EventCalendar,
    choice: ModelChoice,
    running: Option<u32>,
) -> Result<PlanOutcome, AppError> {
    let masked = calendar.mask(history);
    let model = fit(&masked, choice)?;
    let rule = choose_rule(&model, &masked, workload);
    let planned = rule.as_ref().map_or_else(
        || workload.clone(),
        |rule| workload.with_planning_rule(rule.rule()),
    );
    let levels = rule_levels(&planned);
    let fitted = forecaster(choice, levels.clone());
    // The history itself is forecast by the model fitted above; event learning forecasts from
    // before each past occurrence, which takes a fit of its own.
    let forecast_with = |window: &TimeSeries, horizon: Horizon| -> Result<Forecast, AppError> {
        if window.start() == masked.start() && window.end() == masked.end() {
            return Ok(model.predict(horizon, &levels)?);
        }
        Ok(fitted(window, horizon)?)
    };
    let mut outcome = plan_with(
        history,
        &planned,
        horizon,
        calendar,
        &forecast_with,
        running,
    )?;
    outcome.rule = rule;
    Ok(outcome)
}

/// [`build_plan`] with any base forecaster, e.g. a stored model re-anchored on `history`. The
/// forecaster must return the levels of `rule_levels` (those of [`plan_levels`], and every
/// candidate level under an SLO).
pub(super) fn plan_with<F, E>(
    history: &TimeSeries,
    workload: &Workload,
    horizon: Horizon,
    calendar: &EventCalendar,
    forecast_with: &F,
    running: Option<u32>,
) -> Result<PlanOutcome, AppError>
where
    F: Fn(&TimeSeries, Horizon) -> Result<Forecast, E>,
    E: std::error::Error + Send + Sync + 'static,
    AppError: From<E>,
{
    let with_events = forecast_with_events(
        history,
        horizon,
        calendar,
        forecast_with,
        workload.warm_up(),
    )?;
    // `From<&AppliedEvent> for Annotation` lives in `crate::simulate`, the lowest module that uses
    // both `events` and `plan`, so neither of those imports the other.
    let applied_events: Vec<Annotation> =
        with_events.applied.iter().map(Annotation::from).collect();
    let skipped_events = with_events
        .skipped
        .iter()
        .map(ToString::to_string)
        .collect();
    let latest = history.last_observed().map(|(at, load)| Observation {
        at,
        load,
        replicas: running.unwrap_or_else(|| workload.presumed_running(load)),
    });
    let mut planner = Planner::new(workload)
        .history(history)
        .annotations(&applied_events);
    if let Some(latest) = latest {
        planner = planner.latest(latest);
    }
    let plan = planner.plan(&with_events.forecast)?;
    Ok(PlanOutcome {
        plan,
        applied_events,
        skipped_events,
        rule: None,
    })
}

/// Writes `timestamp,desired,low,high,reason`: at `timestamp`, ask for `desired` replicas so that they
/// serve from `timestamp + warm_up` (the plan step they are for); an executor keeps the largest
/// `desired` of the rows from the step being served to the last one whose time has come
/// ([`crate::plan::steps_in_force`]).
pub fn write_plan_csv(plan: &Plan, path: &Path) -> Result<(), AppError> {
    use std::io::Write;
    let output_error = |source| AppError::Output {
        path: path.to_owned(),
        source,
    };
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).map_err(output_error)?);
    writeln!(out, "timestamp,desired,low,high,reason").map_err(output_error)?;
    for step in plan.steps() {
        let reason = step
            .reason
            .as_ref()
            .map_or_else(String::new, |reason| reason.to_string());
        writeln!(
            out,
            "{},{},{},{},{}",
            step.request_at,
            step.desired,
            step.low,
            step.high,
            reason.replace(',', ";")
        )
        .map_err(output_error)?;
    }
    out.flush().map_err(output_error)
}

impl From<EventError> for AppError {
    fn from(error: EventError) -> Self {
        Self::Events(error)
    }
}

impl From<PlanError> for AppError {
    fn from(error: PlanError) -> Self {
        Self::Plan(error)
    }
}

impl From<SimulateError> for AppError {
    fn from(error: SimulateError) -> Self {
        Self::Simulate(error)
    }
}
