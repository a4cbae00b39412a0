//! Learning an event's uplift from its past occurrences (applying it is in `apply.rs`).

use std::collections::BTreeMap;

use super::calendar::buckets_overlapping;
use super::{BaseForecaster, Event, EventCalendar, EventError, mask_events};
use crate::domain::{Horizon, TimeSeries};

/// An event's uplift per step of its window: the mean, lowest and highest ratio of actual load to the
/// base forecast across past occurrences.
///
/// Occurrences of different lengths are lined up by relative position in the window, so a profile
/// learned on three-hour launches stretches over a four-hour one.
#[derive(Debug, Clone, PartialEq)]
pub struct UpliftProfile {
    source: String,
    occurrences: usize,
    mean: Vec<f64>,
    low: Vec<f64>,
    high: Vec<f64>,
}

impl UpliftProfile {
    /// A flat profile: every step multiplied by `multiplier`, no spread.
    pub fn constant(multiplier: f64) -> Self {
        Self {
            source: "multiplier".to_owned(),
            occurrences: 0,
            mean: vec![multiplier],
            low: vec![multiplier],
            high: vec![multiplier],
        }
    }

    /// Name of the events it was learned from (`multiplier` for a fixed one).
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Number of past occurrences it was learned from.
    pub fn occurrences(&self) -> usize {
        self.occurrences
    }

    /// Mean ratio per step.
    pub fn mean(&self) -> &[f64] {
        &self.mean
    }

    /// Lowest ratio per step across occurrences.
    pub fn low(&self) -> &[f64] {
        &self.low
    }

    /// Highest ratio per step across occurrences.
    pub fn high(&self) -> &[f64] {
        &self.high
    }

    /// `(mean, low, high)` at `position` in `[0, 1)` of the event window.
    pub(super) fn factors_at(&self, position: f64) -> Factors {
        let last = self.mean.len() - 1;
        let index = ((position * self.mean.len() as f64) as usize).min(last);
        Factors {
            mean: self.mean[index],
            low: self.low[index],
            high: self.high[index],
        }
    }
}

/// The multipliers for one step: of the point, the lower bounds and the upper bounds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Factors {
    /// Multiplies the point forecast.
    pub(super) mean: f64,
    /// Multiplies every lower bound.
    pub(super) low: f64,
    /// Multiplies every upper bound.
    pub(super) high: f64,
}

impl Factors {
    /// No change.
    pub(super) const NONE: Self = Self {
        mean: 1.0,
        low: 1.0,
        high: 1.0,
    };

    /// Where events overlap, the larger uplift wins rather than compounding.
    pub(super) fn max(self, other: Self) -> Self {
        Self {
            mean: self.mean.max(other.mean),
            low: self.low.max(other.low),
            high: self.high.max(other.high),
        }
    }
}

