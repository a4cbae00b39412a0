//! Linear regression on time and Fourier terms, with a damped piecewise-linear trend.
//!
//! The design follows Prophet (Taylor & Letham, "Forecasting at scale", The American Statistician
//! 72(1), 2018): a piecewise-linear trend with candidate changepoints whose slope changes are
//! shrunk towards zero, plus Fourier terms for each seasonal period. The final slope is then damped
//! (Gardner & McKenzie, 1985) so that a short ramp at the end of the history is not extrapolated
//! forever. Fitted by ordinary least squares in linfa-linear; the shrinkage is ridge regression
//! done by appending penalty rows to the design matrix, which also keeps collinear Fourier columns
//! (a weekly period's 7th harmonic is the daily fundamental) from making the problem singular.

use linfa::Dataset;
use linfa::traits::Fit as _;
use linfa_linear::LinearRegression;
use ndarray::{Array1, Array2, ShapeBuilder};

use crate::forecast::ForecastError;
use crate::forecast::members::MemberKind;
use crate::forecast::seasonality::Seasonality;
use crate::forecast::stats;

use super::learned_state::Curve;
use super::{FitInput, MemberState, PointForecaster, check_trend_half_life};

/// Parameters of the trend member.
///
/// | Name | Default | Purpose | Range |
/// |---|---|---|---|
/// | `fourier_order` | 10 | harmonics per period (fewer for short periods) | `>= 1` |
/// | `changepoints` | 8 | candidate slope changes, spread over the window | `0..=50` |
/// | `changepoint_penalty` | 0.05 | ridge penalty on slope changes, per point | `>= 0` |
/// | `max_window` | 8064 | most recent points fitted | `>= 16` |
/// | `max_rows` | 2016 | most regression rows: longer windows are thinned to every k-th point | `>= 64` |
/// | `trend_half_life` | horizon / 4 | steps after which the extrapolated slope has halved | `> 0` |
#[derive(Debug, Clone, PartialEq)]
pub struct TrendParams {
    fourier_order: usize,
    changepoints: usize,
    changepoint_penalty: f64,
    max_window: usize,
    max_rows: usize,
    trend_half_life: Option<f64>,
}

impl Default for TrendParams {
    fn default() -> Self {
        Self {
            fourier_order: 10,
            changepoints: 8,
            changepoint_penalty: 0.05,
            max_window: 8064,
            max_rows: 2016,
            trend_half_life: None,
        }
    }
}

/// A tiny ridge on every non-intercept column: enough to make collinear columns solvable,
/// far too small to bias a fit on unit-scale data.
const STABILISING_PENALTY: f64 = 1e-6;

impl TrendParams {
    /// Harmonics per seasonal period.
    #[must_use]
    pub fn fourier_order(mut self, order: usize) -> Self {
        self.fourier_order = order;
        self
    }

    /// Number of candidate changepoints.
    #[must_use]
    pub fn changepoints(mut self, count: usize) -> Self {
        self.changepoints = count;
        self
    }

    /// Ridge penalty on slope changes, per fitted point.
    #[must_use]
    pub fn changepoint_penalty(mut self, penalty: f64) -> Self {
        self.changepoint_penalty = penalty;
        self
    }

    /// Most recent points fitted.
    #[must_use]
    pub fn max_window(mut self, points: usize) -> Self {
        self.max_window = points;
        self
    }

    /// Most regression rows; longer windows are thinned.
    #[must_use]
    pub fn max_rows(mut self, rows: usize) -> Self {
        self.max_rows = rows;
        self
    }

    /// Steps after which the extrapolated slope has halved.
    #[must_use]
    pub fn trend_half_life(mut self, steps: f64) -> Self {
        self.trend_half_life = Some(steps);
        self
    }

    /// Validates the parameters.
    pub fn check(self) -> Result<Self, ForecastError> {
        if self.max_rows < 64 {
            return Err(ForecastError::invalid("max_rows", "must be at least 64"));
        }
        if self.fourier_order == 0 {
            return Err(ForecastError::invalid(
                "fourier_order",
                "must be at least 1",
            ));
        }
        if self.changepoints > 50 {
            return Err(ForecastError::invalid("changepoints", "must be at most 50"));
        }
        if !(self.changepoint_penalty >= 0.0 && self.changepoint_penalty.is_finite()) {
            return Err(ForecastError::invalid(
                "changepoint_penalty",
                "must be non-negative and finite",
            ));
        }
        if self.max_window < 16 {
            return Err(ForecastError::invalid("max_window", "must be at least 16"));
        }
        check_trend_half_life(self.trend_half_life)?;
        Ok(self)
    }

    pub(crate) fn min_history(&self, _seasonality: &Seasonality) -> usize {
        16
    }

