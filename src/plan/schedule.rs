//! Turning a load forecast into a pre-scaling schedule.

use std::fmt;
use std::time::Duration;

use super::{Mode, Observation, PlanError, Reactive, Workload, reactive_replicas};
use crate::domain::{Forecast, Level, Step, TimeRange, TimeSeries, Timestamp};
use crate::events::AppliedEvent;

const DAY_MILLIS: i64 = 24 * 3600 * 1000;

/// A labelled stretch of time the planner names as the reason for changes inside it, such as a
/// planned event (`label` = the event's name).
#[derive(Debug, Clone, PartialEq)]
pub struct Annotation {
    /// The stretch of time, pre-warm included.
    pub range: TimeRange,
    /// Shown as `event: LABEL`.
    pub label: String,
}

impl From<&AppliedEvent> for Annotation {
    /// Labels the span an applied event's uplift (pre-warm included) covers with the event's name.
    fn from(event: &AppliedEvent) -> Self {
        Self {
            range: event.uplift_range(),
            label: event.name.clone(),
        }
    }
}

/// Why a plan changes its desired replicas at a step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// The first step of the plan.
    Initial,
    /// The load moves the way it moved at the same time the day before.
    DailyRamp,
    /// The load moves in a way the day before does not explain.
    Trend,
    /// The step lies in an annotated stretch, e.g. a planned event.
    Event {
        /// The annotation's label.
        name: String,
    },
    /// The scale-in policy keeps more replicas than the forecast needs.
    HeldByScaleIn,
    /// The forecast needs fewer than `min_replicas`.
    MinReplicas,
    /// The forecast needs more than `max_replicas` and the workload honours its maximum.
    MaxReplicas,
    /// The forecast needs more than `max_replicas` and the workload raises its maximum.
    AboveMax,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Initial => f.write_str("initial"),
            Self::DailyRamp => f.write_str("daily ramp"),
            Self::Trend => f.write_str("trend"),
            Self::Event { name } => write!(f, "event: {name}"),
            Self::HeldByScaleIn => f.write_str("held by scale-in policy"),
            Self::MinReplicas => f.write_str("at min replicas"),
            Self::MaxReplicas => f.write_str("capped at max replicas"),
            Self::AboveMax => f.write_str("above max by buffer"),
        }
    }
}

/// One step of a plan: the replicas that must be serving during `[at, at + step)`.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanStep {
    /// Start of the interval these replicas serve.
    pub at: Timestamp,
    /// When to ask for replicas added at this step: `at` minus the warm-up.
    pub request_at: Timestamp,
    /// Replicas planned, from the upper bound at the planning level after min/max and scale-in.
    pub desired: u32,
    /// Replicas the lower bound at the planning level implies (never above `desired`).
    pub low: u32,
    /// Replicas the upper bound of the widest interval implies (never below `desired`).
    pub high: u32,
    /// Effective maximum: `max_replicas`, or more when the workload raises its maximum.
    pub ceiling: u32,
    /// Point forecast of the load.
    pub expected_load: f64,
    /// The load planned for: the upper bound at the planning level.
    pub planned_load: f64,
    /// Why `desired` differs from the previous step; `None` when it does not.
    pub reason: Option<Reason>,
}

/// A pre-scaling schedule over a forecast's horizon, at the forecast's step.
///
/// Executors follow [`Plan::executor_target`]: at time `τ` they run
/// `min(ceiling, max(target_at(τ), reactive))`, where `target_at` already asks for replicas a warm-up
/// ahead of the step that needs them and `reactive` is the HPA formula on the latest load.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Name of the workload, for display and logs.
    workload: String,
    /// Whether executors act on the plan.
    mode: Mode,
    /// Spacing of the steps (the forecast's step).
    step: Step,
    /// How far ahead of a step its replicas are requested.
    warm_up: Duration,
    /// The interval level planned on.
    level: Level,
    /// One per forecast step, never empty.
    steps: Vec<PlanStep>,
    /// HPA recommendation from the latest observation, when one was given.
    reactive: Option<Reactive>,
}

