//! Replay simulator: scores a workload's predictive plans against a reactive Kubernetes HPA and an
//! oracle on the last days of its real history.
//!
//! At each replan the forecaster sees only the data up to then (event windows masked), the upcoming
//! events are applied with uplift learned from past occurrences, and a [`crate::plan::Plan`] is built.
//! Three strategies then serve the recorded demand with replicas that serve only after the warm-up:
//! predictive (`max(planned, HPA)` as an executor applies it), the HPA alone, and an oracle that
//! planned on the true demand. The [`SimulationReport`] prints as a table and writes CSV and a PNG.
//!
//! Depends on `crate::domain`, `crate::plan` and `crate::events` only.

mod chart;
mod hpa;
mod report;

use std::error::Error;
use std::time::Duration;

pub use report::{Score, SimulationReport, StepRecord, Strategy, StrategyRun};

use crate::domain::{Forecast, Horizon, Interval, Step, TimeSeries, Timestamp};
use crate::events::{BaseForecaster, EventCalendar, EventError, LearnedUplifts};
use crate::plan::{Annotation, Observation, Plan, PlanError, Planner, Workload};
use hpa::{Fleet, HpaController};

const DAY_MILLIS: i64 = 24 * 3600 * 1000;

/// Errors running a simulation or writing its report.
#[derive(Debug, thiserror::Error)]
pub enum SimulateError {
    /// A simulation parameter is out of range.
    #[error("simulation parameter `{field}`: {reason}")]
    InvalidParams {
        /// The parameter.
        field: &'static str,
        /// Why it is refused.
        reason: String,
    },
    /// The history is too short for the replayed days plus the lead before them.
    #[error("not enough history: the replay needs {needed} steps, the series has {got}")]
    NotEnoughHistory {
        /// Steps needed.
        needed: usize,
        /// Steps available.
        got: usize,
    },
    /// The forecaster failed at a replan.
    #[error("forecast at {at} failed: {source}")]
    Forecaster {
        /// The replan time.
        at: Timestamp,
        /// The forecaster's error.
        source: Box<dyn Error + Send + Sync>,
    },
    /// The forecaster returned a forecast that does not start at the replan time or is too short.
    #[error(
        "forecast at {at} starts at {start} with {got} steps, expected {expected} steps from {at}"
    )]
    ForecastShape {
        /// The replan time.
        at: Timestamp,
        /// Where the returned forecast starts.
        start: Timestamp,
        /// Steps needed.
        expected: usize,
        /// Steps returned.
        got: usize,
    },
    /// Building a plan failed (e.g. the forecast lacks the planning level).
    #[error("plan at {at}: {source}")]
    Plan {
        /// The replan time.
        at: Timestamp,
        /// The planner's error.
        source: PlanError,
    },
    /// Learning event uplift failed.
    #[error("events at {at}: {source}")]
    Events {
        /// The replan time.
        at: Timestamp,
        /// The events module's error.
        source: EventError,
    },
    /// Writing the CSV failed.
    #[error("cannot write csv: {source}")]
    Csv {
        /// The underlying error.
        #[from]
        source: std::io::Error,
    },
    /// Drawing or saving the chart failed.
    #[error("cannot draw chart {path}: {message}")]
    Chart {
        /// The file being written.
        path: std::path::PathBuf,
        /// What went wrong.
        message: String,
    },
}

/// Replay settings (linfa's ParamGuard pattern: build, adjust, [`SimulationParams::check`]).
///
/// | Name | Default | Purpose | Range |
/// |---|---|---|---|
/// | `days` | required | Days at the end of the history to replay | > 0, whole steps |
/// | `replan_every` | required | Time between replans (forecast + plan) | a positive multiple of the series step |
/// | `horizon` | `replan_every + warm-up + 1 step` | Forecast length at each replan | >= the default |
/// | `history_window` | all | Newest history each replan forecasts from, as the service's `planning.history_window` | >= 1 step |
/// | `sync_period` | `15s` | HPA and executor loop period (Kubernetes `--horizontal-pod-autoscaler-sync-period`) | > 0, divides the step |
/// | `scale_down_stabilisation` | `300s` | HPA `stabilizationWindowSeconds` for scale-down (Kubernetes default) | <= 24h |
/// | `events` | none | Planned events, past and upcoming | |
/// | `reactive` | `true` | Predictive executor applies `max(planned, HPA)` | |
#[derive(Debug, Clone, PartialEq)]
pub struct SimulationParams {
    days: f64,
    replan_every: Duration,
    horizon: Option<Duration>,
    history_window: Option<Duration>,
    sync_period: Duration,
    scale_down_stabilisation: Duration,
    events: EventCalendar,
    reactive: bool,
}

