//! Test helpers shared by the events and simulate tests.

use std::convert::Infallible;

use crate::domain::{Forecast, Horizon, Interval, Level, TimeSeries};

/// A seasonal-mean base model for tests: each step is the mean of the same phase over up to four
/// past seasons (gaps skipped), with a 95% band of the phase's spread.
pub(crate) fn seasonal_mean(
    season: usize,
) -> impl Fn(&TimeSeries, Horizon) -> Result<Forecast, Infallible> {
    move |history: &TimeSeries, horizon: Horizon| {
        let values = history.values();
        let mut point = Vec::with_capacity(horizon.steps());
        let mut lower = Vec::with_capacity(horizon.steps());
        let mut upper = Vec::with_capacity(horizon.steps());
        for ahead in 0..horizon.steps() {
            let target = values.len() + ahead;
            let same_phase: Vec<f64> = (1..=4)
                .filter_map(|seasons| target.checked_sub(seasons * season))
                .filter_map(|index| values.get(index).copied())
                .filter(|value| value.is_finite())
                .collect();
            let mean = if same_phase.is_empty() {
                0.0
            } else {
                same_phase.iter().sum::<f64>() / same_phase.len() as f64
            };
            let spread = same_phase
                .iter()
                .map(|value| (value - mean).abs())
                .fold(0.0, f64::max);
            point.push(mean);
            lower.push(mean - spread);
            upper.push(mean + spread);
        }
        Ok(Forecast::new(
            history.end(),
            history.step(),
            point,
            vec![Interval {
                level: Level::from_percent(95.0).expect("95 is a valid level"),
                lower,
                upper,
            }],
        ))
    }
}
