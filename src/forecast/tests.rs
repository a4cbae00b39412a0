//! End-to-end tests of the fitted model: intervals, edge cases and member reporting.

use proptest::prelude::*;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr_free::standard_normal;

use crate::domain::{Step, TimeSeries, Timestamp};

use super::{
    Fit, ForecastError, Horizon, Level, MIN_OBSERVED, MemberKind, MemberSpec, MemberStatus,
    ModelParams, Predict, PreprocessParams, accuracy,
};

/// Normal draws by Box–Muller, so the tests need no distribution crate.
mod rand_distr_free {
    use rand::Rng;

    pub(super) fn standard_normal(rng: &mut impl Rng) -> f64 {
        let uniform: f64 = rng.random_range(f64::EPSILON..1.0);
        let angle: f64 = rng.random_range(0.0..std::f64::consts::TAU);
        (-2.0 * uniform.ln()).sqrt() * angle.cos()
    }
}

fn five_minute_series(values: Vec<f64>) -> TimeSeries {
    TimeSeries::new(
        Timestamp::from_millis(1_400_000_000_000),
        Step::FIVE_MINUTES,
        values,
    )
}

fn hourly_series(values: Vec<f64>) -> TimeSeries {
    let hour = Step::try_from(3_600_000).expect("one hour is a positive step");
    TimeSeries::new(Timestamp::from_millis(0), hour, values)
}

fn assert_finite(forecast: &super::Forecast) {
    assert!(forecast.point().iter().all(|v| v.is_finite()));
    for interval in forecast.intervals() {
        assert!(
            interval
                .lower
                .iter()
                .chain(&interval.upper)
                .all(|v| v.is_finite())
        );
    }
}

#[test]
fn bands_cover_gaussian_noise_at_their_stated_level() {
    let mut rng = ChaCha8Rng::seed_from_u64(2024);
    // 28 days of 5-minute points: a daily cycle plus N(0, 1) noise, then 6 scored days.
    let total = 288 * 34;
    let values: Vec<f64> = (0..total)
        .map(|t| {
            50.0 + 5.0 * (std::f64::consts::TAU * t as f64 / 288.0).sin()
                + standard_normal(&mut rng)
        })
        .collect();
    let params = ModelParams::ensemble().check().unwrap();
    let horizon = Horizon::try_from(288).unwrap();
    // Points above the upper bound and below the lower one, per level.
    let mut above = [0usize; 2];
    let mut below = [0usize; 2];
    let mut scored = 0usize;
    for day in 0..6 {
        let end = 288 * (28 + day);
        let series = five_minute_series(values[end - 288 * 28..end].to_vec());
        let fitted = params.fit(&series).unwrap();
        let forecast = fitted.predict(horizon, &Level::DEFAULTS).unwrap();
        let actual = &values[end..end + 288];
        for (slot, level) in Level::DEFAULTS.iter().enumerate() {
            let band = forecast.interval(*level).unwrap();
            above[slot] += actual
                .iter()
                .zip(&band.upper)
                .filter(|(a, u)| a > u)
                .count();
            below[slot] += actual
                .iter()
                .zip(&band.lower)
                .filter(|(a, l)| a < l)
                .count();
        }
        scored += actual.len();
    }
    for (slot, level) in Level::DEFAULTS.iter().enumerate() {
        let tail = (1.0 - level.fraction()) / 2.0;
        let above = above[slot] as f64 / scored as f64;
        let below = below[slot] as f64 / scored as f64;
        // The upper bound, the one plans are sized on, misses its own tail. The lower one at
        // least mirrors it, so on symmetric noise it misses less than its tail (the wider of two
        // estimates), but not by so much that it stops being a quantile.
        assert!((above - tail).abs() <= 0.02, "{level}: above {above:.3}");
        assert!(
            below <= tail + 0.01 && below >= tail / 4.0,
            "{level}: below {below:.4}"
        );
    }
}

