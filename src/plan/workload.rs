//! A workload: which series carries its load and how load becomes replicas.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::PlanError;
use crate::domain::{Level, SeriesId};

/// Longest accepted warm-up or stabilisation window: beyond a day the plan's horizon would have to be
/// longer than any forecast worth trusting.
const LONGEST_DURATION: Duration = Duration::from_secs(24 * 3600);

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

/// A workload as written in `workload.toml`, before validation (linfa's ParamGuard pattern).
///
/// | Name | Default | Purpose | Range |
/// |---|---|---|---|
/// | `name` | required | Name shown in plans and logs | non-empty |
/// | `series` | required | Series selector holding the load, e.g. `http_requests{svc="api"}` | a valid selector |
/// | `capacity_per_replica` | required | Load units one replica serves at 100% | finite, > 0 |
/// | `target_utilisation` | `70` | Percent of a replica's capacity to plan for | (0, 100] |
/// | `min_replicas` | `1` | Floor of every plan | 0 ..= `max_replicas` |
/// | `max_replicas` | required | Ceiling, unless `max_capacity.breach = "increase"` | >= 1 |
/// | `warm_up` | required | Time from asking for a replica to its serving, e.g. `"10m"` | 0 ..= 24h |
/// | `planning_level` | `95` | Interval level (percent) whose upper bound is planned on | (0, 100), offered by the forecaster |
/// | `mode` | `"forecast-only"` | `forecast-only` or `forecast-and-scale` | |
/// | `scale_in.max_step_down` | unlimited | Replicas removed at most per plan step | >= 1 |
/// | `scale_in.stabilisation_window` | `"5m"` | Hold time after a change before stepping down (Kubernetes default 300 s) | 0 ..= 24h |
/// | `max_capacity.breach` | `"honour"` | `honour` or `increase` (AWS `MaxCapacityBreachBehavior`) | |
/// | `max_capacity.buffer_percent` | `10` when increasing | Headroom above the forecast need when increasing | 0 ..= 100 |
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
    #[serde(default = "default_planning_level")]
    planning_level: f64,
    #[serde(default)]
    mode: Mode,
    #[serde(default)]
    scale_in: ScaleInParams,
    #[serde(default)]
    max_capacity: MaxCapacityParams,
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

/// Reads and writes durations written for people (`"10m"`, `"1h 30m"`) with humantime.
mod duration_text {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(
        duration: &Duration,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&humantime::format_duration(*duration).to_string())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Duration, D::Error> {
        let text = String::deserialize(deserializer)?;
        humantime::parse_duration(text.trim())
            .map_err(|error| serde::de::Error::custom(format!("duration {text:?}: {error}")))
    }
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
            planning_level: default_planning_level(),
            mode: Mode::default(),
            scale_in: ScaleInParams::default(),
            max_capacity: MaxCapacityParams::default(),
        }
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
        self.planning_level = percent;
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
        if self.name.trim().is_empty() {
            return Err(invalid("name", "must not be empty".to_owned()));
        }
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
        let planning_level = Level::from_percent(self.planning_level).map_err(|_| {
            invalid(
                "planning_level",
                format!("{} must be a percentage in (0, 100)", self.planning_level),
            )
        })?;
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
            mode: self.mode,
            scale_in: ScaleInPolicy {
                max_step_down: self.scale_in.max_step_down,
                stabilisation_window: self.scale_in.stabilisation_window,
            },
            max_capacity: breach,
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
            planning_level: workload.planning_level.percent(),
            mode: workload.mode,
            scale_in: ScaleInParams {
                max_step_down: workload.scale_in.max_step_down,
                stabilisation_window: workload.scale_in.stabilisation_window,
            },
            max_capacity: MaxCapacityParams {
                breach,
                buffer_percent,
            },
        }
    }
}

impl TryFrom<WorkloadParams> for Workload {
    type Error = PlanError;

    fn try_from(params: WorkloadParams) -> Result<Self, Self::Error> {
        params.check()
    }
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
    mode: Mode,
    scale_in: ScaleInPolicy,
    max_capacity: MaxCapacityBreach,
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

