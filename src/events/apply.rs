//! Applying upcoming events to a base forecast: each step's point and bounds multiplied by the
//! uplift learned for its event, from a pre-warm before the event's start.

use std::time::Duration;

use super::uplift::Factors;
use super::{Event, EventCalendar, LearnedUplifts, Uplift, UpliftProfile};
use crate::domain::{Forecast, Interval, TimeRange, Timestamp};

/// One event applied to a forecast.
#[derive(Debug, Clone, PartialEq)]
pub struct AppliedEvent {
    /// The event's name.
    pub name: String,
    /// The event's window.
    pub range: TimeRange,
    /// When the uplift starts, pre-warm included.
    pub pre_warm_from: Timestamp,
    /// Largest mean multiplier applied (below 1 for an event that lowers the load).
    pub peak_multiplier: f64,
    /// Past occurrences the profile came from (0 for a fixed multiplier).
    pub occurrences: usize,
}

impl AppliedEvent {
    /// The stretch the forecast was changed over: `[pre_warm_from, end)`, for plan annotations.
    pub fn uplift_range(&self) -> TimeRange {
        TimeRange::new(self.pre_warm_from, self.range.to()).unwrap_or(self.range)
    }
}

/// A forecast with upcoming events applied.
#[derive(Debug, Clone, PartialEq)]
pub struct EventForecast {
    /// The base forecast with uplift applied and intervals widened.
    pub forecast: Forecast,
    /// Events that changed it.
    pub applied: Vec<AppliedEvent>,
    /// Events in the forecast's span that were left out because nothing could be learned for them.
    pub skipped: Vec<String>,
}

impl EventCalendar {
    /// Applies every event that overlaps `base` (pre-warm included) to it.
    ///
    /// Within an event window each step's point is multiplied by the profile's mean ratio, each lower
    /// bound by its lowest and each upper bound by its highest ratio, so intervals widen by the spread
    /// across past occurrences. From `pre_warm` before the start (the workload's warm-up, so capacity
    /// is serving when the event begins even if it starts a little early) the first step's ratio
    /// applies where it raises the load. Overlapping events take the larger uplift. An event whose
    /// load falls (a holiday) lowers the forecast over its window only; steps outside every event
    /// keep the base.
    pub fn apply(
        &self,
        base: &Forecast,
        learned: &LearnedUplifts,
        pre_warm: Duration,
    ) -> EventForecast {
        let step = base.step().as_millis();
        let pre_warm_millis = i64::try_from(pre_warm.as_millis()).unwrap_or(i64::MAX);
        // Per step, the factors of the events over it (`None` where none is).
        let mut factors: Vec<Option<Factors>> = vec![None; base.len()];
        let mut applied = Vec::new();
        let mut skipped = Vec::new();
        for event in self.events() {
            if !reaches(base, event, pre_warm) {
                continue;
            }
            let range = event.range();
            let pre_warm_from = range.from().saturating_add_millis(-pre_warm_millis);
            let constant;
            let profile = match event.uplift() {
                &Uplift::Multiplier(multiplier) => {
                    constant = UpliftProfile::constant(multiplier);
                    &constant
                }
                Uplift::Learned | Uplift::Like(_) => {
                    match event.source().and_then(|source| learned.profile(source)) {
                        Some(profile) => profile,
                        None => {
                            skipped.push(event.name().to_owned());
                            continue;
                        }
                    }
                }
            };
            // The event's first bucket on the forecast's grid, so positions line up with steps.
            let grid_from = base.start().as_millis()
                + (range.from().as_millis() - base.start().as_millis()).div_euclid(step) * step;
            let event_steps = (range.to().as_millis() - grid_from + step - 1).div_euclid(step);
            let mut peak = f64::NEG_INFINITY;
            for (index, slot) in factors.iter_mut().enumerate() {
                let at = base.time_at(index).as_millis();
                let in_event = at < range.to().as_millis() && at + step > range.from().as_millis();
                let in_pre_warm = !in_event
                    && at < range.from().as_millis()
                    && at + step > pre_warm_from.as_millis();
                let here = if in_event {
                    let position = ((at - grid_from) / step) as f64 / event_steps as f64;
                    profile.factors_at(position)
                } else if in_pre_warm {
                    // Pre-warm readies capacity early; a fall waits for the event itself.
                    profile.factors_at(0.0).max(Factors::NONE)
                } else {
                    continue;
                };
                peak = peak.max(here.mean);
                *slot = Some(slot.map_or(here, |other| other.max(here)));
            }
            applied.push(AppliedEvent {
                name: event.name().to_owned(),
                range,
                pre_warm_from,
                peak_multiplier: if peak.is_finite() { peak } else { 1.0 },
                occurrences: profile.occurrences(),
            });
        }
        let factors: Vec<Factors> = factors
            .into_iter()
            .map(|factor| factor.unwrap_or(Factors::NONE))
            .collect();
        let point = base
            .point()
            .iter()
            .zip(&factors)
            .map(|(value, factor)| value * factor.mean)
            .collect();
        let intervals = base
            .intervals()
            .iter()
            .map(|interval| Interval {
                level: interval.level,
                lower: scale(&interval.lower, &factors, |factor| factor.low),
                upper: scale(&interval.upper, &factors, |factor| factor.high),
            })
            .collect();
        EventForecast {
            forecast: Forecast::new(base.start(), base.step(), point, intervals),
            applied,
            skipped,
        }
    }
}

impl EventCalendar {
    /// The events [`EventCalendar::apply`] would apply to `base` and the past events they may
    /// learn from: the calendar to learn uplifts for a forecast, leaving out later events.
    pub fn reaching(&self, base: &Forecast, pre_warm: Duration) -> EventCalendar {
        EventCalendar::new(
            self.events()
                .iter()
                .filter(|event| {
                    event.range().to() <= base.start() || reaches(base, event, pre_warm)
                })
                .cloned()
                .collect(),
        )
    }
}

/// True when `event`, its pre-warm included, overlaps the span of `base`.
fn reaches(base: &Forecast, event: &Event, pre_warm: Duration) -> bool {
    let pre_warm_millis = i64::try_from(pre_warm.as_millis()).unwrap_or(i64::MAX);
    let range = event.range();
    let pre_warm_from = range.from().saturating_add_millis(-pre_warm_millis);
    !base.is_empty() && range.to() > base.start() && pre_warm_from < base.time_at(base.len())
}

fn scale(values: &[f64], factors: &[Factors], pick: impl Fn(&Factors) -> f64) -> Vec<f64> {
    values
        .iter()
        .zip(factors)
        .map(|(value, factor)| value * pick(factor))
        .collect()
}