#[test]
fn a_series_never_negative_is_not_forecast_below_zero() {
    // Hourly counts near zero with a daily cycle and N(0, 1) noise clipped at zero, left
    // untransformed: the band around a forecast near zero reaches below it unless clamped.
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let cycle = |t: usize| 1.5 + 1.5 * (std::f64::consts::TAU * t as f64 / 24.0).sin();
    let counts: Vec<f64> = (0..24 * 28)
        .map(|t| (cycle(t) + standard_normal(&mut rng)).max(0.0))
        .collect();
    let params = ModelParams::ensemble()
        .preprocess(PreprocessParams::default().transform(super::TransformChoice::Identity))
        .check()
        .unwrap();
    let horizon = Horizon::try_from(24).unwrap();
    let lowest = |values: Vec<f64>| {
        let forecast = params
            .fit(&hourly_series(values))
            .unwrap()
            .predict(horizon, &Level::DEFAULTS)
            .unwrap();
        let lowest = forecast
            .intervals()
            .iter()
            .flat_map(|interval| interval.lower.iter())
            .chain(forecast.point())
            .fold(f64::INFINITY, |low, v| low.min(*v));
        (forecast, lowest)
    };
    let (clamped, low) = lowest(counts.clone());
    assert_eq!(low, 0.0, "the lowest bound of a count is zero");
    assert!(clamped.point().iter().all(|v| *v > 0.0));
    // The same series moved down by 1 holds negative values: its bounds are not clamped, and
    // its lowest one is the count's moved by as much.
    let (_, shifted_low) = lowest(counts.iter().map(|v| v - 1.0).collect());
    assert!(shifted_low < -1.5, "{shifted_low}");
    // Re-anchored on newer data that goes below zero, the same model stops clamping; on newer
    // data that stays at or above zero, it keeps clamping.
    let model = params.fit(&hourly_series(counts.clone())).unwrap();
    let reanchored_low = |newer: &dyn Fn(usize) -> f64| {
        let extended: Vec<f64> = counts.iter().copied().chain((0..48).map(newer)).collect();
        let forecast = model
            .reanchor(&hourly_series(extended))
            .unwrap()
            .predict(horizon, &Level::DEFAULTS)
            .unwrap();
        forecast
            .intervals()
            .iter()
            .flat_map(|interval| interval.lower.iter())
            .fold(f64::INFINITY, |low, v| low.min(*v))
    };
    let stays = reanchored_low(&|t| cycle(t).max(0.0));
    assert_eq!(stays, 0.0);
    let turns_negative = reanchored_low(&|t| cycle(t) - 2.0);
    assert!(turns_negative < 0.0, "{turns_negative}");
}

#[test]
fn too_little_history_is_not_enough_history() {
    let params = ModelParams::ensemble().check().unwrap();
    let all_gaps = hourly_series(vec![f64::NAN; 500]);
    assert_eq!(
        params.fit(&all_gaps).unwrap_err(),
        ForecastError::NotEnoughHistory {
            needed: MIN_OBSERVED,
            got: 0
        }
    );
    let short = hourly_series((0..10).map(f64::from).collect());
    assert!(matches!(
        params.fit(&short),
        Err(ForecastError::NotEnoughHistory { got: 10, .. })
    ));
    // A member that needs two seasons fails alone with the numbers, and is skipped in the ensemble.
    let days = hourly_series(
        (0..60)
            .map(|t| (std::f64::consts::TAU * t as f64 / 24.0).sin())
            .collect(),
    );
    let forest = ModelParams::single(MemberSpec::default_for(MemberKind::Forest));
    assert!(matches!(
        forest.clone().check().unwrap().fit(&days),
        Err(ForecastError::NotEnoughHistory { got: 60, .. })
    ));
    // Enough history to fit the forest once, too little to backtest it: it still forecasts,
    // with intervals from in-sample changes.
    let month = hourly_series(
        (0..24 * 5)
            .map(|t| (std::f64::consts::TAU * t as f64 / 24.0).sin())
            .collect(),
    );
    let alone = forest.check().unwrap().fit(&month).unwrap();
    assert!(
        alone
            .report()
            .member(MemberKind::Forest)
            .unwrap()
            .scores
            .is_none()
    );
    assert_finite(
        &alone
            .predict_default(Horizon::try_from(24).unwrap())
            .unwrap(),
    );
    let fitted = params.fit(&days).unwrap();
    let skipped: Vec<MemberKind> = fitted
        .report()
        .skipped()
        .iter()
        .map(|(kind, _)| *kind)
        .collect();
    assert!(
        skipped.contains(&MemberKind::Forest),
        "{:?}",
        fitted.report()
    );
    assert!(!fitted.weights().is_empty());
}

