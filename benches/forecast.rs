//! Forecasting speed: ensemble and per-member fit + predict on 8,064 points (28 days at 5 minutes) with a
//! one-day (288-step) horizon and 80/95% intervals; and the ensemble on eight years of daily points
//! (2,920, the sized history window of a daily series) with weekly and yearly cycles, a week ahead.
//!
//! Also the service's level-shift check of a live model's newest history (the fit's preprocessing
//! without the fit) on the same 8,064 points.
//!
//! Run: `cargo bench --bench forecast`. Results are recorded in `docs/BENCHMARKS.md`.

use std::hint::black_box;

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, BenchmarkId, Criterion, criterion_group, criterion_main};
use prescale::app::ModelChoice;
use prescale::domain::{Horizon, Level, Step, TimeSeries, Timestamp};
use prescale::forecast::{Fit, ModelParams, Predict};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const POINTS: usize = 8_064;
const DAY: f64 = 288.0;

/// Daily and weekly cycles, a slow trend and seeded noise: the shape of a typical request-rate metric.
fn load_like_series() -> TimeSeries {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let values = (0..POINTS)
        .map(|t| {
            let t = t as f64;
            let daily = (2.0 * std::f64::consts::PI * t / DAY).sin();
            let weekly = (2.0 * std::f64::consts::PI * t / (7.0 * DAY)).cos();
            1000.0 + 400.0 * daily + 150.0 * weekly + 0.01 * t + rng.random_range(-50.0..50.0)
        })
        .collect();
    TimeSeries::new(
        Timestamp::from_millis(1_700_000_000_000),
        Step::FIVE_MINUTES,
        values,
    )
}

/// Eight years of daily points: weekly and yearly cycles, a slow trend and seeded noise.
fn daily_series() -> TimeSeries {
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    let values = (0..DAILY_POINTS)
        .map(|t| {
            let t = t as f64;
            let weekly = (2.0 * std::f64::consts::PI * t / 7.0).cos();
            let yearly = (2.0 * std::f64::consts::PI * t / 365.2425).sin();
            500.0 + 60.0 * weekly + 150.0 * yearly + 0.05 * t + rng.random_range(-30.0..30.0)
        })
        .collect();
    let day = Step::try_from(86_400_000).expect("one day is a positive step");
    TimeSeries::new(Timestamp::from_millis(1_400_000_000_000), day, values)
}

/// Points of a daily series' sized history window (`HistoryWindow::Sized`): eight years.
const DAILY_POINTS: usize = 8 * 365;

fn bench_daily(c: &mut Criterion) {
    let series = daily_series();
    let horizon = Horizon::try_from(7).expect("7 steps is a valid horizon");
    let params = ModelChoice::Ensemble
        .params()
        .expect("default parameters are valid");
    let mut group = c.benchmark_group("fit_predict_daily");
    group.sample_size(10);
    let id = BenchmarkId::new("ensemble", DAILY_POINTS);
    bench_one(&mut group, id, &params, &series, horizon);
    group.finish();
}

/// Times fit + predict of `params` on `series`, `horizon` steps ahead with 80/95% intervals.
fn bench_one(
    group: &mut BenchmarkGroup<'_, WallTime>,
    id: BenchmarkId,
    params: &ModelParams,
    series: &TimeSeries,
    horizon: Horizon,
) {
    group.bench_function(id, |b| {
        b.iter(|| {
            params
                .fit(black_box(series))
                .and_then(|model| model.predict(horizon, &Level::DEFAULTS))
                .expect("the synthetic series fits")
        })
    });
}

fn bench_fit_predict(c: &mut Criterion) {
    let series = load_like_series();
    let horizon = Horizon::try_from(288).expect("288 steps is a valid horizon");
    let mut group = c.benchmark_group("fit_predict");
    group.sample_size(10);
    for choice in ModelChoice::all() {
        let params = choice.params().expect("default parameters are valid");
        let id = BenchmarkId::new(choice.to_string(), POINTS);
        bench_one(&mut group, id, &params, &series, horizon);
    }
    group.finish();
}

/// The level-shift check the service runs on each new sample of a served series
/// (`ModelParams::level_shift`, the served parameters).
fn bench_level_shift(c: &mut Criterion) {
    let series = load_like_series();
    let params = ModelChoice::Ensemble
        .served_params()
        .expect("default parameters are valid");
    let mut group = c.benchmark_group("level_shift_check");
    group.bench_function(BenchmarkId::new("served", POINTS), |b| {
        b.iter(|| {
            params
                .level_shift(black_box(&series))
                .expect("the synthetic series is long enough")
        })
    });
    group.finish();
}

criterion_group!(benches, bench_fit_predict, bench_daily, bench_level_shift);
criterion_main!(benches);
