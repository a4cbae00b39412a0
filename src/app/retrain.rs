//! Retraining: fit the ensemble of each series, compare it with the live model on the same recent
//! backtest folds, promote it only when it is not worse by more than a margin, and register it.

use std::sync::atomic::{AtomicUsize, Ordering};

use crate::domain::{SeriesId, TimeSeries, Timestamp};
use crate::events::EventCalendar;
use crate::forecast::{FittedModel, HistoryWindow, Horizon, Predict};
use crate::registry::Registry;

use super::{AppError, History, ModelChoice, fit_served};

/// How a retraining run decides and how much it runs at once.
#[derive(Debug, Clone, PartialEq)]
pub struct RetrainSettings {
    /// History fitted: sized to the series' step, or a fixed length.
    pub history_window: HistoryWindow,
    /// A new model is promoted when its backtest MAE is at most `1 + margin` times the live
    /// model's on the same folds.
    pub promotion_margin: f64,
    /// Series fitted at once (threads).
    pub concurrency: usize,
    /// Fit and compare, but write nothing.
    pub dry_run: bool,
    /// Planned events: their windows are masked out of the training data, as plans mask them.
    pub events: EventCalendar,
}

/// What retraining did for one series.
#[derive(Debug)]
pub struct RetrainOutcome {
    /// The series.
    pub series: SeriesId,
    /// Whether the new model is now live (or would be, in a dry run).
    pub promoted: bool,
    /// Version the new model was stored as (`None` in a dry run).
    pub version: Option<u64>,
    /// The live version before the run.
    pub previous: Option<u64>,
    /// New model's MAE on the compared folds, in the series' units.
    pub candidate_mae: Option<f64>,
    /// Live model's MAE on the same folds.
    pub live_mae: Option<f64>,
    /// Why it was or was not promoted.
    pub reason: String,
    /// The new model.
    pub model: FittedModel,
}

/// Retrains `series`: fits the ensemble on its newest `history_window`, compares, registers.
/// Blocking and CPU-heavy.
pub fn retrain_series(
    app: &History,
    registry: &Registry,
    series: &SeriesId,
    settings: &RetrainSettings,
) -> Result<RetrainOutcome, AppError> {
    let live = match registry.load_live(series) {
        Ok(live) => live,
        Err(error) => {
            // No readable live model: the new one replaces it, and the reason says so.
            tracing::warn!(series = %series, %error, "live model unreadable");
            None
        }
    };
    let (model, comparison) =
        fit_candidate(app, series, settings, live.as_ref().map(|live| &live.model))?;
    let version = if settings.dry_run {
        None
    } else {
        Some(
            registry
                .add(series, &model, comparison.promote, &comparison.reason)?
                .version,
        )
    };
    Ok(RetrainOutcome {
        series: series.clone(),
        promoted: comparison.promote,
        version,
        previous: live.map(|live| live.version),
        candidate_mae: comparison.candidate_mae,
        live_mae: comparison.live_mae,
        reason: comparison.reason,
        model,
    })
}

/// Fits the ensemble of `series` on its newest `history_window` (event windows masked) and
/// compares it with `live`. Blocking and CPU-heavy.
pub fn fit_candidate(
    app: &History,
    series: &SeriesId,
    settings: &RetrainSettings,
    live: Option<&FittedModel>,
) -> Result<(FittedModel, Comparison), AppError> {
    let history = settings
        .events
        .mask(&app.recent_window(series, settings.history_window)?);
    let model = fit_served(&history, ModelChoice::Ensemble)?;
    let comparison = compare(&model, live, &history, settings.promotion_margin);
    Ok((model, comparison))
}

/// Retrains every series of `series` on `settings.concurrency` threads; `done` is called after
/// each (from the worker thread). One failure does not stop the others.
pub fn retrain_many(
    app: &History,
    registry: &Registry,
    series: &[SeriesId],
    settings: &RetrainSettings,
    done: &(dyn Fn(&SeriesId, &Result<RetrainOutcome, AppError>) + Sync),
) -> Vec<(SeriesId, Result<RetrainOutcome, AppError>)> {
    let next = AtomicUsize::new(0);
    let results = parking_lot::Mutex::new(Vec::with_capacity(series.len()));
    std::thread::scope(|scope| {
        for _ in 0..settings.concurrency.clamp(1, series.len().max(1)) {
            scope.spawn(|| {
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    let Some(one) = series.get(index) else {
                        break;
                    };
                    let result = retrain_series(app, registry, one, settings);
                    done(one, &result);
                    results.lock().push((index, one.clone(), result));
                }
            });
        }
    });
    let mut results = results.into_inner();
    results.sort_by_key(|(index, _, _)| *index);
    results
        .into_iter()
        .map(|(_, series, result)| (series, result))
        .collect()
}

