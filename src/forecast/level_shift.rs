//! Detection and removal of a recent level shift.
//!
//! A metric that jumps to a new level (a deploy doubles CPU, a customer moves traffic over) and
//! stays there leaves weeks of history at the old level and only hours at the new one. Seasonal and
//! regression members fitted on all of it forecast a blend of both levels; the backtest cannot
//! tell, because its folds start before the jump. The standard remedy is a level-shift regressor
//! (the `LS` outlier of Chen & Liu 1993, "Joint estimation of model parameters and outlier effects
//! in time series", JASA 88(421)): estimate the jump and move the history before it to the new
//! level, keeping its seasonal shape.
//!
//! The test works on seasonal differences `d[t] = x[t] - x[t - s]` of the last season, where a
//! shift at `c` leaves `d` near zero before `c` and near the jump from `c` to the end. Its noise is
//! the MAD of the seasonal differences of the season before, so a daily or weekly cycle is not a
//! shift. A shift is accepted only when it is still in force at the end of the series, is at least
//! `threshold` noise sigmas, holds for nine in ten of the points after it, has lasted `min_after`
//! points, and the season before was steady (nine in ten of its differences like those just before
//! the shift, which rules out the echo of an older jump one season on). A dip that ended before the
//! last point, such as a holiday or an outage, is left to the models and their intervals.
//! [`detect_recent`] repeats the test on the history up to earlier ends, so that a shift a few
//! days old, which the last season's differences no longer show, is found while it still holds.
//! See `docs/decisions.md`, "Level-shift detection" and "Level-shift adjustment and damping".

use std::time::Duration;

use crate::domain::{Step, Timestamp};

use super::seasonality::Seasonality;
use super::stats;

/// A jump to a new level found near the end of a series, in the caller's units.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LevelShift {
    /// Time of the first point at the new level.
    pub at: Timestamp,
    /// Median of the season before the shift.
    pub before: f64,
    /// Median from the shift to the end.
    pub after: f64,
    /// The older history was scaled by the ratio of the levels (else the difference was added).
    pub multiplicative: bool,
    /// The factor the older history's deviations from its level were shrunk by, when the series
    /// wiggles far less at the new level (see `level_shift::Adjustment::Damp`); models stored
    /// before it was introduced read `None`.
    #[serde(default)]
    pub damping: Option<f64>,
}

/// How far apart two detections of one level shift may place its start (see
/// [`LevelShift::same_as`]).
const SAME_SHIFT_WITHIN: Duration = Duration::from_secs(6 * 3600);

impl LevelShift {
    /// Whether `other` is this shift found again, from history with another end (on steps of
    /// `step`): the same direction, its first point at the new level within six hours (or a step)
    /// of this one's. Detections of one shift from different ends may place its start a few
    /// steps apart.
    pub fn same_as(&self, other: &LevelShift, step: Step) -> bool {
        let rises = |shift: &LevelShift| shift.after > shift.before;
        let within = i64::try_from(SAME_SHIFT_WITHIN.as_millis())
            .unwrap_or(i64::MAX)
            .max(step.as_millis());
        rises(self) == rises(other) && (self.at.as_millis() - other.at.as_millis()).abs() <= within
    }
}

/// A level shift found in the newest season of a series.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Detected {
    /// Index of the first point at the new level.
    pub(crate) index: usize,
    /// New level minus old level, on the scale of the values tested.
    pub(crate) shift: f64,
}

/// Smallest robust sigma used, as a share of the values' own robust spread, so a series that was
/// flat to the last digit does not make every wiggle a shift.
const MIN_SIGMA_SHARE: f64 = 1e-3;

/// Largest wiggle growth (new level's over the old one's) at which the older history is damped
/// rather than moved as it is: the wiggle must at least halve, so that the noise of a median over
/// a few hours of steps does not decide it.
const MAX_DAMPING_GROWTH: f64 = 0.5;

