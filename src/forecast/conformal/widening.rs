//! Cross-validated widening of the calibrated bounds: each fold held out in turn, the bounds
//! calibrated on the others grow until the held-out residuals they miss are within their tail
//! (see `docs/decisions.md`, "Per-bound widening"), and the lower bound at least mirrors the
//! upper one.

use crate::domain::Level;

use super::Calibration;
use super::quantiles::{conformal_offsets, fold_weight, sorted_weighted};

/// Widening factors tried by [`Calibration::inflations`] for the upper bound, from none up to
/// its cap: steps of 0.025.
const UPPER_INFLATION_STEPS: usize = 40;

/// Widening factors tried for the lower bound, from none up to its cap: steps of 0.05.
const LOWER_INFLATION_STEPS: usize = 100;

/// Largest widening of the upper bound, the one capacity plans are sized on: beyond this a fold
/// is a regime change (a level shift inside the backtest), and bands wide enough to cover it would
/// be useless for every other day. On a log scale a factor of 2 already squares the multiplicative
/// width.
const MAX_UPPER_INFLATION: f64 = 2.0;

/// Largest widening of the lower bound, which sizes no replica: drops (an outage, a holiday, a
/// misconfigured autoscaling group) are the surprises load series hold most often, and covering
/// them costs no replica-hours. The narrow bands (80%) need the larger factors to reach a drop the
/// forward check finds. See `docs/decisions.md`, "Per-bound widening".
const MAX_LOWER_INFLATION: f64 = 6.0;

/// Which folds calibrate a held-out fold in the widening check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    /// Every other fold, each weighted by its own recency (leave one fold out).
    OthersOut,
    /// Only the folds older than it, weighted by their age relative to it: each day judged the
    /// way the service will be, calibrated on what came before.
    Forward,
}

/// A held-out fold's scores, the scores of the folds that calibrate it (sorted) and their weights.
type HeldOut<'a> = (&'a [f64], Vec<f64>, Vec<f64>);

impl Calibration {
    /// Factors (at least 1) by which the lower and the upper offsets at `level` must grow for
    /// each bound, calibrated without the held-out fold, to miss no more than its tail
    /// (`(1 - level) / 2`) of the held-out folds' residuals.
    ///
    /// Split-conformal coverage assumes exchangeable residuals; backtest folds of a drifting
    /// series are not, and a fold calibrated on its neighbours then under-covers. This
    /// cross-validated check (in the spirit of CV+, Barber et al., "Predictive inference with the
    /// jackknife+", Annals of Statistics 49(1), 2021) widens the band just enough to cover. Each
    /// bound is a quantile of its own and is checked on its own tail: a series whose surprises
    /// are drops widens its lower bound, not the upper one a capacity plan is built on, and the
    /// two-sided coverage still reaches `level`.
    ///
    /// The upper bound is checked with every other fold out ([`Check::OthersOut`]) and widens up
    /// to [`MAX_UPPER_INFLATION`]; the lower bound, which costs no replica, is checked forward
    /// ([`Check::Forward`]: each fold calibrated on the older ones, so a first drop is judged
    /// against the calm days before it, not also against itself) up to [`MAX_LOWER_INFLATION`].
    ///
    /// One widening per level of `levels`. The held-out folds' calibration sets do not depend on
    /// the level, so they are sorted once for all of them.
    pub(crate) fn inflations(&self, levels: &[Level]) -> Vec<Widening> {
        if self.by_fold.len() < 2 {
            return vec![Widening::NONE; levels.len()];
        }
        let forward = self.held_out(Check::Forward);
        let others_out = self.held_out(Check::OthersOut);
        levels
            .iter()
            .map(|level| Widening {
                lower: factor(
                    &forward,
                    *level,
                    (MAX_LOWER_INFLATION, LOWER_INFLATION_STEPS),
                    &|r, (lower, _), f| r < widen_down(lower, f),
                ),
                upper: factor(
                    &others_out,
                    *level,
                    (MAX_UPPER_INFLATION, UPPER_INFLATION_STEPS),
                    &|r, (_, upper), f| r > widen_up(upper, f),
                ),
            })
            .collect()
    }

    /// Each fold with scores, held out against the folds `check` calibrates it on (folds with
    /// none to calibrate on are left out).
    fn held_out(&self, check: Check) -> Vec<HeldOut<'_>> {
        let mut held_out = Vec::new();
        for (fold, scores) in self.by_fold.iter().enumerate() {
            if scores.is_empty() {
                continue;
            }
            // Folds are newest first: the k-th newest has index k.
            let (others, weights) = sorted_weighted(
                self.by_fold
                    .iter()
                    .enumerate()
                    .filter_map(|(other, r)| match check {
                        Check::OthersOut => (other != fold).then_some((other, r)),
                        Check::Forward => (other > fold).then(|| (other - fold - 1, r)),
                    })
                    .flat_map(|(age, r)| {
                        let weight = fold_weight(self.recency_decay, age);
                        r.iter().map(move |score| (*score, weight))
                    }),
            );
            if !others.is_empty() {
                held_out.push((scores.as_slice(), others, weights));
            }
        }
        held_out
    }
}

