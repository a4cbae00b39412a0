//! Cross-validated widening of the calibrated bounds: each fold held out in turn, the bounds
//! calibrated on the others grow until the held-out residuals they miss are within their tail
//! (see `docs/decisions.md`, "Per-bound widening").

use crate::domain::Level;

use super::Calibration;
use super::quantiles::{conformal_offsets, fold_weight, sorted_weighted};

/// Widening factors tried by [`Calibration::inflations`], from none up to [`MAX_INFLATION`].
const INFLATION_STEPS: usize = 40;

/// Largest widening: beyond this a fold is a regime change (a level shift inside the backtest),
/// and bands wide enough to cover it would be useless for every other day. On a log scale a
/// factor of 2 already squares the multiplicative width.
const MAX_INFLATION: f64 = 2.0;

impl Calibration {
    /// Factors (at least 1) by which the lower and the upper offsets at `level` must grow for
    /// each bound, calibrated on the other folds only, to miss no more than its tail
    /// (`(1 - level) / 2`) of the held-out folds' residuals.
    ///
    /// Split-conformal coverage assumes exchangeable residuals; backtest folds of a drifting
    /// series are not, and a fold calibrated on its neighbours then under-covers. This
    /// cross-validated check (in the spirit of CV+, Barber et al., "Predictive inference with the
    /// jackknife+", Annals of Statistics 49(1), 2021) widens the band just enough to cover. Each
    /// bound is a quantile of its own and is checked on its own tail: a series whose surprises
    /// are drops (an outage, a holiday) widens its lower bound, not the upper one a capacity
    /// plan is built on, and the two-sided coverage still reaches `level`.
    ///
    /// One widening per level of `levels`. The held-out folds' calibration sets do not depend on
    /// the level, so they are sorted once for all of them.
    pub(crate) fn inflations(&self, levels: &[Level]) -> Vec<Widening> {
        if self.by_fold.len() < 2 {
            return vec![Widening::NONE; levels.len()];
        }
        // (scores of the held-out fold, the other folds' scores sorted, their weights) per fold.
        let mut held_out: Vec<(&[f64], Vec<f64>, Vec<f64>)> = Vec::new();
        for (fold, scores) in self.by_fold.iter().enumerate() {
            if scores.is_empty() {
                continue;
            }
            let (others, weights) = sorted_weighted(
                self.by_fold
                    .iter()
                    .enumerate()
                    .filter(|(other, _)| *other != fold)
                    .flat_map(|(other, r)| {
                        let weight = fold_weight(self.recency_decay, other);
                        r.iter().map(move |score| (*score, weight))
                    }),
            );
            if !others.is_empty() {
                held_out.push((scores, others, weights));
            }
        }
        let total: usize = held_out.iter().map(|(r, _, _)| r.len()).sum();
        if total == 0 {
            return vec![Widening::NONE; levels.len()];
        }
        levels
            .iter()
            .map(|level| {
                // (scores of the held-out fold, offsets calibrated without it) per fold.
                let offsets: Vec<(&[f64], (f64, f64))> = held_out
                    .iter()
                    .map(|(scores, others, weights)| {
                        (*scores, conformal_offsets(others, weights, *level))
                    })
                    .collect();
                widening(&offsets, total, *level)
            })
            .collect()
    }
}

/// The widening at `level` from each held-out fold's scores and the offsets calibrated without it
/// (`total` scores in all): for each bound, the smallest factor at which the held-out scores beyond
/// it are within its tail.
fn widening(held_out: &[(&[f64], (f64, f64))], total: usize, level: Level) -> Widening {
    let tail = (1.0 - level.fraction()) / 2.0;
    let factor_for = |beyond: &dyn Fn(f64, (f64, f64), f64) -> bool| -> f64 {
        for step in 0..=INFLATION_STEPS {
            let factor = 1.0 + (MAX_INFLATION - 1.0) * step as f64 / INFLATION_STEPS as f64;
            let missed: usize = held_out
                .iter()
                .map(|(scores, offsets)| {
                    scores
                        .iter()
                        .filter(|r| beyond(**r, *offsets, factor))
                        .count()
                })
                .sum();
            if missed as f64 / total as f64 <= tail {
                return factor;
            }
        }
        MAX_INFLATION
    };
    Widening {
        lower: factor_for(&|r, (lower, _), factor| r < widen_down(lower, factor)),
        upper: factor_for(&|r, (_, upper), factor| r > widen_up(upper, factor)),
    }
}

