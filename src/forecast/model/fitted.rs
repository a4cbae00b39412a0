//! The fitted model: the calibrated ensemble a fit learned, and the newest points it forecasts
//! from, which re-anchoring on newer data replaces without a refit.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::domain::{Forecast, Horizon, Interval, Level, Step, TimeSeries, Timestamp};
use crate::forecast::backtest::BacktestReport;
use crate::forecast::conformal::Calibration;
use crate::forecast::level_shift::{Adjustment, LevelShift};
use crate::forecast::members::{self, Anchor, MemberKind, MemberState};
use crate::forecast::preprocess::{self, Cleaning, Prepared, PreprocessSummary, Scaler};
use crate::forecast::{ForecastError, Predict};

use super::weights::{combine, renormalise};

/// A member of the fitted combination: which member, its weight per bucket of lead times, and
/// what it learned.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct WeightedMember {
    /// Which member.
    pub(super) kind: MemberKind,
    /// Its weight in each horizon bucket (each bucket's weights sum to one over the members).
    pub(super) weights: Vec<f64>,
    /// What the member learned on the whole history.
    pub(super) member: MemberState,
}

impl WeightedMember {
    /// Weight averaged over the steps of the calibrated horizon (buckets end at `ends`).
    pub(super) fn mean_weight(&self, ends: &[usize]) -> f64 {
        let horizon = ends.last().copied().unwrap_or(1).max(1) as f64;
        let mut from = 0;
        let mut total = 0.0;
        for (weight, end) in self.weights.iter().zip(ends) {
            total += weight * (end - from) as f64;
            from = *end;
        }
        total / horizon
    }
}

/// What a fit learned: the weighted members and the interval calibration, with the scaler that
/// maps their forecasts back, the backtest report and what preprocessing did. Shared by every
/// re-anchored copy of the model.
///
/// Serialised inside every stored model: its field names and order are the file format.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct CalibratedEnsemble {
    /// Time just after the last value fitted.
    pub(super) trained_end: Timestamp,
    /// Spacing of the series and of its forecasts.
    pub(super) step: Step,
    /// Mapping from the model scale back to the series' units.
    pub(super) scaler: Scaler,
    /// Members with their weights per horizon bucket and learned state (named `parts` in the
    /// stored format).
    pub(super) parts: Vec<WeightedMember>,
    /// First step after each horizon bucket the weights change at.
    pub(super) ends: Vec<usize>,
    /// Interval offsets from the combined forecast's backtest residuals.
    pub(super) calibration: Calibration,
    /// Backtest figures, per member and combined.
    pub(super) report: BacktestReport,
    /// What preprocessing did.
    pub(super) summary: PreprocessSummary,
    /// How newer data is cleaned before a re-anchored forecast.
    pub(super) cleaning: Cleaning,
    /// The combined forecast of each scored backtest fold on the model scale, in the order of
    /// `report.origins`: out of sample, what replays of planning rules read. Empty in models
    /// stored before they were kept.
    #[serde(default)]
    pub(super) fold_forecasts: Vec<Vec<f64>>,
    /// How the history before `summary.level_shift` was moved to the new level: a re-anchored
    /// forecast moves the newer data's points before the shift the same way, so that members
    /// reading lags from before it read them at the level they were fitted on. `None` without a
    /// shift, and in models stored before it was kept.
    #[serde(default)]
    pub(super) shift_adjustment: Option<Adjustment>,
}

impl CalibratedEnsemble {
    /// Newest points every member's forecast reads.
    pub(super) fn recent_needed(&self) -> usize {
        self.parts
            .iter()
            .map(|weighted| weighted.member.recent_needed())
            .max()
            .unwrap_or(1)
    }

    /// Checks what a decoder cannot: the members' weights agree with the buckets.
    pub(super) fn check(&self) -> Result<(), String> {
        if self.parts.is_empty() || self.ends.is_empty() {
            return Err("a model holds at least one member and one horizon bucket".to_owned());
        }
        if self
            .parts
            .iter()
            .any(|weighted| weighted.weights.len() != self.ends.len())
        {
            return Err("every member holds one weight per horizon bucket".to_owned());
        }
        Ok(())
    }
}

/// A fitted model: immutable, forecasts from the end of the series it was fitted on or, once
/// [re-anchored](FittedModel::reanchor), from the end of newer data without refitting.
///
/// It serialises (with serde, in any format) to everything needed to forecast later: each
/// member's learned state, the ensemble weights, the calibration, the scaler, the backtest
/// report, and the newest preprocessed points.
#[derive(Debug, Clone)]
pub struct FittedModel {
    /// What the fit learned.
    pub(super) ensemble: Arc<CalibratedEnsemble>,
    /// Newest gap-free values on the model scale: what members forecast from.
    pub(super) recent: Vec<f64>,
    /// Time of `recent[0]`.
    pub(super) recent_start: Timestamp,
    /// Time just after the last of `recent`: where forecasts start.
    pub(super) end: Timestamp,
    /// Whether forecasts stop at zero: no negative value in the history fitted nor in the
    /// newer data the model was re-anchored on.
    pub(super) non_negative: bool,
}