/// The smallest factor, of `steps` even steps from 1 up to `cap`, at which the scores of the
/// held-out folds that `missed` a bound widened by it (given the offsets calibrated without the
/// fold) are within the bound's tail at `level`; `cap` when none is, 1 when there is nothing to
/// check.
fn factor(
    held_out: &[HeldOut<'_>],
    level: Level,
    (cap, steps): (f64, usize),
    missed: &dyn Fn(f64, (f64, f64), f64) -> bool,
) -> f64 {
    let total: usize = held_out.iter().map(|(scores, _, _)| scores.len()).sum();
    if total == 0 {
        return 1.0;
    }
    let tail = (1.0 - level.fraction()) / 2.0;
    let offsets: Vec<(&[f64], (f64, f64))> = held_out
        .iter()
        .map(|(scores, others, weights)| (*scores, conformal_offsets(others, weights, level)))
        .collect();
    for step in 0..=steps {
        let factor = 1.0 + (cap - 1.0) * step as f64 / steps as f64;
        let count: usize = offsets
            .iter()
            .map(|(scores, offsets)| {
                scores
                    .iter()
                    .filter(|r| missed(**r, *offsets, factor))
                    .count()
            })
            .sum();
        if count as f64 / total as f64 <= tail {
            return factor;
        }
    }
    cap
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

/// The widened lower offset, or the mirror of the widened `upper` one where that reaches further
/// below the forecast (on the model scale: a rise by a factor mirrors a fall by the same factor
/// on a log scale).
///
/// Backtest folds of calm days calibrate the lower tail on the small dips that ordinary days
/// hold, while the surprises load series meet most often are drops no earlier fold shows (an
/// outage, a holiday, an autoscaling group misconfigured). The lower bound sizes no replica, so
/// a band is never narrower below the forecast than above it: a drop is given at least the room
/// a rise is. See `docs/decisions.md`, "Lower bounds at least mirror the upper ones".
pub(super) fn mirrored_at_least(lower: f64, upper: f64) -> f64 {
    lower.min(-upper.abs())
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

    /// A fold of residuals spread evenly over [-down, up].
    fn fold(down: f64, up: f64) -> Vec<f64> {
        (-50..=50)
            .map(|r| {
                let unit = r as f64 / 50.0;
                unit * if unit < 0.0 { down } else { up }
            })
            .collect()
    }

    /// The widening at 90% of `folds` (newest first).
    fn widening_of(folds: Vec<Vec<f64>>) -> Widening {
        Calibration::new(&folds, &ConformalParams::default().buckets(1), DECAY, &[])
            .inflations(&[Level::try_from(0.9).unwrap()])[0]
    }

    #[test]
    fn a_fold_unlike_the_others_widens_the_bounds_it_crosses() {
        // The newest fold's drops (negative residuals) are `down` times larger than two calm
        // folds' and its rises `up` times larger.
        let widening =
            |down: f64, up: f64| widening_of(vec![fold(down, up), fold(1.0, 1.0), fold(1.0, 1.0)]);
        let both = widening(3.0, 3.0);
        assert!(both.lower > 1.2 && both.upper > 1.2, "{both:?}");
        // The upper bound, which the drops never cross, does not widen.
        let drops = widening(3.0, 1.0);
        assert!(drops.lower > 1.2, "{drops:?}");
        assert_eq!(drops.upper, 1.0, "{drops:?}");
    }

    #[test]
    fn the_lower_bound_is_checked_forward_and_may_widen_past_the_upper_cap() {
        let unlike = fold(3.0, 3.0);
        let calm = || fold(1.0, 1.0);
        let newest = widening_of(vec![unlike.clone(), calm(), calm()]);
        let oldest = widening_of(vec![calm(), calm(), unlike]);
        // Drops three times the calm days' need a factor of about 2.7: past the upper bound's
        // cap, within the lower one's. Rises as large stop at the upper cap.
        assert!(
            newest.lower > MAX_UPPER_INFLATION && newest.lower <= MAX_LOWER_INFLATION,
            "{newest:?}"
        );
        assert_eq!(newest.upper, MAX_UPPER_INFLATION, "{newest:?}");
        // Calm days after the drops are calibrated on them and miss nothing below, so the lower
        // bound does not widen; the upper bound, checked with every other fold out, widens
        // wherever the unlike fold sits.
        assert_eq!(oldest.lower, 1.0, "{oldest:?}");
        assert!(oldest.upper > 1.2, "{oldest:?}");
    }

    #[test]
    fn drops_several_times_the_calm_days_are_covered_past_the_upper_caps_reach() {
        // Drops five times the calm days' need a factor of about 4.5 at 90%: a lower bound
        // capped at 3 would stay short of the drops a third of the way.
        let newest = widening_of(vec![fold(5.0, 1.0), fold(1.0, 1.0), fold(1.0, 1.0)]);
        assert!(
            newest.lower > 4.0 && newest.lower < MAX_LOWER_INFLATION,
            "{newest:?}"
        );
        assert_eq!(newest.upper, 1.0, "{newest:?}");
    }

    #[test]
    fn widening_moves_a_bound_away_from_the_forecast_whatever_its_sign() {
        assert_eq!(widen_down(-2.0, 1.5), -3.0);
        assert_eq!(widen_up(2.0, 1.5), 3.0);
        // A lower offset above the forecast still moves down, an upper one below it still up.
        assert_eq!(widen_down(2.0, 1.5), 1.0);
        assert_eq!(widen_up(-2.0, 1.5), -1.0);
        // Forecasts that were always too low: every residual is positive, so even the lower
        // quantile is. A newer fold that errs less falls below that bound, and the check widens
        // it down to cover it.
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
        let (unwidened, _) =
            conformal_offsets(&calibration.pooled, &calibration.pooled_weights, level);
        assert!(unwidened > 0.0, "{unwidened}");
        assert!(widening.lower > 1.0, "{widening:?}");
        // Served, the lower bound lies below the forecast, at least as far as the upper one
        // lies above it.
        let (lower, upper) = calibration.offsets(0, level, widening);
        assert!(upper > 0.0 && lower <= -upper, "{lower} {upper}");
    }
}
