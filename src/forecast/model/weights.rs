//! Combination weights: per bucket of lead times, the weights of the eligible members fitted on
//! their backtest forecasts, and the weighted sum that combines member forecasts (see
//! `docs/decisions.md`, "Inverse-error weights from the backtest MAE" and "Recency weights").

use std::ops::Range;

use crate::forecast::accuracy;
use crate::forecast::conformal;
use crate::forecast::preprocess::Prepared;

use super::{Combination, Folds, ModelParams};

/// Which eligible members may carry weight in one bucket of lead times, and how many at most.
#[derive(Debug, Clone, Copy)]
struct Admission<'a> {
    /// Per eligible member (the baseline last, where it joins): whether it may carry weight in the
    /// bucket (see `gating::admit`).
    allowed: &'a [bool],
    /// Most members the inverse-error rule keeps.
    top_k: usize,
}

impl ModelParams {
    /// Weights `[bucket][slot]` of the eligible members, fitted per bucket of lead times on every
    /// fold but `left_out`; `allowed[bucket]` admits members to a bucket and `top_ks[bucket]`
    /// caps how many the inverse-error rule keeps there.
    pub(super) fn bucket_weights(
        &self,
        folds: &Folds<'_>,
        fold_matrix: &[&[Vec<f64>]],
        allowed: &[Vec<bool>],
        left_out: Option<usize>,
        top_ks: &[usize],
    ) -> Vec<Vec<f64>> {
        folds
            .ranges
            .iter()
            .zip(allowed)
            .zip(top_ks)
            .map(|((range, allowed), top_k)| {
                let admission = Admission {
                    allowed,
                    top_k: *top_k,
                };
                self.weights(
                    fold_matrix,
                    folds.prepared,
                    &folds.origins,
                    left_out,
                    range,
                    admission,
                )
            })
            .collect()
    }

    /// Combination weights for the eligible members, fitted on the horizon `steps` of every fold
    /// except `left_out`; members the `admission` does not allow get none.
    fn weights(
        &self,
        fold_matrix: &[&[Vec<f64>]],
        prepared: &Prepared,
        origins: &[usize],
        left_out: Option<usize>,
        steps: &Range<usize>,
        admission: Admission<'_>,
    ) -> Vec<f64> {
        let Admission { allowed, top_k } = admission;
        let active: Vec<usize> = (0..fold_matrix.len()).filter(|m| allowed[*m]).collect();
        let scatter = |raw: Vec<f64>| -> Vec<f64> {
            let mut full = vec![0.0; fold_matrix.len()];
            for (member, weight) in active.iter().zip(raw) {
                full[*member] = weight;
            }
            full
        };
        if active.len() <= 1 {
            return scatter(vec![1.0]);
        }
        let active_folds: Vec<&[Vec<f64>]> = active.iter().map(|m| fold_matrix[*m]).collect();
        let (columns, targets) =
            self.weighted_rows(&active_folds, prepared, origins, left_out, steps);
        if targets.is_empty() {
            return scatter(vec![1.0 / active.len() as f64; active.len()]);
        }
        let raw = match self.combination {
            Combination::Stacking => simplex_least_squares(&columns, &targets),
            Combination::InverseError => inverse_error_weights(&columns, &targets, top_k),
        };
        scatter(prune(raw, self.min_weight))
    }

    /// The regression the weights are fitted on, `(columns, targets)`: one row per observed
    /// (fold, step) pair of `steps` in every fold but `left_out`, scaled by the square root of its
    /// fold's recency weight so that squared errors are weighted; one column per member of
    /// `member_folds`.
    fn weighted_rows(
        &self,
        member_folds: &[&[Vec<f64>]],
        prepared: &Prepared,
        origins: &[usize],
        left_out: Option<usize>,
        steps: &Range<usize>,
    ) -> (Vec<Vec<f64>>, Vec<f64>) {
        let mut columns: Vec<Vec<f64>> = vec![Vec::new(); member_folds.len()];
        let mut targets = Vec::new();
        for (fold, origin) in origins.iter().enumerate() {
            if Some(fold) == left_out {
                continue;
            }
            // Origins are latest first, so fold 0 is the most recent.
            let row_scale = self.recency_decay.powi(fold as i32).sqrt();
            let rows: Vec<&[f64]> = member_folds
                .iter()
                .map(|forecasts| forecasts.get(fold).map_or(&[][..], Vec::as_slice))
                .collect();
            let available = rows.iter().map(|row| row.len()).min().unwrap_or(0);
            for step in steps.start..steps.end.min(available) {
                let Some(actual) = prepared.actual.get(origin + step).filter(|a| !a.is_nan())
                else {
                    continue;
                };
                targets.push(actual * row_scale);
                for (column, row) in columns.iter_mut().zip(&rows) {
                    column.push(row[step] * row_scale);
                }
            }
        }
        (columns, targets)
    }
}

