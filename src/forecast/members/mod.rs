//! The member models of the ensemble; each is also usable alone through [`MemberSpec`].
//!
//! Members work on the preprocessed, standardised series (see `preprocess`), so they never see
//! gaps, spikes or the caller's units; the ensemble maps their forecasts back.

mod augurs_models;
mod fft;
mod forest;
mod learned_state;
mod naive;
pub mod regression_forest;
mod scryer;
mod seasonal_ar;
mod trend;
mod yearly;

use std::fmt;

use crate::domain::{Step, TimeSeries, Timestamp};

pub use augurs_models::{EtsParams, MstlParams};
pub use fft::FftParams;
pub use forest::ForestParams;
pub use naive::SeasonalNaiveParams;
pub use regression_forest::{RandomForestRegressor, RandomForestRegressorParams};
pub use scryer::ScryerParams;
pub use seasonal_ar::SeasonalArParams;
pub use trend::TrendParams;

pub(crate) use learned_state::{Anchor, MemberState};

use super::seasonality::Seasonality;
use super::{Fit, FittedModel, ForecastError, ModelParams};

/// What a member is fitted on: a window of the preprocessed series.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FitInput<'a> {
    /// Gap-free, cleaned values on the model scale.
    pub(crate) values: &'a [f64],
    /// Observed values on the model scale, NaN where a bucket was empty (so members can skip
    /// imputed targets).
    pub(crate) actual: &'a [f64],
    /// Time of `values[0]`, for calendar features.
    pub(crate) start: Timestamp,
    /// Spacing of the series.
    pub(crate) step: Step,
    /// Periods detected on the full series; members keep those that fit their window.
    pub(crate) seasonality: &'a Seasonality,
    /// The horizon the model is designed and backtested for.
    pub(crate) horizon: usize,
}

impl FitInput<'_> {
    /// Detected periods with at least `min_cycles` whole cycles in this window, strongest first.
    pub(crate) fn periods(&self, min_cycles: f64) -> Vec<usize> {
        self.seasonality
            .steps_fitting(self.values.len(), min_cycles)
    }

    /// Steps per calendar day when the step divides a day.
    pub(crate) fn steps_per_day(&self) -> Option<usize> {
        super::seasonality::CalendarPeriod::Day.steps(self.step)
    }
}

/// A fitted member: forecasts on the model scale from the end of its window.
pub(crate) trait PointForecaster: fmt::Debug + Send + Sync {
    /// Point forecasts for steps `1..=horizon` after the window.
    fn forecast(&self, horizon: usize) -> Vec<f64>;

    /// The learned state to keep (and persist) once the member is final; it forecasts from newer
    /// data than the member was fitted on (see [`MemberState::forecast_from`]).
    fn state(&self) -> MemberState;
}

/// Names the member models, for reports and configuration.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub enum MemberKind {
    /// The value one season ago (the baseline).
    SeasonalNaive,
    /// Extrapolated significant FFT harmonics plus a damped trend.
    Fft,
    /// Linear regression on time and Fourier terms with a damped piecewise trend.
    Trend,
    /// Random-forest regression on lags, rolling statistics and calendar features.
    Forest,
    /// Netflix Scryer: FFT smoothing combined with a same-time-of-day regression.
    Scryer,
    /// augurs' MSTL decomposition with an ETS trend.
    Mstl,
    /// augurs' AutoETS.
    Ets,
    /// An autoregression on the seasonal differences (SARIMA(p,0,0)(0,1,0)).
    SeasonalAr,
}

impl MemberKind {
    /// The lowercase name used in configuration and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SeasonalNaive => "seasonal_naive",
            Self::Fft => "fft",
            Self::Trend => "trend",
            Self::Forest => "forest",
            Self::Scryer => "scryer",
            Self::Mstl => "mstl",
            Self::Ets => "ets",
            Self::SeasonalAr => "seasonal_ar",
        }
    }
}

impl fmt::Display for MemberKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unfitted member with its hyperparameters.
#[derive(Debug, Clone, PartialEq)]
pub enum MemberSpec {
    /// See [`SeasonalNaiveParams`].
    SeasonalNaive(SeasonalNaiveParams),
    /// See [`FftParams`].
    Fft(FftParams),
    /// See [`TrendParams`].
    Trend(TrendParams),
    /// See [`ForestParams`].
    Forest(ForestParams),
    /// See [`ScryerParams`].
    Scryer(ScryerParams),
    /// See [`MstlParams`].
    Mstl(MstlParams),
    /// See [`EtsParams`].
    Ets(EtsParams),
    /// See [`SeasonalArParams`].
    SeasonalAr(SeasonalArParams),
}

