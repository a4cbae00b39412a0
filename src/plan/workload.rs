//! A workload: which series carries its load and how load becomes replicas.
//!
//! [`Workload`] is the validated form planners accept; [`WorkloadParams`] (in `params.rs`) is the
//! form `workload.toml` is written in, checked into a `Workload`.

mod params;

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use params::WorkloadParams;

use super::PlanError;
use crate::domain::{Level, PrometheusSource, SeriesId};

/// Whether plans for a workload are only published or also acted on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Plans are published for people and dashboards; no executor is told to act.
    #[default]
    ForecastOnly,
    /// Plans are published and executors apply them.
    ForecastAndScale,
}

impl Mode {
    /// The name used in `workload.toml`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ForecastOnly => "forecast-only",
            Self::ForecastAndScale => "forecast-and-scale",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Mode {
    type Err = PlanError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.trim() {
            "forecast-only" => Ok(Self::ForecastOnly),
            "forecast-and-scale" => Ok(Self::ForecastAndScale),
            other => Err(PlanError::InvalidWorkload {
                field: "mode",
                reason: format!("{other:?} is neither forecast-only nor forecast-and-scale"),
            }),
        }
    }
}

/// What a plan does when the forecast needs more replicas than `max_replicas`.
///
/// Follows AWS EC2 Auto Scaling predictive scaling's `MaxCapacityBreachBehavior`
/// (`HonorMaxCapacity` / `IncreaseMaxCapacity` with `MaxCapacityBuffer`, a percentage of the forecast
/// capacity from 0 to 100): with a buffer of 10 and a forecast need of 50 against a maximum of 40, the
/// effective maximum becomes 55.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MaxCapacityBreach {
    /// Never plan above `max_replicas`.
    Honour,
    /// Plan the forecast need; the effective maximum becomes the need plus `buffer_percent` of it.
    Increase {
        /// Headroom above the forecast need, in percent of it, from 0 to 100.
        buffer_percent: f64,
    },
}

/// How fast a plan may scale in.
///
/// Modelled on the Kubernetes HPA `behavior.scaleDown` settings (`policies` of type `Pods` and
/// `stabilizationWindowSeconds`), made stricter so that a plan holds still for a whole window after
/// any change before it steps down again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScaleInPolicy {
    /// Largest number of replicas removed from one plan step to the next; `None` is no limit.
    pub max_step_down: Option<u32>,
    /// After any change, the plan does not step down again until this much time has passed, and a
    /// step down never goes below the highest need seen within the window.
    pub stabilisation_window: Duration,
}

/// A service-level objective: at most this share of observed series steps may find demand above
/// the capacity serving (as the replay scores them). With one, prescale plans each workload on the
/// rule that met it at the least replica-hours in a replay of its model's backtest (see
/// `crate::simulate::choose_rule`), unless `planning_level` is set explicitly, which wins.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Slo {
    /// Largest share of short steps, in (0, 0.5].
    pub max_short_share: f64,
}

impl Slo {
    /// The objective as written in `workload.toml`, e.g. `"1%"`.
    pub fn text(self) -> String {
        // Rounded so that the share parsed back is the same float (0.07 * 100 is 7.000000000000001).
        format!("{}%", (self.max_short_share * 1e11).round() / 1e9)
    }
}

/// What a plan is sized on: the upper bound of the forecast's interval at `level`, times
/// `headroom`. A headroom of 1 plans on the bound itself (every rule without an SLO); above 1 on a
/// narrow band it is the HPA's own rule, a target utilisation, applied to the forecast instead of
/// the last load. See `docs/decisions.md`, "Planning for a service level".
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PlanningRule {
    /// The interval level whose upper bound is planned on.
    pub level: Level,
    /// Factor on that bound, at least 1.
    pub headroom: f64,
}

impl PlanningRule {
    /// Planning on `level`'s upper bound itself.
    pub fn upper_bound(level: Level) -> Self {
        Self {
            level,
            headroom: 1.0,
        }
    }

