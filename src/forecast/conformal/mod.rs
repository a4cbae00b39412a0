//! Split-conformal prediction intervals from backtest residuals, per bucket of horizon steps.
//!
//! Vovk, Gammerman & Shafer, "Algorithmic Learning in a Random World" (2005); for multi-step time
//! series, Stankevičiūtė, Alaa & van der Schaar, "Conformal Time-series Forecasting" (NeurIPS 2021),
//! which calibrates each horizon step separately. Here steps are pooled into buckets of lead
//! times, each with its own scale, and the quantiles come from the scaled residuals of all
//! buckets together (normalised scores, see [`Calibration`]), so a 95% bound rests on the whole
//! backtest rather than on a bucket's two largest residuals. The lower and upper bounds use
//! separate quantiles of the signed scores, so errors skewed downwards give a band skewed
//! downwards; the lower bound reaches at least as far below the forecast as the upper one above
//! it (see `widening::mirrored_at_least`). Residuals live on the model scale; the bounds are
//! inverted with the point forecast. Each fold's residuals weigh `recency_decay` times the next
//! newer fold's in the quantiles (non-exchangeable conformal prediction, see
//! [`Calibration::new`]), so the bands follow the recent errors of a drifting series.
//!
//! The calibration itself is here; the buckets of lead times are in `buckets`, the per-step
//! scales in `scales`, the weighted quantiles in `quantiles`, and the cross-validated widening of
//! the bounds in `widening`. See `docs/decisions.md`, "Conformal intervals: normalised scores,
//! doubling buckets, per-step scales".

mod buckets;
mod quantiles;
mod scales;
mod widening;

use super::ForecastError;
use super::stats;
use crate::domain::Level;

pub(crate) use buckets::{bucket_ends, bucket_of};
pub(crate) use quantiles::fold_weight;
pub(crate) use widening::Widening;

use buckets::finite_in;
use quantiles::{conformal_offsets, sorted_weighted};
use scales::step_scales;
use widening::{mirrored_at_least, widen_down, widen_up};

/// Parameters of the interval calibration.
///
/// | Name | Default | Purpose | Range |
/// |---|---|---|---|
/// | `buckets` | 6 | groups of consecutive horizon steps, each twice as wide as the one before, with their own scale (and ensemble weights) | `>= 1` |
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

/// Backtest residuals per bucket of horizon steps, as a scale per bucket and scaled scores.
///
/// Normalised conformal scores (Papadopoulos, Vovk & Gammerman, "Normalized nonconformity measures
/// for regression conformal prediction", AIA 2008; Lei et al., "Distribution-free predictive
/// inference for regression", JASA 113, 2018, section 5.2): each residual is divided by its
/// bucket's scale (its mean absolute residual), and the quantiles of the scaled scores of every
/// bucket together, times a bucket's scale, give that bucket's offsets. A bucket holds only a
/// few folds' worth of correlated residuals, so its own 95% quantile would be one of its two or
/// three largest values; pooled over the buckets the tail rests on the whole backtest, while each
/// bucket keeps its own width.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Calibration {
    /// Horizon the residuals were collected for.
    horizon: usize,
    /// First step after each bucket, in step order.
    ends: Vec<usize>,
    /// Mean absolute residual of each bucket (the scale before `step_scales`; still used by
    /// calibrations stored without them).
    scales: Vec<f64>,
    /// Scale of each horizon step: the mean absolute residual, pooled over runs of steps and
    /// made non-decreasing in the lead time (see [`step_scales`]). Scores are divided by it.
    #[serde(default)]
    step_scales: Vec<f64>,
    /// Sorted scaled scores of each bucket: a bucket whose scores are heavier-tailed than the
    /// pool (short leads, where a sudden change is a large error against a small scale) takes
    /// its own quantile.
    #[serde(default)]
    bucket_scores: Vec<Vec<f64>>,
    /// The weight of each of `bucket_scores` (its fold's recency weight); empty for equal
    /// weights (and in calibrations stored before weights).
    #[serde(default)]
    bucket_weights: Vec<Vec<f64>>,
    /// Sorted scaled scores of every bucket and fold.
    pooled: Vec<f64>,
    /// The weight of each of `pooled`; empty for equal weights.
    #[serde(default)]
    pooled_weights: Vec<f64>,
    /// Scaled scores per fold (all buckets, newest fold first), for the cross-validated widening.
    by_fold: Vec<Vec<f64>>,
    /// Weight of each older fold relative to the next newer one; 1 in calibrations stored
    /// before weights.
    #[serde(default = "equal_weights")]
    recency_decay: f64,
}

