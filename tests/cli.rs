//! The `prescale` binary end to end: import, list, show, export, bad input, config (the example's
//! and the Kubernetes ConfigMap's), demo, and the workloads of a running server.

mod common;

use std::path::Path;
use std::process::{Command, Output};

/// `prescale ARGS --data-dir DATA_DIR`, without the caller's configuration or log settings.
fn command(data_dir: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_prescale"));
    command
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .env_remove("PRESCALE_CONFIG")
        .env_remove("RUST_LOG")
        .current_dir(data_dir.parent().unwrap());
    command
}

fn prescale(data_dir: &Path, args: &[&str]) -> Output {
    command(data_dir, args).output().unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// A workload file in `dir` for the series `api`.
fn api_workload(dir: &Path) -> std::path::PathBuf {
    write(
        dir,
        "workload.toml",
        "name = \"api\"\nseries = \"api\"\ncapacity_per_replica = 10.0\nmin_replicas = 1\nmax_replicas = 10\nwarm_up = \"10m\"\n",
    )
}

/// The gRPC address in the first line `prescale serve` prints.
fn grpc_address(serving: &str) -> String {
    serving
        .strip_prefix("prescale serving gRPC on ")
        .and_then(|rest| rest.split(' ').next())
        .unwrap_or_else(|| panic!("{serving}"))
        .to_owned()
}

#[test]
fn import_list_show_export_round_trip() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let csv = write(
        root.path(),
        "in.csv",
        "timestamp,value\n2024-01-01T00:00:00Z,1\n2024-01-01T00:02:00Z,3\n2024-01-01T00:04:00Z,5\n2024-01-01T00:20:00Z,7\n",
    );
    let output = prescale(
        &data,
        &[
            "import",
            "--series",
            "api",
            "--label",
            "zone=eu",
            csv.to_str().unwrap(),
        ],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stdout(&output).contains("imported 4 samples"),
        "{}",
        stdout(&output)
    );

    let listing = prescale(&data, &["series", "list"]);
    assert!(listing.status.success());
    let text = stdout(&listing);
    assert!(text.contains("api{zone=\"eu\"}"), "{text}");
    assert!(text.contains("2024-01-01T00:20:00Z"), "{text}");

    let show = prescale(&data, &["series", "show", "api", "--label", "zone=eu"]);
    assert!(show.status.success(), "{}", stderr(&show));
    let text = stdout(&show);
    assert!(text.contains("samples:     4"), "{text}");
    assert!(text.contains("gaps:        1"), "{text}");

    let out = root.path().join("out.csv");
    let export = prescale(
        &data,
        &[
            "export",
            "api{zone=\"eu\"}",
            "--step",
            "10m",
            "--agg",
            "mean",
            out.to_str().unwrap(),
        ],
    );
    assert!(export.status.success(), "{}", stderr(&export));
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        "timestamp,value\n2024-01-01T00:00:00Z,3\n2024-01-01T00:10:00Z,\n2024-01-01T00:20:00Z,7\n"
    );
}

#[test]
fn output_to_a_closed_pipe_ends_the_command_quietly() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let csv = write(
        root.path(),
        "in.csv",
        "timestamp,value\n2024-01-01T00:00:00Z,1\n2024-01-01T00:05:00Z,3\n",
    );
    let imported = prescale(&data, &["import", "--series", "api", csv.to_str().unwrap()]);
    assert!(imported.status.success(), "{}", stderr(&imported));
    for args in [&["series", "list"][..], &["series", "show", "api"]] {
        // As `prescale series show api | head` once `head` has read what it wanted and exited.
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let output = command(&data, args).stdout(writer).output().unwrap();
        assert!(output.status.success(), "{args:?}: {}", stderr(&output));
        assert_eq!(stderr(&output), "", "{args:?}");
    }
}

#[test]
fn bad_row_fails_with_its_line_and_imports_nothing() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let csv = write(
        root.path(),
        "bad.csv",
        "timestamp,value\n1700000000,1\n1700000060,inf\n1700000120,2\n",
    );
    let output = prescale(&data, &["import", "--series", "api", csv.to_str().unwrap()]);
    assert!(!output.status.success());
    let message = stderr(&output);
    assert!(message.contains("line 3: non-finite value"), "{message}");
    let listing = prescale(&data, &["series", "list"]);
    assert!(
        stdout(&listing).contains("no series stored"),
        "{}",
        stdout(&listing)
    );
}

#[test]
fn skip_bad_rows_imports_the_rest_and_reports() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let csv = write(
        root.path(),
        "bad.csv",
        "timestamp,value\n1700000000,1\nsoon,2\n1700000120,x\n1700000180,4\n",
    );
    let output = prescale(
        &data,
        &[
            "import",
            "--series",
            "api",
            "--skip-bad-rows",
            csv.to_str().unwrap(),
        ],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(text.contains("imported 2 samples"), "{text}");
    assert!(text.contains("skipped 2 bad rows"), "{text}");
    assert!(
        text.contains("bad timestamp (first at row/line 3"),
        "{text}"
    );
    assert!(text.contains("bad value (first at row/line 4"), "{text}");
}

/// A row dated more than a day ahead of the clock, or after the year 9999, parses but the store
/// refuses it: it is a bad row named by its line, and skipped under `--skip-bad-rows`, rather than
/// the store refusing the whole batch without a line.
#[test]
fn rows_the_store_refuses_are_bad_rows_with_their_line() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let csv = write(
        root.path(),
        "future.csv",
        "timestamp,value\n1700000000,1\n2999-01-01T00:00:00Z,2\n1700000120,3\n-100000000000000000,4\n",
    );
    let csv = csv.to_str().unwrap();
    let output = prescale(&data, &["import", "--series", "api", csv]);
    assert!(!output.status.success(), "{}", stdout(&output));
    let message = stderr(&output);
    assert!(
        message.contains(
            "line 3: timestamp out of range: 2999-01-01T00:00:00Z is more than 1day ahead"
        ),
        "{message}"
    );
    let listing = prescale(&data, &["series", "list"]);
    assert!(
        stdout(&listing).contains("no series stored"),
        "{}",
        stdout(&listing)
    );

    let output = prescale(
        &data,
        &["import", "--series", "api", "--skip-bad-rows", csv],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(text.contains("imported 2 samples"), "{text}");
    assert!(text.contains("skipped 2 bad rows"), "{text}");
    assert!(
        text.contains("2 x timestamp out of range (first at row/line 3"),
        "{text}"
    );
}

