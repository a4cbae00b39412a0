//! The single-node store: Polars frames in memory, a write-ahead log and Parquet checkpoints on disk.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use polars::prelude::DataFrame;

use crate::domain::{Aggregation, SeriesId, Step, TimeRange, TimeSeries, Timestamp};

use super::checkpoint::{self, Manifest, forget_checkpointed};
use super::checkpointer::Checkpointer;
use super::history::{SeriesHistory, spacing};
use super::validate::validate;
use super::wal::{self, Record, Wal};
use super::{
    LOCK_FILE, MetricStore, SERIES_DIR, SeriesSamples, SeriesSummary, StoreError, WAL_DIR,
};

/// The most buckets one window call builds (80 MB of values).
const MAX_WINDOW_BUCKETS: u64 = 10_000_000;

/// How a [`PolarsStore`] keeps its data; validated by the configuration module.
#[derive(Debug, Clone, PartialEq)]
pub struct StoreOptions {
    /// Flush each log record to the device before acknowledging it. Without it an acknowledged
    /// batch survives a crash or `kill -9` of the process, but not a power loss.
    pub fsync: bool,
    /// Write a checkpoint once this many bytes were logged since the last one.
    pub checkpoint_after_bytes: u64,
    /// Samples older than this are dropped on open and by [`MetricStore::enforce_retention`].
    pub retention: Option<Duration>,
    /// Most series the store holds; a batch that would add series beyond it is refused whole.
    pub max_series: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            fsync: false,
            checkpoint_after_bytes: 256 * 1024 * 1024,
            retention: None,
            max_series: 100_000,
        }
    }
}

/// Shared handle to one series' history.
type SharedHistory = Arc<Mutex<SeriesHistory>>;

/// A series a checkpoint writes: its id, its history (to mark it dirty again if the write does not
/// complete) and the frame as it was when the log rotated.
type Snapshot = (SeriesId, SharedHistory, DataFrame);

/// How a checkpoint ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Checkpointed {
    /// Nothing changed since the last one.
    NothingToDo,
    /// These many series were written and the log before them removed.
    Written {
        /// Series written.
        series: usize,
    },
    /// The store began closing first; the log keeps the data, and the series stay dirty.
    Abandoned,
}

/// The data of a [`PolarsStore`], shared with its background checkpoint thread.
///
/// Lock order: `log`, then `series`, then a series' own lock; `checkpointing` is taken before `log`.
/// The checkpoint worker's own lock is taken alone (see `checkpointer`).
#[derive(Debug)]
struct StoreCore {
    /// Root directory: `wal/`, `series/` and the `LOCK` file ([`super::STORE_ENTRIES`]).
    dir: PathBuf,
    /// Held open and locked so a second process cannot open the same directory.
    _lock: File,
    /// The open log segment. Appends hold it while they also apply the batch in memory, so the order in
    /// memory is the order in the log, which is the order recovery replays.
    log: Mutex<Wal>,
    /// Every series, each behind its own lock so reads of different series do not contend.
    series: RwLock<HashMap<SeriesId, SharedHistory>>,
    /// The checkpoint manifest; also serialises checkpoints.
    checkpointing: Mutex<Manifest>,
    /// Settings fixed at open.
    options: StoreOptions,
    /// Code a test runs inside each checkpoint, after the snapshot, to hold it there.
    #[cfg(test)]
    pause: super::checkpointer::PauseHook,
}

/// Metric history in Polars frames, made durable by a write-ahead log compacted into Parquet files.
///
/// The append that takes the log past [`StoreOptions::checkpoint_after_bytes`] asks the store's
/// background thread for a checkpoint and returns; [`MetricStore::checkpoint`] writes one in the
/// caller's thread. Dropping the store stops a running background checkpoint at its next series
/// and joins the thread; the log keeps what it had not written.
#[derive(Debug)]
pub struct PolarsStore {
    /// The background checkpoint thread; dropped first, so it ends before the handle lets go of
    /// the data.
    checkpointer: Checkpointer,
    /// The data, shared with the checkpoint thread.
    core: Arc<StoreCore>,
}

