//! How many members to blend: per bucket of lead times, the blend size whose held-out combined
//! forecasts erred least (within one standard error), and the combined forecast of every fold,
//! each from weights and a blend size that did not see it, for the intervals to be calibrated on
//! (see `docs/decisions.md`, "Blend size: one-standard-error rule").

use std::ops::Range;

use crate::forecast::conformal;
use crate::forecast::members::MemberKind;
use crate::forecast::preprocess::Prepared;
use crate::forecast::stats;

use super::weights::combine;
use super::{Combination, Folds, ModelParams};

/// The blend chosen in each bucket of lead times.
pub(super) struct Blend {
    /// Members kept per bucket.
    top_ks: Vec<usize>,
    /// `weights[bucket][slot]` of the eligible members, fitted on every fold.
    pub(super) weights: Vec<Vec<f64>>,
    /// The combined forecast of every fold, from weights and blend sizes chosen on the other
    /// folds (empty when no member was backtested).
    pub(super) combined_folds: Vec<Vec<f64>>,
}

impl Blend {
    /// Logs, at debug level, each bucket's blend size and weights; `kinds[slot]` names the
    /// eligible members.
    pub(super) fn log_weights(&self, ranges: &[Range<usize>], kinds: &[MemberKind]) {
        for ((range, bucket), top_k) in ranges.iter().zip(&self.weights).zip(&self.top_ks) {
            let members: Vec<String> = kinds
                .iter()
                .zip(bucket)
                .filter(|(_, weight)| **weight > 0.0)
                .map(|(kind, weight)| format!("{kind}={weight:.2}"))
                .collect();
            tracing::debug!(?range, top_k, weights = %members.join(" "), "bucket weights");
        }
    }
}

impl ModelParams {
    /// Chooses the blend size per bucket on the combined forecast's held-out backtest, for every
    /// number of members the inverse-error rule may keep; with no backtested member there is no
    /// combined backtest, and the calibration falls back to in-sample changes.
    pub(super) fn choose_blend(
        &self,
        folds: &Folds<'_>,
        fold_matrix: &[&[Vec<f64>]],
        allowed: &[Vec<bool>],
    ) -> Blend {
        let backtested = fold_matrix.iter().any(|folds| !folds.is_empty());
        let scored_folds = if backtested { folds.origins.len() } else { 0 };
        let cross_validated = folds.origins.len() >= 2;
        let tried_top_ks: Vec<usize> =
            if cross_validated && self.combination == Combination::InverseError {
                (1..=self.top_k).collect()
            } else {
                vec![self.top_k]
            };
        let held_out_by_top_k: Vec<Vec<Vec<f64>>> = tried_top_ks
            .iter()
            .map(|top_k| {
                let uniform = vec![*top_k; folds.ranges.len()];
                (0..scored_folds)
                    .map(|fold| {
                        // With one fold there is nothing to hold out: it is weighted on itself.
                        let left_out = cross_validated.then_some(fold);
                        let held_out =
                            self.bucket_weights(folds, fold_matrix, allowed, left_out, &uniform);
                        let forecasts: Vec<Option<&[f64]>> = fold_matrix
                            .iter()
                            .map(|member| member.get(fold).map(Vec::as_slice))
                            .collect();
                        combine(&forecasts, &held_out, &folds.ends, folds.horizon)
                    })
                    .collect()
            })
            .collect();
        // Per bucket, the number of members whose held-out blend erred least.
        let blend_errors = fold_errors(
            &held_out_by_top_k,
            folds.prepared,
            &folds.origins,
            &folds.ranges,
        );
        let choose = |left_out: Option<usize>| {
            least_held_out_error(&blend_errors, self.recency_decay, left_out)
        };
        let chosen = choose(None);
        let top_ks: Vec<usize> = chosen.iter().map(|choice| tried_top_ks[*choice]).collect();
        let weights = self.bucket_weights(folds, fold_matrix, allowed, None, &top_ks);
        // A fold's combined forecast, which the intervals are calibrated on, blends as many
        // members as the other folds chose: neither its weights nor its blend size saw it.
        let combined_folds: Vec<Vec<f64>> = (0..scored_folds)
            .map(|fold| {
                let chosen_without = if cross_validated {
                    choose(Some(fold))
                } else {
                    chosen.clone()
                };
                (0..folds.horizon)
                    .map(|step| {
                        let choice = chosen_without[conformal::bucket_of(&folds.ends, step)];
                        held_out_by_top_k[choice][fold][step]
                    })
                    .collect()
            })
            .collect();
        Blend {
            top_ks,
            weights,
            combined_folds,
        }
    }
}

