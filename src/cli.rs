//! Command-line interface: parses flags, loads the configuration, and calls the use cases in `app`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use prescale::app::{App, ImportReport, SAMPLE_SERIES};
use prescale::config::{Config, Overrides};
use prescale::domain::{Aggregation, SeriesId, Step};
use prescale::ingest::BadRowPolicy;
use prescale::store::{MetricStore, PolarsStore, SeriesSummary};
use tracing_subscriber::EnvFilter;

/// Predictive scaling: forecast each workload's load and pre-scale ahead of demand.
#[derive(Debug, Parser)]
#[command(name = "prescale", version, about)]
struct Cli {
    /// Configuration file [default: ./prescale.toml if present].
    #[arg(long, global = true, env = "PRESCALE_CONFIG")]
    config: Option<PathBuf>,
    /// Directory of the metric store [default: ./data].
    #[arg(long, global = true, env = "PRESCALE_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Flush every write to disk before acknowledging it (true/false).
    #[arg(long, global = true, env = "PRESCALE_FSYNC")]
    fsync: Option<bool>,
    /// Drop samples older than this (e.g. 90d), or `off`.
    #[arg(long, global = true, env = "PRESCALE_RETENTION")]
    retention: Option<String>,
    /// More log output on stderr (-v info, -vv debug); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Import a CSV (`timestamp,value`) or Parquet file into a series; all rows or none.
    Import(ImportArgs),
    /// Inspect stored series.
    #[command(subcommand)]
    Series(SeriesCommand),
    /// Export a series resampled to a fixed step as `timestamp,value` CSV.
    Export(ExportArgs),
    /// Run the whole pipeline on the embedded sample data in a temporary store.
    Demo,
}

/// A series named on the command line: `NAME` or `NAME{k="v"}`, plus `--label k=v` flags.
#[derive(Debug, Args)]
struct SeriesArgs {
    /// Extra label `key=value` (repeatable).
    #[arg(long = "label", value_name = "KEY=VALUE")]
    labels: Vec<String>,
}

impl SeriesArgs {
    fn resolve(&self, name: &str) -> Result<SeriesId> {
        let base: SeriesId = name.parse()?;
        let mut labels: Vec<(String, String)> = base
            .labels()
            .iter()
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect();
        for label in &self.labels {
            let Some((key, value)) = label.split_once('=') else {
                bail!("label {label:?} is not KEY=VALUE");
            };
            labels.push((key.trim().to_owned(), value.to_owned()));
        }
        Ok(SeriesId::with_labels(base.name(), labels)?)
    }
}

#[derive(Debug, Args)]
struct ImportArgs {
    /// Series to import into (`NAME` or `NAME{k="v"}`).
    #[arg(long)]
    series: String,
    #[command(flatten)]
    labels: SeriesArgs,
    /// Import the good rows and report the bad ones instead of importing nothing.
    #[arg(long)]
    skip_bad_rows: bool,
    /// CSV or Parquet file (told apart by content).
    file: PathBuf,
}

#[derive(Debug, Subcommand)]
enum SeriesCommand {
    /// One line per series: samples, extent, median step, gaps.
    List,
    /// Details of one series, including its longest gaps.
    Show {
        /// Series (`NAME` or `NAME{k="v"}`).
        name: String,
        #[command(flatten)]
        labels: SeriesArgs,
    },
}

#[derive(Debug, Args)]
struct ExportArgs {
    /// Series (`NAME` or `NAME{k="v"}`).
    name: String,
    #[command(flatten)]
    labels: SeriesArgs,
    /// Bucket size, e.g. 5m, 1h.
    #[arg(long, default_value = "5m")]
    step: Step,
    /// How a bucket's samples are combined: mean, max, sum or last.
    #[arg(long, default_value = "mean")]
    agg: Aggregation,
    /// Output CSV file.
    file: PathBuf,
}

/// Entry point: runs the command and maps failure to exit code 1 with the error chain on stderr.
pub(crate) fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn run(cli: Cli) -> Result<()> {
    let overrides = Overrides {
        data_dir: cli.data_dir.clone(),
        fsync: cli.fsync,
        retention: cli.retention.clone(),
    };
    let config = Config::load(cli.config.as_deref(), &overrides)?;
    match cli.command {
        Command::Import(args) => {
            let (app, store) = open(&config)?;
            let series = args.labels.resolve(&args.series)?;
            let policy = if args.skip_bad_rows {
                BadRowPolicy::Skip
            } else {
                BadRowPolicy::Reject
            };
            let report = app
                .import_file(&series, &args.file, policy)
                .with_context(|| format!("importing {}", args.file.display()))?;
            store.checkpoint()?;
            print_import(&report, &args.file);
        }
        Command::Series(SeriesCommand::List) => {
            let (app, _) = open(&config)?;
            print_series_table(&app.list_series()?);
        }
        Command::Series(SeriesCommand::Show { name, labels }) => {
            let (app, _) = open(&config)?;
            let series = labels.resolve(&name)?;
            print_series_details(&app.store().summary(&series)?);
        }
        Command::Export(args) => {
            let (app, _) = open(&config)?;
            let series = args.labels.resolve(&args.name)?;
            let rows = app.export_csv(&series, args.step, args.agg, &args.file)?;
            println!(
                "wrote {rows} rows of {series} ({} {}) to {}",
                args.step,
                args.agg,
                args.file.display()
            );
        }
        Command::Demo => demo(&config)?,
    }
    Ok(())
}

