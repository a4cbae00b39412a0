//! Command-line interface: parses flags, loads the configuration, and calls the use cases in `app`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use prescale::app::{self, App, Backtest, EventStore, ImportReport, ModelChoice, load_input_file};
use prescale::config::{Config, Overrides};
use prescale::domain::{Aggregation, SeriesId, Step, TimeSeries};
use prescale::events::EventSpec;
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
    /// gRPC address for `serve` [default: 127.0.0.1:50051].
    #[arg(long, global = true, env = "PRESCALE_LISTEN")]
    listen: Option<String>,
    /// Address of the `/metrics` endpoint for `serve`, or `off` [default: 127.0.0.1:9464].
    #[arg(long, global = true, env = "PRESCALE_METRICS_LISTEN")]
    metrics_listen: Option<String>,
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
    /// Forecast a series with prediction intervals and write it as CSV.
    Forecast(ForecastArgs),
    /// Rolling-origin backtest of every model (or one) on a series: MASE, sMAPE, coverage, width, time.
    Backtest(BacktestArgs),
    /// Turn a forecast into a pre-scaling plan for a workload.
    Plan(PlanArgs),
    /// Replay history: predictive plans vs the Kubernetes HPA vs an oracle.
    Simulate(SimulateArgs),
    /// Planned events (launches, sales) whose uplift is learned from history.
    #[command(subcommand)]
    Events(EventsCommand),
    /// Run the whole pipeline on the embedded sample data through an in-process gRPC server.
    Demo(DemoArgs),
    /// Serve the gRPC API (ingest, forecasts, plans, events, admin) until SIGINT/SIGTERM.
    Serve,
    /// Load-test the gRPC API on loopback: GetPlan latency and throughput, Push samples/s.
    BenchGrpc(crate::bench_grpc::BenchArgs),
    /// Time the retraining job over synthetic series in a temporary store (cold, then nightly).
    BenchRetrain(crate::bench_retrain::BenchRetrainArgs),
    /// Retrain series into the model registry, promoting each new model only when it is not worse
    /// than the live one on the same recent window. Exits non-zero when any series failed.
    Retrain(RetrainArgs),
    /// Inspect the model registry and roll back.
    #[command(subcommand)]
    Models(ModelsCommand),
}

/// Where a command's history comes from: a file, or a stored series.
#[derive(Debug, Args)]
struct InputArgs {
    /// CSV or Parquet file (`timestamp,value`), regularised on its median step.
    #[arg(long, conflicts_with = "series", required_unless_present = "series")]
    input: Option<PathBuf>,
    /// Stored series (`NAME` or `NAME{k="v"}`).
    #[arg(long)]
    series: Option<String>,
    #[command(flatten)]
    labels: SeriesArgs,
    /// Step to resample to [default: the series' median step].
    #[arg(long)]
    step: Option<Step>,
}

impl InputArgs {
    fn load(&self, config: &Config) -> Result<TimeSeries> {
        if let Some(path) = &self.input {
            return load_input_file(path, self.step)
                .with_context(|| format!("reading {}", path.display()));
        }
        let name = self
            .series
            .as_deref()
            .expect("invariant: clap requires --input or --series");
        let series = self.labels.resolve(name)?;
        let (app, _) = open(config)?;
        Ok(app.regular_series(&series, self.step)?)
    }
}

#[derive(Debug, Args)]
struct ForecastArgs {
    #[command(flatten)]
    input: InputArgs,
    /// How far ahead: a duration (1d, 90m) or a number of steps.
    #[arg(long, default_value = "1d")]
    horizon: String,
    /// Interval levels in percent.
    #[arg(long, default_value = "80,95")]
    levels: String,
    /// ensemble, or one member: seasonal_naive, fft, trend, forest, scryer, mstl, ets.
    #[arg(long, default_value = "ensemble")]
    model: String,
    /// Output CSV: timestamp,mean,lower_L,upper_L... per level.
    #[arg(long)]
    output: PathBuf,
}