impl SimulationParams {
    /// Replays the last `days` of history, replanning every `replan_every`.
    pub fn new(days: f64, replan_every: Duration) -> Self {
        Self {
            days,
            replan_every,
            horizon: None,
            history_window: None,
            sync_period: Duration::from_secs(15),
            scale_down_stabilisation: Duration::from_secs(300),
            events: EventCalendar::default(),
            reactive: true,
        }
    }

    /// Sets the forecast length at each replan.
    #[must_use]
    pub fn horizon(mut self, horizon: Duration) -> Self {
        self.horizon = Some(horizon);
        self
    }

    /// Forecasts each replan from the newest `window` of the history before it (and learns event
    /// uplift from that window), as the service does with `planning.history_window`, instead of
    /// from all of it.
    #[must_use]
    pub fn history_window(mut self, window: Duration) -> Self {
        self.history_window = Some(window);
        self
    }

    /// Sets the HPA and executor loop period.
    #[must_use]
    pub fn sync_period(mut self, period: Duration) -> Self {
        self.sync_period = period;
        self
    }

    /// Sets the HPA scale-down stabilisation window.
    #[must_use]
    pub fn scale_down_stabilisation(mut self, window: Duration) -> Self {
        self.scale_down_stabilisation = window;
        self
    }

    /// Sets the planned events.
    #[must_use]
    pub fn events(mut self, events: EventCalendar) -> Self {
        self.events = events;
        self
    }

    /// Sets whether the predictive executor also applies the HPA (`max(planned, reactive)`).
    #[must_use]
    pub fn reactive(mut self, reactive: bool) -> Self {
        self.reactive = reactive;
        self
    }

    /// Validates the settings against the series step.
    pub fn check(&self, step: Step) -> Result<Simulation, SimulateError> {
        let invalid =
            |field: &'static str, reason: String| SimulateError::InvalidParams { field, reason };
        let step_millis = step.as_millis();
        let day_steps = self.days * DAY_MILLIS as f64 / step_millis as f64;
        if !(day_steps.is_finite() && day_steps >= 1.0) {
            return Err(invalid(
                "days",
                format!("{} is not a positive number of {step} steps", self.days),
            ));
        }
        let millis = |duration: Duration| i64::try_from(duration.as_millis()).unwrap_or(i64::MAX);
        let replan_millis = millis(self.replan_every);
        if replan_millis <= 0 || replan_millis % step_millis != 0 {
            return Err(invalid(
                "replan_every",
                format!(
                    "{} is not a positive multiple of the series step {step}",
                    humantime::format_duration(self.replan_every)
                ),
            ));
        }
        let sync_millis = millis(self.sync_period);
        if sync_millis <= 0 || step_millis % sync_millis != 0 {
            return Err(invalid(
                "sync_period",
                format!(
                    "{} does not divide the series step {step}",
                    humantime::format_duration(self.sync_period)
                ),
            ));
        }
        if self.scale_down_stabilisation > Duration::from_secs(24 * 3600) {
            return Err(invalid(
                "scale_down_stabilisation",
                "is longer than 24h".to_owned(),
            ));
        }
        let window_steps = match self.history_window {
            None => None,
            Some(window) => {
                let steps = millis(window) / step_millis;
                if steps < 1 {
                    return Err(invalid(
                        "history_window",
                        format!(
                            "{} is shorter than the series step {step}",
                            humantime::format_duration(window)
                        ),
                    ));
                }
                Some(usize::try_from(steps).unwrap_or(usize::MAX))
            }
        };
        Ok(Simulation {
            scored_steps: day_steps.round() as usize,
            replan_steps: usize::try_from(replan_millis / step_millis).unwrap_or(usize::MAX),
            horizon_millis: self.horizon.map(millis),
            window_steps,
            sync_millis,
            stabilisation_millis: millis(self.scale_down_stabilisation),
            events: self.events.clone(),
            reactive: self.reactive,
        })
    }
}

