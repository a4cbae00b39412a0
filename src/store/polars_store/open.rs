//! Opening a [`PolarsStore`](super::PolarsStore): as its one writer, which repairs what a crash
//! left and starts a new log segment, or read-only beside it, which changes no file.

use std::collections::HashMap;
use std::fs::{self, File};
use std::path::Path;
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

use crate::domain::{SeriesId, Timestamp};
use crate::store::checkpoint::{self, Manifest, forget_checkpointed};
use crate::store::wal::{self, Record, Wal};
use crate::store::{LOCK_FILE, OpenMode, SERIES_DIR, StoreError, WAL_DIR};

use super::{SharedHistory, StoreCore, StoreOptions, Writer};

/// How many times a read-only open starts again when the writer checkpointed under it. A
/// checkpoint completes once per `store.checkpoint_after_mib` of log, so a second attempt almost
/// always finds none.
const READ_ATTEMPTS: u32 = 5;

/// What the files of a store hold: the last checkpoint with the log after it replayed on top.
#[derive(Debug)]
struct Loaded {
    /// The manifest as read.
    manifest: Manifest,
    /// Every series.
    series: HashMap<SeriesId, SharedHistory>,
    /// Sequence of the newest log segment found, if any.
    newest_segment: Option<u64>,
    /// Log records replayed.
    replayed_records: u64,
    /// Bytes of the log records replayed.
    replayed_bytes: u64,
}

/// Reads the store in `dir`: the manifest, the Parquet files it names, then the log segments it
/// does not cover, oldest first. `after_checkpoint` runs between the Parquet files and the log
/// (tests change the store there, as a writer running beside a reader would).
fn load(
    dir: &Path,
    mode: OpenMode,
    after_checkpoint: &mut dyn FnMut(),
) -> Result<Loaded, StoreError> {
    let series_dir = dir.join(SERIES_DIR);
    let mut manifest = Manifest::load(&series_dir)?;
    let mut series: HashMap<SeriesId, SharedHistory> =
        checkpoint::load_series(&series_dir, &mut manifest, mode)?
            .into_iter()
            .map(|(id, history)| (id, Arc::new(Mutex::new(history))))
            .collect();
    after_checkpoint();

    let segments = match wal::list_segments(&dir.join(WAL_DIR)) {
        // A writer makes the directory at its first open and never removes it: a store without
        // one has no log yet (only `events add` wrote to it).
        Err(StoreError::Io { source, .. })
            if mode == OpenMode::ReadOnly && source.kind() == std::io::ErrorKind::NotFound =>
        {
            Vec::new()
        }
        listed => listed?,
    };
    let newest_segment = segments.last().map(|(sequence, _)| *sequence);
    let (mut replayed_records, mut replayed_bytes) = (0, 0);
    for (sequence, path) in &segments {
        if *sequence <= manifest.wal_checkpoint {
            continue;
        }
        let is_newest = Some(*sequence) == newest_segment;
        let outcome = wal::replay_segment(path, is_newest, mode, |record| match record {
            Record::Samples(batch) => StoreCore::apply(&mut series, &batch),
            Record::Deletion(id) => {
                series.remove(&id);
            }
        })?;
        replayed_records += outcome.records;
        replayed_bytes += outcome.record_bytes;
    }
    Ok(Loaded {
        manifest,
        series,
        newest_segment,
        replayed_records,
        replayed_bytes,
    })
}

/// One read-only attempt at [`load`]; `None` when the writer checkpointed under it: a file it
/// listed was gone when it came to read it, or the manifest changed while it read.
///
/// A checkpoint writes its Parquet files, then the manifest, then removes the log segments the
/// manifest now covers. Parquet files newer than the manifest read are harmless: the log replayed
/// on top ends at the same last write per timestamp. Segments removed before they were listed
/// would lose samples silently, but their removal follows a new manifest, which the second
/// reading of it finds.
fn load_unchanged(
    dir: &Path,
    after_checkpoint: &mut dyn FnMut(),
) -> Result<Option<Loaded>, StoreError> {
    let loaded = match load(dir, OpenMode::ReadOnly, after_checkpoint) {
        Ok(loaded) => loaded,
        Err(StoreError::Io { path, source }) if source.kind() == std::io::ErrorKind::NotFound => {
            tracing::debug!(path = %path.display(), "a store file went while it was being read");
            return Ok(None);
        }
        Err(error) => return Err(error),
    };
    if Manifest::load(&dir.join(SERIES_DIR))? != loaded.manifest {
        tracing::debug!("the store's manifest changed while it was being read");
        return Ok(None);
    }
    Ok(Some(loaded))
}