/// Inverse squared-MAE weights of the `top_k` columns that err least against `targets` (see
/// [`Combination::InverseError`]); the others get none.
fn inverse_error_weights(columns: &[Vec<f64>], targets: &[f64], top_k: usize) -> Vec<f64> {
    let errors: Vec<f64> = columns
        .iter()
        .map(|column| accuracy::mae(targets, column).map_or(f64::INFINITY, |e| e * e))
        .collect();
    let mut ranked: Vec<f64> = errors.clone();
    ranked.sort_by(f64::total_cmp);
    let cutoff = ranked[(top_k - 1).min(ranked.len() - 1)];
    errors
        .iter()
        .map(|mse| match *mse {
            mse if mse > cutoff || !mse.is_finite() => 0.0,
            mse if mse > 0.0 => 1.0 / mse,
            _ => 1e12,
        })
        .collect()
}

/// Drops weights below `min_weight` and renormalises to sum to one.
fn prune(weights: Vec<f64>, min_weight: f64) -> Vec<f64> {
    let total: f64 = weights.iter().filter(|w| w.is_finite()).sum();
    if total <= 0.0 {
        return vec![1.0 / weights.len() as f64; weights.len()];
    }
    let normalised: Vec<f64> = weights.iter().map(|w| w.max(0.0) / total).collect();
    let largest = normalised.iter().copied().fold(0.0, f64::max);
    let kept: Vec<f64> = normalised
        .iter()
        .map(|w| {
            if *w >= min_weight || *w == largest {
                *w
            } else {
                0.0
            }
        })
        .collect();
    let kept_total: f64 = kept.iter().sum();
    kept.iter().map(|w| w / kept_total).collect()
}

/// Minimises `|sum_j w_j columns[j] - targets|^2` over the probability simplex by projected
/// gradient descent (simplex projection: Duchi et al., "Efficient projections onto the l1-ball",
/// ICML 2008). Works on the Gram matrix, so cost is independent of the number of rows.
fn simplex_least_squares(columns: &[Vec<f64>], targets: &[f64]) -> Vec<f64> {
    let members = columns.len();
    let rows = targets.len() as f64;
    let mut gram = vec![vec![0.0; members]; members];
    let mut cross = vec![0.0; members];
    for left in 0..members {
        for right in left..members {
            let value: f64 = columns[left]
                .iter()
                .zip(&columns[right])
                .map(|(a, b)| a * b)
                .sum::<f64>()
                / rows;
            gram[left][right] = value;
            gram[right][left] = value;
        }
        cross[left] = columns[left]
            .iter()
            .zip(targets)
            .map(|(a, b)| a * b)
            .sum::<f64>()
            / rows;
    }
    // Step 1/L with L bounded by the trace (the Gram matrix is positive semi-definite).
    let trace: f64 = (0..members).map(|i| gram[i][i]).sum();
    if !(trace > 0.0 && trace.is_finite()) {
        return vec![1.0 / members as f64; members];
    }
    let step = 1.0 / trace;
    let mut weights = vec![1.0 / members as f64; members];
    for _ in 0..2000 {
        let gradient: Vec<f64> = (0..members)
            .map(|i| (0..members).map(|j| gram[i][j] * weights[j]).sum::<f64>() - cross[i])
            .collect();
        let moved: Vec<f64> = weights
            .iter()
            .zip(&gradient)
            .map(|(w, g)| w - step * g)
            .collect();
        let projected = project_to_simplex(&moved);
        let change: f64 = projected
            .iter()
            .zip(&weights)
            .map(|(a, b)| (a - b).abs())
            .sum();
        weights = projected;
        if change < 1e-10 {
            break;
        }
    }
    weights
}

fn project_to_simplex(point: &[f64]) -> Vec<f64> {
    let mut sorted = point.to_vec();
    sorted.sort_by(|a, b| b.total_cmp(a));
    let mut cumulative = 0.0;
    let mut threshold = 0.0;
    for (index, value) in sorted.iter().enumerate() {
        cumulative += value;
        let candidate = (cumulative - 1.0) / (index + 1) as f64;
        if value - candidate > 0.0 {
            threshold = candidate;
        }
    }
    point.iter().map(|v| (v - threshold).max(0.0)).collect()
}

