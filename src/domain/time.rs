//! Time on the wire and in the store: UTC milliseconds since the Unix epoch.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};

use super::DomainError;

/// Values at or above this magnitude are read as epoch milliseconds, below it as epoch seconds.
///
/// 10^11 seconds is the year 5138, while 10^11 milliseconds is March 1973, so every realistic metric
/// timestamp is unambiguous.
const EPOCH_MILLIS_THRESHOLD: f64 = 1e11;

/// An instant in UTC with millisecond resolution.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct Timestamp(i64);

impl Timestamp {
    /// The earliest instant a sample may carry: `0000-01-01T00:00:00Z`, the first RFC 3339 can write.
    pub const EARLIEST: Timestamp = Timestamp(-62_167_219_200_000);
    /// The latest instant a sample may carry: `9999-12-31T23:59:59.999Z`, the last RFC 3339 can write.
    pub const LATEST: Timestamp = Timestamp(253_402_300_799_999);

    /// Why this instant lies outside [`Timestamp::EARLIEST`]..=[`Timestamp::LATEST`], the instants
    /// RFC 3339 can write and so the ones stored text can hold; `None` when it lies within.
    pub fn outside_accepted_years(self) -> Option<String> {
        if self < Self::EARLIEST {
            Some(format!("before the earliest accepted, {}", Self::EARLIEST))
        } else if self > Self::LATEST {
            Some(format!("after the latest accepted, {}", Self::LATEST))
        } else {
            None
        }
    }

    /// The instant `millis` milliseconds after the Unix epoch.
    pub const fn from_millis(millis: i64) -> Self {
        Self(millis)
    }

    /// Milliseconds since the Unix epoch.
    pub const fn as_millis(self) -> i64 {
        self.0
    }

    /// The current wall-clock time.
    pub fn now() -> Self {
        Self(Utc::now().timestamp_millis())
    }

    /// This instant moved by `millis` (negative moves back), saturating at the ends of the range.
    pub const fn saturating_add_millis(self, millis: i64) -> Self {
        Self(self.0.saturating_add(millis))
    }

    /// Rounds down to a whole multiple of `step` since the epoch, so windows line up across calls;
    /// saturates at `i64::MIN` for an instant less than a step above it, whose floor is below the range.
    pub fn floor_to(self, step: Step) -> Self {
        let step = step.as_millis();
        Self(
            self.0
                .div_euclid(step)
                .checked_mul(step)
                .unwrap_or(i64::MIN),
        )
    }

    /// Parses RFC 3339 (`2014-07-01T00:00:00Z`), or a number of epoch seconds or milliseconds
    /// (told apart by magnitude; seconds may carry a fraction).
    pub fn parse(text: &str) -> Result<Self, DomainError> {
        let trimmed = text.trim();
        let invalid = |reason: &str| DomainError::InvalidTimestamp {
            text: text.to_owned(),
            reason: reason.to_owned(),
        };
        if trimmed.is_empty() {
            return Err(invalid("empty"));
        }
        let looks_numeric = trimmed
            .bytes()
            .all(|byte| byte.is_ascii_digit() || byte == b'.' || byte == b'-' || byte == b'+');
        if looks_numeric {
            if let Ok(integer) = trimmed.parse::<i64>() {
                return Ok(if (integer as f64).abs() >= EPOCH_MILLIS_THRESHOLD {
                    Self(integer)
                } else {
                    Self(integer.saturating_mul(1000))
                });
            }
            let number: f64 = trimmed
                .parse()
                .map_err(|_| invalid("not a number nor RFC 3339"))?;
            if !number.is_finite() {
                return Err(invalid("not a finite number"));
            }
            let millis = if number.abs() >= EPOCH_MILLIS_THRESHOLD {
                number
            } else {
                number * 1000.0
            };
            if millis.abs() > 8.64e15 {
                return Err(invalid("out of range"));
            }
            return Ok(Self(millis.round() as i64));
        }
        DateTime::parse_from_rfc3339(trimmed)
            .map(|parsed| Self(parsed.timestamp_millis()))
            .map_err(|error| {
                invalid(&format!(
                    "not RFC 3339 nor epoch seconds/milliseconds ({error})"
                ))
            })
    }

