//! Series identity: a metric name plus optional labels, written like a Prometheus selector.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use super::DomainError;

/// Identifies one series: a name such as `http_requests` plus labels such as `{region="eu"}`.
///
/// Labels are kept sorted, so two ids with the same labels in another order are equal, and the
/// canonical text form (`Display`) is stable enough to key files and logs. A label with an empty
/// value is no label, as in Prometheus: `x{a=""}` is `x`, however it is built (the API, a selector's
/// text, remote write), so one series cannot be stored under two ids.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SeriesId {
    name: String,
    labels: BTreeMap<String, String>,
}

/// Checks a series name: 1 to 200 bytes of ASCII letters, digits and `_ : . -`, not starting with
/// a digit (Prometheus' metric names), so it fits a file, a log line and a `/metrics` label as it
/// is. Returns why it is refused.
fn check_name(text: &str) -> Result<(), &'static str> {
    no_leading_digit(text)?;
    check_identifier(text, b":.-")
}

/// Prometheus' metric and label names do not start with a digit.
fn no_leading_digit(text: &str) -> Result<(), &'static str> {
    if text
        .bytes()
        .next()
        .is_some_and(|first| first.is_ascii_digit())
    {
        return Err("must not start with a digit");
    }
    Ok(())
}

/// Checks a workload name: as a series name, but it may start with a digit, as Kubernetes object
/// names may (`2fa-api`).
pub fn check_workload_name(text: &str) -> Result<(), &'static str> {
    check_identifier(text, b":.-")
}

/// 1 to 200 bytes of ASCII letters, digits, `_` and `extra_allowed`.
fn check_identifier(text: &str, extra_allowed: &[u8]) -> Result<(), &'static str> {
    if text.is_empty() {
        return Err("must not be empty");
    }
    if text.len() > 200 {
        return Err("must be at most 200 bytes");
    }
    let valid = text
        .bytes()
        .all(|byte| byte.is_ascii_alphanumeric() || byte == b'_' || extra_allowed.contains(&byte));
    if !valid {
        return Err(if extra_allowed.is_empty() {
            "may hold only ASCII letters, digits and _"
        } else {
            "may hold only ASCII letters, digits and the characters _ : . -"
        });
    }
    Ok(())
}

impl SeriesId {
    /// A series without labels.
    pub fn new(name: &str) -> Result<Self, DomainError> {
        Self::with_labels(name, std::iter::empty::<(String, String)>())
    }

    /// A series with the given labels; a repeated label name keeps its last value, and a label
    /// with an empty value is left out (whatever its name: it is absent).
    pub fn with_labels<K, V>(
        name: &str,
        labels: impl IntoIterator<Item = (K, V)>,
    ) -> Result<Self, DomainError>
    where
        K: Into<String>,
        V: Into<String>,
    {
        check_name(name).map_err(|reason| DomainError::InvalidSeriesName {
            name: name.to_owned(),
            reason,
        })?;
        let mut checked = BTreeMap::new();
        for (key, value) in labels {
            let value = value.into();
            if value.is_empty() {
                continue;
            }
            let key = key.into();
            no_leading_digit(&key)
                .and_then(|()| check_identifier(&key, b""))
                .map_err(|reason| DomainError::InvalidLabelName {
                    name: key.clone(),
                    reason,
                })?;
            checked.insert(key, value);
        }
        Ok(Self {
            name: name.to_owned(),
            labels: checked,
        })
    }

    /// The metric name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The labels, sorted by name.
    pub fn labels(&self) -> &BTreeMap<String, String> {
        &self.labels
    }

    /// The canonical form for an error message: cut after [`super::ECHO_BYTES`] with the full
    /// length noted.
    pub fn abbreviated(&self) -> String {
        let text = self.to_string();
        super::abbreviated(&text, text.len())
    }

    /// True when every label in `selector` has the same value here; as in PromQL, an empty value
    /// selects a series without that label.
    pub fn matches_labels(&self, selector: &BTreeMap<String, String>) -> bool {
        selector
            .iter()
            .all(|(key, value)| self.labels.get(key).map_or("", String::as_str) == value)
    }
}

