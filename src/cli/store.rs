//! The commands on the metric store: `import`, `series list|show|delete` and `export`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use prescale::config::Config;
use prescale::domain::{Aggregation, Step};
use prescale::ingest::BadRowPolicy;
use prescale::store::MetricStore;

use super::args::{SeriesArgs, StoreArgs};
use super::server_client::ServerArgs;
use super::source::{PrometheusImportArgs, import_prometheus};
use super::{DataDirUse, open, open_read_only, series_client};
use crate::output::{outln, print_import, print_series_details, print_series_table};

#[derive(Debug, Args)]
pub(super) struct ImportArgs {
    /// Series to import into (`NAME` or `NAME{k="v"}`).
    #[arg(long)]
    series: String,
    #[command(flatten)]
    labels: SeriesArgs,
    /// Import the good rows and report the bad ones instead of importing nothing.
    #[arg(long)]
    skip_bad_rows: bool,
    /// CSV or Parquet file (told apart by content).
    #[arg(required_unless_present = "prometheus", conflicts_with = "prometheus")]
    file: Option<PathBuf>,
    #[command(flatten)]
    prometheus: PrometheusImportArgs,
    #[command(flatten)]
    pub(super) store: StoreArgs,
}

#[derive(Debug, Subcommand)]
pub(super) enum SeriesCommand {
    /// One line per series: samples, extent, median step, gaps (no gaps with `--server`, which
    /// pages through the server's `ListSeries`).
    List {
        #[command(flatten)]
        store: StoreArgs,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Details of one series, including its longest gaps.
    Show {
        /// Series (`NAME` or `NAME{k="v"}`).
        name: String,
        #[command(flatten)]
        labels: SeriesArgs,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Delete a series and every sample of it, durably. Workloads on it keep their last plan; its
    /// models stay in the registry. With `--server`, through the server's `DeleteSeries`.
    Delete {
        /// Series (`NAME` or `NAME{k="v"}`), exactly as stored.
        name: String,
        #[command(flatten)]
        labels: SeriesArgs,
        #[command(flatten)]
        store: StoreArgs,
        #[command(flatten)]
        server: ServerArgs,
    },
}

impl SeriesCommand {
    /// The store the command reads.
    pub(super) fn store(&self) -> &StoreArgs {
        match self {
            Self::List { store, .. } | Self::Show { store, .. } | Self::Delete { store, .. } => {
                store
            }
        }
    }
}

#[derive(Debug, Args)]
pub(super) struct ExportArgs {
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
    #[command(flatten)]
    pub(super) store: StoreArgs,
}

/// `prescale import`: all rows or none, unless `--skip-bad-rows`; checkpointed before it returns.
/// With `--prometheus`, the series is pulled from there instead of a file.
pub(super) fn import(config: &Config, args: &ImportArgs) -> Result<()> {
    let (app, store) = open(config, DataDirUse::Create)?;
    let series = args.labels.resolve(&args.series)?;
    let Some(file) = &args.file else {
        let stored = import_prometheus(store.as_ref(), &series, &args.prometheus)
            .context("importing from Prometheus")?;
        store.checkpoint()?;
        outln!("imported {stored} samples from Prometheus into {series}")?;
        return Ok(());
    };
    let policy = if args.skip_bad_rows {
        BadRowPolicy::Skip
    } else {
        BadRowPolicy::Reject
    };
    let report = app
        .import_file(&series, file, policy)
        .with_context(|| format!("importing {}", file.display()))?;
    store.checkpoint()?;
    print_import(&report, file)?;
    Ok(())
}

/// `prescale series list|show|delete`, on the store or, with `--server`, through the server.
pub(super) fn series(config: &Config, command: &SeriesCommand) -> Result<()> {
    match command {
        SeriesCommand::List { server, .. } => {
            if let Some(target) = server.target() {
                return series_client::list_on_server(&target);
            }
            print_series_table(&open_read_only(config)?.list_series()?)?;
        }
        SeriesCommand::Show { name, labels, .. } => {
            let series = labels.resolve(name)?;
            let app = open_read_only(config)?;
            print_series_details(&app.store().summary(&series)?)?;
        }
        SeriesCommand::Delete {
            name,
            labels,
            server,
            ..
        } => {
            let series = labels.resolve(name)?;
            if let Some(target) = server.target() {
                return series_client::delete_on_server(&target, &series);
            }
            let (_, store) = open(config, DataDirUse::Existing)?;
            let samples = store.delete_series(&series)?;
            outln!("deleted {series} ({samples} samples)")?;
        }
    }
    Ok(())
}

/// `prescale export`: the series resampled to `--step`, as CSV.
pub(super) fn export(config: &Config, args: &ExportArgs) -> Result<()> {
    let app = open_read_only(config)?;
    let series = args.labels.resolve(&args.name)?;
    let rows = app.export_csv(&series, args.step, args.agg, &args.file)?;
    outln!(
        "wrote {rows} rows of {series} ({} {}) to {}",
        args.step,
        args.agg,
        args.file.display()
    )?;
    Ok(())
}
