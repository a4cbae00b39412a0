//! The replay itself: the three strategies serve the recorded demand tick by tick, replanning the
//! predictive one on schedule, and each scored step is tallied into a [`StepRecord`].

use super::hpa::{Fleet, HpaController};
use super::replanner::{Replanner, RuleChooser, WorkloadRule};
use super::{SimulateError, Simulation, SimulationReport, StepRecord};
use crate::domain::{Forecast, Horizon, Interval, Step, TimeSeries, Timestamp};
use crate::events::BaseForecaster;
use crate::plan::{Plan, Planner, Workload};

/// Where a replay runs within a history, and how far each replan forecasts.
#[derive(Debug, Clone, Copy)]
struct Span {
    /// First step the strategies run (the lead before the scored days starts here).
    first_run: usize,
    /// First scored step.
    first_scored: usize,
    /// Forecast length at each replan.
    horizon: Horizon,
    /// The workload's warm-up.
    warm_up_millis: i64,
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
        self.run_choosing(history, workload, forecaster, &WorkloadRule)
    }

    /// [`Simulation::run`] with the planning level of each replan picked by `chooser`; the
    /// forecaster must offer every level it picks.
    pub fn run_choosing<F: BaseForecaster, C: RuleChooser>(
        &self,
        history: &TimeSeries,
        workload: &Workload,
        forecaster: &F,
        chooser: &C,
    ) -> Result<SimulationReport, SimulateError> {
        let span = self.span(history, workload)?;
        let demand = control_demand(history, span.first_run);
        let oracle = oracle_plan(history, workload, span.first_run, &demand)?;
        let mut strategies =
            Strategies::new(self, workload, demand[0], span.warm_up_millis, oracle);
        let mut replanner = Replanner {
            history,
            window_steps: self.window_steps,
            events: &self.events,
            workload,
            forecaster,
            chooser,
            horizon: span.horizon,
            learned: None,
        };
        let ticks_per_step = self.ticks_per_step(history.step());
        let mut records: [Vec<StepRecord>; 3] = Default::default();
        let mut plan: Option<Plan> = None;
        let mut replans = 0;
        for (offset, &load) in demand.iter().enumerate() {
            let index = span.first_run + offset;
            if offset % self.replan_steps == 0 {
                plan = Some(replanner.plan(index, strategies.fleets[0].total())?);
                replans += 1;
            }
            let accumulators = strategies.serve_step(
                self,
                workload,
                plan.as_ref(),
                history.time_at(index),
                history.step(),
                load,
            );
            if index >= span.first_scored {
                let observed = history.values()[index].is_finite();
                for (records, accumulator) in records.iter_mut().zip(accumulators) {
                    records.push(accumulator.finish(observed, ticks_per_step));
                }
            }
        }
        let demand = history.values()[span.first_scored..].to_vec();
        Ok(SimulationReport::new(
            history.time_at(span.first_scored),
            history.step(),
            workload.capacity_per_replica(),
            demand,
            records,
            replans,
        ))
    }

    /// The replayed span of `history`: the scored days plus a lead of whole steps covering the
    /// warm-up, and the forecast length (at least `replan_every + warm-up + 1 step`).
    fn span(&self, history: &TimeSeries, workload: &Workload) -> Result<Span, SimulateError> {
        let step_millis = history.step().as_millis();
        let warm_up_millis = i64::try_from(workload.warm_up().as_millis()).unwrap_or(i64::MAX);
        let lead_steps = usize::try_from((warm_up_millis + step_millis - 1) / step_millis)
            .unwrap_or(usize::MAX)
            + 1;
        let needed = self
            .scored_steps
            .saturating_add(lead_steps)
            .saturating_add(1);
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
        Ok(Span {
            first_run,
            first_scored,
            horizon,
            warm_up_millis,
        })
    }

    /// Control-loop ticks per series step.
    pub(super) fn ticks_per_step(&self, step: Step) -> usize {
        usize::try_from(step.as_millis() / self.sync_millis).unwrap_or(1)
    }

    /// What a predictive executor runs at `now`: `max(planned, HPA)` within the plan's ceiling, or
    /// the plan alone when the reactive half is switched off.
    pub(super) fn predictive_target(
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

/// The demand the control loops see from `first_run` on: a gap holds the last known demand
/// (scoring skips gaps; control cannot).
fn control_demand(history: &TimeSeries, first_run: usize) -> Vec<f64> {
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
    demand
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
    Planner::new(&workload.as_oracle())
        .plan(&forecast)
        .map_err(|source| SimulateError::Plan { at, source })
}

/// The three strategies' replicas and controllers while the replay runs.
#[derive(Debug)]
struct Strategies {
    /// Replicas of each strategy, in [`super::Strategy::ALL`] order: predictive, HPA, oracle.
    fleets: [Fleet; 3],
    /// The HPA half of the predictive executor (the plan is its floor).
    predictive_hpa: HpaController,
    /// The HPA serving alone.
    baseline_hpa: HpaController,
    /// The plan the oracle follows, made once from the true demand.
    oracle: Plan,
}

impl Strategies {
    /// Every strategy starts with the replicas `first_demand` needs, within min and ceiling.
    fn new(
        simulation: &Simulation,
        workload: &Workload,
        first_demand: f64,
        warm_up_millis: i64,
        oracle: Plan,
    ) -> Self {
        let start_replicas = workload.replicas_for(first_demand).clamp(
            workload.min_replicas(),
            workload.ceiling_for(workload.replicas_for(first_demand)),
        );
        Self {
            fleets: [
                Fleet::new(start_replicas, warm_up_millis),
                Fleet::new(start_replicas, warm_up_millis),
                Fleet::new(start_replicas, warm_up_millis),
            ],
            predictive_hpa: HpaController::new(simulation.stabilisation_millis),
            baseline_hpa: HpaController::new(simulation.stabilisation_millis),
            oracle,
        }
    }

    /// Runs the control loops over one series step starting at `start` with demand `load`, and
    /// tallies what each strategy served.
    fn serve_step(
        &mut self,
        simulation: &Simulation,
        workload: &Workload,
        plan: Option<&Plan>,
        start: Timestamp,
        step: Step,
        load: f64,
    ) -> [StepAccumulator; 3] {
        let tick_hours = simulation.sync_millis as f64 / 3_600_000.0;
        let mut accumulators = [StepAccumulator::default(); 3];
        for tick in 0..simulation.ticks_per_step(step) {
            let now = start.saturating_add_millis(tick as i64 * simulation.sync_millis);
            let targets = [
                simulation.predictive_target(
                    plan,
                    &mut self.predictive_hpa,
                    workload,
                    now,
                    load,
                    self.fleets[0].total(),
                ),
                self.baseline_hpa.decide(
                    workload,
                    now,
                    load,
                    self.fleets[1].total(),
                    workload.min_replicas(),
                    workload.max_replicas(),
                ),
                self.oracle.target_at(now).unwrap_or(self.fleets[2].total()),
            ];
            for ((fleet, target), accumulator) in
                self.fleets.iter_mut().zip(targets).zip(&mut accumulators)
            {
                fleet.scale_to(now, target);
                accumulator.add(fleet, load, workload.capacity_per_replica(), tick_hours);
            }
        }
        accumulators
    }
}

/// Per-step tallies of one strategy while its ticks run.
#[derive(Debug, Clone, Copy)]
pub(super) struct StepAccumulator {
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
    pub(super) fn add(
        &mut self,
        fleet: &Fleet,
        load: f64,
        capacity_per_replica: f64,
        tick_hours: f64,
    ) {
        let capacity = f64::from(fleet.ready()) * capacity_per_replica;
        self.ready_min = self.ready_min.min(fleet.ready());
        self.replicas_sum += f64::from(fleet.total());
        self.replica_hours += f64::from(fleet.total()) * tick_hours;
        if load > capacity {
            self.short = true;
            self.unserved += (load - capacity) * tick_hours;
        }
    }

    pub(super) fn finish(self, observed: bool, ticks: usize) -> StepRecord {
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
