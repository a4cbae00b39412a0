//! `prescale bench-retrain`: times the retraining job over synthetic series.
//!
//! Builds a temporary store of `--series` seeded 5-minute series of `--points` points each (daily
//! and weekly cycles, a trend and noise), outside the timed part. Then times two runs of the same
//! retraining code `prescale retrain --all` runs ([`app::retrain_many`]) with a registry in the
//! temporary directory:
//! 1. cold: no series has a live model, so every new model is promoted without a comparison;
//! 2. nightly: one more day of data per series is stored, and every series is retrained again and
//!    compared with its live model on the backtest folds after that model's training end.
//!
//! Peak memory is the process's: run it under `/usr/bin/time -v`.

use std::sync::Arc;
use std::time::Instant;

use crate::output::outln;
use anyhow::{Result, bail};
use clap::Args;
use prescale::app::{self, History, RetrainSettings};
use prescale::config::Config;
use prescale::domain::{Sample, SeriesId, Timestamp};
use prescale::registry::Registry;
use prescale::store::{MetricStore, PolarsStore};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const STEP_MS: i64 = 300_000;
/// Steps per day and per week at a 5-minute step.
const DAY: usize = 288;
const WEEK: usize = 7 * DAY;
/// 2026-01-05T00:00:00Z, a Monday.
const START_MS: i64 = 1_767_571_200_000;

#[derive(Debug, Args)]
pub(crate) struct BenchRetrainArgs {
    /// Series to retrain.
    #[arg(long, default_value_t = 1000)]
    series: usize,
    /// Points per series (5-minute steps; 8,064 is 28 days, the default history window).
    #[arg(long, default_value_t = 8064)]
    points: usize,
    /// Series fitted at once [default: `registry.concurrency`].
    #[arg(long)]
    concurrency: Option<usize>,
    /// Seed of the synthetic series.
    #[arg(long, default_value_t = 6)]
    seed: u64,
    /// Only the cold run (no live models to compare with).
    #[arg(long)]
    cold_only: bool,
    /// Build the store and registry in this (new) directory and keep them, e.g. for a
    /// `prescale serve --data-dir DIR` to load; default: a temporary directory.
    #[arg(long)]
    keep: Option<std::path::PathBuf>,
}

/// Points `from..to` of synthetic series `index`: a daily and a weekly cycle (weekends lower), a
/// linear trend and Gaussian-like noise, on its own level, all drawn from `seed` and `index`.
fn synthetic(seed: u64, index: usize, from: usize, to: usize) -> Vec<Sample> {
    let mut shape = ChaCha8Rng::seed_from_u64(seed ^ (index as u64).wrapping_mul(0x9e37_79b9));
    let level = shape.random_range(50.0..5_000.0);
    let daily = shape.random_range(0.2..0.6);
    let weekend = shape.random_range(0.1..0.4);
    let trend = shape.random_range(-0.2..0.4) / 8064.0;
    let noise = shape.random_range(0.02..0.1);
    let phase = shape.random_range(0.0..std::f64::consts::TAU);
    // Noise from its own stream, so the points of `from..to` do not depend on `from`.
    let mut draws = ChaCha8Rng::seed_from_u64(seed.wrapping_add(index as u64));
    (from..to)
        .map(|step| {
            // Four 64-bit draws (eight 32-bit words) per step.
            draws.set_word_pos(step as u128 * 8);
            let day = (step % DAY) as f64 / DAY as f64 * std::f64::consts::TAU;
            let is_weekend = (step % WEEK) / DAY >= 5;
            // Sum of four uniforms: bell-shaped, bounded, variance 1/3.
            let gauss: f64 = (0..4).map(|_| draws.random_range(-0.5..0.5)).sum::<f64>() * 1.73;
            let value = level
                * (1.0 + trend * step as f64)
                * (1.0 + daily * (day + phase).sin())
                * if is_weekend { 1.0 - weekend } else { 1.0 }
                * (1.0 + noise * gauss);
            Sample {
                timestamp: Timestamp::from_millis(START_MS + step as i64 * STEP_MS),
                value: value.max(0.0),
            }
        })
        .collect()
}

fn store_points(
    store: &PolarsStore,
    series: &[SeriesId],
    seed: u64,
    from: usize,
    to: usize,
) -> Result<()> {
    for (index, one) in series.iter().enumerate() {
        store.append(one, &synthetic(seed, index, from, to))?;
    }
    Ok(())
}

pub(crate) fn run(config: &Config, args: &BenchRetrainArgs) -> Result<()> {
    let temporary = tempfile::tempdir()?;
    let directory = args.keep.as_deref().unwrap_or(temporary.path());
    let mut store_options = config.store_options();
    store_options.fsync = false;
    let store = Arc::new(PolarsStore::open(directory, store_options)?);
    let series: Vec<SeriesId> = (0..args.series)
        .map(|index| SeriesId::new(&format!("bench_{index:05}")))
        .collect::<Result<_, _>>()?;
    let built = Instant::now();
    store_points(&store, &series, args.seed, 0, args.points)?;
    store.checkpoint()?;
    outln!(
        "stored {} series x {} points in {:.1}s (not timed below)",
        series.len(),
        args.points,
        built.elapsed().as_secs_f64()
    )?;
    let app = History::new(store.clone());
    let registry = Registry::open(directory.join("models"))?;
    let settings = config.retrain_settings(args.concurrency);
    outln!(
        "retraining on {} threads, history window {}",
        settings.concurrency,
        settings.history_window
    )?;
    let mut failed = time_run("cold", &app, &registry, &series, &settings)?;
    if !args.cold_only {
        store_points(&store, &series, args.seed, args.points, args.points + DAY)?;
        failed += time_run("nightly (+1 day)", &app, &registry, &series, &settings)?;
    }
    store.checkpoint()?;
    if failed > 0 {
        bail!("{failed} retrains failed");
    }
    Ok(())
}

/// Runs the retraining job once and prints its figures; returns how many series failed.
fn time_run(
    label: &str,
    app: &History,
    registry: &Registry,
    series: &[SeriesId],
    settings: &RetrainSettings,
) -> Result<usize> {
    let started = Instant::now();
    let results = app::retrain_many(app, registry, series, settings, &|_, _| {});
    let seconds = started.elapsed().as_secs_f64();
    let counts = app::RetrainCounts::of(&results);
    outln!(
        "{label}: {} series in {seconds:.1}s ({:.2} series/s): {} promoted, {} kept, {} failed",
        results.len(),
        results.len() as f64 / seconds,
        counts.promoted,
        counts.kept,
        counts.failed
    )?;
    if let Some((one, Ok(outcome))) = results.first() {
        outln!("  e.g. {one}: {}", outcome.reason)?;
    }
    let failures = results
        .iter()
        .filter_map(|(one, result)| result.as_ref().err().map(|error| (one, error)));
    for (one, error) in failures.take(5) {
        outln!("  {one}: {error}")?;
    }
    Ok(counts.failed)
}