/// The recency decay of calibrations stored before residuals were weighted.
fn equal_weights() -> f64 {
    1.0
}

impl Calibration {
    /// Builds the calibration from `residuals[fold][step]` (NaN entries are ignored; fold 0 is the
    /// newest), each fold's residuals weighing `recency_decay` (in `(0, 1]`) times the next newer
    /// fold's in the quantiles.
    ///
    /// `fallback` supplies residuals when the backtest produced none at all (very short series).
    pub(crate) fn new(
        residuals: &[Vec<f64>],
        params: &ConformalParams,
        recency_decay: f64,
        fallback: &[f64],
    ) -> Self {
        let horizon = residuals.iter().map(Vec::len).max().unwrap_or(0).max(1);
        let mut ends = bucket_ends(residuals, params);
        // by_bucket[bucket][fold]: the finite residuals of that fold in that bucket.
        let mut by_bucket: Vec<Vec<Vec<f64>>> = Vec::with_capacity(ends.len());
        let mut start = 0;
        for end in &ends {
            by_bucket.push(finite_in(residuals, start, *end));
            start = *end;
        }
        let total: usize = by_bucket.iter().flatten().map(Vec::len).sum();
        if total == 0 {
            by_bucket = vec![vec![
                fallback.iter().copied().filter(|r| r.is_finite()).collect(),
            ]];
            ends = vec![horizon];
        }
        let scales = bucket_scales(&by_bucket);
        let step_scales = if total == 0 {
            Vec::new()
        } else {
            step_scales(residuals, horizon, (params.min_per_bucket / 2).max(1))
        };
        let by_fold: Vec<Vec<f64>> = if step_scales.is_empty() {
            scores_by_fold_of_buckets(&by_bucket, &scales)
        } else {
            residuals
                .iter()
                .map(|fold| {
                    fold.iter()
                        .zip(&step_scales)
                        .filter(|(r, _)| r.is_finite())
                        .map(|(r, scale)| r / scale)
                        .collect()
                })
                .collect()
        };
        let decay = recency_decay;
        let (pooled, pooled_weights) =
            sorted_weighted(by_fold.iter().enumerate().flat_map(|(fold, scores)| {
                scores.iter().map(move |r| (*r, fold_weight(decay, fold)))
            }));
        let (bucket_scores, bucket_weights) = if step_scales.is_empty() {
            (Vec::new(), Vec::new())
        } else {
            sorted_bucket_scores(residuals, &ends, &step_scales, decay)
        };
        Self {
            horizon,
            ends,
            scales,
            step_scales,
            bucket_scores,
            bucket_weights,
            pooled,
            pooled_weights,
            by_fold,
            recency_decay: decay,
        }
    }

    /// Logs, at debug level, each bucket's scale and 80% and 95% offsets and the widening per
    /// level, for diagnosing interval widths on real series.
    pub(crate) fn log_summary(&self, transform: super::Transform) {
        let levels = [0.8, 0.95].map(|fraction| {
            Level::try_from(fraction).expect("invariant: 0.8 and 0.95 are valid levels")
        });
        let [inflation80, inflation95] = self.inflations(&levels)[..] else {
            unreachable!("one widening per level")
        };
        for (bucket, end) in self.ends.iter().enumerate() {
            let step = end - 1;
            let (low80, high80) = self.offsets(step, levels[0], Widening::NONE);
            let (low95, high95) = self.offsets(step, levels[1], Widening::NONE);
            tracing::debug!(
                ?transform,
                bucket,
                end,
                scale = self.scales[bucket],
                low80,
                high80,
                low95,
                high95,
                ?inflation80,
                ?inflation95,
                "interval calibration"
            );
        }
    }

