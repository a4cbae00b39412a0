//! Use cases: what the CLI and the gRPC service ask of prescale. [`History`] is the metric store with
//! the one-shot use cases over it (import, list, regular windows, export), which the CLI runs;
//! [`ServingState`] is what a serving process holds on top of it (workloads, plans, live models,
//! jobs, background tasks).

mod clock;
mod event_forecasts;
mod fit_pool;
mod forecasting;
mod planning;
mod retrain;
mod samples;
mod serving;
mod slo;
pub mod telemetry;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::domain::{Aggregation, DomainError, SeriesId, Step, TimeRange, TimeSeries, Timestamp};
use crate::forecast::{ForecastError, HistoryWindow};
use crate::ingest::{self, BadRowPolicy, IngestError, SkippedRow};
use crate::store::{MetricStore, SeriesSummary, StoreError, timestamp_refusal};

pub use clock::{Clock, SystemClock, TokioClock};
pub use event_forecasts::forecast_with_events;
pub use fit_pool::{FitPool, FitPriority};
pub use forecasting::{
    Backtest, ModelChoice, ModelScore, fit, fit_served, forecaster, format_scores, parse_horizon,
    parse_levels, unfitted_level_shift, write_forecast_csv, write_scores_csv,
};
pub use planning::{
    EVENTS_FILE, EventStore, PlanOutcome, build_plan, load_workload, write_plan_csv,
};
pub use retrain::{
    Comparison, RetrainCounts, RetrainOutcome, RetrainSettings, compare, fit_candidate,
    retrain_many, retrain_series,
};
pub use samples::{SAMPLE_MODELS, SAMPLE_SERIES, SampleSeries, install_sample_models};
pub use serving::{
    Applied, CachedModel, Job, JobState, Placement, PlanState, PublishedPlan, ServedForecast,
    ServingState, Settings, SourceStatus, SourceTiming, Unavailable, model_version,
};
pub use slo::{
    HpaMatch, ReplayFits, RulePoint, SloReplay, choose_rule, replay_folds, replay_with_slo,
    simulate_params,
};

/// Errors of the use cases.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// A domain value is out of range.
    #[error(transparent)]
    Domain(#[from] DomainError),
    /// The store refused or failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An input file could not be read.
    #[error(transparent)]
    Ingest(#[from] IngestError),
    /// Fitting or predicting failed.
    #[error(transparent)]
    Forecast(#[from] ForecastError),
    /// An event is invalid or the events file cannot be read.
    #[error(transparent)]
    Events(crate::events::EventError),
    /// A workload is invalid or no plan could be built.
    #[error(transparent)]
    Plan(crate::plan::PlanError),
    /// The model registry failed.
    #[error(transparent)]
    Registry(#[from] crate::registry::RegistryError),
    /// A replay could not run.
    #[error(transparent)]
    Simulate(crate::simulate::SimulateError),
    /// A request value (horizon, level, model name) is malformed.
    #[error("{reason}")]
    InvalidRequest {
        /// What is wrong.
        reason: String,
    },
    /// A temporary store for a file given with `--input` could not be created.
    #[error("cannot create a temporary store: {source}")]
    TemporaryStore {
        /// The underlying error.
        source: std::io::Error,
    },
    /// A series has fewer than two samples, so no step can be inferred from it.
    #[error(
        "series {} has {samples} samples; at least two are needed to infer its step",
        .series.abbreviated()
    )]
    NoStep {
        /// The series.
        series: SeriesId,
        /// How many samples it has.
        samples: usize,
    },
    /// A named workload, job or event does not exist.
    #[error("unknown {kind} {}", crate::domain::quoted(.name))]
    NotFound {
        /// What was looked for: `workload`, `job`, `event`.
        kind: &'static str,
        /// Its name or id.
        name: String,
    },
    /// A plan is still being computed for the first time.
    #[error(
        "the first plan of workload {} is still being computed",
        crate::domain::quoted(.workload)
    )]
    PlanPending {
        /// The workload.
        workload: String,
    },
    /// The server is shutting down and takes no more work.
    #[error("shutting down")]
    ShuttingDown,
    /// The live model of a series cannot forecast from its newest data (its step changed, say) and
    /// is being refitted in the background; plans stay as they were until then.
    #[error("the model of series {} is being refitted: {reason}", .series.abbreviated())]
    Refitting {
        /// The series.
        series: SeriesId,
        /// Why the live model could not be re-anchored.
        reason: String,
    },
    /// A background worker failed (panicked or was cancelled).
    #[error("worker failed: {reason}")]
    Worker {
        /// What happened.
        reason: String,
    },
    /// Reading a file (a workload, the stored events or workloads) failed.
    #[error("cannot read {path}: {source}")]
    Input {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Writing an output file failed.
    #[error("cannot write {path}: {source}")]
    Output {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// In a fleet, a fleet-wide write was refused (this replica is no longer the member it was) or
    /// etcd failed.
    #[error("fleet: {reason}")]
    Fleet {
        /// What happened.
        reason: String,
    },
    /// In a fleet, pushed samples could not be written through to the TSDB: nothing was stored.
    #[error("samples not stored: {0}")]
    TsdbWrite(#[from] crate::ingest::prometheus::RemoteWriteError),
    /// In a fleet, this replica has lost etcd (its lease renewals failed) and serves its last
    /// plans read-only: it changes nothing fleet-wide until etcd answers and it has registered
    /// again.
    #[error(
        "fleet: replica {member} has lost etcd and serves its last plans read-only; {operation} is refused until etcd answers again (retry, or use another replica)"
    )]
    FleetReadOnly {
        /// This replica's member id.
        member: String,
        /// What was refused.
        operation: &'static str,
    },
}

