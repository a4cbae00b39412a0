//! Rolling-origin backtest: each member is refitted at K origins in the most recent history and
//! scored on the horizon that follows each origin.
//!
//! Tashman, "Out-of-sample tests of forecasting accuracy: an analysis and review", International
//! Journal of Forecasting 16(4), 2000. Origins are spaced one horizon apart by default, so the
//! test windows tile the end of the history without overlapping.

use crate::domain::Step;

use super::ForecastError;
use super::accuracy;
use super::members::{FitInput, MemberKind, MemberSpec, catch_member_panic};
use super::preprocess::Prepared;
use super::seasonality::CalendarPeriod;

/// Fewest folds the default fold count uses, history permitting. With three one-day folds (a
/// 5-minute series), the ensemble's choice of members and blend size per bucket of lead times
/// rested on three days and changed with the day (see `docs/decisions.md`, "Backtest folds").
const MIN_DEFAULT_FOLDS: usize = 5;

/// Parameters of the rolling-origin backtest.
///
/// | Name | Default | Purpose | Range |
/// |---|---|---|---|
/// | `folds` | `min_scored_points / horizon`, within 5..=10 | origins (K) | `1..=50` |
/// | `min_scored_points` | 800 | points the default fold count aims to score (more folds for short horizons) | `>= 1` |
/// | `horizon` | one day of steps, within 8..=288 | steps scored after each origin; also the horizon intervals are calibrated for | `>= 1` |
/// | `stride` | `horizon` | steps between consecutive origins | `>= 1` |
/// | `spread_origins` | off | without a `stride`, origins one horizon and one fold's share of it apart, so the folds start at times spread over the horizon (a day) | |
/// | `max_backtest_fraction` | 0.5 | most of the history the test windows may cover | `(0, 0.9]` |
#[derive(Debug, Clone, PartialEq)]
pub struct BacktestParams {
    folds: Option<usize>,
    min_scored_points: usize,
    horizon: Option<usize>,
    stride: Option<usize>,
    spread_origins: bool,
    max_backtest_fraction: f64,
}

impl Default for BacktestParams {
    fn default() -> Self {
        Self {
            folds: None,
            min_scored_points: 800,
            horizon: None,
            stride: None,
            spread_origins: false,
            max_backtest_fraction: 0.5,
        }
    }
}

impl BacktestParams {
    /// Number of origins.
    #[must_use]
    pub fn folds(mut self, folds: usize) -> Self {
        self.folds = Some(folds);
        self
    }

    /// Points the default fold count aims to score.
    #[must_use]
    pub fn min_scored_points(mut self, points: usize) -> Self {
        self.min_scored_points = points;
        self
    }

    /// Steps scored after each origin (set it to the horizon you will predict).
    #[must_use]
    pub fn horizon(mut self, steps: usize) -> Self {
        self.horizon = Some(steps);
        self
    }

    /// Steps between consecutive origins.
    #[must_use]
    pub fn stride(mut self, steps: usize) -> Self {
        self.stride = Some(steps);
        self
    }

    /// Without a `stride`, spaces origins `horizon + horizon / folds` apart, so each fold starts
    /// at another time of the horizon (of the day, by default) instead of the same one: the
    /// weights and bands then hold for forecasts made at any time of day, as a model served
    /// re-anchored until its next retrain is (see `docs/decisions.md`, "Backtest folds").
    #[must_use]
    pub fn spread_origins(mut self) -> Self {
        self.spread_origins = true;
        self
    }

    /// Most of the history the test windows may cover.
    #[must_use]
    pub fn max_backtest_fraction(mut self, fraction: f64) -> Self {
        self.max_backtest_fraction = fraction;
        self
    }

    /// Validates the parameters.
    pub fn check(self) -> Result<Self, ForecastError> {
        if self.folds.is_some_and(|folds| !(1..=50).contains(&folds)) {
            return Err(ForecastError::invalid("folds", "must lie in 1..=50"));
        }
        if self.min_scored_points == 0 {
            return Err(ForecastError::invalid(
                "min_scored_points",
                "must be at least 1",
            ));
        }
        if self.horizon == Some(0) {
            return Err(ForecastError::invalid("horizon", "must be at least 1"));
        }
        if self.stride == Some(0) {
            return Err(ForecastError::invalid("stride", "must be at least 1"));
        }
        if !(self.max_backtest_fraction > 0.0 && self.max_backtest_fraction <= 0.9) {
            return Err(ForecastError::invalid(
                "max_backtest_fraction",
                "must lie in (0, 0.9]",
            ));
        }
        Ok(self)
    }