    /// Offsets `(lower, upper)` to add to the point forecast at `step` (0-based) for `level`,
    /// widened by `inflation` (from [`Calibration::inflations`]): the step's scale times the
    /// quantiles of the pooled scores, or of its bucket's scores where those reach further. The
    /// lower offset reaches at least as far below the forecast as the upper one above it
    /// ([`mirrored_at_least`]).
    ///
    /// Beyond the calibrated horizon the last bucket's offsets grow like a random walk's,
    /// with the square root of the step.
    pub(crate) fn offsets(&self, step: usize, level: Level, inflation: Widening) -> (f64, f64) {
        self.scaled(step, &self.quantiles(level), inflation)
    }

    /// [`Calibration::offsets`] of steps `0..steps`, with the quantiles taken once.
    pub(crate) fn band(&self, steps: usize, level: Level, inflation: Widening) -> Vec<(f64, f64)> {
        let quantiles = self.quantiles(level);
        (0..steps)
            .map(|step| self.scaled(step, &quantiles, inflation))
            .collect()
    }

    /// The score quantiles at `level`: pooled, and each bucket's own (`None` when it has none).
    fn quantiles(&self, level: Level) -> Quantiles {
        Quantiles {
            pooled: conformal_offsets(&self.pooled, &self.pooled_weights, level),
            buckets: self
                .bucket_scores
                .iter()
                .enumerate()
                .map(|(bucket, scores)| {
                    let weights = self
                        .bucket_weights
                        .get(bucket)
                        .map_or(&[][..], Vec::as_slice);
                    (!scores.is_empty()).then(|| conformal_offsets(scores, weights, level))
                })
                .collect(),
        }
    }

    /// The offsets at `step` from the level's `quantiles`: see [`Calibration::offsets`].
    fn scaled(&self, step: usize, quantiles: &Quantiles, inflation: Widening) -> (f64, f64) {
        let (mut lower, mut upper) = quantiles.pooled;
        let bucket = bucket_of(&self.ends, step);
        if let Some((own_lower, own_upper)) = quantiles.buckets.get(bucket).copied().flatten() {
            lower = lower.min(own_lower);
            upper = upper.max(own_upper);
        }
        let growth = if step >= self.horizon {
            ((step + 1) as f64 / self.horizon as f64).sqrt()
        } else {
            1.0
        };
        let base = match self
            .step_scales
            .get(step.min(self.horizon.saturating_sub(1)))
        {
            Some(scale) => *scale,
            None => self.scales[bucket],
        };
        let scale = base * growth;
        let upper = widen_up(upper * scale, inflation.upper);
        let lower = widen_down(lower * scale, inflation.lower);
        (mirrored_at_least(lower, upper), upper)
    }
}

/// Mean absolute residual of each bucket of `by_bucket[bucket][fold]` (1 where it is not positive
/// and finite).
fn bucket_scales(by_bucket: &[Vec<Vec<f64>>]) -> Vec<f64> {
    by_bucket
        .iter()
        .map(|folds| {
            let all: Vec<f64> = folds.iter().flatten().map(|r| r.abs()).collect();
            let scale = stats::mean(&all);
            if scale > 0.0 && scale.is_finite() {
                scale
            } else {
                1.0
            }
        })
        .collect()
}

