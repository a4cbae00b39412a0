//! Golden forecasts: every member alone and the ensemble, fitted on three `notebooks-data/`
//! series (one at 30 minutes, two at 5 minutes), must forecast what they forecast when the stored
//! outputs in `tests/golden/` were written.
//!
//! Each series is read the way the CLI reads `--input` (through a temporary store, onto its
//! median step), cut to the newest 28 days the service fits on, and forecast one day ahead with
//! 80% and 95% intervals. The point forecast and every interval bound are compared with the
//! stored values at a relative tolerance of 1e-9 (plus 1e-12 absolute, for values near zero):
//! fitting is deterministic (seeded RNGs, no threads), so any larger difference is a change of
//! behaviour, not noise. Timestamps, and the error of a model that cannot fit a series, are
//! compared exactly.
//!
//! A change that is *meant* to move the forecasts re-writes the stored outputs explicitly:
//!
//! ```text
//! PRESCALE_BLESS=1 cargo test --test golden
//! ```
//!
//! and the diff of `tests/golden/*.csv` goes into the commit for review. Without
//! `PRESCALE_BLESS=1`, a missing stored file is a failure, never a silent pass.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use prescale::domain::{Forecast, Horizon, Level, TimeSeries};
use prescale::forecast::{Fit, MemberSpec, ModelParams, Predict};

/// The history the service fits on (`planning.history_window`'s default).
const HISTORY: Duration = Duration::from_secs(28 * 86_400);
/// Largest relative difference accepted: the code is deterministic, so this only absorbs the
/// last bits a decimal round trip could lose.
const REL_TOL: f64 = 1e-9;
/// Largest absolute difference accepted, for values at or near zero.
const ABS_TOL: f64 = 1e-12;
/// The environment variable that re-writes the stored outputs instead of comparing with them.
const BLESS: &str = "PRESCALE_BLESS";

/// Asserts that `actual` and `expected` have the same length and agree element by element within
/// `abs_tol + rel_tol * |expected|`; NaN matches only NaN and an infinity only the same infinity.
/// `context` names what is compared in the failure message.
fn assert_all_close(actual: &[f64], expected: &[f64], rel_tol: f64, abs_tol: f64, context: &str) {
    assert_eq!(
        actual.len(),
        expected.len(),
        "{context}: {} values, expected {}",
        actual.len(),
        expected.len()
    );
    for (index, (a, e)) in actual.iter().zip(expected).enumerate() {
        let close = if a.is_nan() || e.is_nan() {
            a.is_nan() && e.is_nan()
        } else if a.is_infinite() || e.is_infinite() {
            a == e
        } else {
            (a - e).abs() <= abs_tol + rel_tol * e.abs()
        };
        assert!(
            close,
            "{context}[{index}]: {a} differs from the stored {e} (relative tolerance {rel_tol}, \
             absolute {abs_tol}); if the change is intended, re-write with {BLESS}=1"
        );
    }
}

/// A forecast as stored: its timestamps and its columns (`mean`, then lower and upper per level).
#[derive(Debug, Default)]
struct Table {
    timestamps: Vec<String>,
    columns: Vec<(String, Vec<f64>)>,
}

impl Table {
    fn from_forecast(forecast: &Forecast) -> Self {
        let mut columns = vec![("mean".to_owned(), forecast.point().to_vec())];
        for interval in forecast.intervals() {
            let percent = interval.level.percent();
            columns.push((format!("lower_{percent}"), interval.lower.clone()));
            columns.push((format!("upper_{percent}"), interval.upper.clone()));
        }
        Self {
            timestamps: (0..forecast.len())
                .map(|index| forecast.time_at(index).to_string())
                .collect(),
            columns,
        }
    }
}

/// What fitting and forecasting gave: the forecast, or the error (a member that cannot fit a
/// series is behaviour too), with commas replaced so it fits in one CSV field.
type Outcome = Result<Table, String>;

