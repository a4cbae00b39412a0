//! Domain types shared by every layer: series identity, time, samples and regular time series.
//!
//! Nothing here does I/O or depends on Polars, tonic or the models; the other modules depend on this one
//! and never the other way round.

mod forecast;
mod series_id;
mod source;
mod time;

use std::fmt;
use std::str::FromStr;

pub use forecast::{Forecast, Horizon, Interval, Level};
pub use series_id::{SeriesId, check_workload_name};
pub use source::{PrometheusSource, SourceAuth};
pub(crate) use time::duration_text;
pub use time::{Step, TimeRange, Timestamp};

/// Bytes of client text an error message repeats; the rest is counted, not echoed.
pub const ECHO_BYTES: usize = 200;

/// `text` quoted for an error message, cut after [`ECHO_BYTES`] (at a character boundary) with its
/// full length noted, so a huge input never makes a huge error.
pub fn quoted(text: &str) -> String {
    abbreviated(&format!("{text:?}"), text.len())
}

/// `shown` cut after [`ECHO_BYTES`], noting `len`, the size of what it shows, when cut.
pub(crate) fn abbreviated(shown: &str, len: usize) -> String {
    if shown.len() <= ECHO_BYTES {
        return shown.to_owned();
    }
    let mut end = ECHO_BYTES;
    while !shown.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({len} bytes)", &shown[..end])
}

/// Errors building a domain value from untrusted input.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DomainError {
    /// A series name is empty or holds a character outside `[a-zA-Z0-9_:.-]`, or starts with a digit.
    #[error("invalid series name {}: {reason}", quoted(.name))]
    InvalidSeriesName {
        /// The name as given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A label name is empty or holds a character outside `[a-zA-Z0-9_]`, or starts with a digit.
    #[error("invalid label name {}: {reason}", quoted(.name))]
    InvalidLabelName {
        /// The label name as given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A series selector such as `cpu{host="a"}` could not be parsed.
    #[error("invalid series selector {}: {reason}", quoted(.text))]
    InvalidSelector {
        /// The selector as given.
        text: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A step is zero, negative or not a whole number of milliseconds.
    #[error("invalid step {}: {reason}", quoted(.text))]
    InvalidStep {
        /// The step as given.
        text: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A timestamp could not be parsed or is out of the representable range.
    #[error("invalid timestamp {}: {reason}", quoted(.text))]
    InvalidTimestamp {
        /// The timestamp as given.
        text: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A history source (`source.prometheus`) has a bad value.
    #[error("invalid source: {field}: {reason}")]
    InvalidSource {
        /// The key, e.g. `source.prometheus.url`.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A time range ends before it starts.
    #[error("invalid time range: end {to} is before start {from}")]
    InvalidRange {
        /// Start of the range (inclusive).
        from: Timestamp,
        /// End of the range (exclusive).
        to: Timestamp,
    },
    /// A forecast horizon of zero steps: nothing to forecast.
    #[error("invalid horizon 0: a horizon must be at least one step")]
    EmptyHorizon,
    /// A forecast horizon beyond [`Horizon::MAX`].
    #[error("invalid horizon {steps}: must be at most {max} steps")]
    HorizonTooLong {
        /// The horizon as given.
        steps: usize,
        /// The largest accepted horizon.
        max: usize,
    },
    /// An interval level outside `(0, 1)`.
    #[error("invalid interval level {level}: must lie strictly between 0 and 1")]
    InvalidLevel {
        /// The level as given.
        level: f64,
    },
    /// An interval level in percent outside `(0, 100)`.
    #[error("invalid interval level {percent}%: must lie strictly between 0% and 100%")]
    InvalidLevelPercent {
        /// The level as given, in percent.
        percent: f64,
    },
    /// An aggregation name other than `mean`, `max`, `sum` or `last`.
    #[error("unknown aggregation {}: expected mean, max, sum or last", quoted(.text))]
    UnknownAggregation {
        /// The aggregation as given.
        text: String,
    },
}

/// One observation of a series: a time and a finite value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// When the value was observed.
    pub timestamp: Timestamp,
    /// The observed value; the store rejects non-finite values.
    pub value: f64,
}

impl Sample {
    /// A sample at `timestamp_ms` milliseconds since the Unix epoch.
    pub fn new(timestamp_ms: i64, value: f64) -> Self {
        Self {
            timestamp: Timestamp::from_millis(timestamp_ms),
            value,
        }
    }
}

/// How the samples that fall into one bucket of a window are combined into one value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Aggregation {
    /// Arithmetic mean of the bucket's samples.
    #[default]
    Mean,
    /// Largest sample in the bucket (what capacity planning wants for peaky load).
    Max,
    /// Sum of the bucket's samples (for counters already converted to per-sample increments).
    Sum,
    /// The bucket's latest sample (for gauges).
    Last,
}

impl Aggregation {
    /// The lowercase name used in configuration files and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Mean => "mean",
            Self::Max => "max",
            Self::Sum => "sum",
            Self::Last => "last",
        }
    }
}

impl fmt::Display for Aggregation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Aggregation {
    type Err = DomainError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.trim().to_ascii_lowercase().as_str() {
            "mean" | "avg" => Ok(Self::Mean),
            "max" => Ok(Self::Max),
            "sum" => Ok(Self::Sum),
            "last" => Ok(Self::Last),
            _ => Err(DomainError::UnknownAggregation {
                text: text.to_owned(),
            }),
        }
    }
}

