//! Metric history: durable, per-series storage of samples, read back as regular windows.
//!
//! [`MetricStore`] is the seam the rest of prescale depends on, so that a sharded or
//! Prometheus-backed implementation can replace [`PolarsStore`] without touching the app.
//! Data leaves a store through one door only: [`MetricStore::window`], as plain slices.

mod checkpoint;
mod checkpointer;
mod history;
mod polars_store;
mod validate;
mod wal;

use std::path::PathBuf;
use std::time::Duration;

use crate::atomic_file::{self, AtomicWriteError};
use crate::domain::{Aggregation, Sample, SeriesId, Step, TimeRange, TimeSeries, Timestamp};

pub use polars_store::{PolarsStore, StoreOptions};
pub use validate::{timestamp_refusal, validate as validate_batch};

/// How far ahead of the store's clock a sample may lie: room for clocks out of step, while a sample
/// from the far future, which would never age out under retention, is refused.
pub const MAX_FUTURE: Duration = Duration::from_secs(86_400);

/// The latest time accepted from a client when the clock reads `now`: [`MAX_FUTURE`] ahead of it,
/// and never past [`Timestamp::LATEST`].
pub fn latest_accepted(now: Timestamp) -> Timestamp {
    let future = i64::try_from(MAX_FUTURE.as_millis()).expect("invariant: a day fits in i64");
    now.saturating_add_millis(future).min(Timestamp::LATEST)
}

/// The store's lock file, held by the process that has the store open.
const LOCK_FILE: &str = "LOCK";
/// The directory of the write-ahead log's segments.
const WAL_DIR: &str = "wal";
/// The directory of the Parquet checkpoints and their manifest.
const SERIES_DIR: &str = "series";
/// What a directory holds once a store was opened in it ([`PolarsStore::open`] creates each, and
/// [`PolarsStore::open_read_only`] none): a directory holding none of them has never been a store.
pub const STORE_ENTRIES: [&str; 3] = [LOCK_FILE, WAL_DIR, SERIES_DIR];

/// Whether an open may change the store's files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OpenMode {
    /// The one writer: takes the lock, repairs what a crash left (a torn log tail, a half-created
    /// segment, temporary files, series keys of an older release) and logs new writes.
    ReadWrite,
    /// A reader beside the writer, if any: changes no file and ignores what a writer would repair.
    ReadOnly,
}

/// Most labels a stored series may have (Mimir's default is 30).
pub const MAX_LABELS: usize = 32;

/// Longest label value a stored series may have, in bytes (Mimir's default is 2048).
pub const MAX_LABEL_VALUE_BYTES: usize = 2048;

/// Errors of the metric store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A sample's value is NaN or infinite; the whole batch was rejected.
    #[error(
        "non-finite value {value} at {timestamp} for series {} (sample {index} of the batch)",
        .series.abbreviated()
    )]
    NonFiniteValue {
        /// Series the bad sample was meant for.
        series: SeriesId,
        /// Position of the first bad sample within its series' samples in the batch.
        index: usize,
        /// Its timestamp.
        timestamp: Timestamp,
        /// Its value.
        value: f64,
    },
    /// A sample's timestamp lies outside the years 0000 to 9999 or more than [`MAX_FUTURE`] ahead of
    /// the store's clock; the whole batch was rejected.
    #[error(
        "timestamp {timestamp} for series {} (sample {index} of the batch) is {reason}",
        .series.abbreviated()
    )]
    TimestampOutOfRange {
        /// Series the bad sample was meant for.
        series: SeriesId,
        /// Position of the first bad sample within its series' samples in the batch.
        index: usize,
        /// Its timestamp.
        timestamp: Timestamp,
        /// Which bound it crosses.
        reason: String,
    },
    /// A series has too many labels or too long a label value; the whole batch was rejected.
    #[error("series {series}: {reason}")]
    LabelLimit {
        /// The series, abbreviated.
        series: String,
        /// Which limit it crosses.
        reason: String,
    },
    /// The batch would add series beyond [`StoreOptions::max_series`]; it was rejected whole.
    #[error(
        "the store holds {held} series and the batch adds {new}: more than the limit of {limit} (store.max_series)"
    )]
    TooManySeries {
        /// Series held.
        held: usize,
        /// Series the batch would add.
        new: usize,
        /// The limit.
        limit: usize,
    },
    /// No samples were ever stored for this series, or retention dropped all of them.
    #[error("unknown series {}", .series.abbreviated())]
    UnknownSeries {
        /// The series asked for.
        series: SeriesId,
    },
    /// A window would have more buckets than a store will build in one call.
    #[error("window of {buckets} buckets exceeds the limit of {limit}")]
    WindowTooLarge {
        /// Buckets the range and step would need.
        buckets: u64,
        /// The most one call may ask for.
        limit: u64,
    },
    /// Reading or writing a file of the store failed.
    #[error("store i/o on {path}: {source}")]
    Io {
        /// File or directory involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A log segment is damaged other than by a torn final write (a bad record in an older segment,
    /// or one with valid records after it): this is corruption, and nothing was truncated.
    #[error("corrupt write-ahead log {path} at byte {offset}: {reason}")]
    CorruptLog {
        /// The segment file.
        path: PathBuf,
        /// Byte offset of the damaged record.
        offset: u64,
        /// What failed to check out.
        reason: String,
    },
    /// A Parquet checkpoint file or the manifest could not be read or written.
    #[error("checkpoint {path}: {reason}")]
    Checkpoint {
        /// The file involved.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The store was opened with [`PolarsStore::open_read_only`], which changes nothing on disk.
    #[error("store in {dir} was opened read-only: {operation} refused")]
    ReadOnly {
        /// The store's directory.
        dir: PathBuf,
        /// What was asked of it.
        operation: &'static str,
    },
    /// A read-only open found the store changed under it (its writer checkpointed, which replaces
    /// log segments and Parquet files) at every attempt.
    #[error(
        "store in {dir} changed while it was being read, {attempts} times in a row (its writer checkpointed meanwhile); try again"
    )]
    ChangedWhileReading {
        /// The store's directory.
        dir: PathBuf,
        /// Attempts made.
        attempts: u32,
    },
    /// An earlier log write failed half-way and could not be rolled back; the store refuses writes.
    #[error("store is read-only after a failed log write: {reason}")]
    Poisoned {
        /// The failure that poisoned the log.
        reason: String,
    },
}

