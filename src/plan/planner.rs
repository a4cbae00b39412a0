//! The planner: a load forecast in, a [`Plan`] out, following the workload's sizing, min/max and
//! scale-in rules.

use super::{
    Annotation, Observation, Plan, PlanError, PlanStep, Reactive, Reason, Workload,
    reactive_replicas,
};
use crate::domain::{Forecast, Interval, Level, TimeSeries, Timestamp};

const DAY_MILLIS: i64 = 24 * 3600 * 1000;

/// Builds a [`Plan`] from a forecast of a workload's load.
///
/// Algorithm: each step's need is `ceil(load / (capacity_per_replica * target))` of the upper bound at
/// the planning level (the sizing rule of the Kubernetes HPA, applied ahead of time as AWS predictive
/// scaling does with its forecast); it is clamped to `[min_replicas, ceiling]` where the ceiling
/// follows AWS's `MaxCapacityBreachBehavior`; then the scale-in policy lets it fall by at most
/// `max_step_down` per step, never below the highest need within the stabilisation window
/// (Kubernetes `behavior.scaleDown`), and not at all until a window has passed since the last change.
/// Warm-up is applied when the plan is read ([`Plan::target_at`]), so every step's replicas are
/// requested `warm_up` before it starts (AWS's `SchedulingBufferTime`).
#[derive(Debug, Clone)]
pub struct Planner<'a> {
    /// How load becomes replicas.
    workload: &'a Workload,
    /// Latest load and running replicas: the scale-in starting point and the reactive input.
    latest: Option<Observation>,
    /// Recent load, only to tell daily ramps from trends.
    history: Option<&'a TimeSeries>,
    /// Labelled stretches (events) that explain changes inside them.
    annotations: &'a [Annotation],
}

impl<'a> Planner<'a> {
    /// A planner for `workload` with no observation, history or annotations.
    pub fn new(workload: &'a Workload) -> Self {
        Self {
            workload,
            latest: None,
            history: None,
            annotations: &[],
        }
    }

    /// The latest observed load and running replicas: the plan starts from those replicas (so the
    /// scale-in policy applies from now) and carries the reactive recommendation.
    #[must_use]
    pub fn latest(mut self, observation: Observation) -> Self {
        self.latest = Some(observation);
        self
    }

    /// Recent history of the load, used only to tell a daily ramp from a trend in the reasons.
    #[must_use]
    pub fn history(mut self, history: &'a TimeSeries) -> Self {
        self.history = Some(history);
        self
    }

    /// Stretches of time (planned events) that name the reason for changes inside them.
    #[must_use]
    pub fn annotations(mut self, annotations: &'a [Annotation]) -> Self {
        self.annotations = annotations;
        self
    }

    /// Builds the plan; the forecast must offer the workload's planning level.
    pub fn plan(&self, forecast: &Forecast) -> Result<Plan, PlanError> {
        if forecast.is_empty() {
            return Err(PlanError::EmptyForecast);
        }
        let workload = self.workload;
        let level = workload.planning_level();
        let headroom = workload.planning_headroom();
        let bands = Bands::of(forecast, level, headroom)?;
        let needs = Needs::new(workload, &bands.planned_load);
        let mut previous = self.latest.map(|observation| {
            observation
                .replicas
                .clamp(workload.min_replicas(), needs.ceilings[0])
        });
        let mut last_change: Option<Timestamp> = None;
        let mut steps = Vec::with_capacity(forecast.len());
        for index in 0..forecast.len() {
            let desired = match previous {
                None => needs.clamped[index],
                Some(previous) => {
                    self.scale_in(forecast, &needs.clamped, index, previous, last_change)
                }
            };
            if previous.is_some_and(|previous| previous != desired) {
                last_change = Some(forecast.time_at(index));
            }
            let step = self.step(forecast, &bands, &needs, &steps, index, desired);
            steps.push(step);
            previous = Some(desired);
        }
        Ok(Plan {
            workload: workload.name().to_owned(),
            mode: workload.mode(),
            step: forecast.step(),
            warm_up: workload.warm_up(),
            level,
            headroom,
            steps,
            reactive: self.reactive(needs.ceilings[0]),
        })
    }

