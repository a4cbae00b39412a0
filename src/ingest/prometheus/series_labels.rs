//! How a prescale series is written to a Prometheus-compatible TSDB, and read back.
//!
//! A prescale series is a name (ASCII letters, digits, `_ : . -`) and labels (names of letters,
//! digits and `_`; any value but the empty one, which is no label in prescale as in Prometheus: see
//! [`SeriesId`]). Prometheus allows `[a-zA-Z_:][a-zA-Z0-9_:]*` for metric names and reserves label
//! names starting with `__`. So:
//!
//! - When the series fits Prometheus' rules as it is, it is written as it is: metric name = its
//!   name, labels = its labels. `load{zone="eu"}` stays `load{zone="eu"}`.
//! - Otherwise (a `.` or `-` in the name, a label name starting with `__`, or a label called
//!   [`SERIES_LABEL`]), the name's `.` and `-` become `_`, the labels Prometheus cannot hold are
//!   left out, and [`SERIES_LABEL`] holds the series' canonical text
//!   (`api.latency{__tier="a",zone="eu"}`), so the mapping stays one-to-one and reversible.
//!
//! [`series_of`] reads a label set back, as the remote-write receiver does for one written by
//! another system. Design: docs/decisions.md, "Fleet mode: pushed samples and events".

use std::collections::BTreeMap;

use crate::domain::{DomainError, SeriesId};

/// The label holding a series' canonical text when its name or labels had to change.
pub const SERIES_LABEL: &str = "prescale_series";

/// The Prometheus label set (`__name__` included) that `series` is written as, sorted by name as
/// remote-write requires.
pub fn prometheus_labels(series: &SeriesId) -> Vec<(String, String)> {
    let name_fits = series
        .name()
        .bytes()
        .all(|byte| byte != b'.' && byte != b'-');
    let label_fits =
        |(name, _): (&String, &String)| !name.starts_with("__") && name != SERIES_LABEL;
    let mut labels = vec![(
        "__name__".to_owned(),
        series.name().replace(['.', '-'], "_"),
    )];
    labels.extend(
        series
            .labels()
            .iter()
            .filter(|label| label_fits(*label))
            .map(|(name, value)| (name.clone(), value.clone())),
    );
    let identity = name_fits && labels.len() == series.labels().len() + 1;
    if !identity {
        labels.push((SERIES_LABEL.to_owned(), series.to_string()));
    }
    labels.sort();
    labels
}

/// The prescale series a Prometheus label set stands for: the one named by [`SERIES_LABEL`] when
/// present, else `__name__` and the other labels (those with empty values are absent, see
/// [`SeriesId::with_labels`]).
pub fn series_of(labels: &BTreeMap<String, String>) -> Result<SeriesId, DomainError> {
    if let Some(text) = labels.get(SERIES_LABEL) {
        return text.parse();
    }
    let name = labels.get("__name__").map(String::as_str).unwrap_or("");
    SeriesId::with_labels(
        name,
        labels
            .iter()
            .filter(|(key, _)| *key != "__name__")
            .map(|(key, value)| (key.clone(), value.clone())),
    )
}

/// The PromQL selector of exactly these labels' series, plus any series with more labels (the
/// caller keeps the exact one): `{__name__="load",zone="eu"}`.
pub fn selector(labels: &[(String, String)]) -> String {
    let matchers: Vec<String> = labels
        .iter()
        .map(|(name, value)| format!("{name}=\"{}\"", escaped(value)))
        .collect();
    format!("{{{}}}", matchers.join(","))
}

/// A PromQL double-quoted string's contents.
fn escaped(value: &str) -> String {
    let mut text = String::with_capacity(value.len());
    for character in value.chars() {
        match character {
            '\\' => text.push_str("\\\\"),
            '"' => text.push_str("\\\""),
            '\n' => text.push_str("\\n"),
            other => text.push(other),
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(text: &str) -> Vec<(String, String)> {
        let series: SeriesId = text.parse().unwrap();
        let labels = prometheus_labels(&series);
        let map: BTreeMap<String, String> = labels.iter().cloned().collect();
        assert_eq!(map.len(), labels.len(), "{labels:?}");
        assert_eq!(series_of(&map).unwrap(), series, "{labels:?}");
        let mut sorted = labels.clone();
        sorted.sort();
        assert_eq!(sorted, labels);
        labels
    }

    fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
        items
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect()
    }

    #[test]
    fn a_series_prometheus_can_hold_is_written_as_it_is() {
        assert_eq!(round_trip("load"), pairs(&[("__name__", "load")]));
        assert_eq!(
            round_trip("http:requests{Zone=\"eu\",pod=\"a\"}"),
            pairs(&[("Zone", "eu"), ("__name__", "http:requests"), ("pod", "a")])
        );
    }

    #[test]
    fn other_series_are_sanitised_and_carry_their_canonical_text() {
        assert_eq!(
            round_trip("api.latency-p99{zone=\"eu\"}"),
            pairs(&[
                ("__name__", "api_latency_p99"),
                ("prescale_series", "api.latency-p99{zone=\"eu\"}"),
                ("zone", "eu"),
            ])
        );
        assert_eq!(
            round_trip("load{__tier=\"a\",empty=\"\"}"),
            pairs(&[
                ("__name__", "load"),
                ("prescale_series", "load{__tier=\"a\"}")
            ])
        );
        round_trip("load{prescale_series=\"x\"}");
        round_trip("load{zone=\"quote \\\" and \\\\ slash\"}");
    }

    #[test]
    fn two_series_that_sanitise_alike_stay_apart() {
        let dotted = prometheus_labels(&"a.b".parse().unwrap());
        let plain = prometheus_labels(&"a_b".parse().unwrap());
        assert_ne!(dotted, plain);
    }

    #[test]
    fn the_selector_escapes_values() {
        assert_eq!(
            selector(&pairs(&[("__name__", "load"), ("zone", "a\"b\\c")])),
            "{__name__=\"load\",zone=\"a\\\"b\\\\c\"}"
        );
    }
}
