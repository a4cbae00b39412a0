//! A capacity plan and its parts: the replicas per step, why each change happens, and the
//! executor rule that reads it (`min(ceiling, max(planned, reactive))`, warm-up applied on read).

use std::time::Duration;

use super::{Mode, Reactive};
use crate::domain::{Level, Step, TimeRange, Timestamp};

/// A labelled stretch of time the planner names as the reason for changes inside it, such as a
/// planned event (`label` = the event's name).
#[derive(Debug, Clone, PartialEq)]
pub struct Annotation {
    /// The stretch of time, pre-warm included.
    pub range: TimeRange,
    /// Shown as `event: LABEL`.
    pub label: String,
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
    /// The load planned for: the upper bound at the planning level, times the rule's headroom.
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
    pub(super) workload: String,
    /// Whether executors act on the plan.
    pub(super) mode: Mode,
    /// Spacing of the steps (the forecast's step).
    pub(super) step: Step,
    /// How far ahead of a step its replicas are requested.
    pub(super) warm_up: Duration,
    /// The interval level planned on.
    pub(super) level: Level,
    /// Factor on that level's upper bound (1: the bound itself).
    pub(super) headroom: f64,
    /// One per forecast step, never empty.
    pub(super) steps: Vec<PlanStep>,
    /// HPA recommendation from the latest observation, when one was given.
    pub(super) reactive: Option<Reactive>,
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

    /// Factor the planning level's upper bound was multiplied by (1: the bound itself).
    pub fn headroom(&self) -> f64 {
        self.headroom
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
    /// and for every step up to the one that replicas requested now would serve once warm (the
    /// steps [`steps_in_force`] names). `None` outside `[start - step - warm_up, end)`.
    pub fn target_at(&self, time: Timestamp) -> Option<u32> {
        self.now_or_warm(time, |step| step.desired)
    }

    /// Effective maximum at `time` (the largest over the steps [`Plan::target_at`] looks at).
    pub fn ceiling_at(&self, time: Timestamp) -> Option<u32> {
        self.now_or_warm(time, |step| step.ceiling)
    }

    /// The largest `pick` over the steps [`steps_in_force`] names at `time`.
    fn now_or_warm(&self, time: Timestamp, pick: impl Fn(&PlanStep) -> u32) -> Option<u32> {
        let in_force = steps_in_force(
            self.start(),
            self.step,
            self.warm_up,
            self.steps.len(),
            time,
        )?;
        self.steps[in_force].iter().map(pick).max()
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

/// The steps an executor sizes on at `time`, as indices into a plan of `len` steps starting at
/// `start`: from the one holding `time` to the one holding `time + warm_up` (where replicas
/// requested at `time` start serving; the last step whose request time has come). Every step in
/// between counts: when the warm-up spans more than one step, replicas asked for a step are still
/// warming at the step before it, and a lower need there must not cancel them.
///
/// A plan starts at the step after the newest sample, and is made while that sample's step is
/// being served: from one step before its first request time (`start - step - warm_up`) to that
/// time, the first step is in force, a little early rather than not at all. `None` outside
/// `[start - step - warm_up, end)`. [`Plan::target_at`] reads a plan with it, and clients that
/// hold a plan's columns (`prescale workloads show`) read them with it too.
pub fn steps_in_force(
    start: Timestamp,
    step: Step,
    warm_up: Duration,
    len: usize,
    time: Timestamp,
) -> Option<std::ops::RangeInclusive<usize>> {
    let warm_up = i64::try_from(warm_up.as_millis()).unwrap_or(i64::MAX);
    let step = step.as_millis();
    let start = start.as_millis();
    let index = |at: i64| at.saturating_sub(start).div_euclid(step);
    let last_index = i64::try_from(len).unwrap_or(i64::MAX) - 1;
    let first = index(time.as_millis()).max(0);
    let mut last = index(time.as_millis().saturating_add(warm_up)).min(last_index);
    if last == -1 {
        // The step before the plan's: the one whose newest sample the plan was made after.
        last = 0;
    }
    if first > last {
        return None;
    }
    Some(usize::try_from(first).ok()?..=usize::try_from(last).ok()?)
}
