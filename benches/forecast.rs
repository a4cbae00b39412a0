//! Forecasting speed: ensemble and per-member fit + predict on 8,064 points (28 days at 5 minutes) with a
//! one-day (288-step) horizon and 80/95% intervals.
//!
//! Run: `cargo bench --bench forecast`. Results are recorded in `docs/BENCHMARKS.md`.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use prescale::app::ModelChoice;
use prescale::domain::{Horizon, Level, Step, TimeSeries, Timestamp};
use prescale::forecast::{Fit, Predict};
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

fn bench_fit_predict(c: &mut Criterion) {
    let series = load_like_series();
    let horizon = Horizon::try_from(288).expect("288 steps is a valid horizon");
    let mut group = c.benchmark_group("fit_predict");
    group.sample_size(10);
    for choice in ModelChoice::all() {
        let params = choice.params().expect("default parameters are valid");
        group.bench_function(BenchmarkId::new(choice.to_string(), POINTS), |b| {
            b.iter(|| {
                params
                    .fit(black_box(&series))
                    .and_then(|model| model.predict(horizon, &Level::DEFAULTS))
                    .expect("the synthetic series fits")
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_fit_predict);
criterion_main!(benches);
