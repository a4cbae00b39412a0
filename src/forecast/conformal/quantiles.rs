//! Weighted split-conformal quantiles: the offsets at a level from sorted scores, each fold's
//! scores weighted by its recency (see `docs/decisions.md`, "Recency-weighted conformal
//! quantiles").

use crate::domain::Level;

/// Weight of the residuals of the `fold`-th newest fold: `decay^fold`.
pub(crate) fn fold_weight(decay: f64, fold: usize) -> f64 {
    decay.powi(i32::try_from(fold).unwrap_or(i32::MAX))
}

/// `(score, weight)` pairs sorted by score, as separate columns.
pub(super) fn sorted_weighted(pairs: impl Iterator<Item = (f64, f64)>) -> (Vec<f64>, Vec<f64>) {
    let mut pairs: Vec<(f64, f64)> = pairs.collect();
    pairs.sort_by(|a, b| a.0.total_cmp(&b.0));
    pairs.into_iter().unzip()
}

/// Split-conformal lower and upper offsets from sorted residuals with their `weights` (empty for
/// equal weights): the smallest residual whose cumulative weight reaches `(1 - tail)` of the total
/// plus the forecast's own weight above, and the largest whose cumulative weight stays within
/// `tail` of it below. With equal weights this is the `ceil((n + 1)(1 - tail))`-th smallest
/// residual and its mirror rank.
///
/// Weighted, it is non-exchangeable split conformal prediction (Barber, Candès, Ramdas &
/// Tibshirani, "Conformal prediction beyond exchangeability", Annals of Statistics 51(2), 2023):
/// fixed weights that decay with a residual's age, and weight 1 for the forecast, so that a
/// drifting series is calibrated mostly on its recent errors.
pub(super) fn conformal_offsets(sorted: &[f64], weights: &[f64], level: Level) -> (f64, f64) {
    let (Some(first), Some(last)) = (sorted.first(), sorted.last()) else {
        return (0.0, 0.0);
    };
    let weight = |index: usize| weights.get(index).copied().unwrap_or(1.0);
    let tail = (1.0 - level.fraction()) / 2.0;
    // The forecast's own residual counts with weight 1, beyond every calibration residual.
    let total: f64 = (0..sorted.len()).map(weight).sum::<f64>() + 1.0;
    // Tolerance for the rounding of sums of equal weights at exact ranks.
    let slack = 1e-9 * total;
    let mut cumulative = 0.0;
    let mut lower = *first;
    let mut upper = None;
    for (index, score) in sorted.iter().enumerate() {
        cumulative += weight(index);
        if cumulative <= tail * total + slack {
            lower = *score;
        }
        if upper.is_none() && cumulative >= (1.0 - tail) * total - slack {
            upper = Some(*score);
        }
    }
    (lower, upper.unwrap_or(*last))
}
