//! Random-forest regression on lags, rolling statistics and calendar features.
//!
//! A direct multi-horizon strategy (Taieb et al., "A review and comparison of strategies for
//! multi-step ahead time series forecasting", Expert Systems with Applications 39(8), 2012, with
//! the horizon as a feature rather than one model per step): each training row pairs a target at
//! `t` with an origin `o = t - h` and only uses values known at `o` — the last value, the value a
//! season and a week before `t` (rounded back to before `o`), the level and spread over the last
//! season, the recent change of level — plus `h` and the calendar of `t`. Targets and lags are
//! taken relative to the level at the origin, so the trees learn shapes that carry over when the
//! level moves (trees cannot extrapolate a level they never saw).

use linfa::Dataset;
use linfa::traits::Fit as _;
use ndarray::{Array1, Array2};

use crate::domain::{Step, Timestamp};
use crate::forecast::ForecastError;
use crate::forecast::seasonality::{CalendarPeriod, Seasonality};
use crate::forecast::stats;

use super::regression_forest::{RandomForestRegressor, RandomForestRegressorParams};
use super::{FitInput, MemberState, PointForecaster};

/// Parameters of the forest member.
///
/// | Name | Default | Purpose | Range |
/// |---|---|---|---|
/// | `forest` | 16 trees, depth 10, leaves of 5 | the regressor | see [`RandomForestRegressorParams`] |
/// | `max_rows` | 1500 | most recent training rows (bounds fit time) | `>= 32` |
#[derive(Debug, Clone, PartialEq)]
pub struct ForestParams {
    forest: RandomForestRegressorParams,
    max_rows: usize,
}

impl Default for ForestParams {
    fn default() -> Self {
        Self {
            forest: RandomForestRegressorParams::default().trees(16),
            max_rows: 1500,
        }
    }
}

/// Fewest training rows worth growing a forest on.
const MIN_ROWS: usize = 32;
const FEATURES: usize = 9;

impl ForestParams {
    /// The regressor's own hyperparameters.
    #[must_use]
    pub fn forest(mut self, forest: RandomForestRegressorParams) -> Self {
        self.forest = forest;
        self
    }

    /// Most recent training rows.
    #[must_use]
    pub fn max_rows(mut self, rows: usize) -> Self {
        self.max_rows = rows;
        self
    }

    /// Validates the parameters.
    pub fn check(self) -> Result<Self, ForecastError> {
        if self.max_rows < MIN_ROWS {
            return Err(ForecastError::invalid(
                "max_rows",
                format!("must be at least {MIN_ROWS}"),
            ));
        }
        linfa::ParamGuard::check_ref(&self.forest)?;
        Ok(self)
    }

    pub(crate) fn min_history(&self, seasonality: &Seasonality, horizon: usize) -> usize {
        let period = seasonality.primary().unwrap_or(horizon.max(1));
        2 * period + horizon + MIN_ROWS
    }

    pub(crate) fn fit_window(
        &self,
        input: &FitInput<'_>,
    ) -> Result<Box<dyn PointForecaster>, ForecastError> {
        let horizon = input.horizon.max(1);
        let period = input
            .periods(2.0)
            .first()
            .copied()
            .unwrap_or(horizon)
            .max(1);
        let week = CalendarPeriod::Week
            .steps(input.step)
            .filter(|week| *week != period && input.values.len() >= 2 * week + horizon);
        let lags = Lags::new(input.values, input.start, input.step, period, week);
        let first_origin = lags.first_origin();
        let len = input.values.len();
        let mut rows: Vec<[f64; FEATURES]> = Vec::new();
        let mut targets: Vec<f64> = Vec::new();
        for target in (first_origin + 1..len).rev() {
            if rows.len() >= self.max_rows {
                break;
            }
            if input.actual[target].is_nan() {
                continue;
            }
            // Spread horizons over the targets with a multiplicative hash so every h is seen.
            let ahead = 1 + (target.wrapping_mul(7919)) % horizon;
            let Some(origin) = target.checked_sub(ahead).filter(|o| *o >= first_origin) else {
                continue;
            };
            let (features, level) = lags.features(origin, ahead);
            rows.push(features);
            targets.push(input.values[target] - level);
        }
        if rows.len() < MIN_ROWS {
            return Err(ForecastError::NotEnoughHistory {
                needed: self.min_history(input.seasonality, horizon),
                got: len,
            });
        }
        clip_targets(&mut targets);
        let records =
            Array2::from_shape_vec((rows.len(), FEATURES), rows.into_iter().flatten().collect())
                .expect("every row holds FEATURES values");
        let dataset = Dataset::new(records, Array1::from(targets));
        let forest = self.forest.fit(&dataset)?;
        let model = ForestModel {
            forest,
            period,
            week,
        };
        Ok(Box::new(FittedForest {
            model,
            history: input.values.to_vec(),
            start: input.start,
            step: input.step,
        }))
    }
}

