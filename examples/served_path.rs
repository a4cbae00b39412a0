//! How a live model forecasts between retrains, measured on one series: fitted as the service fits
//! its live models at the start of each of the series' last 7 days, and re-anchored at every hour
//! of that day to forecast the next 2 hours (at least 2 steps). With `--refit-on-shift`, a model is
//! also refitted between retrains when the newest history shows a level shift it was not fitted
//! with, as the service does (`docs/decisions.md`, "Refitting on a level shift").
//!
//! A model that cannot be re-anchored (the newest points all missing) is refitted, as the service
//! does.
//!
//! Run: `cargo run --release --example served_path -- FILE [--refit-on-shift]`. Prints one CSV row:
//! `series,fits,shift_refits,points,mae,above_95,below_95`: fits counts retrains and every refit,
//! and the shares are of the observed points above the 95% upper bound and below the lower one.

use std::path::Path;

use prescale::app::{ModelChoice, load_input_file, unfitted_level_shift};
use prescale::domain::{Horizon, Level};
use prescale::forecast::{Fit, LevelShift, Predict};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let file = args
        .next()
        .ok_or("usage: served_path FILE [--refit-on-shift]")?;
    let refit_on_shift = args.next().as_deref() == Some("--refit-on-shift");
    let series = load_input_file(Path::new(&file), None)?;
    let step = series.step().as_millis();
    let per_day = usize::try_from((86_400_000 / step).max(1))?;
    let per_hour = usize::try_from((3_600_000 / step).max(1))?;
    let lead = 2 * per_hour;
    let horizon = Horizon::try_from(lead)?;
    let level = Level::from_percent(95.0)?;
    let params = ModelChoice::Ensemble.served_params()?;
    let len = series.len();

    let (mut fits, mut shift_refits, mut points) = (0, 0, 0);
    let (mut error, mut above, mut below) = (0.0, 0, 0);
    for day in (1..=7).rev() {
        let retrain_at = len - day * per_day;
        let mut model = params.fit(&series.slice(0..retrain_at))?;
        fits += 1;
        let mut refitted_for: Option<LevelShift> = None;
        for origin in (retrain_at..retrain_at + per_day).step_by(per_hour) {
            let history = series.slice(0..origin);
            if refit_on_shift
                && let Some(shift) = unfitted_level_shift(&model, &history, refitted_for.as_ref())?
            {
                model = params.fit(&history)?;
                refitted_for = Some(shift);
                shift_refits += 1;
                fits += 1;
            }
            let anchored = match model.reanchor(&history) {
                Ok(anchored) => anchored,
                Err(_) => {
                    model = params.fit(&history)?;
                    fits += 1;
                    model.clone()
                }
            };
            let forecast = anchored.predict(horizon, &[level])?;
            let band = forecast.interval(level).ok_or("the 95% band")?;
            for (offset, actual) in series.values()[origin..len.min(origin + lead)]
                .iter()
                .enumerate()
            {
                if !actual.is_finite() {
                    continue;
                }
                points += 1;
                error += (forecast.point()[offset] - actual).abs();
                above += usize::from(*actual > band.upper[offset]);
                below += usize::from(*actual < band.lower[offset]);
            }
        }
    }
    let name = Path::new(&file)
        .file_stem()
        .map_or(file.clone(), |stem| stem.to_string_lossy().into_owned());
    let share = |count: usize| count as f64 / points.max(1) as f64;
    println!(
        "{name},{fits},{shift_refits},{points},{:.6},{:.4},{:.4}",
        error / points.max(1) as f64,
        share(above),
        share(below)
    );
    Ok(())
}