/// Weighted sum of member forecasts over `horizon` steps, with the weights of the bucket (see
/// [`conformal::bucket_ends`]) each step falls in; `weights[bucket][member]`. A forecast shorter
/// than the horizon is padded with its last value; a missing one contributes nothing.
pub(super) fn combine(
    forecasts: &[Option<&[f64]>],
    weights: &[Vec<f64>],
    ends: &[usize],
    horizon: usize,
) -> Vec<f64> {
    (0..horizon)
        .map(|step| {
            let bucket = &weights[conformal::bucket_of(ends, step)];
            forecasts
                .iter()
                .zip(bucket)
                .filter_map(|(forecast, weight)| {
                    let forecast = (*forecast)?;
                    let value = forecast.get(step).or(forecast.last())?;
                    Some(weight * value)
                })
                .sum()
        })
        .collect()
}

/// Renormalises `weights[member][bucket]` in each of `buckets` over the members given (those that
/// could be refitted, or that could forecast); a bucket whose weight was all on other members falls
/// back to an equal share.
pub(super) fn renormalise(weights: &mut [Vec<f64>], buckets: usize) {
    let count = weights.len() as f64;
    for bucket in 0..buckets {
        let total: f64 = weights.iter().map(|member| member[bucket]).sum();
        for member in weights.iter_mut() {
            member[bucket] = if total > 0.0 {
                member[bucket] / total
            } else {
                1.0 / count
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::four_fold_backtest;
    use super::*;

    #[test]
    fn simplex_stacking_finds_the_mixture() {
        let first: Vec<f64> = (0..200).map(|t| (t as f64 * 0.1).sin()).collect();
        let second: Vec<f64> = (0..200).map(|t| (t as f64 * 0.37).cos()).collect();
        let targets: Vec<f64> = first
            .iter()
            .zip(&second)
            .map(|(a, b)| 0.3 * a + 0.7 * b)
            .collect();
        let weights = simplex_least_squares(&[first, second], &targets);
        assert!((weights[0] - 0.3).abs() < 1e-3 && (weights[1] - 0.7).abs() < 1e-3);
        assert_eq!(project_to_simplex(&[2.0, 0.0]), vec![1.0, 0.0]);
        assert_eq!(prune(vec![0.99, 0.01], 0.02), vec![1.0, 0.0]);
    }

    #[test]
    fn each_bucket_combines_with_its_own_weights() {
        let first = [1.0, 1.0, 1.0, 1.0];
        let second = [3.0, 3.0];
        let forecasts = [Some(first.as_slice()), Some(second.as_slice()), None];
        let weights = vec![vec![1.0, 0.0, 0.5], vec![0.25, 0.75, 0.0]];
        // The second forecast is padded with its last value; the missing one adds nothing.
        assert_eq!(
            combine(&forecasts, &weights, &[2, 4], 4),
            vec![1.0, 1.0, 2.5, 2.5]
        );
    }

    #[test]
    fn weights_follow_the_member_that_errs_least_at_each_lead_time() {
        let (prepared, origins) = four_fold_backtest();
        // `early` is close at leads 0..24 and far after; `late` the other way round.
        let member = |early_error: f64, late_error: f64| -> Vec<Vec<f64>> {
            origins
                .iter()
                .map(|origin| {
                    (0..48)
                        .map(|step| {
                            let error = if step < 24 { early_error } else { late_error };
                            let sign = if step % 2 == 0 { 1.0 } else { -1.0 };
                            prepared.actual[origin + step] + sign * error
                        })
                        .collect()
                })
                .collect()
        };
        let early = member(0.01, 1.0);
        let late = member(1.0, 0.01);
        let fold_matrix = [early.as_slice(), late.as_slice()];
        let params = ModelParams::ensemble();
        let both = Admission {
            allowed: &[true, true],
            top_k: 2,
        };
        let short = params.weights(&fold_matrix, &prepared, &origins, None, &(0..24), both);
        let long = params.weights(&fold_matrix, &prepared, &origins, Some(0), &(24..48), both);
        assert!(short[0] > 0.99 && long[1] > 0.99, "{short:?} {long:?}");
        // A member not allowed in a bucket (it lost to the baseline there) gets nothing.
        let only_late = params.weights(
            &fold_matrix,
            &prepared,
            &origins,
            None,
            &(0..24),
            Admission {
                allowed: &[false, true],
                top_k: 2,
            },
        );
        assert_eq!(only_late, vec![0.0, 1.0]);
    }
}
