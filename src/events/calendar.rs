//! Events as configured, and masking their windows out of training data.

use serde::{Deserialize, Serialize};

use super::EventError;
use crate::domain::{TimeRange, TimeSeries, Timestamp};

/// Where an event's uplift comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum Uplift {
    /// Learned from past occurrences with the same name.
    Learned,
    /// Learned from past occurrences of another event (`like: PAST_NAME`).
    Like(String),
    /// A fixed multiplier of the base forecast, e.g. `2.0` for double load.
    Multiplier(f64),
}

/// A planned event: a named stretch of time and where its uplift comes from.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    name: String,
    range: TimeRange,
    uplift: Uplift,
}

impl Event {
    /// An event over `range`; the name must be non-empty, the range non-empty and within the years
    /// the store accepts for samples (so the events file can write it and read it back), a
    /// multiplier finite and positive and a `like` name non-empty.
    pub fn new(name: &str, range: TimeRange, uplift: Uplift) -> Result<Self, EventError> {
        let invalid = |reason: String| EventError::InvalidEvent {
            name: name.to_owned(),
            reason,
        };
        if name.trim().is_empty() {
            return Err(invalid("name must not be empty".to_owned()));
        }
        for (field, time) in [("start", range.from()), ("end", range.to())] {
            if let Some(reason) = time.outside_accepted_years() {
                return Err(invalid(format!("{field} {time} is {reason}")));
            }
        }
        if range.from() >= range.to() {
            return Err(invalid(format!(
                "ends at {} which is not after its start {}",
                range.to(),
                range.from()
            )));
        }
        match &uplift {
            Uplift::Multiplier(multiplier) if !(multiplier.is_finite() && *multiplier > 0.0) => {
                return Err(invalid(format!(
                    "multiplier {multiplier} must be a positive number"
                )));
            }
            Uplift::Like(past) if past.trim().is_empty() => {
                return Err(invalid("`like` must name a past event".to_owned()));
            }
            _ => {}
        }
        Ok(Self {
            name: name.trim().to_owned(),
            range,
            uplift,
        })
    }

    /// The event's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// When it happens: `[start, end)`.
    pub fn range(&self) -> TimeRange {
        self.range
    }

    /// Where its uplift comes from.
    pub fn uplift(&self) -> &Uplift {
        &self.uplift
    }

    /// Name of the events whose past occurrences teach this one's uplift, if learned.
    pub fn source(&self) -> Option<&str> {
        match &self.uplift {
            Uplift::Learned => Some(&self.name),
            Uplift::Like(past) => Some(past),
            Uplift::Multiplier(_) => None,
        }
    }
}

/// One event as written in an events file: `name`, `start`, `end` (RFC 3339 or epoch) and at most one
/// of `multiplier` or `like`; with neither, the uplift is learned from past events of the same name.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EventSpec {
    /// The event's name.
    pub name: String,
    /// Start, inclusive.
    pub start: String,
    /// End, exclusive.
    pub end: String,
    /// Fixed multiplier of the base forecast.
    #[serde(default)]
    pub multiplier: Option<f64>,
    /// Name of a past event whose uplift this one repeats.
    #[serde(default)]
    pub like: Option<String>,
}

impl From<&Event> for EventSpec {
    fn from(event: &Event) -> Self {
        let (multiplier, like) = match &event.uplift {
            Uplift::Learned => (None, None),
            Uplift::Like(past) => (None, Some(past.clone())),
            Uplift::Multiplier(multiplier) => (Some(*multiplier), None),
        };
        Self {
            name: event.name.clone(),
            start: event.range.from().to_rfc3339(),
            end: event.range.to().to_rfc3339(),
            multiplier,
            like,
        }
    }
}

impl EventSpec {
    /// Validates the spec into an [`Event`].
    pub fn check(&self) -> Result<Event, EventError> {
        let invalid = |reason: String| EventError::InvalidEvent {
            name: self.name.clone(),
            reason,
        };
        let start = Timestamp::parse(&self.start).map_err(|error| invalid(error.to_string()))?;
        let end = Timestamp::parse(&self.end).map_err(|error| invalid(error.to_string()))?;
        let range = TimeRange::new(start, end).map_err(|error| invalid(error.to_string()))?;
        let uplift = match (self.multiplier, &self.like) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "give either `multiplier` or `like`, not both".to_owned(),
                ));
            }
            (Some(multiplier), None) => Uplift::Multiplier(multiplier),
            (None, Some(past)) => Uplift::Like(past.clone()),
            (None, None) => Uplift::Learned,
        };
        Event::new(&self.name, range, uplift)
    }
}

/// The file form: a list of `[[event]]` tables.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct EventsFile {
    #[serde(default)]
    event: Vec<EventSpec>,
}

/// All known events of a workload, past and upcoming, sorted by start.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct EventCalendar {
    events: Vec<Event>,
}

impl EventCalendar {
    /// A calendar of `events`.
    pub fn new(mut events: Vec<Event>) -> Self {
        events.sort_by_key(|event| event.range.from());
        Self { events }
    }

