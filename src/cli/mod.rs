//! Command-line interface: parses flags, loads the configuration, and calls the use cases in `app`.
//!
//! One file per command group; [`args`] holds the flags several commands share. Only `--config` and
//! `-v` are global: every other flag is on the commands that use it (see [`args::Override`]).

mod args;
mod events;
mod fleet_models;
mod forecasting;
mod models;
mod retrain_client;
mod series_client;
mod serve;
mod server_client;
mod source;
mod store;
mod workloads;
mod workloads_output;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use prescale::app::{EVENTS_FILE, History};
use prescale::config::{Config, Overrides};
use prescale::registry::Registry;
use prescale::store::{PolarsStore, STORE_ENTRIES};
use tracing_subscriber::EnvFilter;

use crate::output::StdoutClosed;

use args::{FsyncArg, Override, RetentionArg};

/// Predictive scaling: forecast each workload's load and pre-scale ahead of demand.
#[derive(Debug, Parser)]
#[command(name = "prescale", version, about)]
struct Cli {
    /// Configuration file [default: ./prescale.toml if present].
    #[arg(long, global = true, env = "PRESCALE_CONFIG")]
    config: Option<PathBuf>,
    /// More log output on stderr (-v info, -vv debug); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Import a CSV (`timestamp,value`) or Parquet file into a series, all rows or none; or pull
    /// it from a Prometheus-compatible API (`--prometheus URL --query EXPR`).
    Import(store::ImportArgs),
    /// Inspect stored series.
    #[command(subcommand)]
    Series(store::SeriesCommand),
    /// Export a series resampled to a fixed step as `timestamp,value` CSV.
    Export(store::ExportArgs),
    /// Forecast a series with prediction intervals and write it as CSV.
    Forecast(forecasting::ForecastArgs),
    /// Rolling-origin backtest of every model (or one) on a series: MASE, sMAPE, coverage, width, time.
    Backtest(forecasting::BacktestArgs),
    /// Turn a forecast into a pre-scaling plan for a workload.
    Plan(forecasting::PlanArgs),
    /// Replay history: predictive plans vs the Kubernetes HPA vs an oracle.
    Simulate(forecasting::SimulateArgs),
    /// Planned events (launches, sales) whose uplift is learned from history.
    #[command(subcommand)]
    Events(events::EventsCommand),
    /// Run the whole pipeline on the embedded sample data through an in-process gRPC server.
    Demo(DemoArgs),
    /// Serve the gRPC API (ingest, forecasts, plans, events, admin) until SIGINT/SIGTERM.
    Serve(serve::ServeArgs),
    /// The workloads of a running server (`--server URL`): apply a workload.toml, list, show with
    /// the current plan, delete.
    #[command(subcommand)]
    Workloads(workloads::WorkloadsCommand),
    /// Load-test the gRPC API on loopback: GetPlan latency and throughput, Push samples/s.
    BenchGrpc {
        #[command(flatten)]
        args: crate::bench_grpc::BenchArgs,
        /// The in-process server's retention.
        #[command(flatten)]
        retention: RetentionArg,
    },
    /// Soak a `prescale serve` of its own with mixed load, reporting its memory and GetPlan latency.
    BenchSoak(crate::bench_soak::SoakArgs),
    /// Time the retraining job over synthetic series in a temporary store (cold, then nightly).
    BenchRetrain {
        #[command(flatten)]
        args: crate::bench_retrain::BenchRetrainArgs,
        /// The benchmark store's retention.
        #[command(flatten)]
        retention: RetentionArg,
    },
    /// Retrain series into the model registry, promoting each new model only when it is not worse
    /// than the live one on the same recent window. Exits non-zero when any series failed.
    Retrain(models::RetrainArgs),
    /// Inspect the model registry and roll back.
    #[command(subcommand)]
    Models(models::ModelsCommand),
}

impl Command {
    /// The configuration keys this command's flags override.
    fn overrides(&self) -> Overrides {
        match self {
            Self::Import(args) => args.store.overrides(),
            Self::Series(command) => command.store().overrides(),
            Self::Export(args) => args.store.overrides(),
            Self::Forecast(args) => args.input.store.overrides(),
            Self::Backtest(args) => args.input.store.overrides(),
            Self::Plan(args) => args.input.store.overrides(),
            Self::Simulate(args) => args.input.store.overrides(),
            Self::Events(command) => command.data_dir().overrides(),
            Self::Demo(args) => args.overrides(),
            Self::Serve(args) => args.overrides(),
            Self::BenchGrpc { retention, .. } | Self::BenchRetrain { retention, .. } => {
                retention.overrides()
            }
            Self::Retrain(args) => args.store.overrides(),
            Self::BenchSoak(_) | Self::Workloads(_) => Overrides::default(),
            Self::Models(command) => command.data_dir().overrides(),
        }
    }
}