impl MemberSpec {
    /// Every member with default settings, baseline first.
    pub fn all() -> Vec<MemberSpec> {
        vec![
            Self::SeasonalNaive(SeasonalNaiveParams::default()),
            Self::Fft(FftParams::default()),
            Self::Trend(TrendParams::default()),
            Self::Forest(ForestParams::default()),
            Self::Scryer(ScryerParams::default()),
            Self::Mstl(MstlParams::default()),
            Self::Ets(EtsParams::default()),
            Self::SeasonalAr(SeasonalArParams::default()),
        ]
    }

    /// The member with default settings for `kind`.
    pub fn default_for(kind: MemberKind) -> MemberSpec {
        match kind {
            MemberKind::SeasonalNaive => Self::SeasonalNaive(SeasonalNaiveParams::default()),
            MemberKind::Fft => Self::Fft(FftParams::default()),
            MemberKind::Trend => Self::Trend(TrendParams::default()),
            MemberKind::Forest => Self::Forest(ForestParams::default()),
            MemberKind::Scryer => Self::Scryer(ScryerParams::default()),
            MemberKind::Mstl => Self::Mstl(MstlParams::default()),
            MemberKind::Ets => Self::Ets(EtsParams::default()),
            MemberKind::SeasonalAr => Self::SeasonalAr(SeasonalArParams::default()),
        }
    }

    /// Which member this is.
    pub fn kind(&self) -> MemberKind {
        match self {
            Self::SeasonalNaive(_) => MemberKind::SeasonalNaive,
            Self::Fft(_) => MemberKind::Fft,
            Self::Trend(_) => MemberKind::Trend,
            Self::Forest(_) => MemberKind::Forest,
            Self::Scryer(_) => MemberKind::Scryer,
            Self::Mstl(_) => MemberKind::Mstl,
            Self::Ets(_) => MemberKind::Ets,
            Self::SeasonalAr(_) => MemberKind::SeasonalAr,
        }
    }

    /// Validates the member's hyperparameters.
    pub fn check(self) -> Result<Self, ForecastError> {
        Ok(match self {
            Self::SeasonalNaive(params) => Self::SeasonalNaive(params.check()?),
            Self::Fft(params) => Self::Fft(params.check()?),
            Self::Trend(params) => Self::Trend(params.check()?),
            Self::Forest(params) => Self::Forest(params.check()?),
            Self::Scryer(params) => Self::Scryer(params.check()?),
            Self::Mstl(params) => Self::Mstl(params.check()?),
            Self::Ets(params) => Self::Ets(params.check()?),
            Self::SeasonalAr(params) => Self::SeasonalAr(params.check()?),
        })
    }

    /// Fewest points the member needs for a series with `seasonality` and design `horizon`.
    pub fn min_history(&self, seasonality: &Seasonality, horizon: usize) -> usize {
        match self {
            Self::SeasonalNaive(params) => params.min_history(seasonality),
            Self::Fft(params) => params.min_history(seasonality),
            Self::Trend(params) => params.min_history(seasonality),
            Self::Forest(params) => params.min_history(seasonality, horizon),
            Self::Scryer(params) => params.min_history(seasonality),
            Self::Mstl(params) => params.min_history(seasonality),
            Self::Ets(params) => params.min_history(seasonality),
            Self::SeasonalAr(params) => params.min_history(seasonality),
        }
    }

    /// Why this member adds nothing to an ensemble that also tries `tried`, on `len` points with
    /// `seasonality`; `None` when it may add something and must be backtested.
    pub(crate) fn redundant_beside(
        &self,
        tried: &[MemberSpec],
        seasonality: &Seasonality,
        len: usize,
    ) -> Option<String> {
        let Self::Ets(ets) = self else {
            return None;
        };
        tried.iter().find_map(|other| match other {
            Self::Mstl(mstl) => ets.redundant_beside(mstl, seasonality, len),
            _ => None,
        })
    }

    /// Fits the member on one window of the preprocessed series.
    pub(crate) fn fit_window(
        &self,
        input: &FitInput<'_>,
    ) -> Result<Box<dyn PointForecaster>, ForecastError> {
        let needed = self.min_history(input.seasonality, input.horizon);
        if input.values.len() < needed {
            return Err(ForecastError::NotEnoughHistory {
                needed,
                got: input.values.len(),
            });
        }
        match self {
            Self::SeasonalNaive(params) => params.fit_window(input),
            Self::Fft(params) => params.fit_window(input),
            Self::Trend(params) => params.fit_window(input),
            Self::Forest(params) => params.fit_window(input),
            Self::Scryer(params) => params.fit_window(input),
            Self::Mstl(params) => params.fit_window(input),
            Self::Ets(params) => params.fit_window(input),
            Self::SeasonalAr(params) => params.fit_window(input),
        }
    }
}

impl Fit for MemberSpec {
    type Fitted = FittedModel;