/// A validated replay, ready to run on histories at the step it was checked against.
#[derive(Debug, Clone)]
pub struct Simulation {
    scored_steps: usize,
    replan_steps: usize,
    horizon_millis: Option<i64>,
    /// Newest steps each replan forecasts from; `None`: all before it.
    window_steps: Option<usize>,
    sync_millis: i64,
    stabilisation_millis: i64,
    events: EventCalendar,
    reactive: bool,
}

/// Replays the last `days` of `history` with replans every `replan_every` and default settings
/// (15 s sync, 300 s HPA scale-down stabilisation, no events). See [`Simulation::run`].
pub fn simulate<F: BaseForecaster>(
    history: &TimeSeries,
    workload: &Workload,
    days: f64,
    replan_every: Duration,
    forecaster: &F,
) -> Result<SimulationReport, SimulateError> {
    SimulationParams::new(days, replan_every)
        .check(history.step())?
        .run(history, workload, forecaster)
}

/// The predictive strategy's moving parts between replans.
#[derive(Debug)]
struct Replanner<'a, F> {
    /// The full history; each replan sees only a prefix of it (its newest `window_steps`).
    history: &'a TimeSeries,
    /// Newest steps of the prefix a replan forecasts from; `None`: all of it.
    window_steps: Option<usize>,
    /// Planned events, past and upcoming.
    events: &'a EventCalendar,
    /// The workload planned for.
    workload: &'a Workload,
    /// The base model, called once per replan and once per past event occurrence when learning.
    forecaster: &'a F,
    /// Forecast length in steps.
    horizon: Horizon,
    /// Uplift learned at the last replan and how many events had ended then: learning is redone
    /// only when another occurrence has ended, since it costs one forecast per occurrence.
    learned: Option<(usize, LearnedUplifts)>,
}

impl<F: BaseForecaster> Replanner<'_, F> {
    /// Forecasts from the first `known` buckets only (the newest `window_steps` of them) and plans
    /// from there.
    fn plan(&mut self, known: usize, running: u32) -> Result<Plan, SimulateError> {
        let from = self
            .window_steps
            .map_or(0, |window| known.saturating_sub(window));
        let seen = self.history.slice(from..known);
        let at = seen.end();
        let base = self
            .forecaster
            .forecast(&self.events.mask(&seen), self.horizon)
            .map_err(|error| SimulateError::Forecaster {
                at,
                source: Box::new(error),
            })?;
        if base.start() != at || base.step() != seen.step() || base.len() < self.horizon.steps() {
            return Err(SimulateError::ForecastShape {
                at,
                start: base.start(),
                expected: self.horizon.steps(),
                got: base.len(),
            });
        }
        let (forecast, annotations) = if self.events.events().is_empty() {
            (base, Vec::new())
        } else {
            let ended = self.events.past(at).count();
            if self
                .learned
                .as_ref()
                .is_none_or(|(count, _)| *count != ended)
            {
                let learned = self
                    .events
                    .learn(&seen, self.forecaster)
                    .map_err(|source| SimulateError::Events { at, source })?;
                self.learned = Some((ended, learned));
            }
            let learned = self
                .learned
                .as_ref()
                .map(|(_, learned)| learned)
                .expect("learned was filled just above");
            let applied = self.events.apply(&base, learned, self.workload.warm_up());
            let annotations = applied.applied.iter().map(Annotation::from).collect();
            (applied.forecast, annotations)
        };
        let last = seen.len() - 1;
        let observation = Observation {
            at: seen.time_at(last),
            load: seen.values()[last],
            replicas: running,
        };
        Planner::new(self.workload)
            .latest(observation)
            .history(&seen)
            .annotations(&annotations)
            .plan(&forecast)
            .map_err(|source| SimulateError::Plan { at, source })
    }
}