/// A regularly sampled series: `values[i]` belongs to `start + i * step`; `NaN` marks a bucket with no data.
#[derive(Debug, Clone, PartialEq)]
pub struct TimeSeries {
    start: Timestamp,
    step: Step,
    values: Vec<f64>,
}

impl TimeSeries {
    /// A series whose first value belongs to `start`, one value per `step`.
    pub fn new(start: Timestamp, step: Step, values: Vec<f64>) -> Self {
        Self {
            start,
            step,
            values,
        }
    }

    /// Time of the first value.
    pub fn start(&self) -> Timestamp {
        self.start
    }

    /// Spacing between consecutive values.
    pub fn step(&self) -> Step {
        self.step
    }

    /// The values, `NaN` where a bucket held no data.
    pub fn values(&self) -> &[f64] {
        &self.values
    }

    /// Takes the values out of the series.
    pub fn into_values(self) -> Vec<f64> {
        self.values
    }

    /// Number of buckets, including empty ones.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// True when the series has no buckets at all.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Time of the bucket at `index`.
    pub fn time_at(&self, index: usize) -> Timestamp {
        let offset = i64::try_from(index).unwrap_or(i64::MAX);
        self.start
            .saturating_add_millis(offset.saturating_mul(self.step.as_millis()))
    }

    /// Time just after the last bucket: where a forecast of this series starts.
    pub fn end(&self) -> Timestamp {
        self.time_at(self.values.len())
    }

    /// Number of buckets that hold data.
    pub fn observed_len(&self) -> usize {
        self.values.iter().filter(|value| !value.is_nan()).count()
    }

    /// The latest bucket that holds data, with its time.
    pub fn last_observed(&self) -> Option<(Timestamp, f64)> {
        let index = self.values.iter().rposition(|value| !value.is_nan())?;
        Some((self.time_at(index), self.values[index]))
    }

    /// The buckets in `range` as a series of their own (clamped to the series).
    pub fn slice(&self, range: std::ops::Range<usize>) -> TimeSeries {
        let end = range.end.min(self.values.len());
        let start = range.start.min(end);
        TimeSeries::new(
            self.time_at(start),
            self.step,
            self.values[start..end].to_vec(),
        )
    }

    /// The newest buckets spanning at most `window` (at least one, if the series has any): the
    /// history a forecast fitted over that window sees.
    pub fn newest(&self, window: std::time::Duration) -> TimeSeries {
        let steps = usize::try_from(window.as_millis() / self.step.as_duration().as_millis())
            .unwrap_or(usize::MAX)
            .max(1);
        self.slice(self.values.len().saturating_sub(steps)..self.values.len())
    }

    /// Iterates over `(time, value)` pairs, empty buckets included as `NaN`.
    pub fn iter(&self) -> impl Iterator<Item = (Timestamp, f64)> + '_ {
        self.values
            .iter()
            .enumerate()
            .map(|(index, value)| (self.time_at(index), *value))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn slices_and_the_newest_window_keep_their_times() {
        let series = TimeSeries::new(
            Timestamp::from_millis(0),
            Step::FIVE_MINUTES,
            (0..12).map(f64::from).collect(),
        );
        let middle = series.slice(2..5);
        assert_eq!(middle.start(), Timestamp::from_millis(600_000));
        assert_eq!(middle.values(), &[2.0, 3.0, 4.0]);
        assert_eq!(series.slice(10..99).values(), &[10.0, 11.0], "clamped");
        let hour = series.newest(Duration::from_secs(20 * 60));
        assert_eq!(hour.values(), &[8.0, 9.0, 10.0, 11.0]);
        assert_eq!(hour.end(), series.end());
        assert_eq!(
            series.newest(Duration::from_secs(1)).len(),
            1,
            "at least a step"
        );
        assert_eq!(series.newest(Duration::from_secs(86_400)), series);
    }
}