    /// The horizon to backtest and calibrate for a series of `len` points at `step`.
    pub(crate) fn resolve_horizon(&self, step: Step, len: usize) -> usize {
        let wanted = self
            .horizon
            .unwrap_or_else(|| CalendarPeriod::Day.steps(step).unwrap_or(24).clamp(8, 288));
        // Leave room for at least one fold in the allowed part of the history.
        let room = ((len as f64 * self.max_backtest_fraction) as usize).max(1);
        wanted.min(room).max(1)
    }

    /// Fold origins, latest first: each is the length of the training prefix.
    pub(crate) fn origins(&self, len: usize, horizon: usize) -> Vec<usize> {
        let earliest_allowed = len - ((len as f64 * self.max_backtest_fraction) as usize).min(len);
        let folds = self.folds.unwrap_or_else(|| {
            self.min_scored_points
                .div_ceil(horizon.max(1))
                .clamp(MIN_DEFAULT_FOLDS, 10)
        });
        let stride = match self.stride {
            Some(stride) => stride,
            None if self.spread_origins => horizon + horizon / folds.max(1),
            None => horizon,
        }
        .max(1);
        (0..folds)
            .map_while(|fold| {
                let origin = len.checked_sub(horizon + fold * stride)?;
                (origin >= earliest_allowed.max(1)).then_some(origin)
            })
            .collect()
    }
}

/// Accuracy of one model over all backtest folds.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Scores {
    /// Mean absolute error in the series' own units.
    pub mae: f64,
    /// Root mean squared error in the series' own units.
    pub rmse: f64,
    /// MAE divided by the in-sample seasonal naive MAE (below 1 beats that naive in-sample).
    pub mase: Option<f64>,
    /// Symmetric MAPE in percent.
    pub smape: f64,
    /// Mean squared error on the model scale (what weights and gating use).
    pub model_scale_mse: f64,
    /// Mean absolute error on the model scale (what gating against the baseline uses).
    pub model_scale_mae: f64,
    /// Number of observed points scored.
    pub points: usize,
}

/// What became of a member in the ensemble.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum MemberStatus {
    /// In the ensemble with this weight.
    Used {
        /// Share of the combined point forecast, in `(0, 1]`.
        weight: f64,
    },
    /// Backtested, but its error was not below the seasonal naive baseline's.
    LostToBaseline,
    /// Backtested but given no weight: outside the best `top_k`, pruned by the combination, or
    /// the baseline itself when other members beat it.
    ZeroWeight,
    /// Reported for comparison only (the baseline when fitting a single other member).
    Reference,
    /// Could not be backtested or fitted; the reason says why (e.g. not enough history).
    Skipped {
        /// Why, e.g. the `NotEnoughHistory` message.
        reason: String,
    },
}

/// One member's backtest result.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MemberReport {
    /// Which member.
    pub kind: MemberKind,
    /// Its role in the fitted model.
    pub status: MemberStatus,
    /// Its backtest accuracy, when it could be backtested.
    pub scores: Option<Scores>,
}

impl MemberReport {
    /// The member's weight in the combined forecast (0 unless used).
    pub fn weight(&self) -> f64 {
        match self.status {
            MemberStatus::Used { weight } => weight,
            _ => 0.0,
        }
    }
}

/// Backtest figures of a fitted model: per member, and for the combined forecast.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BacktestReport {
    /// Steps scored after each origin.
    pub horizon: usize,
    /// Fold origins used (training prefix lengths, latest first).
    pub origins: Vec<usize>,
    /// One entry per member tried, in the configured order.
    pub members: Vec<MemberReport>,
    /// The combined forecast's accuracy, with weights fitted leaving each scored fold out.
    pub combined: Option<Scores>,
    /// The same per fold, in the order of `origins` (what a retrain compares on).
    #[serde(default)]
    pub combined_folds: Vec<Option<Scores>>,
}

impl BacktestReport {
    /// Members skipped for lack of history or a failed fit, with the reasons.
    pub fn skipped(&self) -> Vec<(MemberKind, &str)> {
        self.members
            .iter()
            .filter_map(|member| match &member.status {
                MemberStatus::Skipped { reason } => Some((member.kind, reason.as_str())),
                _ => None,
            })
            .collect()
    }

    /// The report of `kind`, if it was tried.
    pub fn member(&self, kind: MemberKind) -> Option<&MemberReport> {
        self.members.iter().find(|member| member.kind == kind)
    }
}

/// One member's forecasts at every fold, on the model scale.
#[derive(Debug, Clone)]
pub(crate) struct FoldForecasts {
    /// `forecasts[fold][step]`, folds in the order of the origins.
    pub(crate) forecasts: Vec<Vec<f64>>,
}