/// Every model checked: the ensemble, then each member alone.
fn models() -> Vec<(String, ModelParams)> {
    std::iter::once(("ensemble".to_owned(), ModelParams::ensemble()))
        .chain(
            MemberSpec::all()
                .into_iter()
                .map(|spec| (spec.kind().to_string(), ModelParams::single(spec))),
        )
        .collect()
}

/// The newest 28 days of `notebooks-data/<file>`, read as `prescale forecast --input` reads it.
fn history(file: &str) -> TimeSeries {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("notebooks-data")
        .join(file);
    prescale::app::load_input_file(&path, None)
        .unwrap_or_else(|error| panic!("reading {}: {error}", path.display()))
        .newest(HISTORY)
}

/// Writes `model,timestamp,<columns>` rows, and `model,error,<message>` for a model that failed;
/// `{}` prints the shortest decimal that reads back to the same `f64`.
fn write_csv(header: &[String], outcomes: &[(String, Outcome)]) -> String {
    let mut text = String::new();
    writeln!(text, "model,timestamp,{}", header.join(",")).expect("writing to a String");
    for (model, outcome) in outcomes {
        let table = match outcome {
            Ok(table) => table,
            Err(message) => {
                writeln!(text, "{model},error,{message}").expect("writing to a String");
                continue;
            }
        };
        for (row, timestamp) in table.timestamps.iter().enumerate() {
            write!(text, "{model},{timestamp}").expect("writing to a String");
            for (_, values) in &table.columns {
                write!(text, ",{}", values[row]).expect("writing to a String");
            }
            writeln!(text).expect("writing to a String");
        }
    }
    text
}

/// Reads what [`write_csv`] wrote, one outcome per model in file order.
fn read_csv(text: &str, header: &[String]) -> Vec<(String, Outcome)> {
    let mut lines = text.lines();
    let stored_header: Vec<&str> = lines.next().expect("a header line").split(',').collect();
    assert_eq!(stored_header[..2], ["model", "timestamp"], "stored header");
    assert_eq!(stored_header[2..], *header, "stored columns");
    let mut outcomes: Vec<(String, Outcome)> = Vec::new();
    for line in lines {
        let fields: Vec<&str> = line.split(',').collect();
        if fields.get(1) == Some(&"error") {
            outcomes.push((fields[0].to_owned(), Err(fields[2..].join(","))));
            continue;
        }
        assert_eq!(fields.len(), stored_header.len(), "stored row {line:?}");
        let continues = matches!(outcomes.last(), Some((model, Ok(_))) if model == fields[0]);
        if !continues {
            let columns = header
                .iter()
                .map(|name| (name.clone(), Vec::new()))
                .collect();
            let table = Table {
                timestamps: Vec::new(),
                columns,
            };
            outcomes.push((fields[0].to_owned(), Ok(table)));
        }
        let Some((_, Ok(table))) = outcomes.last_mut() else {
            unreachable!("a table was pushed above");
        };
        table.timestamps.push(fields[1].to_owned());
        for ((_, values), field) in table.columns.iter_mut().zip(&fields[2..]) {
            values.push(
                field
                    .parse()
                    .unwrap_or_else(|_| panic!("stored value {field:?}")),
            );
        }
    }
    outcomes
}

fn golden_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("golden")
        .join(format!("{name}.csv"))
}