    /// Fits this member alone, with intervals calibrated on its own rolling-origin backtest.
    fn fit(&self, series: &TimeSeries) -> Result<FittedModel, ForecastError> {
        ModelParams::single(self.clone()).check()?.fit(series)
    }
}

/// Runs `work`, a fit or forecast of `member`, and turns a panic inside it into
/// [`ForecastError::MemberFailed`] with the panic's message: a member that panics (a library's
/// `unimplemented!` model form, an index out of range) is skipped with that reason like one that
/// fails, and the ensemble goes on without it.
///
/// Unwind safety: `work` only reads what it borrows (the series, the fitted state) and what it
/// builds is dropped with the panic, so nothing half-updated is seen afterwards.
pub(crate) fn catch_member_panic<T>(
    member: MemberKind,
    work: impl FnOnce() -> Result<T, ForecastError>,
) -> Result<T, ForecastError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)).unwrap_or_else(|panic| {
        let message = panic
            .downcast_ref::<&str>()
            .map(ToString::to_string)
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "no message".to_owned());
        Err(ForecastError::MemberFailed {
            member,
            reason: format!("panicked: {message}"),
        })
    })
}

/// Mean of `actual - fitted` over the last `points` values: the offset that re-anchors a model
/// fitted on a long window to the current level.
///
/// Models that fit a whole window (a regression line, Fourier terms, phase means) lag behind a
/// recent level shift; adding the recent mean residual is the "intercept correction" of Clements
/// & Hendry ("Forecasting Economic Time Series", 1998, ch. 8). `fitted_at(index)` is the model's
/// value at `index` of `values` (in-sample, or its forecast when `values` runs past the window it
/// was fitted on: that is how a stored model is re-anchored on newer data).
pub(crate) fn anchor_offset(
    values: &[f64],
    points: usize,
    fitted_at: impl Fn(usize) -> f64,
) -> f64 {
    let window = points.min(values.len());
    let offset = (values.len() - window..values.len())
        .map(|index| values[index] - fitted_at(index))
        .sum::<f64>()
        / window.max(1) as f64;
    if offset.is_finite() { offset } else { 0.0 }
}

/// Points the anchor offset averages: a quarter of the design horizon, at least 8.
pub(crate) fn anchor_window(horizon: usize) -> usize {
    (horizon / 4).max(8)
}

/// Validates an optional trend half-life (in steps), shared by the members that damp their trend.
pub(crate) fn check_trend_half_life(half_life: Option<f64>) -> Result<(), ForecastError> {
    if half_life.is_some_and(|half_life| !(half_life > 0.0 && half_life.is_finite())) {
        return Err(ForecastError::invalid(
            "trend_half_life",
            "must be positive and finite",
        ));
    }
    Ok(())
}

/// Keeps a forecast finite and on a sane model scale whatever a member computed.
///
/// Members work on a unit scale, so anything beyond ±1e6 sigmas is a numerical failure rather
/// than a forecast; clamping there keeps the inverse transform from overflowing.
pub(crate) fn sanitize(mut forecast: Vec<f64>) -> Vec<f64> {
    const LIMIT: f64 = 1e6;
    for value in &mut forecast {
        *value = if value.is_nan() {
            0.0
        } else {
            value.clamp(-LIMIT, LIMIT)
        };
    }
    forecast
}

#[cfg(test)]
pub(crate) mod test_support {
    //! Builders shared by the members' tests.

    use crate::domain::{Step, Timestamp};
    use crate::forecast::seasonality::{SeasonalPeriod, Seasonality};

    use super::FitInput;

    /// A seasonality with exactly the given periods.
    pub(crate) fn seasonality(periods: &[usize]) -> Seasonality {
        Seasonality::from_periods(
            periods
                .iter()
                .map(|steps| SeasonalPeriod {
                    steps: *steps,
                    strength: 0.9,
                    calendar: None,
                })
                .collect(),
        )
    }

    /// A fit input over `values` at one-hour steps starting at the epoch (a Thursday midnight).
    pub(crate) fn input<'a>(
        values: &'a [f64],
        seasonality: &'a Seasonality,
        horizon: usize,
    ) -> FitInput<'a> {
        FitInput {
            values,
            actual: values,
            start: Timestamp::from_millis(0),
            step: Step::try_from(3_600_000).expect("one hour is a positive step"),
            seasonality,
            horizon,
        }
    }

    /// A sinusoid of `period` steps and amplitude `amplitude` around `level`.
    pub(crate) fn sinusoid(len: usize, period: f64, amplitude: f64, level: f64) -> Vec<f64> {
        (0..len)
            .map(|t| level + amplitude * (2.0 * std::f64::consts::PI * t as f64 / period).sin())
            .collect()
    }
}