    /// The scale-in policy at step `index`, `previous` replicas planned before it: a rise is taken
    /// at once; a fall waits until a stabilisation window has passed since the last change, then
    /// goes down by at most `max_step_down`, never below the highest need within the window.
    fn scale_in(
        &self,
        forecast: &Forecast,
        clamped: &[u32],
        index: usize,
        previous: u32,
        last_change: Option<Timestamp>,
    ) -> u32 {
        let wanted = clamped[index];
        if wanted >= previous {
            return wanted;
        }
        let policy = self.workload.scale_in();
        let window_millis =
            i64::try_from(policy.stabilisation_window.as_millis()).unwrap_or(i64::MAX);
        let max_step_down = policy.max_step_down.unwrap_or(u32::MAX);
        let at = forecast.time_at(index);
        let settled =
            last_change.is_none_or(|changed| at.as_millis() - changed.as_millis() >= window_millis);
        if !settled {
            return previous;
        }
        let window_high = (0..=index)
            .rev()
            .take_while(|&earlier| {
                at.as_millis() - forecast.time_at(earlier).as_millis() < window_millis
            })
            .map(|earlier| clamped[earlier])
            .max()
            .unwrap_or(wanted);
        wanted
            .max(window_high)
            .max(previous.saturating_sub(max_step_down))
            .min(previous)
    }

    /// Step `index` of the plan with `desired` replicas: its bounds, ceiling, loads and the reason
    /// for a change from the step before (`earlier` holds the steps planned so far).
    fn step(
        &self,
        forecast: &Forecast,
        bands: &Bands<'_>,
        needs: &Needs,
        earlier: &[PlanStep],
        index: usize,
        desired: u32,
    ) -> PlanStep {
        let workload = self.workload;
        let floor = workload.min_replicas();
        let at = forecast.time_at(index);
        let ceiling = needs.ceilings[index].max(desired);
        let low = workload
            .replicas_for(bands.planning.lower[index])
            .clamp(floor, ceiling)
            .min(desired);
        let high = workload
            .replicas_for(bands.widest.upper[index])
            .clamp(floor, ceiling)
            .max(desired);
        let reason = if index == 0 {
            Some(Reason::Initial)
        } else if earlier
            .last()
            .is_some_and(|last: &PlanStep| last.desired != desired)
        {
            Some(self.reason(forecast, earlier, index, needs.raw[index], desired))
        } else {
            None
        };
        let warm_up = workload.warm_up();
        PlanStep {
            at,
            request_at: at
                .saturating_add_millis(-i64::try_from(warm_up.as_millis()).unwrap_or(i64::MAX)),
            desired,
            low,
            high,
            ceiling,
            expected_load: forecast.point()[index],
            planned_load: bands.planned_load[index],
            reason,
        }
    }

    /// The HPA recommendation from the latest observation, capped by the first step's ceiling.
    fn reactive(&self, ceiling: u32) -> Option<Reactive> {
        self.latest.map(|observation| Reactive {
            observation,
            replicas: reactive_replicas(
                self.workload,
                observation.load,
                observation.replicas,
                ceiling,
            ),
        })
    }

