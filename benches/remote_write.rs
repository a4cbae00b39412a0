//! Remote-write ingest: a Prometheus-like `WriteRequest` of 500 series × 100 samples (15-second
//! scrapes, six labels each) decoded (snappy, protobuf, every series checked) and written to the
//! store (log write included), as `POST /api/v1/write` does on one blocking thread; and the decode
//! alone.
//!
//! Run: `cargo bench --bench remote_write`. Results are recorded in `docs/BENCHMARKS.md`.

use std::hint::black_box;

use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use prescale::domain::Timestamp;
use prescale::ingest::remote_write_proto::{Label, Sample, TimeSeries, WriteRequest};
use prescale::service::remote_write::decode;
use prescale::store::{MetricStore, PolarsStore, StoreOptions};
use prost::Message;

const SERIES: usize = 500;
const SAMPLES: usize = 100;
const SCRAPE_MS: i64 = 15_000;
const MAX_DECODED: usize = 32 << 20;

/// A snappy-compressed request of [`SERIES`] × [`SAMPLES`] whose samples start at `start_ms`.
fn request(start_ms: i64) -> Vec<u8> {
    let label = |name: &str, value: String| Label {
        name: name.to_owned(),
        value,
    };
    let timeseries = (0..SERIES)
        .map(|index| TimeSeries {
            labels: vec![
                label("__name__", "http_requests_per_second".to_owned()),
                label(
                    "instance",
                    format!("10.0.{}.{}:8080", index / 250, index % 250),
                ),
                label("job", "checkout".to_owned()),
                label("method", ["GET", "POST"][index % 2].to_owned()),
                label("namespace", "shop".to_owned()),
                label("pod", format!("checkout-7d9f8b6c5-{index:05}")),
            ],
            samples: (0..SAMPLES)
                .map(|step| Sample {
                    value: 100.0 + ((index * 31 + step * 7) % 97) as f64,
                    timestamp: start_ms + step as i64 * SCRAPE_MS,
                })
                .collect(),
        })
        .collect();
    snap::raw::Encoder::new()
        .compress_vec(&WriteRequest { timeseries }.encode_to_vec())
        .expect("a request compresses")
}

fn remote_write(c: &mut Criterion) {
    let mut group = c.benchmark_group("remote_write");
    group.throughput(Throughput::Elements((SERIES * SAMPLES) as u64));
    group.sample_size(20);
    let size = format!("{SERIES}x{SAMPLES}");

    let body = request(Timestamp::now().as_millis() - 86_400_000);
    group.bench_with_input(BenchmarkId::new("decode", &size), &body, |b, body| {
        b.iter(|| black_box(decode(body, MAX_DECODED).expect("the request decodes")))
    });

    // Each request carries the next 25 minutes of every series, as a live sender's do; they start
    // 30 days back so every one lies before the store's clock.
    let directory = tempfile::tempdir().expect("a temporary directory");
    let store = PolarsStore::open(directory.path(), StoreOptions::default()).expect("a store");
    let span = SAMPLES as i64 * SCRAPE_MS;
    let mut start = Timestamp::now().as_millis() - 30 * 86_400_000;
    group.bench_function(BenchmarkId::new("decode_and_store", &size), |b| {
        b.iter_batched(
            || {
                start += span;
                request(start)
            },
            |body| {
                let decoded = decode(&body, MAX_DECODED).expect("the request decodes");
                store
                    .append_batch(&decoded.batch)
                    .expect("the store takes the batch")
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

criterion_group!(benches, remote_write);
criterion_main!(benches);