#[test]
fn a_file_without_samples_is_refused_rather_than_reported_imported() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let csv = write(root.path(), "empty.csv", "timestamp,value\n");
    let output = prescale(&data, &["import", "--series", "api", csv.to_str().unwrap()]);
    assert!(!output.status.success(), "{}", stdout(&output));
    let message = stderr(&output);
    assert!(message.contains("holds no sample to import"), "{message}");
}

#[test]
fn parquet_files_import_like_csv() {
    use polars::prelude::{Column, DataFrame, ParquetWriter};
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let path = root.path().join("in.parquet");
    let mut frame = DataFrame::new(
        2,
        vec![
            Column::new(
                "timestamp".into(),
                ["2024-01-01T00:00:00Z", "2024-01-01T00:05:00Z"],
            ),
            Column::new("value".into(), [1i64, 2]),
        ],
    )
    .unwrap();
    ParquetWriter::new(std::fs::File::create(&path).unwrap())
        .finish(&mut frame)
        .unwrap();
    let output = prescale(&data, &["import", "--series", "pq", path.to_str().unwrap()]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stdout(&output).contains("imported 2 samples"));
}

/// Makes a store in `data` that holds no series: opened once, as `serve` leaves a new one.
fn empty_store(data: &Path) {
    prescale::store::PolarsStore::open(data, prescale::store::StoreOptions::default()).unwrap();
}

#[test]
fn unknown_series_is_a_clear_error() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    empty_store(&data);
    let output = prescale(&data, &["series", "show", "nothing"]);
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("unknown series nothing"),
        "{}",
        stderr(&output)
    );
    let out = root.path().join("x.csv");
    let export = prescale(&data, &["export", "nothing", out.to_str().unwrap()]);
    assert!(
        stderr(&export).contains("unknown series nothing"),
        "{}",
        stderr(&export)
    );
}

/// The entries of `dir`, by name; `None` when it does not exist.
fn entries(dir: &Path) -> Option<Vec<String>> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .ok()?
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    Some(names)
}

/// Runs every command that only reads what the data directory holds (or changes or removes it) on
/// `data_dir`, with its other files in `root`: each fails with `expected` in its error and leaves
/// `data_dir` as it was.
fn assert_read_only_commands_refuse(root: &Path, data_dir: &Path, expected: &str) {
    let out = root.join("out.csv");
    let out = out.to_str().unwrap();
    let workload = api_workload(root);
    let workload = workload.to_str().unwrap();
    let before = entries(data_dir);
    for args in [
        &["series", "list"][..],
        &["series", "show", "api"],
        &["series", "delete", "api"],
        &["export", "api", out],
        &["forecast", "--series", "api", "--output", out],
        &["backtest", "--series", "api"],
        &[
            "plan",
            "--series",
            "api",
            "--workload",
            workload,
            "--output",
            out,
        ],
        &["simulate", "--series", "api", "--workload", workload],
        &["models", "list"],
        &["models", "show", "api"],
        &["models", "rollback", "api"],
        &["events", "list"],
        &["events", "remove", "launch"],
    ] {
        let output = prescale(data_dir, args);
        assert!(!output.status.success(), "{args:?}: {}", stdout(&output));
        let message = stderr(&output);
        assert!(message.contains(expected), "{args:?}: {message}");
        assert_eq!(entries(data_dir), before, "{args:?} wrote into it");
    }
}

/// Every command that only reads what the data directory holds (or changes or removes it) refuses
/// one that does not exist, a mistyped `--data-dir`, naming it, rather than create it and report an
/// empty store; the commands that store data still create it.
#[test]
fn read_only_commands_refuse_a_data_directory_that_does_not_exist() {
    let root = tempfile::tempdir().unwrap();
    let typo = root.path().join("dtaa");
    let expected = format!("data directory {} does not exist", typo.display());
    assert_read_only_commands_refuse(root.path(), &typo, &expected);

    // A registry configured outside the data directory is checked itself.
    let data = root.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let models = root.path().join("modles");
    let config = write(
        root.path(),
        "registry.toml",
        &format!("[registry]\ndir = {:?}\n", models.to_str().unwrap()),
    );
    let listed = prescale(
        &data,
        &["--config", config.to_str().unwrap(), "models", "list"],
    );
    assert!(!listed.status.success(), "{}", stdout(&listed));
    let message = stderr(&listed);
    let expected = format!("registry directory {} does not exist", models.display());
    assert!(message.contains(&expected), "{message}");
    assert!(!models.exists());

    let csv = write(
        root.path(),
        "in.csv",
        "timestamp,value\n2024-01-01T00:00:00Z,1\n2024-01-01T00:05:00Z,3\n",
    );
    let imported = prescale(&typo, &["import", "--series", "api", csv.to_str().unwrap()]);
    assert!(imported.status.success(), "{}", stderr(&imported));
    let listing = prescale(&typo, &["series", "list"]);
    assert!(listing.status.success(), "{}", stderr(&listing));
    assert!(stdout(&listing).contains("api"), "{}", stdout(&listing));
}

