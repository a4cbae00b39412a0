//! Seasonality detection: which periods (in steps) a series repeats with.
//!
//! Follows AUTOPERIOD (Vlachos, Yu & Castelli, "On Periodicity Detection and Structural Periodic
//! Similarity", SDM 2005): periodogram peaks propose candidate periods, and the autocorrelation
//! function validates each one (it must sit on a hill of the ACF) and refines it to an exact lag,
//! because periodogram bins are too coarse at long periods. Calendar periods (one day, one week,
//! one year) are always proposed as candidates too, since load follows the clock and the
//! calendar.
//!
//! augurs' Welch periodogram detector was considered and not used: its segments are at most 1024
//! points, so on 5-minute data a 288-step day falls between bins and a 2016-step week is out of reach.
//!
//! The periodogram and autocorrelation are computed in `spectrum`; the candidates, the stability
//! test and the choice of periods are here. See `docs/decisions.md`, "Seasonality detection:
//! periodogram candidates, ACF and the stable-seasonality test".

mod spectrum;

use crate::domain::Step;

use super::ForecastError;
use super::stats;

use spectrum::Spectrum;

/// Parameters of [`detect`].
///
/// | Name | Default | Purpose | Range |
/// |---|---|---|---|
/// | `min_period` | 4 | shortest period considered, in steps | `>= 2` |
/// | `max_periods` | 3 | most periods reported (strongest first) | `>= 1` |
/// | `min_strength` | 0.25 | least autocorrelation at the period's lag for it to count | `(0, 1)` |
/// | `spectral_candidates` | 6 | periodogram peaks tried besides the calendar periods | `>= 0` |
/// | `min_cycles` | 2.0 | least number of whole cycles of data a period needs | `>= 2` |
#[derive(Debug, Clone, PartialEq)]
pub struct SeasonalityParams {
    min_period: usize,
    max_periods: usize,
    min_strength: f64,
    spectral_candidates: usize,
    min_cycles: f64,
}

impl Default for SeasonalityParams {
    fn default() -> Self {
        Self {
            min_period: 4,
            max_periods: 3,
            min_strength: 0.25,
            spectral_candidates: 6,
            min_cycles: 2.0,
        }
    }
}

impl SeasonalityParams {
    /// Shortest period considered, in steps.
    #[must_use]
    pub fn min_period(mut self, steps: usize) -> Self {
        self.min_period = steps;
        self
    }

    /// Most periods reported.
    #[must_use]
    pub fn max_periods(mut self, count: usize) -> Self {
        self.max_periods = count;
        self
    }

    /// Least autocorrelation at a period's lag for it to count as seasonal.
    #[must_use]
    pub fn min_strength(mut self, correlation: f64) -> Self {
        self.min_strength = correlation;
        self
    }

    /// Number of periodogram peaks tried as candidates.
    #[must_use]
    pub fn spectral_candidates(mut self, count: usize) -> Self {
        self.spectral_candidates = count;
        self
    }

    /// Least number of whole cycles in the data for a period to be reported.
    #[must_use]
    pub fn min_cycles(mut self, cycles: f64) -> Self {
        self.min_cycles = cycles;
        self
    }

    /// Validates the parameters.
    pub fn check(self) -> Result<Self, ForecastError> {
        if self.min_period < 2 {
            return Err(ForecastError::invalid("min_period", "must be at least 2"));
        }
        if self.max_periods == 0 {
            return Err(ForecastError::invalid("max_periods", "must be at least 1"));
        }
        if !(self.min_strength > 0.0 && self.min_strength < 1.0) {
            return Err(ForecastError::invalid(
                "min_strength",
                "must lie strictly between 0 and 1",
            ));
        }
        if !(self.min_cycles >= 2.0 && self.min_cycles.is_finite()) {
            return Err(ForecastError::invalid("min_cycles", "must be at least 2"));
        }
        Ok(self)
    }
}

/// A calendar length a detected period matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum CalendarPeriod {
    /// 24 hours.
    Day,
    /// 7 days.
    Week,
    /// A mean Gregorian year, 365.2425 days: on daily data the nearest whole number of steps,
    /// 365, drifts by a day in four years, well within a yearly shape's smoothness.
    Year,
}