    /// Whether the rule adds headroom to its bound.
    pub fn has_headroom(&self) -> bool {
        self.headroom > 1.0
    }

    /// How a rule received as numbers reads (a plan's `planning_level`, a percentage, and its
    /// `planning_headroom`): as [`Display`](fmt::Display) shows it, or, with a level out of
    /// range, as given.
    pub fn text(level_percent: f64, headroom: f64) -> String {
        match Level::from_percent(level_percent) {
            Ok(level) => PlanningRule { level, headroom }.to_string(),
            Err(_) => format!("{level_percent}% upper bound x{headroom}"),
        }
    }

    /// The rule in a table cell: the level (`95%`), times the headroom when it has one
    /// (`10%*1.5`).
    pub fn label(&self) -> String {
        if self.has_headroom() {
            format!("{}%*{}", self.level.percent(), self.headroom)
        } else {
            format!("{}%", self.level.percent())
        }
    }
}

impl fmt::Display for PlanningRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.has_headroom() {
            write!(
                f,
                "{}% upper bound x{}",
                self.level.percent(),
                self.headroom
            )
        } else {
            write!(f, "{}% upper bound", self.level.percent())
        }
    }
}

/// A validated workload: built by [`WorkloadParams::check`], so every value is in range.
///
/// It also deserialises directly (through [`WorkloadParams`] and its check), so a larger config file
/// can hold `[[workload]]` tables and fail at load time on a bad value.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "WorkloadParams")]
pub struct Workload {
    name: String,
    series: SeriesId,
    capacity_per_replica: f64,
    target_utilisation: f64,
    min_replicas: u32,
    max_replicas: u32,
    warm_up: Duration,
    planning_level: Level,
    /// Factor on the planning level's upper bound (1 unless an SLO chose a headroom rule).
    planning_headroom: f64,
    /// Whether `planning_level` was written (it then wins over `slo`).
    planning_level_explicit: bool,
    slo: Option<Slo>,
    mode: Mode,
    scale_in: ScaleInPolicy,
    max_capacity: MaxCapacityBreach,
    source: Option<PrometheusSource>,
}

impl Workload {
    /// Reads and validates `workload.toml` text.
    pub fn from_toml(text: &str) -> Result<Self, PlanError> {
        WorkloadParams::from_toml(text)?.check()
    }

    /// The workload's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The series holding its load.
    pub fn series(&self) -> &SeriesId {
        &self.series
    }

    /// Load units one replica serves at 100%.
    pub fn capacity_per_replica(&self) -> f64 {
        self.capacity_per_replica
    }

    /// Target utilisation as a fraction in (0, 1].
    pub fn target_utilisation(&self) -> f64 {
        self.target_utilisation
    }

    /// Floor of every plan.
    pub fn min_replicas(&self) -> u32 {
        self.min_replicas
    }

    /// Configured ceiling (see [`Workload::max_capacity`] for what happens beyond it).
    pub fn max_replicas(&self) -> u32 {
        self.max_replicas
    }

    /// Time from asking for a replica to its serving.
    pub fn warm_up(&self) -> Duration {
        self.warm_up
    }

    /// Interval level whose upper bound is planned on (95% unless set; see [`Workload::slo`]).
    pub fn planning_level(&self) -> Level {
        self.planning_level
    }

    /// Factor the planning level's upper bound is multiplied by before sizing: 1, unless the SLO
    /// chose a headroom rule (see [`PlanningRule`]).
    pub fn planning_headroom(&self) -> f64 {
        self.planning_headroom
    }

    /// The rule plans are made on: the planning level and its headroom.
    pub fn planning_rule(&self) -> PlanningRule {
        PlanningRule {
            level: self.planning_level,
            headroom: self.planning_headroom,
        }
    }