#[test]
fn awkward_series_never_produce_nan_or_infinity() {
    let params = ModelParams::ensemble().check().unwrap();
    let horizon = Horizon::try_from(48).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let mut gappy: Vec<f64> = (0..24 * 10).map(|t| (t % 24) as f64).collect();
    for value in gappy.iter_mut().skip(30).take(100) {
        *value = f64::NAN;
    }
    let cases: Vec<(&str, Vec<f64>)> = vec![
        ("constant", vec![7.0; 24 * 10]),
        ("zeros", vec![0.0; 24 * 10]),
        (
            "negative",
            (0..240).map(|t| -1000.0 - (t % 24) as f64).collect(),
        ),
        (
            "huge",
            (0..240)
                .map(|t| 1e300 * (1.0 + (t % 24) as f64 / 24.0))
                .collect(),
        ),
        (
            "tiny",
            (0..240).map(|t| 1e-300 * (1.0 + (t % 5) as f64)).collect(),
        ),
        (
            "mixed sign noise",
            (0..240).map(|_| 1e6 * standard_normal(&mut rng)).collect(),
        ),
        ("gappy", gappy),
    ];
    for (name, values) in cases {
        let fitted = params
            .fit(&hourly_series(values))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let forecast = fitted.predict(horizon, &Level::DEFAULTS).unwrap();
        assert_eq!(forecast.len(), 48, "{name}");
        assert_finite(&forecast);
    }
}

#[test]
fn a_single_member_fits_alone_and_reports_the_baseline_beside_it() {
    let values: Vec<f64> = (0..24 * 21)
        .map(|t| 100.0 + 20.0 * (std::f64::consts::TAU * t as f64 / 24.0).sin())
        .collect();
    let series = hourly_series(values);
    let fitted = MemberSpec::default_for(MemberKind::Fft)
        .fit(&series)
        .unwrap();
    assert_eq!(fitted.weights(), vec![(MemberKind::Fft, 1.0)]);
    let baseline = fitted.report().member(MemberKind::SeasonalNaive).unwrap();
    assert_eq!(baseline.status, MemberStatus::Reference);
    let forecast = fitted
        .predict_default(Horizon::try_from(24).unwrap())
        .unwrap();
    let truth: Vec<f64> = (24 * 21..24 * 22)
        .map(|t| 100.0 + 20.0 * (std::f64::consts::TAU * t as f64 / 24.0).sin())
        .collect();
    let error = accuracy::mae(&truth, forecast.point()).unwrap();
    assert!(error < 0.1, "mae {error}, {:?}", fitted.preprocessing());
    assert_eq!(forecast.start(), series.end());
}

#[test]
fn the_ensemble_drops_members_that_lose_to_the_baseline() {
    // A pure repeating shape: seasonal naive is exact, so nothing can beat it.
    let shape = [3.0, 9.0, 4.0, 1.0, 7.0, 2.0, 8.0, 5.0, 6.0, 0.0, 2.0, 4.0];
    let values: Vec<f64> = (0..12 * 60).map(|t| 10.0 + shape[t % 12]).collect();
    let fitted = ModelParams::ensemble()
        .check()
        .unwrap()
        .fit(&hourly_series(values))
        .unwrap();
    let report = fitted.report();
    for member in &report.members {
        if member.kind != MemberKind::SeasonalNaive && member.scores.is_some() {
            assert!(
                matches!(
                    member.status,
                    MemberStatus::LostToBaseline | MemberStatus::ZeroWeight
                ),
                "{member:?}"
            );
        }
    }
    let forecast = fitted
        .predict_default(Horizon::try_from(12).unwrap())
        .unwrap();
    for (step, value) in forecast.point().iter().enumerate() {
        assert!((value - 10.0 - shape[step]).abs() < 1e-6);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    #[test]
    fn intervals_are_nested_and_contain_the_point(
        seed in 0u64..1000,
        level in -1e3f64..1e3,
        scale in 1e-3f64..1e3,
        period in 4usize..30,
        low in 0.5f64..0.9,
        high_gap in 0.01f64..0.09,
    ) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let values: Vec<f64> = (0..200)
            .map(|t| {
                level
                    + scale * (std::f64::consts::TAU * t as f64 / period as f64).sin()
                    + scale * 0.3 * standard_normal(&mut rng)
            })
            .collect();
        let params = ModelParams::single(MemberSpec::default_for(MemberKind::Fft)).check().unwrap();
        let fitted = params.fit(&hourly_series(values)).unwrap();
        let narrow = Level::try_from(low).unwrap();
        let wide = Level::try_from(low + high_gap).unwrap();
        let forecast = fitted.predict(Horizon::try_from(60).unwrap(), &[wide, narrow]).unwrap();
        let inner = forecast.interval(narrow).unwrap();
        let outer = forecast.interval(wide).unwrap();
        for step in 0..forecast.len() {
            prop_assert!(outer.lower[step] <= inner.lower[step]);
            prop_assert!(inner.lower[step] <= forecast.point()[step]);
            prop_assert!(forecast.point()[step] <= inner.upper[step]);
            prop_assert!(inner.upper[step] <= outer.upper[step]);
        }
    }
}

