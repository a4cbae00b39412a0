//! Shutting down and starting again with many series: a store of `PRESCALE_BENCH_SERIES` series
//! (200,000 by default) × 48 five-minute samples, every series changed since the last checkpoint,
//! served by an in-process gRPC server on 127.0.0.1.
//!
//! Prints, each from one timed pass (a pass takes minutes, so this is not criterion):
//! - the shutdown of the server (drain, background tasks, the store's log flushed);
//! - a checkpoint of every series, which is what shutdown wrote before it left checkpointing to
//!   the store's schedule;
//! - opening the store after each: replaying the log, or reading the Parquet files.
//!
//! Run: `cargo bench --bench shutdown`. Results are recorded in `docs/BENCHMARKS.md`.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use prescale::app::telemetry::Telemetry;
use prescale::app::{History, ServingState, Settings};
use prescale::domain::{Sample, SeriesId, Timestamp};
use prescale::service::{ServerOptions, spawn_local};
use prescale::store::{MetricStore, PolarsStore, SeriesSamples, StoreOptions};

/// Samples per series: four hours at five minutes.
const SAMPLES: i64 = 48;
const STEP_MS: i64 = 300_000;
/// Series per logged batch.
const BATCH: usize = 1_000;

fn series_count() -> usize {
    std::env::var("PRESCALE_BENCH_SERIES")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(200_000)
}

/// Series `index`, labelled like a per-pod metric.
fn series_id(index: usize) -> SeriesId {
    let pod = format!("pod-{index:06}");
    SeriesId::with_labels("http_requests", [("service", "api"), ("pod", pod.as_str())])
        .expect("a valid series")
}

/// Writes `count` series of [`SAMPLES`] samples ending now; returns the samples written.
fn load(store: &PolarsStore, count: usize) -> usize {
    let last = Timestamp::now().as_millis();
    let samples: Vec<Sample> = (0..SAMPLES)
        .map(|index| Sample::new(last - (SAMPLES - index) * STEP_MS, index as f64))
        .collect();
    let mut written = 0;
    for first in (0..count).step_by(BATCH) {
        let batch: Vec<SeriesSamples> = (first..(first + BATCH).min(count))
            .map(|index| SeriesSamples {
                series: series_id(index),
                samples: samples.clone(),
            })
            .collect();
        written += store
            .append_batch(&batch)
            .expect("the store takes the batch");
    }
    written
}

/// Opens the store in `dir` with room for `count` series; the time it took.
fn open(dir: &Path, count: usize) -> (PolarsStore, Duration) {
    let options = StoreOptions {
        max_series: count,
        ..StoreOptions::default()
    };
    let started = Instant::now();
    let store = PolarsStore::open(dir, options).expect("the store opens");
    (store, started.elapsed())
}

/// Bytes of the files in `dir`.
fn bytes_in(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|entry| entry.ok()?.metadata().ok())
                .map(|metadata| metadata.len())
                .sum()
        })
        .unwrap_or(0)
}

fn main() {
    let count = series_count();
    let directory = tempfile::tempdir().expect("a temporary directory");
    let (store, _) = open(directory.path(), count);
    let started = Instant::now();
    let written = load(&store, count);
    eprintln!(
        "loaded {count} series, {written} samples in {:.1} s; log {:.1} MiB",
        started.elapsed().as_secs_f64(),
        bytes_in(&directory.path().join("wal")) as f64 / 1048576.0
    );

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let shutdown = runtime.block_on(async {
        let state = ServingState::open(
            History::new(Arc::new(store)),
            directory.path(),
            Settings::default(),
            Arc::new(Telemetry::default()),
        )
        .expect("the serving state opens");
        let server = spawn_local(state, ServerOptions::default())
            .await
            .expect("the server starts");
        let started = Instant::now();
        server
            .shutdown()
            .await
            .expect("the server task ends")
            .expect("the server shuts down");
        started.elapsed()
    });
    eprintln!(
        "server shutdown (log flushed, no checkpoint): {:.3} s",
        shutdown.as_secs_f64()
    );

    let (store, replayed) = open(directory.path(), count);
    assert_eq!(store.series().len(), count, "every series is back");
    eprintln!(
        "open after it (log replayed): {:.1} s",
        replayed.as_secs_f64()
    );

    let started = Instant::now();
    store.checkpoint().expect("the checkpoint is written");
    eprintln!(
        "checkpoint of every series (the former shutdown): {:.1} s; {:.1} MiB of Parquet",
        started.elapsed().as_secs_f64(),
        bytes_in(&directory.path().join("series")) as f64 / 1048576.0
    );
    drop(store);
    let (store, read) = open(directory.path(), count);
    assert_eq!(store.series().len(), count, "every series is back");
    eprintln!("open after it (Parquet read): {:.1} s", read.as_secs_f64());
}
