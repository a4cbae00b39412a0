//! A remote-write body to store batches: snappy block decompression (the decompressed length
//! checked against the limit before anything is allocated), the protobuf `WriteRequest`, and every
//! series checked, so a bad one refuses the whole request before anything is written.

use std::collections::BTreeMap;

use prost::Message;

use crate::domain::{DomainError, Sample, SeriesId};
use crate::ingest::prometheus::SERIES_LABEL;
use crate::ingest::remote_write_proto::{TimeSeries, WriteRequest};
use crate::store::SeriesSamples;

/// The bit pattern of Prometheus' stale marker: a NaN that says "this series ended" (Prometheus'
/// `model/value.StaleNaN`).
pub const STALE_MARKER_BITS: u64 = 0x7ff0_0000_0000_0002;

/// Why a remote-write body was refused; nothing of it was written.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The body is not in the snappy block format.
    #[error("body is not snappy block-compressed: {reason}")]
    NotSnappy {
        /// The decoder's complaint.
        reason: String,
    },
    /// The body says it decompresses to more than the limit.
    #[error("body decompresses to {bytes} bytes, more than the limit of {limit}")]
    TooLarge {
        /// Decompressed length the snappy header states.
        bytes: usize,
        /// The configured limit.
        limit: usize,
    },
    /// The decompressed body is not a `WriteRequest`.
    #[error("body is not a remote-write WriteRequest: {reason}")]
    BadProtobuf {
        /// The decoder's complaint.
        reason: String,
    },
    /// A series has no `__name__`, or an invalid name or label.
    #[error("series {position} of the request: {reason}")]
    InvalidSeries {
        /// 0-based position of the series in the request.
        position: usize,
        /// What is wrong with it.
        reason: String,
    },
}

/// A decoded request: the batches to store and the samples left out.
#[derive(Debug, Default, PartialEq)]
pub struct DecodedWrite {
    /// One entry per series with at least one sample kept.
    pub batch: Vec<SeriesSamples>,
    /// Samples kept (the sum over `batch`).
    pub samples: u64,
    /// Stale markers dropped: Prometheus sends one when a series disappears; we keep no marker.
    pub stale_markers: u64,
    /// Other NaN and infinite values dropped (the store holds finite values only).
    pub non_finite: u64,
}

/// Decodes a snappy-compressed `WriteRequest` whose decompressed length is at most
/// `max_decoded_bytes`.
pub fn decode(body: &[u8], max_decoded_bytes: usize) -> Result<DecodedWrite, DecodeError> {
    let not_snappy = |error: snap::Error| DecodeError::NotSnappy {
        reason: error.to_string(),
    };
    let bytes = snap::raw::decompress_len(body).map_err(not_snappy)?;
    if bytes > max_decoded_bytes {
        return Err(DecodeError::TooLarge {
            bytes,
            limit: max_decoded_bytes,
        });
    }
    let raw = snap::raw::Decoder::new()
        .decompress_vec(body)
        .map_err(not_snappy)?;
    let request =
        WriteRequest::decode(raw.as_slice()).map_err(|error| DecodeError::BadProtobuf {
            reason: error.to_string(),
        })?;
    convert(request)
}

/// The store batches of a decoded request; every series is checked first.
fn convert(request: WriteRequest) -> Result<DecodedWrite, DecodeError> {
    let mut decoded = DecodedWrite {
        batch: Vec::with_capacity(request.timeseries.len()),
        ..DecodedWrite::default()
    };
    for (position, series) in request.timeseries.into_iter().enumerate() {
        let TimeSeries { labels, samples } = series;
        let id =
            series_id(labels).map_err(|reason| DecodeError::InvalidSeries { position, reason })?;
        let mut kept = Vec::with_capacity(samples.len());
        for sample in samples {
            if sample.value.is_finite() {
                kept.push(Sample::new(sample.timestamp, sample.value));
            } else if sample.value.to_bits() == STALE_MARKER_BITS {
                decoded.stale_markers += 1;
            } else {
                decoded.non_finite += 1;
            }
        }
        if !kept.is_empty() {
            decoded.samples += kept.len() as u64;
            decoded.batch.push(SeriesSamples {
                series: id,
                samples: kept,
            });
        }
    }
    Ok(decoded)
}