    /// RFC 3339 in UTC with a `Z` suffix; milliseconds shown only when present.
    pub fn to_rfc3339(self) -> String {
        match DateTime::<Utc>::from_timestamp_millis(self.0) {
            Some(time) => time.to_rfc3339_opts(SecondsFormat::AutoSi, true),
            None => format!("{}ms", self.0),
        }
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

impl FromStr for Timestamp {
    type Err = DomainError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::parse(text)
    }
}

/// A positive spacing between samples or buckets, in whole milliseconds.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "i64", into = "i64")]
pub struct Step(i64);

impl From<Step> for i64 {
    fn from(step: Step) -> i64 {
        step.0
    }
}

impl Step {
    /// Five minutes: the usual scrape-derived resolution.
    pub const FIVE_MINUTES: Step = Step(5 * 60 * 1000);

    /// The step in milliseconds (always positive).
    pub const fn as_millis(self) -> i64 {
        self.0
    }

    /// The step as a standard duration.
    pub fn as_duration(self) -> Duration {
        Duration::from_millis(self.0.unsigned_abs())
    }
}

impl TryFrom<i64> for Step {
    type Error = DomainError;

    /// A step of `millis` milliseconds; must be positive.
    fn try_from(millis: i64) -> Result<Self, Self::Error> {
        if millis <= 0 {
            return Err(DomainError::InvalidStep {
                text: format!("{millis}ms"),
                reason: "must be positive".to_owned(),
            });
        }
        Ok(Self(millis))
    }
}

impl TryFrom<Duration> for Step {
    type Error = DomainError;

    fn try_from(duration: Duration) -> Result<Self, Self::Error> {
        let invalid = |reason: &str| DomainError::InvalidStep {
            text: format!("{duration:?}"),
            reason: reason.to_owned(),
        };
        if !duration.subsec_nanos().is_multiple_of(1_000_000) {
            return Err(invalid("must be a whole number of milliseconds"));
        }
        let millis = i64::try_from(duration.as_millis()).map_err(|_| invalid("too large"))?;
        Self::try_from(millis).map_err(|_| invalid("must be positive"))
    }
}

impl FromStr for Step {
    type Err = DomainError;

    /// Parses a duration such as `5m`, `1h30m` or `30s`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let duration =
            humantime::parse_duration(text.trim()).map_err(|error| DomainError::InvalidStep {
                text: text.to_owned(),
                reason: error.to_string(),
            })?;
        Self::try_from(duration).map_err(|error| match error {
            DomainError::InvalidStep { reason, .. } => DomainError::InvalidStep {
                text: text.to_owned(),
                reason,
            },
            other => other,
        })
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.as_duration()))
    }
}

/// A half-open interval of time `[from, to)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TimeRange {
    from: Timestamp,
    to: Timestamp,
}

impl TimeRange {
    /// The interval `[from, to)`; `to` must not be before `from`.
    pub fn new(from: Timestamp, to: Timestamp) -> Result<Self, DomainError> {
        if to < from {
            return Err(DomainError::InvalidRange { from, to });
        }
        Ok(Self { from, to })
    }

    /// Inclusive start.
    pub fn from(self) -> Timestamp {
        self.from
    }

    /// Exclusive end.
    pub fn to(self) -> Timestamp {
        self.to
    }

    /// True when `timestamp` lies in `[from, to)`.
    pub fn contains(self, timestamp: Timestamp) -> bool {
        self.from <= timestamp && timestamp < self.to
    }
}