/// Fits every model on the newest 28 days of `file`, forecasts `horizon` steps, and compares with
/// (or, under `PRESCALE_BLESS=1`, writes) `tests/golden/<name>.csv`.
fn check(name: &str, file: &str, horizon: usize) {
    let history = history(file);
    let horizon = Horizon::try_from(horizon).expect("a valid horizon");
    let levels = [80.0, 95.0].map(|percent| Level::from_percent(percent).expect("a valid level"));
    let header: Vec<String> = std::iter::once("mean".to_owned())
        .chain(levels.iter().flat_map(|level| {
            let percent = level.percent();
            [format!("lower_{percent}"), format!("upper_{percent}")]
        }))
        .collect();
    let actual: Vec<(String, Outcome)> = models()
        .into_iter()
        .map(|(model, params)| {
            let outcome = params
                .check()
                .and_then(|params| params.fit(&history))
                .and_then(|fitted| fitted.predict(horizon, &levels))
                .map(|forecast| Table::from_forecast(&forecast))
                .map_err(|error| error.to_string().replace([',', '\n'], ";"));
            (model, outcome)
        })
        .collect();

    let path = golden_path(name);
    if std::env::var_os(BLESS).is_some_and(|value| value == "1") {
        std::fs::create_dir_all(path.parent().expect("a parent directory")).unwrap();
        std::fs::write(&path, write_csv(&header, &actual)).unwrap();
        eprintln!("wrote {}", path.display());
        return;
    }
    let stored = std::fs::read_to_string(&path).unwrap_or_else(|error| {
        panic!(
            "{}: {error}; write the stored outputs with {BLESS}=1 cargo test --test golden",
            path.display()
        )
    });
    let expected = read_csv(&stored, &header);
    let names = |outcomes: &[(String, Outcome)]| -> Vec<String> {
        outcomes.iter().map(|(model, _)| model.clone()).collect()
    };
    assert_eq!(names(&actual), names(&expected), "{name}: models");
    for ((model, actual), (_, expected)) in actual.iter().zip(&expected) {
        let (actual, expected) = match (actual, expected) {
            (Ok(actual), Ok(expected)) => (actual, expected),
            (Err(actual), Err(expected)) => {
                assert_eq!(actual, expected, "{name}: {model}: error");
                continue;
            }
            (actual, expected) => panic!(
                "{name}: {model}: {} where the stored output {}",
                if actual.is_ok() { "forecast" } else { "failed" },
                if expected.is_ok() {
                    "forecast"
                } else {
                    "failed"
                },
            ),
        };
        assert_eq!(
            actual.timestamps, expected.timestamps,
            "{name}: {model}: timestamps"
        );
        for ((column, actual), (_, expected)) in actual.columns.iter().zip(&expected.columns) {
            let context = format!("{name}: {model}: {column}");
            assert_all_close(actual, expected, REL_TOL, ABS_TOL, &context);
        }
    }
}

/// New York taxi passengers every 30 minutes: strong daily and weekly cycles; every model fits.
#[test]
fn nyc_taxi_forecasts_match_the_stored_outputs() {
    check("nyc_taxi", "nyc_taxi.csv", 48);
}

/// Road occupancy every 5 minutes over 16 days: a daily cycle; every model fits.
#[test]
fn occupancy_forecasts_match_the_stored_outputs() {
    check("occupancy_6005", "occupancy_6005.csv", 288);
}

/// An RDS instance's CPU every 5 minutes over 14 days: noisy, no cycle strong enough for MSTL,
/// whose error is stored too.
#[test]
fn rds_cpu_forecasts_match_the_stored_outputs() {
    check(
        "rds_cpu_utilization_cc0c53",
        "rds_cpu_utilization_cc0c53.csv",
        288,
    );
}

/// The comparison itself: a NaN matches only a NaN, and a difference beyond the tolerance fails.
#[test]
fn assert_all_close_accepts_only_what_is_within_tolerance() {
    assert_all_close(
        &[1.0, f64::NAN, 0.0],
        &[1.0 + 1e-12, f64::NAN, 1e-13],
        1e-9,
        1e-12,
        "close",
    );
    let outcome = |actual: f64, expected: f64| {
        std::panic::catch_unwind(|| assert_all_close(&[actual], &[expected], 1e-9, 1e-12, "far"))
            .is_err()
    };
    assert!(
        outcome(1.0, 1.0 + 1e-6),
        "a relative difference of 1e-6 fails"
    );
    assert!(outcome(f64::NAN, 1.0), "NaN against a number fails");
    assert!(outcome(1.0, f64::NAN), "a number against NaN fails");
}