    pub(crate) fn fit_window(
        &self,
        input: &FitInput<'_>,
    ) -> Result<Box<dyn PointForecaster>, ForecastError> {
        let window_len = input.values.len().min(self.max_window);
        let window = &input.values[input.values.len() - window_len..];
        let design = Design::new(
            window_len,
            &input.periods(2.0),
            self.fourier_order,
            self.changepoints,
        );
        let columns = design.width();
        // Thin long windows to every k-th point (ending at the last one): the Fourier terms are
        // far below the thinned Nyquist frequency, and the QR cost falls with the row count.
        let stride = window_len.div_ceil(self.max_rows).max(1);
        let sampled: Vec<usize> = (0..window_len).rev().step_by(stride).collect();
        let fitted_rows = sampled.len();
        let rows = fitted_rows + columns - 1;
        // Column-major: linfa's Householder QR walks columns, and contiguous columns make it
        // several times faster than the default row-major layout.
        let mut records = Array2::<f64>::zeros((rows, columns).f());
        let mut targets = Array1::<f64>::zeros(rows);
        let mut row = vec![0.0; columns];
        for (slot, index) in sampled.iter().enumerate() {
            design.fill_row(*index as f64, &mut row);
            records
                .row_mut(slot)
                .assign(&ndarray::ArrayView1::from(&row));
            targets[slot] = window[*index];
        }
        // Ridge rows: sqrt(penalty) on the diagonal of every column but the intercept (column 0).
        for column in 1..columns {
            let penalty = if design.is_changepoint(column) {
                self.changepoint_penalty.max(STABILISING_PENALTY)
            } else {
                STABILISING_PENALTY
            };
            records[[fitted_rows + column - 1, column]] = (penalty * fitted_rows as f64).sqrt();
        }
        let dataset = Dataset::new(records, targets);
        let fitted = LinearRegression::new()
            .with_intercept(false)
            .fit(&dataset)
            .map_err(|error| ForecastError::MemberFailed {
                member: MemberKind::Trend,
                reason: error.to_string(),
            })?;
        let coefficients = fitted.params().to_vec();
        if coefficients.iter().any(|c| !c.is_finite()) {
            return Err(ForecastError::MemberFailed {
                member: MemberKind::Trend,
                reason: "least squares returned non-finite coefficients".to_owned(),
            });
        }
        let last = (window_len - 1) as f64;
        let slope_end = design.slope_at(last, &coefficients);
        let half_life = self
            .trend_half_life
            .unwrap_or((input.horizon as f64 / 4.0).max(1.0));
        let mut fitted = FittedTrend {
            design,
            coefficients,
            window_len,
            slope_end,
            phi: stats::phi_from_half_life(half_life),
            offset: 0.0,
            anchor_points: super::anchor_window(input.horizon),
        };
        fitted.offset = fitted.offset_on(window, 0);
        Ok(Box::new(fitted))
    }
}

/// Column layout: intercept, time, changepoint hinges, then sin/cos pairs.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct Design {
    /// Window length: time is scaled to `index / len` so coefficients stay well conditioned.
    len: f64,
    /// Changepoint locations on the scaled time axis.
    changepoints: Vec<f64>,
    /// Angular frequencies per step of the Fourier pairs (deduplicated across periods).
    frequencies: Vec<f64>,
}

impl Design {
    fn new(len: usize, periods: &[usize], order: usize, changepoints: usize) -> Self {
        let mut harmonics: Vec<(usize, usize)> = Vec::new();
        for period in periods {
            let usable = order.min((period.saturating_sub(1)) / 2);
            for harmonic in 1..=usable {
                // harmonic / period equals an existing k / p exactly when harmonic * p == k * period.
                let duplicate = harmonics.iter().any(|(k, p)| harmonic * p == k * period);
                if !duplicate {
                    harmonics.push((harmonic, *period));
                }
            }
        }
        let frequencies = harmonics
            .into_iter()
            .map(|(k, p)| 2.0 * std::f64::consts::PI * k as f64 / p as f64)
            .collect();
        // Spread over the first 90% of the window: the last stretch is too short to tell a
        // slope change from noise.
        let changepoints = (1..=changepoints)
            .map(|j| 0.9 * j as f64 / (changepoints + 1) as f64)
            .collect();
        Self {
            len: len as f64,
            changepoints,
            frequencies,
        }
    }

    fn width(&self) -> usize {
        self.seasonal_start() + 2 * self.frequencies.len()
    }

    fn seasonal_start(&self) -> usize {
        2 + self.changepoints.len()
    }

    fn is_changepoint(&self, column: usize) -> bool {
        (2..self.seasonal_start()).contains(&column)
    }