/// A directory that holds nothing of a store (`--data-dir ~`) is refused by every command that only
/// reads the data directory, as a missing one is, and nothing is written into it; a directory where
/// `events add` stored events (and nothing else) is read.
#[test]
fn read_only_commands_refuse_a_directory_that_holds_no_store() {
    let root = tempfile::tempdir().unwrap();
    let home = root.path().join("home");
    std::fs::create_dir(&home).unwrap();
    write(&home, "notes.txt", "not a store\n");
    let expected = format!("data directory {} holds no prescale store", home.display());
    assert_read_only_commands_refuse(root.path(), &home, &expected);
    assert_eq!(entries(&home).unwrap(), ["notes.txt"]);

    let events_only = root.path().join("events");
    let added = prescale(
        &events_only,
        &[
            "events",
            "add",
            "--name",
            "launch",
            "--start",
            "2024-03-01T00:00:00Z",
            "--end",
            "2024-03-02T00:00:00Z",
            "--multiplier",
            "2",
        ],
    );
    assert!(added.status.success(), "{}", stderr(&added));
    let listed = prescale(&events_only, &["events", "list"]);
    assert!(listed.status.success(), "{}", stderr(&listed));
    assert!(stdout(&listed).contains("launch"), "{}", stdout(&listed));
}

/// A store where nothing was trained yet lists no models, and neither `models list` nor `models
/// show` creates the registry directory, whether it is the data directory's `models/` or a
/// `registry.dir` of its own.
#[test]
fn models_of_a_store_with_none_trained_are_listed_as_none_and_nothing_is_created() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    empty_store(&data);
    let registry = root.path().join("registry");
    let config = write(
        root.path(),
        "registry.toml",
        &format!("[registry]\ndir = {:?}\n", registry.to_str().unwrap()),
    );
    let config = config.to_str().unwrap();
    for (prefix, models) in [
        (&[][..], data.join("models")),
        (&["--config", config][..], registry),
    ] {
        let run = |args: &[&str]| prescale(&data, &[prefix, args].concat());
        let listed = run(&["models", "list"]);
        assert!(listed.status.success(), "{prefix:?}: {}", stderr(&listed));
        assert_eq!(stdout(&listed), "no models trained yet\n", "{prefix:?}");
        let shown = run(&["models", "show", "api"]);
        assert!(!shown.status.success(), "{prefix:?}: {}", stdout(&shown));
        assert!(
            stderr(&shown).contains("no models of api"),
            "{}",
            stderr(&shown)
        );
        assert!(!models.exists(), "{prefix:?} created {}", models.display());
    }
}

#[test]
fn broken_config_is_refused_at_start() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let config = write(
        root.path(),
        "prescale.toml",
        "[store]\nretension = \"30d\"\n",
    );
    let output = prescale(
        &data,
        &["--config", config.to_str().unwrap(), "series", "list"],
    );
    assert!(!output.status.success());
    assert!(stderr(&output).contains("retension"), "{}", stderr(&output));
    // The default file in the working directory is read too.
    let output = prescale(&data, &["series", "list"]);
    assert!(!output.status.success(), "{}", stdout(&output));
}

/// `deploy/kubernetes/prescale.toml`, the StatefulSet's configuration, is one the binary accepts
/// (every section is validated on load), with the path of its token Secret pointed at a file here.
#[test]
fn the_kubernetes_configuration_is_accepted() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let text = include_str!("../deploy/kubernetes/prescale.toml");
    let secret = "/etc/prescale-tokens/tokens.txt";
    assert!(
        text.contains(secret),
        "the Secret's path moved: update this test"
    );
    let tokens = write(
        root.path(),
        "tokens.txt",
        "kubernetes-token-0123456789abcdef\n",
    );
    let text = text.replace(secret, tokens.to_str().unwrap());
    assert!(text.contains("\n[scaler]\nlisten = \"0.0.0.0:50052\""));
    let config = write(root.path(), "prescale.toml", &text);
    empty_store(&data);

    let loaded = prescale(
        &data,
        &["models", "list", "--config", config.to_str().unwrap()],
    );
    assert!(loaded.status.success(), "{}", stderr(&loaded));

    let refused = write(
        root.path(),
        "typo.toml",
        &text.replace("[planning]", "[planing]"),
    );
    let refused = prescale(
        &data,
        &["models", "list", "--config", refused.to_str().unwrap()],
    );
    assert!(!refused.status.success());
    assert!(stderr(&refused).contains("planing"), "{}", stderr(&refused));
}

