//! The combined forecast's own backtest: its scores, overall and per fold, and the conformal
//! calibration of the intervals on its residuals.

use crate::forecast::backtest::{self, Scores};
use crate::forecast::conformal::Calibration;

use super::{Folds, ModelParams};

/// What the combined forecast's backtest gives the fitted model.
pub(super) struct CombinedBacktest {
    /// Scores over every fold, where any could be scored.
    pub(super) scores: Option<Scores>,
    /// Scores of each fold alone, latest first.
    pub(super) fold_scores: Vec<Option<Scores>>,
    /// Interval offsets from the combined forecast's residuals.
    pub(super) calibration: Calibration,
}

impl ModelParams {
    /// Scores `combined_folds` (one combined forecast per fold, from [`super::selection`]) and
    /// calibrates the intervals on their residuals; with no fold, on the series' in-sample
    /// changes.
    pub(super) fn calibrate(
        &self,
        folds: &Folds<'_>,
        combined_folds: &[Vec<f64>],
        naive_scale: Option<f64>,
    ) -> CombinedBacktest {
        let prepared = folds.prepared;
        let origins = &folds.origins;
        let scores = backtest::score(combined_folds, prepared, origins, naive_scale);
        let fold_scores: Vec<Option<Scores>> = (0..combined_folds.len())
            .map(|fold| {
                backtest::score(
                    &combined_folds[fold..=fold],
                    prepared,
                    &origins[fold..=fold],
                    naive_scale,
                )
            })
            .collect();
        let residuals = backtest::residuals_by_fold(combined_folds, prepared, origins);
        let fallback: Vec<f64> = prepared.values.windows(2).map(|w| w[1] - w[0]).collect();
        let calibration =
            Calibration::new(&residuals, &self.conformal, self.recency_decay, &fallback);
        if tracing::enabled!(tracing::Level::DEBUG) {
            calibration.log_summary(prepared.scaler.transform);
        }
        CombinedBacktest {
            scores,
            fold_scores,
            calibration,
        }
    }
}
