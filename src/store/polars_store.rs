//! The single-node store: Polars frames in memory, a write-ahead log and Parquet checkpoints on disk.

use std::collections::{HashMap, HashSet};
use std::fs::File;
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
use super::wal::Wal;
use super::{MetricStore, SERIES_DIR, SeriesSamples, SeriesSummary, StoreError, WAL_DIR};

mod open;

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

/// What only the store's one writer holds.
#[derive(Debug)]
struct Writer {
    /// Held open and locked so a second writer cannot open the same directory.
    _lock: File,
    /// The open log segment. Appends hold it while they also apply the batch in memory, so the order in
    /// memory is the order in the log, which is the order recovery replays.
    log: Mutex<Wal>,
}

/// The data of a [`PolarsStore`], shared with its background checkpoint thread.
///
/// Lock order: `log`, then `series`, then a series' own lock; `checkpointing` is taken before `log`.
/// The checkpoint worker's own lock is taken alone (see `checkpointer`).
#[derive(Debug)]
struct StoreCore {
    /// Root directory: `wal/`, `series/` and the `LOCK` file ([`super::STORE_ENTRIES`]).
    dir: PathBuf,
    /// The lock and the log; `None` when the store was opened read-only.
    writer: Option<Writer>,
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
///
/// A store opened with [`PolarsStore::open_read_only`] has no log, no lock and no checkpoint
/// thread: it answers reads and refuses every change with [`StoreError::ReadOnly`].
#[derive(Debug)]
pub struct PolarsStore {
    /// The background checkpoint thread, `None` in a read-only store; dropped first, so it ends
    /// before the handle lets go of the data.
    checkpointer: Option<Checkpointer>,
    /// The data, shared with the checkpoint thread.
    core: Arc<StoreCore>,
}

impl PolarsStore {
    /// Opens (creating if needed) the store in `dir` as its one writer: takes its `LOCK`, loads the
    /// last checkpoint, replays the log after it and truncates a torn final record; starts the
    /// background checkpoint thread.
    pub fn open(dir: impl AsRef<Path>, options: StoreOptions) -> Result<Self, StoreError> {
        let core = Arc::new(StoreCore::open(dir.as_ref(), options)?);
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
        Ok(Self {
            checkpointer: Some(checkpointer),
            core,
        })
    }

    /// Opens the store in `dir` for reading, without changing anything on disk: no directory,
    /// `LOCK`, log segment or manifest is created or rewritten, and a torn final log record is
    /// read up to and left in place. It neither takes nor waits for the writer's lock, so it reads
    /// the store of a running server.
    ///
    /// What it holds is the store as it stood at one moment during the open: every batch
    /// acknowledged before the open began, none of a batch in part. A checkpoint the writer
    /// completes meanwhile (it replaces log segments and Parquet files) is detected by the
    /// manifest having changed, or by a file the open listed having gone, and the open starts
    /// again, a few times at most ([`StoreError::ChangedWhileReading`]). Retention from `options`
    /// is applied in memory only; `dir` must exist.
    pub fn open_read_only(
        dir: impl AsRef<Path>,
        options: StoreOptions,
    ) -> Result<Self, StoreError> {
        let core = StoreCore::open_read_only(dir.as_ref(), options, &mut || {})?;
        Ok(Self {
            checkpointer: None,
            core: Arc::new(core),
        })
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
        if let Some(checkpointer) = &self.checkpointer {
            checkpointer.wait_idle();
        }
    }
}

impl MetricStore for PolarsStore {
    fn append_batch(&self, batch: &[SeriesSamples]) -> Result<usize, StoreError> {
        let (accepted, checkpoint_due) = self.core.append_batch(batch)?;
        if checkpoint_due && let Some(checkpointer) = &self.checkpointer {
            checkpointer.request();
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
    /// The writer's log, or [`StoreError::ReadOnly`] naming `operation` in a read-only store.
    fn log(&self, operation: &'static str) -> Result<&Mutex<Wal>, StoreError> {
        match &self.writer {
            Some(writer) => Ok(&writer.log),
            None => Err(StoreError::ReadOnly {
                dir: self.dir.clone(),
                operation,
            }),
        }
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

    /// Drops the samples in memory older than `now - max_age`, and the series left without
    /// samples; returns how many samples were dropped, and the series removed.
    fn drop_expired(&self, now: Timestamp, max_age: Duration) -> (usize, Vec<SeriesId>) {
        let age = i64::try_from(max_age.as_millis()).unwrap_or(i64::MAX);
        let cutoff = now.saturating_add_millis(-age);
        let histories: Vec<SharedHistory> = self.series.read().values().cloned().collect();
        let dropped = histories
            .iter()
            .map(|history| history.lock().drop_before(cutoff))
            .sum();
        if dropped == 0 {
            return (0, Vec::new());
        }
        tracing::info!(dropped, %cutoff, "dropped samples past retention");
        (dropped, self.remove_empty_series())
    }

    /// Takes the series retention left without samples out of the listing; returns them.
    ///
    /// Emptiness is checked under the map's write lock, so an append racing with this either lands
    /// before (and the series stays) or after (and makes the series anew).
    fn remove_empty_series(&self) -> Vec<SeriesId> {
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
        removed
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
        let log = self.log("append")?;
        let accepted = validate(batch, Timestamp::now())?;
        if accepted == 0 {
            return Ok((0, false));
        }
        let mut log = log.lock();
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
        let log = self.log("delete")?;
        // Serialised with checkpoints, so none writes the file of the series deleted here.
        let mut manifest = self.checkpointing.lock();
        let samples = {
            // Under the log's lock, so no append of the series lands between the deletion in the
            // log and the deletion in memory: memory keeps the log's order.
            let mut log = log.lock();
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

    /// [`MetricStore::enforce_retention`]: the series it empties also leave the manifest, with their
    /// checkpoint files, so a restart does not bring back what was dropped.
    fn enforce_retention(&self, now: Timestamp, max_age: Duration) -> Result<usize, StoreError> {
        self.log("retention")?;
        // Serialised with checkpoints, so none writes the file of a series removed here.
        let mut manifest = self.checkpointing.lock();
        let (dropped, emptied) = self.drop_expired(now, max_age);
        forget_checkpointed(&mut manifest, &self.dir.join(SERIES_DIR), &emptied)?;
        Ok(dropped)
    }

    /// [`MetricStore::checkpoint`]; with `stop`, abandoned before the next series' write once it
    /// is set (the store is closing), leaving what it had not yet recorded in the manifest dirty.
    fn checkpoint(&self, stop: Option<&AtomicBool>) -> Result<Checkpointed, StoreError> {
        let log = self.log("checkpoint")?;
        let mut manifest = self.checkpointing.lock();
        let series_dir = self.dir.join(SERIES_DIR);
        // Rotate and snapshot under the log lock, so the snapshot holds exactly the closed segments.
        let (closed, snapshot) = {
            let mut log = log.lock();
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

    /// [`MetricStore::sync`]; a read-only store logged nothing, so it has nothing to flush.
    fn sync(&self) -> Result<(), StoreError> {
        match &self.writer {
            Some(writer) => writer.log.lock().sync(),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests;
