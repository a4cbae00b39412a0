//! Split-conformal prediction intervals from backtest residuals, per bucket of horizon steps.
//!
//! Vovk, Gammerman & Shafer, "Algorithmic Learning in a Random World" (2005); for multi-step time
//! series, Stankevičiūtė, Alaa & van der Schaar, "Conformal Time-series Forecasting" (NeurIPS 2021),
//! which calibrates each horizon step separately. Here steps are pooled into buckets so every
//! bucket holds enough out-of-sample residuals for a 95% quantile, and the lower and upper bounds
//! use separate quantiles of the signed residuals, so a skewed error distribution gives a skewed
//! band. Residuals live on the model scale; the bounds are inverted with the point forecast.

use super::ForecastError;
use super::stats;
use crate::domain::Level;

/// Parameters of the interval calibration.
///
/// | Name | Default | Purpose | Range |
/// |---|---|---|---|
/// | `buckets` | 6 | groups of consecutive horizon steps calibrated separately | `>= 1` |
/// | `min_per_bucket` | 40 | fewest residuals per bucket; smaller buckets merge with their neighbours | `>= 1` |
#[derive(Debug, Clone, PartialEq)]
pub struct ConformalParams {
    buckets: usize,
    min_per_bucket: usize,
}

impl Default for ConformalParams {
    fn default() -> Self {
        Self {
            buckets: 6,
            min_per_bucket: 40,
        }
    }
}

impl ConformalParams {
    /// Groups of horizon steps calibrated separately.
    #[must_use]
    pub fn buckets(mut self, count: usize) -> Self {
        self.buckets = count;
        self
    }

    /// Fewest residuals per bucket.
    #[must_use]
    pub fn min_per_bucket(mut self, count: usize) -> Self {
        self.min_per_bucket = count;
        self
    }

    /// Validates the parameters.
    pub fn check(self) -> Result<Self, ForecastError> {
        if self.buckets == 0 {
            return Err(ForecastError::invalid("buckets", "must be at least 1"));
        }
        if self.min_per_bucket == 0 {
            return Err(ForecastError::invalid(
                "min_per_bucket",
                "must be at least 1",
            ));
        }
        Ok(self)
    }
}

/// Backtest residuals per bucket of horizon steps, pooled and per fold.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Calibration {
    /// Horizon the residuals were collected for.
    horizon: usize,
    /// First step after each bucket, in step order.
    ends: Vec<usize>,
    /// Sorted residuals of every fold, per bucket.
    pooled: Vec<Vec<f64>>,
    /// Residuals per bucket and fold (`by_fold[bucket][fold]`), for the cross-validated widening.
    by_fold: Vec<Vec<Vec<f64>>>,
}

/// Widening factors tried by [`Calibration::inflation`], from none up to [`MAX_INFLATION`].
const INFLATION_STEPS: usize = 40;

/// Largest widening: beyond this a fold is a regime change (a level shift inside the backtest),
/// and bands wide enough to cover it would be useless for every other day. On a log scale a
/// factor of 2 already squares the multiplicative width.
const MAX_INFLATION: f64 = 2.0;

impl Calibration {
    /// Builds the calibration from `residuals[fold][step]` (NaN entries are ignored).
    ///
    /// `fallback` supplies residuals when the backtest produced none at all (very short series).
    pub(crate) fn new(residuals: &[Vec<f64>], params: &ConformalParams, fallback: &[f64]) -> Self {
        let horizon = residuals.iter().map(Vec::len).max().unwrap_or(0).max(1);
        let mut ends = bucket_ends(residuals, params);
        let finite_in = |from: usize, to: usize| finite_in(residuals, from, to);
        let mut by_fold: Vec<Vec<Vec<f64>>> = Vec::with_capacity(ends.len());
        let mut start = 0;
        for end in &ends {
            by_fold.push(finite_in(start, *end));
            start = *end;
        }
        let total: usize = by_fold.iter().flatten().map(Vec::len).sum();
        if total == 0 {
            by_fold = vec![vec![
                fallback.iter().copied().filter(|r| r.is_finite()).collect(),
            ]];
            ends = vec![horizon];
        }
        let pooled = by_fold
            .iter()
            .map(|folds| {
                let mut all: Vec<f64> = folds.iter().flatten().copied().collect();
                all.sort_by(f64::total_cmp);
                all
            })
            .collect();
        Self {
            horizon,
            ends,
            pooled,
            by_fold,
        }
    }