/// Scores per fold (all buckets) from `by_bucket[bucket][fold]`, each residual divided by its
/// bucket's scale: the scores of a calibration without step scales.
fn scores_by_fold_of_buckets(by_bucket: &[Vec<Vec<f64>>], scales: &[f64]) -> Vec<Vec<f64>> {
    let folds = by_bucket.iter().map(Vec::len).max().unwrap_or(0);
    (0..folds)
        .map(|fold| {
            by_bucket
                .iter()
                .zip(scales)
                .flat_map(|(bucket, scale)| {
                    bucket
                        .get(fold)
                        .into_iter()
                        .flatten()
                        .map(move |r| r / scale)
                })
                .collect()
        })
        .collect()
}

/// Each bucket's scores (residuals divided by their step's scale), sorted, with their folds'
/// recency weights: `(scores, weights)`, one entry per bucket ending at `ends`.
fn sorted_bucket_scores(
    residuals: &[Vec<f64>],
    ends: &[usize],
    step_scales: &[f64],
    decay: f64,
) -> (Vec<Vec<f64>>, Vec<Vec<f64>>) {
    let mut from = 0;
    ends.iter()
        .map(|end| {
            let scored = residuals.iter().enumerate().flat_map(|(fold, scores)| {
                let weight = fold_weight(decay, fold);
                scores
                    .iter()
                    .enumerate()
                    .take(*end)
                    .skip(from)
                    .filter(|(_, r)| r.is_finite())
                    .map(move |(step, r)| (r / step_scales[step], weight))
            });
            let sorted = sorted_weighted(scored);
            from = *end;
            sorted
        })
        .unzip()
}

/// Score quantiles at one level, from [`Calibration::quantiles`].
#[derive(Debug, Clone)]
struct Quantiles {
    /// `(lower, upper)` of the pooled scores.
    pooled: (f64, f64),
    /// `(lower, upper)` of each bucket's own scores, `None` for a bucket without any.
    buckets: Vec<Option<(f64, f64)>>,
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::seq::SliceRandom;
    use rand_chacha::ChaCha8Rng;

    use super::*;

    /// The ensemble's default recency decay.
    const DECAY: f64 = 0.9;

    #[test]
    fn quantiles_come_from_the_right_bucket() {
        // 1001 folds in a random order of their size (exchangeable, as the widening check
        // assumes of calm days); steps 0-1 have small residuals, steps 2-3 large ones.
        let mut order: Vec<i32> = (-500..=500).collect();
        order.shuffle(&mut ChaCha8Rng::seed_from_u64(3));
        let residuals: Vec<Vec<f64>> = order
            .into_iter()
            .map(|r| {
                let small = r as f64 / 1000.0;
                vec![small, small, small * 10.0, small * 10.0]
            })
            .collect();
        let calibration = Calibration::new(
            &residuals,
            &ConformalParams::default().buckets(2).min_per_bucket(10),
            1.0,
            &[],
        );
        let level = Level::try_from(0.8).unwrap();
        let (near_lower, near_upper) = calibration.offsets(0, level, Widening::NONE);
        let (far_lower, far_upper) = calibration.offsets(3, level, Widening::NONE);
        assert!((near_upper - 0.4).abs() < 0.02, "{near_upper}");
        assert!((near_lower + 0.4).abs() < 0.02, "{near_lower}");
        assert!((far_upper - 4.0).abs() < 0.2 && far_lower < -3.8);
        let (_, beyond) = calibration.offsets(15, level, Widening::NONE);
        assert!((beyond - far_upper * 2.0).abs() < 1e-9);
        // Exchangeable folds need (almost) no widening.
        let widening = calibration.inflations(&[level])[0];
        assert!(widening.lower < 1.1 && widening.upper < 1.1, "{widening:?}");
    }