/// A lower offset moved down by `factor` times its size: `offset * factor` for the usual negative
/// offset, and still downwards for a positive one (a fold whose residuals were nearly all above the
/// forecast puts even the lower bound above it), where multiplying would move it up.
pub(super) fn widen_down(offset: f64, factor: f64) -> f64 {
    offset - (factor - 1.0) * offset.abs()
}

/// An upper offset moved up by `factor` times its size (see [`widen_down`]).
pub(super) fn widen_up(offset: f64, factor: f64) -> f64 {
    offset + (factor - 1.0) * offset.abs()
}

/// Factors by which the calibrated lower and upper offsets are widened (see
/// [`Calibration::inflations`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Widening {
    /// Factor of the lower offset.
    pub(crate) lower: f64,
    /// Factor of the upper offset.
    pub(crate) upper: f64,
}

impl Widening {
    /// No widening.
    pub(crate) const NONE: Self = Self {
        lower: 1.0,
        upper: 1.0,
    };
}

#[cfg(test)]
mod tests {
    use super::super::ConformalParams;
    use super::*;

    /// The ensemble's default recency decay.
    const DECAY: f64 = 0.9;

    #[test]
    fn a_fold_unlike_the_others_widens_the_bounds_it_crosses() {
        // Two calm folds and one whose drops (negative residuals) are `down` times larger and
        // whose rises are `up` times larger.
        let widening = |down: f64, up: f64| {
            let fold = |down: f64, up: f64| -> Vec<f64> {
                (-50..=50)
                    .map(|r| {
                        let unit = r as f64 / 50.0;
                        unit * if unit < 0.0 { down } else { up }
                    })
                    .collect()
            };
            let residuals = vec![fold(1.0, 1.0), fold(1.0, 1.0), fold(down, up)];
            Calibration::new(
                &residuals,
                &ConformalParams::default().buckets(1),
                DECAY,
                &[],
            )
            .inflations(&[Level::try_from(0.9).unwrap()])[0]
        };
        let both = widening(3.0, 3.0);
        assert!(both.lower > 1.2 && both.upper > 1.2, "{both:?}");
        // The upper bound, which the drops never cross, does not widen.
        let drops = widening(3.0, 1.0);
        assert!(drops.lower > 1.2, "{drops:?}");
        assert_eq!(drops.upper, 1.0, "{drops:?}");
    }

    #[test]
    fn widening_moves_a_bound_away_from_the_forecast_whatever_its_sign() {
        assert_eq!(widen_down(-2.0, 1.5), -3.0);
        assert_eq!(widen_up(2.0, 1.5), 3.0);
        // A lower offset above the forecast still moves down, an upper one below it still up.
        assert_eq!(widen_down(2.0, 1.5), 1.0);
        assert_eq!(widen_up(-2.0, 1.5), -1.0);
        // Forecasts that were always too low: every residual is positive, so even the lower
        // offset is. A newer fold that errs less falls below that bound, and widening it down
        // covers it.
        let fold = |from: f64| -> Vec<f64> { (0..=100).map(|r| from + r as f64 / 50.0).collect() };
        let residuals = vec![fold(0.5), fold(2.0), fold(2.0)];
        let calibration = Calibration::new(
            &residuals,
            &ConformalParams::default().buckets(1),
            DECAY,
            &[],
        );
        let level = Level::try_from(0.8).unwrap();
        let widening = calibration.inflations(&[level])[0];
        let (lower, _) = calibration.offsets(0, level, widening);
        let (unwidened, _) = calibration.offsets(0, level, Widening::NONE);
        assert!(unwidened > 0.0, "{unwidened}");
        assert!(
            widening.lower > 1.0 && lower < unwidened,
            "{widening:?} {lower}"
        );
    }
}
