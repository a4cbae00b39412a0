//! Planned events: known future stretches of unusual load (launches, sales, matches) whose uplift is
//! learned from past occurrences and applied on top of the base forecast.
//!
//! - [`mask_events`] blanks event windows (`NaN`) so that normal model training does not learn them as
//!   part of the seasonal pattern.
//! - [`EventCalendar::learn`] learns, for each recurring event, the ratio of what happened to what the
//!   base model would have forecast without it, per step of the event window.
//! - [`EventCalendar::apply`] scales an upcoming stretch of a base forecast by the learned profile (or a
//!   given multiplier), widens its intervals by the spread across past occurrences, and pre-warms.
//!
//! The base model is a [`BaseForecaster`]: any `Fn(&TimeSeries, Horizon) -> Result<Forecast, E>`, so the
//! integrator plugs in the real ensemble. Depends only on `crate::domain`.

mod apply;
mod calendar;
#[cfg(test)]
pub(crate) mod test_support;
mod uplift;

use std::error::Error;

pub use apply::{AppliedEvent, EventForecast};
pub use calendar::{Event, EventCalendar, EventSpec, Uplift, mask_events, mask_windows};
pub use uplift::{LearnedUplifts, UpliftProfile, learn_uplift};

use crate::domain::{Forecast, Horizon, TimeSeries, Timestamp};

/// Errors reading events, learning their uplift or applying it.
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    /// The events file is not valid TOML, holds an unknown key or a value of the wrong type.
    #[error("events file: {message}")]
    ParseEvents {
        /// The parser's message, naming the key and position.
        message: String,
    },
    /// An event is well-formed but inconsistent.
    #[error("event {name:?}: {reason}")]
    InvalidEvent {
        /// The event's name as given.
        name: String,
        /// Why it is refused.
        reason: String,
    },
    /// No past occurrence of the event to learn from lies in the history.
    #[error("no past occurrence of event {name:?} in the history to learn its uplift from")]
    NoPastOccurrence {
        /// The name looked for.
        name: String,
    },
    /// The base forecaster failed for the history before a past occurrence.
    #[error("base forecast before event {name:?} at {at} failed: {source}")]
    Forecaster {
        /// The event whose occurrence was being learned.
        name: String,
        /// Start of that occurrence.
        at: Timestamp,
        /// The forecaster's error.
        source: Box<dyn Error + Send + Sync>,
    },
    /// The base forecaster returned a forecast that does not cover the occurrence.
    #[error(
        "base forecast before event {name:?} at {at} has {got} steps from {start}, expected {expected}"
    )]
    ForecastShape {
        /// The event whose occurrence was being learned.
        name: String,
        /// Start of that occurrence.
        at: Timestamp,
        /// Where the returned forecast starts.
        start: Timestamp,
        /// Steps needed.
        expected: usize,
        /// Steps returned.
        got: usize,
    },
    /// No step of any past occurrence had both an observation and a positive base forecast.
    #[error(
        "past occurrences of event {name:?} have no step with data and a positive base forecast"
    )]
    NoUsableStep {
        /// The event whose occurrences were examined.
        name: String,
    },
}

/// The model that says what load would have been without an event.
///
/// `history` ends where the forecast must start and has every event window masked to `NaN`; the
/// forecast must start at `history.end()` with `horizon` steps at `history.step()`. Any closure
/// `Fn(&TimeSeries, Horizon) -> Result<Forecast, E>` is one.
pub trait BaseForecaster {
    /// What the forecaster fails with.
    type Error: Error + Send + Sync + 'static;

    /// Forecasts `horizon` steps after `history`.
    fn forecast(&self, history: &TimeSeries, horizon: Horizon) -> Result<Forecast, Self::Error>;
}

impl<F, E> BaseForecaster for F
where
    F: Fn(&TimeSeries, Horizon) -> Result<Forecast, E>,
    E: Error + Send + Sync + 'static,
{
    type Error = E;

    fn forecast(&self, history: &TimeSeries, horizon: Horizon) -> Result<Forecast, E> {
        self(history, horizon)
    }
}