    #[test]
    fn a_bucket_keeps_its_scale_but_shares_the_tail() {
        // Bucket 0 (step 0) has residuals of scale 1, the later buckets (steps 1 and 2-3) of
        // scale 10 with the same shape: the offsets differ by the scale alone.
        let residuals: Vec<Vec<f64>> = (-20..=20)
            .map(|r| {
                let unit = r as f64 / 20.0;
                vec![unit, unit * 10.0, unit * 10.0, unit * 10.0]
            })
            .collect();
        let calibration = Calibration::new(
            &residuals,
            &ConformalParams::default().buckets(3).min_per_bucket(10),
            DECAY,
            &[],
        );
        assert_eq!(calibration.ends, vec![1, 2, 4]);
        let level = Level::try_from(0.95).unwrap();
        let (near_lower, near_upper) = calibration.offsets(0, level, Widening::NONE);
        let (far_lower, far_upper) = calibration.offsets(3, level, Widening::NONE);
        assert!((far_upper / near_upper - 10.0).abs() < 1e-9);
        assert!((far_lower / near_lower - 10.0).abs() < 1e-9);
        assert!(near_upper > 0.9 && near_upper <= 1.0, "{near_upper}");
    }

    #[test]
    fn sparse_buckets_merge_and_empty_uses_the_fallback() {
        let residuals = vec![vec![1.0, -1.0], vec![2.0, -2.0]];
        let calibration = Calibration::new(&residuals, &ConformalParams::default(), DECAY, &[]);
        assert_eq!(calibration.ends, vec![2]);
        let level = Level::try_from(0.5).unwrap();
        let (lower, upper) = calibration.offsets(0, level, Widening::NONE);
        assert!(lower < 0.0 && upper > 0.0);
        let empty = Calibration::new(
            &[vec![], vec![]],
            &ConformalParams::default(),
            DECAY,
            &[0.5, -0.5],
        );
        assert_eq!(empty.offsets(0, level, Widening::NONE), (-0.5, 0.5));
        assert_eq!(empty.inflations(&[level])[0], Widening::NONE);
        assert!(ConformalParams::default().buckets(0).check().is_err());
    }

    #[test]
    fn a_short_lead_gets_a_narrower_band_than_a_long_one_in_the_same_bucket() {
        // One bucket of six steps whose errors grow from 1 to 6.
        let residuals: Vec<Vec<f64>> = (-20..=20)
            .map(|r| (1..=6).map(|lead| lead as f64 * r as f64 / 20.0).collect())
            .collect();
        let calibration = Calibration::new(
            &residuals,
            &ConformalParams::default().buckets(1).min_per_bucket(40),
            1.0,
            &[],
        );
        assert_eq!(calibration.ends, vec![6]);
        let level = Level::try_from(0.95).unwrap();
        let (_, first) = calibration.offsets(0, level, Widening::NONE);
        let (_, last) = calibration.offsets(5, level, Widening::NONE);
        assert!((last / first - 6.0).abs() < 1e-9, "{first} vs {last}");
        assert!(first > 0.9 && first <= 1.0, "{first}");
    }

    #[test]
    fn a_bucket_with_a_heavier_tail_than_the_pool_keeps_its_own_quantile() {
        // Step 0: mostly small errors and a few large ones; steps 1-7: larger, uniform errors.
        // Scaled by their mean absolute value, step 0's tail reaches much further than the pool's.
        let residuals: Vec<Vec<f64>> = (0..40)
            .map(|fold| {
                let first = if fold % 10 == 0 { 10.0 } else { 0.1 };
                let sign = if fold % 2 == 0 { 1.0 } else { -1.0 };
                std::iter::once(first * sign)
                    .chain((1..8).map(|_| sign * (fold % 20) as f64 / 5.0))
                    .collect()
            })
            .collect();
        let calibration = Calibration::new(
            &residuals,
            &ConformalParams::default().buckets(4).min_per_bucket(40),
            1.0,
            &[],
        );
        assert_eq!(calibration.ends, vec![1, 2, 4, 8]);
        let level = Level::try_from(0.95).unwrap();
        // The pooled quantile times step 0's scale would stop short of its large errors.
        let (_, upper) = calibration.offsets(0, level, Widening::NONE);
        assert!(upper >= 10.0 - 1e-9, "{upper}");
        let (pooled_lower, pooled_upper) =
            conformal_offsets(&calibration.pooled, &calibration.pooled_weights, level);
        let scale = calibration.step_scales[0];
        assert!(
            pooled_upper * scale < 10.0,
            "{pooled_lower} {pooled_upper} {scale}"
        );
    }