/// Opens the configured store and an app over it.
fn open(config: &Config) -> Result<(App, Arc<PolarsStore>)> {
    let store = Arc::new(
        PolarsStore::open(&config.data_dir, config.store.clone())
            .with_context(|| format!("opening store in {}", config.data_dir.display()))?,
    );
    Ok((App::new(store.clone()), store))
}

fn print_import(report: &ImportReport, file: &Path) {
    println!(
        "imported {} samples from {} into {}",
        report.accepted,
        file.display(),
        report.series
    );
    if report.skipped.is_empty() {
        return;
    }
    println!("skipped {} bad rows:", report.skipped.len());
    let mut kinds: Vec<_> = report.skipped.iter().map(|row| row.kind).collect();
    kinds.sort();
    kinds.dedup();
    for kind in kinds {
        let rows: Vec<_> = report
            .skipped
            .iter()
            .filter(|row| row.kind == kind)
            .collect();
        let first = rows[0];
        println!(
            "  {:>6} x {kind} (first at row/line {}: {})",
            rows.len(),
            first.position,
            first.detail
        );
    }
}

fn describe_step(step: Option<Step>) -> String {
    step.map_or_else(|| "-".to_owned(), |step| step.to_string())
}

fn describe_time(time: Option<prescale::domain::Timestamp>) -> String {
    time.map_or_else(|| "-".to_owned(), |time| time.to_string())
}

fn print_series_table(summaries: &[SeriesSummary]) {
    if summaries.is_empty() {
        println!("no series stored");
        return;
    }
    let width = summaries
        .iter()
        .map(|summary| summary.series.to_string().len())
        .max()
        .unwrap_or(6)
        .max(6);
    println!(
        "{:<width$}  {:>8}  {:<24}  {:<24}  {:>8}  {:>5}",
        "SERIES", "SAMPLES", "FIRST", "LAST", "STEP", "GAPS"
    );
    for summary in summaries {
        println!(
            "{:<width$}  {:>8}  {:<24}  {:<24}  {:>8}  {:>5}",
            summary.series.to_string(),
            summary.samples,
            describe_time(summary.first),
            describe_time(summary.last),
            describe_step(summary.median_step),
            summary.gaps.len()
        );
    }
}

fn print_series_details(summary: &SeriesSummary) {
    println!("series:      {}", summary.series);
    println!("samples:     {}", summary.samples);
    println!("first:       {}", describe_time(summary.first));
    println!("last:        {}", describe_time(summary.last));
    println!("median step: {}", describe_step(summary.median_step));
    println!(
        "gaps:        {} (longer than twice the median step)",
        summary.gaps.len()
    );
    let mut gaps = summary.gaps.clone();
    gaps.sort_by_key(|gap| std::cmp::Reverse(gap.before.as_millis() - gap.after.as_millis()));
    for gap in gaps.iter().take(10) {
        let length = Step::try_from(gap.before.as_millis() - gap.after.as_millis())
            .map_or_else(|_| "?".to_owned(), |step| step.to_string());
        println!("  {} .. {}  ({length})", gap.after, gap.before);
    }
    if gaps.len() > 10 {
        println!("  ... {} shorter gaps not shown", gaps.len() - 10);
    }
}

/// The main job on the embedded samples, in a temporary store that is removed afterwards.
fn demo(config: &Config) -> Result<()> {
    let directory = tempfile::tempdir().context("creating a temporary store directory")?;
    let store = Arc::new(PolarsStore::open(directory.path(), config.store.clone())?);
    let app = App::new(store.clone());
    println!(
        "prescale demo: importing {} sample series into a temporary store at {}",
        SAMPLE_SERIES.len(),
        directory.path().display()
    );
    for (sample, report) in SAMPLE_SERIES.iter().zip(app.import_samples()?) {
        println!(
            "  {:<24} {:>6} samples  {}",
            report.series.to_string(),
            report.accepted,
            sample.description
        );
    }
    store.checkpoint()?;
    println!();
    print_series_table(&app.list_series()?);
    Ok(())
}
