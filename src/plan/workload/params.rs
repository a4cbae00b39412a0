//! `workload.toml` as written: the tables, their defaults, and the check that turns them into a
//! [`Workload`].

use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{MaxCapacityBreach, Mode, ScaleInPolicy, Slo, Workload};
use crate::domain::{Level, PrometheusSource, SeriesId, check_workload_name, duration_text};
use crate::plan::PlanError;

/// Longest accepted warm-up or stabilisation window: beyond a day the plan's horizon would have to be
/// longer than any forecast worth trusting.
const LONGEST_DURATION: Duration = Duration::from_secs(24 * 3600);

/// A workload as written in `workload.toml`, before validation (linfa's ParamGuard pattern).
///
/// | Name | Default | Purpose | Range |
/// |---|---|---|---|
/// | `name` | required | Name shown in plans and logs | 1 to 200 bytes of ASCII letters, digits and `_ : . -` (see [`check_workload_name`]) |
/// | `series` | required | Series selector holding the load, e.g. `http_requests{svc="api"}` | a valid selector |
/// | `capacity_per_replica` | required | Load units one replica serves at 100% | finite, > 0 |
/// | `target_utilisation` | `70` | Percent of a replica's capacity to plan for | (0, 100] |
/// | `min_replicas` | `1` | Floor of every plan | 0 ..= `max_replicas` |
/// | `max_replicas` | required | Ceiling, unless `max_capacity.breach = "increase"` | >= 1 |
/// | `warm_up` | required | Time from asking for a replica to its serving, e.g. `"10m"` | 0 ..= 24h |
/// | `planning_level` | `95` | Interval level (percent) whose upper bound is planned on; when written, it wins over `slo` | (0, 100), offered by the forecaster |
/// | `slo.max_short_steps` | none | Service-level objective: share of steps allowed short of capacity, e.g. `"1%"`; the planning level is then chosen by replay | (0%, 50%] |
/// | `mode` | `"forecast-only"` | `forecast-only` or `forecast-and-scale` | |
/// | `scale_in.max_step_down` | unlimited | Replicas removed at most per plan step | >= 1 |
/// | `scale_in.stabilisation_window` | `"5m"` | Hold time after a change before stepping down (Kubernetes default 300 s) | 0 ..= 24h |
/// | `max_capacity.breach` | `"honour"` | `honour` or `increase` (AWS `MaxCapacityBreachBehavior`) | |
/// | `max_capacity.buffer_percent` | `10` when increasing | Headroom above the forecast need when increasing | 0 ..= 100 |
/// | `source.prometheus` | none (pushed) | Pull `series` from a Prometheus-compatible API instead (see `PrometheusSource`) | |
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadParams {
    name: String,
    series: String,
    capacity_per_replica: f64,
    #[serde(default = "default_target_utilisation")]
    target_utilisation: f64,
    #[serde(default = "default_min_replicas")]
    min_replicas: u32,
    max_replicas: u32,
    #[serde(with = "duration_text")]
    warm_up: Duration,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    planning_level: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    slo: Option<SloParams>,
    #[serde(default)]
    mode: Mode,
    #[serde(default)]
    scale_in: ScaleInParams,
    #[serde(default)]
    max_capacity: MaxCapacityParams,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    source: Option<SourceParams>,
}

/// The `source` table as written: one key naming the kind of source.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct SourceParams {
    prometheus: PrometheusSource,
}

/// The `slo` table as written.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct SloParams {
    /// Share of steps allowed short, in percent with a `%` sign, e.g. `"1%"`.
    max_short_steps: String,
}

/// The `[scale_in]` table as written.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct ScaleInParams {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    max_step_down: Option<u32>,
    #[serde(default = "default_stabilisation_window", with = "duration_text")]
    stabilisation_window: Duration,
}

impl Default for ScaleInParams {
    fn default() -> Self {
        Self {
            max_step_down: None,
            stabilisation_window: default_stabilisation_window(),
        }
    }
}

/// The `[max_capacity]` table as written.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct MaxCapacityParams {
    #[serde(default)]
    breach: BreachName,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    buffer_percent: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
enum BreachName {
    #[default]
    Honour,
    Increase,
}

fn default_target_utilisation() -> f64 {
    70.0
}

fn default_min_replicas() -> u32 {
    1
}

fn default_planning_level() -> f64 {
    95.0
}

fn default_stabilisation_window() -> Duration {
    Duration::from_secs(300)
}