impl FittedModel {
    /// The model a fit produced: `ensemble`, forecasting from the end of `prepared`.
    pub(super) fn new(ensemble: CalibratedEnsemble, prepared: &Prepared) -> Self {
        let len = prepared.values.len();
        let needed = ensemble.recent_needed().min(len);
        Self {
            recent: prepared.values[len - needed..].to_vec(),
            recent_start: prepared.time_at(len - needed),
            end: prepared.end(),
            non_negative: ensemble.summary.non_negative,
            ensemble: Arc::new(ensemble),
        }
    }

    /// Backtest figures: per-member scores and status (used, dropped, skipped and why).
    pub fn report(&self) -> &BacktestReport {
        &self.ensemble.report
    }

    /// The combined forecast the backtest made at each fold origin, in the series' units, with an
    /// interval per level: out of sample (neither the members' fits nor the blend saw the fold),
    /// what the model would have forecast then. Latest origin first, as `report().origins`; empty
    /// for a model stored before they were kept.
    pub fn backtest_forecasts(&self, levels: &[Level]) -> Vec<Forecast> {
        let ensemble = &*self.ensemble;
        let points = ensemble.summary.points;
        ensemble
            .report
            .origins
            .iter()
            .zip(&ensemble.fold_forecasts)
            .map(|(origin, model_point)| {
                let before_end = i64::try_from(points.saturating_sub(*origin)).unwrap_or(0);
                let start = ensemble
                    .trained_end
                    .saturating_add_millis(-before_end.saturating_mul(ensemble.step.as_millis()));
                ensemble.forecast_in_units(
                    start,
                    model_point,
                    levels,
                    ensemble.summary.non_negative,
                )
            })
            .collect()
    }

    /// What preprocessing found and did (transform, outliers, imputed points, seasonality).
    pub fn preprocessing(&self) -> &PreprocessSummary {
        &self.ensemble.summary
    }

    /// Whether `shift`, found in history newer than this model's, is the level shift it was fitted
    /// with (see [`LevelShift::same_as`]).
    pub fn fitted_with(&self, shift: &LevelShift) -> bool {
        self.ensemble
            .summary
            .level_shift
            .is_some_and(|known| known.same_as(shift, self.ensemble.step))
    }

    /// Members in the combined forecast with their weights, averaged over the calibrated
    /// horizon (weights are found per bucket of lead times).
    pub fn weights(&self) -> Vec<(MemberKind, f64)> {
        self.ensemble
            .parts
            .iter()
            .map(|weighted| (weighted.kind, weighted.mean_weight(&self.ensemble.ends)))
            .collect()
    }

    /// Time of the first forecast step.
    pub fn forecast_start(&self) -> Timestamp {
        self.end
    }

    /// Time just after the last value the model was fitted on.
    pub fn trained_end(&self) -> Timestamp {
        self.ensemble.trained_end
    }

    /// Time of the first value the model was fitted on (after preprocessing trimmed the start).
    pub fn trained_start(&self) -> Timestamp {
        let points = i64::try_from(self.ensemble.summary.points).unwrap_or(i64::MAX);
        self.ensemble
            .trained_end
            .saturating_add_millis(-points.saturating_mul(self.ensemble.step.as_millis()))
    }

    /// Spacing of the series.
    pub fn step(&self) -> Step {
        self.ensemble.step
    }

    /// The same model forecasting from the end of `series` — newer data than it was fitted on,
    /// on the same grid — without refitting: the new points are cleaned and scaled as the
    /// training data was, and every member re-anchored on them (see `members::learned_state`).
    ///
    /// Fails when `series` is on another step or grid, ends before the training data did, or
    /// holds too few points for the members' lags.
    pub fn reanchor(&self, series: &TimeSeries) -> Result<FittedModel, ForecastError> {
        let step = self.ensemble.step;
        let refuse = |reason: String| ForecastError::CannotReanchor { reason };
        if series.step() != step {
            return Err(refuse(format!(
                "the series is on a step of {}, the model on {step}",
                series.step()
            )));
        }
        let since = series.end().as_millis() - self.ensemble.trained_end.as_millis();
        if since < 0 {
            return Err(refuse(format!(
                "the series ends at {}, before the training data did ({})",
                series.end(),
                self.ensemble.trained_end
            )));
        }
        if since % step.as_millis() != 0 {
            return Err(refuse(
                "the series is not on the grid the model was fitted on".to_owned(),
            ));
        }
        let needed = self.ensemble.recent_needed();
        let shift = self
            .ensemble
            .summary
            .level_shift
            .zip(self.ensemble.shift_adjustment)
            .map(|(shift, adjustment)| (shift.at, adjustment));
        let (recent_start, recent) = preprocess::prepare_recent(
            series,
            needed,
            &self.ensemble.scaler,
            self.ensemble.cleaning,
            shift,
        )?;
        Ok(FittedModel {
            ensemble: Arc::clone(&self.ensemble),
            recent,
            recent_start,
            end: series.end(),
            non_negative: self.ensemble.summary.non_negative
                && preprocess::never_negative(series.values()),
        })
    }