impl StoreCore {
    /// Opens (creating if needed) the store in `dir` as its writer: takes the lock, loads the last
    /// checkpoint, replays the log after it, truncates a torn final record and starts a new segment.
    pub(super) fn open(dir: &Path, options: StoreOptions) -> Result<Self, StoreError> {
        let dir = dir.to_owned();
        let wal_dir = dir.join(WAL_DIR);
        let series_dir = dir.join(SERIES_DIR);
        for path in [&dir, &wal_dir, &series_dir] {
            fs::create_dir_all(path).map_err(|source| StoreError::Io {
                path: path.clone(),
                source,
            })?;
        }
        let lock = lock(&dir)?;
        checkpoint::remove_leftovers(&series_dir)?;

        let Loaded {
            mut manifest,
            series,
            newest_segment,
            replayed_records,
            replayed_bytes,
        } = load(&dir, OpenMode::ReadWrite, &mut || {})?;
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
        let next_sequence = newest_segment.unwrap_or(0).max(manifest.wal_checkpoint) + 1;
        let mut log = Wal::create(&wal_dir, next_sequence, options.fsync)?;
        log.add_replayed_bytes(replayed_bytes);
        tracing::info!(
            dir = %dir.display(),
            series = series.len(),
            replayed_records,
            replayed_bytes,
            "opened metric store"
        );

        let writer = Writer {
            _lock: lock,
            log: Mutex::new(log),
        };
        let store = Self::assemble(&dir, Some(writer), series, manifest, options);
        if let Some(retention) = store.options.retention {
            store.enforce_retention(Timestamp::now(), retention)?;
        }
        Ok(store)
    }

    /// Opens the store in `dir` read-only (see [`super::PolarsStore::open_read_only`]);
    /// `after_checkpoint` runs in each attempt between the Parquet files and the log.
    pub(super) fn open_read_only(
        dir: &Path,
        options: StoreOptions,
        after_checkpoint: &mut dyn FnMut(),
    ) -> Result<Self, StoreError> {
        // Everything below reads a missing directory as an empty store.
        fs::read_dir(dir).map_err(|source| StoreError::Io {
            path: dir.to_owned(),
            source,
        })?;
        for _ in 0..READ_ATTEMPTS {
            let Some(loaded) = load_unchanged(dir, after_checkpoint)? else {
                continue;
            };
            tracing::info!(
                dir = %dir.display(),
                series = loaded.series.len(),
                replayed_records = loaded.replayed_records,
                replayed_bytes = loaded.replayed_bytes,
                "opened metric store read-only"
            );
            let store = Self::assemble(dir, None, loaded.series, loaded.manifest, options);
            if let Some(retention) = store.options.retention {
                store.drop_expired(Timestamp::now(), retention);
            }
            return Ok(store);
        }
        Err(StoreError::ChangedWhileReading {
            dir: dir.to_owned(),
            attempts: READ_ATTEMPTS,
        })
    }

    /// A store over what was loaded.
    fn assemble(
        dir: &Path,
        writer: Option<Writer>,
        series: HashMap<SeriesId, SharedHistory>,
        manifest: Manifest,
        options: StoreOptions,
    ) -> Self {
        Self {
            dir: dir.to_owned(),
            writer,
            series: RwLock::new(series),
            checkpointing: Mutex::new(manifest),
            options,
            #[cfg(test)]
            pause: Default::default(),
        }
    }
}

/// Creates (if needed) and takes the writer's lock on the store in `dir`, or says another process
/// holds it.
fn lock(dir: &Path) -> Result<File, StoreError> {
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
    Ok(lock)
}