    /// Interval level whose upper bound is planned on.
    pub fn planning_level(&self) -> Level {
        self.planning_level
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

    /// The same workload with scale-in unrestricted: what an oracle that knows the demand would run.
    pub(crate) fn without_scale_in_limits(&self) -> Self {
        Self {
            scale_in: ScaleInPolicy {
                max_step_down: None,
                stabilisation_window: Duration::ZERO,
            },
            ..self.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The commented example shipped beside `Cargo.toml`.
    const EXAMPLE: &str = include_str!("../../workload.example.toml");

    #[test]
    fn example_file_validates() {
        let workload = Workload::from_toml(EXAMPLE).unwrap();
        assert_eq!(workload.name(), "checkout");
        assert_eq!(workload.warm_up(), Duration::from_secs(600));
        assert_eq!(workload.mode(), Mode::ForecastAndScale);
        assert_eq!(workload.scale_in().max_step_down, Some(3));
        assert_eq!(
            workload.scale_in().stabilisation_window,
            Duration::from_secs(900)
        );
        assert_eq!(
            workload.max_capacity(),
            MaxCapacityBreach::Increase {
                buffer_percent: 10.0
            }
        );
        assert!((workload.load_per_replica() - 84.0).abs() < 1e-9);
    }

    #[test]
    fn stored_parameters_validate_back_into_the_same_workload() {
        let defaults = WorkloadParams::new("api", "requests", 10.0, 5, Duration::from_secs(90))
            .check()
            .unwrap();
        for workload in [Workload::from_toml(EXAMPLE).unwrap(), defaults] {
            let text = toml::to_string(&WorkloadParams::from(&workload)).unwrap();
            assert_eq!(Workload::from_toml(&text).unwrap(), workload, "{text}");
        }
    }

    #[test]
    fn defaults_fill_optional_keys() {
        let text = r#"
            name = "api"
            series = "requests"
            capacity_per_replica = 10
            max_replicas = 5
            warm_up = "2m"
        "#;
        let workload = Workload::from_toml(text).unwrap();
        assert_eq!(workload.min_replicas(), 1);
        assert_eq!(workload.mode(), Mode::ForecastOnly);
        assert_eq!(
            workload.planning_level(),
            Level::from_percent(95.0).unwrap()
        );
        assert_eq!(workload.max_capacity(), MaxCapacityBreach::Honour);
        assert_eq!(workload.scale_in().max_step_down, None);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let typo = EXAMPLE.replace("warm_up", "warmup");
        let error = Workload::from_toml(&typo).unwrap_err();
        assert!(
            matches!(&error, PlanError::ParseWorkload { message } if message.contains("warmup")),
            "{error}"
        );
        let cases = [
            ("min_replicas = 2", "min_replicas = 61", "min_replicas"),
            (
                "capacity_per_replica = 120.0",
                "capacity_per_replica = -1.0",
                "capacity_per_replica",
            ),
            (
                "target_utilisation = 70",
                "target_utilisation = 170",
                "target_utilisation",
            ),
            (
                "planning_level = 95",
                "planning_level = 100",
                "planning_level",
            ),
            (
                "buffer_percent = 10",
                "buffer_percent = 101",
                "max_capacity.buffer_percent",
            ),
            (
                "max_step_down = 3",
                "max_step_down = 0",
                "scale_in.max_step_down",
            ),
            ("warm_up = \"10m\"", "warm_up = \"3d\"", "warm_up"),
            ("series = 'http", "series = '9http", "series"),
        ];
        for (from, to, field) in cases {
            let text = EXAMPLE.replace(from, to);
            match Workload::from_toml(&text) {
                Err(PlanError::InvalidWorkload { field: got, .. }) => {
                    assert_eq!(got, field, "replacing {from:?}")
                }
                other => panic!("replacing {from:?}: expected an invalid {field}, got {other:?}"),
            }
        }
        let unparsable = EXAMPLE.replace("\"10m\"", "\"ten minutes\"");
        assert!(matches!(
            Workload::from_toml(&unparsable),
            Err(PlanError::ParseWorkload { .. })
        ));
    }

    #[test]
    fn deserialises_inside_a_larger_file() {
        #[derive(Debug, Deserialize)]
        struct File {
            workload: Vec<Workload>,
        }
        let good = r#"
            [[workload]]
            name = "api"
            series = "requests"
            capacity_per_replica = 10
            max_replicas = 5
            warm_up = "2m"
        "#;
        let file: File = toml::from_str(good).unwrap();
        assert_eq!(file.workload[0].max_replicas(), 5);
        let bad = good.replace("max_replicas = 5", "max_replicas = 0");
        let error = toml::from_str::<File>(&bad).unwrap_err().to_string();
        assert!(error.contains("max_replicas"), "{error}");
    }

    #[test]
    fn buffer_requires_increase() {
        let text = EXAMPLE.replace("breach = \"increase\"", "breach = \"honour\"");
        assert!(matches!(
            Workload::from_toml(&text),
            Err(PlanError::InvalidWorkload {
                field: "max_capacity.buffer_percent",
                ..
            })
        ));
    }

    #[test]
    fn replicas_follow_target_utilisation_and_breach_policy() {
        let workload = WorkloadParams::new("api", "requests", 100.0, 40, Duration::ZERO)
            .target_utilisation(50.0)
            .check()
            .unwrap();
        assert_eq!(workload.replicas_for(0.0), 0);
        assert_eq!(workload.replicas_for(f64::NAN), 0);
        assert_eq!(workload.replicas_for(100.0), 2);
        assert_eq!(workload.replicas_for(100.000_001), 3);
        assert_eq!(workload.ceiling_for(50), 40);
        let increasing = WorkloadParams::new("api", "requests", 100.0, 40, Duration::ZERO)
            .max_capacity_breach(MaxCapacityBreach::Increase {
                buffer_percent: 10.0,
            })
            .check()
            .unwrap();
        // The AWS documentation's example: need 50, max 40, buffer 10% -> effective max 55.
        assert_eq!(increasing.ceiling_for(50), 55);
        assert_eq!(increasing.ceiling_for(30), 40);
    }
}