#[derive(Debug, Args)]
struct DemoArgs {
    /// Directory for the demo's outputs (forecast, plan, simulation CSV and chart).
    #[arg(long, default_value = "demo-output")]
    output_dir: PathBuf,
    /// The demo runs on a temporary store and never reads this; accepted (and hidden) so that
    /// scripts passing `--data-dir` to every command keep working.
    #[arg(long, env = "PRESCALE_DATA_DIR", hide = true)]
    data_dir: Option<PathBuf>,
    /// How the demo's temporary store writes.
    #[command(flatten)]
    fsync: FsyncArg,
    /// The demo server's retention.
    #[command(flatten)]
    retention: RetentionArg,
    /// Pull the demo workload's history from this Prometheus-compatible API (e.g.
    /// http://127.0.0.1:9090) instead of the embedded samples, and plan on it.
    #[arg(long, value_name = "URL")]
    prometheus: Option<String>,
    /// PromQL returning the one series the workload's load is (with --prometheus).
    #[arg(
        long,
        requires = "prometheus",
        default_value = "sum(rate(prometheus_http_requests_total[5m]))"
    )]
    query: String,
}

impl Override for DemoArgs {
    fn apply(&self, overrides: &mut Overrides) {
        overrides.data_dir.clone_from(&self.data_dir);
        self.fsync.apply(overrides);
        self.retention.apply(overrides);
    }
}

/// Entry point: runs the command and maps failure to exit code 1 with the error chain on stderr.
/// Connects to the fleet's etcd (over TLS when its endpoints are `https://`).
async fn connect_etcd(
    fleet: &prescale::config::FleetConfig,
) -> Result<prescale::fleet::etcd::Etcd> {
    prescale::fleet::etcd::Etcd::connect_with(
        &fleet.etcd_endpoints,
        fleet.etcd_timeout,
        fleet.etcd_tls.as_ref(),
    )
    .await
    .context("fleet mode ([fleet] in the config) needs etcd")
}

pub(crate) fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        // The reader of the output went away (`| head`): it has what it wanted.
        Err(error) if error.downcast_ref::<StdoutClosed>().is_some() => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {}", error_text(&error));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes joined by `: `, leaving out a cause whose text the message already
/// holds (an error that names its source in its own message, as `cannot read {path}: {source}`).
/// A server's answer reads `CODE: message` (`NOT_FOUND: unknown workload "api"`), not tonic's
/// description of the code with the message quoted.
fn error_text(error: &anyhow::Error) -> String {
    let cause_text =
        |cause: &(dyn std::error::Error + 'static)| match cause.downcast_ref::<tonic::Status>() {
            Some(status) => format!(
                "{}: {}",
                prescale::service::code_name(status.code()),
                status.message()
            ),
            None => cause.to_string(),
        };
    let mut text = cause_text(error.as_ref());
    for cause in error.chain().skip(1) {
        let cause = cause_text(cause);
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
    }
    text
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
    let config = Config::load(cli.config.as_deref(), &cli.command.overrides())?;
    match cli.command {
        Command::Import(args) => store::import(&config, &args),
        Command::Series(command) => store::series(&config, &command),
        Command::Export(args) => store::export(&config, &args),
        Command::Forecast(args) => forecasting::forecast(&config, &args),
        Command::Backtest(args) => forecasting::backtest(&config, &args),
        Command::Plan(args) => forecasting::plan(&config, &args),
        Command::Simulate(args) => forecasting::simulate(&config, &args),
        Command::Events(command) => events::events(&config, command),
        Command::Demo(args) => {
            let prometheus = args.prometheus.map(|url| crate::demo::PrometheusDemo {
                url,
                query: args.query,
            });
            crate::demo::run(&config, &args.output_dir, prometheus.as_ref())
        }
        Command::Serve(_) => serve::serve(&config),
        Command::Workloads(command) => workloads::workloads(&command),
        Command::BenchGrpc { args, .. } => crate::bench_grpc::run(&config, &args),
        Command::BenchSoak(args) => crate::bench_soak::run(&args),
        Command::BenchRetrain { args, .. } => crate::bench_retrain::run(&config, &args),
        Command::Retrain(args) => models::retrain(&config, &args),
        Command::Models(command) => models::models(&config, command),
    }
}

/// Where the data directory's path is set, for the errors refusing it.
const DATA_DIR_SETTING: &str = "--data-dir, PRESCALE_DATA_DIR or data_dir in the configuration";

/// What a command does with the data directory, which decides whether a missing one is created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DataDirUse {
    /// Reads what is stored, or changes or removes it: a directory that does not exist, or that
    /// holds nothing of a store, is refused rather than created or read as an empty store, so a
    /// mistyped `--data-dir` (or `--data-dir ~`) is an error, not an empty store reported as such.
    Existing,
    /// Stores new data (import, retrain, serve, events add): a missing directory is created.
    Create,
}