/// Reads a `--input` file into a regular series on its median step (or `step`), through a temporary
/// store, so file input is regularised exactly like stored history.
pub fn load_input_file(path: &Path, step: Option<Step>) -> Result<TimeSeries, AppError> {
    let directory = tempfile::tempdir().map_err(|source| AppError::TemporaryStore { source })?;
    let store =
        crate::store::PolarsStore::open(directory.path(), crate::store::StoreOptions::default())?;
    let app = History::new(Arc::new(store));
    let series = SeriesId::new("input").expect("invariant: `input` is a valid series name");
    app.import_file(&series, path, BadRowPolicy::Reject)?;
    app.regular_series(&series, step)
}

/// The store's rule for a sample's timestamp at the clock's reading now, for a parser to check
/// rows against ([`ingest::TimestampRule`]): a row the store would refuse is then named by its line,
/// or skipped, rather than refusing the whole batch. The store checks again when the samples are
/// appended, later, and so accepts every timestamp this accepted.
pub fn store_timestamp_rule() -> impl Fn(Timestamp) -> Option<String> {
    let now = Timestamp::now();
    move |timestamp| timestamp_refusal(timestamp, now)
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
    /// Rows with an empty value: missing samples, left as gaps.
    pub missing: usize,
}

/// The metric history: a store plus the one-shot use cases over it. Holds no process-global state,
/// so several can live in one process (tests, shards).
#[derive(Debug, Clone)]
pub struct History {
    /// Metric history, behind the trait so another backend can replace it.
    store: Arc<dyn MetricStore>,
}

