//! Validated forecast scalars (`Horizon`, `Level`) and the `Forecast` a fitted model returns.
//!
//! They live in the domain because the forecaster produces them and the planner, the service and the
//! command line consume them.

use std::fmt;

use super::{DomainError, Step, Timestamp};

/// Number of steps ahead to forecast; at least 1 and at most [`Horizon::MAX`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Horizon(usize);

impl Horizon {
    /// Largest accepted horizon: a year of one-minute steps, far beyond any useful forecast, but a
    /// bound that keeps a typo from allocating gigabytes.
    pub const MAX: usize = 366 * 24 * 60;

    /// The number of steps.
    pub const fn steps(self) -> usize {
        self.0
    }
}

impl TryFrom<usize> for Horizon {
    type Error = DomainError;

    fn try_from(steps: usize) -> Result<Self, Self::Error> {
        match steps {
            0 => Err(DomainError::EmptyHorizon),
            steps if steps > Self::MAX => Err(DomainError::HorizonTooLong {
                steps,
                max: Self::MAX,
            }),
            steps => Ok(Self(steps)),
        }
    }
}

impl fmt::Display for Horizon {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} steps", self.0)
    }
}

/// Nominal coverage of a prediction interval, strictly between 0 and 1 (0.95 is a 95% interval).
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
pub struct Level(f64);

impl Level {
    /// The levels a caller gets when it does not ask for others: 80% and 95%.
    pub const DEFAULTS: [Level; 2] = [Level(0.8), Level(0.95)];

    /// The level as a fraction in `(0, 1)`.
    pub const fn fraction(self) -> f64 {
        self.0
    }

    /// The level in percent, e.g. `95.0`, rounded to 9 decimals so that a level given in percent
    /// reads back as given (`7`, not `7.000000000000001`).
    pub fn percent(self) -> f64 {
        (self.0 * 100.0 * 1e9).round() / 1e9
    }

    /// A level given in percent, e.g. `Level::from_percent(95.0)`.
    pub fn from_percent(percent: f64) -> Result<Self, DomainError> {
        Self::try_from(percent / 100.0).map_err(|_| DomainError::InvalidLevelPercent { percent })
    }
}

impl TryFrom<f64> for Level {
    type Error = DomainError;

    fn try_from(fraction: f64) -> Result<Self, Self::Error> {
        // Levels at 0 or 1 have no finite interval, so they are rejected rather than clamped.
        if !(fraction > 0.0 && fraction < 1.0) {
            return Err(DomainError::InvalidLevel { level: fraction });
        }
        Ok(Self(fraction))
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}%", self.percent())
    }
}

/// A prediction interval at one level: `lower[i] <= upper[i]` for every step.
#[derive(Debug, Clone, PartialEq)]
pub struct Interval {
    /// The nominal coverage.
    pub level: Level,
    /// Lower bound per step.
    pub lower: Vec<f64>,
    /// Upper bound per step.
    pub upper: Vec<f64>,
}

/// A forecast: its time axis, the point forecast and one interval per requested level.
///
/// Intervals are sorted by level and nested: a lower level's band lies inside every higher level's
/// band, and every band contains the point forecast. All values are finite.
#[derive(Debug, Clone, PartialEq)]
pub struct Forecast {
    start: Timestamp,
    step: Step,
    point: Vec<f64>,
    intervals: Vec<Interval>,
}

impl Forecast {
    /// Builds a forecast, sorting intervals by level and enforcing finiteness and nesting.
    ///
    /// Nesting is enforced rather than assumed because bounds come from separate empirical
    /// quantiles, and a monotone inverse transform preserves but cannot create the ordering.
    pub fn new(
        start: Timestamp,
        step: Step,
        point: Vec<f64>,
        mut intervals: Vec<Interval>,
    ) -> Self {
        let point: Vec<f64> = point.into_iter().map(finite_or_zero).collect();
        intervals.sort_by(|left, right| left.level.0.total_cmp(&right.level.0));
        intervals.dedup_by(|later, earlier| later.level == earlier.level);
        let mut inner_lower = point.clone();
        let mut inner_upper = point.clone();
        for interval in &mut intervals {
            for index in 0..point.len() {
                let lower = finite_or(interval.lower.get(index).copied(), point[index]);
                let upper = finite_or(interval.upper.get(index).copied(), point[index]);
                let lower = lower.min(inner_lower[index]);
                let upper = upper.max(inner_upper[index]);
                inner_lower[index] = lower;
                inner_upper[index] = upper;
            }
            interval.lower.clone_from(&inner_lower);
            interval.upper.clone_from(&inner_upper);
        }
        Self {
            start,
            step,
            point,
            intervals,
        }
    }