impl fmt::Display for SeriesId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        if self.labels.is_empty() {
            return Ok(());
        }
        f.write_str("{")?;
        for (index, (key, value)) in self.labels.iter().enumerate() {
            if index > 0 {
                f.write_str(",")?;
            }
            write!(f, "{key}=\"")?;
            for character in value.chars() {
                match character {
                    '"' => f.write_str("\\\"")?,
                    '\\' => f.write_str("\\\\")?,
                    '\n' => f.write_str("\\n")?,
                    other => write!(f, "{other}")?,
                }
            }
            f.write_str("\"")?;
        }
        f.write_str("}")
    }
}

impl FromStr for SeriesId {
    type Err = DomainError;

    /// Parses the canonical form `name` or `name{key="value",...}`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = |reason: &str| DomainError::InvalidSelector {
            text: text.to_owned(),
            reason: reason.to_owned(),
        };
        let trimmed = text.trim();
        let Some(open) = trimmed.find('{') else {
            return Self::new(trimmed);
        };
        let name = &trimmed[..open];
        let body = trimmed[open + 1..]
            .strip_suffix('}')
            .ok_or_else(|| invalid("missing closing '}'"))?;
        let mut labels = Vec::new();
        let mut chars = body.chars().peekable();
        loop {
            while chars.peek().is_some_and(|c| c.is_whitespace() || *c == ',') {
                chars.next();
            }
            if chars.peek().is_none() {
                break;
            }
            let key: String = chars
                .by_ref()
                .take_while(|c| *c != '=')
                .collect::<String>()
                .trim()
                .to_owned();
            if chars.next() != Some('"') {
                return Err(invalid("label values must be double-quoted"));
            }
            let mut value = String::new();
            loop {
                match chars.next() {
                    None => return Err(invalid("unterminated label value")),
                    Some('"') => break,
                    Some('\\') => match chars.next() {
                        Some('n') => value.push('\n'),
                        Some(escaped) => value.push(escaped),
                        None => return Err(invalid("dangling escape")),
                    },
                    Some(other) => value.push(other),
                }
            }
            labels.push((key, value));
        }
        Self::with_labels(name, labels)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_form_round_trips_and_sorts_labels() {
        let id = SeriesId::with_labels("http_requests", [("zone", "b"), ("app", "we\"b")]).unwrap();
        let text = id.to_string();
        assert_eq!(text, "http_requests{app=\"we\\\"b\",zone=\"b\"}");
        assert_eq!(text.parse::<SeriesId>().unwrap(), id);
        assert_eq!(
            "cpu".parse::<SeriesId>().unwrap(),
            SeriesId::new("cpu").unwrap()
        );
    }

    #[test]
    fn rejects_bad_names_and_selectors() {
        assert!(SeriesId::new("").is_err());
        assert!(SeriesId::new("9lives").is_err());
        assert!(SeriesId::new("has space").is_err());
        let label = SeriesId::with_labels("ok", [("bad-label", "x")]).unwrap_err();
        // A label name's message lists what a label name may hold, not a series name's extras.
        assert!(
            label
                .to_string()
                .ends_with("may hold only ASCII letters, digits and _"),
            "{label}"
        );
        assert!(SeriesId::new("ok-name.v1:rate").is_ok());
        assert!(SeriesId::with_labels("ok", [("9x", "v")]).is_err());
        assert!("cpu{host=a}".parse::<SeriesId>().is_err());
        assert!("cpu{host=\"a\"".parse::<SeriesId>().is_err());
    }

    #[test]
    fn a_label_with_an_empty_value_is_no_label() {
        let plain = SeriesId::new("x").unwrap();
        assert_eq!(SeriesId::with_labels("x", [("a", "")]).unwrap(), plain);
        assert_eq!("x{a=\"\"}".parse::<SeriesId>().unwrap(), plain);
        assert_eq!(
            "x{a=\"\",b=\"1\"}".parse::<SeriesId>().unwrap().to_string(),
            "x{b=\"1\"}"
        );
    }

    #[test]
    fn label_selector_matches_subsets() {
        let id = SeriesId::with_labels("cpu", [("host", "a"), ("dc", "x")]).unwrap();
        let mut selector = BTreeMap::new();
        selector.insert("host".to_owned(), "a".to_owned());
        assert!(id.matches_labels(&selector));
        selector.insert("zone".to_owned(), String::new());
        assert!(
            id.matches_labels(&selector),
            "no zone label: zone=\"\" selects it"
        );
        selector.insert("dc".to_owned(), "y".to_owned());
        assert!(!id.matches_labels(&selector));
    }
}
