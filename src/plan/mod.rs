//! Capacity plans: a workload's load forecast turned into a pre-scaling schedule.
//!
//! A [`Workload`] (read from `workload.toml` and validated by [`WorkloadParams::check`]) says how load
//! becomes replicas. A [`Planner`] turns a [`crate::domain::Forecast`] into a [`Plan`]: desired, low and
//! high replicas per step with a reason for each change, requested a warm-up ahead, plus the reactive
//! recommendation from the latest observed load. Executors apply `max(planned, reactive)`
//! ([`Plan::executor_target`]).
//!
//! Depends only on `crate::domain`.

mod capacity_plan;
mod hpa_metric;
mod planner;
mod reactive;
mod render;
mod workload;

pub use capacity_plan::{Annotation, Plan, PlanStep, Reason, steps_in_force};
pub use hpa_metric::{REPLICA_METRIC_TARGET, hpa_keeps_current, hpa_replicas, metric_value};
pub use planner::Planner;
pub use reactive::{HPA_TOLERANCE, Observation, Reactive, reactive_replicas};
pub use workload::{
    MaxCapacityBreach, Mode, PlanningRule, ScaleInPolicy, Slo, Workload, WorkloadParams,
};

/// Errors reading a workload or building a plan.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PlanError {
    /// `workload.toml` is not valid TOML, holds an unknown key or a value of the wrong type.
    #[error("workload file: {message}")]
    ParseWorkload {
        /// The parser's message, naming the key and position.
        message: String,
    },
    /// A workload value is well-formed but out of range.
    #[error("workload key `{field}`: {reason}")]
    InvalidWorkload {
        /// Dotted key, e.g. `scale_in.max_step_down`.
        field: &'static str,
        /// Why it is refused.
        reason: String,
    },
    /// The forecast has no interval at the workload's planning level.
    #[error("forecast has no {level}% interval to plan on (it offers {offered:?})")]
    MissingLevel {
        /// The planning level, in percent.
        level: f64,
        /// The levels the forecast offers, in percent.
        offered: Vec<f64>,
    },
    /// The forecast has no steps.
    #[error("forecast has no steps to plan")]
    EmptyForecast,
}