impl History {
    /// The history kept in `store`.
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
        let parsed = ingest::read_file(path, policy, &store_timestamp_rule())?;
        if parsed.samples.is_empty() {
            // Nothing would be stored, not even the series' name: say so rather than report an
            // import that `series show` then does not know.
            return Err(AppError::InvalidRequest {
                reason: format!(
                    "{} holds no sample to import ({} rows skipped, {} with an empty value)",
                    path.display(),
                    parsed.skipped.len(),
                    parsed.missing
                ),
            });
        }
        let accepted = self.store.append(series, &parsed.samples)?;
        Ok(ImportReport {
            series: series.clone(),
            accepted,
            skipped: parsed.skipped,
            missing: parsed.missing,
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

    /// Summaries of up to `size` series in series order, each after `after` when given, and the last
    /// of them when more may follow (where the next page starts). A series deleted while the page
    /// is read is left out.
    pub fn list_series_page(
        &self,
        after: Option<&SeriesId>,
        size: usize,
    ) -> Result<(Vec<SeriesSummary>, Option<SeriesId>), AppError> {
        let mut ids = self.store.series_page(after, size.saturating_add(1));
        let more = ids.len() > size;
        ids.truncate(size);
        let mut summaries = Vec::with_capacity(ids.len());
        for series in &ids {
            match self.store.summary(series) {
                Ok(summary) => summaries.push(summary),
                Err(StoreError::UnknownSeries { .. }) => {}
                Err(error) => return Err(error.into()),
            }
        }
        Ok((summaries, ids.pop().filter(|_| more)))
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

    /// The newest `window` of `series` on its median step, bucket means: what models are fitted on.
    pub fn recent_window(
        &self,
        series: &SeriesId,
        window: HistoryWindow,
    ) -> Result<TimeSeries, AppError> {
        let summary = self.store.summary(series)?;
        let (Some(first), Some(last), Some(step)) =
            (summary.first, summary.last, summary.median_step)
        else {
            if summary.samples == 0 {
                return Err(StoreError::UnknownSeries {
                    series: series.clone(),
                }
                .into());
            }
            return Err(AppError::NoStep {
                series: series.clone(),
                samples: summary.samples,
            });
        };
        let to = last.floor_to(step).saturating_add_millis(step.as_millis());
        let window = i64::try_from(window.span(step).as_millis()).unwrap_or(i64::MAX);
        let from = to
            .saturating_add_millis(-window)
            .floor_to(step)
            .max(first.floor_to(step));
        let range = TimeRange::new(from, to).expect("invariant: from is at most last, below to");
        Ok(self.store.window(series, range, step, Aggregation::Mean)?)
    }

    /// The whole history of `series` on its own median step (or `step` when given), bucket means.
    pub fn regular_series(
        &self,
        series: &SeriesId,
        step: Option<Step>,
    ) -> Result<TimeSeries, AppError> {
        let step = match step {
            Some(step) => step,
            None => {
                let summary = self.store.summary(series)?;
                summary.median_step.ok_or(AppError::NoStep {
                    series: series.clone(),
                    samples: summary.samples,
                })?
            }
        };
        self.full_window(series, step, Aggregation::Mean)
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
                    &store_timestamp_rule(),
                )?;
                let accepted = self.store.append(&series, &parsed.samples)?;
                Ok(ImportReport {
                    series,
                    accepted,
                    skipped: parsed.skipped,
                    missing: parsed.missing,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_files_are_regularised_on_their_median_step() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("irregular.csv");
        // Five-minute samples at :02/:07 offsets, one duplicate bucket and one missing bucket.
        std::fs::write(
            &path,
            "timestamp,value\n\
             2024-01-01T00:02:00Z,1\n2024-01-01T00:07:00Z,2\n2024-01-01T00:12:00Z,3\n\
             2024-01-01T00:13:00Z,5\n2024-01-01T00:22:00Z,6\n2024-01-01T00:27:00Z,7\n",
        )
        .unwrap();
        let series = load_input_file(&path, None).unwrap();
        assert_eq!(series.step(), Step::FIVE_MINUTES);
        assert_eq!(series.start().to_rfc3339(), "2024-01-01T00:00:00Z");
        let values = series.values();
        assert_eq!(values[..3], [1.0, 2.0, 4.0]);
        assert!(values[3].is_nan(), "the empty 00:15 bucket stays empty");
        assert_eq!(values[4..], [6.0, 7.0]);
    }

    #[test]
    fn empty_values_in_an_input_file_are_gaps() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("gap.csv");
        std::fs::write(
            &path,
            "timestamp,value\n\
             2024-01-01T00:00:00Z,1\n2024-01-01T00:05:00Z,\n2024-01-01T00:10:00Z,3\n\
             2024-01-01T00:15:00Z,4\n2024-01-01T00:20:00Z,5\n",
        )
        .unwrap();
        let series = load_input_file(&path, None).unwrap();
        assert_eq!(series.step(), Step::FIVE_MINUTES);
        let values = series.values();
        assert_eq!(values.len(), 5);
        assert!(values[1].is_nan(), "the empty value is a gap");
        assert_eq!(
            [values[0], values[2], values[3], values[4]],
            [1.0, 3.0, 4.0, 5.0]
        );
    }

    #[test]
    fn a_single_sample_has_no_step() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("one.csv");
        std::fs::write(&path, "timestamp,value\n2024-01-01T00:00:00Z,1\n").unwrap();
        assert!(matches!(
            load_input_file(&path, None),
            Err(AppError::NoStep { samples: 1, .. })
        ));
    }
}