impl Plan {
    /// Name of the workload planned for.
    pub fn workload(&self) -> &str {
        &self.workload
    }

    /// Whether executors should act on the plan.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Spacing of the steps.
    pub fn step(&self) -> Step {
        self.step
    }

    /// The workload's warm-up the plan requests ahead by.
    pub fn warm_up(&self) -> Duration {
        self.warm_up
    }

    /// Interval level whose upper bound was planned on.
    pub fn level(&self) -> Level {
        self.level
    }

    /// The steps, one per forecast step; never empty.
    pub fn steps(&self) -> &[PlanStep] {
        &self.steps
    }

    /// Start of the first step.
    pub fn start(&self) -> Timestamp {
        self.steps[0].at
    }

    /// End of the last step.
    pub fn end(&self) -> Timestamp {
        self.time_at(self.steps.len())
    }

    /// The reactive recommendation from the latest observed load, when one was given.
    pub fn reactive(&self) -> Option<&Reactive> {
        self.reactive.as_ref()
    }

    /// Steps where `desired` changes (the first step included), each with its reason.
    pub fn changes(&self) -> impl Iterator<Item = &PlanStep> + '_ {
        self.steps.iter().filter(|step| step.reason.is_some())
    }

    fn time_at(&self, index: usize) -> Timestamp {
        let offset = i64::try_from(index).unwrap_or(i64::MAX);
        self.steps[0]
            .at
            .saturating_add_millis(offset.saturating_mul(self.step.as_millis()))
    }

    /// The step whose interval holds `time`.
    pub fn step_at(&self, time: Timestamp) -> Option<&PlanStep> {
        let offset = time.as_millis() - self.start().as_millis();
        if offset < 0 {
            return None;
        }
        let index = usize::try_from(offset / self.step.as_millis()).ok()?;
        self.steps.get(index)
    }

    /// Replicas an executor asks for at `time` from the plan alone: enough for the step being served
    /// and for the step that replicas requested now would serve once warm.
    ///
    /// `None` outside `[start - warm_up, end)`.
    pub fn target_at(&self, time: Timestamp) -> Option<u32> {
        let now = self.step_at(time).map(|step| step.desired);
        let warm_up = i64::try_from(self.warm_up.as_millis()).unwrap_or(i64::MAX);
        let ahead = self
            .step_at(time.saturating_add_millis(warm_up))
            .map(|step| step.desired);
        match (now, ahead) {
            (Some(now), Some(ahead)) => Some(now.max(ahead)),
            (only, None) | (None, only) => only,
        }
    }

    /// Effective maximum at `time` (the later of the two steps [`Plan::target_at`] looks at).
    pub fn ceiling_at(&self, time: Timestamp) -> Option<u32> {
        let warm_up = i64::try_from(self.warm_up.as_millis()).unwrap_or(i64::MAX);
        let now = self.step_at(time).map(|step| step.ceiling);
        let ahead = self
            .step_at(time.saturating_add_millis(warm_up))
            .map(|step| step.ceiling);
        match (now, ahead) {
            (Some(now), Some(ahead)) => Some(now.max(ahead)),
            (only, None) | (None, only) => only,
        }
    }

    /// The documented executor rule: `min(ceiling, max(planned, reactive))` at `time`.
    ///
    /// `reactive` is the HPA recommendation from the freshest load the executor has (or
    /// [`Plan::reactive`]'s when it has nothing newer). `None` outside the plan's span.
    pub fn executor_target(&self, time: Timestamp, reactive: u32) -> Option<u32> {
        let planned = self.target_at(time)?;
        let ceiling = self.ceiling_at(time)?;
        Some(planned.max(reactive).min(ceiling.max(planned)))
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "plan for {} ({}, {} steps of {}, planned on the {} upper bound, warm-up {})",
            self.workload,
            self.mode,
            self.steps.len(),
            self.step,
            self.level,
            humantime::format_duration(self.warm_up)
        )?;
        if let Some(reactive) = &self.reactive {
            writeln!(
                f,
                "reactive now: {} replicas (load {:.1} at {}, {} running); executors apply max(planned, reactive)",
                reactive.replicas,
                reactive.observation.load,
                reactive.observation.at,
                reactive.observation.replicas
            )?;
        }
        writeln!(
            f,
            "{:<22} {:<22} {:>8} {:>6} {:>6} {:>12}  reason",
            "request at", "serve from", "desired", "low", "high", "planned load"
        )?;
        for step in self.changes() {
            writeln!(
                f,
                "{:<22} {:<22} {:>8} {:>6} {:>6} {:>12.1}  {}",
                step.request_at.to_string(),
                step.at.to_string(),
                step.desired,
                step.low,
                step.high,
                step.planned_load,
                step.reason
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_default()
            )?;
        }
        Ok(())
    }
}

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
        let workload = self.workload;
        if forecast.is_empty() {
            return Err(PlanError::EmptyForecast);
        }
        let level = workload.planning_level();
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
        let floor = workload.min_replicas();
        let window_millis =
            i64::try_from(workload.scale_in().stabilisation_window.as_millis()).unwrap_or(i64::MAX);
        let max_step_down = workload.scale_in().max_step_down.unwrap_or(u32::MAX);
        let warm_up = workload.warm_up();

        let needs: Vec<u32> = planning
            .upper
            .iter()
            .map(|&load| workload.replicas_for(load))
            .collect();
        let ceilings: Vec<u32> = needs
            .iter()
            .map(|&need| workload.ceiling_for(need))
            .collect();
        let clamped: Vec<u32> = needs
            .iter()
            .zip(&ceilings)
            .map(|(&need, &ceiling)| need.clamp(floor, ceiling))
            .collect();

        let mut previous = self
            .latest
            .map(|observation| observation.replicas.clamp(floor, ceilings[0]));
        let mut last_change: Option<Timestamp> = None;
        let mut steps = Vec::with_capacity(forecast.len());
        for index in 0..forecast.len() {
            let at = forecast.time_at(index);
            let wanted = clamped[index];
            let desired = match previous {
                None => wanted,
                Some(previous) if wanted >= previous => wanted,
                Some(previous) => {
                    let settled = last_change.is_none_or(|changed| {
                        at.as_millis() - changed.as_millis() >= window_millis
                    });
                    if settled {
                        let window_high = (0..=index)
                            .rev()
                            .take_while(|&earlier| {
                                at.as_millis() - forecast.time_at(earlier).as_millis()
                                    < window_millis
                            })
                            .map(|earlier| clamped[earlier])
                            .max()
                            .unwrap_or(wanted);
                        wanted
                            .max(window_high)
                            .max(previous.saturating_sub(max_step_down))
                            .min(previous)
                    } else {
                        previous
                    }
                }
            };
            let changed = previous.is_some_and(|previous| previous != desired);
            if changed {
                last_change = Some(at);
            }
            let ceiling = ceilings[index].max(desired);
            let low = workload
                .replicas_for(planning.lower[index])
                .clamp(floor, ceiling)
                .min(desired);
            let high = workload
                .replicas_for(widest.upper[index])
                .clamp(floor, ceiling)
                .max(desired);
            let reason = if index == 0 {
                Some(Reason::Initial)
            } else if steps
                .last()
                .is_some_and(|last: &PlanStep| last.desired != desired)
            {
                Some(self.reason(forecast, &steps, index, needs[index], desired))
            } else {
                None
            };
            steps.push(PlanStep {
                at,
                request_at: at
                    .saturating_add_millis(-i64::try_from(warm_up.as_millis()).unwrap_or(i64::MAX)),
                desired,
                low,
                high,
                ceiling,
                expected_load: forecast.point()[index],
                planned_load: planning.upper[index],
                reason,
            });
            previous = Some(desired);
        }
        let reactive = self.latest.map(|observation| Reactive {
            observation,
            replicas: reactive_replicas(
                workload,
                observation.load,
                observation.replicas,
                ceilings[0],
            ),
        });
        Ok(Plan {
            workload: workload.name().to_owned(),
            mode: workload.mode(),
            step: forecast.step(),
            warm_up,
            level,
            steps,
            reactive,
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
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::domain::Interval;
    use crate::plan::{MaxCapacityBreach, WorkloadParams};

    const STEP_MILLIS: i64 = 5 * 60 * 1000;

    fn step() -> Step {
        Step::try_from(STEP_MILLIS).unwrap()
    }

    fn level(percent: f64) -> Level {
        Level::from_percent(percent).unwrap()
    }

    /// A forecast whose 80% and 95% bands lie `spread80` and `spread95` around the point.
    fn forecast(point: &[f64], spread80: f64, spread95: f64) -> Forecast {
        let band = |spread: f64, percent: f64| Interval {
            level: level(percent),
            lower: point.iter().map(|value| value - spread).collect(),
            upper: point.iter().map(|value| value + spread).collect(),
        };
        Forecast::new(
            Timestamp::from_millis(0),
            step(),
            point.to_vec(),
            vec![band(spread80, 80.0), band(spread95, 95.0)],
        )
    }

    fn workload() -> Workload {
        WorkloadParams::new("api", "requests", 10.0, 20, Duration::from_secs(600))
            .target_utilisation(100.0)
            .min_replicas(2)
            .stabilisation_window(Duration::from_secs(900))
            .max_step_down(Some(2))
            .check()
            .unwrap()
    }

    #[test]
    fn plans_on_the_upper_bound_and_requests_ahead_by_warm_up() {
        let workload = workload();
        let forecast = forecast(&[30.0, 30.0, 30.0, 80.0, 80.0, 80.0], 5.0, 10.0);
        let plan = Planner::new(&workload).plan(&forecast).unwrap();
        let desired: Vec<u32> = plan.steps().iter().map(|step| step.desired).collect();
        // The 95% upper bound is 40 then 90 load units: 4 then 9 replicas.
        assert_eq!(desired, [4, 4, 4, 9, 9, 9]);
        assert_eq!(
            plan.steps()[3].request_at.as_millis(),
            3 * STEP_MILLIS - 600_000
        );
        // Ten minutes before the ramp the executor already asks for 9; fifteen minutes before, not yet.
        assert_eq!(
            plan.target_at(Timestamp::from_millis(3 * STEP_MILLIS - 600_000)),
            Some(9)
        );
        assert_eq!(
            plan.target_at(Timestamp::from_millis(3 * STEP_MILLIS - 600_001)),
            Some(4)
        );
        assert_eq!(plan.target_at(Timestamp::from_millis(-600_000)), Some(4));
        assert_eq!(plan.target_at(Timestamp::from_millis(-600_001)), None);
        assert_eq!(plan.steps()[0].low, 2);
        assert_eq!(plan.steps()[0].high, 4);
    }

    #[test]
    fn scale_in_is_held_then_limited() {
        let workload = workload();
        let forecast = forecast(
            &[150.0, 150.0, 20.0, 20.0, 20.0, 20.0, 20.0, 20.0],
            0.0,
            0.0,
        );
        let plan = Planner::new(&workload).plan(&forecast).unwrap();
        let desired: Vec<u32> = plan.steps().iter().map(|step| step.desired).collect();
        // Window 15 min = 3 steps, then at most 2 replicas per step.
        assert_eq!(desired, [15, 15, 15, 15, 13, 13, 13, 11]);
        assert_eq!(plan.steps()[4].reason, Some(Reason::HeldByScaleIn));
    }

    #[test]
    fn starts_from_running_replicas_and_carries_reactive() {
        let workload = workload();
        let forecast = forecast(&[20.0; 4], 0.0, 0.0);
        let observation = Observation {
            at: Timestamp::from_millis(-STEP_MILLIS),
            load: 130.0,
            replicas: 10,
        };
        let plan = Planner::new(&workload)
            .latest(observation)
            .plan(&forecast)
            .unwrap();
        // Running 10, the policy allows 2 fewer per step and no window has started yet.
        assert_eq!(plan.steps()[0].desired, 8);
        let reactive = plan.reactive().unwrap();
        assert_eq!(reactive.replicas, 13);
        assert_eq!(
            plan.executor_target(Timestamp::from_millis(0), reactive.replicas),
            Some(13)
        );
        assert_eq!(
            plan.executor_target(Timestamp::from_millis(0), 99),
            Some(20)
        );
    }

    #[test]
    fn max_breach_honours_or_raises() {
        let forecast = forecast(&[300.0, 300.0], 0.0, 0.0);
        let honour = workload();
        let plan = Planner::new(&honour).plan(&forecast).unwrap();
        assert_eq!(plan.steps()[0].desired, 20);
        let raise = WorkloadParams::new("api", "requests", 10.0, 20, Duration::ZERO)
            .target_utilisation(100.0)
            .max_capacity_breach(MaxCapacityBreach::Increase {
                buffer_percent: 10.0,
            })
            .check()
            .unwrap();
        let plan = Planner::new(&raise).plan(&forecast).unwrap();
        assert_eq!(plan.steps()[0].desired, 30);
        assert_eq!(plan.steps()[0].ceiling, 33);
        assert_eq!(
            plan.executor_target(Timestamp::from_millis(0), 50),
            Some(33)
        );
    }

    #[test]
    fn reasons_name_events_and_daily_ramps() {
        let workload = WorkloadParams::new("api", "requests", 10.0, 100, Duration::ZERO)
            .target_utilisation(100.0)
            .stabilisation_window(Duration::ZERO)
            .check()
            .unwrap();
        let steps_per_day = usize::try_from(DAY_MILLIS / STEP_MILLIS).unwrap();
        // Two days of a daily square wave: up at 08:00, down at 20:00.
        let point: Vec<f64> = (0..2 * steps_per_day)
            .map(|index| {
                let hour = (index % steps_per_day) * 24 / steps_per_day;
                if (8..20).contains(&hour) { 200.0 } else { 50.0 }
            })
            .collect();
        let forecast = forecast(&point, 0.0, 0.0);
        let event_start = forecast.time_at(steps_per_day + 8 * 12);
        let annotations = [Annotation {
            range: TimeRange::new(event_start, event_start.saturating_add_millis(STEP_MILLIS))
                .unwrap(),
            label: "launch".to_owned(),
        }];
        let plan = Planner::new(&workload)
            .annotations(&annotations)
            .plan(&forecast)
            .unwrap();
        let reasons: Vec<String> = plan
            .changes()
            .map(|step| step.reason.as_ref().unwrap().to_string())
            .collect();
        // Day one has no earlier day to compare with; day two repeats it.
        assert_eq!(
            reasons,
            ["initial", "trend", "trend", "event: launch", "daily ramp"]
        );
        assert!(plan.to_string().contains("event: launch"));
    }

    #[test]
    fn missing_level_and_empty_forecast_are_errors() {
        let workload = workload();
        let bare = Forecast::new(Timestamp::from_millis(0), step(), vec![1.0], Vec::new());
        assert!(matches!(
            Planner::new(&workload).plan(&bare),
            Err(PlanError::MissingLevel { .. })
        ));
        let empty = Forecast::new(Timestamp::from_millis(0), step(), Vec::new(), Vec::new());
        assert!(matches!(
            Planner::new(&workload).plan(&empty),
            Err(PlanError::EmptyForecast)
        ));
    }

    fn arbitrary_case() -> impl Strategy<Value = (Workload, Forecast, Option<u32>)> {
        (
            1u32..5,
            0u32..30,
            proptest::option::of(1u32..6),
            0u64..6,
            any::<bool>(),
            prop::collection::vec((0.0f64..400.0, 0.0f64..60.0, 0.0f64..60.0), 1..80),
            proptest::option::of(0u32..60),
        )
            .prop_map(
                |(min, extra, max_step_down, window_steps, raise, loads, running)| {
                    let breach = if raise {
                        MaxCapacityBreach::Increase {
                            buffer_percent: 20.0,
                        }
                    } else {
                        MaxCapacityBreach::Honour
                    };
                    let workload = WorkloadParams::new(
                        "api",
                        "requests",
                        10.0,
                        min + extra,
                        Duration::from_secs(300),
                    )
                    .min_replicas(min)
                    .target_utilisation(80.0)
                    .max_step_down(max_step_down)
                    .stabilisation_window(Duration::from_millis(
                        window_steps * STEP_MILLIS.unsigned_abs(),
                    ))
                    .max_capacity_breach(breach)
                    .check()
                    .expect("generated parameters are in range");
                    let point: Vec<f64> = loads.iter().map(|(point, _, _)| *point).collect();
                    let inner = |sign: f64| -> Vec<f64> {
                        loads
                            .iter()
                            .map(|(point, inner, _)| point + sign * inner)
                            .collect()
                    };
                    let outer = |sign: f64| -> Vec<f64> {
                        loads
                            .iter()
                            .map(|(point, inner, outer)| point + sign * (inner + outer))
                            .collect()
                    };
                    let forecast = Forecast::new(
                        Timestamp::from_millis(0),
                        step(),
                        point,
                        vec![
                            Interval {
                                level: level(95.0),
                                lower: inner(-1.0),
                                upper: inner(1.0),
                            },
                            Interval {
                                level: level(99.0),
                                lower: outer(-1.0),
                                upper: outer(1.0),
                            },
                        ],
                    );
                    (workload, forecast, running)
                },
            )
    }

    proptest! {
        #[test]
        fn plans_respect_bounds_and_scale_in_policy((workload, forecast, running) in arbitrary_case()) {
            let mut planner = Planner::new(&workload);
            if let Some(replicas) = running {
                planner = planner.latest(Observation {
                    at: Timestamp::from_millis(-STEP_MILLIS),
                    load: 100.0,
                    replicas,
                });
            }
            let plan = planner.plan(&forecast).unwrap();
            prop_assert_eq!(plan.steps().len(), forecast.len());
            let policy = workload.scale_in();
            let window = i64::try_from(policy.stabilisation_window.as_millis()).unwrap();
            let honour = workload.max_capacity() == MaxCapacityBreach::Honour;
            let mut previous = running.map(|replicas| replicas.clamp(workload.min_replicas(), plan.steps()[0].ceiling));
            let mut last_change: Option<Timestamp> = None;
            for step in plan.steps() {
                prop_assert!(step.desired >= workload.min_replicas());
                prop_assert!(step.desired <= step.ceiling);
                if honour {
                    prop_assert!(step.desired <= workload.max_replicas());
                    prop_assert!(step.high <= workload.max_replicas());
                }
                prop_assert!(step.low <= step.desired && step.desired <= step.high);
                prop_assert!(step.expected_load.is_finite() && step.planned_load.is_finite());
                if let Some(previous) = previous {
                    if step.desired < previous {
                        let limit = policy.max_step_down.unwrap_or(u32::MAX);
                        prop_assert!(previous - step.desired <= limit, "stepped down {} -> {}", previous, step.desired);
                        if let Some(changed) = last_change {
                            prop_assert!(step.at.as_millis() - changed.as_millis() >= window,
                                "stepped down at {} within the window after a change at {}", step.at, changed);
                        }
                    }
                    if step.desired != previous {
                        last_change = Some(step.at);
                    }
                }
                previous = Some(step.desired);
            }
        }

        #[test]
        fn plans_never_fall_below_the_forecast_need((workload, forecast, _running) in arbitrary_case()) {
            let plan = Planner::new(&workload).plan(&forecast).unwrap();
            let upper = &forecast.interval(workload.planning_level()).unwrap().upper;
            for (step, load) in plan.steps().iter().zip(upper) {
                let need = workload.replicas_for(*load).clamp(workload.min_replicas(), step.ceiling);
                prop_assert!(step.desired >= need);
            }
        }
    }
}