/// Share of the points after the shift that must lie beyond half the shift's size on its side.
const MIN_AGREEING: f64 = 0.9;

/// Looks for one level shift in the last `season` points of `values` (gap-free), tested against
/// the seasonal differences of the season before; `None` when there is none or too little
/// history (fewer than three seasons).
pub(crate) fn detect(
    values: &[f64],
    season: usize,
    min_after: usize,
    threshold: f64,
) -> Option<Detected> {
    let n = values.len();
    if !threshold.is_finite() || season < 2 || n < 3 * season || min_after >= season {
        return None;
    }
    let differences: Vec<f64> = (n - 2 * season..n)
        .map(|index| values[index] - values[index - season])
        .collect();
    // differences[i] belongs to values[n - 2 * season + i].
    let (reference, recent) = differences.split_at(season);
    let center = stats::median(reference)?;
    let spread = stats::mad_sigma(values, stats::median(values)?)?.max(f64::MIN_POSITIVE);
    let sigma = stats::mad_sigma(reference, center)?.max(MIN_SIGMA_SHARE * spread);

    // The single split of `recent` that best separates two means (a CUSUM-type statistic).
    let total: f64 = recent.iter().map(|d| d - center).sum();
    let mut before = 0.0;
    let mut best: Option<(usize, f64)> = None;
    for split in 1..=season - min_after {
        before += recent[split - 1] - center;
        let (left, right) = (split as f64, (season - split) as f64);
        let gap = (total - before) / right - before / left;
        let statistic = gap.abs() * (left * right / season as f64).sqrt();
        if best.is_none_or(|(_, best)| statistic > best) {
            best = Some((split, statistic));
        }
    }
    let (split, _) = best?;
    let after = &recent[split..];
    let prior = stats::median(&recent[..split])?;
    let shift = stats::median(after)? - prior;
    let agreeing = after
        .iter()
        .filter(|d| (*d - prior) * shift.signum() > shift.abs() / 2.0)
        .count();
    // The points before the split must look like the season before: otherwise that season held
    // the change and the split only sees its echo one season later (the differences fall back
    // when the new level is compared with itself).
    let steady = reference
        .iter()
        .filter(|d| (*d - prior).abs() <= shift.abs() / 2.0)
        .count();
    let accepted = shift.abs() >= threshold * sigma
        && (prior - center).abs() < shift.abs() / 4.0
        && agreeing as f64 >= MIN_AGREEING * after.len() as f64
        && steady as f64 >= MIN_AGREEING * season as f64;
    accepted.then_some(Detected {
        index: n - season + split,
        shift,
    })
}

/// The newest level shift of `values` still in force at the end, found by [`detect`] on the
/// history up to each of a series of ends: the last point, then every half season further back,
/// as long as the end leaves three seasons before it and lies at most `max_age` points before the
/// last one. [`detect`] alone sees only a shift in the last season: one older than that no longer
/// shows in the seasonal differences, which compare the new level with itself. Yet its older
/// history still teaches the models the old level, and the backtest folds that straddle it score
/// the jump instead of the models. A shift found before an earlier end counts only if the points
/// after that end still hold it: nine in ten of them differ from the same phase of the season
/// before the shift by more than half the shift, on its side. The first point at the new level
/// must also lie at least `min_after` points before the end.
pub(crate) fn detect_recent(
    values: &[f64],
    season: usize,
    min_after: usize,
    threshold: f64,
    max_age: usize,
) -> Option<Detected> {
    let n = values.len();
    let stride = (season / 2).max(1);
    let mut end = n;
    while end >= 3 * season && n - end <= max_age {
        if let Some(detected) = detect(&values[..end], season, min_after, threshold) {
            if end == n || holds(values, detected, season, end) {
                return Some(detected);
            }
            // The newest shift no longer holds: it is over, and any older one is superseded.
            return None;
        }
        end = end.checked_sub(stride)?;
    }
    None
}

