//! Store benchmarks: append throughput and `window` latency for one series of 8,064 points (28 days at
//! 5 minutes) and within a store of 10,000 such series; bytes per stored sample.
//!
//! Run: `cargo bench --bench store`. Results are recorded in `docs/BENCHMARKS.md`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Instant;

use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use prescale::domain::{Aggregation, Sample, SeriesId, Step, TimeRange, Timestamp};
use prescale::store::{MetricStore, PolarsStore, StoreOptions};

/// Counts live heap bytes so the benchmark can report bytes per stored sample.
struct CountingAllocator;

/// Bytes currently allocated.
static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, pointer: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(pointer, layout) }
    }

    unsafe fn realloc(&self, pointer: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE_BYTES.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        unsafe { System.realloc(pointer, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

const POINTS: usize = 8_064;
const SERIES: usize = 10_000;
const FIVE_MINUTES: i64 = 300_000;
const START: i64 = 1_700_000_000_000;

fn day_of_samples(offset_points: usize) -> Vec<Sample> {
    (0..POINTS)
        .map(|i| {
            let index = (offset_points + i) as i64;
            Sample::new(START + index * FIVE_MINUTES, 100.0 + (index % 288) as f64)
        })
        .collect()
}

fn series_id(index: usize) -> SeriesId {
    SeriesId::with_labels("load", [("pod", format!("pod-{index}"))]).unwrap()
}

fn full_range() -> TimeRange {
    TimeRange::new(
        Timestamp::from_millis(START),
        Timestamp::from_millis(START + POINTS as i64 * FIVE_MINUTES),
    )
    .unwrap()
}

fn bench_single_series(c: &mut Criterion) {
    let samples = day_of_samples(0);
    let mut group = c.benchmark_group("append");
    group.throughput(Throughput::Elements(POINTS as u64));
    group.bench_function(BenchmarkId::new("empty_store", POINTS), |b| {
        b.iter_batched(
            || {
                let dir = tempfile::tempdir().unwrap();
                let store = PolarsStore::open(dir.path(), StoreOptions::default()).unwrap();
                (dir, store)
            },
            |(dir, store)| {
                store.append(&series_id(0), black_box(&samples)).unwrap();
                (dir, store)
            },
            BatchSize::PerIteration,
        );
    });
    group.finish();

    let dir = tempfile::tempdir().unwrap();
    let store = PolarsStore::open(dir.path(), StoreOptions::default()).unwrap();
    store.append(&series_id(0), &samples).unwrap();
    let mut group = c.benchmark_group("window");
    for (step, agg) in [
        (Step::FIVE_MINUTES, Aggregation::Mean),
        ("1h".parse().unwrap(), Aggregation::Max),
    ] {
        group.bench_function(
            BenchmarkId::new(format!("one_series_{step}_{agg}"), POINTS),
            |b| {
                b.iter(|| {
                    store
                        .window(&series_id(0), black_box(full_range()), step, agg)
                        .unwrap()
                })
            },
        );
    }
    group.finish();
}

fn bench_ten_thousand_series(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let store = PolarsStore::open(dir.path(), StoreOptions::default()).unwrap();
    let samples = day_of_samples(0);
    let before = LIVE_BYTES.load(Ordering::SeqCst);
    let started = Instant::now();
    for index in 0..SERIES {
        store.append(&series_id(index), &samples).unwrap();
    }
    let elapsed = started.elapsed();
    let live = LIVE_BYTES.load(Ordering::SeqCst) - before;
    let stored = (SERIES * POINTS) as f64;
    eprintln!(
        "bulk load: {SERIES} series x {POINTS} points = {stored} samples in {:.2} s = {:.2} M samples/s",
        elapsed.as_secs_f64(),
        stored / elapsed.as_secs_f64() / 1e6
    );
    eprintln!(
        "memory: {:.2} bytes per stored sample (live heap {:.1} MiB; Polars estimate of frames {:.1} MiB)",
        live as f64 / stored,
        live as f64 / 1048576.0,
        store.estimated_frame_bytes() as f64 / 1048576.0
    );
    // Compact the bulk load now so no timed iteration pays for its checkpoint.
    store.checkpoint().unwrap();

    let mut group = c.benchmark_group("append");
    group.throughput(Throughput::Elements(POINTS as u64));
    let mut round = 1;
    group.bench_function(BenchmarkId::new("store_of_10000_series", POINTS), |b| {
        b.iter_batched(
            || {
                round += 1;
                (
                    series_id(round % SERIES),
                    day_of_samples(POINTS * (round / SERIES + 1)),
                )
            },
            |(id, next)| store.append(&id, black_box(&next)).unwrap(),
            BatchSize::SmallInput,
        );
    });
    group.finish();

    let mut group = c.benchmark_group("window");
    let mut index = 0;
    group.bench_function(
        BenchmarkId::new("store_of_10000_series_5m_mean", POINTS),
        |b| {
            b.iter(|| {
                index = (index + 7919) % SERIES;
                store
                    .window(
                        &series_id(index),
                        black_box(full_range()),
                        Step::FIVE_MINUTES,
                        Aggregation::Mean,
                    )
                    .unwrap()
            })
        },
    );
    group.finish();
}

criterion_group!(benches, bench_single_series, bench_ten_thousand_series);
criterion_main!(benches);