impl CalendarPeriod {
    const ALL: [CalendarPeriod; 3] = [
        CalendarPeriod::Day,
        CalendarPeriod::Week,
        CalendarPeriod::Year,
    ];

    /// Length in milliseconds (the year's rounded to the millisecond).
    pub const fn millis(self) -> i64 {
        match self {
            Self::Day => 86_400_000,
            Self::Week => 7 * 86_400_000,
            Self::Year => 31_556_952_000,
        }
    }

    /// Length in steps of `step`: when it is a whole number of them for the day and the week;
    /// for the year, the nearest whole number when a year holds at least 52 steps.
    pub fn steps(self, step: Step) -> Option<usize> {
        let millis = self.millis();
        let step_millis = step.as_millis();
        match self {
            Self::Day | Self::Week => {
                (millis % step_millis == 0).then(|| (millis / step_millis) as usize)
            }
            Self::Year => {
                let steps = (millis as f64 / step_millis as f64).round();
                (steps >= 52.0).then_some(steps as usize)
            }
        }
    }
}

/// One detected period.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SeasonalPeriod {
    /// Length of the period in steps.
    pub steps: usize,
    /// Autocorrelation of the (detrended) series at this lag, in `(0, 1]`.
    pub strength: f64,
    /// The calendar length it matches, if any.
    pub calendar: Option<CalendarPeriod>,
}

/// The periods found in a series, strongest first.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct Seasonality {
    periods: Vec<SeasonalPeriod>,
}

impl Seasonality {
    /// A seasonality with exactly the given periods (for callers who know them), strongest first.
    pub fn from_periods(periods: Vec<SeasonalPeriod>) -> Self {
        Self { periods }
    }

    /// The detected periods, strongest first.
    pub fn periods(&self) -> &[SeasonalPeriod] {
        &self.periods
    }

    /// The strongest period, in steps.
    pub fn primary(&self) -> Option<usize> {
        self.periods.first().map(|period| period.steps)
    }

    /// Period lengths in steps, strongest first.
    pub fn steps(&self) -> Vec<usize> {
        self.periods.iter().map(|period| period.steps).collect()
    }

    /// Period lengths with at least `min_cycles` whole cycles in `len` points, strongest first.
    pub(crate) fn steps_fitting(&self, len: usize, min_cycles: f64) -> Vec<usize> {
        self.periods
            .iter()
            .map(|period| period.steps)
            .filter(|steps| (len as f64) >= min_cycles * *steps as f64)
            .collect()
    }
}