impl WorkloadParams {
    /// Parameters with the required values and every other value at its default.
    pub fn new(
        name: &str,
        series: &str,
        capacity_per_replica: f64,
        max_replicas: u32,
        warm_up: Duration,
    ) -> Self {
        Self {
            name: name.to_owned(),
            series: series.to_owned(),
            capacity_per_replica,
            target_utilisation: default_target_utilisation(),
            min_replicas: default_min_replicas(),
            max_replicas,
            warm_up,
            planning_level: None,
            slo: None,
            mode: Mode::default(),
            scale_in: ScaleInParams::default(),
            max_capacity: MaxCapacityParams::default(),
            source: None,
        }
    }

    /// Pulls the workload's series from `source` instead of waiting for it to be pushed.
    #[must_use]
    pub fn source(mut self, source: Option<PrometheusSource>) -> Self {
        self.source = source.map(|prometheus| SourceParams { prometheus });
        self
    }

    /// Parses `workload.toml` text; unknown keys are errors. Call [`WorkloadParams::check`] next.
    pub fn from_toml(text: &str) -> Result<Self, PlanError> {
        toml::from_str(text).map_err(|error| PlanError::ParseWorkload {
            message: error.to_string(),
        })
    }

    /// Sets the target utilisation in percent.
    #[must_use]
    pub fn target_utilisation(mut self, percent: f64) -> Self {
        self.target_utilisation = percent;
        self
    }

    /// Sets the floor of every plan.
    #[must_use]
    pub fn min_replicas(mut self, replicas: u32) -> Self {
        self.min_replicas = replicas;
        self
    }

    /// Sets the interval level, in percent, whose upper bound is planned on.
    #[must_use]
    pub fn planning_level(mut self, percent: f64) -> Self {
        self.planning_level = Some(percent);
        self
    }

    /// Sets the service-level objective, e.g. `"1%"` of steps short at most (`None`: none).
    #[must_use]
    pub fn slo_max_short_steps(mut self, text: Option<&str>) -> Self {
        self.slo = text.map(|text| SloParams {
            max_short_steps: text.to_owned(),
        });
        self
    }

    /// Sets whether plans are acted on.
    #[must_use]
    pub fn mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }

    /// Sets the largest step down per plan step (`None`: no limit).
    #[must_use]
    pub fn max_step_down(mut self, replicas: Option<u32>) -> Self {
        self.scale_in.max_step_down = replicas;
        self
    }

    /// Sets the scale-in stabilisation window.
    #[must_use]
    pub fn stabilisation_window(mut self, window: Duration) -> Self {
        self.scale_in.stabilisation_window = window;
        self
    }

    /// Sets what happens when the forecast needs more than `max_replicas`.
    #[must_use]
    pub fn max_capacity_breach(mut self, breach: MaxCapacityBreach) -> Self {
        self.max_capacity = match breach {
            MaxCapacityBreach::Honour => MaxCapacityParams::default(),
            MaxCapacityBreach::Increase { buffer_percent } => MaxCapacityParams {
                breach: BreachName::Increase,
                buffer_percent: Some(buffer_percent),
            },
        };
        self
    }

    /// Validates every value and returns the workload planners accept.
    pub fn check(&self) -> Result<Workload, PlanError> {
        let invalid =
            |field: &'static str, reason: String| PlanError::InvalidWorkload { field, reason };
        check_workload_name(self.name.trim())
            .map_err(|reason| invalid("name", reason.to_owned()))?;
        let series = SeriesId::from_str(&self.series)
            .map_err(|error| invalid("series", error.to_string()))?;
        if !(self.capacity_per_replica.is_finite() && self.capacity_per_replica > 0.0) {
            return Err(invalid(
                "capacity_per_replica",
                format!("{} must be a positive number", self.capacity_per_replica),
            ));
        }
        if !(self.target_utilisation > 0.0 && self.target_utilisation <= 100.0) {
            return Err(invalid(
                "target_utilisation",
                format!(
                    "{} must be a percentage in (0, 100]",
                    self.target_utilisation
                ),
            ));
        }
        if self.max_replicas == 0 {
            return Err(invalid("max_replicas", "must be at least 1".to_owned()));
        }
        if self.min_replicas > self.max_replicas {
            return Err(invalid(
                "min_replicas",
                format!(
                    "{} is above max_replicas {}",
                    self.min_replicas, self.max_replicas
                ),
            ));
        }
        check_duration("warm_up", self.warm_up)?;
        let level_percent = self.planning_level.unwrap_or_else(default_planning_level);
        let planning_level = Level::from_percent(level_percent).map_err(|_| {
            invalid(
                "planning_level",
                format!("{level_percent} must be a percentage in (0, 100)"),
            )
        })?;
        let slo = self
            .slo
            .as_ref()
            .map(|slo| parse_short_share(&slo.max_short_steps))
            .transpose()
            .map_err(|reason| invalid("slo.max_short_steps", reason))?
            .map(|max_short_share| Slo { max_short_share });
        if self.scale_in.max_step_down == Some(0) {
            return Err(invalid(
                "scale_in.max_step_down",
                "must be at least 1; leave it out for no limit".to_owned(),
            ));
        }
        check_duration(
            "scale_in.stabilisation_window",
            self.scale_in.stabilisation_window,
        )?;
        let breach = match (self.max_capacity.breach, self.max_capacity.buffer_percent) {
            (BreachName::Honour, None) => MaxCapacityBreach::Honour,
            (BreachName::Honour, Some(_)) => {
                return Err(invalid(
                    "max_capacity.buffer_percent",
                    "only applies with breach = \"increase\"".to_owned(),
                ));
            }
            (BreachName::Increase, buffer) => {
                let buffer_percent = buffer.unwrap_or(10.0);
                if !(0.0..=100.0).contains(&buffer_percent) {
                    return Err(invalid(
                        "max_capacity.buffer_percent",
                        format!("{buffer_percent} is outside 0..=100"),
                    ));
                }
                MaxCapacityBreach::Increase { buffer_percent }
            }
        };
        Ok(Workload {
            name: self.name.trim().to_owned(),
            series,
            capacity_per_replica: self.capacity_per_replica,
            target_utilisation: self.target_utilisation / 100.0,
            min_replicas: self.min_replicas,
            max_replicas: self.max_replicas,
            warm_up: self.warm_up,
            planning_level,
            planning_headroom: 1.0,
            planning_level_explicit: self.planning_level.is_some(),
            slo,
            mode: self.mode,
            scale_in: ScaleInPolicy {
                max_step_down: self.scale_in.max_step_down,
                stabilisation_window: self.scale_in.stabilisation_window,
            },
            max_capacity: breach,
            source: self.source.as_ref().map(|source| source.prometheus.clone()),
        })
    }
}