#[test]
fn bands_keep_widening_beyond_the_calibrated_horizon() {
    let mut rng = ChaCha8Rng::seed_from_u64(31);
    let values: Vec<f64> = (0..24 * 30)
        .map(|t| {
            10.0 + (std::f64::consts::TAU * t as f64 / 24.0).sin() + 0.2 * standard_normal(&mut rng)
        })
        .collect();
    let fitted = ModelParams::single(MemberSpec::default_for(MemberKind::Trend))
        .check()
        .unwrap()
        .fit(&hourly_series(values))
        .unwrap();
    let calibrated = fitted.report().horizon;
    let forecast = fitted
        .predict(
            Horizon::try_from(calibrated * 16).unwrap(),
            &Level::DEFAULTS,
        )
        .unwrap();
    assert_finite(&forecast);
    let band = forecast.interval(Level::DEFAULTS[1]).unwrap();
    let width = |step: usize| band.upper[step] - band.lower[step];
    // Sixteen horizons out, the band is about four times (sqrt(16)) the last calibrated width.
    let ratio = width(calibrated * 16 - 1) / width(calibrated - 1);
    assert!((3.0..5.0).contains(&ratio), "ratio {ratio}");
}

#[test]
fn a_recent_level_shift_is_reported_and_forecast_at_the_new_level() {
    // 14 days of a 5-minute daily cycle around 40; 10 hours before the end it jumps to around 90.
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let jump = 14 * 288 - 120;
    let values: Vec<f64> = (0..14 * 288)
        .map(|index| {
            let phase = (index % 288) as f64 / 288.0 * std::f64::consts::TAU;
            let level = if index >= jump { 90.0 } else { 40.0 };
            level + 5.0 * phase.sin() + standard_normal(&mut rng)
        })
        .collect();
    let series = five_minute_series(values);
    let model = ModelParams::default().fit(&series).expect("14 days fit");
    let shift = model
        .preprocessing()
        .level_shift
        .expect("a jump of 50 is found");
    let off_by = shift
        .at
        .as_millis()
        .abs_diff(series.time_at(jump).as_millis());
    assert!(off_by <= 300_000, "found {} steps away", off_by / 300_000);
    assert!((shift.before - 40.0).abs() < 5.0 && (shift.after - 90.0).abs() < 5.0);
    let day = Horizon::try_from(288).expect("positive");
    let error = |model: &super::FittedModel| {
        let forecast = model.predict(day, &[]).expect("predicts");
        let truth =
            |step: usize| 90.0 + 5.0 * ((step % 288) as f64 / 288.0 * std::f64::consts::TAU).sin();
        forecast
            .point()
            .iter()
            .enumerate()
            .map(|(step, value)| (value - truth(step)).abs())
            .sum::<f64>()
            / 288.0
    };
    let handled = error(&model);
    // The same fit with the shift left in: the models blend the two levels and the two cycles.
    let blended = error(
        &ModelParams::default()
            .preprocess(PreprocessParams::default().level_shift_threshold(f64::INFINITY))
            .fit(&series)
            .expect("14 days fit"),
    );
    assert!(
        handled < 1.0 && handled < blended / 2.0,
        "mean absolute error {handled} with the shift handled, {blended} without"
    );
    // Served between retrains, the model is re-anchored on newer data whose points before the
    // shift are at the old level: they are moved as the fit moved them, so re-anchored on the
    // history it was fitted on, it forecasts what it forecast itself (up to the outlier pass a
    // re-anchor leaves out).
    let anchored = model.reanchor(&series).expect("the same grid");
    let (own, again) = (
        model.predict(day, &[]).expect("predicts"),
        anchored.predict(day, &[]).expect("predicts"),
    );
    let apart = own
        .point()
        .iter()
        .zip(again.point())
        .map(|(own, again)| (own - again).abs())
        .sum::<f64>()
        / 288.0;
    assert!(
        apart < 0.25,
        "re-anchored forecasts {apart} away on average"
    );
}