#[derive(Debug, Args)]
struct BacktestArgs {
    #[command(flatten)]
    input: InputArgs,
    /// Steps forecast from each origin: a duration or a number of steps.
    #[arg(long, default_value = "1d")]
    horizon: String,
    /// Number of rolling origins over the most recent history.
    #[arg(long, default_value_t = 5)]
    folds: usize,
    /// Interval levels in percent.
    #[arg(long, default_value = "80,95")]
    levels: String,
    /// Most recent history each fit may use.
    #[arg(long, default_value = "28d")]
    max_history: humantime::Duration,
    /// Only this model [default: every member and the ensemble].
    #[arg(long)]
    model: Option<String>,
    /// Also write the table as CSV.
    #[arg(long)]
    output: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct PlanArgs {
    #[command(flatten)]
    input: InputArgs,
    /// Workload file (see workload.example.toml).
    #[arg(long)]
    workload: PathBuf,
    /// How far ahead to plan.
    #[arg(long, default_value = "1d")]
    horizon: String,
    /// Replicas running now [default: what the latest load needs].
    #[arg(long)]
    current_replicas: Option<u32>,
    /// Forecasting model.
    #[arg(long, default_value = "ensemble")]
    model: String,
    /// Output CSV: timestamp,desired,low,high,reason.
    #[arg(long)]
    output: PathBuf,
}

#[derive(Debug, Args)]
struct SimulateArgs {
    #[command(flatten)]
    input: InputArgs,
    /// Workload file (see workload.example.toml).
    #[arg(long)]
    workload: PathBuf,
    /// Days of history to replay (the end of the series).
    #[arg(long, default_value_t = 7.0)]
    days: f64,
    /// How often the predictive strategy replans.
    #[arg(long, default_value = "1h")]
    replan_every: humantime::Duration,
    /// Forecasting model.
    #[arg(long, default_value = "ensemble")]
    model: String,
    /// Write the per-strategy summary as CSV (and the timeline beside it as *.timeline.csv).
    #[arg(long)]
    output: Option<PathBuf>,
    /// Write a PNG chart of demand and each strategy's capacity.
    #[arg(long)]
    chart: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum EventsCommand {
    /// Add (or replace) a planned event.
    Add {
        /// Event name; past events with this name teach its uplift.
        #[arg(long)]
        name: String,
        /// Start (RFC 3339).
        #[arg(long)]
        start: String,
        /// End (RFC 3339).
        #[arg(long)]
        end: String,
        /// Fixed uplift of the base forecast instead of a learned one.
        #[arg(long, conflicts_with = "like")]
        multiplier: Option<f64>,
        /// Learn the uplift from past events of this name.
        #[arg(long)]
        like: Option<String>,
    },
    /// List stored events.
    List,
    /// Remove every event with this name.
    Remove {
        /// Event name.
        name: String,
    },
}

#[derive(Debug, Args)]
struct DemoArgs {
    /// Directory for the demo's outputs (forecast, plan, simulation CSV and chart).
    #[arg(long, default_value = "demo-output")]
    output_dir: PathBuf,
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

#[derive(Debug, Args)]
struct RetrainArgs {
    /// Every stored series.
    #[arg(long, conflicts_with = "series", required_unless_present = "series")]
    all: bool,
    /// Series to retrain (`NAME` or `NAME{k="v"}`); repeatable.
    #[arg(long, num_args = 1..)]
    series: Vec<String>,
    /// Fit and compare, but write nothing to the registry.
    #[arg(long)]
    dry_run: bool,
    /// Series fitted at once [default: `registry.concurrency`].
    #[arg(long)]
    concurrency: Option<usize>,
}

#[derive(Debug, Subcommand)]
enum ModelsCommand {
    /// One line per series: live version, versions stored, backtest figures of the live one.
    List,
    /// Every version of a series with its figures and decision; marks the live one.
    Show {
        /// Series (`NAME` or `NAME{k="v"}`).
        name: String,
    },
    /// Make an earlier version live: VERSION, or by default the previous live version.
    Rollback {
        /// Series (`NAME` or `NAME{k="v"}`).
        name: String,
        /// Version to make live.
        version: Option<u64>,
    },
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
        listen: cli.listen.clone(),
        metrics_listen: cli.metrics_listen.clone(),
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
        Command::Forecast(args) => {
            // Fitted on the window the service fits on.
            let history = args
                .input
                .load(&config)?
                .newest(config.planning.history_window);
            let horizon = app::parse_horizon(&args.horizon, history.step())?;
            let levels = app::parse_levels(&args.levels)?;
            let choice: ModelChoice = args.model.parse()?;
            let model = app::fit(&history, choice)?;
            let forecast = prescale::forecast::Predict::predict(&model, horizon, &levels)?;
            app::write_forecast_csv(&forecast, &args.output)?;
            println!(
                "forecast {} steps of {} from {} with {choice} to {}",
                forecast.len(),
                forecast.step(),
                forecast.start(),
                args.output.display()
            );
            print_model(&model);
        }
        Command::Backtest(args) => {
            let history = args.input.load(&config)?;
            let levels = app::parse_levels(&args.levels)?;
            let backtest = Backtest {
                horizon: app::parse_horizon(&args.horizon, history.step())?,
                folds: args.folds,
                levels: levels.clone(),
                max_history: (args.max_history.as_millis()
                    / history.step().as_duration().as_millis())
                    as usize,
            };
            let choices = match &args.model {
                Some(model) => vec![model.parse()?],
                None => ModelChoice::all(),
            };
            let scores = backtest.run(&history, &choices)?;
            println!(
                "backtest: {} folds of {} steps ({}) on {} points; MASE scaled by the in-sample one-day seasonal naive error",
                backtest.folds,
                backtest.horizon.steps(),
                history.step(),
                history.len()
            );
            print!("{}", app::format_scores(&scores, &levels));
            if let Some(path) = &args.output {
                app::write_scores_csv(&scores, &levels, path)?;
            }
        }
        Command::Plan(args) => {
            let history = args
                .input
                .load(&config)?
                .newest(config.planning.history_window);
            let workload = app::load_workload(&args.workload)?;
            let horizon = app::parse_horizon(&args.horizon, history.step())?;
            let calendar = EventStore::new(&config.data_dir).load()?;
            let outcome = app::build_plan(
                &history,
                &workload,
                horizon,
                &calendar,
                args.model.parse()?,
                args.current_replicas,
            )?;
            app::write_plan_csv(&outcome.plan, &args.output)?;
            print!("{}", outcome.plan);
            for skipped in &outcome.skipped_events {
                println!(
                    "warning: event {skipped} has no past occurrence to learn from; not applied"
                );
            }
            println!(
                "wrote {} plan steps to {}",
                outcome.plan.steps().len(),
                args.output.display()
            );
        }
        Command::Simulate(args) => {
            let history = args.input.load(&config)?;
            let workload = app::load_workload(&args.workload)?;
            let calendar = EventStore::new(&config.data_dir).load()?;
            let report = app::replay(
                &history,
                &workload,
                args.days,
                args.replan_every.into(),
                config.planning.history_window,
                calendar,
                args.model.parse()?,
            )?;
            print!("{report}");
            write_simulation_outputs(&report, args.output.as_deref(), args.chart.as_deref())?;
        }
        Command::Events(command) => events(&config, command)?,
        Command::Demo(args) => crate::demo::run(&config, &args.output_dir)?,
        Command::Serve => serve(&config)?,
        Command::BenchGrpc(args) => crate::bench_grpc::run(&config, &args)?,
        Command::BenchRetrain(args) => crate::bench_retrain::run(&config, &args)?,
        Command::Retrain(args) => retrain(&config, &args)?,
        Command::Models(command) => models(&config, command)?,
    }
    Ok(())
}

/// `prescale retrain`: bounded parallel fits, a progress bar on a terminal, one line per series.
fn retrain(config: &Config, args: &RetrainArgs) -> Result<()> {
    use std::io::IsTerminal;

    let (app, _) = open(config)?;
    let registry = prescale::registry::Registry::open(&config.registry.dir)?;
    let series: Vec<SeriesId> = if args.all {
        app.store().series()
    } else {
        args.series
            .iter()
            .map(|name| name.parse())
            .collect::<Result<_, _>>()?
    };
    let settings = app::RetrainSettings {
        dry_run: args.dry_run,
        events: EventStore::new(&config.data_dir).load()?,
        ..config.retrain_settings(args.concurrency)
    };
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::new(series.len() as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{elapsed_precise} [{bar:40}] {pos}/{len} series, ETA {eta}",
            )
            .expect("invariant: the template is valid")
            .progress_chars("=> "),
        );
        bar
    });
    let started = std::time::Instant::now();
    let line = |series: &SeriesId, result: &Result<app::RetrainOutcome, app::AppError>| {
        let text = match result {
            Ok(outcome) => format!(
                "{series}: {}{} ({})",
                if outcome.promoted {
                    "promoted"
                } else {
                    "kept live"
                },
                outcome
                    .version
                    .map_or_else(|| " (dry run)".to_owned(), |v| format!(" v{v}")),
                outcome.reason
            ),
            Err(error) => format!("{series}: failed: {error}"),
        };
        match &bar {
            Some(bar) => {
                bar.println(text);
                bar.inc(1);
            }
            None => println!("{text}"),
        }
    };
    let results = app::retrain_many(&app, &registry, &series, &settings, &line);
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    let counts = app::RetrainCounts::of(&results);
    let failed = counts.failed;
    println!(
        "retrained {} series in {:.1}s: {} promoted, {} kept, {failed} failed{}",
        results.len(),
        started.elapsed().as_secs_f64(),
        counts.promoted,
        counts.kept,
        if args.dry_run {
            " (dry run: nothing written)"
        } else {
            ""
        }
    );
    if failed > 0 {
        bail!("{failed} of {} series failed", results.len());
    }
    Ok(())
}