/// Whether the points of `values` from `end` on still hold `detected`: nine in ten differ from
/// the same phase of the season before the shift by more than half the shift, on its side.
fn holds(values: &[f64], detected: Detected, season: usize, end: usize) -> bool {
    let Detected { index, shift } = detected;
    let Some(base) = index.checked_sub(season) else {
        return false;
    };
    let later = &values[end..];
    let agreeing = later
        .iter()
        .enumerate()
        .filter(|(offset, value)| {
            let phase = (end + offset - index) % season;
            (*value - values[base + phase]) * shift.signum() > shift.abs() / 2.0
        })
        .count();
    agreeing as f64 >= MIN_AGREEING * later.len() as f64
}

/// How the history before a shift is moved to the new level.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) enum Adjustment {
    /// Add the shift: the cycle keeps its amplitude.
    Add(f64),
    /// Multiply by the ratio of the levels: the cycle and the noise grow with the level.
    Scale(f64),
    /// Add the shift and shrink the deviations from the new level by `factor` (< 1): the series
    /// wiggles far less at the new level than at the old one, as a metric does once it saturates
    /// (CPU pinned near 100%, a rate limit reached). Adding alone would teach the models the old
    /// level's noise and cycle, which the new level does not have.
    Damp {
        /// The new level (median of the points from the shift on).
        level: f64,
        /// New level minus old level.
        shift: f64,
        /// Wiggle at the new level over the wiggle at the same phases a season earlier.
        factor: f64,
    },
}

impl Adjustment {
    /// `value` moved to the new level (NaN stays NaN).
    pub(crate) fn apply(self, value: f64) -> f64 {
        match self {
            Self::Add(shift) => value + shift,
            Self::Scale(ratio) => value * ratio,
            Self::Damp {
                level,
                shift,
                factor,
            } => level + (value + shift - level) * factor,
        }
    }
}

/// Whether the history of `values` (the caller's scale, gap-free) before `detected` is moved by
/// adding the shift or by scaling: scaling when the series is positive and the wiggle after the
/// shift (median absolute step-to-step change) grew with the level, i.e. its ratio to the wiggle
/// at the same phases a season earlier is nearer the level ratio than one; damping when that wiggle
/// at most halved (see [`Adjustment::Damp`]); adding otherwise, unless adding would take a positive
/// series to zero or below.
pub(crate) fn adjustment(values: &[f64], detected: Detected, season: usize) -> Adjustment {
    let index = detected.index;
    let add = Adjustment::Add(detected.shift);
    if index < season + 1 || values.iter().any(|value| *value <= 0.0) {
        return add;
    }
    let after = index..values.len();
    let ratios: Vec<f64> = after
        .clone()
        .map(|t| values[t] / values[t - season])
        .collect();
    let Some(ratio) = stats::median(&ratios).filter(|ratio| ratio.is_finite() && *ratio > 0.0)
    else {
        return add;
    };
    let wiggle = |offset: usize| {
        let steps: Vec<f64> = after
            .clone()
            .skip(1)
            .map(|t| (values[t - offset] - values[t - offset - 1]).abs())
            .collect();
        stats::median(&steps)
    };
    let growth = match (wiggle(0), wiggle(season)) {
        (Some(now), Some(then)) if now > 0.0 && then > 0.0 => now / then,
        _ => 1.0,
    };
    if growth < MAX_DAMPING_GROWTH {
        let level = stats::median(&values[index..]);
        if let Some(level) = level.filter(|level| level.is_finite()) {
            return Adjustment::Damp {
                level,
                shift: detected.shift,
                factor: growth,
            };
        }
    }
    let scales = (growth.ln() - ratio.ln()).abs() < growth.ln().abs();
    let oldest_low = values[..index]
        .iter()
        .copied()
        .fold(f64::INFINITY, f64::min);
    if scales || oldest_low + detected.shift <= 0.0 {
        Adjustment::Scale(ratio)
    } else {
        add
    }
}