/// The series a remote-write label set names: `__name__` and the other labels, or the one its
/// `prescale_series` label names. A label with an empty value is absent (as [`SeriesId`] has it),
/// so it neither repeats another nor names a series.
fn series_id(labels: Vec<crate::ingest::remote_write_proto::Label>) -> Result<SeriesId, String> {
    let mut name = None;
    let mut others = BTreeMap::new();
    for label in labels {
        if label.name == "__name__" {
            name = Some(label.value);
        } else if !label.value.is_empty() {
            if others.contains_key(&label.name) {
                return Err(format!("label {:?} appears twice", label.name));
            }
            others.insert(label.name, label.value);
        }
    }
    // A series prescale wrote under sanitised labels names itself (the fleet's write-through).
    if let Some(text) = others.get(SERIES_LABEL) {
        return text.parse().map_err(|error: DomainError| error.to_string());
    }
    let name = name.ok_or("no __name__ label")?;
    SeriesId::with_labels(&name, others).map_err(|error| error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::remote_write_proto::{Label, Sample as WireSample};

    fn label(name: &str, value: &str) -> Label {
        Label {
            name: name.to_owned(),
            value: value.to_owned(),
        }
    }

    fn body(timeseries: Vec<TimeSeries>) -> Vec<u8> {
        let raw = WriteRequest { timeseries }.encode_to_vec();
        snap::raw::Encoder::new().compress_vec(&raw).unwrap()
    }

    #[test]
    fn keeps_finite_samples_and_drops_stale_markers_and_other_nan() {
        let values = [
            1.5,
            f64::from_bits(STALE_MARKER_BITS),
            f64::NAN,
            2.5,
            f64::INFINITY,
        ];
        let series = TimeSeries {
            labels: vec![
                label("job", "api"),
                label("__name__", "up"),
                label("empty", ""),
            ],
            samples: values
                .iter()
                .enumerate()
                .map(|(index, value)| WireSample {
                    value: *value,
                    timestamp: 1_000 * index as i64,
                })
                .collect(),
        };
        let decoded = decode(&body(vec![series]), 1 << 20).unwrap();
        assert_eq!(
            (decoded.samples, decoded.stale_markers, decoded.non_finite),
            (2, 1, 2)
        );
        let id: SeriesId = "up{job=\"api\"}".parse().unwrap();
        assert_eq!(
            decoded.batch,
            vec![SeriesSamples {
                series: id,
                samples: vec![Sample::new(0, 1.5), Sample::new(3_000, 2.5)],
            }]
        );
    }

    #[test]
    fn refuses_bad_bodies_whole() {
        let good = TimeSeries {
            labels: vec![label("__name__", "up")],
            samples: vec![WireSample {
                value: 1.0,
                timestamp: 0,
            }],
        };
        let bad_label = TimeSeries {
            labels: vec![label("__name__", "up"), label("bad-label", "x")],
            ..good.clone()
        };
        let nameless = TimeSeries {
            labels: vec![label("job", "x")],
            ..good.clone()
        };
        for series in [bad_label, nameless] {
            let refused = decode(&body(vec![good.clone(), series]), 1 << 20);
            assert!(
                matches!(refused, Err(DecodeError::InvalidSeries { position: 1, .. })),
                "{refused:?}"
            );
        }
        assert!(matches!(
            decode(b"not snappy at all", 1 << 20),
            Err(DecodeError::NotSnappy { .. })
        ));
        let garbage = snap::raw::Encoder::new().compress_vec(&[0xff; 64]).unwrap();
        assert!(matches!(
            decode(&garbage, 1 << 20),
            Err(DecodeError::BadProtobuf { .. })
        ));
        assert!(matches!(
            decode(&body(vec![good]), 4),
            Err(DecodeError::TooLarge { limit: 4, .. })
        ));
    }
}
