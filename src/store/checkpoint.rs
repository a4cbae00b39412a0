//! Checkpoints: one Parquet file per series plus a manifest naming them and the log they replace.
//!
//! Every file is written to a temporary name, flushed, and renamed into place, so a crash leaves either
//! the old or the new version, never a torn one. The manifest is written last: until it names the new
//! log position, recovery replays the older segments on top of the new files, which is harmless because
//! replaying a log prefix again ends at the same last write for every timestamp.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use polars::prelude::{DataFrame, ParquetReader, ParquetWriter, SerReader};
use serde::{Deserialize, Serialize};

use crate::atomic_file::write_atomically;
use crate::domain::SeriesId;

use super::history::SeriesHistory;
use super::{OpenMode, StoreError};

/// Name of the manifest file in the checkpoint directory.
const MANIFEST: &str = "manifest.json";
/// Version of the manifest layout.
const MANIFEST_FORMAT: u32 = 1;

/// Which Parquet file holds each series, and how much of the log they cover.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Manifest {
    /// Layout version, checked on load.
    format: u32,
    /// Log segments up to and including this sequence are contained in the Parquet files.
    pub(super) wal_checkpoint: u64,
    /// Number for the next new series file.
    next_file: u64,
    /// Series key (canonical `SeriesId` text) to file name.
    files: BTreeMap<String, String>,
}

impl Manifest {
    /// The manifest of an empty store.
    pub(super) fn empty() -> Self {
        Self {
            format: MANIFEST_FORMAT,
            ..Self::default()
        }
    }

    /// Reads the manifest in `dir`, or an empty one when there is none yet.
    pub(super) fn load(dir: &Path) -> Result<Self, StoreError> {
        let path = dir.join(MANIFEST);
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Self::empty()),
            Err(source) => return Err(StoreError::Io { path, source }),
        };
        let manifest: Self =
            serde_json::from_str(&text).map_err(|error| StoreError::Checkpoint {
                path: path.clone(),
                reason: error.to_string(),
            })?;
        if manifest.format != MANIFEST_FORMAT {
            return Err(StoreError::Checkpoint {
                path,
                reason: format!("unsupported manifest format {}", manifest.format),
            });
        }
        Ok(manifest)
    }

    /// Writes the manifest atomically into `dir`.
    pub(super) fn store(&self, dir: &Path) -> Result<(), StoreError> {
        let text = serde_json::to_vec_pretty(self).expect("invariant: the manifest serialises");
        Ok(write_atomically(dir, MANIFEST, |file| {
            file.write_all(&text).map_err(|e| e.to_string())
        })?)
    }

    /// The series and their files.
    pub(super) fn entries(&self) -> impl Iterator<Item = (&str, &str)> {
        self.files
            .iter()
            .map(|(key, file)| (key.as_str(), file.as_str()))
    }

    /// Forgets `series`; returns the file that held it, if it had one.
    pub(super) fn remove(&mut self, series: &SeriesId) -> Option<String> {
        self.files.remove(&series.to_string())
    }

    /// The file of `series`, allocating a new name for a series not yet checkpointed.
    pub(super) fn file_for(&mut self, series: &SeriesId) -> String {
        let key = series.to_string();
        if let Some(file) = self.files.get(&key) {
            return file.clone();
        }
        self.next_file += 1;
        let file = format!("s{:010}.parquet", self.next_file);
        self.files.insert(key, file.clone());
        file
    }
}

/// Writes one series' frame as `file` in `dir`, atomically.
pub(super) fn write_series(dir: &Path, file: &str, frame: &DataFrame) -> Result<(), StoreError> {
    let mut frame = frame.clone();
    Ok(write_atomically(dir, file, |handle| {
        ParquetWriter::new(handle)
            .finish(&mut frame)
            .map(|_| ())
            .map_err(|error| error.to_string())
    })?)
}

/// Reads one series' frame.
fn read_series(path: &PathBuf) -> Result<DataFrame, StoreError> {
    let file = File::open(path).map_err(|source| StoreError::Io {
        path: path.clone(),
        source,
    })?;
    ParquetReader::new(file)
        .finish()
        .map_err(|error| StoreError::Checkpoint {
            path: path.clone(),
            reason: error.to_string(),
        })
}