/// Serde helpers: reads and writes durations written for people (`"10m"`, `"1h 30m"`) with humantime.
pub(crate) mod duration_text {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(
        duration: &Duration,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&humantime::format_duration(*duration).to_string())
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Duration, D::Error> {
        let text = String::deserialize(deserializer)?;
        humantime::parse_duration(text.trim())
            .map_err(|error| serde::de::Error::custom(format!("duration {text:?}: {error}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rfc3339_and_epoch_forms() {
        let expected = 1_404_172_800_000;
        assert_eq!(
            Timestamp::parse("2014-07-01T00:00:00Z")
                .unwrap()
                .as_millis(),
            expected
        );
        assert_eq!(
            Timestamp::parse("2014-07-01T02:00:00+02:00")
                .unwrap()
                .as_millis(),
            expected
        );
        assert_eq!(
            Timestamp::parse("1404172800").unwrap().as_millis(),
            expected
        );
        assert_eq!(
            Timestamp::parse("1404172800000").unwrap().as_millis(),
            expected
        );
        assert_eq!(
            Timestamp::parse("1404172800.5").unwrap().as_millis(),
            expected + 500
        );
        assert!(Timestamp::parse("yesterday").is_err());
        assert!(Timestamp::parse("").is_err());
        assert!(Timestamp::parse("2014-13-01T00:00:00Z").is_err());
    }

    #[test]
    fn formats_round_trip() {
        let time = Timestamp::from_millis(1_404_172_800_250);
        assert_eq!(time.to_rfc3339(), "2014-07-01T00:00:00.250Z");
        assert_eq!(Timestamp::parse(&time.to_rfc3339()).unwrap(), time);
    }

    #[test]
    fn steps_must_be_positive_whole_milliseconds() {
        assert_eq!("5m".parse::<Step>().unwrap(), Step::FIVE_MINUTES);
        assert_eq!("1h 30m".parse::<Step>().unwrap().as_millis(), 5_400_000);
        assert!("0s".parse::<Step>().is_err());
        assert!("5 parsecs".parse::<Step>().is_err());
        assert!(Step::try_from(-1).is_err());
        assert!(Step::try_from(Duration::from_nanos(1500)).is_err());
    }

    #[test]
    fn floors_to_step_before_epoch_too() {
        let step = Step::try_from(1000).unwrap();
        assert_eq!(
            Timestamp::from_millis(2500).floor_to(step).as_millis(),
            2000
        );
        assert_eq!(Timestamp::from_millis(-1).floor_to(step).as_millis(), -1000);
    }

    #[test]
    fn floors_at_the_ends_of_the_range_without_overflow() {
        let five_minutes = Step::FIVE_MINUTES.as_millis();
        let lowest = Timestamp::from_millis(i64::MIN).floor_to(Step::FIVE_MINUTES);
        assert_eq!(
            lowest.as_millis(),
            i64::MIN,
            "saturates: the floor is below i64::MIN"
        );
        let highest = Timestamp::from_millis(i64::MAX).floor_to(Step::FIVE_MINUTES);
        assert_eq!(highest.as_millis(), i64::MAX - i64::MAX % five_minutes);
        let huge = Step::try_from(i64::MAX).unwrap();
        assert_eq!(
            Timestamp::from_millis(-1).floor_to(huge).as_millis(),
            -i64::MAX
        );
    }

    #[test]
    fn earliest_and_latest_are_the_ends_of_rfc3339() {
        assert_eq!(Timestamp::EARLIEST.to_rfc3339(), "0000-01-01T00:00:00Z");
        assert_eq!(Timestamp::LATEST.to_rfc3339(), "9999-12-31T23:59:59.999Z");
    }

    #[test]
    fn only_instants_rfc3339_can_write_are_accepted() {
        for inside in [
            Timestamp::EARLIEST,
            Timestamp::from_millis(0),
            Timestamp::LATEST,
        ] {
            assert_eq!(inside.outside_accepted_years(), None, "{inside}");
        }
        let early = Timestamp::EARLIEST.saturating_add_millis(-1);
        assert!(early.outside_accepted_years().unwrap().contains("earliest"));
        for late in [
            Timestamp::LATEST.saturating_add_millis(1),
            Timestamp::from_millis(i64::MAX),
        ] {
            assert!(late.outside_accepted_years().unwrap().contains("latest"));
        }
    }

    #[test]
    fn ranges_reject_reversed_bounds() {
        let early = Timestamp::from_millis(0);
        let late = Timestamp::from_millis(10);
        assert!(TimeRange::new(late, early).is_err());
        let range = TimeRange::new(early, late).unwrap();
        assert!(range.contains(early) && !range.contains(late));
    }
}