impl DataDirUse {
    /// The configured data directory, once one that is missing or holds no store is refused where
    /// the command may not create it.
    fn data_dir(self, config: &Config) -> Result<&Path> {
        let dir = &config.data_dir;
        self.check("data directory", dir, DATA_DIR_SETTING)?;
        if self == Self::Existing && !holds_store(dir)? {
            bail!(
                "data directory {} holds no prescale store: none of {} is in it (check {DATA_DIR_SETTING})",
                dir.display(),
                store_marks().join(", ")
            );
        }
        Ok(dir)
    }

    /// Refuses a missing `dir` where the command may not create it; `what` and `setting` (where its
    /// path was set) are for the error.
    fn check(self, what: &str, dir: &Path, setting: &str) -> Result<()> {
        if self == Self::Create {
            return Ok(());
        }
        match std::fs::metadata(dir) {
            Ok(metadata) if metadata.is_dir() => Ok(()),
            Ok(_) => bail!(
                "{what} {} is not a directory (check {setting})",
                dir.display()
            ),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                bail!("{what} {} does not exist (check {setting})", dir.display())
            }
            Err(error) => {
                Err(error).with_context(|| format!("cannot read {what} {}", dir.display()))
            }
        }
    }
}

/// What tells a directory prescale stored data in: the entries every opened store has, and the
/// events file (`events add` writes it without opening the store).
fn store_marks() -> Vec<&'static str> {
    let mut marks = STORE_ENTRIES.to_vec();
    marks.push(EVENTS_FILE);
    marks
}

/// True when `dir` holds any of [`store_marks`].
fn holds_store(dir: &Path) -> Result<bool> {
    for mark in store_marks() {
        let path = dir.join(mark);
        if path
            .try_exists()
            .with_context(|| format!("cannot read {}", path.display()))?
        {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Opens the configured store to change it, and an app over it; `access` says whether a missing
/// data directory is created or refused. It takes the store's lock, so it fails while a server
/// serves the store.
fn open(config: &Config, access: DataDirUse) -> Result<(History, Arc<PolarsStore>)> {
    let dir = access.data_dir(config)?;
    let store = Arc::new(
        PolarsStore::open(dir, config.store_options())
            .with_context(|| format!("opening store in {}", dir.display()))?,
    );
    Ok((History::new(store.clone()), store))
}

/// Opens the configured store read-only, and an app over it, for a command that only reads: it
/// changes nothing in the data directory and reads beside a server serving the same store.
fn open_read_only(config: &Config) -> Result<History> {
    let dir = DataDirUse::Existing.data_dir(config)?;
    let store = PolarsStore::open_read_only(dir, config.store_options())
        .with_context(|| format!("reading store in {}", dir.display()))?;
    Ok(History::new(Arc::new(store)))
}

/// Opens the configured model registry; `access` as for [`open`].
///
/// A command that stores data creates the registry directory. The others neither create it nor
/// require it: it appears with the first trained model, so while the data directory is a store it
/// may be missing and reads as a registry with no model. They check the data directory as [`open`]
/// does, except that an existing `registry.dir` is enough alone, and one missing beside a data
/// directory that is no store is refused as missing.
fn open_registry(config: &Config, access: DataDirUse) -> Result<Registry> {
    let dir = config.models_dir();
    let keep = config.settings.keep_versions;
    if access == DataDirUse::Create {
        return Ok(Registry::open(dir)?.with_keep_versions(keep));
    }
    match &config.settings.models_dir {
        Some(registry_dir) if registry_dir.exists() || access.data_dir(config).is_err() => {
            access.check(
                "registry directory",
                registry_dir,
                "registry.dir in the configuration",
            )?;
        }
        Some(_) | None => {
            access.data_dir(config)?;
        }
    }
    Ok(Registry::open_without_creating(dir)?.with_keep_versions(keep))
}

#[cfg(test)]
mod tests {
    use super::error_text;

    #[test]
    fn an_error_naming_its_source_prints_the_source_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let error = anyhow::Error::new(prescale::app::AppError::Input {
            path: "w.toml".into(),
            source: io,
        })
        .context("plan");
        assert_eq!(error_text(&error), "plan: cannot read w.toml: no such file");
    }

    #[test]
    fn causes_the_message_leaves_out_are_appended() {
        let error = anyhow::anyhow!("connection refused").context("fleet mode needs etcd");
        assert_eq!(
            error_text(&error),
            "fleet mode needs etcd: connection refused"
        );
    }

    #[test]
    fn a_servers_answer_reads_as_its_code_and_message() {
        let error = anyhow::Error::new(tonic::Status::not_found("unknown workload \"api\""))
            .context("getting workload api");
        assert_eq!(
            error_text(&error),
            "getting workload api: NOT_FOUND: unknown workload \"api\""
        );
    }
}