#[test]
fn demo_imports_the_samples_and_prints_them() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let output = prescale(&data, &["demo"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(text.contains("nyc_taxi"), "{text}");
    assert!(text.contains("10320"), "{text}");
    for step in [
        "IngestService.Push",
        "AdminService.ListSeries",
        "ForecastService.Forecast",
        "PlanService.UpsertWorkload",
        "PlanService.WatchPlans",
        // The workload plans under its SLO: the rule chosen, then the replay's curve beside the
        // HPA at equal cost.
        "slo 1% met: planning on the",
        "hpa@cost",
        "every replan on one rule",
        "server shut down",
    ] {
        assert!(text.contains(step), "{step} missing from\n{text}");
    }
    for file in [
        "nyc_taxi_forecast.csv",
        "nyc_taxi_plan.csv",
        "nyc_taxi_simulation.csv",
        "nyc_taxi_simulation.levels.csv",
        "nyc_taxi_simulation.png",
    ] {
        let path = root.path().join("demo-output").join(file);
        assert!(
            path.metadata().is_ok_and(|meta| meta.len() > 0),
            "{}",
            path.display()
        );
    }
    assert!(
        !data.exists(),
        "the demo must not touch the configured store"
    );
}

fn sample(name: &str) -> String {
    format!("{}/notebooks-data/{name}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn forecast_writes_one_band_pair_per_level() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let out = root.path().join("forecast.csv");
    let output = prescale(
        &data,
        &[
            "forecast",
            "--input",
            &sample("ec2_cpu_utilization_5f5533.csv"),
            "--horizon",
            "2h",
            "--levels",
            "50,80,95",
            "--output",
            out.to_str().unwrap(),
        ],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let text = std::fs::read_to_string(&out).unwrap();
    let mut lines = text.lines();
    assert_eq!(
        lines.next().unwrap(),
        "timestamp,mean,lower_50,upper_50,lower_80,upper_80,lower_95,upper_95"
    );
    let rows: Vec<Vec<f64>> = lines
        .map(|line| {
            line.split(',')
                .skip(1)
                .map(|cell| cell.parse().unwrap())
                .collect()
        })
        .collect();
    assert_eq!(rows.len(), 24, "2h of 5-minute steps");
    for row in rows {
        let [mean, l50, u50, l80, u80, l95, u95] = row[..] else {
            panic!("7 numbers")
        };
        assert!(
            l95 <= l80 && l80 <= l50 && l50 <= mean && mean <= u50 && u50 <= u80 && u80 <= u95,
            "{row:?}"
        );
    }
}

#[test]
fn forecast_fits_on_the_configured_history_window() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let out = root.path().join("forecast.csv");
    let forecast = |config: Option<&Path>| {
        let mut args = vec![];
        if let Some(config) = config {
            args.extend(["--config", config.to_str().unwrap()]);
        }
        let input = sample("nyc_taxi.csv");
        args.extend(["forecast", "--input", &input, "--horizon", "2h"]);
        args.extend([
            "--model",
            "seasonal_naive",
            "--output",
            out.to_str().unwrap(),
        ]);
        let output = prescale(&data, &args);
        assert!(output.status.success(), "{}", stderr(&output));
        stdout(&output)
    };
    // nyc_taxi runs from July 2014 to the end of January 2015 in half hours; the default window
    // is the newest 28 days, as the service fits.
    let default = forecast(None);
    assert!(
        default.contains("fitted on 2015-01-04T00:00:00Z .. 2015-02-01T00:00:00Z (1344 points)"),
        "{default}"
    );
    let config = write(
        root.path(),
        "prescale.toml",
        "[planning]\nhistory_window = \"7d\"\n",
    );
    let week = forecast(Some(&config));
    assert!(
        week.contains("fitted on 2015-01-25T00:00:00Z .. 2015-02-01T00:00:00Z (336 points)"),
        "{week}"
    );
}

#[test]
fn bad_forecast_requests_are_clear_errors() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let out = root.path().join("f.csv");
    let input = sample("ec2_cpu_utilization_5f5533.csv");
    for (args, expected) in [
        (vec!["--horizon", "0"], "invalid horizon"),
        (vec!["--horizon", "7m"], "not a whole number"),
        (
            vec!["--levels", "120"],
            "invalid interval level 120%: must lie strictly between 0% and 100%",
        ),
        (vec!["--model", "prophet"], "unknown model"),
    ] {
        let mut all = vec![
            "forecast",
            "--input",
            input.as_str(),
            "--output",
            out.to_str().unwrap(),
        ];
        all.extend(args);
        let output = prescale(&data, &all);
        assert!(!output.status.success());
        assert!(
            stderr(&output).contains(expected),
            "{expected}: {}",
            stderr(&output)
        );
    }
}

#[test]
fn a_missing_workload_file_is_named_as_read_once() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let missing = root.path().join("missing.toml");
    let input = sample("ec2_cpu_utilization_5f5533.csv");
    let output = prescale(
        &data,
        &[
            "plan",
            "--input",
            input.as_str(),
            "--workload",
            missing.to_str().unwrap(),
            "--output",
            root.path().join("plan.csv").to_str().unwrap(),
        ],
    );
    assert!(!output.status.success());
    let message = stderr(&output);
    assert!(
        message.contains(&format!("cannot read {}", missing.display())),
        "{message}"
    );
    assert_eq!(message.matches("os error 2").count(), 1, "{message}");
}

#[test]
fn backtest_prints_every_model() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let out = root.path().join("scores.csv");
    let output = prescale(
        &data,
        &[
            "backtest",
            "--input",
            &sample("nyc_taxi.csv"),
            "--horizon",
            "1d",
            "--folds",
            "1",
            "--output",
            out.to_str().unwrap(),
        ],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    for model in [
        "ensemble",
        "seasonal_naive",
        "fft",
        "trend",
        "forest",
        "scryer",
        "mstl",
        "ets",
        "seasonal_ar",
    ] {
        assert!(text.contains(model), "{model} missing from\n{text}");
    }
    let csv = std::fs::read_to_string(&out).unwrap();
    assert!(
        csv.starts_with("model,mase,smape,coverage_80,width_80,coverage_95,width_95"),
        "{csv}"
    );
    assert_eq!(csv.lines().count(), 10);
}

