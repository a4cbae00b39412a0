//! Replay simulator: scores a workload's predictive plans against a reactive Kubernetes HPA and an
//! oracle on the last days of its real history.
//!
//! At each replan the forecaster sees only the data up to then (event windows masked), the upcoming
//! events are applied with uplift learned from past occurrences, and a [`crate::plan::Plan`] is built.
//! Three strategies then serve the recorded demand with replicas that serve only after the warm-up:
//! predictive (`max(planned, HPA)` as an executor applies it), the HPA alone, and an oracle that
//! planned on the true demand. The [`SimulationReport`] prints as a table and writes CSV and a PNG.
//!
//! Depends on `crate::domain`, `crate::plan` and `crate::events` only.

mod chart;
mod hpa;
mod params;
mod replanner;
mod replay;
mod report;
mod slo;

use std::error::Error;
use std::time::Duration;

pub use params::{Simulation, SimulationParams};
pub use replanner::{RuleChooser, WorkloadRule};
pub use report::{Score, SimulationReport, StepRecord, Strategy, StrategyRun};
pub use slo::{
    CANDIDATE_HEADROOMS, CANDIDATE_LEVELS, ReplayFold, RuleChoice, RuleScore, RuleSource,
    candidate_levels, candidate_rules,
};

use crate::domain::{TimeSeries, Timestamp};
use crate::events::{BaseForecaster, EventError};
use crate::plan::{PlanError, Workload};

const DAY_MILLIS: i64 = 24 * 3600 * 1000;

/// Errors running a simulation or writing its report.
#[derive(Debug, thiserror::Error)]
pub enum SimulateError {
    /// A simulation parameter is out of range.
    #[error("simulation parameter `{field}`: {reason}")]
    InvalidParams {
        /// The parameter.
        field: &'static str,
        /// Why it is refused.
        reason: String,
    },
    /// The history is too short for the replayed days plus the lead before them.
    #[error("not enough history: the replay needs {needed} steps, the series has {got}")]
    NotEnoughHistory {
        /// Steps needed.
        needed: usize,
        /// Steps available.
        got: usize,
    },
    /// The forecaster failed at a replan.
    #[error("forecast at {at} failed: {source}")]
    Forecaster {
        /// The replan time.
        at: Timestamp,
        /// The forecaster's error.
        source: Box<dyn Error + Send + Sync>,
    },
    /// The forecaster returned a forecast that does not start at the replan time or is too short.
    #[error(
        "forecast at {at} starts at {start} with {got} steps, expected {expected} steps from {at}"
    )]
    ForecastShape {
        /// The replan time.
        at: Timestamp,
        /// Where the returned forecast starts.
        start: Timestamp,
        /// Steps needed.
        expected: usize,
        /// Steps returned.
        got: usize,
    },
    /// Building a plan failed (e.g. the forecast lacks the planning level).
    #[error("plan at {at}: {source}")]
    Plan {
        /// The replan time.
        at: Timestamp,
        /// The planner's error.
        source: PlanError,
    },
    /// Learning event uplift failed.
    #[error("events at {at}: {source}")]
    Events {
        /// The replan time.
        at: Timestamp,
        /// The events module's error.
        source: EventError,
    },
    /// Writing the CSV failed.
    #[error("cannot write csv: {source}")]
    Csv {
        /// The underlying error.
        #[from]
        source: std::io::Error,
    },
    /// Drawing or saving the chart failed.
    #[error("cannot draw chart {path}: {message}")]
    Chart {
        /// The file being written.
        path: std::path::PathBuf,
        /// What went wrong.
        message: String,
    },
}

/// Replays the last `days` of `history` with replans every `replan_every` and default settings
/// (15 s sync, 300 s HPA scale-down stabilisation, no events). See [`Simulation::run`].
pub fn simulate<F: BaseForecaster>(
    history: &TimeSeries,
    workload: &Workload,
    days: f64,
    replan_every: Duration,
    forecaster: &F,
) -> Result<SimulationReport, SimulateError> {
    SimulationParams::new(days, replan_every)
        .check(history.step())?
        .run(history, workload, forecaster)
}

#[cfg(test)]
mod tests;