/// Writes `bytes` to `dir/name` so that a crash leaves the old or the new content, never a mix (see
/// [`crate::atomic_file`]), with the store's error type. For small files kept beside the store (the
/// app's events and workloads).
pub fn write_file_atomically(
    dir: &std::path::Path,
    name: &str,
    bytes: &[u8],
) -> Result<(), StoreError> {
    Ok(atomic_file::write_file_atomically(dir, name, bytes)?)
}

impl From<AtomicWriteError> for StoreError {
    fn from(error: AtomicWriteError) -> Self {
        match error {
            AtomicWriteError::Io { path, source } => Self::Io { path, source },
            AtomicWriteError::Write { path, reason } => Self::Checkpoint { path, reason },
        }
    }
}

/// The samples of one series within an append batch.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesSamples {
    /// Series the samples belong to.
    pub series: SeriesId,
    /// Samples in any order; a repeated timestamp keeps the value written last.
    pub samples: Vec<Sample>,
}

/// A stretch with no samples, longer than twice the series' median step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gap {
    /// Last sample before the gap.
    pub after: Timestamp,
    /// First sample after the gap.
    pub before: Timestamp,
}

/// What a store holds for one series.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesSummary {
    /// The series.
    pub series: SeriesId,
    /// Number of distinct timestamps stored.
    pub samples: usize,
    /// Earliest stored timestamp, if any.
    pub first: Option<Timestamp>,
    /// Latest stored timestamp, if any.
    pub last: Option<Timestamp>,
    /// Median spacing between consecutive samples, if there are at least two.
    pub median_step: Option<Step>,
    /// Gaps longer than twice the median step, oldest first.
    pub gaps: Vec<Gap>,
}

/// Storage of metric history per series.
///
/// Implementations are shared between threads; every method takes `&self`.
pub trait MetricStore: Send + Sync + std::fmt::Debug {
    /// Stores a batch covering any number of series, all or nothing: if any sample is non-finite, or its
    /// timestamp is before year 0000 or more than [`MAX_FUTURE`] ahead, nothing is stored and the error
    /// names the first bad one. Returns the number of samples accepted. Once this
    /// returns `Ok`, the batch survives a crash of the process.
    fn append_batch(&self, batch: &[SeriesSamples]) -> Result<usize, StoreError>;

    /// Stores samples of one series; see [`MetricStore::append_batch`].
    fn append(&self, series: &SeriesId, samples: &[Sample]) -> Result<usize, StoreError> {
        self.append_batch(&[SeriesSamples {
            series: series.clone(),
            samples: samples.to_vec(),
        }])
    }

    /// The series resampled onto buckets `[from + k*step, from + (k+1)*step)` covering `range`, each bucket
    /// combined with `agg`; a bucket without samples is `NaN`.
    fn window(
        &self,
        series: &SeriesId,
        range: TimeRange,
        step: Step,
        agg: Aggregation,
    ) -> Result<TimeSeries, StoreError>;

    /// Every series the store holds, sorted.
    fn series(&self) -> Vec<SeriesId>;

    /// Up to `limit` series, sorted, each greater than `after` when given: one page of
    /// [`MetricStore::series`] that a series added or deleted meanwhile does not shift.
    fn series_page(&self, after: Option<&SeriesId>, limit: usize) -> Vec<SeriesId> {
        self.series()
            .into_iter()
            .filter(|series| after.is_none_or(|after| series > after))
            .take(limit)
            .collect()
    }

    /// Deletes `series` and every sample of it, durably: once this returns `Ok`, no restart or
    /// crash brings it back, and it no longer counts towards the store's series limit. Returns the
    /// number of samples it held; `UnknownSeries` when the store does not hold it.
    fn delete_series(&self, series: &SeriesId) -> Result<usize, StoreError>;

    /// Length, extent, median step and gaps of one series.
    fn summary(&self, series: &SeriesId) -> Result<SeriesSummary, StoreError>;

    /// Drops samples older than `now - max_age`, and the series left without samples; returns how many
    /// samples were dropped.
    fn enforce_retention(&self, now: Timestamp, max_age: Duration) -> Result<usize, StoreError>;

    /// Writes what is in memory to durable, compact form and trims the log it replaces.
    fn checkpoint(&self) -> Result<(), StoreError>;

    /// Flushes every acknowledged write to the device, without compacting anything: what a
    /// shutdown needs, cheap whatever the number of series (the next open replays the log).
    fn sync(&self) -> Result<(), StoreError>;
}