impl From<&Workload> for WorkloadParams {
    /// The parameters that validate back into `workload` (how workloads are stored and shown).
    fn from(workload: &Workload) -> Self {
        let (breach, buffer_percent) = match workload.max_capacity {
            MaxCapacityBreach::Honour => (BreachName::Honour, None),
            MaxCapacityBreach::Increase { buffer_percent } => {
                (BreachName::Increase, Some(buffer_percent))
            }
        };
        Self {
            name: workload.name.clone(),
            series: workload.series.to_string(),
            capacity_per_replica: workload.capacity_per_replica,
            target_utilisation: workload.target_utilisation * 100.0,
            min_replicas: workload.min_replicas,
            max_replicas: workload.max_replicas,
            warm_up: workload.warm_up,
            planning_level: workload
                .planning_level_explicit
                .then(|| workload.planning_level.percent()),
            slo: workload.slo.map(|slo| SloParams {
                max_short_steps: slo.text(),
            }),
            mode: workload.mode,
            scale_in: ScaleInParams {
                max_step_down: workload.scale_in.max_step_down,
                stabilisation_window: workload.scale_in.stabilisation_window,
            },
            max_capacity: MaxCapacityParams {
                breach,
                buffer_percent,
            },
            source: workload
                .source
                .clone()
                .map(|prometheus| SourceParams { prometheus }),
        }
    }
}

impl TryFrom<WorkloadParams> for Workload {
    type Error = PlanError;

    fn try_from(params: WorkloadParams) -> Result<Self, Self::Error> {
        params.check()
    }
}

/// `"1%"` as the share 0.01: a percentage with its sign, above 0 and at most 50.
fn parse_short_share(text: &str) -> Result<f64, String> {
    let percent = text
        .trim()
        .strip_suffix('%')
        .and_then(|number| number.trim().parse::<f64>().ok())
        .ok_or_else(|| format!("{text:?} is not a percentage such as \"1%\""))?;
    if !(percent > 0.0 && percent <= 50.0) {
        return Err(format!("{text:?} must lie in (0%, 50%]"));
    }
    Ok(percent / 100.0)
}

fn check_duration(field: &'static str, duration: Duration) -> Result<(), PlanError> {
    if duration > LONGEST_DURATION {
        return Err(PlanError::InvalidWorkload {
            field,
            reason: format!(
                "{} is longer than 24h",
                humantime::format_duration(duration)
            ),
        });
    }
    Ok(())
}