    /// Factor (at least 1) by which the offsets at `level` must grow for the coverage of each
    /// fold, calibrated on the other folds only, to reach `level` on average.
    ///
    /// Split-conformal coverage assumes exchangeable residuals; backtest folds of a drifting
    /// series are not, and a fold calibrated on its neighbours then under-covers. This
    /// cross-validated check (in the spirit of CV+, Barber et al., "Predictive inference with the
    /// jackknife+", Annals of Statistics 49(1), 2021) widens the band just enough to cover.
    pub(crate) fn inflation(&self, level: Level) -> f64 {
        let folds = self.by_fold.first().map_or(0, Vec::len);
        if folds < 2 {
            return 1.0;
        }
        // (residuals of the held-out fold, offsets calibrated without it) per fold and bucket.
        let mut held_out: Vec<(&[f64], (f64, f64))> = Vec::new();
        for bucket in &self.by_fold {
            for (fold, residuals) in bucket.iter().enumerate() {
                if residuals.is_empty() {
                    continue;
                }
                let mut others: Vec<f64> = bucket
                    .iter()
                    .enumerate()
                    .filter(|(other, _)| *other != fold)
                    .flat_map(|(_, r)| r.iter().copied())
                    .collect();
                if others.is_empty() {
                    continue;
                }
                others.sort_by(f64::total_cmp);
                held_out.push((residuals, conformal_offsets(&others, level)));
            }
        }
        let total: usize = held_out.iter().map(|(r, _)| r.len()).sum();
        if total == 0 {
            return 1.0;
        }
        for step in 0..=INFLATION_STEPS {
            let factor = 1.0 + (MAX_INFLATION - 1.0) * step as f64 / INFLATION_STEPS as f64;
            let inside: usize = held_out
                .iter()
                .map(|(residuals, (lower, upper))| {
                    residuals
                        .iter()
                        .filter(|r| **r >= lower * factor && **r <= upper * factor)
                        .count()
                })
                .sum();
            if inside as f64 / total as f64 >= level.fraction() {
                return factor;
            }
        }
        MAX_INFLATION
    }

    /// Logs, at debug level, each bucket's residual count, 80% and 95% offsets and the widening
    /// per level, for diagnosing interval widths on real series.
    pub(crate) fn log_summary(&self, transform: super::Transform) {
        let levels = [0.8, 0.95].map(|fraction| {
            Level::try_from(fraction).expect("invariant: 0.8 and 0.95 are valid levels")
        });
        let inflation80 = self.inflation(levels[0]);
        let inflation95 = self.inflation(levels[1]);
        for (bucket, end) in self.ends.iter().enumerate() {
            let (low80, high80) = conformal_offsets(&self.pooled[bucket], levels[0]);
            let (low95, high95) = conformal_offsets(&self.pooled[bucket], levels[1]);
            tracing::debug!(
                ?transform,
                bucket,
                end,
                residuals = self.pooled[bucket].len(),
                low80,
                high80,
                low95,
                high95,
                inflation80,
                inflation95,
                "interval calibration"
            );
        }
    }

    /// Offsets `(lower, upper)` to add to the point forecast at `step` (0-based) for `level`,
    /// widened by `inflation` (from [`Calibration::inflation`]).
    ///
    /// Beyond the calibrated horizon the last bucket's offsets grow like a random walk's,
    /// with the square root of the step.
    pub(crate) fn offsets(&self, step: usize, level: Level, inflation: f64) -> (f64, f64) {
        let index = bucket_of(&self.ends, step);
        let (lower, upper) = conformal_offsets(&self.pooled[index], level);
        let growth = if step >= self.horizon {
            ((step + 1) as f64 / self.horizon as f64).sqrt()
        } else {
            1.0
        };
        (lower * growth * inflation, upper * growth * inflation)
    }
}

/// The finite values of every fold in steps `from..to`, per fold.
fn finite_in(residuals: &[Vec<f64>], from: usize, to: usize) -> Vec<Vec<f64>> {
    residuals
        .iter()
        .map(|fold| {
            fold.iter()
                .take(to)
                .skip(from)
                .copied()
                .filter(|r| r.is_finite())
                .collect()
        })
        .collect()
}