#[test]
fn events_plan_and_simulate_from_the_command_line() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let workload = write(
        root.path(),
        "workload.toml",
        "name = \"taxi\"\nseries = \"nyc_taxi\"\ncapacity_per_replica = 823.0\nmin_replicas = 2\nmax_replicas = 100\nwarm_up = \"10m\"\n",
    );
    let added = prescale(
        &data,
        &[
            "events",
            "add",
            "--name",
            "parade",
            "--start",
            "2015-02-01T10:00:00Z",
            "--end",
            "2015-02-01T14:00:00Z",
            "--multiplier",
            "1.5",
        ],
    );
    assert!(added.status.success(), "{}", stderr(&added));
    let listed = prescale(&data, &["events", "list"]);
    assert!(stdout(&listed).contains("parade"), "{}", stdout(&listed));
    let bad = prescale(
        &data,
        &[
            "events",
            "add",
            "--name",
            "x",
            "--start",
            "2015-02-01T10:00:00Z",
            "--end",
            "2015-02-01T09:00:00Z",
        ],
    );
    assert!(!bad.status.success());

    let plan = root.path().join("plan.csv");
    let output = prescale(
        &data,
        &[
            "plan",
            "--input",
            &sample("nyc_taxi.csv"),
            "--workload",
            workload.to_str().unwrap(),
            "--horizon",
            "1d",
            "--model",
            "seasonal_naive",
            "--output",
            plan.to_str().unwrap(),
        ],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let text = std::fs::read_to_string(&plan).unwrap();
    assert!(text.starts_with("timestamp,desired,low,high,reason\n"));
    assert_eq!(text.lines().count(), 49, "a day of 30-minute steps");
    assert!(
        text.contains("event: parade"),
        "the stored event is applied:\n{text}"
    );

    let summary = root.path().join("replay.csv");
    let chart = root.path().join("replay.png");
    let output = prescale(
        &data,
        &[
            "simulate",
            "--input",
            &sample("nyc_taxi.csv"),
            "--workload",
            workload.to_str().unwrap(),
            "--days",
            "1",
            "--replan-every",
            "6h",
            "--model",
            "seasonal_naive",
            "--retrain-every",
            "1d",
            "--output",
            summary.to_str().unwrap(),
            "--chart",
            chart.to_str().unwrap(),
        ],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(
        text.contains("models: retrained every 1day, re-anchored on the newest history"),
        "{text}"
    );
    for strategy in ["predictive", "hpa", "oracle"] {
        assert!(text.contains(strategy), "{strategy} missing:\n{text}");
    }
    assert!(std::fs::read(&chart).unwrap().starts_with(b"\x89PNG"));
    assert!(std::fs::read_to_string(&summary).unwrap().lines().count() >= 4);

    let removed = prescale(&data, &["events", "remove", "parade"]);
    assert!(removed.status.success(), "{}", stderr(&removed));
    assert!(stdout(&prescale(&data, &["events", "list"])).contains("no events stored"));
}

#[test]
fn serve_answers_health_and_metrics_then_stops_cleanly_on_sigterm() {
    use std::io::{Read, Write};
    use std::net::TcpStream;

    let root = tempfile::tempdir().unwrap();
    let (mut child, mut lines) = common::spawn_serve(
        root.path(),
        &["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"],
    );
    let serving = lines.next().unwrap().unwrap();
    let grpc = grpc_address(&serving);
    let metrics_line = lines.next().unwrap().unwrap();
    let metrics = metrics_line
        .strip_prefix("metrics on http://")
        .and_then(|rest| rest.strip_suffix("/metrics"))
        .unwrap_or_else(|| panic!("{metrics_line}"))
        .to_owned();

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let status = runtime.block_on(async {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{grpc}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
        health
            .check(tonic_health::pb::HealthCheckRequest {
                service: String::new(),
            })
            .await
            .unwrap()
            .into_inner()
            .status
    });
    assert_eq!(
        status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );

    let mut socket = TcpStream::connect(&metrics).unwrap();
    write!(
        socket,
        "GET /metrics HTTP/1.1\r\nHost: {metrics}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    socket.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(
        response.contains("method=\"/grpc.health.v1.Health/Check\",code=\"OK\"} 1"),
        "{response}"
    );

    common::stop_with_sigterm(&mut child, lines);
}

/// Every file and directory under `dir`, by path relative to it: a file's size and checksum, or
/// `None` for a directory.
fn tree(dir: &Path) -> std::collections::BTreeMap<String, Option<(u64, u32)>> {
    let mut found = std::collections::BTreeMap::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(current) = pending.pop() {
        for entry in std::fs::read_dir(&current).unwrap() {
            let path = entry.unwrap().path();
            let name = path.strip_prefix(dir).unwrap().display().to_string();
            if path.is_dir() {
                found.insert(name, None);
                pending.push(path);
            } else {
                let bytes = std::fs::read(&path).unwrap();
                found.insert(name, Some((bytes.len() as u64, crc32fast::hash(&bytes))));
            }
        }
    }
    found
}

/// The commands that only read a store leave its data directory as they found it, byte for byte:
/// no new log segment, no checkpoint or manifest written, a torn log tail left in place.
#[test]
fn read_only_commands_leave_the_data_directory_as_it_was() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let imported = prescale(
        &data,
        &[
            "import",
            "--series",
            "api",
            &sample("ec2_cpu_utilization_5f5533.csv"),
        ],
    );
    assert!(imported.status.success(), "{}", stderr(&imported));
    let added = prescale(
        &data,
        &[
            "events",
            "add",
            "--name",
            "launch",
            "--start",
            "2014-02-20T00:00:00Z",
            "--end",
            "2014-02-21T00:00:00Z",
            "--multiplier",
            "2",
        ],
    );
    assert!(added.status.success(), "{}", stderr(&added));
    // Samples in the log beside the checkpoint the import wrote, and a torn write after them.
    {
        let store =
            prescale::store::PolarsStore::open(&data, prescale::store::StoreOptions::default())
                .unwrap();
        let logged = [prescale::domain::Sample::new(1_704_067_200_000, 42.0)];
        prescale::store::MetricStore::append(&store, &"logged".parse().unwrap(), &logged).unwrap();
    }
    let newest = std::fs::read_dir(data.join("wal"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .max()
        .unwrap();
    let mut torn = std::fs::read(&newest).unwrap();
    torn.extend_from_slice(&[0x20, 0, 0]);
    std::fs::write(&newest, &torn).unwrap();

    let out = root.path().join("out.csv");
    let out = out.to_str().unwrap();
    let workload = api_workload(root.path());
    let workload = workload.to_str().unwrap();
    let naive = ["--model", "seasonal_naive"];
    let before = tree(&data);
    for args in [
        &["series", "list"][..],
        &["series", "show", "logged"],
        &["export", "api", out],
        &[
            &[
                "forecast",
                "--series",
                "api",
                "--horizon",
                "1h",
                "--output",
                out,
            ][..],
            &naive,
        ]
        .concat(),
        &[
            &[
                "backtest",
                "--series",
                "api",
                "--horizon",
                "1h",
                "--folds",
                "1",
            ][..],
            &naive,
        ]
        .concat(),
        &[
            &[
                "plan",
                "--series",
                "api",
                "--workload",
                workload,
                "--output",
                out,
            ][..],
            &naive,
        ]
        .concat(),
        &[
            &[
                "simulate",
                "--series",
                "api",
                "--workload",
                workload,
                "--days",
                "1",
            ][..],
            &naive,
        ]
        .concat(),
        &["events", "list"],
        &["models", "list"],
    ] {
        let output = prescale(&data, args);
        assert!(output.status.success(), "{args:?}: {}", stderr(&output));
        assert_eq!(tree(&data), before, "{args:?} changed the data directory");
    }
    let shown = prescale(&data, &["series", "show", "logged"]);
    assert!(
        stdout(&shown).contains("samples:     1"),
        "{}",
        stdout(&shown)
    );
}

/// A read-only command reads the store of a running `prescale serve`, without waiting for it or
/// stopping it, and finds every sample the server acknowledged.
#[test]
fn read_only_commands_read_the_store_of_a_running_server() {
    use prescale::service::proto;

    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let (mut child, mut lines) = common::spawn_serve(root.path(), &["--listen", "127.0.0.1:0"]);
    let serving = lines.next().unwrap().unwrap();
    let grpc = grpc_address(&serving);
    // 2024-01-01T00:00:00Z, 00:05 and 00:10.
    let timestamps_ms: Vec<i64> = (0..3)
        .map(|step| 1_704_067_200_000 + step * 300_000)
        .collect();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let written = runtime.block_on(async {
        let mut ingest =
            proto::ingest_service_client::IngestServiceClient::connect(format!("http://{grpc}"))
                .await
                .unwrap();
        ingest
            .write(proto::WriteRequest {
                series: vec![proto::SeriesSamples {
                    series: Some(proto::SeriesRef {
                        name: "load".to_owned(),
                        labels: [("service".to_owned(), "api".to_owned())].into(),
                    }),
                    timestamps_ms,
                    values: vec![1.0, 2.0, 3.0],
                }],
            })
            .await
            .unwrap()
            .into_inner()
    });
    assert_eq!(written.accepted, 3);

    let listed = prescale(&data, &["series", "list"]);
    assert!(listed.status.success(), "{}", stderr(&listed));
    assert!(
        stdout(&listed).contains("load{service=\"api\"}"),
        "{}",
        stdout(&listed)
    );
    let out = root.path().join("load.csv");
    let exported = prescale(
        &data,
        &["export", "load{service=\"api\"}", out.to_str().unwrap()],
    );
    assert!(exported.status.success(), "{}", stderr(&exported));
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        "timestamp,value\n2024-01-01T00:00:00Z,1\n2024-01-01T00:05:00Z,2\n2024-01-01T00:10:00Z,3\n"
    );
    // A change still needs the server: the store is the server's to write.
    let deleted = prescale(&data, &["series", "delete", "load{service=\"api\"}"]);
    assert!(!deleted.status.success(), "{}", stdout(&deleted));
    assert!(
        stderr(&deleted).contains("in use by another process"),
        "{}",
        stderr(&deleted)
    );

    common::stop_with_sigterm(&mut child, lines);
}

/// Ten days of a 5-minute daily cycle up to the last whole step before now, as the CSV `import`
/// reads (epoch seconds), so that a workload on it gets a plan that covers now.
fn ten_days_to_now(dir: &Path) -> std::path::PathBuf {
    const STEP_S: i64 = 300;
    let now_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let last = now_s / STEP_S * STEP_S - STEP_S;
    let mut csv = String::from("timestamp,value\n");
    for index in 0..10 * 288 {
        let time = last - (10 * 288 - 1 - index) * STEP_S;
        let phase = (time % 86_400) as f64 / 86_400.0 * std::f64::consts::TAU;
        let noise = ((index * 7919) % 13) as f64 - 6.0;
        csv.push_str(&format!("{time},{}\n", 500.0 + 300.0 * phase.sin() + noise));
    }
    write(dir, "load.csv", &csv)
}

/// The rest of a `prescale serve` child's standard output, held open so that what it prints later
/// does not fail on a closed pipe.
type ServeOutput = std::io::Lines<std::io::BufReader<std::process::ChildStdout>>;

/// `prescale serve` in `root` with the configuration `config` and no metrics listener; the child
/// (killed when dropped), the rest of its output, and its gRPC address.
fn serve_with_config(root: &Path, config: &str) -> (common::ServeChild, ServeOutput, String) {
    let config = write(root, "prescale.toml", config);
    let (child, mut lines) = common::spawn_serve(
        root,
        &[
            "--config",
            config.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "off",
        ],
    );
    let grpc = grpc_address(&lines.next().unwrap().unwrap());
    (child, lines, grpc)
}

/// `prescale workloads ARGS --server URL`, without the caller's configuration or log settings.
fn workloads(root: &Path, url: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_prescale"))
        .arg("workloads")
        .args(args)
        .args(["--server", url])
        .env_remove("PRESCALE_CONFIG")
        .env_remove("RUST_LOG")
        .env_remove("SSL_CERT_FILE")
        .env_remove("SSL_CERT_DIR")
        .current_dir(root)
        .output()
        .unwrap()
}

/// The value of the `show` line labelled `label` (`"applied"`, `"  model"`).
fn shown<'a>(output: &'a str, label: &str) -> &'a str {
    let prefix = format!("{label}:");
    output
        .lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {label:?} line in {output}"))
        .trim()
}