/// Clips targets to their median ± [`TARGET_CLIP`] robust sigmas.
///
/// Rows whose origin lies before a level shift and whose target lies after it carry offsets of
/// tens of sigmas; a leaf mean is not robust, so a handful of them would teach the trees a jump
/// that every later forecast repeats. Clipping keeps their direction but bounds their pull
/// (a winsorised, Huber-like target).
fn clip_targets(targets: &mut [f64]) {
    let Some(center) = stats::median(targets) else {
        return;
    };
    let sigma = stats::mad_sigma(targets, center).unwrap_or(0.0);
    if sigma <= 0.0 || !sigma.is_finite() {
        return;
    }
    let (low, high) = (center - TARGET_CLIP * sigma, center + TARGET_CLIP * sigma);
    for target in targets {
        *target = target.clamp(low, high);
    }
}

/// Robust sigmas beyond which training targets are clipped.
const TARGET_CLIP: f64 = 6.0;

/// Feature extraction over a history, with prefix sums for O(1) rolling statistics.
struct Lags<'a> {
    values: &'a [f64],
    start: Timestamp,
    step: Step,
    period: usize,
    week: Option<usize>,
    /// `prefix[i]` = sum of `values[..i]`.
    prefix: Vec<f64>,
    /// `prefix_squares[i]` = sum of squares of `values[..i]`.
    prefix_squares: Vec<f64>,
}

impl<'a> Lags<'a> {
    fn new(
        values: &'a [f64],
        start: Timestamp,
        step: Step,
        period: usize,
        week: Option<usize>,
    ) -> Self {
        let mut prefix = Vec::with_capacity(values.len() + 1);
        let mut prefix_squares = Vec::with_capacity(values.len() + 1);
        prefix.push(0.0);
        prefix_squares.push(0.0);
        for value in values {
            prefix.push(prefix.last().copied().unwrap_or(0.0) + value);
            prefix_squares.push(prefix_squares.last().copied().unwrap_or(0.0) + value * value);
        }
        Self {
            values,
            start,
            step,
            period,
            week,
            prefix,
            prefix_squares,
        }
    }

    /// Earliest origin whose features are all defined.
    fn first_origin(&self) -> usize {
        (2 * self.period).max(self.week.unwrap_or(0)) - 1
    }

    /// Mean and standard deviation of the season ending at `origin`.
    fn level_at(&self, origin: usize) -> (f64, f64) {
        let from = origin + 1 - self.period;
        let count = self.period as f64;
        let sum = self.prefix[origin + 1] - self.prefix[from];
        let squares = self.prefix_squares[origin + 1] - self.prefix_squares[from];
        let mean = sum / count;
        let variance = (squares / count - mean * mean).max(0.0);
        (mean, variance.sqrt())
    }

    /// Features for the target `ahead` steps after `origin`, and the level they are relative to.
    /// `values` may hold fewer than `origin + ahead` points: only indices up to `origin` are read.
    fn features(&self, origin: usize, ahead: usize) -> ([f64; FEATURES], f64) {
        let target = origin + ahead;
        let (level, spread) = self.level_at(origin);
        let (previous_level, _) = self.level_at(origin - self.period);
        let seasons_back = ahead.div_ceil(self.period) * self.period;
        let season_ago = self.values[target - seasons_back] - level;
        let week_ago = self.week.map_or(0.0, |week| {
            self.values[target - ahead.div_ceil(week) * week] - level
        });
        let (minute_of_day, day_of_week) = calendar(self.start, self.step, target);
        (
            [
                ahead as f64,
                self.values[origin] - level,
                season_ago,
                week_ago,
                spread,
                level - previous_level,
                minute_of_day,
                day_of_week,
                (target % self.period) as f64,
            ],
            level,
        )
    }
}