/// Moves every value before `index` to the new level.
pub(crate) fn adjust(values: &mut [f64], index: usize, adjustment: Adjustment) {
    for value in &mut values[..index] {
        *value = adjustment.apply(*value);
    }
}

/// Finds the newest level shift of `clean` still in force (see [`find_level_shift`]) and moves
/// the history before it to the new level, in `clean` and in `raw` alike, so that models fit, and
/// backtests score, the history at the new level. `time_at(index)` is the time of `clean[index]`.
/// Returns the shift in the series' units for the preprocessing summary, and the adjustment made
/// (which a re-anchored model applies to the newer data's points before the shift).
pub(crate) fn remove_recent(
    clean: &mut [f64],
    raw: &mut [f64],
    step: Step,
    seasonality: &Seasonality,
    threshold: f64,
    time_at: impl Fn(usize) -> Timestamp,
) -> Option<(LevelShift, Adjustment)> {
    let (detected, season) = find_level_shift(clean, raw, step, seasonality, threshold)?;
    let adjustment = adjustment(clean, detected, season);
    let season_before = detected.index.saturating_sub(season);
    let summary = LevelShift {
        at: time_at(detected.index),
        before: stats::median(&clean[season_before..detected.index]).unwrap_or(f64::NAN),
        after: stats::median(&clean[detected.index..]).unwrap_or(f64::NAN),
        multiplicative: matches!(adjustment, Adjustment::Scale(_)),
        damping: match adjustment {
            Adjustment::Damp { factor, .. } => Some(factor),
            _ => None,
        },
    };
    adjust(clean, detected.index, adjustment);
    adjust(raw, detected.index, adjustment);
    Some((summary, adjustment))
}

/// Steps in a day (at least 1).
fn values_per_day(step: Step) -> usize {
    usize::try_from(86_400_000 / step.as_millis().max(1))
        .unwrap_or(1)
        .max(1)
}