    /// Steps from the end of the training data to where forecasts start.
    fn elapsed(&self) -> usize {
        let millis = self.end.as_millis() - self.ensemble.trained_end.as_millis();
        usize::try_from(millis / self.ensemble.step.as_millis()).unwrap_or(0)
    }
}

impl Predict for FittedModel {
    fn predict(&self, horizon: Horizon, levels: &[Level]) -> Result<Forecast, ForecastError> {
        let ensemble = &*self.ensemble;
        let steps = horizon.steps();
        let anchor = Anchor {
            values: &self.recent,
            start: self.recent_start,
            step: ensemble.step,
            elapsed: self.elapsed(),
        };
        let MemberForecasts { forecasts, weights } = member_forecasts(ensemble, &anchor, steps)?;
        let slices: Vec<Option<&[f64]>> = forecasts.iter().map(|f| Some(f.as_slice())).collect();
        let model_point = members::sanitize(combine(&slices, &weights, &ensemble.ends, steps));
        Ok(ensemble.forecast_in_units(self.end, &model_point, levels, self.non_negative))
    }
}

impl CalibratedEnsemble {
    /// A forecast from `start` of the model-scale `model_point`, in the series' units, with an
    /// interval per level from the calibration; with `non_negative`, nothing below zero.
    fn forecast_in_units(
        &self,
        start: Timestamp,
        model_point: &[f64],
        levels: &[Level],
        non_negative: bool,
    ) -> Forecast {
        let scaler = &self.scaler;
        // A series never negative in the history fitted (a CPU share, a request rate) is not
        // forecast below zero, nor are its bounds.
        let floor = if non_negative { 0.0 } else { f64::NEG_INFINITY };
        let in_units = |value: f64| scaler.inverse(value).max(floor);
        let point: Vec<f64> = model_point.iter().map(|v| in_units(*v)).collect();
        let inflations = self.calibration.inflations(levels);
        let intervals = levels
            .iter()
            .zip(inflations)
            .map(|(level, inflation)| {
                let band = self.calibration.band(model_point.len(), *level, inflation);
                let (lower, upper): (Vec<f64>, Vec<f64>) = model_point
                    .iter()
                    .zip(band)
                    .map(|(value, (low, high))| (in_units(value + low), in_units(value + high)))
                    .unzip();
                Interval {
                    level: *level,
                    lower,
                    upper,
                }
            })
            .collect();
        Forecast::new(start, self.step, point, intervals)
    }
}

/// What a prediction combines.
struct MemberForecasts {
    /// The forecast of each member that could make one.
    forecasts: Vec<Vec<f64>>,
    /// `weights[bucket][member]` of the same members.
    weights: Vec<Vec<f64>>,
}

/// The forecasts of `steps` from `anchor` of every member that could make one, with the weights
/// `[bucket][member]` to combine them: the fitted ones or, when a member panicked (it is skipped,
/// and logged with why), those of the others renormalised. Fails when every member panicked.
fn member_forecasts(
    ensemble: &CalibratedEnsemble,
    anchor: &Anchor<'_>,
    steps: usize,
) -> Result<MemberForecasts, ForecastError> {
    let mut forecasts = Vec::with_capacity(ensemble.parts.len());
    let mut member_weights = Vec::with_capacity(ensemble.parts.len());
    let mut first_error = None;
    for weighted in &ensemble.parts {
        let forecast = members::catch_member_panic(weighted.kind, || {
            Ok(weighted.member.forecast_from(anchor, steps))
        });
        match forecast {
            Ok(forecast) => {
                forecasts.push(forecast);
                member_weights.push(weighted.weights.clone());
            }
            Err(error) => {
                tracing::warn!(%error, "a member is skipped in this forecast");
                first_error.get_or_insert(error);
            }
        }
    }
    let buckets = ensemble.ends.len();
    if let Some(error) = first_error {
        if forecasts.is_empty() {
            return Err(error);
        }
        renormalise(&mut member_weights, buckets);
    }
    let weights = (0..buckets)
        .map(|bucket| {
            member_weights
                .iter()
                .map(|weights| weights[bucket])
                .collect()
        })
        .collect();
    Ok(MemberForecasts { forecasts, weights })
}
