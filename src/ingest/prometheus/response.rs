//! The JSON of `/api/v1/query_range` (Prometheus' HTTP API): the envelope, the matrix, and the checks
//! a chunk passes before any of it is written (one series, finite values).
//!
//! Format: <https://prometheus.io/docs/prometheus/latest/querying/api/#range-queries>. Values are
//! strings (`"1.5"`, `"NaN"`, `"+Inf"`), timestamps float seconds.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::SourceError;
use crate::domain::{Sample, Timestamp};

/// Every answer of the API: `status` is `success` or `error`; an error has `errorType` and `error`.
#[derive(Debug, Deserialize)]
pub(super) struct Envelope {
    status: String,
    #[serde(default)]
    data: Option<Data>,
    #[serde(default, rename = "errorType")]
    error_type: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

/// `data` of a range query.
#[derive(Debug, Deserialize)]
struct Data {
    #[serde(rename = "resultType")]
    result_type: String,
    result: Vec<SeriesValues>,
}

/// One series of a matrix: its labels and `[seconds, "value"]` pairs.
#[derive(Debug, Deserialize)]
struct SeriesValues {
    #[serde(default)]
    metric: BTreeMap<String, String>,
    #[serde(default)]
    values: Vec<(f64, String)>,
}

/// Reads a range query's answer: the samples of its one series, oldest first; none when the query
/// matched nothing in the range. Errors: the API's own error (`query_error`), more than one series,
/// a value that is not a finite number, or JSON that is not a matrix.
pub(super) fn parse_matrix(body: &[u8]) -> Result<Vec<Sample>, SourceError> {
    let envelope: Envelope =
        serde_json::from_slice(body).map_err(|error| bad(error.to_string()))?;
    envelope.into_samples()
}

/// Reads a matrix answer of a selector that may match series with more labels than `labels`: the
/// samples of the series whose label set is exactly `labels`, oldest first (none when absent).
pub(super) fn parse_exact_matrix(
    body: &[u8],
    labels: &BTreeMap<String, String>,
) -> Result<Vec<Sample>, SourceError> {
    let mut envelope: Envelope =
        serde_json::from_slice(body).map_err(|error| bad(error.to_string()))?;
    if let Some(data) = envelope.data.as_mut() {
        data.result.retain(|series| series.metric == *labels);
    }
    envelope.into_samples()
}

/// The API's error in a non-2xx answer, when the body is its JSON envelope.
pub(super) fn api_error(body: &[u8]) -> Option<SourceError> {
    let envelope: Envelope = serde_json::from_slice(body).ok()?;
    envelope.query_error()
}

impl Envelope {
    fn query_error(&self) -> Option<SourceError> {
        (self.status != "success").then(|| SourceError::QueryError {
            error_type: self.error_type.clone().unwrap_or_default(),
            error: self.error.clone().unwrap_or_default(),
        })
    }

    fn into_samples(self) -> Result<Vec<Sample>, SourceError> {
        if let Some(error) = self.query_error() {
            return Err(error);
        }
        let data = self
            .data
            .ok_or_else(|| bad("no data in a successful answer"))?;
        if data.result_type != "matrix" {
            return Err(bad(format!(
                "result type {:?}, expected matrix",
                data.result_type
            )));
        }
        let mut result = data.result;
        match result.len() {
            0 => Ok(Vec::new()),
            1 => samples_of(result.remove(0)),
            count => Err(SourceError::SeveralSeries {
                count,
                first: labels_text(&result[0].metric),
                second: labels_text(&result[1].metric),
            }),
        }
    }
}

fn samples_of(series: SeriesValues) -> Result<Vec<Sample>, SourceError> {
    let mut samples = Vec::with_capacity(series.values.len());
    for (seconds, text) in series.values {
        if !seconds.is_finite() {
            return Err(bad(format!("timestamp {seconds}")));
        }
        let timestamp = Timestamp::from_millis((seconds * 1000.0).round() as i64);
        let value: f64 = text
            .parse()
            .map_err(|_| bad(format!("value {text:?} at {timestamp} is not a number")))?;
        if !value.is_finite() {
            return Err(SourceError::NanValues {
                at: timestamp,
                value: text,
            });
        }
        samples.push(Sample { timestamp, value });
    }
    if samples
        .windows(2)
        .any(|pair| pair[0].timestamp >= pair[1].timestamp)
    {
        return Err(bad("timestamps are not increasing"));
    }
    Ok(samples)
}

fn labels_text(labels: &BTreeMap<String, String>) -> String {
    let pairs: Vec<String> = labels
        .iter()
        .map(|(name, value)| format!("{name}={value:?}"))
        .collect();
    format!("{{{}}}", pairs.join(","))
}

fn bad(reason: impl Into<String>) -> SourceError {
    SourceError::BadResponse {
        reason: reason.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matrix(result: &str) -> String {
        format!(r#"{{"status":"success","data":{{"resultType":"matrix","result":[{result}]}}}}"#)
    }

    #[test]
    fn reads_one_series_with_float_second_timestamps() {
        let body = matrix(
            r#"{"metric":{"job":"a"},"values":[[1435781430.781,"1"],[1435781445.781,"2.5e3"]]}"#,
        );
        let samples = parse_matrix(body.as_bytes()).unwrap();
        assert_eq!(
            samples,
            vec![
                Sample::new(1_435_781_430_781, 1.0),
                Sample::new(1_435_781_445_781, 2500.0)
            ]
        );
    }

    #[test]
    fn an_empty_matrix_is_no_samples() {
        assert!(parse_matrix(matrix("").as_bytes()).unwrap().is_empty());
    }

    #[test]
    fn classifies_what_must_not_be_written() {
        let cases = [
            (
                matrix(r#"{"metric":{},"values":[[1,"1"],[2,"NaN"]]}"#),
                "nan_values",
            ),
            (
                matrix(r#"{"metric":{},"values":[[1,"+Inf"]]}"#),
                "nan_values",
            ),
            (
                matrix(r#"{"metric":{"a":"1"},"values":[]},{"metric":{"a":"2"},"values":[]}"#),
                "several_series",
            ),
            (
                matrix(r#"{"metric":{},"values":[[1,"x"]]}"#),
                "bad_response",
            ),
            (
                matrix(r#"{"metric":{},"values":[[2,"1"],[1,"1"]]}"#),
                "bad_response",
            ),
            (
                r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#.to_owned(),
                "bad_response",
            ),
            ("<html>".to_owned(), "bad_response"),
            (
                r#"{"status":"error","errorType":"bad_data","error":"parse error"}"#.to_owned(),
                "query_error",
            ),
        ];
        for (body, reason) in cases {
            let error = parse_matrix(body.as_bytes()).unwrap_err();
            assert_eq!(error.reason(), reason, "{body}: {error}");
        }
    }

    #[test]
    fn several_series_names_two_of_them() {
        let body = matrix(r#"{"metric":{"a":"1"},"values":[]},{"metric":{"a":"2"},"values":[]}"#);
        let message = parse_matrix(body.as_bytes()).unwrap_err().to_string();
        assert!(
            message.contains("2 series") && message.contains(r#"a="2""#),
            "{message}"
        );
    }

    #[test]
    fn api_errors_come_from_the_envelope() {
        let error =
            api_error(br#"{"status":"error","errorType":"bad_data","error":"1:5: parse error"}"#)
                .unwrap();
        assert!(
            error.to_string().contains("bad_data: 1:5: parse error"),
            "{error}"
        );
        assert!(api_error(b"Bad Gateway").is_none());
    }
}