/// `prescale workloads` manages the workloads of a running server through its `PlanService`:
/// `apply` stores a workload file, `list` and `show` print what the server holds (the report of
/// applied replicas and the current plan included), `delete` removes it; errors are the server's.
#[test]
fn workloads_are_applied_listed_shown_and_deleted_through_a_running_server() {
    use prescale::domain::Timestamp;
    use prescale::service::proto::{self, plan_service_client::PlanServiceClient};

    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let history = ten_days_to_now(root.path());
    let imported = prescale(
        &data,
        &["import", "--series", "load", history.to_str().unwrap()],
    );
    assert!(imported.status.success(), "{}", stderr(&imported));
    // Replanned only when samples arrive, so the plan `show` prints is the one fetched here.
    let (_child, _output, grpc) =
        serve_with_config(root.path(), "[planning]\nreplan_interval = \"1d\"\n");
    let url = format!("http://{grpc}");
    let file = write(
        root.path(),
        "checkout.toml",
        "name = \"checkout\"\nseries = \"load\"\ncapacity_per_replica = 50.0\nmin_replicas = 2\n\
         max_replicas = 100\nwarm_up = \"10m\"\nslo = { max_short_steps = \"1%\" }\n\
         mode = \"forecast-and-scale\"\n",
    );

    let applied = workloads(root.path(), &url, &["apply", file.to_str().unwrap()]);
    assert!(applied.status.success(), "{}", stderr(&applied));
    let stored = stdout(&applied);
    assert!(stored.starts_with("stored workload checkout\n"), "{stored}");
    assert_eq!(shown(&stored, "series"), "load");
    assert_eq!(shown(&stored, "slo"), "at most 1% of steps short");
    assert_eq!(shown(&stored, "warm-up"), "10m");

    let listed = workloads(root.path(), &url, &["list"]);
    assert!(listed.status.success(), "{}", stderr(&listed));
    let listing = stdout(&listed);
    let rows: Vec<Vec<&str>> = listing
        .lines()
        .skip(1)
        .map(|line| line.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows,
        [["checkout", "load", "forecast-and-scale", "slo", "1%", "-"]],
        "{listing}"
    );

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let channel = runtime.block_on(common::connect(grpc.parse().unwrap()));
    let plan = runtime.block_on(async {
        let mut watch = common::watch_plans(&channel, &["checkout"]).await;
        common::next_plan(&mut watch).await
    });
    let shown_at = Timestamp::now().as_millis();
    let show = workloads(root.path(), &url, &["show", "checkout"]);
    let shown_done = Timestamp::now().as_millis();
    assert!(show.status.success(), "{}", stderr(&show));
    let shown_text = stdout(&show);
    assert_eq!(shown(&shown_text, "workload"), "checkout");
    assert_eq!(shown(&shown_text, "series"), "load");
    assert_eq!(shown(&shown_text, "slo"), "at most 1% of steps short");
    assert_eq!(shown(&shown_text, "applied"), "none reported");
    assert!(
        shown(&shown_text, "plan")
            .starts_with(&format!("revision {}, generated at ", plan.revision)),
        "{shown_text}"
    );
    let plan_steps = plan.steps.as_ref().unwrap();
    let runs_until = Timestamp::from_millis(plan_steps.at_ms.last().unwrap() + plan.step_ms);
    assert!(
        shown(&shown_text, "plan").ends_with(&format!(", runs until {runs_until}")),
        "{shown_text}"
    );
    let slo = plan
        .slo
        .as_ref()
        .expect("a plan under an SLO reports its rule");
    assert_eq!(shown(&shown_text, "  slo"), slo.reason);
    assert_eq!(shown(&shown_text, "  model"), plan.model_version);
    let reactive = plan
        .reactive
        .as_ref()
        .expect("a plan has a reactive recommendation");
    assert!(
        shown(&shown_text, "  reactive").starts_with(&format!("{} replicas", reactive.replicas)),
        "{shown_text}"
    );
    // The steps in force now run from the one being served to the last one requested, and the
    // replicas wanted are the most any of them needs: replicas requested for a later step are
    // still warming while an earlier one is served.
    let wanted = shown(&shown_text, "  wanted now");
    let (replicas, rest) = wanted
        .split_once(" replicas (the most the steps in force need: from the one serving from ")
        .unwrap_or_else(|| panic!("{wanted}"));
    let steps = plan.steps.as_ref().unwrap();
    let index_of = |at: &str| {
        steps
            .at_ms
            .iter()
            .position(|step_at| Timestamp::from_millis(*step_at).to_string() == at)
            .unwrap_or_else(|| panic!("{at} is not a step of the plan: {wanted}"))
    };
    let first = index_of(rest.split([',', ')']).next().unwrap());
    let last = rest
        .split_once(" for ")
        .map_or(first, |(_, at)| index_of(at.trim_end_matches(')')));
    assert!(first <= last, "{wanted}");
    assert!(
        steps.at_ms[first] + plan.step_ms > shown_at && steps.request_at_ms[last] <= shown_done,
        "{wanted}: not in force between {shown_at} and {shown_done}"
    );
    let desired = *steps.desired[first..=last].iter().max().unwrap();
    let ceiling = *steps.ceiling[first..=last].iter().max().unwrap();
    assert_eq!(replicas, desired.to_string(), "{wanted}");
    let to_run = desired.max(reactive.replicas).min(ceiling.max(desired));
    assert!(
        shown(&shown_text, "  to run now").starts_with(&format!("{to_run} replicas: ")),
        "{shown_text}"
    );

    let report_ms = Timestamp::now().as_millis() - 60_000;
    runtime.block_on(async {
        PlanServiceClient::new(channel.clone())
            .report_applied(proto::ReportAppliedRequest {
                workload: "checkout".to_owned(),
                replicas: 7,
                time_ms: report_ms,
            })
            .await
            .unwrap();
    });
    let show = workloads(root.path(), &url, &["show", "checkout"]);
    assert!(show.status.success(), "{}", stderr(&show));
    assert_eq!(
        shown(&stdout(&show), "applied"),
        format!("7 replicas at {}", Timestamp::from_millis(report_ms))
    );

    // A workload without a plan yet (its series is not stored) is shown, with why there is none.
    let ghost = write(
        root.path(),
        "ghost.toml",
        "name = \"ghost\"\nseries = \"missing\"\ncapacity_per_replica = 1.0\nmax_replicas = 3\n\
         warm_up = \"0s\"\nplanning_level = 80\n",
    );
    let applied = workloads(root.path(), &url, &["apply", ghost.to_str().unwrap()]);
    assert!(applied.status.success(), "{}", stderr(&applied));
    let show = workloads(root.path(), &url, &["show", "ghost"]);
    assert!(show.status.success(), "{}", stderr(&show));
    assert_eq!(shown(&stdout(&show), "planning"), "the 80% upper bound");
    assert!(
        shown(&stdout(&show), "plan").starts_with("none: "),
        "{}",
        stdout(&show)
    );

    let bad = write(
        root.path(),
        "bad.toml",
        "name = \"bad\"\nseries = \"load\"\ncapacity_per_replica = 1.0\nmax_replicas = 0\n\
         warm_up = \"10m\"\n",
    );
    let refused = workloads(root.path(), &url, &["apply", bad.to_str().unwrap()]);
    assert!(!refused.status.success(), "{}", stdout(&refused));
    assert!(
        stderr(&refused).contains("max_replicas"),
        "{}",
        stderr(&refused)
    );

    for name in ["checkout", "ghost"] {
        let deleted = workloads(root.path(), &url, &["delete", name]);
        assert!(deleted.status.success(), "{}", stderr(&deleted));
        assert_eq!(stdout(&deleted), format!("deleted workload {name}\n"));
    }
    let gone = workloads(root.path(), &url, &["show", "checkout"]);
    assert!(!gone.status.success(), "{}", stdout(&gone));
    assert!(
        stderr(&gone).contains(r#"NOT_FOUND: unknown workload "checkout""#),
        "{}",
        stderr(&gone)
    );
    let listed = workloads(root.path(), &url, &["list"]);
    assert_eq!(stdout(&listed), "no workloads\n");
}

/// The workloads commands carry `--token-file`'s bearer token on every call, and a server with
/// tokens refuses them without it.
#[test]
fn workloads_commands_send_the_token_of_token_file() {
    let root = tempfile::tempdir().unwrap();
    let (_child, _output, grpc) = serve_with_config(
        root.path(),
        "[server.auth]\ntokens = [\"a-token-of-sixteen-chars\"]\n",
    );
    let url = format!("http://{grpc}");
    let token = write(
        root.path(),
        "token",
        "# the server's token\na-token-of-sixteen-chars\n",
    );
    let file = api_workload(root.path());

    let refused = workloads(root.path(), &url, &["apply", file.to_str().unwrap()]);
    assert!(!refused.status.success(), "{}", stdout(&refused));
    assert!(
        stderr(&refused).contains("missing authorization: Bearer token"),
        "{}",
        stderr(&refused)
    );
    let token_file = ["--token-file", token.to_str().unwrap()];
    for args in [
        &["apply", file.to_str().unwrap()][..],
        &["list"],
        &["show", "api"],
        &["delete", "api"],
    ] {
        let answered = workloads(root.path(), &url, &[args, &token_file[..]].concat());
        assert!(answered.status.success(), "{args:?}: {}", stderr(&answered));
    }
}

#[test]
/// Against a server with `[server.tls]`, `prescale workloads` over `https` trusts the CA of
/// `--ca-file`, else the system's roots (here `SSL_CERT_FILE`); a certificate signed by neither
/// (self-signed here) is refused.
fn workloads_commands_trust_the_ca_of_ca_file() {
    let root = tempfile::tempdir().unwrap();
    let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    let cert = write(root.path(), "server.pem", &certified.cert.pem());
    let key = write(
        root.path(),
        "server.key",
        &certified.signing_key.serialize_pem(),
    );
    let (_child, _output, grpc) = serve_with_config(
        root.path(),
        &format!(
            "[server.tls]\ncert = {:?}\nkey = {:?}\n",
            cert.to_str().unwrap(),
            key.to_str().unwrap()
        ),
    );
    let url = format!("https://{grpc}");
    let file = api_workload(root.path());

    let untrusted = workloads(root.path(), &url, &["list"]);
    assert!(!untrusted.status.success(), "{}", stdout(&untrusted));
    assert!(
        stderr(&untrusted).contains(&format!("connecting to {url}")),
        "{}",
        stderr(&untrusted)
    );
    let system_roots = Command::new(env!("CARGO_BIN_EXE_prescale"))
        .args(["workloads", "list", "--server", &url])
        .env_remove("PRESCALE_CONFIG")
        .env_remove("SSL_CERT_DIR")
        .env("SSL_CERT_FILE", &cert)
        .current_dir(root.path())
        .output()
        .unwrap();
    assert!(system_roots.status.success(), "{}", stderr(&system_roots));
    assert_eq!(stdout(&system_roots), "no workloads\n");
    let ca_file = ["--ca-file", cert.to_str().unwrap()];
    let applied = workloads(
        root.path(),
        &url,
        &[&["apply", file.to_str().unwrap()][..], &ca_file[..]].concat(),
    );
    assert!(applied.status.success(), "{}", stderr(&applied));
    let listed = workloads(root.path(), &url, &[&["list"][..], &ca_file[..]].concat());
    assert!(listed.status.success(), "{}", stderr(&listed));
    assert!(
        stdout(&listed).lines().any(|line| line.starts_with("api ")),
        "{}",
        stdout(&listed)
    );
}