    /// Parses `[[event]]` tables, e.g.
    ///
    /// ```toml
    /// [[event]]
    /// name = "launch"
    /// start = "2024-06-01T09:00:00Z"
    /// end = "2024-06-01T12:00:00Z"
    /// like = "spring-launch"
    /// ```
    pub fn from_toml(text: &str) -> Result<Self, EventError> {
        let file: EventsFile = toml::from_str(text).map_err(|error| EventError::ParseEvents {
            message: error.to_string(),
        })?;
        let events = file
            .event
            .iter()
            .map(EventSpec::check)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self::new(events))
    }

    /// `text` in the `[[event]]` form with every event called `name` left out, and how many were.
    /// The events kept are not checked, so an event the file cannot hold (one written before its
    /// times were checked) can still be removed by name.
    pub fn remove_from_toml(text: &str, name: &str) -> Result<(String, usize), EventError> {
        let mut file: EventsFile =
            toml::from_str(text).map_err(|error| EventError::ParseEvents {
                message: error.to_string(),
            })?;
        let before = file.event.len();
        file.event.retain(|spec| spec.name != name);
        let removed = before - file.event.len();
        let text =
            toml::to_string(&file).expect("invariant: event specs are plain strings and numbers");
        Ok((text, removed))
    }

    /// The calendar in the `[[event]]` TOML form [`EventCalendar::from_toml`] reads.
    pub fn to_toml(&self) -> String {
        let file = EventsFile {
            event: self.events.iter().map(EventSpec::from).collect(),
        };
        toml::to_string(&file).expect("invariant: event specs are plain strings and numbers")
    }

    /// The events, sorted by start.
    pub fn events(&self) -> &[Event] {
        &self.events
    }

    /// `series` with every event window blanked, for training.
    pub fn mask(&self, series: &TimeSeries) -> TimeSeries {
        mask_events(series, &self.events)
    }

    /// Events that are over by `now` (their window ends at or before it).
    pub fn past(&self, now: Timestamp) -> impl Iterator<Item = &Event> + '_ {
        self.events
            .iter()
            .filter(move |event| event.range.to() <= now)
    }

    /// Events not over by `now`.
    pub fn upcoming(&self, now: Timestamp) -> impl Iterator<Item = &Event> + '_ {
        self.events
            .iter()
            .filter(move |event| event.range.to() > now)
    }
}

/// `series` with every bucket that overlaps an event window set to `NaN`, so models train on the
/// ordinary pattern only.
pub fn mask_events(series: &TimeSeries, events: &[Event]) -> TimeSeries {
    mask_windows(series, events.iter().map(Event::range))
}

/// `series` with every bucket that overlaps one of `windows` set to `NaN`.
pub fn mask_windows(
    series: &TimeSeries,
    windows: impl IntoIterator<Item = TimeRange>,
) -> TimeSeries {
    let mut values = series.values().to_vec();
    for window in windows {
        if let Some(buckets) = buckets_overlapping(series, window) {
            values[buckets].fill(f64::NAN);
        }
    }
    TimeSeries::new(series.start(), series.step(), values)
}

