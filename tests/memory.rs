//! Memory: the store holds at most 24 bytes per stored sample, measured with a counting allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

use prescale::domain::{Sample, SeriesId};
use prescale::store::{MetricStore, PolarsStore, StoreOptions};

/// Counts live heap bytes, so a test can measure what a structure really costs.
struct CountingAllocator;

/// Bytes currently allocated through [`CountingAllocator`].
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

/// 28 days at 5 minutes.
const POINTS: i64 = 8_064;
const FIVE_MINUTES: i64 = 300_000;

fn bytes_per_sample(series: i64, batch: i64) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let store = PolarsStore::open(dir.path(), StoreOptions::default()).unwrap();
    let before = LIVE_BYTES.load(Ordering::SeqCst);
    for index in 0..series {
        let id = SeriesId::with_labels("load", [("pod", format!("pod-{index}"))]).unwrap();
        for start in (0..POINTS).step_by(batch as usize) {
            let samples: Vec<Sample> = (start..(start + batch).min(POINTS))
                .map(|i| Sample::new(1_700_000_000_000 + i * FIVE_MINUTES, (i % 97) as f64))
                .collect();
            store.append(&id, &samples).unwrap();
        }
    }
    let after = LIVE_BYTES.load(Ordering::SeqCst);
    let stored: usize = store
        .series()
        .iter()
        .map(|id| store.summary(id).unwrap().samples)
        .sum();
    assert_eq!(stored as i64, series * POINTS);
    (after - before) as f64 / stored as f64
}

#[test]
fn at_most_24_bytes_per_sample() {
    // Bulk loads (one batch per series) and trickle loads (an hour of samples per batch, so the write
    // buffer is in its steady state when measured) must both stay within budget.
    let bulk = bytes_per_sample(200, POINTS);
    eprintln!("bulk load: {bulk:.2} bytes per sample");
    assert!(bulk <= 24.0, "bulk load: {bulk:.2} bytes per sample");
    let trickle = bytes_per_sample(20, 12);
    eprintln!("trickle load: {trickle:.2} bytes per sample");
    assert!(
        trickle <= 24.0,
        "trickle load: {trickle:.2} bytes per sample"
    );
}
