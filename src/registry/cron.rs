//! Cron expressions for the retraining schedule: the five POSIX fields, evaluated in UTC.
//!
//! Written here rather than taken from a crate: the cron crates on crates.io enable chrono's
//! default features, which changes the feature set every Polars crate is built with and rebuilds
//! all of Polars. Five fields with `*`, lists, ranges and steps are all a nightly job needs.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Datelike, Duration, TimeZone, Timelike, Utc};

use super::RegistryError;

/// A parsed cron expression: `minute hour day-of-month month day-of-week`.
///
/// Each field is `*`, a number, a range `a-b`, a step `*/n` or `a-b/n`, or a comma-separated list
/// of those. Day of week counts from Sunday = 0 (7 is Sunday too). As in Vixie cron, when both
/// day fields are restricted a day matching either one matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CronSchedule {
    /// The expression as written.
    text: String,
    minutes: Vec<bool>,
    hours: Vec<bool>,
    days_of_month: Vec<bool>,
    months: Vec<bool>,
    days_of_week: Vec<bool>,
    /// Day of month was `*`.
    any_day_of_month: bool,
    /// Day of week was `*`.
    any_day_of_week: bool,
}

impl CronSchedule {
    /// Nightly at 02:00 UTC: the default retraining schedule.
    pub const NIGHTLY: &'static str = "0 2 * * *";

    /// The first time strictly after `after` the schedule fires, within four years.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let start = after.with_second(0)?.with_nanosecond(0)? + Duration::minutes(1);
        let mut at = start;
        let limit = start + Duration::days(4 * 366);
        while at < limit {
            if !self.months[at.month() as usize] || !self.day_matches(&at) {
                let next_day = at.date_naive().succ_opt()?.and_hms_opt(0, 0, 0)?;
                at = Utc.from_utc_datetime(&next_day);
                continue;
            }
            if !self.hours[at.hour() as usize] {
                at = at.with_minute(0)? + Duration::hours(1);
                continue;
            }
            if self.minutes[at.minute() as usize] {
                return Some(at);
            }
            at += Duration::minutes(1);
        }
        None
    }

    fn day_matches(&self, at: &DateTime<Utc>) -> bool {
        let by_month = self.days_of_month[at.day() as usize];
        let by_week = self.days_of_week[at.weekday().num_days_from_sunday() as usize];
        match (self.any_day_of_month, self.any_day_of_week) {
            (true, true) => true,
            (false, true) => by_month,
            (true, false) => by_week,
            (false, false) => by_month || by_week,
        }
    }
}

impl FromStr for CronSchedule {
    type Err = RegistryError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = |reason: String| RegistryError::InvalidSchedule {
            expression: text.to_owned(),
            reason,
        };
        let fields: Vec<&str> = text.split_whitespace().collect();
        let [minute, hour, day_of_month, month, day_of_week] = fields[..] else {
            return Err(invalid(format!(
                "expected 5 fields (minute hour day-of-month month day-of-week), got {}",
                fields.len()
            )));
        };
        let mut days_of_week = parse_field(day_of_week, 0, 7).map_err(&invalid)?;
        // 7 is another name for Sunday.
        if days_of_week[7] {
            days_of_week[0] = true;
        }
        Ok(Self {
            text: text.trim().to_owned(),
            minutes: parse_field(minute, 0, 59).map_err(&invalid)?,
            hours: parse_field(hour, 0, 23).map_err(&invalid)?,
            days_of_month: parse_field(day_of_month, 1, 31).map_err(&invalid)?,
            months: parse_field(month, 1, 12).map_err(&invalid)?,
            days_of_week,
            any_day_of_month: day_of_month == "*",
            any_day_of_week: day_of_week == "*",
        })
    }
}

impl fmt::Display for CronSchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// The allowed values of one field, indexed by value (`0..=max`).
fn parse_field(field: &str, min: usize, max: usize) -> Result<Vec<bool>, String> {
    let mut allowed = vec![false; max + 1];
    for part in field.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((range, step)) => {
                let step: usize = step
                    .parse()
                    .ok()
                    .filter(|step| *step > 0)
                    .ok_or_else(|| format!("{part:?}: the step must be a positive number"))?;
                (range, step)
            }
            None => (part, 1),
        };
        let number = |text: &str| -> Result<usize, String> {
            text.parse::<usize>()
                .ok()
                .filter(|value| (min..=max).contains(value))
                .ok_or_else(|| format!("{text:?} is not a number in {min}..={max}"))
        };
        let (from, to) = match range {
            "*" => (min, max),
            _ => match range.split_once('-') {
                Some((from, to)) => (number(from)?, number(to)?),
                None if step > 1 => (number(range)?, max),
                None => {
                    let value = number(range)?;
                    (value, value)
                }
            },
        };
        if from > to {
            return Err(format!("{range:?}: the range runs backwards"));
        }
        for value in (from..=to).step_by(step) {
            allowed[value] = true;
        }
    }
    Ok(allowed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn nightly_fires_at_two_the_next_day() {
        let nightly: CronSchedule = CronSchedule::NIGHTLY.parse().unwrap();
        assert_eq!(
            nightly.next_after(at("2026-01-05T02:00:00Z")),
            Some(at("2026-01-06T02:00:00Z"))
        );
        assert_eq!(
            nightly.next_after(at("2026-01-05T01:59:30Z")),
            Some(at("2026-01-05T02:00:00Z"))
        );
    }

    #[test]
    fn steps_lists_and_weekdays() {
        let every_quarter: CronSchedule = "*/15 * * * *".parse().unwrap();
        assert_eq!(
            every_quarter.next_after(at("2026-01-05T10:16:00Z")),
            Some(at("2026-01-05T10:30:00Z"))
        );
        // 2026-01-05 is a Monday; the next Sunday (0) at 03:30 is the 11th.
        let sundays: CronSchedule = "30 3 * * 0".parse().unwrap();
        assert_eq!(
            sundays.next_after(at("2026-01-05T00:00:00Z")),
            Some(at("2026-01-11T03:30:00Z"))
        );
        let first_of_march: CronSchedule = "0 0 1 3 *".parse().unwrap();
        assert_eq!(
            first_of_march.next_after(at("2026-03-01T00:00:00Z")),
            Some(at("2027-03-01T00:00:00Z"))
        );
    }

    #[test]
    fn malformed_expressions_are_refused() {
        for bad in [
            "",
            "* * * *",
            "60 * * * *",
            "*/0 * * * *",
            "5-1 * * * *",
            "a * * * *",
        ] {
            assert!(bad.parse::<CronSchedule>().is_err(), "{bad:?} was accepted");
        }
    }
}