/// Runs `spec` at every origin; fails on the first fold it cannot fit.
pub(crate) fn run_member(
    spec: &MemberSpec,
    prepared: &Prepared,
    origins: &[usize],
    horizon: usize,
) -> Result<FoldForecasts, ForecastError> {
    let forecasts = origins
        .iter()
        .map(|origin| {
            let input = FitInput {
                values: &prepared.values[..*origin],
                actual: &prepared.actual[..*origin],
                start: prepared.start,
                step: prepared.step,
                seasonality: &prepared.seasonality,
                horizon,
            };
            let forecast = catch_member_panic(spec.kind(), || {
                Ok(spec.fit_window(&input)?.forecast(horizon))
            })?;
            if forecast.iter().any(|value| !value.is_finite()) {
                return Err(ForecastError::MemberFailed {
                    member: spec.kind(),
                    reason: "backtest forecast is not finite".to_owned(),
                });
            }
            Ok(forecast)
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(FoldForecasts { forecasts })
}

/// Scores fold forecasts against the observed values, on both scales.
pub(crate) fn score(
    forecasts: &[Vec<f64>],
    prepared: &Prepared,
    origins: &[usize],
    naive_scale: Option<f64>,
) -> Option<Scores> {
    let mut actual_model = Vec::new();
    let mut forecast_model = Vec::new();
    for (forecast, origin) in forecasts.iter().zip(origins) {
        for (step, value) in forecast.iter().enumerate() {
            if let Some(actual) = prepared.actual.get(origin + step) {
                actual_model.push(*actual);
                forecast_model.push(*value);
            }
        }
    }
    let actual_units = prepared.scaler.inverse_observed(&actual_model);
    let forecast_units = prepared.scaler.inverse_observed(&forecast_model);
    let mae = accuracy::mae(&actual_units, &forecast_units)?;
    let model_scale_mae = accuracy::mae(&actual_model, &forecast_model)?;
    let model_scale_mse = accuracy::rmse(&actual_model, &forecast_model)?.powi(2);
    Some(Scores {
        mae,
        rmse: accuracy::rmse(&actual_units, &forecast_units)?,
        mase: naive_scale
            .filter(|scale| *scale > 0.0)
            .map(|scale| mae / scale),
        smape: accuracy::smape(&actual_units, &forecast_units)?,
        model_scale_mse,
        model_scale_mae,
        points: actual_model.iter().filter(|v| !v.is_nan()).count(),
    })
}

/// Residuals `actual - forecast` per fold and horizon step (`[fold][step]`, NaN where nothing was
/// observed), on the model scale.
pub(crate) fn residuals_by_fold(
    forecasts: &[Vec<f64>],
    prepared: &Prepared,
    origins: &[usize],
) -> Vec<Vec<f64>> {
    forecasts
        .iter()
        .zip(origins)
        .map(|(forecast, origin)| {
            forecast
                .iter()
                .enumerate()
                .map(|(step, value)| {
                    prepared
                        .actual
                        .get(origin + step)
                        .map_or(f64::NAN, |actual| actual - value)
                })
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_tile_the_end_of_the_history() {
        let params = BacktestParams::default();
        assert_eq!(
            params.origins(2000, 100),
            vec![1900, 1800, 1700, 1600, 1500, 1400, 1300, 1200]
        );
        assert_eq!(
            params.clone().folds(3).origins(1000, 100),
            vec![900, 800, 700]
        );
        // Only half the history may be used for testing.
        assert_eq!(params.origins(300, 100), vec![200]);
        // Long horizons still get five folds where the history allows: 28 days at 5 minutes.
        assert_eq!(
            params.origins(8064, 288),
            vec![7776, 7488, 7200, 6912, 6624]
        );
        assert_eq!(params.resolve_horizon(Step::FIVE_MINUTES, 8064), 288);
        assert_eq!(params.resolve_horizon(Step::FIVE_MINUTES, 100), 50);
        let hourly = Step::try_from(3_600_000).unwrap();
        assert_eq!(params.resolve_horizon(hourly, 1000), 24);
        assert!(BacktestParams::default().folds(0).check().is_err());
    }

    /// Spread origins step one horizon and a fold's share of it: ten folds of a 48-step day start
    /// 52 steps apart, 4 steps (2 hours of 30 minutes) later in the day each time.
    #[test]
    fn spread_origins_start_at_other_times_of_the_horizon() {
        let spread = BacktestParams::default().spread_origins();
        let origins = spread.origins(10_000, 48);
        assert_eq!(origins.len(), 10);
        assert!(origins.windows(2).all(|pair| pair[0] - pair[1] == 52));
        let phases: std::collections::BTreeSet<usize> =
            origins.iter().map(|origin| origin % 48).collect();
        assert_eq!(phases.len(), 10, "{origins:?}");
        assert_eq!(
            BacktestParams::default().origins(10_000, 48)[..2],
            [9952, 9904],
            "aligned by default"
        );
        assert_eq!(spread.stride(48).origins(10_000, 48)[..2], [9952, 9904]);
    }
}
