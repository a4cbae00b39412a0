//! History pulled from Prometheus: a 28-day backfill (pull with `/api/v1/query_range` in chunks,
//! check, store through the WAL) from a real local Prometheus seeded with the `nyc_taxi` series,
//! at 5-minute steps (8,065 points, one request) and 1-minute steps (40,321 points, five requests).
//! Skips with a message when `/usr/bin/prometheus` is not installed.
//!
//! Run: `cargo bench --bench prometheus_backfill`. Results are recorded in `docs/BENCHMARKS.md`.

#[path = "../tests/prometheus_support/mod.rs"]
mod prometheus_support;

use std::sync::atomic::{AtomicUsize, Ordering};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use prescale::domain::{PrometheusSource, SeriesId, Step, Timestamp};
use prescale::ingest::prometheus::PrometheusClient;
use prescale::store::{MetricStore, PolarsStore, StoreOptions};

const DAY_MS: i64 = 24 * 3600 * 1000;

/// Pulls the 28 days before `to` into a new series of `store`; returns the points stored.
async fn backfill(
    client: &PrometheusClient,
    store: &PolarsStore,
    series: &SeriesId,
    to: Timestamp,
) -> usize {
    let from = to.saturating_add_millis(-28 * DAY_MS);
    let mut stored = 0;
    for chunk in client.chunks(from, to) {
        let samples = client
            .query_chunk(chunk)
            .await
            .expect("the chunk is answered");
        stored += store
            .append(series, &samples)
            .expect("the store accepts it");
    }
    stored
}

fn backfill_28_days(c: &mut Criterion) {
    if prometheus_support::missing() {
        return;
    }
    let half_hour = 30 * 60_000;
    let last = Timestamp::now().as_millis().div_euclid(half_hour) * half_hour;
    let taxi = prometheus_support::nyc_taxi_ending_at(last, 30);
    let prometheus = prometheus_support::LocalPrometheus::start(&[prometheus_support::Seed {
        name: "nyc_taxi".to_owned(),
        samples: &taxi,
    }]);
    let directory = tempfile::tempdir().expect("a temporary directory");
    let store = PolarsStore::open(directory.path(), StoreOptions::default()).expect("a store");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let iteration = AtomicUsize::new(0);
    let mut group = c.benchmark_group("prometheus_backfill");
    group.sample_size(10);
    for step_minutes in [5_i64, 1] {
        let step = Step::try_from(step_minutes * 60_000).expect("a positive step");
        let source =
            PrometheusSource::new(&prometheus.url, "nyc_taxi", step).expect("a valid source");
        let client = PrometheusClient::new(&source).expect("a client");
        let to = Timestamp::from_millis(last).floor_to(step);
        let points = 28 * DAY_MS / step.as_millis() + 1;
        group.throughput(Throughput::Elements(points as u64));
        group.bench_function(
            BenchmarkId::new("28d", format!("step {step_minutes}m, {points} points")),
            |b| {
                b.iter(|| {
                    let series: SeriesId =
                        format!("taxi_{}", iteration.fetch_add(1, Ordering::Relaxed))
                            .parse()
                            .expect("a valid series name");
                    let stored = runtime.block_on(backfill(&client, &store, &series, to));
                    assert_eq!(stored as i64, points, "every point is stored");
                });
            },
        );
    }
    group.finish();
}

criterion_group!(benches, backfill_28_days);
criterion_main!(benches);