/// Minute of the day and day of the week (Monday 0) of step `index` after `start`, in UTC.
fn calendar(start: Timestamp, step: Step, index: usize) -> (f64, f64) {
    const MINUTE: i64 = 60_000;
    const DAY: i64 = 86_400_000;
    let offset = i64::try_from(index).unwrap_or(i64::MAX);
    let millis = start
        .saturating_add_millis(offset.saturating_mul(step.as_millis()))
        .as_millis();
    let minute = millis.rem_euclid(DAY) / MINUTE;
    // 1970-01-01 was a Thursday (day 3 counting Monday as 0).
    let weekday = (millis.div_euclid(DAY) + 3).rem_euclid(7);
    (minute as f64, weekday as f64)
}

/// The trees and the lags they read: a forest's learned state.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) struct ForestModel {
    /// The fitted regressor.
    forest: RandomForestRegressor,
    /// Season length behind the season lag and the rolling statistics.
    period: usize,
    /// Week length when a week lag is used.
    week: Option<usize>,
}

impl ForestModel {
    /// Newest points the features of a forecast read.
    pub(crate) fn recent_needed(&self) -> usize {
        (2 * self.period).max(self.week.unwrap_or(0))
    }

    /// Forecasts `horizon` steps after the end of `values` (which start at `start`), with every
    /// lag read from them.
    pub(crate) fn forecast_from(
        &self,
        values: &[f64],
        start: Timestamp,
        step: Step,
        horizon: usize,
    ) -> Vec<f64> {
        if values.len() < self.recent_needed() {
            // The history is shorter than the lags: no forecast rather than a wrong one (the
            // model refuses to re-anchor on so little; see `FittedModel::reanchor`).
            return vec![f64::NAN; horizon];
        }
        let lags = Lags::new(values, start, step, self.period, self.week);
        let origin = values.len() - 1;
        (1..=horizon)
            .map(|ahead| {
                let (features, level) = lags.features(origin, ahead);
                level + self.forest.predict_row(&features)
            })
            .collect()
    }
}

#[derive(Debug)]
struct FittedForest {
    /// The learned state.
    model: ForestModel,
    /// The fitted window, the source of every lag at prediction time.
    history: Vec<f64>,
    /// Time of `history[0]`.
    start: Timestamp,
    /// Spacing of the series.
    step: Step,
}

impl PointForecaster for FittedForest {
    fn forecast(&self, horizon: usize) -> Vec<f64> {
        self.model
            .forecast_from(&self.history, self.start, self.step, horizon)
    }

    fn state(&self) -> MemberState {
        MemberState::Forest(self.model.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{input, seasonality, sinusoid};
    use super::*;

    #[test]
    fn learns_a_seasonal_shape_on_a_shifted_level() {
        let mut values = sinusoid(24 * 30, 24.0, 1.0, 0.0);
        // A level shift half way: relative features make the shape carry over.
        for value in &mut values[24 * 15..] {
            *value += 3.0;
        }
        let season = seasonality(&[24]);
        let fitted = ForestParams::default()
            .fit_window(&input(&values, &season, 24))
            .unwrap();
        let expected = sinusoid(24 * 31, 24.0, 1.0, 3.0);
        let forecast = fitted.forecast(24);
        let mean_error: f64 = forecast
            .iter()
            .zip(&expected[24 * 30..])
            .map(|(f, e)| (f - e).abs())
            .sum::<f64>()
            / 24.0;
        // A flat forecast at the new level would be off by 2/pi = 0.64 on average.
        assert!(mean_error < 0.25, "mean error {mean_error}");
    }

    #[test]
    fn calendar_features_follow_utc() {
        let hour = Step::try_from(3_600_000).unwrap();
        // 1970-01-05 was a Monday.
        assert_eq!(
            calendar(Timestamp::from_millis(0), hour, 4 * 24 + 13),
            (780.0, 0.0)
        );
        assert_eq!(calendar(Timestamp::from_millis(0), hour, 0), (0.0, 3.0));
    }
}