    #[test]
    fn the_lower_bound_reaches_at_least_as_far_as_the_upper_one() {
        // Errors skewed upwards (spikes above the forecast, small dips below it): the lower bound
        // mirrors the upper one. Skewed downwards, the lower bound keeps its own tail and the
        // upper one is not widened to match it.
        let skewed = |sign: f64| -> Vec<Vec<f64>> {
            (0..40)
                .map(|fold| {
                    let spike = if fold % 8 == 0 { 3.0 } else { 0.0 };
                    let dip = -0.1 * f64::from(fold % 4);
                    vec![sign * (spike + 0.2 * f64::from(fold % 5)), sign * dip]
                })
                .collect()
        };
        let level = Level::try_from(0.95).unwrap();
        let params = ConformalParams::default().buckets(1).min_per_bucket(10);
        let up = Calibration::new(&skewed(1.0), &params, 1.0, &[]);
        let (lower, upper) = up.offsets(0, level, Widening::NONE);
        assert!(upper > 1.0, "{upper}");
        assert_eq!(lower, -upper);
        // Without the mirror the lower quantile would stop short of it.
        let (pooled_lower, pooled_upper) = conformal_offsets(&up.pooled, &up.pooled_weights, level);
        assert!(
            pooled_lower > -pooled_upper,
            "{pooled_lower} {pooled_upper}"
        );

        let down = Calibration::new(&skewed(-1.0), &params, 1.0, &[]);
        let (lower, upper) = down.offsets(0, level, Widening::NONE);
        assert!(lower < -1.0 && upper < -lower / 2.0, "{lower} {upper}");
    }

    #[test]
    fn equal_weights_give_the_rank_rule_and_recent_folds_weigh_more() {
        let sorted: Vec<f64> = (1..=19).map(f64::from).collect();
        for percent in [50_usize, 80, 90, 95] {
            let level = Level::try_from(percent as f64 / 100.0).unwrap();
            // The ceil((n + 1)(1 - tail))-th smallest above and the floor((n + 1) tail)-th below
            // (1-based), in integers: tail = (100 - percent) / 200.
            let scaled = (sorted.len() + 1) * (100 - percent);
            let lower_rank = (scaled / 200).max(1);
            let upper_rank = ((sorted.len() + 1) * 200 - scaled)
                .div_ceil(200)
                .min(sorted.len());
            let expected = (sorted[lower_rank - 1], sorted[upper_rank - 1]);
            assert_eq!(
                conformal_offsets(&sorted, &[], level),
                expected,
                "{percent}"
            );
            assert_eq!(
                conformal_offsets(&sorted, &vec![1.0; sorted.len()], level),
                expected
            );
        }
        // The newest five folds erred by at most 1, the five before by up to 5: weighted towards
        // the recent ones the band is narrower.
        let residuals: Vec<Vec<f64>> = (0..10)
            .map(|fold| {
                let size = if fold < 5 { 1.0 } else { 5.0 };
                (0..8)
                    .map(|step| size * (f64::from(step) / 3.5 - 1.0))
                    .collect()
            })
            .collect();
        let params = ConformalParams::default().buckets(1);
        let level = Level::try_from(0.8).unwrap();
        let equal = Calibration::new(&residuals, &params, 1.0, &[]);
        let recent = Calibration::new(&residuals, &params, 0.5, &[]);
        let (equal_lower, equal_upper) = equal.offsets(0, level, Widening::NONE);
        let (recent_lower, recent_upper) = recent.offsets(0, level, Widening::NONE);
        assert!(recent_upper < equal_upper, "{recent_upper} {equal_upper}");
        assert!(recent_lower > equal_lower, "{recent_lower} {equal_lower}");
        assert!(
            crate::forecast::ModelParams::ensemble()
                .recency_decay(0.0)
                .check()
                .is_err()
        );
    }
}