impl Simulation {
    /// Replays the end of `history` for `workload`, forecasting with `forecaster` at each replan.
    ///
    /// The replay starts a lead of whole steps covering the warm-up before the scored days, every
    /// strategy running the replicas the demand needed then, so the first scored step is not an
    /// artefact of a cold start. Demand is known per series step and held constant within it; a gap
    /// holds the last known demand for control and is left out of the scores.
    pub fn run<F: BaseForecaster>(
        &self,
        history: &TimeSeries,
        workload: &Workload,
        forecaster: &F,
    ) -> Result<SimulationReport, SimulateError> {
        let step_millis = history.step().as_millis();
        let warm_up_millis = i64::try_from(workload.warm_up().as_millis()).unwrap_or(i64::MAX);
        let lead_steps = usize::try_from((warm_up_millis + step_millis - 1) / step_millis)
            .unwrap_or(usize::MAX)
            + 1;
        let needed = self.scored_steps + lead_steps + 1;
        if history.len() < needed {
            return Err(SimulateError::NotEnoughHistory {
                needed,
                got: history.len(),
            });
        }
        let first_scored = history.len() - self.scored_steps;
        let first_run = first_scored - lead_steps;

        let default_horizon_millis =
            self.replan_steps as i64 * step_millis + warm_up_millis + step_millis;
        let horizon_millis = self.horizon_millis.unwrap_or(0).max(default_horizon_millis);
        let horizon_steps =
            usize::try_from((horizon_millis + step_millis - 1) / step_millis).unwrap_or(usize::MAX);
        let horizon =
            Horizon::try_from(horizon_steps).map_err(|error| SimulateError::InvalidParams {
                field: "horizon",
                reason: error.to_string(),
            })?;

        // Control sees the last known demand across gaps; scoring skips them.
        let mut demand = Vec::with_capacity(history.len() - first_run);
        let mut last_known = history.values()[..first_run]
            .iter()
            .rev()
            .copied()
            .find(|value| value.is_finite())
            .unwrap_or(0.0);
        for &value in &history.values()[first_run..] {
            if value.is_finite() {
                last_known = value;
            }
            demand.push(last_known);
        }

        let oracle_plan = oracle_plan(history, workload, first_run, &demand)?;
        let start_replicas = workload.replicas_for(demand[0]).clamp(
            workload.min_replicas(),
            workload.ceiling_for(workload.replicas_for(demand[0])),
        );
        let mut fleets = [
            Fleet::new(start_replicas, warm_up_millis),
            Fleet::new(start_replicas, warm_up_millis),
            Fleet::new(start_replicas, warm_up_millis),
        ];
        let mut predictive_hpa = HpaController::new(self.stabilisation_millis);
        let mut baseline_hpa = HpaController::new(self.stabilisation_millis);
        let mut replanner = Replanner {
            history,
            window_steps: self.window_steps,
            events: &self.events,
            workload,
            forecaster,
            horizon,
            learned: None,
        };

        let ticks_per_step = usize::try_from(step_millis / self.sync_millis).unwrap_or(1);
        let tick_hours = self.sync_millis as f64 / 3_600_000.0;
        let mut records: [Vec<StepRecord>; 3] = Default::default();
        let mut plan: Option<Plan> = None;
        let mut replans = 0;
        for (offset, &load) in demand.iter().enumerate() {
            let index = first_run + offset;
            if offset % self.replan_steps == 0 {
                plan = Some(replanner.plan(index, fleets[0].total())?);
                replans += 1;
            }
            let mut accumulators = [StepAccumulator::default(); 3];
            for tick in 0..ticks_per_step {
                let now = history
                    .time_at(index)
                    .saturating_add_millis(tick as i64 * self.sync_millis);
                let targets = [
                    self.predictive_target(
                        plan.as_ref(),
                        &mut predictive_hpa,
                        workload,
                        now,
                        load,
                        fleets[0].total(),
                    ),
                    baseline_hpa.decide(
                        workload,
                        now,
                        load,
                        fleets[1].total(),
                        workload.min_replicas(),
                        workload.max_replicas(),
                    ),
                    oracle_plan.target_at(now).unwrap_or(fleets[2].total()),
                ];
                for ((fleet, target), accumulator) in
                    fleets.iter_mut().zip(targets).zip(&mut accumulators)
                {
                    fleet.scale_to(now, target);
                    accumulator.add(fleet, load, workload.capacity_per_replica(), tick_hours);
                }
            }
            if index >= first_scored {
                let observed = history.values()[index].is_finite();
                for (records, accumulator) in records.iter_mut().zip(accumulators) {
                    records.push(accumulator.finish(observed, ticks_per_step));
                }
            }
        }
        let demand = history.values()[first_scored..].to_vec();
        Ok(SimulationReport::new(
            history.time_at(first_scored),
            history.step(),
            workload.capacity_per_replica(),
            demand,
            records,
            replans,
        ))
    }