/// Learns the uplift of the events called `name` that lie in `history`.
///
/// For each past occurrence (a window inside `history` with at least one bucket before it), the base
/// forecaster sees the history before the occurrence with every event in `events` masked, forecasts
/// the window, and the ratio actual / forecast is taken per step. Steps with no observation or a
/// non-positive base are skipped and filled from the nearest step that has a ratio. This is the
/// multiplicative event effect of Prophet's holiday regressors (Taylor & Letham, "Forecasting at
/// scale", 2018), estimated directly as actual over the counterfactual forecast, as promotion-lift
/// analyses in retail do, instead of being fitted jointly with the seasonal model.
pub fn learn_uplift<F: BaseForecaster>(
    history: &TimeSeries,
    events: &[Event],
    name: &str,
    forecaster: &F,
) -> Result<UpliftProfile, EventError> {
    let masked = mask_events(history, events);
    let mut per_occurrence: Vec<Vec<f64>> = Vec::new();
    for event in events.iter().filter(|event| {
        event.name() == name
            && event.range().to() <= history.end()
            && event.range().from() > history.start()
    }) {
        let Some(buckets) = buckets_overlapping(history, event.range()) else {
            continue;
        };
        if buckets.start == 0 {
            continue;
        }
        let at = event.range().from();
        let before = TimeSeries::new(
            history.start(),
            history.step(),
            masked.values()[..buckets.start].to_vec(),
        );
        let expected = buckets.len();
        let horizon = Horizon::try_from(expected).map_err(|error| EventError::InvalidEvent {
            name: name.to_owned(),
            reason: error.to_string(),
        })?;
        let base =
            forecaster
                .forecast(&before, horizon)
                .map_err(|error| EventError::Forecaster {
                    name: name.to_owned(),
                    at,
                    source: Box::new(error),
                })?;
        if base.start() != before.end() || base.step() != history.step() || base.len() < expected {
            return Err(EventError::ForecastShape {
                name: name.to_owned(),
                at,
                start: base.start(),
                expected,
                got: base.len(),
            });
        }
        let actual = &history.values()[buckets];
        let typical_base = base.point()[..expected]
            .iter()
            .map(|value| value.abs())
            .sum::<f64>()
            / expected as f64;
        let ratios = actual
            .iter()
            .zip(base.point())
            .map(|(&actual, &base)| {
                // A base near zero turns noise into huge ratios; such steps teach nothing.
                if actual.is_finite() && base > 1e-6 * typical_base && base > 0.0 {
                    actual / base
                } else {
                    f64::NAN
                }
            })
            .collect();
        per_occurrence.push(ratios);
    }
    if per_occurrence.is_empty() {
        return Err(EventError::NoPastOccurrence {
            name: name.to_owned(),
        });
    }
    let length = per_occurrence.iter().map(Vec::len).max().unwrap_or(1);
    let mut mean = Vec::with_capacity(length);
    let mut low = Vec::with_capacity(length);
    let mut high = Vec::with_capacity(length);
    for position in 0..length {
        let ratios: Vec<f64> = per_occurrence
            .iter()
            .map(|ratios| ratios[position * ratios.len() / length])
            .filter(|ratio| ratio.is_finite())
            .collect();
        if ratios.is_empty() {
            mean.push(f64::NAN);
            low.push(f64::NAN);
            high.push(f64::NAN);
        } else {
            mean.push(ratios.iter().sum::<f64>() / ratios.len() as f64);
            low.push(ratios.iter().copied().fold(f64::INFINITY, f64::min));
            high.push(ratios.iter().copied().fold(f64::NEG_INFINITY, f64::max));
        }
    }
    if mean.iter().all(|value| value.is_nan()) {
        return Err(EventError::NoUsableStep {
            name: name.to_owned(),
        });
    }
    fill_from_nearest(&mut mean);
    fill_from_nearest(&mut low);
    fill_from_nearest(&mut high);
    Ok(UpliftProfile {
        source: name.to_owned(),
        occurrences: per_occurrence.len(),
        mean,
        low,
        high,
    })
}

/// Replaces each `NaN` by the nearest finite value (earlier one on ties); needs at least one.
fn fill_from_nearest(values: &mut [f64]) {
    let known: Vec<usize> = (0..values.len())
        .filter(|&index| values[index].is_finite())
        .collect();
    for index in 0..values.len() {
        if values[index].is_finite() {
            continue;
        }
        let nearest = known
            .iter()
            .min_by_key(|&&candidate| candidate.abs_diff(index))
            .copied();
        if let Some(nearest) = nearest {
            values[index] = values[nearest];
        }
    }
}

/// Uplift profiles learned for the upcoming events of a calendar.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LearnedUplifts {
    profiles: BTreeMap<String, UpliftProfile>,
    unlearned: Vec<String>,
}

impl LearnedUplifts {
    /// The profile learned from events called `source`.
    pub fn profile(&self, source: &str) -> Option<&UpliftProfile> {
        self.profiles.get(source)
    }

    /// Every learned profile, by source name.
    pub fn profiles(&self) -> impl Iterator<Item = &UpliftProfile> + '_ {
        self.profiles.values()
    }

    /// Source names that upcoming events refer to but that have no past occurrence in the history.
    pub fn unlearned(&self) -> &[String] {
        &self.unlearned
    }
}

