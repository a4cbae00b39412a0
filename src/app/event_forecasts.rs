//! Forecasts with planned events applied: the base forecast of the history with every event window
//! masked, then each upcoming event's uplift, learned from its past occurrences (or given as a
//! multiplier), applied over its window. Plans, the `Forecast` RPC and `prescale forecast` all go
//! through here, so a forecast shows the launch or the final a plan provisions for.

use std::time::Duration;

use crate::domain::{Forecast, Horizon, TimeSeries};
use crate::events::{EventCalendar, EventForecast};

use super::AppError;

/// Forecasts `horizon` steps after `history` with `forecast_with`, the stored `calendar`'s events
/// applied from `pre_warm` before each one starts. Learning an event's uplift forecasts once
/// from before each of its past occurrences, so only events that reach into the forecast are
/// learned; with none there, this is one call of `forecast_with` on the masked history.
pub fn forecast_with_events<F, E>(
    history: &TimeSeries,
    horizon: Horizon,
    calendar: &EventCalendar,
    forecast_with: &F,
    pre_warm: Duration,
) -> Result<EventForecast, AppError>
where
    F: Fn(&TimeSeries, Horizon) -> Result<Forecast, E>,
    E: std::error::Error + Send + Sync + 'static,
    AppError: From<E>,
{
    let base = forecast_with(&calendar.mask(history), horizon)?;
    let reaching = calendar.reaching(&base, pre_warm);
    let learned = reaching.learn(history, forecast_with)?;
    Ok(reaching.apply(&base, &learned, pre_warm))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Interval, Level, Step, TimeRange, Timestamp};
    use crate::events::{Event, Uplift};
    use crate::forecast::ForecastError;

    const HOUR: i64 = 3_600_000;

    /// The mean of the same hour over the observed days before: a base forecaster that cannot see
    /// events by itself, so any uplift in its output is the events'.
    fn daily_mean(history: &TimeSeries, horizon: Horizon) -> Result<Forecast, ForecastError> {
        let values = history.values();
        let point: Vec<f64> = (0..horizon.steps())
            .map(|ahead| {
                let phase = (values.len() + ahead) % 24;
                let same_hour: Vec<f64> = values
                    .iter()
                    .skip(phase)
                    .step_by(24)
                    .copied()
                    .filter(|value| value.is_finite())
                    .collect();
                same_hour.iter().sum::<f64>() / same_hour.len().max(1) as f64
            })
            .collect();
        let band = Interval {
            level: Level::try_from(0.95).expect("0.95 is a valid level"),
            lower: point.iter().map(|value| value - 1.0).collect(),
            upper: point.iter().map(|value| value + 1.0).collect(),
        };
        Ok(Forecast::new(
            history.end(),
            history.step(),
            point,
            vec![band],
        ))
    }

    fn event(name: &str, from_hour: i64, hours: i64) -> Event {
        let range = TimeRange::new(
            Timestamp::from_millis(from_hour * HOUR),
            Timestamp::from_millis((from_hour + hours) * HOUR),
        )
        .expect("a positive length");
        Event::new(name, range, Uplift::Learned).expect("a valid event")
    }

    #[test]
    fn an_upcoming_event_lifts_the_forecast_by_its_past_uplift() {
        // Ten days of hourly load at 100, doubled during a two-hour "final" on days 3 and 6; the
        // next final is tomorrow at 18:00.
        let finals = [3 * 24 + 18, 6 * 24 + 18];
        let values: Vec<f64> = (0..240)
            .map(|hour| {
                let in_final = finals.iter().any(|from| (*from..*from + 2).contains(&hour));
                if in_final { 200.0 } else { 100.0 }
            })
            .collect();
        let hourly = Step::try_from(HOUR).expect("one hour is a positive step");
        let history = TimeSeries::new(Timestamp::from_millis(0), hourly, values);
        let mut events: Vec<Event> = finals.iter().map(|from| event("final", *from, 2)).collect();
        events.push(event("final", 10 * 24 + 18, 2));
        events.push(event("launch", 30 * 24, 2));
        let calendar = EventCalendar::new(events);
        let horizon = Horizon::try_from(24).expect("24 steps");

        let with_events =
            forecast_with_events(&history, horizon, &calendar, &daily_mean, Duration::ZERO)
                .expect("the forecaster cannot fail");
        let point = with_events.forecast.point();
        assert!((point[18] - 200.0).abs() < 1e-9, "{point:?}");
        assert!((point[19] - 200.0).abs() < 1e-9, "{point:?}");
        assert!((point[17] - 100.0).abs() < 1e-9, "{point:?}");
        assert!((point[20] - 100.0).abs() < 1e-9, "{point:?}");
        let names: Vec<&str> = with_events
            .applied
            .iter()
            .map(|applied| applied.name.as_str())
            .collect();
        assert_eq!(names, ["final"], "the launch is beyond the horizon");
        assert_eq!(with_events.applied[0].occurrences, 2);

        // Without the calendar the same forecaster sees no final.
        let plain = forecast_with_events(
            &history,
            horizon,
            &EventCalendar::default(),
            &daily_mean,
            Duration::ZERO,
        )
        .expect("the forecaster cannot fail");
        assert!(plain.applied.is_empty());
        assert!(plain.forecast.point()[18] < 150.0);
    }
}