    fn fill_row(&self, index: f64, row: &mut [f64]) {
        let time = index / self.len;
        row[0] = 1.0;
        row[1] = time;
        for (offset, changepoint) in self.changepoints.iter().enumerate() {
            row[2 + offset] = (time - changepoint).max(0.0);
        }
        let start = self.seasonal_start();
        for (offset, frequency) in self.frequencies.iter().enumerate() {
            let angle = frequency * index;
            row[start + 2 * offset] = angle.sin();
            row[start + 2 * offset + 1] = angle.cos();
        }
    }

    /// Trend slope per step at window index `index`.
    fn slope_at(&self, index: f64, coefficients: &[f64]) -> f64 {
        let time = index / self.len;
        let per_unit: f64 = coefficients[1]
            + self
                .changepoints
                .iter()
                .enumerate()
                .filter(|(_, changepoint)| time > **changepoint)
                .map(|(offset, _)| coefficients[2 + offset])
                .sum::<f64>();
        per_unit / self.len
    }
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) struct FittedTrend {
    /// Column layout the model was fitted on.
    design: Design,
    /// Least-squares coefficients, one per design column (no separate intercept).
    coefficients: Vec<f64>,
    /// Length of the fitted window; forecasts continue its index.
    window_len: usize,
    /// Trend slope per step at the last fitted point.
    slope_end: f64,
    /// Per-step damping of that slope.
    phi: f64,
    /// Recent mean residual, added to re-anchor the level (see `anchor_offset`).
    offset: f64,
    /// Points `offset` averages over.
    anchor_points: usize,
}

impl FittedTrend {
    /// The regression at the design row of window index `index`.
    fn predict_row(&self, row: &[f64]) -> f64 {
        row.iter().zip(&self.coefficients).map(|(x, c)| x * c).sum()
    }
}

impl Curve for FittedTrend {
    /// In-sample, the regression itself. Ahead, rows carry the seasonal terms of their own time
    /// but the trend terms of the last fitted point: the regression then gives level plus
    /// seasonality, and the slope is added damped instead of running on linearly.
    fn curve(&self, k: i64) -> f64 {
        let columns = self.design.width();
        let last = (self.window_len - 1) as f64;
        let mut row = vec![0.0; columns];
        self.design.fill_row(last + k as f64, &mut row);
        if k <= 0 {
            return self.predict_row(&row);
        }
        let mut frozen_trend = vec![0.0; columns];
        self.design.fill_row(last, &mut frozen_trend);
        let trend_columns = self.design.seasonal_start();
        row[..trend_columns].copy_from_slice(&frozen_trend[..trend_columns]);
        self.predict_row(&row) + self.slope_end * stats::damped_steps(self.phi, k as usize)
    }

    fn anchor_points(&self) -> usize {
        self.anchor_points
    }
}

impl PointForecaster for FittedTrend {
    fn forecast(&self, horizon: usize) -> Vec<f64> {
        self.curve_forecast(self.offset, horizon)
    }

    fn state(&self) -> MemberState {
        MemberState::Trend(self.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{input, seasonality, sinusoid};
    use super::*;

    #[test]
    fn extrapolates_a_linear_ramp() {
        let values: Vec<f64> = (0..200).map(|t| 0.5 + 0.01 * t as f64).collect();
        let season = seasonality(&[]);
        let fitted = TrendParams::default()
            .trend_half_life(1e9)
            .fit_window(&input(&values, &season, 20))
            .unwrap();
        for (step, value) in fitted.forecast(20).iter().enumerate() {
            let expected = 0.5 + 0.01 * (200 + step) as f64;
            assert!(
                (value - expected).abs() < 1e-3,
                "step {step}: {value} vs {expected}"
            );
        }
    }

    #[test]
    fn recovers_seasonality_and_damps_the_ramp_by_default() {
        let mut values = sinusoid(24 * 10, 24.0, 2.0, 0.0);
        for (t, value) in values.iter_mut().enumerate() {
            *value += 0.01 * t as f64;
        }
        let season = seasonality(&[24, 168]);
        let fitted = TrendParams::default()
            .fit_window(&input(&values, &season, 24))
            .unwrap();
        let forecast = fitted.forecast(240);
        let truth = sinusoid(24 * 20, 24.0, 2.0, 0.0);
        // Default half-life: a quarter of the 24-step horizon.
        let phi = stats::phi_from_half_life(6.0);
        for step in 0..240 {
            let damped_ramp = 0.01 * (239.0 + stats::damped_steps(phi, step + 1));
            let expected = truth[240 + step] + damped_ramp;
            assert!((forecast[step] - expected).abs() < 0.05, "step {step}");
        }
    }
}