    /// What a predictive executor runs at `now`: `max(planned, HPA)` within the plan's ceiling, or
    /// the plan alone when the reactive half is switched off.
    fn predictive_target(
        &self,
        plan: Option<&Plan>,
        hpa: &mut HpaController,
        workload: &Workload,
        now: Timestamp,
        load: f64,
        running: u32,
    ) -> u32 {
        let planned = plan.and_then(|plan| plan.target_at(now));
        let ceiling = plan
            .and_then(|plan| plan.ceiling_at(now))
            .unwrap_or(workload.max_replicas());
        let floor = planned.unwrap_or(workload.min_replicas());
        if self.reactive {
            // The plan enters as the HPA's floor: an executor raising minReplicas gives exactly
            // max(planned, reactive) while keeping the HPA's own stabilisation.
            hpa.decide(workload, now, load, running, floor, ceiling.max(floor))
        } else {
            planned.unwrap_or(running)
        }
    }
}

/// A plan made from the true demand: what an operator who knew it would have asked for, with the
/// same warm-up, target utilisation and min/max but no scale-in restraint.
fn oracle_plan(
    history: &TimeSeries,
    workload: &Workload,
    first_run: usize,
    demand: &[f64],
) -> Result<Plan, SimulateError> {
    let at = history.time_at(first_run);
    let forecast = Forecast::new(
        at,
        history.step(),
        demand.to_vec(),
        vec![Interval {
            level: workload.planning_level(),
            lower: demand.to_vec(),
            upper: demand.to_vec(),
        }],
    );
    Planner::new(&workload.without_scale_in_limits())
        .plan(&forecast)
        .map_err(|source| SimulateError::Plan { at, source })
}

/// Per-step tallies of one strategy while its ticks run.
#[derive(Debug, Clone, Copy)]
struct StepAccumulator {
    /// Fewest replicas serving at any tick of the step.
    ready_min: u32,
    /// Sum over ticks of replicas running (ready or starting).
    replicas_sum: f64,
    /// Whether any tick had demand above ready capacity at 100%.
    short: bool,
    /// Demand not served, in load units times hours.
    unserved: f64,
    /// Replica-hours paid for.
    replica_hours: f64,
}

impl Default for StepAccumulator {
    fn default() -> Self {
        Self {
            ready_min: u32::MAX,
            replicas_sum: 0.0,
            short: false,
            unserved: 0.0,
            replica_hours: 0.0,
        }
    }
}

impl StepAccumulator {
    fn add(&mut self, fleet: &Fleet, load: f64, capacity_per_replica: f64, tick_hours: f64) {
        let capacity = f64::from(fleet.ready()) * capacity_per_replica;
        self.ready_min = self.ready_min.min(fleet.ready());
        self.replicas_sum += f64::from(fleet.total());
        self.replica_hours += f64::from(fleet.total()) * tick_hours;
        if load > capacity {
            self.short = true;
            self.unserved += (load - capacity) * tick_hours;
        }
    }

    fn finish(self, observed: bool, ticks: usize) -> StepRecord {
        StepRecord {
            ready_min: self.ready_min,
            replicas_mean: self.replicas_sum / ticks as f64,
            underprovisioned: observed && self.short,
            unserved: if observed { self.unserved } else { 0.0 },
            replica_hours: self.replica_hours,
            observed,
        }
    }
}

#[cfg(test)]
mod tests;
