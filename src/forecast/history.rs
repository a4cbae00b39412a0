//! How much of a series' newest history a fit uses: sized to its step and the calendar cycles that
//! step can resolve, bounded in points so that fit time stays flat, or a fixed span the operator
//! chose (`planning.history_window`).
//!
//! A cycle is learnt from its repetitions, so the window is a number of cycles of the longest
//! calendar cycle the point budget holds: years of daily data (a yearly cycle and its holidays),
//! four weeks of hourly or 5-minute data (the daily and weekly cycles, and no older regime than
//! a month). Which of those cycles a series really has is for seasonality detection to find in
//! the window. See `docs/decisions.md`, "History sized to the series".

use std::fmt;
use std::time::Duration;

use crate::domain::Step;

use super::seasonality::CalendarPeriod;

/// Most points a sized window holds: 28 days of 5-minute data, the size fit time is measured on
/// (`benches/forecast.rs`).
pub const MAX_FIT_POINTS: usize = 8_064;

/// Most years a sized window holds: a yearly shape is seen once a year, so several years are
/// needed to tell it from that year's noise, and older years describe another regime.
const MAX_YEARS: usize = 8;

/// Fewest years worth fitting for a yearly cycle: two to see it repeat, one more to test that
/// its shape is stable (see `seasonality`).
const MIN_YEARS: usize = 3;

/// Weeks a sized window holds when no yearly cycle fits the budget.
const WEEKS: usize = 4;

/// How much of a series' newest history a fit uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HistoryWindow {
    /// Sized to the series' step (see the module documentation).
    #[default]
    Sized,
    /// Exactly this span, whatever the step.
    Fixed(Duration),
}

impl HistoryWindow {
    /// The number of newest points of a series at `step` a fit uses (at least one).
    pub fn points(self, step: Step) -> usize {
        match self {
            Self::Fixed(span) => {
                usize::try_from(span.as_millis() / step.as_duration().as_millis().max(1))
                    .unwrap_or(usize::MAX)
                    .max(1)
            }
            Self::Sized => sized_points(step),
        }
    }

    /// The span of history a fit uses for a series at `step`.
    pub fn span(self, step: Step) -> Duration {
        match self {
            Self::Fixed(span) => span,
            Self::Sized => {
                let points = u32::try_from(sized_points(step)).unwrap_or(u32::MAX);
                step.as_duration().saturating_mul(points)
            }
        }
    }
}

impl fmt::Display for HistoryWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sized => write!(f, "sized to the step (at most {MAX_FIT_POINTS} points)"),
            Self::Fixed(span) => write!(f, "{}", humantime::format_duration(*span)),
        }
    }
}

/// Points of the sized window at `step`: as many whole years as the budget holds (between
/// [`MIN_YEARS`] and [`MAX_YEARS`]), else [`WEEKS`] weeks, never more than [`MAX_FIT_POINTS`].
fn sized_points(step: Step) -> usize {
    if let Some(year) = CalendarPeriod::Year.steps(step) {
        let years = (MAX_FIT_POINTS / year.max(1)).min(MAX_YEARS);
        if years >= MIN_YEARS {
            return years * year;
        }
    }
    let week_millis = u128::from(CalendarPeriod::Week.millis().unsigned_abs());
    let step_millis = step.as_duration().as_millis().max(1);
    let weeks = (WEEKS as u128 * week_millis).div_ceil(step_millis);
    usize::try_from(weeks)
        .unwrap_or(usize::MAX)
        .clamp(1, MAX_FIT_POINTS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(millis: i64) -> Step {
        Step::try_from(millis).unwrap()
    }

    #[test]
    fn years_of_daily_data_and_weeks_of_minute_data() {
        let day = step(86_400_000);
        assert_eq!(HistoryWindow::Sized.points(day), 8 * 365);
        assert_eq!(HistoryWindow::Sized.points(Step::FIVE_MINUTES), 8_064);
        assert_eq!(
            HistoryWindow::Sized.span(Step::FIVE_MINUTES),
            Duration::from_secs(28 * 86_400)
        );
        assert_eq!(HistoryWindow::Sized.points(step(3_600_000)), 672);
        // Six-hourly data: five years of 1,461 points fit the budget.
        assert_eq!(HistoryWindow::Sized.points(step(6 * 3_600_000)), 5 * 1_461);
        // One-minute data: four weeks would be 40,320 points; the budget bounds it.
        assert_eq!(HistoryWindow::Sized.points(step(60_000)), MAX_FIT_POINTS);
        // Weekly data: eight years.
        assert_eq!(HistoryWindow::Sized.points(step(7 * 86_400_000)), 8 * 52);
    }

    #[test]
    fn a_fixed_window_is_taken_as_given() {
        let week = HistoryWindow::Fixed(Duration::from_secs(7 * 86_400));
        assert_eq!(week.points(Step::FIVE_MINUTES), 2_016);
        assert_eq!(week.span(step(86_400_000)), Duration::from_secs(7 * 86_400));
        assert_eq!(week.points(step(30 * 86_400_000)), 1, "at least one point");
    }
}
