//! The predictive strategy's replans: forecast from the history known so far, apply the upcoming
//! events with uplift learned from past ones, and plan.

use super::SimulateError;
use crate::domain::{Horizon, TimeSeries};
use crate::events::{AppliedEvent, BaseForecaster, EventCalendar, LearnedUplifts};
use crate::plan::{Annotation, Observation, Plan, Planner, PlanningRule, Workload};

/// An applied event names the reason for plan changes over the span its uplift (pre-warm
/// included) covers.
///
/// The conversion lives here, the lowest module that uses both `events` and `plan`, so that
/// neither of them imports the other; the app's planning use case (above this module) uses it too.
impl From<&AppliedEvent> for Annotation {
    fn from(event: &AppliedEvent) -> Self {
        Self {
            range: event.uplift_range(),
            label: event.name.clone(),
        }
    }
}

/// Picks the planning rule at each replan, e.g. the rule a workload's SLO chose from the model
/// fitted at that replan (the simulator's forecaster is the retrain).
pub trait RuleChooser {
    /// The rule to plan on after `seen` (the history known at the replan, events masked);
    /// `None`: the workload's own.
    fn rule_after(&self, seen: &TimeSeries) -> Option<PlanningRule>;
}

/// Plans every replan on the workload's own rule.
#[derive(Debug, Clone, Copy)]
pub struct WorkloadRule;

impl RuleChooser for WorkloadRule {
    fn rule_after(&self, _seen: &TimeSeries) -> Option<PlanningRule> {
        None
    }
}

/// The predictive strategy's moving parts between replans.
#[derive(Debug)]
pub(super) struct Replanner<'a, F, C> {
    /// The full history; each replan sees only a prefix of it (its newest `window_steps`).
    pub(super) history: &'a TimeSeries,
    /// Newest steps of the prefix a replan forecasts from; `None`: all of it.
    pub(super) window_steps: Option<usize>,
    /// Planned events, past and upcoming.
    pub(super) events: &'a EventCalendar,
    /// The workload planned for.
    pub(super) workload: &'a Workload,
    /// The base model, called once per replan and once per past event occurrence when learning.
    pub(super) forecaster: &'a F,
    /// Picks the level each replan plans on.
    pub(super) chooser: &'a C,
    /// Forecast length in steps.
    pub(super) horizon: Horizon,
    /// Uplift learned at the last replan and how many events had ended then: learning is redone
    /// only when another occurrence has ended, since it costs one forecast per occurrence.
    pub(super) learned: Option<(usize, LearnedUplifts)>,
}

impl<F: BaseForecaster, C: RuleChooser> Replanner<'_, F, C> {
    /// Forecasts from the first `known` buckets only (the newest `window_steps` of them) and plans
    /// from there.
    pub(super) fn plan(&mut self, known: usize, running: u32) -> Result<Plan, SimulateError> {
        let from = self
            .window_steps
            .map_or(0, |window| known.saturating_sub(window));
        let seen = self.history.slice(from..known);
        let at = seen.end();
        let masked = self.events.mask(&seen);
        let base = self
            .forecaster
            .forecast(&masked, self.horizon)
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
        let workload = match self.chooser.rule_after(&masked) {
            Some(rule) => self.workload.with_planning_rule(rule),
            None => self.workload.clone(),
        };
        Planner::new(&workload)
            .latest(observation)
            .history(&seen)
            .annotations(&annotations)
            .plan(&forecast)
            .map_err(|source| SimulateError::Plan { at, source })
    }
}
