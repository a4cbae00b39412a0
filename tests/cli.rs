//! The `prescale` binary end to end: import, list, show, export, bad input, config, demo.

use std::path::Path;
use std::process::{Command, Output};

fn prescale(data_dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_prescale"))
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .env_remove("PRESCALE_CONFIG")
        .env_remove("RUST_LOG")
        .current_dir(data_dir.parent().unwrap())
        .output()
        .unwrap()
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
fn bad_row_fails_with_its_line_and_imports_nothing() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let csv = write(
        root.path(),
        "bad.csv",
        "timestamp,value\n1700000000,1\n1700000060,NaN\n1700000120,2\n",
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

#[test]
fn unknown_series_is_a_clear_error() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
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

#[test]
fn demo_imports_the_samples_and_prints_them() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let output = prescale(&data, &["demo"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(text.contains("nyc_taxi"), "{text}");
    assert!(text.contains("10320"), "{text}");
    assert!(
        !data.exists(),
        "the demo must not touch the configured store"
    );
}