/// Detects the periods of a series sampled every `step`; NaN marks points to ignore (gaps,
/// outliers).
///
/// Returns an empty seasonality for series that are too short, constant or not periodic.
pub fn detect(values: &[f64], step: Step, params: &SeasonalityParams) -> Seasonality {
    let len = values.len();
    let max_lag = (len as f64 / params.min_cycles).floor() as usize;
    if len < 2 * params.min_period || max_lag < params.min_period {
        return Seasonality::default();
    }
    let ranks = detrended_ranks(values);
    let Some(spectrum) = Spectrum::new(&ranks) else {
        return Seasonality::default();
    };
    let mut found: Vec<SeasonalPeriod> = Vec::new();
    let mut consider = |lag: usize, calendar: Option<CalendarPeriod>| {
        if lag < params.min_period || lag > max_lag {
            return;
        }
        let Some(strength) = spectrum.hill_top(lag) else {
            return;
        };
        // Three standard errors of a white-noise autocorrelation over the overlapping pairs,
        // so short series do not report chance correlations.
        let noise_level = 3.0 / ((len - lag) as f64).sqrt();
        if strength < params.min_strength.max(noise_level) {
            return;
        }
        // The ACF also peaks where the series merely persists or wiggles quasi-periodically;
        // a cycle worth forecasting has a stable shape: its phases differ in mean.
        // Fewer than three cycles are too few to test: a calendar period (a day, a week, a
        // year) is then kept on its ACF alone, a period found only in the spectrum is not.
        match stable_seasonality(&ranks, lag) {
            Some(z) if z < STABLE_Z => return,
            None if calendar.is_none() => return,
            _ => {}
        }
        let duplicate = found
            .iter_mut()
            .find(|existing| existing.steps.abs_diff(lag) * 50 <= lag);
        match duplicate {
            // A calendar match wins over a spectral estimate of the same period.
            Some(existing) if calendar.is_some() && existing.calendar.is_none() => {
                *existing = SeasonalPeriod {
                    steps: lag,
                    strength,
                    calendar,
                };
            }
            Some(_) => {}
            None => found.push(SeasonalPeriod {
                steps: lag,
                strength,
                calendar,
            }),
        }
    };
    for calendar in CalendarPeriod::ALL {
        if let Some(lag) = calendar.steps(step) {
            consider(lag, Some(calendar));
        }
    }
    for (low, high) in spectrum.peak_ranges(params.spectral_candidates, params.min_period, max_lag)
    {
        let refined =
            (low..=high).max_by(|left, right| spectrum.acf[*left].total_cmp(&spectrum.acf[*right]));
        if let Some(lag) = refined {
            let calendar = CalendarPeriod::ALL.into_iter().find(|calendar| {
                calendar
                    .steps(step)
                    .is_some_and(|steps| steps.abs_diff(lag) * 50 <= steps)
            });
            let snapped = calendar.and_then(|c| c.steps(step)).unwrap_or(lag);
            consider(snapped, calendar);
        }
    }
    // A multiple of a shorter period repeats it trivially; keep it only when it is clearly
    // stronger (a weekly pattern on top of a daily one), not when it merely echoes it. A year
    // is no echo of the week although 52 weeks come within a day of it: its lag is not a whole
    // number of weeks, so a weekly cycle alone fails its stability test (each phase of the
    // year meets every weekday in turn), and its ACF takes the week's peak at 364 days.
    let echoes: Vec<usize> = found
        .iter()
        .filter(|long| long.calendar != Some(CalendarPeriod::Year))
        .filter(|long| {
            found.iter().any(|short| {
                short.steps < long.steps
                    && is_near_multiple(long.steps, short.steps)
                    && long.strength < short.strength + MIN_MULTIPLE_GAIN
            })
        })
        .map(|period| period.steps)
        .collect();
    found.retain(|period| !echoes.contains(&period.steps));
    found.sort_by(|left, right| right.strength.total_cmp(&left.strength));
    found.truncate(params.max_periods);
    Seasonality { periods: found }
}

/// Least standard normal deviate of a candidate period's phase-mean F statistic for its cycle to
/// count as stable: a one-sided 0.1% test.
const STABLE_Z: f64 = 3.09;

/// The test for stable seasonality (the F test of X-11's table D8; Lothian & Morry, "A test for
/// the presence of identifiable seasonality when using the X-11 program", Statistics Canada,
/// 1978): a one-way analysis of variance of `values` (NaN skipped) grouped by phase
/// `index % lag`. Returns the F statistic of the phase means as a standard normal deviate by
/// Paulson's approximation (Johnson, Kotz & Balakrishnan, "Continuous Univariate
/// Distributions", vol. 2, section 27.5), so that tests with different degrees of freedom compare;
/// `None` when there are too few observations for the test.
fn stable_seasonality(values: &[f64], lag: usize) -> Option<f64> {
    if lag < 2 {
        return None;
    }
    let mut sums = vec![0.0; lag];
    let mut counts = vec![0_usize; lag];
    let (mut total, mut squares, mut observed) = (0.0, 0.0, 0_usize);
    for (index, value) in values.iter().enumerate() {
        if value.is_finite() {
            let phase = index % lag;
            sums[phase] += value;
            counts[phase] += 1;
            total += value;
            squares += value * value;
            observed += 1;
        }
    }
    let groups = counts.iter().filter(|count| **count > 0).count();
    if groups < 2 || observed < groups + 2 * lag {
        return None;
    }
    let correction = total * total / observed as f64;
    let between: f64 = sums
        .iter()
        .zip(&counts)
        .filter(|(_, count)| **count > 0)
        .map(|(sum, count)| sum * sum / *count as f64)
        .sum::<f64>()
        - correction;
    let within = squares - correction - between;
    let (d1, d2) = ((groups - 1) as f64, (observed - groups) as f64);
    if within <= 0.0 {
        return (between > 0.0).then_some(f64::INFINITY);
    }
    let f = (between.max(0.0) / d1) / (within / d2);
    let (a, b) = (2.0 / (9.0 * d1), 2.0 / (9.0 * d2));
    let cube_root = f.cbrt();
    Some(((1.0 - b) * cube_root - (1.0 - a)) / (b * cube_root * cube_root + a).sqrt())
}

