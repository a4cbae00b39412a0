//! A remote-write body from batches, for the fleet's write-through to its TSDB: the protobuf
//! `WriteRequest` with each series under the labels [`prometheus_labels`] maps it to and its
//! samples sorted by time (as the specification requires), snappy block-compressed.

use prost::Message;

use crate::ingest::prometheus::prometheus_labels;
use crate::ingest::remote_write_proto::{
    Label, Sample as WireSample, TimeSeries as WireSeries, WriteRequest,
};
use crate::store::SeriesSamples;

/// The body of one remote-write request holding `batch`. CPU work in proportion to the samples:
/// call it off the async threads.
pub(crate) fn encode(batch: &[SeriesSamples]) -> Vec<u8> {
    let timeseries = batch
        .iter()
        .map(|part| {
            let mut samples: Vec<WireSample> = part
                .samples
                .iter()
                .map(|sample| WireSample {
                    value: sample.value,
                    timestamp: sample.timestamp.as_millis(),
                })
                .collect();
            samples.sort_by_key(|sample| sample.timestamp);
            WireSeries {
                labels: prometheus_labels(&part.series)
                    .into_iter()
                    .map(|(name, value)| Label { name, value })
                    .collect(),
                samples,
            }
        })
        .collect();
    let raw = WriteRequest { timeseries }.encode_to_vec();
    snap::raw::Encoder::new()
        .compress_vec(&raw)
        .expect("invariant: snappy compresses any input below 4 GiB")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Sample;
    use crate::service::remote_write::decode;

    #[test]
    fn encodes_sorted_samples_under_the_mapped_labels() {
        let series = "api.load{zone=\"eu\"}".parse().unwrap();
        let batch = [SeriesSamples {
            series,
            samples: vec![Sample::new(2_000, 2.0), Sample::new(1_000, 1.0)],
        }];
        let body = encode(&batch);
        let raw = snap::raw::Decoder::new().decompress_vec(&body).unwrap();
        let request = WriteRequest::decode(raw.as_slice()).unwrap();
        let written = &request.timeseries[0];
        let names: Vec<&str> = written.labels.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["__name__", "prescale_series", "zone"]);
        assert_eq!(written.labels[0].value, "api_load");
        let times: Vec<i64> = written.samples.iter().map(|s| s.timestamp).collect();
        assert_eq!(times, [1_000, 2_000]);
        // prescale's own receiver reads the body back as the same series.
        let decoded = decode(&body, 1 << 20).unwrap();
        assert_eq!(decoded.batch[0].series, batch[0].series);
        assert_eq!(decoded.samples, 2);
    }
}