/// Removes temporary files left by a checkpoint that a crash interrupted.
pub(super) fn remove_leftovers(dir: &Path) -> Result<(), StoreError> {
    for entry in fs::read_dir(dir).map_err(|source| StoreError::Io {
        path: dir.to_owned(),
        source,
    })? {
        let path = entry
            .map_err(|source| StoreError::Io {
                path: dir.to_owned(),
                source,
            })?
            .path();
        if path.extension().is_some_and(|extension| extension == "tmp") {
            fs::remove_file(&path).map_err(|source| StoreError::Io { path, source })?;
        }
    }
    Ok(())
}

/// Reads every series the manifest names from its file in `series_dir`, each under its canonical
/// key.
///
/// A key that is not its series' canonical text (`x{a=""}`, written before a label with an empty
/// value was left out of series ids, is `x` now) is merged into the canonical series: the old keys'
/// samples in key order, then the canonical key's own on top, so on a timestamp they share the
/// canonical key's value is kept, as a later write's is. In [`OpenMode::ReadWrite`] the merged
/// series is written under the canonical key, then the manifest without the old keys, then their
/// files are removed: the old key does not come back, and a crash part-way merges the same samples
/// again at the next open. In [`OpenMode::ReadOnly`] the merge stays in memory and `manifest` is
/// left as it was read.
pub(super) fn load_series(
    series_dir: &Path,
    manifest: &mut Manifest,
    mode: OpenMode,
) -> Result<HashMap<SeriesId, SeriesHistory>, StoreError> {
    let mut series = HashMap::new();
    let mut renamed: BTreeMap<SeriesId, Vec<(String, SeriesHistory)>> = BTreeMap::new();
    for (key, file) in manifest.entries() {
        let path = series_dir.join(file);
        let id: SeriesId = key.parse().map_err(|error| StoreError::Checkpoint {
            path: path.clone(),
            reason: format!("bad series key {key:?}: {error}"),
        })?;
        let frame = read_series(&path)?;
        let history = SeriesHistory::from_frame(&frame)
            .map_err(|reason| StoreError::Checkpoint { path, reason })?;
        if key == id.to_string() {
            series.insert(id, history);
        } else {
            renamed
                .entry(id)
                .or_default()
                .push((key.to_owned(), history));
        }
    }
    if renamed.is_empty() {
        return Ok(series);
    }
    let mut old_files = Vec::new();
    for (id, old_keys) in renamed {
        let mut merged = SeriesHistory::new();
        for (key, mut history) in old_keys {
            merged.overlay(&mut history);
            tracing::info!(old_key = %key, series = %id.abbreviated(), "series read under its canonical key");
            if mode == OpenMode::ReadWrite {
                old_files.extend(manifest.files.remove(&key));
            }
        }
        if let Some(mut own) = series.remove(&id) {
            merged.overlay(&mut own);
        }
        if mode == OpenMode::ReadWrite {
            write_series(series_dir, &manifest.file_for(&id), merged.frame())?;
            merged.mark_clean();
        }
        series.insert(id, merged);
    }
    if mode == OpenMode::ReadOnly {
        return Ok(series);
    }
    manifest.store(series_dir)?;
    remove_files(series_dir, old_files)?;
    Ok(series)
}

/// Takes `series` out of the manifest and deletes their checkpoint files, so a restart does not
/// bring them back. The manifest is stored first: a crash before the deletions leaves unreferenced
/// files, never a manifest naming a missing one.
pub(super) fn forget_checkpointed(
    manifest: &mut Manifest,
    series_dir: &Path,
    series: &[SeriesId],
) -> Result<(), StoreError> {
    let files: Vec<String> = series.iter().filter_map(|id| manifest.remove(id)).collect();
    if files.is_empty() {
        return Ok(());
    }
    manifest.store(series_dir)?;
    remove_files(series_dir, files)
}

/// Deletes `files` from `series_dir`, once no stored manifest names them; one already gone is fine.
fn remove_files(series_dir: &Path, files: Vec<String>) -> Result<(), StoreError> {
    for file in files {
        let path = series_dir.join(file);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(StoreError::Io { path, source }),
        }
    }
    Ok(())
}