impl PolarsStore {
    /// Opens (creating if needed) the store in `dir`: loads the last checkpoint, replays the log after it
    /// and truncates a torn final record; starts the background checkpoint thread.
    pub fn open(dir: impl AsRef<Path>, options: StoreOptions) -> Result<Self, StoreError> {
        let core = Arc::new(StoreCore::open(dir, options)?);
        let worker = Arc::clone(&core);
        let checkpointer = Checkpointer::spawn(move |stop| match worker.checkpoint(Some(stop)) {
            Ok(Checkpointed::Abandoned) => {
                tracing::info!("background checkpoint stopped: the store is closing");
            }
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(%error, "background checkpoint failed; retried at the next trigger");
            }
        })
        .map_err(|source| StoreError::Io {
            path: core.dir.clone(),
            source,
        })?;
        Ok(Self { checkpointer, core })
    }

    /// The root directory of the store.
    pub fn dir(&self) -> &Path {
        &self.core.dir
    }

    /// Allocated heap bytes of the in-memory frames (Polars' own estimate), for memory reports.
    pub fn estimated_frame_bytes(&self) -> usize {
        self.core.estimated_frame_bytes()
    }

    /// Blocks until the background checkpoints asked for so far have finished, whether they
    /// succeeded or not (failures are logged); for a command about to exit and for tests.
    pub fn wait_for_background_checkpoint(&self) {
        self.checkpointer.wait_idle();
    }
}

impl MetricStore for PolarsStore {
    fn append_batch(&self, batch: &[SeriesSamples]) -> Result<usize, StoreError> {
        let (accepted, checkpoint_due) = self.core.append_batch(batch)?;
        if checkpoint_due {
            self.checkpointer.request();
        }
        Ok(accepted)
    }

    fn window(
        &self,
        series: &SeriesId,
        range: TimeRange,
        step: Step,
        agg: Aggregation,
    ) -> Result<TimeSeries, StoreError> {
        self.core.window(series, range, step, agg)
    }

    fn series(&self) -> Vec<SeriesId> {
        self.core.series()
    }

    fn series_page(&self, after: Option<&SeriesId>, limit: usize) -> Vec<SeriesId> {
        self.core.series_page(after, limit)
    }

    fn delete_series(&self, series: &SeriesId) -> Result<usize, StoreError> {
        self.core.delete_series(series)
    }

    fn summary(&self, series: &SeriesId) -> Result<SeriesSummary, StoreError> {
        self.core.summary(series)
    }

    fn enforce_retention(&self, now: Timestamp, max_age: Duration) -> Result<usize, StoreError> {
        self.core.enforce_retention(now, max_age)
    }

    fn checkpoint(&self) -> Result<(), StoreError> {
        self.core.checkpoint(None).map(|_| ())
    }

    fn sync(&self) -> Result<(), StoreError> {
        self.core.sync()
    }
}

impl StoreCore {
    /// Opens (creating if needed) the store in `dir`: loads the last checkpoint, replays the log after it
    /// and truncates a torn final record.
    fn open(dir: impl AsRef<Path>, options: StoreOptions) -> Result<Self, StoreError> {
        let dir = dir.as_ref().to_owned();
        let wal_dir = dir.join(WAL_DIR);
        let series_dir = dir.join(SERIES_DIR);
        for path in [&dir, &wal_dir, &series_dir] {
            fs::create_dir_all(path).map_err(|source| StoreError::Io {
                path: path.clone(),
                source,
            })?;
        }
        let lock_path = dir.join(LOCK_FILE);
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|source| StoreError::Io {
                path: lock_path.clone(),
                source,
            })?;
        lock.try_lock().map_err(|error| StoreError::Io {
            path: lock_path.clone(),
            source: std::io::Error::new(
                std::io::ErrorKind::WouldBlock,
                format!("data directory is in use by another process ({error})"),
            ),
        })?;
        checkpoint::remove_leftovers(&series_dir)?;

        let mut manifest = Manifest::load(&series_dir)?;
        let mut series: HashMap<SeriesId, SharedHistory> =
            checkpoint::load_series(&series_dir, &mut manifest)?
                .into_iter()
                .map(|(id, history)| (id, Arc::new(Mutex::new(history))))
                .collect();