    /// Whether `planning_level` was set explicitly: it then wins over the SLO.
    pub fn planning_level_is_explicit(&self) -> bool {
        self.planning_level_explicit
    }

    /// The service-level objective, if any.
    pub fn slo(&self) -> Option<Slo> {
        self.slo
    }

    /// The same workload planning on `level`'s upper bound itself.
    pub fn with_planning_level(&self, level: Level) -> Self {
        self.with_planning_rule(PlanningRule::upper_bound(level))
    }

    /// The same workload planning on `rule` (the rule an SLO chose).
    pub fn with_planning_rule(&self, rule: PlanningRule) -> Self {
        Self {
            planning_level: rule.level,
            planning_headroom: rule.headroom,
            ..self.clone()
        }
    }

    /// The same workload with another target utilisation, a fraction in (0, 1] (the HPA the
    /// replay compares at equal cost).
    pub fn with_target_utilisation(&self, fraction: f64) -> Self {
        Self {
            target_utilisation: fraction.clamp(f64::MIN_POSITIVE, 1.0),
            ..self.clone()
        }
    }

    /// Whether plans are acted on.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// How fast plans may scale in.
    pub fn scale_in(&self) -> ScaleInPolicy {
        self.scale_in
    }

    /// What happens when the forecast needs more than `max_replicas`.
    pub fn max_capacity(&self) -> MaxCapacityBreach {
        self.max_capacity
    }

    /// Where the series is pulled from; `None` when it is pushed (ingest, import).
    pub fn source(&self) -> Option<&PrometheusSource> {
        self.source.as_ref()
    }

    /// Load one replica is planned to carry: its capacity at the target utilisation.
    pub fn load_per_replica(&self) -> f64 {
        self.capacity_per_replica * self.target_utilisation
    }

    /// Replicas needed to carry `load` at the target utilisation, before min/max; 0 for no load.
    ///
    /// Non-finite or negative load counts as none, so a plan never inherits a NaN.
    pub fn replicas_for(&self, load: f64) -> u32 {
        if !(load.is_finite() && load > 0.0) {
            return 0;
        }
        // A relative slack keeps 7.000000000001 (rounding noise) from costing an eighth replica.
        let exact = load / self.load_per_replica();
        let replicas = (exact * (1.0 - 1e-12)).ceil();
        if replicas >= f64::from(u32::MAX) {
            u32::MAX
        } else {
            replicas as u32
        }
    }

    /// Replicas presumed running when only the load is known: what `load` needs, within
    /// `min_replicas` and the effective ceiling (a fleet the HPA scaled is never outside them).
    pub fn presumed_running(&self, load: f64) -> u32 {
        let need = self.replicas_for(load);
        need.clamp(self.min_replicas(), self.ceiling_for(need))
    }

    /// Effective ceiling for a step whose unclamped need is `need`, per [`MaxCapacityBreach`].
    pub fn ceiling_for(&self, need: u32) -> u32 {
        match self.max_capacity {
            MaxCapacityBreach::Honour => self.max_replicas,
            MaxCapacityBreach::Increase { buffer_percent } if need > self.max_replicas => {
                // The same slack as `replicas_for`: 30 * 1.1 must give 33, not 34.
                let buffered =
                    (f64::from(need) * (1.0 + buffer_percent / 100.0) * (1.0 - 1e-12)).ceil();
                self.max_replicas
                    .max(buffered.min(f64::from(u32::MAX)) as u32)
            }
            MaxCapacityBreach::Increase { .. } => self.max_replicas,
        }
    }

    /// What an oracle that knows the demand would run: the same workload with scale-in
    /// unrestricted, planned on the demand itself (no headroom).
    pub(crate) fn as_oracle(&self) -> Self {
        Self {
            planning_headroom: 1.0,
            scale_in: ScaleInPolicy {
                max_step_down: None,
                stabilisation_window: Duration::ZERO,
            },
            ..self.clone()
        }
    }
}

#[cfg(test)]
mod tests;
