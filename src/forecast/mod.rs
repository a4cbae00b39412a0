//! Forecasting: preprocessing, seasonality detection, member models, a backtested ensemble and
//! conformally calibrated prediction intervals.
//!
//! Every model follows two phases. An unfitted, validated spec ([`ModelParams`] for the ensemble or
//! a single member, or a [`MemberSpec`] alone) implements [`Fit`] on a [`TimeSeries`]; the
//! immutable [`FittedModel`] it returns implements [`Predict`], whose [`Forecast`] carries the time
//! axis, the point forecast and one nested interval per requested [`Level`].
//!
//! ```
//! use prescale::domain::{Step, TimeSeries, Timestamp};
//! use prescale::forecast::{Fit, Horizon, Level, ModelParams, Predict};
//!
//! let values: Vec<f64> = (0..24 * 14)
//!     .map(|t| 100.0 + 20.0 * (2.0 * std::f64::consts::PI * t as f64 / 24.0).sin())
//!     .collect();
//! let hourly = Step::try_from(3_600_000).unwrap();
//! let series = TimeSeries::new(Timestamp::from_millis(0), hourly, values);
//! let model = ModelParams::ensemble().check().unwrap().fit(&series).unwrap();
//! let forecast = model
//!     .predict(Horizon::try_from(24).unwrap(), &Level::DEFAULTS)
//!     .unwrap();
//! assert_eq!(forecast.len(), 24);
//! assert!(model.report().members.iter().any(|member| member.weight() > 0.0));
//! ```
//!
//! Nothing here does I/O: plain slices in, [`Forecast`] out.

pub mod accuracy;
mod backtest;
mod conformal;
mod history;
mod level_shift;
pub mod members;
mod model;
mod preprocess;
pub mod seasonality;
mod stats;
#[cfg(test)]
mod tests;

use crate::domain::{DomainError, TimeSeries};

pub use crate::domain::{Forecast, Horizon, Interval, Level};
pub use backtest::{BacktestParams, BacktestReport, MemberReport, MemberStatus, Scores};
pub use conformal::ConformalParams;
pub use history::{HistoryWindow, MAX_FIT_POINTS};
pub use level_shift::LevelShift;
pub use members::{MemberKind, MemberSpec};
pub use model::{Combination, FittedModel, ModelParams};
pub use preprocess::{
    MIN_OBSERVED, PreprocessParams, PreprocessSummary, Transform, TransformChoice,
    detect_seasonality,
};
pub use seasonality::{CalendarPeriod, SeasonalPeriod, Seasonality, SeasonalityParams};

/// Errors from fitting or predicting.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ForecastError {
    /// The series (or the part a model may use) holds fewer observed points than the model needs.
    #[error("not enough history: needed {needed} observed points, got {got}")]
    NotEnoughHistory {
        /// Points the model needs.
        needed: usize,
        /// Points available.
        got: usize,
    },
    /// A hyperparameter is out of its documented range.
    #[error("invalid parameter {name}: {reason}")]
    InvalidParameter {
        /// The parameter's name as in its `Params` table.
        name: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A horizon or interval level out of range.
    #[error(transparent)]
    Domain(#[from] DomainError),
    /// A stored model cannot forecast from the given series without a refit.
    #[error("cannot re-anchor the model: {reason}")]
    CannotReanchor {
        /// Why: another step or grid, or a series ending before the training data.
        reason: String,
    },
    /// A member model could not be fitted to this series.
    #[error("member {member} failed: {reason}")]
    MemberFailed {
        /// The member that failed.
        member: MemberKind,
        /// Why, as reported by the member or its library.
        reason: String,
    },
}

impl ForecastError {
    pub(crate) fn invalid(name: &'static str, reason: impl Into<String>) -> Self {
        Self::InvalidParameter {
            name,
            reason: reason.into(),
        }
    }
}

/// The first phase of a model: a validated spec that fits a series.
pub trait Fit {
    /// The immutable fitted model.
    type Fitted: Predict;

    /// Fits the model to `series` (regular, `NaN` for empty buckets).
    fn fit(&self, series: &TimeSeries) -> Result<Self::Fitted, ForecastError>;
}

/// The second phase of a model: forecasting from the end of the fitted series.
pub trait Predict {
    /// Forecasts `horizon` steps after the fitted series with an interval at each of `levels`.
    fn predict(&self, horizon: Horizon, levels: &[Level]) -> Result<Forecast, ForecastError>;

    /// Forecasts with the default 80% and 95% intervals.
    fn predict_default(&self, horizon: Horizon) -> Result<Forecast, ForecastError> {
        self.predict(horizon, &Level::DEFAULTS)
    }
}