        let segments = wal::list_segments(&wal_dir)?;
        let newest = segments.last().map(|(sequence, _)| *sequence);
        let (mut replayed_records, mut replayed_bytes) = (0, 0);
        for (sequence, path) in &segments {
            if *sequence <= manifest.wal_checkpoint {
                continue;
            }
            let outcome =
                wal::replay_segment(path, Some(*sequence) == newest, |record| match record {
                    Record::Samples(batch) => Self::apply(&mut series, &batch),
                    Record::Deletion(id) => {
                        series.remove(&id);
                    }
                })?;
            replayed_records += outcome.records;
            replayed_bytes += outcome.record_bytes;
        }
        // Segments the manifest covers are left over when a crash came between manifest and deletion.
        Wal::remove_through(&wal_dir, manifest.wal_checkpoint)?;
        // A series deleted after its last checkpoint: the log's deletion removed it above, and the
        // manifest must stop naming it before that log segment is compacted away.
        let deleted: Vec<SeriesId> = manifest
            .entries()
            .filter_map(|(key, _)| key.parse::<SeriesId>().ok())
            .filter(|id| !series.contains_key(id))
            .collect();
        forget_checkpointed(&mut manifest, &series_dir, &deleted)?;
        let next_sequence = newest.unwrap_or(0).max(manifest.wal_checkpoint) + 1;
        let mut log = Wal::create(&wal_dir, next_sequence, options.fsync)?;
        log.add_replayed_bytes(replayed_bytes);
        tracing::info!(
            dir = %dir.display(),
            series = series.len(),
            replayed_records,
            replayed_bytes,
            "opened metric store"
        );

        let store = Self {
            dir,
            _lock: lock,
            log: Mutex::new(log),
            series: RwLock::new(series),
            checkpointing: Mutex::new(manifest),
            options,
            #[cfg(test)]
            pause: Default::default(),
        };
        if let Some(retention) = store.options.retention {
            store.enforce_retention(Timestamp::now(), retention)?;
        }
        Ok(store)
    }

    /// Applies a logged batch to the in-memory histories.
    fn apply<'a>(
        series: &mut HashMap<SeriesId, SharedHistory>,
        batch: impl IntoIterator<Item = &'a SeriesSamples>,
    ) {
        for entry in batch {
            if entry.samples.is_empty() {
                continue;
            }
            series
                .entry(entry.series.clone())
                .or_insert_with(|| Arc::new(Mutex::new(SeriesHistory::new())))
                .lock()
                .push(&entry.samples);
        }
    }

    /// Applies a just-logged batch: existing series under the shared map lock, so reads of other
    /// series go on; the exclusive lock only to add series seen for the first time.
    fn apply_logged(&self, batch: &[SeriesSamples]) {
        let mut new_series = Vec::new();
        {
            let series = self.series.read();
            for entry in batch.iter().filter(|entry| !entry.samples.is_empty()) {
                match series.get(&entry.series) {
                    Some(history) => history.lock().push(&entry.samples),
                    None => new_series.push(entry),
                }
            }
        }
        if !new_series.is_empty() {
            Self::apply(&mut self.series.write(), new_series);
        }
    }

    /// Refuses a batch that would take the store past [`StoreOptions::max_series`].
    fn check_series_limit(&self, batch: &[SeriesSamples]) -> Result<(), StoreError> {
        let series = self.series.read();
        let held = series.len();
        if held + batch.len() <= self.options.max_series {
            return Ok(());
        }
        let new: HashSet<&SeriesId> = batch
            .iter()
            .filter(|entry| !entry.samples.is_empty() && !series.contains_key(&entry.series))
            .map(|entry| &entry.series)
            .collect();
        if held + new.len() > self.options.max_series {
            return Err(StoreError::TooManySeries {
                held,
                new: new.len(),
                limit: self.options.max_series,
            });
        }
        Ok(())
    }

    /// The history of `series`, or `UnknownSeries`.
    fn history(&self, series: &SeriesId) -> Result<SharedHistory, StoreError> {
        self.series
            .read()
            .get(series)
            .cloned()
            .ok_or_else(|| StoreError::UnknownSeries {
                series: series.clone(),
            })
    }

    /// Forgets the series retention left without samples: out of the listing, and out of the
    /// manifest with their checkpoint files, so a restart does not bring back what was dropped.
    ///
    /// Emptiness is checked under the map's write lock, so an append racing with this either lands
    /// before (and the series stays) or after (and makes the series anew).
    fn remove_empty_series(&self, manifest: &mut Manifest) -> Result<(), StoreError> {
        let mut removed = Vec::new();
        self.series.write().retain(|id, history| {
            let empty = history.lock().is_empty();
            if empty {
                removed.push(id.clone());
            }
            !empty
        });
        if !removed.is_empty() {
            tracing::info!(series = removed.len(), "removed series retention emptied");
        }
        forget_checkpointed(manifest, &self.dir.join(SERIES_DIR), &removed)
    }

    /// Allocated heap bytes of the in-memory frames (Polars' own estimate).
    fn estimated_frame_bytes(&self) -> usize {
        self.series
            .read()
            .values()
            .map(|history| history.lock().frame().estimated_size())
            .sum()
    }
}

