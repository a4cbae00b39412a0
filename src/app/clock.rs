//! The clock the serving state reads: the system's wall clock in a server, or a clock that follows
//! tokio's, so a test under `tokio::time::pause()` runs the retraining schedule and the planner
//! without waiting real minutes.

use std::fmt;

use chrono::{DateTime, Utc};

use crate::domain::Timestamp;

/// Where the serving state reads the current date.
///
/// The retraining schedule is a cron expression over wall-clock dates, and jobs and plans are
/// stamped with when they happened, so these read a clock; the waiting itself is done with tokio's
/// timers. A server holds [`SystemClock`]; a test holds a [`TokioClock`] and pauses tokio's time, and
/// a nightly job then fires as soon as the test lets the night pass.
pub trait Clock: fmt::Debug + Send + Sync {
    /// The current date (UTC).
    fn now(&self) -> DateTime<Utc>;

    /// The current date with millisecond resolution.
    fn timestamp(&self) -> Timestamp {
        Timestamp::from_millis(self.now().timestamp_millis())
    }
}

/// The system's wall clock, what a server runs on.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that reads a chosen date when made and then advances as tokio's clock does: under
/// `tokio::time::pause()` it moves only when tokio's time does (auto-advance to the next timer, or
/// `tokio::time::advance`), so tests name the date and control its passing.
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    /// The date the clock read when made.
    start: DateTime<Utc>,
    /// Tokio's instant when the clock was made; the date advances by the time elapsed since.
    origin: tokio::time::Instant,
}

impl TokioClock {
    /// A clock reading `start` now. Make it inside the runtime whose time it follows.
    pub fn starting_at(start: Timestamp) -> Self {
        Self {
            start: DateTime::from_timestamp_millis(start.as_millis())
                .expect("invariant: a Timestamp is within chrono's range"),
            origin: tokio::time::Instant::now(),
        }
    }
}

impl Clock for TokioClock {
    fn now(&self) -> DateTime<Utc> {
        let elapsed = chrono::Duration::from_std(self.origin.elapsed())
            .expect("invariant: a test's clock runs for less than chrono's range");
        self.start + elapsed
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_tokio_clock_advances_only_with_tokio_time() {
        let start = Timestamp::parse("2025-03-10T00:00:30Z").unwrap();
        let clock = TokioClock::starting_at(start);
        assert_eq!(clock.timestamp(), start);
        tokio::time::sleep(Duration::from_secs(90)).await;
        assert_eq!(
            clock.timestamp(),
            Timestamp::parse("2025-03-10T00:02:00Z").unwrap()
        );
    }
}