    /// Time of the first forecast step.
    pub fn start(&self) -> Timestamp {
        self.start
    }

    /// Spacing between forecast steps.
    pub fn step(&self) -> Step {
        self.step
    }

    /// Number of forecast steps.
    pub fn len(&self) -> usize {
        self.point.len()
    }

    /// True when the forecast has no steps.
    pub fn is_empty(&self) -> bool {
        self.point.is_empty()
    }

    /// Time of forecast step `index`.
    pub fn time_at(&self, index: usize) -> Timestamp {
        let offset = i64::try_from(index).unwrap_or(i64::MAX);
        self.start
            .saturating_add_millis(offset.saturating_mul(self.step.as_millis()))
    }

    /// The point forecast (a median where a variance-stabilising transform was inverted).
    pub fn point(&self) -> &[f64] {
        &self.point
    }

    /// Intervals sorted by increasing level.
    pub fn intervals(&self) -> &[Interval] {
        &self.intervals
    }

    /// The interval at `level`, if it was requested.
    pub fn interval(&self, level: Level) -> Option<&Interval> {
        self.intervals
            .iter()
            .find(|interval| interval.level == level)
    }
}

fn finite_or_zero(value: f64) -> f64 {
    finite_or(Some(value), 0.0)
}

/// Replaces NaN by `fallback` and clamps infinities to the largest finite value of the same sign.
fn finite_or(value: Option<f64>, fallback: f64) -> f64 {
    match value {
        Some(value) if value.is_nan() => fallback,
        Some(value) => value.clamp(f64::MIN, f64::MAX),
        None => fallback,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scalars_reject_out_of_range_values() {
        assert_eq!(Horizon::try_from(0), Err(DomainError::EmptyHorizon));
        assert!(matches!(
            Horizon::try_from(Horizon::MAX + 1),
            Err(DomainError::HorizonTooLong { .. })
        ));
        assert_eq!(Horizon::try_from(288).unwrap().steps(), 288);
        assert!(Level::try_from(0.0).is_err());
        assert!(Level::try_from(1.0).is_err());
        assert!(Level::try_from(f64::NAN).is_err());
        assert_eq!(Level::from_percent(95.0).unwrap(), Level::DEFAULTS[1]);
        assert_eq!(
            Level::from_percent(100.0).unwrap_err().to_string(),
            "invalid interval level 100%: must lie strictly between 0% and 100%"
        );
    }

    #[test]
    fn a_level_given_in_percent_reads_back_as_given() {
        for percent in [7.0, 14.0, 97.5, 99.5, 10.0] {
            assert_eq!(Level::from_percent(percent).unwrap().percent(), percent);
        }
        assert_eq!(Level::from_percent(7.0).unwrap().to_string(), "7%");
    }

    #[test]
    fn forecast_enforces_nesting_and_finiteness() {
        let step = Step::try_from(1000).unwrap();
        let forecast = Forecast::new(
            Timestamp::from_millis(0),
            step,
            vec![1.0, f64::NAN],
            vec![
                Interval {
                    level: Level::DEFAULTS[1],
                    lower: vec![0.5, f64::NEG_INFINITY],
                    upper: vec![1.2, 1.0],
                },
                Interval {
                    level: Level::DEFAULTS[0],
                    lower: vec![0.2, -1.0],
                    upper: vec![2.0, 0.5],
                },
            ],
        );
        assert_eq!(forecast.point(), &[1.0, 0.0]);
        let narrow = forecast.interval(Level::DEFAULTS[0]).unwrap();
        let wide = forecast.interval(Level::DEFAULTS[1]).unwrap();
        assert_eq!(narrow.lower, vec![0.2, -1.0]);
        assert_eq!(wide.lower, vec![0.2, f64::MIN]);
        assert_eq!(wide.upper, vec![2.0, 1.0]);
        assert_eq!(forecast.time_at(2).as_millis(), 2000);
    }
}