/// Writes each series of `snapshot` to its Parquet file; `false` when `stop` was set before all were.
fn write_snapshot(
    manifest: &mut Manifest,
    series_dir: &Path,
    snapshot: &[Snapshot],
    stop: Option<&AtomicBool>,
) -> Result<bool, StoreError> {
    for (id, _, frame) in snapshot {
        if stop.is_some_and(|stop| stop.load(Ordering::Acquire)) {
            return Ok(false);
        }
        checkpoint::write_series(series_dir, &manifest.file_for(id), frame)?;
    }
    Ok(true)
}

/// The operations behind [`MetricStore`], as the public handle and its checkpoint thread call them.
impl StoreCore {
    /// [`MetricStore::append_batch`]; also says whether the log has crossed the checkpoint threshold.
    fn append_batch(&self, batch: &[SeriesSamples]) -> Result<(usize, bool), StoreError> {
        let accepted = validate(batch, Timestamp::now())?;
        if accepted == 0 {
            return Ok((0, false));
        }
        let mut log = self.log.lock();
        // Under the log's lock, which every append takes: no other batch adds series meanwhile.
        self.check_series_limit(batch)?;
        log.append(batch)?;
        self.apply_logged(batch);
        let checkpoint_due = log.bytes_since_checkpoint() >= self.options.checkpoint_after_bytes;
        Ok((accepted, checkpoint_due))
    }

    fn window(
        &self,
        series: &SeriesId,
        range: TimeRange,
        step: Step,
        agg: Aggregation,
    ) -> Result<TimeSeries, StoreError> {
        let span = range
            .to()
            .as_millis()
            .saturating_sub(range.from().as_millis());
        let buckets = (span as u64).div_ceil(step.as_millis() as u64);
        if buckets > MAX_WINDOW_BUCKETS {
            return Err(StoreError::WindowTooLarge {
                buckets,
                limit: MAX_WINDOW_BUCKETS,
            });
        }
        let history = self.history(series)?;
        let values = history.lock().window(range, step, buckets as usize, agg);
        Ok(TimeSeries::new(range.from(), step, values))
    }

    fn series(&self) -> Vec<SeriesId> {
        let mut ids: Vec<SeriesId> = self.series.read().keys().cloned().collect();
        ids.sort();
        ids
    }

    fn series_page(&self, after: Option<&SeriesId>, limit: usize) -> Vec<SeriesId> {
        let series = self.series.read();
        let mut page: Vec<&SeriesId> = series
            .keys()
            .filter(|series| after.is_none_or(|after| *series > after))
            .collect();
        // The `limit` smallest without sorting every series: each page costs linear time.
        if page.len() > limit {
            page.select_nth_unstable(limit);
            page.truncate(limit);
        }
        page.sort_unstable();
        page.into_iter().cloned().collect()
    }

