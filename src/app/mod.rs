//! Use cases: what the CLI (and later the gRPC service) asks of prescale, over a shared [`App`].

mod samples;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::domain::{Aggregation, SeriesId, Step, TimeRange, TimeSeries};
use crate::ingest::{self, BadRowPolicy, IngestError, SkippedRow};
use crate::store::{MetricStore, SeriesSummary, StoreError};

pub use samples::{SAMPLE_SERIES, SampleSeries};

/// Errors of the use cases.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The store refused or failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An input file could not be read.
    #[error(transparent)]
    Ingest(#[from] IngestError),
    /// Writing an output file failed.
    #[error("cannot write {path}: {source}")]
    Output {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// What an import stored and skipped.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportReport {
    /// The series written to.
    pub series: SeriesId,
    /// Samples stored.
    pub accepted: usize,
    /// Rows left out under `--skip-bad-rows`.
    pub skipped: Vec<SkippedRow>,
}

/// The application: a store plus the use cases over it. Holds no process-global state, so several can
/// live in one process (tests, shards).
#[derive(Debug, Clone)]
pub struct App {
    /// Metric history, behind the trait so another backend can replace it.
    store: Arc<dyn MetricStore>,
}

impl App {
    /// An application over `store`.
    pub fn new(store: Arc<dyn MetricStore>) -> Self {
        Self { store }
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn MetricStore> {
        &self.store
    }

    /// Imports a CSV or Parquet file into `series`: all rows or, under [`BadRowPolicy::Skip`], the good ones.
    pub fn import_file(
        &self,
        series: &SeriesId,
        path: &Path,
        policy: BadRowPolicy,
    ) -> Result<ImportReport, AppError> {
        let parsed = ingest::read_file(path, policy)?;
        let accepted = self.store.append(series, &parsed.samples)?;
        Ok(ImportReport {
            series: series.clone(),
            accepted,
            skipped: parsed.skipped,
        })
    }

    /// Summaries of every series.
    pub fn list_series(&self) -> Result<Vec<SeriesSummary>, AppError> {
        self.store
            .series()
            .iter()
            .map(|series| self.store.summary(series).map_err(AppError::from))
            .collect()
    }

    /// The whole history of `series` on a grid of `step` aligned to multiples of `step` since the epoch.
    pub fn full_window(
        &self,
        series: &SeriesId,
        step: Step,
        agg: Aggregation,
    ) -> Result<TimeSeries, AppError> {
        let summary = self.store.summary(series)?;
        let (Some(first), Some(last)) = (summary.first, summary.last) else {
            return Err(StoreError::UnknownSeries {
                series: series.clone(),
            }
            .into());
        };
        let from = first.floor_to(step);
        let to = last.floor_to(step).saturating_add_millis(step.as_millis());
        let range = TimeRange::new(from, to).expect("invariant: floor(last) + step > floor(first)");
        Ok(self.store.window(series, range, step, agg)?)
    }

    /// Writes the whole history of `series` resampled to `step` as `timestamp,value` CSV; empty buckets
    /// have an empty value. Returns the number of rows written.
    pub fn export_csv(
        &self,
        series: &SeriesId,
        step: Step,
        agg: Aggregation,
        path: &Path,
    ) -> Result<usize, AppError> {
        let window = self.full_window(series, step, agg)?;
        let output_error = |source| AppError::Output {
            path: path.to_owned(),
            source,
        };
        let file = std::fs::File::create(path).map_err(output_error)?;
        let mut out = std::io::BufWriter::new(file);
        writeln!(out, "timestamp,value").map_err(output_error)?;
        for (time, value) in window.iter() {
            if value.is_nan() {
                writeln!(out, "{time},").map_err(output_error)?;
            } else {
                writeln!(out, "{time},{value}").map_err(output_error)?;
            }
        }
        out.flush().map_err(output_error)?;
        Ok(window.len())
    }

    /// Imports the embedded sample series (the demo's input); returns one report per series.
    pub fn import_samples(&self) -> Result<Vec<ImportReport>, AppError> {
        SAMPLE_SERIES
            .iter()
            .map(|sample| {
                let series = sample.series_id();
                let parsed = ingest::parse_csv(
                    sample.csv.as_bytes(),
                    Path::new(sample.file_name),
                    BadRowPolicy::Reject,
                )?;
                let accepted = self.store.append(&series, &parsed.samples)?;
                Ok(ImportReport {
                    series,
                    accepted,
                    skipped: parsed.skipped,
                })
            })
            .collect()
    }
}