/// `prescale models list|show|rollback`.
fn models(config: &Config, command: ModelsCommand) -> Result<()> {
    let registry = prescale::registry::Registry::open(&config.registry.dir)?;
    let figures = |info: &prescale::registry::VersionInfo| {
        format!(
            "mae {} mase {}",
            info.backtest_mae
                .map_or("-".to_owned(), |v| format!("{v:.4}")),
            info.backtest_mase
                .map_or("-".to_owned(), |v| format!("{v:.3}")),
        )
    };
    match command {
        ModelsCommand::List => {
            for (name, entry) in registry.list() {
                let live = entry.live.and_then(|version| entry.version(version));
                println!(
                    "{name}  live {}  {} versions  {}",
                    entry.live.map_or("-".to_owned(), |v| format!("v{v}")),
                    entry.versions.len(),
                    live.map_or(String::new(), figures)
                );
            }
        }
        ModelsCommand::Show { name } => {
            let series: SeriesId = name.parse()?;
            let entry = registry
                .entry(&series)
                .with_context(|| format!("no models of {series}"))?;
            println!("{series} ({})", registry.dir().join(&entry.dir).display());
            for info in &entry.versions {
                let trained = |millis| prescale::domain::Timestamp::from_millis(millis);
                println!(
                    "{} v{}  trained {}..{} ({} points) at {}  prescale {}  {}  crc32 {:08x}  {}",
                    if entry.live == Some(info.version) {
                        "*"
                    } else {
                        " "
                    },
                    info.version,
                    trained(info.trained_from_ms),
                    trained(info.trained_to_ms),
                    info.points,
                    trained(info.created_at_ms),
                    info.prescale_version,
                    figures(info),
                    info.crc32,
                    info.decision
                );
            }
        }
        ModelsCommand::Rollback { name, version } => {
            let series: SeriesId = name.parse()?;
            let live = registry.rollback(&series, version)?;
            println!("{series}: v{live} is live");
        }
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

pub(crate) fn print_series_table(summaries: &[SeriesSummary]) {
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

fn print_model(model: &prescale::forecast::FittedModel) {
    let periods: Vec<String> = model
        .preprocessing()
        .seasonality
        .periods()
        .iter()
        .map(|period| period.steps.to_string())
        .collect();
    let weights: Vec<String> = model
        .weights()
        .iter()
        .filter(|(_, weight)| *weight > 0.0)
        .map(|(kind, weight)| format!("{kind} {weight:.2}"))
        .collect();
    println!(
        "  fitted on {} .. {} ({} points)",
        model.trained_start(),
        model.trained_end(),
        model.preprocessing().points
    );
    println!("  seasonal periods (steps): {}", periods.join(", "));
    if let Some(shift) = model.preprocessing().level_shift {
        let how = match (shift.multiplicative, shift.damping) {
            (true, _) => "scaled".to_owned(),
            (false, Some(factor)) => format!("moved, its wiggle damped by {factor:.2},"),
            (false, None) => "moved".to_owned(),
        };
        println!(
            "  level shift at {}: {:.4} -> {:.4} (older history {how} to the new level)",
            shift.at, shift.before, shift.after,
        );
    }
    println!("  members used: {}", weights.join(", "));
    for (kind, reason) in model.report().skipped() {
        if !reason.is_empty() {
            println!("  skipped {kind}: {reason}");
        }
    }
}

pub(crate) fn write_simulation_outputs(
    report: &prescale::simulate::SimulationReport,
    output: Option<&Path>,
    chart: Option<&Path>,
) -> Result<()> {
    if let Some(path) = output {
        report.write_summary_csv(std::fs::File::create(path)?)?;
        let timeline = path.with_extension("timeline.csv");
        report.write_timeline_csv(std::fs::File::create(&timeline)?)?;
        println!("wrote {} and {}", path.display(), timeline.display());
    }
    if let Some(path) = chart {
        report.write_png(path, (1600, 700))?;
        println!("wrote chart {}", path.display());
    }
    Ok(())
}

fn events(config: &Config, command: EventsCommand) -> Result<()> {
    let store = EventStore::new(&config.data_dir);
    match command {
        EventsCommand::Add {
            name,
            start,
            end,
            multiplier,
            like,
        } => {
            store.add(&EventSpec {
                name: name.clone(),
                start,
                end,
                multiplier,
                like,
            })?;
            println!("stored event {name}");
        }
        EventsCommand::List => {
            let calendar = store.load()?;
            if calendar.events().is_empty() {
                println!("no events stored");
            }
            for event in calendar.events() {
                let uplift = match event.uplift() {
                    prescale::events::Uplift::Learned => "learned from past occurrences".to_owned(),
                    prescale::events::Uplift::Like(past) => format!("learned from {past}"),
                    prescale::events::Uplift::Multiplier(multiplier) => format!("x{multiplier}"),
                };
                println!(
                    "{:<24} {} .. {}  {uplift}",
                    event.name(),
                    event.range().from(),
                    event.range().to()
                );
            }
        }
        EventsCommand::Remove { name } => {
            let removed = store.remove(&name)?;
            println!("removed {removed} event(s) named {name}");
        }
    }
    Ok(())
}

/// The demo workload: NYC taxi demand scaled so the weekly peak needs about 50 replicas at 70%.
pub(crate) const DEMO_WORKLOAD: &str = r#"
name = "nyc-taxi-dispatch"
series = "nyc_taxi"
capacity_per_replica = 823.0
target_utilisation = 70
min_replicas = 2
max_replicas = 100
warm_up = "10m"
planning_level = 95
mode = "forecast-only"
[scale_in]
stabilisation_window = "30m"
"#;

/// The multi-threaded runtime `serve` and `demo` run on.
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    let interrupt = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => tracing::info!("received SIGINT"),
        () = terminate => tracing::info!("received SIGTERM"),
    }
}

/// `prescale serve`: the store, the planner and the gRPC and metrics endpoints until a signal.
fn serve(config: &Config) -> Result<()> {
    let (app, store) = open(config)?;
    if let Some(retention) = config.store.retention {
        store.enforce_retention(prescale::domain::Timestamp::now(), retention)?;
    }
    let metrics = Arc::new(prescale::app::metrics::Metrics::default());
    let settings = prescale::app::Settings {
        models_dir: Some(config.registry.dir.clone()),
        promotion_margin: config.registry.promotion_margin,
        retrain_schedule: config.registry.schedule.clone(),
        registry_watch: config.registry.watch_interval,
        ..config.planning.clone()
    };
    let state =
        prescale::app::AppState::open(app, &config.data_dir, settings, Arc::clone(&metrics))?;
    runtime()?.block_on(async {
        let listener = tokio::net::TcpListener::bind(config.server.listen)
            .await
            .with_context(|| format!("binding {}", config.server.listen))?;
        println!(
            "prescale serving gRPC on {} ({}, {})",
            listener.local_addr()?,
            if config.server.options.tls.is_some() {
                "TLS"
            } else {
                "plaintext"
            },
            if config.server.options.tokens.is_empty() {
                "no auth"
            } else {
                "bearer tokens"
            },
        );
        let stop_metrics = tokio_util::sync::CancellationToken::new();
        let metrics_task = match config.server.metrics_listen {
            Some(address) => {
                let listener = tokio::net::TcpListener::bind(address)
                    .await
                    .with_context(|| format!("binding the metrics endpoint {address}"))?;
                println!("metrics on http://{}/metrics", listener.local_addr()?);
                Some(tokio::spawn(prescale::service::serve_metrics(
                    listener,
                    metrics,
                    stop_metrics.clone().cancelled_owned(),
                )))
            }
            None => None,
        };
        prescale::service::serve(
            listener,
            state,
            config.server.options.clone(),
            shutdown_signal(),
        )
        .await?;
        stop_metrics.cancel();
        if let Some(task) = metrics_task {
            task.await??;
        }
        println!("prescale stopped; store flushed");
        Ok(())
    })
}