/// For each bucket of lead times, the index of the candidate to use: the largest blend whose
/// held-out combined fold forecasts erred no more than one standard error above the candidate that
/// erred least there, over every fold but `left_out`, each fold weighted `recency_decay^k` for the
/// k-th newest. Candidates are ordered by blend size, so a later one blends more members; `errors`
/// comes from [`fold_errors`]. This is how the backtest decides between one clear winner and a
/// blend: selection must win by more than the folds' own spread, otherwise the blend, whose
/// errors vary less from one day to the next, is kept (the one-standard-error rule of Breiman,
/// Friedman, Olshen & Stone, "Classification and Regression Trees", 1984, section 3.4.3, with the more
/// robust candidate in the role of the simpler one).
fn least_held_out_error(
    errors: &[Vec<Vec<f64>>],
    recency_decay: f64,
    left_out: Option<usize>,
) -> Vec<usize> {
    let buckets = errors.first().map_or(0, Vec::len);
    // Every candidate and bucket holds one error per fold.
    let fold_count = errors
        .first()
        .and_then(|first| first.first())
        .map_or(0, Vec::len);
    let folds: Vec<(usize, f64)> = (0..fold_count)
        .filter(|fold| Some(*fold) != left_out)
        .map(|fold| (fold, conformal::fold_weight(recency_decay, fold)))
        .collect();
    (0..buckets)
        .map(|bucket| {
            let weighted = |index: usize| -> f64 {
                folds
                    .iter()
                    .map(|(fold, weight)| weight * errors[index][bucket][*fold])
                    .sum()
            };
            let mut best = (f64::INFINITY, errors.len().saturating_sub(1));
            for index in (0..errors.len()).rev() {
                let error = weighted(index);
                if error < best.0 * (1.0 - 1e-9) {
                    best = (error, index);
                }
            }
            (best.1 + 1..errors.len())
                .rev()
                .find(|index| {
                    let differences: Vec<(f64, f64)> = folds
                        .iter()
                        .map(|(fold, weight)| {
                            let difference =
                                errors[*index][bucket][*fold] - errors[best.1][bucket][*fold];
                            (difference, *weight)
                        })
                        .collect();
                    let (mean, standard_error) = stats::weighted_mean_and_error(&differences);
                    mean <= standard_error
                })
                .unwrap_or(best.1)
        })
        .collect()
}

/// `errors[candidate][bucket][fold]`: the absolute model-scale error of each candidate's combined
/// fold forecasts over the lead steps of each of `ranges`, summed over the fold's observed points
/// (folds start at `origins`, latest first). Computed once, then weighted and summed for every
/// fold left out by [`least_held_out_error`].
fn fold_errors(
    candidates: &[Vec<Vec<f64>>],
    prepared: &Prepared,
    origins: &[usize],
    ranges: &[Range<usize>],
) -> Vec<Vec<Vec<f64>>> {
    candidates
        .iter()
        .map(|combined| {
            ranges
                .iter()
                .map(|steps| {
                    combined
                        .iter()
                        .zip(origins)
                        .map(|(forecast, origin)| {
                            steps
                                .clone()
                                .filter_map(|step| {
                                    let actual = prepared.actual.get(origin + step)?;
                                    let error = (actual - forecast.get(step)?).abs();
                                    error.is_finite().then_some(error)
                                })
                                .sum()
                        })
                        .collect()
                })
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::test_support::four_fold_backtest;
    use super::*;

    #[test]
    fn the_held_out_choice_keeps_the_blend_unless_selection_wins_by_more_than_its_noise() {
        let (prepared, origins) = four_fold_backtest();
        // Forecasts off by `error(fold, step)` from what happened.
        let candidate = |error: &dyn Fn(usize, usize) -> f64| -> Vec<Vec<f64>> {
            origins
                .iter()
                .enumerate()
                .map(|(fold, origin)| {
                    (0..48)
                        .map(|step| prepared.actual[origin + step] + error(fold, step))
                        .collect()
                })
                .collect()
        };
        let ranges = [0..24, 24..48];
        // Each candidate is exact in one bucket of lead times.
        let early = candidate(&|_, step| if step < 24 { 0.0 } else { 1.0 });
        let late = candidate(&|_, step| if step < 24 { 1.0 } else { 0.0 });
        let both = [early.clone(), late.clone()];
        assert_eq!(
            least_held_out_error(&fold_errors(&both, &prepared, &origins, &ranges), 1.0, None),
            vec![0, 1]
        );
        // A tie goes to the later candidate (the larger blend).
        let same = [early.clone(), early];
        assert_eq!(
            least_held_out_error(&fold_errors(&same, &prepared, &origins, &ranges), 1.0, None),
            vec![1, 1]
        );
        // `recent` is exact on the newest fold only; `older` on the three before it. Without
        // decay three folds outweigh one.
        let recent = candidate(&|fold, _| if fold == 0 { 0.0 } else { 1.0 });
        let older = candidate(&|fold, _| if fold == 0 { 1.0 } else { 0.0 });
        let pair = fold_errors(
            &[recent.clone(), older.clone()],
            &prepared,
            &origins,
            &ranges,
        );
        assert_eq!(least_held_out_error(&pair, 1.0, None), vec![1, 1]);
        // Halving each older fold's weight, `recent` errs least; but its edge comes from one fold
        // and reverses on the others, within a standard error, so the larger blend is kept.
        assert_eq!(least_held_out_error(&pair, 0.5, None), vec![1, 1]);
        // In the other order, the decay decides which of the two errs least.
        let swapped = fold_errors(&[older, recent], &prepared, &origins, &ranges);
        assert_eq!(least_held_out_error(&swapped, 0.5, None), vec![1, 1]);
        // Left out, the newest fold has no say: `older` is exact on every fold left.
        assert_eq!(least_held_out_error(&swapped, 0.5, Some(0)), vec![0, 0]);
        // A smaller blend that errs less on every fold, by a steady margin, is chosen.
        let steady = candidate(&|fold, _| 0.2 + 0.01 * fold as f64);
        let worse = candidate(&|fold, _| 0.5 + 0.02 * fold as f64);
        let clear = fold_errors(&[steady, worse], &prepared, &origins, &ranges);
        assert_eq!(least_held_out_error(&clear, 0.9, None), vec![0, 0]);
    }
}