/// The newest level shift of `values` (gap-free; `raw` the same points with `NaN` where none was
/// observed) still in force, at most a week (or a season, if longer) old, and the season it was
/// tested on: the longest detected period with three cycles in the history, repeated to span at
/// least a day when three such spans fit, else one day. A rise must have lasted a sixteenth of the
/// season (at least 6 steps), a drop more than a day, and as many points at the new level must
/// have been observed: a series that stops reporting has its last value held over the gap, which
/// is no evidence that it stayed there.
fn find_level_shift(
    values: &[f64],
    raw: &[f64],
    step: Step,
    seasonality: &Seasonality,
    threshold: f64,
) -> Option<(Detected, usize)> {
    let day = values_per_day(step);
    let fits = |season: &usize| 3 * season <= values.len();
    let season = match seasonality
        .steps_fitting(values.len(), 3.0)
        .into_iter()
        .max()
    {
        // Whole cycles spanning at least a day: a cycle of an hour is too short a reference to
        // tell a shift from a burst, and its multiple still cancels the cycle.
        Some(period) => Some(period * day.div_ceil(period))
            .filter(fits)
            .unwrap_or(period),
        None => Some(day).filter(fits)?,
    };
    let max_age = (7 * day).max(season);
    let min_after = (season / 16).max(6);
    let observed_after = |index: usize| raw[index..].iter().filter(|v| v.is_finite()).count();
    detect_recent(values, season, min_after, threshold, max_age)
        // A drop moves the history down, so forecasts and plans with it: it must outlast a day
        // (a holiday, an outage) first. A rise is taken as soon as it has lasted.
        .filter(|detected| detected.shift > 0.0 || values.len() - detected.index > day)
        .filter(|detected| observed_after(detected.index) >= min_after)
        .map(|detected| (detected, season))
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;
    use crate::forecast::seasonality::SeasonalPeriod;

    /// A daily cycle of `season` points with deterministic noise, `days` long.
    fn cycle(season: usize, days: usize) -> Vec<f64> {
        (0..season * days)
            .map(|index| {
                let phase = (index % season) as f64 / season as f64 * std::f64::consts::TAU;
                10.0 + 3.0 * phase.sin() + ((index * 7919) % 13) as f64 / 26.0
            })
            .collect()
    }

    /// [`cycle`] raised by 6 from `ago` points before its end on, and where the jump is.
    fn jumped(season: usize, days: usize, ago: usize) -> (Vec<f64>, usize) {
        let mut values = cycle(season, days);
        let at = values.len() - ago;
        for value in &mut values[at..] {
            *value += 6.0;
        }
        (values, at)
    }

    /// Asserts that `detected` is the jump of [`jumped`] at `at`.
    fn assert_is_the_jump(detected: Detected, at: usize) {
        assert!(
            detected.index.abs_diff(at) <= 1,
            "found at {}",
            detected.index
        );
        assert!(
            (detected.shift - 6.0).abs() < 0.3,
            "shift {}",
            detected.shift
        );
    }

    #[test]
    fn a_jump_that_lasts_is_found_where_it_happened_and_removed() {
        let (mut values, at) = jumped(96, 10, 30);
        let detected = detect(&values, 96, 8, 8.0).expect("a shift of many sigmas");
        assert_is_the_jump(detected, at);
        adjust(&mut values, detected.index, Adjustment::Add(detected.shift));
        let clean = cycle(96, 10);
        // The adjusted history is the clean cycle moved to the new level.
        for index in 0..at - 1 {
            assert!((values[index] - clean[index] - 6.0).abs() < 0.3);
        }
    }

    #[test]
    fn a_last_value_held_over_a_gap_is_not_a_shift() {
        // 5-minute points with a daily cycle; the series jumps 40 points before the end. When it
        // was observed there, the jump is a shift; when the last 37 points are a gap, filled by
        // holding the value observed at the jump, it is not.
        let season = 288;
        let (values, at) = jumped(season, 10, 40);
        let daily = Seasonality::from_periods(vec![SeasonalPeriod {
            steps: season,
            strength: 0.5,
            calendar: None,
        }]);
        let (detected, _) = find_level_shift(&values, &values, Step::FIVE_MINUTES, &daily, 8.0)
            .expect("an observed jump is a shift");
        assert_is_the_jump(detected, at);
        let mut raw = values.clone();
        raw[at + 3..].fill(f64::NAN);
        let mut held = values;
        let last_seen = held[at + 2];
        held[at + 3..].fill(last_seen);
        assert_eq!(
            find_level_shift(&held, &raw, Step::FIVE_MINUTES, &daily, 8.0),
            None
        );
    }

    #[test]
    fn cycles_noise_and_a_dip_that_ended_are_not_shifts() {
        let values = cycle(96, 10);
        assert_eq!(detect(&values, 96, 8, 8.0), None);
        let mut dipped = values.clone();
        let end = dipped.len() - 10;
        for value in &mut dipped[end - 40..end] {
            *value -= 6.0;
        }
        assert_eq!(detect(&dipped, 96, 8, 8.0), None, "the dip is over");
        let mut fresh = values;
        let len = fresh.len();
        for value in &mut fresh[len - 5..] {
            *value += 6.0;
        }
        assert_eq!(detect(&fresh, 96, 8, 8.0), None, "five points are too few");
    }

    #[test]
    fn an_older_jump_is_not_found_again_a_season_later() {
        let (values, _) = jumped(96, 10, 96 + 30);
        assert_eq!(detect(&values, 96, 8, 8.0), None);
    }

    #[test]
    fn a_jump_days_old_is_found_while_it_holds() {
        let season = 96;
        let (values, at) = jumped(season, 12, 3 * season + 30);
        // The last season's differences compare the new level with itself.
        assert_eq!(detect(&values, season, 8, 8.0), None);
        let detected = detect_recent(&values, season, 8, 8.0, 7 * season).expect("an older jump");
        assert_is_the_jump(detected, at);
        // Too old for the look-back.
        assert_eq!(detect_recent(&values, season, 8, 8.0, 2 * season), None);
        // Over before the end: the level came back down a day ago.
        let mut ended = values.clone();
        let len = ended.len();
        for value in &mut ended[len - season..] {
            *value -= 6.0;
        }
        assert_eq!(detect_recent(&ended, season, 8, 8.0, 7 * season), None);
        // No jump at all.
        assert_eq!(
            detect_recent(&cycle(season, 12), season, 8, 8.0, 7 * season),
            None
        );
    }

    #[test]
    fn too_short_or_disabled_finds_nothing() {
        let mut values = cycle(96, 2);
        let len = values.len();
        for value in &mut values[len - 30..] {
            *value += 6.0;
        }
        assert_eq!(detect(&values, 96, 8, 8.0), None);
        assert_eq!(detect(&values, 48, 8, f64::INFINITY), None);
        assert_eq!(detect(&[5.0; 400], 96, 8, 8.0), None, "constant");
    }

    #[test]
    fn a_jump_to_a_pinned_level_damps_the_old_wiggle() {
        // A noisy cycle around 34 that jumps to 99 and stays there with a tenth of the wiggle,
        // as a CPU does once it saturates.
        let season = 96;
        let mut values: Vec<f64> = cycle(season, 10).iter().map(|v| v * 3.0 + 4.0).collect();
        let at = values.len() - 40;
        for (offset, value) in values[at..].iter_mut().enumerate() {
            *value = 99.0 + 0.1 * (((offset * 7919) % 13) as f64 / 13.0 - 0.5);
        }
        let detected = detect(&values, season, 8, 8.0).expect("a jump of many sigmas");
        let adjustment = adjustment(&values, detected, season);
        let Adjustment::Damp { factor, .. } = adjustment else {
            panic!("expected damping, got {adjustment:?}");
        };
        assert!(factor < 0.2, "factor {factor}");
        adjust(&mut values, detected.index, adjustment);
        let before = &values[..detected.index];
        let spread = before.iter().copied().fold(f64::NEG_INFINITY, f64::max)
            - before.iter().copied().fold(f64::INFINITY, f64::min);
        let level = stats::median(before).expect("values");
        assert!((level - 99.0).abs() < 1.0, "level {level}");
        // The undamped history spans about 3 * (6 + 0.5) = 19.5 units.
        assert!(spread < 4.0, "spread {spread}");
    }

    #[test]
    fn a_shift_under_an_hourly_cycle_is_tested_on_whole_days() {
        // Ten days of 5-minute CPU with an hourly job, stepping up 17 hours before the end; the
        // step starts with an hour-long burst, as a deploy's warm-up does.
        let mut rng = ChaCha8Rng::seed_from_u64(17);
        let len = 288 * 10;
        let at = len - 204;
        let values: Vec<f64> = (0..len)
            .map(|t| {
                let level = match t {
                    t if t < at => 6.0,
                    t if t < at + 12 => 25.0,
                    _ => 14.5,
                };
                level + if t % 12 < 2 { 1.0 } else { 0.0 } + rng.random_range(-0.2..0.2)
            })
            .collect();
        let hourly = Seasonality::from_periods(vec![SeasonalPeriod {
            steps: 12,
            strength: 0.5,
            calendar: None,
        }]);
        let (detected, season) =
            find_level_shift(&values, &values, Step::FIVE_MINUTES, &hourly, 8.0).expect("a shift");
        assert_eq!(season, 288, "whole hours spanning a day");
        assert!(detected.index.abs_diff(at) <= 12, "at {}", detected.index);
        assert!(
            (detected.shift - 8.5).abs() < 1.0,
            "shift {}",
            detected.shift
        );
    }
}