impl EventCalendar {
    /// Learns a profile for every source name an event not over by `history.end()` learns from.
    ///
    /// Names without any past occurrence in `history` are listed in
    /// [`LearnedUplifts::unlearned`] rather than failing, so one new event does not stop planning.
    pub fn learn<F: BaseForecaster>(
        &self,
        history: &TimeSeries,
        forecaster: &F,
    ) -> Result<LearnedUplifts, EventError> {
        let mut learned = LearnedUplifts::default();
        let now = history.end();
        for event in self.upcoming(now) {
            let Some(source) = event.source() else {
                continue;
            };
            if learned.profiles.contains_key(source)
                || learned.unlearned.iter().any(|name| name == source)
            {
                continue;
            }
            match learn_uplift(history, self.events(), source, forecaster) {
                Ok(profile) => {
                    learned.profiles.insert(source.to_owned(), profile);
                }
                Err(EventError::NoPastOccurrence { name }) => learned.unlearned.push(name),
                Err(error) => return Err(error),
            }
        }
        Ok(learned)
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::time::Duration;

    use super::*;
    use crate::domain::{Forecast, Step, TimeRange, Timestamp};
    use crate::events::Uplift;
    use crate::events::test_support::seasonal_mean;

    const HOUR: i64 = 3600 * 1000;

    fn hours(from: i64, to: i64) -> TimeRange {
        TimeRange::new(
            Timestamp::from_millis(from * HOUR),
            Timestamp::from_millis(to * HOUR),
        )
        .unwrap()
    }

    /// A base model that repeats the last observed value.
    fn last_value(history: &TimeSeries, horizon: Horizon) -> Result<Forecast, Infallible> {
        let last = history
            .values()
            .iter()
            .rev()
            .copied()
            .find(|value| value.is_finite())
            .unwrap_or(0.0);
        Ok(Forecast::new(
            history.end(),
            history.step(),
            vec![last; horizon.steps()],
            Vec::new(),
        ))
    }

    #[test]
    fn a_holiday_that_halves_the_load_halves_the_forecast_over_its_window() {
        // A flat hourly load of 100 that halves for a four-hour "holiday", twice; the third
        // holiday is 5 hours after the end of the history.
        let mut values = vec![100.0; 240];
        for from in [100, 200] {
            values[from..from + 4].fill(50.0);
        }
        let history = TimeSeries::new(
            Timestamp::from_millis(0),
            Step::try_from(HOUR).unwrap(),
            values,
        );
        let calendar = EventCalendar::new(
            [100, 200, 245]
                .into_iter()
                .map(|from| Event::new("holiday", hours(from, from + 4), Uplift::Learned).unwrap())
                .collect(),
        );
        let learned = calendar.learn(&history, &last_value).unwrap();
        let profile = learned.profile("holiday").unwrap();
        assert!(
            profile
                .mean()
                .iter()
                .all(|ratio| (ratio - 0.5).abs() < 1e-9)
        );
        // Lowered over the holiday only: an uplift below 1 is applied as it is, not as none.
        let base = last_value(&history, Horizon::try_from(12).unwrap()).unwrap();
        let applied = calendar.apply(&base, &learned, Duration::ZERO);
        let expected: Vec<f64> = (240..252)
            .map(|hour| {
                if (245..249).contains(&hour) {
                    50.0
                } else {
                    100.0
                }
            })
            .collect();
        assert_eq!(applied.forecast.point(), expected);
        assert_eq!(applied.applied[0].peak_multiplier, 0.5);
        // A pre-warm readies capacity ahead of an uplift; a fall starts with the holiday.
        let pre_warmed = calendar.apply(&base, &learned, Duration::from_secs(2 * 3600));
        assert_eq!(pre_warmed.forecast.point(), expected);
    }

    /// Ten days of a flat hourly load of 100, with "promo" at 2x then 3x on days 5 and 8 for two hours.
    fn promo_history() -> (TimeSeries, Vec<Event>) {
        let mut values = vec![100.0; 240];
        for (day, uplift) in [(5, 2.0), (8, 3.0)] {
            values[day * 24 + 12] = 100.0 * uplift;
            values[day * 24 + 13] = 100.0 * uplift * 1.5;
        }
        let events = vec![
            Event::new("promo", hours(5 * 24 + 12, 5 * 24 + 14), Uplift::Learned).unwrap(),
            Event::new("promo", hours(8 * 24 + 12, 8 * 24 + 14), Uplift::Learned).unwrap(),
            Event::new("promo", hours(11 * 24 + 12, 11 * 24 + 16), Uplift::Learned).unwrap(),
            Event::new(
                "relaunch",
                hours(11 * 24 + 20, 11 * 24 + 21),
                Uplift::Like("promo".to_owned()),
            )
            .unwrap(),
            Event::new(
                "fixed",
                hours(10 * 24, 10 * 24 + 1),
                Uplift::Multiplier(1.5),
            )
            .unwrap(),
            Event::new(
                "brand-new",
                hours(10 * 24 + 5, 10 * 24 + 6),
                Uplift::Learned,
            )
            .unwrap(),
        ];
        let series = TimeSeries::new(
            Timestamp::from_millis(0),
            Step::try_from(HOUR).unwrap(),
            values,
        );
        (series, events)
    }

    #[test]
    fn learns_ratio_and_spread_per_step() {
        let (history, events) = promo_history();
        let profile = learn_uplift(&history, &events, "promo", &seasonal_mean(24)).unwrap();
        assert_eq!(profile.occurrences(), 2);
        // The second occurrence's base has the first masked out, so both see a base of 100.
        assert_eq!(profile.mean(), &[2.5, 3.75]);
        assert_eq!(profile.low(), &[2.0, 3.0]);
        assert_eq!(profile.high(), &[3.0, 4.5]);
        assert!(matches!(
            learn_uplift(&history, &events, "relaunch", &seasonal_mean(24)),
            Err(EventError::NoPastOccurrence { .. })
        ));
    }

    #[test]
    fn applies_learned_and_fixed_uplift_with_pre_warm() {
        let (history, events) = promo_history();
        let calendar = EventCalendar::new(events);
        let learned = calendar.learn(&history, &seasonal_mean(24)).unwrap();
        assert_eq!(learned.unlearned(), ["brand-new"]);
        let base =
            seasonal_mean(24)(&calendar.mask(&history), Horizon::try_from(48).unwrap()).unwrap();
        let applied = calendar.apply(&base, &learned, Duration::from_secs(1800));
        let forecast = &applied.forecast;
        let names: Vec<&str> = applied
            .applied
            .iter()
            .map(|event| event.name.as_str())
            .collect();
        assert_eq!(names, ["fixed", "promo", "relaunch"]);
        assert_eq!(applied.skipped, ["brand-new"]);
        // "fixed" at hour 0 of day 10; the 30-minute pre-warm falls before the forecast starts.
        assert_eq!(forecast.point()[0], 150.0);
        // "promo" on day 11 runs 12:00-16:00: four steps over a two-step profile, pre-warmed at 11:00.
        let day11 = 24;
        assert_eq!(forecast.point()[day11 + 10], 100.0);
        assert_eq!(forecast.point()[day11 + 11], 250.0);
        let promo: Vec<f64> = (12..16)
            .map(|hour| forecast.point()[day11 + hour])
            .collect();
        assert_eq!(promo, [250.0, 250.0, 375.0, 375.0]);
        let band = &forecast.intervals()[0];
        assert_eq!(band.lower[day11 + 12], 200.0);
        assert_eq!(band.upper[day11 + 14], 450.0);
        // "relaunch" learns from "promo" and lasts a single step: the profile's start applies.
        assert_eq!(forecast.point()[day11 + 20], 250.0);
        assert_eq!(forecast.point()[day11 + 22], 100.0);
        let range = applied.applied[1].uplift_range();
        assert_eq!(range.from().as_millis(), (11 * 24 + 11) * HOUR + HOUR / 2);
    }

    #[test]
    fn forecaster_errors_name_the_occurrence() {
        let (history, events) = promo_history();
        let failing = |_: &TimeSeries, _: Horizon| -> Result<Forecast, std::fmt::Error> {
            Err(std::fmt::Error)
        };
        let error = learn_uplift(&history, &events, "promo", &failing).unwrap_err();
        assert!(
            matches!(&error, EventError::Forecaster { name, at, .. } if name == "promo" && at.as_millis() == (5 * 24 + 12) * HOUR),
            "{error}"
        );
        let misaligned = |history: &TimeSeries, horizon: Horizon| {
            seasonal_mean(24)(history, horizon).map(|forecast| {
                Forecast::new(
                    forecast.start().saturating_add_millis(HOUR),
                    forecast.step(),
                    forecast.point().to_vec(),
                    Vec::new(),
                )
            })
        };
        assert!(matches!(
            learn_uplift(&history, &events, "promo", &misaligned),
            Err(EventError::ForecastShape { .. })
        ));
    }

    #[test]
    fn fills_gaps_from_nearest_ratio() {
        let mut values = [f64::NAN, 2.0, f64::NAN, f64::NAN, 5.0, f64::NAN];
        fill_from_nearest(&mut values);
        assert_eq!(values, [2.0, 2.0, 2.0, 5.0, 5.0, 5.0]);
    }
}