/// Indices of the buckets of `series` that overlap `window`, if any.
pub(super) fn buckets_overlapping(
    series: &TimeSeries,
    window: TimeRange,
) -> Option<std::ops::Range<usize>> {
    let step = series.step().as_millis();
    let start = series.start().as_millis();
    // A bucket [t, t + step) overlaps [from, to) when t < to and t + step > from.
    let first = (window.from().as_millis() - start).div_euclid(step).max(0);
    let last = (window.to().as_millis() - start + step - 1).div_euclid(step);
    let first = usize::try_from(first).ok()?;
    let last = usize::try_from(last).ok()?.min(series.len());
    (first < last).then_some(first..last)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Step;

    fn range(from: i64, to: i64) -> TimeRange {
        TimeRange::new(Timestamp::from_millis(from), Timestamp::from_millis(to)).unwrap()
    }

    #[test]
    fn masks_every_overlapping_bucket() {
        let series = TimeSeries::new(
            Timestamp::from_millis(0),
            Step::try_from(10).unwrap(),
            (0..10).map(f64::from).collect(),
        );
        let events = [
            Event::new("a", range(25, 41), Uplift::Learned).unwrap(),
            Event::new("b", range(-50, 5), Uplift::Multiplier(2.0)).unwrap(),
            Event::new("c", range(95, 500), Uplift::Like("a".to_owned())).unwrap(),
        ];
        let masked = mask_events(&series, &events);
        let gaps: Vec<usize> = masked
            .values()
            .iter()
            .enumerate()
            .filter(|(_, value)| value.is_nan())
            .map(|(index, _)| index)
            .collect();
        assert_eq!(gaps, [0, 2, 3, 4, 9]);
        assert_eq!(masked.values()[1], 1.0);
        let outside = [Event::new("d", range(200, 300), Uplift::Learned).unwrap()];
        assert_eq!(mask_events(&series, &outside), series);
    }

    #[test]
    fn parses_events_file() {
        let text = r#"
            [[event]]
            name = "launch"
            start = "2024-06-08T09:00:00Z"
            end = "2024-06-08T12:00:00Z"
            like = "spring-launch"

            [[event]]
            name = "sale"
            start = "2024-06-01T00:00:00Z"
            end = "2024-06-02T00:00:00Z"
            multiplier = 1.5

            [[event]]
            name = "match"
            start = "2024-06-03T18:00:00Z"
            end = "2024-06-03T20:00:00Z"
        "#;
        let calendar = EventCalendar::from_toml(text).unwrap();
        let names: Vec<&str> = calendar.events().iter().map(Event::name).collect();
        assert_eq!(names, ["sale", "match", "launch"]);
        assert_eq!(calendar.events()[0].uplift(), &Uplift::Multiplier(1.5));
        assert_eq!(calendar.events()[1].source(), Some("match"));
        assert_eq!(calendar.events()[2].source(), Some("spring-launch"));
        let now = Timestamp::parse("2024-06-05T00:00:00Z").unwrap();
        assert_eq!(calendar.past(now).count(), 2);
        assert_eq!(calendar.upcoming(now).count(), 1);
    }

    #[test]
    fn shipped_example_is_valid() {
        let calendar = EventCalendar::from_toml(include_str!("../../events.example.toml")).unwrap();
        let sources: Vec<Option<&str>> = calendar.events().iter().map(Event::source).collect();
        assert_eq!(
            sources,
            [Some("spring-launch"), Some("spring-launch"), None]
        );
    }

    #[test]
    fn rejects_inconsistent_events() {
        let both = r#"
            [[event]]
            name = "x"
            start = "2024-06-01T00:00:00Z"
            end = "2024-06-02T00:00:00Z"
            multiplier = 2
            like = "y"
        "#;
        assert!(matches!(
            EventCalendar::from_toml(both),
            Err(EventError::InvalidEvent { .. })
        ));
        let reversed = both
            .replace("multiplier = 2\n", "")
            .replace("2024-06-02", "2024-05-02");
        assert!(matches!(
            EventCalendar::from_toml(&reversed),
            Err(EventError::InvalidEvent { .. })
        ));
        let unknown = both.replace("like = \"y\"", "colour = \"red\"");
        assert!(matches!(
            EventCalendar::from_toml(&unknown),
            Err(EventError::ParseEvents { .. })
        ));
        assert!(Event::new("x", range(0, 10), Uplift::Multiplier(0.0)).is_err());
        assert!(Event::new("x", range(10, 10), Uplift::Learned).is_err());
        assert!(Event::new(" ", range(0, 10), Uplift::Learned).is_err());
    }

    #[test]
    fn an_event_the_file_cannot_hold_is_removed_by_name() {
        let good = EventCalendar::new(vec![
            Event::new("sale", range(0, 10), Uplift::Multiplier(1.5)).unwrap(),
        ]);
        let poisoned = format!(
            "{}\n[[event]]\nname = \"m3\"\nstart = \"4611686018427387904ms\"\nend = \"9223372036854775807ms\"\n",
            good.to_toml()
        );
        assert!(EventCalendar::from_toml(&poisoned).is_err());
        let (kept, removed) = EventCalendar::remove_from_toml(&poisoned, "m3").unwrap();
        assert_eq!(removed, 1);
        assert_eq!(EventCalendar::from_toml(&kept).unwrap(), good);
        let (_, none) = EventCalendar::remove_from_toml(&kept, "m3").unwrap();
        assert_eq!(none, 0);
    }

    #[test]
    fn rejects_times_the_events_file_cannot_hold() {
        let latest = Timestamp::LATEST.as_millis();
        let earliest = Timestamp::EARLIEST.as_millis();
        for (start, end, field) in [
            (1 << 62, i64::MAX, "start"),
            (0, latest + 1, "end"),
            (earliest - 1, 0, "start"),
            (i64::MIN, i64::MIN + 1, "start"),
        ] {
            let error = Event::new("x", range(start, end), Uplift::Learned).unwrap_err();
            let message = error.to_string();
            assert!(
                matches!(error, EventError::InvalidEvent { .. }),
                "{message}"
            );
            assert!(message.contains(field), "{message}");
        }
        // Microseconds given by mistake read as milliseconds in the year 58900.
        let spec = EventSpec {
            name: "x".to_owned(),
            start: "1796540759393000".to_owned(),
            end: "1796540759393001".to_owned(),
            multiplier: None,
            like: None,
        };
        assert!(spec.check().unwrap_err().to_string().contains("start"));
        let widest = Event::new("x", range(earliest, latest), Uplift::Learned).unwrap();
        let calendar = EventCalendar::new(vec![widest]);
        assert_eq!(
            EventCalendar::from_toml(&calendar.to_toml()).unwrap(),
            calendar
        );
    }
}