    /// Names the cause of a change at `index`, most specific first.
    fn reason(
        &self,
        forecast: &Forecast,
        earlier: &[PlanStep],
        index: usize,
        need: u32,
        desired: u32,
    ) -> Reason {
        let workload = self.workload;
        let at = forecast.time_at(index);
        if need < desired && desired > workload.min_replicas() {
            return Reason::HeldByScaleIn;
        }
        if let Some(annotation) = self
            .annotations
            .iter()
            .find(|annotation| annotation.range.contains(at))
        {
            return Reason::Event {
                name: annotation.label.clone(),
            };
        }
        if need > workload.max_replicas() {
            return if desired > workload.max_replicas() {
                Reason::AboveMax
            } else {
                Reason::MaxReplicas
            };
        }
        if need < workload.min_replicas() {
            return Reason::MinReplicas;
        }
        let change = forecast.point()[index] - forecast.point()[index - 1];
        let yesterday = |time: Timestamp| -> Option<f64> {
            let time = time.saturating_add_millis(-DAY_MILLIS);
            let planned = (time >= forecast.start())
                .then(|| {
                    let offset = (time.as_millis() - forecast.start().as_millis())
                        / forecast.step().as_millis();
                    earlier
                        .get(usize::try_from(offset).ok()?)
                        .map(|step| step.expected_load)
                })
                .flatten();
            planned.or_else(|| self.history.and_then(|history| value_at(history, time)))
        };
        let previous_at = forecast.time_at(index - 1);
        match (yesterday(at), yesterday(previous_at)) {
            (Some(now), Some(before)) => {
                let change_yesterday = now - before;
                // The same direction and at least half the size: the daily pattern explains it.
                if change_yesterday * change > 0.0 && change_yesterday.abs() >= 0.5 * change.abs() {
                    Reason::DailyRamp
                } else {
                    Reason::Trend
                }
            }
            _ => Reason::Trend,
        }
    }
}

/// The forecast's intervals a plan reads.
#[derive(Debug)]
struct Bands<'f> {
    /// The interval at the planning level: its upper bound is planned on, its lower bound gives `low`.
    planning: &'f Interval,
    /// The widest interval: its upper bound gives `high`.
    widest: &'f Interval,
    /// The load each step is sized on: the planning interval's upper bound times the headroom.
    planned_load: Vec<f64>,
}

impl<'f> Bands<'f> {
    /// The planning level's interval, the widest one and the load planned on (`headroom` times
    /// the planning upper bound); an error names the levels on offer when the planning level is
    /// missing.
    fn of(forecast: &'f Forecast, level: Level, headroom: f64) -> Result<Self, PlanError> {
        let planning = forecast
            .interval(level)
            .ok_or_else(|| PlanError::MissingLevel {
                level: level.percent(),
                offered: forecast
                    .intervals()
                    .iter()
                    .map(|interval| interval.level.percent())
                    .collect(),
            })?;
        // Intervals are sorted and nested, so the last one is the widest.
        let widest = forecast.intervals().last().unwrap_or(planning);
        let planned_load = planning
            .upper
            .iter()
            .map(|upper| upper * headroom)
            .collect();
        Ok(Self {
            planning,
            widest,
            planned_load,
        })
    }
}

/// Replicas each step's planned load needs, before the scale-in policy.
#[derive(Debug)]
struct Needs {
    /// What the load needs, before min/max.
    raw: Vec<u32>,
    /// The effective maximum: `max_replicas`, or more when the workload raises its maximum.
    ceilings: Vec<u32>,
    /// `raw` clamped to `[min_replicas, ceiling]`.
    clamped: Vec<u32>,
}

impl Needs {
    /// The needs of `workload` for each of `loads`.
    fn new(workload: &Workload, loads: &[f64]) -> Self {
        let raw: Vec<u32> = loads
            .iter()
            .map(|&load| workload.replicas_for(load))
            .collect();
        let ceilings: Vec<u32> = raw.iter().map(|&need| workload.ceiling_for(need)).collect();
        let clamped = raw
            .iter()
            .zip(&ceilings)
            .map(|(&need, &ceiling)| need.clamp(workload.min_replicas(), ceiling))
            .collect();
        Self {
            raw,
            ceilings,
            clamped,
        }
    }
}

/// The value of the bucket holding `time`, if it has data.
fn value_at(series: &TimeSeries, time: Timestamp) -> Option<f64> {
    let offset = time.as_millis() - series.start().as_millis();
    if offset < 0 {
        return None;
    }
    let index = usize::try_from(offset / series.step().as_millis()).ok()?;
    series
        .values()
        .get(index)
        .copied()
        .filter(|value| value.is_finite())
}

#[cfg(test)]
mod tests;