/// How a retraining run's series ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetrainCounts {
    /// New models made live.
    pub promoted: usize,
    /// Retrained, but the live model stayed (or a dry run).
    pub kept: usize,
    /// Series whose retraining failed.
    pub failed: usize,
}

impl RetrainCounts {
    /// Counts the results of [`retrain_many`].
    pub fn of(results: &[(SeriesId, Result<RetrainOutcome, AppError>)]) -> Self {
        let failed = results.iter().filter(|(_, result)| result.is_err()).count();
        let promoted = results
            .iter()
            .filter(|(_, result)| result.as_ref().is_ok_and(|outcome| outcome.promoted))
            .count();
        Self {
            promoted,
            kept: results.len() - promoted - failed,
            failed,
        }
    }
}

/// The promotion decision.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    /// Promote the new model.
    pub promote: bool,
    /// New model's MAE on the compared folds.
    pub candidate_mae: Option<f64>,
    /// Live model's MAE on the same folds.
    pub live_mae: Option<f64>,
    /// Why.
    pub reason: String,
}

/// Compares `candidate` with `live` on the candidate's backtest folds that start at or after the
/// end of the live model's training data — the recent window both forecast out of sample. The
/// candidate's error there is its own rolling-origin backtest; the live model forecasts each
/// fold re-anchored on the history before it, exactly as it serves. Promotes when the candidate's
/// MAE is at most `1 + margin` times the live one.
pub fn compare(
    candidate: &FittedModel,
    live: Option<&FittedModel>,
    history: &TimeSeries,
    margin: f64,
) -> Comparison {
    let keep = |reason: String, candidate_mae, live_mae| Comparison {
        promote: false,
        candidate_mae,
        live_mae,
        reason,
    };
    let Some(live) = live else {
        return Comparison {
            promote: true,
            candidate_mae: candidate.report().combined.as_ref().map(|s| s.mae),
            live_mae: None,
            reason: "no live model".to_owned(),
        };
    };
    let report = candidate.report();
    let step = history.step().as_millis();
    let start = candidate.trained_start();
    let mut candidate_error = 0.0;
    let mut live_error = 0.0;
    let mut points = 0usize;
    let mut live_points = 0usize;
    let mut folds = 0usize;
    for (origin, scores) in report.origins.iter().zip(&report.combined_folds) {
        let origin_time = Timestamp::from_millis(start.as_millis() + *origin as i64 * step);
        let Some(scores) = scores else { continue };
        if origin_time < live.trained_end() || origin_time <= history.start() {
            continue;
        }
        let index = ((origin_time.as_millis() - history.start().as_millis()) / step) as usize;
        let prefix = TimeSeries::new(
            history.start(),
            history.step(),
            history.values()[..index.min(history.len())].to_vec(),
        );
        let Ok(horizon) = Horizon::try_from(report.horizon) else {
            continue;
        };
        let forecast = match live
            .reanchor(&prefix)
            .and_then(|anchored| anchored.predict(horizon, &[]))
        {
            Ok(forecast) => forecast,
            Err(error) => {
                return Comparison {
                    promote: true,
                    candidate_mae: Some(scores.mae),
                    live_mae: None,
                    reason: format!("the live model cannot forecast the recent folds: {error}"),
                };
            }
        };
        for (point, actual) in forecast.point().iter().zip(&history.values()[index..]) {
            if actual.is_finite() {
                live_error += (point - actual).abs();
                live_points += 1;
            }
        }
        candidate_error += scores.mae * scores.points as f64;
        points += scores.points;
        folds += 1;
    }
    if folds == 0 || points == 0 || live_points == 0 {
        return keep(
            format!(
                "no backtest fold starts after the live model's training data (to {}): nothing \
                 new to compare on",
                live.trained_end()
            ),
            None,
            None,
        );
    }
    let candidate_mae = candidate_error / points as f64;
    let live_mae = live_error / live_points as f64;
    let figures =
        format!("MAE {candidate_mae:.4} vs live {live_mae:.4} on the {folds} most recent folds");
    if candidate_mae <= live_mae * (1.0 + margin) {
        Comparison {
            promote: true,
            candidate_mae: Some(candidate_mae),
            live_mae: Some(live_mae),
            reason: format!("promoted: {figures}"),
        }
    } else {
        keep(
            format!(
                "kept the live model: {figures}, worse by more than {:.0}%",
                margin * 100.0
            ),
            Some(candidate_mae),
            Some(live_mae),
        )
    }
}