/// Least extra autocorrelation a multiple of a detected period needs to be reported as well.
const MIN_MULTIPLE_GAIN: f64 = 0.03;

/// True when `long` is within 2% of a whole multiple of `short`.
fn is_near_multiple(long: usize, short: usize) -> bool {
    let multiple = (long as f64 / short as f64).round();
    multiple >= 2.0 && (long as f64 - multiple * short as f64).abs() * 50.0 <= long as f64
}

/// Ranks (scaled to `[0, 1]`) of the series after removing its least-squares line; NaN stays NaN.
///
/// Ranks make the autocorrelation robust to the magnitude of outliers: an outage at zero or a
/// spike becomes an extreme rank, not a value that dominates the variance. Returns an empty
/// vector when the line explains the series exactly (no variation left to be seasonal).
fn detrended_ranks(values: &[f64]) -> Vec<f64> {
    let residuals = stats::detrend(values);
    let spread = stats::std_dev(&residuals);
    let magnitude = stats::std_dev(values) + stats::mean(values).abs();
    if spread.is_nan() || spread <= 1e-9 * magnitude {
        return Vec::new();
    }
    let mut order: Vec<usize> = (0..values.len())
        .filter(|index| residuals[*index].is_finite())
        .collect();
    order.sort_by(|a, b| residuals[*a].total_cmp(&residuals[*b]));
    let mut ranks = vec![f64::NAN; values.len()];
    let last = order.len().saturating_sub(1).max(1) as f64;
    let mut position = 0;
    while position < order.len() {
        // Ties share their average rank.
        let mut end = position;
        while end + 1 < order.len() && residuals[order[end + 1]] == residuals[order[position]] {
            end += 1;
        }
        let rank = (position + end) as f64 / 2.0 / last;
        for index in &order[position..=end] {
            ranks[*index] = rank;
        }
        position = end + 1;
    }
    ranks
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;

    fn seconds() -> Step {
        Step::try_from(1000).unwrap()
    }

    #[test]
    fn finds_an_odd_period_of_a_sinusoid() {
        let values: Vec<f64> = (0..1000)
            .map(|t| (2.0 * std::f64::consts::PI * t as f64 / 37.0).sin())
            .collect();
        let found = detect(&values, seconds(), &SeasonalityParams::default());
        assert_eq!(found.primary(), Some(37), "{found:?}");
        assert!(found.periods()[0].strength > 0.9);
    }

    #[test]
    fn a_period_not_on_the_calendar_needs_three_cycles_a_day_does_not() {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let wave = |period: f64, len: usize, rng: &mut ChaCha8Rng| -> Vec<f64> {
            (0..len)
                .map(|t| {
                    (std::f64::consts::TAU * t as f64 / period).sin() + rng.random_range(-0.2..0.2)
                })
                .collect()
        };
        // 370 steps of one second is no calendar period: found over four cycles, not over two
        // and a half, which the stability test cannot judge.
        let four = detect(
            &wave(370.0, 1480, &mut rng),
            seconds(),
            &SeasonalityParams::default(),
        );
        assert!(
            four.primary().is_some_and(|steps| steps.abs_diff(370) <= 4),
            "{four:?}"
        );
        let fewer = detect(
            &wave(370.0, 925, &mut rng),
            seconds(),
            &SeasonalityParams::default(),
        );
        assert!(fewer.periods().is_empty(), "{fewer:?}");
        // A day of 5-minute steps is kept over two and a half days on its autocorrelation.
        let days = detect(
            &wave(288.0, 720, &mut rng),
            Step::FIVE_MINUTES,
            &SeasonalityParams::default(),
        );
        assert_eq!(days.primary(), Some(288), "{days:?}");
    }

    #[test]
    fn finds_day_and_week_on_five_minute_data() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let values: Vec<f64> = (0..288 * 21)
            .map(|t| {
                let day = (2.0 * std::f64::consts::PI * t as f64 / 288.0).sin();
                let weekend = if (t / 288) % 7 >= 5 { -1.5 } else { 0.0 };
                day + weekend + rng.random_range(-0.3..0.3)
            })
            .collect();
        let found = detect(&values, Step::FIVE_MINUTES, &SeasonalityParams::default());
        let steps = found.steps();
        assert!(steps.contains(&288), "{found:?}");
        assert!(steps.contains(&2016), "{found:?}");
        let week = found.periods().iter().find(|p| p.steps == 2016).unwrap();
        assert_eq!(week.calendar, Some(CalendarPeriod::Week));
    }

    #[test]
    fn finds_week_and_year_on_daily_data_and_no_year_in_a_weekly_cycle() {
        let day = Step::try_from(86_400_000).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(8);
        let weekly: Vec<f64> = (0..8 * 365)
            .map(|t| {
                let t = t as f64;
                60.0 * (std::f64::consts::TAU * t / 7.0).cos() + rng.random_range(-30.0..30.0)
            })
            .collect();
        let found = detect(&weekly, day, &SeasonalityParams::default());
        assert_eq!(found.steps(), vec![7], "{found:?}");
        let with_year: Vec<f64> = weekly
            .iter()
            .enumerate()
            .map(|(t, value)| value + 150.0 * (std::f64::consts::TAU * t as f64 / 365.2425).sin())
            .collect();
        let found = detect(&with_year, day, &SeasonalityParams::default());
        let year = found.periods().iter().find(|p| p.steps == 365);
        assert_eq!(
            year.map(|p| p.calendar),
            Some(Some(CalendarPeriod::Year)),
            "{found:?}"
        );
        assert!(found.steps().contains(&7), "{found:?}");
    }

    #[test]
    fn wiggles_whose_phase_drifts_are_not_a_cycle() {
        // A wave of about 20 steps whose phase wanders (a queue that fills and drains at no fixed
        // time): the ACF has a hill at 20, but no phase of a 20-step cycle is higher than another.
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let mut phase = 0.0;
        let values: Vec<f64> = (0..4000)
            .map(|_| {
                phase += std::f64::consts::TAU / 20.0 + rng.random_range(-0.3..0.3);
                phase.sin() + rng.random_range(-0.2..0.2)
            })
            .collect();
        let found = detect(&values, seconds(), &SeasonalityParams::default());
        assert!(found.periods().is_empty(), "{found:?}");
    }

    #[test]
    fn the_stability_test_follows_the_phase_means() {
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let noise: Vec<f64> = (0..2400).map(|_| rng.random_range(-1.0..1.0)).collect();
        let cycle: Vec<f64> = noise
            .iter()
            .enumerate()
            .map(|(t, v)| v + [0.0, 0.5, 0.0, -0.5][t % 4])
            .collect();
        let z = |values: &[f64], lag| stable_seasonality(values, lag).expect("enough points");
        assert!(z(&noise, 4).abs() < STABLE_Z, "{}", z(&noise, 4));
        assert!(z(&cycle, 4) > 10.0, "{}", z(&cycle, 4));
        // Twice the period holds the same shape twice: still stable, on more degrees of freedom.
        assert!(z(&cycle, 8) > STABLE_Z);
        let exact: Vec<f64> = (0..40).map(|t| (t % 4) as f64).collect();
        assert_eq!(stable_seasonality(&exact, 4), Some(f64::INFINITY));
        assert_eq!(stable_seasonality(&exact[..10], 4), None, "too few cycles");
        // Gaps are skipped.
        let mut gappy = cycle.clone();
        gappy[100..400].fill(f64::NAN);
        assert!(z(&gappy, 4) > 10.0);
    }

    #[test]
    fn white_noise_and_constants_have_no_period() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let noise: Vec<f64> = (0..2000).map(|_| rng.random_range(-1.0..1.0)).collect();
        assert!(
            detect(&noise, seconds(), &SeasonalityParams::default())
                .periods()
                .is_empty()
        );
        let constant = vec![5.0; 500];
        assert!(
            detect(&constant, seconds(), &SeasonalityParams::default())
                .periods()
                .is_empty()
        );
        assert!(
            SeasonalityParams::default()
                .min_strength(1.5)
                .check()
                .is_err()
        );
    }
}