    fn delete_series(&self, series: &SeriesId) -> Result<usize, StoreError> {
        // Serialised with checkpoints, so none writes the file of the series deleted here.
        let mut manifest = self.checkpointing.lock();
        let samples = {
            // Under the log's lock, so no append of the series lands between the deletion in the
            // log and the deletion in memory: memory keeps the log's order.
            let mut log = self.log.lock();
            let history = self.history(series)?;
            log.append_deletion(series)?;
            self.series.write().remove(series);
            history.lock().merged_columns().0.len()
        };
        forget_checkpointed(
            &mut manifest,
            &self.dir.join(SERIES_DIR),
            std::slice::from_ref(series),
        )?;
        tracing::info!(series = %series.abbreviated(), samples, "deleted series");
        Ok(samples)
    }

    fn summary(&self, series: &SeriesId) -> Result<SeriesSummary, StoreError> {
        let history = self.history(series)?;
        let mut history = history.lock();
        let (timestamps, _) = history.merged_columns();
        let (median_step, gaps) = spacing(timestamps);
        Ok(SeriesSummary {
            series: series.clone(),
            samples: timestamps.len(),
            first: timestamps.first().map(|time| Timestamp::from_millis(*time)),
            last: timestamps.last().map(|time| Timestamp::from_millis(*time)),
            median_step,
            gaps,
        })
    }

    fn enforce_retention(&self, now: Timestamp, max_age: Duration) -> Result<usize, StoreError> {
        let age = i64::try_from(max_age.as_millis()).unwrap_or(i64::MAX);
        let cutoff = now.saturating_add_millis(-age);
        // Serialised with checkpoints, so none writes the file of a series removed here.
        let mut manifest = self.checkpointing.lock();
        let histories: Vec<SharedHistory> = self.series.read().values().cloned().collect();
        let dropped = histories
            .iter()
            .map(|history| history.lock().drop_before(cutoff))
            .sum();
        if dropped > 0 {
            tracing::info!(dropped, %cutoff, "dropped samples past retention");
            self.remove_empty_series(&mut manifest)?;
        }
        Ok(dropped)
    }

    /// [`MetricStore::checkpoint`]; with `stop`, abandoned before the next series' write once it
    /// is set (the store is closing), leaving what it had not yet recorded in the manifest dirty.
    fn checkpoint(&self, stop: Option<&AtomicBool>) -> Result<Checkpointed, StoreError> {
        let mut manifest = self.checkpointing.lock();
        let series_dir = self.dir.join(SERIES_DIR);
        // Rotate and snapshot under the log lock, so the snapshot holds exactly the closed segments.
        let (closed, snapshot) = {
            let mut log = self.log.lock();
            let series = self.series.read();
            let nothing_dirty = series.values().all(|history| !history.lock().is_dirty());
            if nothing_dirty && log.bytes_since_checkpoint() == 0 {
                return Ok(Checkpointed::NothingToDo);
            }
            let closed = log.rotate()?;
            let mut snapshot = Vec::new();
            for (id, shared) in series.iter() {
                let mut history = shared.lock();
                if history.is_dirty() {
                    snapshot.push((id.clone(), Arc::clone(shared), history.frame().clone()));
                    history.mark_clean();
                }
            }
            (closed, snapshot)
        };
        #[cfg(test)]
        self.pause.run();
        let written = write_snapshot(&mut manifest, &series_dir, &snapshot, stop);
        if !matches!(written, Ok(true)) {
            // No manifest covers these series yet: keep them dirty so the next checkpoint writes them.
            for (_, history, _) in &snapshot {
                history.lock().mark_dirty();
            }
            written?;
            return Ok(Checkpointed::Abandoned);
        }
        manifest.wal_checkpoint = closed;
        manifest.store(&series_dir)?;
        Wal::remove_through(&self.dir.join(WAL_DIR), closed)?;
        tracing::debug!(
            series = snapshot.len(),
            wal_checkpoint = closed,
            "checkpoint written"
        );
        Ok(Checkpointed::Written {
            series: snapshot.len(),
        })
    }

    fn sync(&self) -> Result<(), StoreError> {
        self.log.lock().sync()
    }
}

#[cfg(test)]
mod tests;
