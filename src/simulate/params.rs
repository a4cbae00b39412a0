//! Replay settings, validated against the series step into a [`Simulation`].

use std::time::Duration;

use super::{DAY_MILLIS, SimulateError};
use crate::domain::Step;
use crate::events::EventCalendar;

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

impl Simulation {
    /// The executor and HPA of a replay with the default settings (15 s sync, or one step when
    /// 15 s does not divide it; 300 s scale-down stabilisation), for replaying backtest folds of
    /// a series at `step` (see [`Simulation::choose_rule`]).
    pub fn executor_defaults(step: Step) -> Self {
        let defaults = SimulationParams::new(1.0, step.as_duration());
        let sync_millis = i64::try_from(defaults.sync_period.as_millis()).unwrap_or(i64::MAX);
        Self {
            scored_steps: 0,
            replan_steps: 1,
            horizon_millis: None,
            window_steps: None,
            sync_millis: if step.as_millis() % sync_millis == 0 {
                sync_millis
            } else {
                step.as_millis()
            },
            stabilisation_millis: i64::try_from(defaults.scale_down_stabilisation.as_millis())
                .unwrap_or(i64::MAX),
            events: EventCalendar::default(),
            reactive: true,
        }
    }
}

/// A validated replay, ready to run on histories at the step it was checked against.
#[derive(Debug, Clone)]
pub struct Simulation {
    /// Steps at the end of the history that are scored (the replayed days).
    pub(super) scored_steps: usize,
    /// Steps between replans.
    pub(super) replan_steps: usize,
    /// Forecast length asked for, when longer than the default (`replan_every + warm-up + 1 step`).
    pub(super) horizon_millis: Option<i64>,
    /// Newest steps each replan forecasts from; `None`: all before it.
    pub(super) window_steps: Option<usize>,
    /// HPA and executor loop period.
    pub(super) sync_millis: i64,
    /// HPA scale-down stabilisation window.
    pub(super) stabilisation_millis: i64,
    /// Planned events, past and upcoming.
    pub(super) events: EventCalendar,
    /// Whether the predictive executor also applies the HPA (`max(planned, reactive)`).
    pub(super) reactive: bool,
}