#[test]
fn a_recent_drop_moves_the_history_only_once_it_outlasts_a_day() {
    // 28 days of an hourly daily-and-weekly cycle; the last `hours` drop to half.
    let with_drop = |hours: usize| {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let values: Vec<f64> = (0..28 * 24)
            .map(|index| {
                let day = (index % 24) as f64 / 24.0 * std::f64::consts::TAU;
                let weekday = if (index / 24) % 7 < 5 { 1.0 } else { 0.7 };
                let level = if index >= 28 * 24 - hours { 0.5 } else { 1.0 };
                level * weekday * (100.0 + 30.0 * day.sin()) + standard_normal(&mut rng)
            })
            .collect();
        ModelParams::default()
            .fit(&hourly_series(values))
            .expect("28 days fit")
            .preprocessing()
            .level_shift
    };
    // Half a day at half the level: could be a holiday, so the models see it as it is.
    assert_eq!(with_drop(12), None);
    // Two days: a shift, and the older history is moved down to it.
    let shift = with_drop(48).expect("a drop that lasted two days");
    assert!(shift.after < shift.before * 0.6, "{shift:?}");
}

/// A 10- or 20-minute job on a 5-minute series: a cycle of 2 or 4 steps. augurs' ETS panics
/// (`unimplemented!`) when asked for a seasonal model of so short a season; the ensemble, and ETS
/// alone, must still fit and forecast, every member that did not take part saying why.
#[test]
fn a_two_or_four_step_cycle_fits_and_forecasts() {
    let params = ModelParams::ensemble().check().unwrap();
    let horizon = Horizon::try_from(48).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(18);
    for period in [2, 4] {
        // Three days: the job's cycle, a daily cycle, noise.
        let values: Vec<f64> = (0..3 * 288)
            .map(|t| {
                let job = 20.0 * (std::f64::consts::TAU * t as f64 / period as f64).cos();
                let day = 10.0 * (std::f64::consts::TAU * t as f64 / 288.0).sin();
                100.0 + job + day + standard_normal(&mut rng)
            })
            .collect();
        let series = five_minute_series(values);
        let fitted = params
            .fit(&series)
            .unwrap_or_else(|error| panic!("{period}-step cycle: {error}"));
        assert_finite(&fitted.predict_default(horizon).unwrap());
        let report = fitted.report();
        assert!(report.member(MemberKind::Ets).is_some(), "{report:?}");
        for (kind, reason) in report.skipped() {
            assert!(!reason.is_empty(), "{kind} skipped without a reason");
        }
        let ets = MemberSpec::default_for(MemberKind::Ets)
            .fit(&series)
            .unwrap_or_else(|error| panic!("ets alone, {period}-step cycle: {error}"));
        assert_finite(&ets.predict_default(horizon).unwrap());
    }
}

#[test]
fn a_daily_series_with_a_yearly_cycle_is_forecast_with_it() {
    // Ten years of daily points: a yearly cycle, a weekly one, seeded noise. The sized window takes
    // its newest eight years; the year is detected and forecast two months ahead, where 28 days
    // of history (the window a daily series had before it was sized) cannot see it.
    let day = Step::try_from(86_400_000).expect("one day is a positive step");
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let yearly = |t: usize| 10.0 * (std::f64::consts::TAU * t as f64 / 365.2425).sin();
    let weekly = |t: usize| if t % 7 >= 5 { -3.0 } else { 0.0 };
    let total = 3_650;
    let horizon = 60;
    let values: Vec<f64> = (0..total + horizon)
        .map(|t| 100.0 + yearly(t) + weekly(t) + standard_normal(&mut rng))
        .collect();
    let full = TimeSeries::new(Timestamp::from_millis(0), day, values[..total].to_vec());
    let window = super::HistoryWindow::Sized;
    let series = full.newest(window.span(day));
    assert_eq!(series.len(), window.points(day));
    let model = ModelParams::ensemble()
        .check()
        .unwrap()
        .fit(&series)
        .unwrap();
    let year = model
        .preprocessing()
        .seasonality
        .periods()
        .iter()
        .find(|period| period.calendar == Some(super::CalendarPeriod::Year));
    assert_eq!(year.map(|period| period.steps), Some(365), "{model:?}");
    let forecast = model
        .predict(Horizon::try_from(horizon).unwrap(), &Level::DEFAULTS)
        .unwrap();
    let actual = &values[total..];
    let error = accuracy::mae(actual, forecast.point()).expect("every actual is observed");
    let four_weeks = ModelParams::ensemble()
        .check()
        .unwrap()
        .fit(&full.newest(std::time::Duration::from_secs(28 * 86_400)))
        .unwrap()
        .predict(Horizon::try_from(horizon).unwrap(), &Level::DEFAULTS)
        .unwrap();
    let four_weeks_error = accuracy::mae(actual, four_weeks.point()).expect("observed");
    // The year rises by about 9 over these two months; the noise's mean absolute size is 0.8.
    assert!(error < 2.0, "mean absolute error {error}");
    assert!(
        2.0 * error < four_weeks_error,
        "{error} with the year, {four_weeks_error} on four weeks"
    );
}
