//! Flags more than one command takes: the configuration keys a flag overrides (data directory,
//! fsync, retention), a series named on the command line, and where a command's history comes from.
//!
//! Each command flattens the flag groups whose values it uses, so its `--help` lists those and no
//! others; names, environment variables and defaults are those of the configuration keys (see the
//! configuration table in README.md).

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;
use prescale::app::load_input_file;
use prescale::config::{Config, Overrides};
use prescale::domain::{SeriesId, Step, TimeSeries};

/// Flags that stand for configuration keys: each writes its value, if given, into the overrides.
pub(super) trait Override {
    /// Sets the overrides this flag group stands for.
    fn apply(&self, overrides: &mut Overrides);

    /// The overrides of this flag group alone.
    fn overrides(&self) -> Overrides {
        let mut overrides = Overrides::default();
        self.apply(&mut overrides);
        overrides
    }
}

/// `--data-dir`: commands that read or write the store, its events or its model registry.
#[derive(Debug, Args)]
pub(super) struct DataDirArg {
    /// Directory of the metric store [default: ./data].
    #[arg(long, env = "PRESCALE_DATA_DIR")]
    data_dir: Option<PathBuf>,
}

impl Override for DataDirArg {
    fn apply(&self, overrides: &mut Overrides) {
        overrides.data_dir.clone_from(&self.data_dir);
    }
}

/// `--fsync`: commands that write samples to a store.
#[derive(Debug, Args)]
pub(super) struct FsyncArg {
    /// Flush every write to disk before acknowledging it (true/false).
    #[arg(long, env = "PRESCALE_FSYNC")]
    fsync: Option<bool>,
}

impl Override for FsyncArg {
    fn apply(&self, overrides: &mut Overrides) {
        overrides.fsync = self.fsync;
    }
}

/// `--retention`: commands that open a store (it is enforced on open) or serve one.
#[derive(Debug, Args)]
pub(super) struct RetentionArg {
    /// Drop samples older than this (e.g. 90d), or `off`.
    #[arg(long, env = "PRESCALE_RETENTION")]
    retention: Option<String>,
}

impl Override for RetentionArg {
    fn apply(&self, overrides: &mut Overrides) {
        overrides.retention.clone_from(&self.retention);
    }
}

/// The configured store's flags: where it is and how it keeps data.
#[derive(Debug, Args)]
pub(super) struct StoreArgs {
    #[command(flatten)]
    data_dir: DataDirArg,
    #[command(flatten)]
    fsync: FsyncArg,
    #[command(flatten)]
    retention: RetentionArg,
}

impl Override for StoreArgs {
    fn apply(&self, overrides: &mut Overrides) {
        self.data_dir.apply(overrides);
        self.fsync.apply(overrides);
        self.retention.apply(overrides);
    }
}

/// A series named on the command line: `NAME` or `NAME{k="v"}`, plus `--label k=v` flags.
#[derive(Debug, Args)]
pub(super) struct SeriesArgs {
    /// Extra label `key=value` (repeatable).
    #[arg(long = "label", value_name = "KEY=VALUE")]
    labels: Vec<String>,
}

impl SeriesArgs {
    /// The series `name` with the `--label` flags added to its labels.
    pub(super) fn resolve(&self, name: &str) -> Result<SeriesId> {
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

/// Where a command's history comes from: a file, or a stored series.
#[derive(Debug, Args)]
pub(super) struct InputArgs {
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
    /// The store `--series` is read from.
    #[command(flatten)]
    pub(super) store: StoreArgs,
}

impl InputArgs {
    /// The file, or the stored series resampled to `--step`.
    pub(super) fn load(&self, config: &Config) -> Result<TimeSeries> {
        if let Some(path) = &self.input {
            return load_input_file(path, self.step)
                .with_context(|| format!("reading {}", path.display()));
        }
        let name = self
            .series
            .as_deref()
            .expect("invariant: clap requires --input or --series");
        let series = self.labels.resolve(name)?;
        let app = super::open_read_only(config)?;
        Ok(app.regular_series(&series, self.step)?)
    }
}