/// First step after each bucket of horizon steps, for `values[fold][step]` (NaN where nothing was
/// observed): `params.buckets` equal buckets, each merged into the next until it holds at least
/// `min_per_bucket` finite values; leftover steps join the last bucket.
///
/// Both the combination weights and the interval offsets are found per bucket, since errors,
/// and which member errs least, change with the lead time.
pub(crate) fn bucket_ends(values: &[Vec<f64>], params: &ConformalParams) -> Vec<usize> {
    let horizon = values.iter().map(Vec::len).max().unwrap_or(0).max(1);
    let bucket_count = params.buckets.min(horizon);
    let mut ends: Vec<usize> = Vec::new();
    let mut from = 0;
    for bucket in 0..bucket_count {
        let to = (bucket + 1) * horizon / bucket_count;
        let count: usize = finite_in(values, from, to).iter().map(Vec::len).sum();
        if count >= params.min_per_bucket {
            ends.push(to);
            from = to;
        }
    }
    match ends.last_mut() {
        Some(last) => *last = horizon,
        None => ends.push(horizon),
    }
    ends
}

/// Index of the bucket holding `step` (steps beyond the last bucket belong to it).
pub(crate) fn bucket_of(ends: &[usize], step: usize) -> usize {
    ends.iter()
        .position(|end| step < *end)
        .unwrap_or(ends.len().saturating_sub(1))
}

/// Split-conformal lower and upper offsets from sorted residuals: the
/// `ceil((n + 1)(1 - tail))`-th smallest residual above and its mirror rank below.
fn conformal_offsets(sorted: &[f64], level: Level) -> (f64, f64) {
    if sorted.is_empty() {
        return (0.0, 0.0);
    }
    let tail = (1.0 - level.fraction()) / 2.0;
    let count = sorted.len() as f64;
    let span = (count - 1.0).max(1.0);
    let upper_probability = (((count + 1.0) * (1.0 - tail)).ceil() - 1.0) / span;
    let lower_probability = (((count + 1.0) * tail).floor() - 1.0) / span;
    (
        stats::quantile_sorted(sorted, lower_probability).unwrap_or(0.0),
        stats::quantile_sorted(sorted, upper_probability).unwrap_or(0.0),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_come_from_the_right_bucket() {
        // Steps 0-1 have small residuals, steps 2-3 large ones.
        // 101 folds; steps 0-1 have small residuals, steps 2-3 large ones.
        let residuals: Vec<Vec<f64>> = (-50..=50)
            .map(|r| {
                let small = r as f64 / 100.0;
                vec![small, small, small * 10.0, small * 10.0]
            })
            .collect();
        let calibration = Calibration::new(
            &residuals,
            &ConformalParams::default().buckets(2).min_per_bucket(10),
            &[],
        );
        let level = Level::try_from(0.8).unwrap();
        let (near_lower, near_upper) = calibration.offsets(0, level, 1.0);
        let (far_lower, far_upper) = calibration.offsets(3, level, 1.0);
        assert!((near_upper - 0.4).abs() < 0.02, "{near_upper}");
        assert!((near_lower + 0.4).abs() < 0.02, "{near_lower}");
        assert!((far_upper - 4.0).abs() < 0.2 && far_lower < -3.8);
        let (_, beyond) = calibration.offsets(15, level, 1.0);
        assert!((beyond - far_upper * 2.0).abs() < 1e-9);
        // Exchangeable folds need (almost) no widening.
        assert!(calibration.inflation(level) < 1.1);
    }

    #[test]
    fn a_fold_unlike_the_others_widens_the_band() {
        // Two calm folds and one whose errors are three times larger.
        let fold =
            |scale: f64| -> Vec<f64> { (-50..=50).map(|r| scale * r as f64 / 50.0).collect() };
        let residuals = vec![fold(1.0), fold(1.0), fold(3.0)];
        let calibration = Calibration::new(&residuals, &ConformalParams::default().buckets(1), &[]);
        let level = Level::try_from(0.9).unwrap();
        assert!(calibration.inflation(level) > 1.2);
    }

    #[test]
    fn sparse_buckets_merge_and_empty_uses_the_fallback() {
        let residuals = vec![vec![1.0, -1.0], vec![2.0, -2.0]];
        let calibration = Calibration::new(&residuals, &ConformalParams::default(), &[]);
        assert_eq!(calibration.ends, vec![2]);
        let level = Level::try_from(0.5).unwrap();
        let (lower, upper) = calibration.offsets(0, level, 1.0);
        assert!(lower < 0.0 && upper > 0.0);
        let empty = Calibration::new(&[vec![], vec![]], &ConformalParams::default(), &[0.5, -0.5]);
        assert_eq!(empty.offsets(0, level, 1.0), (-0.5, 0.5));
        assert_eq!(empty.inflation(level), 1.0);
        assert!(ConformalParams::default().buckets(0).check().is_err());
    }
}
