//! The model registry: trained models per series, versioned on disk, with the promoted (live)
//! version of each series named in a manifest.
//!
//! Layout under the registry directory (`models/` by default):
//!
//! ```text
//! models/manifest.json                 which versions exist and which is live, per series
//! models/<series-key>/v000001.model    one trained model: header, CRC-32, MessagePack payload
//! ```
//!
//! Every file is written atomically (temporary file, fsync, rename, fsync of the directory), and a
//! model file before the manifest that names it: a crash at any point leaves the previous manifest
//! naming complete files, plus at worst an orphan model file that no manifest names (its version
//! number is never reused; the series' next version deletes it). A model file whose CRC-32 does
//! not match its payload is reported and the newest earlier live version is served instead.
//!
//! Writers in several processes (a server, a `prescale retrain` CronJob) take an exclusive lock on
//! `.lock` and re-read the manifest before each write, so none overwrites another's versions.
//!
//! The API is narrow ([`Registry::add`], [`Registry::load_live`], [`Registry::rollback`],
//! [`Registry::list`], [`Registry::entry`]) so a remote object store can take the directory's place.

mod cron;
mod format;
mod object_store;
mod pointer;

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use parking_lot::Mutex;

use crate::atomic_file::{sync_dir, write_file_atomically};
use crate::domain::{SeriesId, Timestamp};
use crate::forecast::FittedModel;

pub use cron::CronSchedule;
pub use format::{MANIFEST_FILE, SeriesEntry, VersionInfo};
pub use object_store::{
    AzureLocation, EncodedVersion, ModelStore, ModelStoreLocation, S3Location, StoreClaim,
    StoredVersion,
};
pub use pointer::{LivePointer, MODELS_TABLE};

use format::{
    Manifest, ModelFileRef, decode_model_file, encode_model_file, highest_file_version,
    read_manifest, series_dir, version_files,
};

/// Lock file that serialises writers across processes (a server and a `prescale retrain`).
const LOCK_FILE: &str = ".lock";

/// Errors of the registry.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// A file or directory could not be read or written.
    #[error("registry i/o on {path}: {reason}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
    /// A model file is truncated, fails its CRC-32 or does not decode.
    #[error("model file {path} is corrupt: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The manifest does not decode.
    #[error("manifest {path} is unreadable: {reason}")]
    Manifest {
        /// The manifest.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// No model of a series, or not that version.
    #[error("no model of series {series}{}", version.map_or(String::new(), |v| format!(" at version {v}")))]
    NotFound {
        /// The series.
        series: String,
        /// The version asked for, if any.
        version: Option<u64>,
    },
    /// A rollback has no earlier version to return to.
    #[error("series {series} has no version before {live} to roll back to")]
    NothingToRollBack {
        /// The series.
        series: String,
        /// Its live version.
        live: u64,
    },
    /// The fleet's model store refused or failed a call.
    #[error("model store {location} failed on {key:?}: {reason}")]
    ObjectStore {
        /// The store's URL.
        location: String,
        /// The object's key.
        key: String,
        /// What failed.
        reason: String,
    },
    /// The fleet's model store is claimed by another fleet.
    #[error(
        "model store {location} is used by another fleet: fleet {} (etcd prefix {:?}, claimed by {} at {}), while this fleet is {fleet_id}. Give each fleet a store or prefix of its own; if this is that fleet and its etcd was rebuilt, `prescale models claim-store` makes the store this fleet's",
        held.fleet_id, held.etcd_prefix, held.claimed_by, Timestamp::from_millis(held.claimed_at_ms)
    )]
    ClaimedByAnotherFleet {
        /// The store's URL.
        location: String,
        /// The claim it holds.
        held: Box<StoreClaim>,
        /// The id of the fleet refused.
        fleet_id: String,
    },
    /// A live model pointer read from the fleet does not decode.
    #[error("the live model pointer of {series} does not decode: {reason}")]
    Pointer {
        /// The series.
        series: String,
        /// Why.
        reason: String,
    },
    /// A cron expression is malformed.
    #[error("invalid schedule {expression:?}: {reason}")]
    InvalidSchedule {
        /// The expression.
        expression: String,
        /// What is wrong.
        reason: String,
    },
}

/// A model read back from the registry.
#[derive(Debug)]
pub struct LoadedModel {
    /// Its version.
    pub version: u64,
    /// The model, forecasting from the end of its training data until re-anchored.
    pub model: FittedModel,
    /// Versions that were skipped because their file is corrupt, with why: the live version
    /// when this is a fallback.
    pub skipped: Vec<(u64, String)>,
}

/// A manifest that did not decode, moved aside by [`Registry::open_or_set_aside`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetAside {
    /// Where the manifest is now (`manifest.json.corrupt-<milliseconds since the epoch>`).
    pub moved_to: PathBuf,
    /// Why it did not decode.
    pub reason: String,
}

/// Versioned models on disk and the manifest of promoted versions.
#[derive(Debug)]
pub struct Registry {
    /// The registry directory.
    dir: PathBuf,
    /// The manifest as last written; the lock also serialises manifest writes.
    manifest: Mutex<Manifest>,
    /// Modification time and size of the manifest file when [`Self::reload_if_changed`] last
    /// read it (`None` inside: there was no file).
    seen: Mutex<Option<ManifestStamp>>,
    /// Versions kept per series (see [`Registry::with_keep_versions`]); `None` keeps all.
    keep_versions: Option<usize>,
}

/// What tells a changed manifest file: its modification time and size.
type ManifestStamp = Option<(Option<std::time::SystemTime>, u64)>;

impl Registry {
    /// Opens (creating if needed) the registry in `dir`.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, RegistryError> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(|error| io_error(&dir, error))?;
        Self::open_without_creating(dir)
    }

    /// Opens the registry in `dir` without creating it, for the commands that read it or roll a
    /// series back: a directory that does not exist holds no model yet and stays absent (the
    /// first [`Self::add`] creates it).
    pub fn open_without_creating(dir: impl Into<PathBuf>) -> Result<Self, RegistryError> {
        let dir = dir.into();
        let manifest = read_manifest(&dir)?;
        Ok(Self {
            dir,
            manifest: Mutex::new(manifest),
            seen: Mutex::new(None),
            keep_versions: None,
        })
    }

    /// As [`Self::open`], but a manifest that does not decode is moved aside (under the write lock,
    /// once it still does not decode there) and the registry opens empty: no model is served that
    /// the manifest could not vouch for, series are trained on first use, and their new versions
    /// are numbered after the files already on disk. The model files stay, for an operator to
    /// restore from the moved manifest.
    pub fn open_or_set_aside(
        dir: impl Into<PathBuf>,
    ) -> Result<(Self, Option<SetAside>), RegistryError> {
        let dir = dir.into();
        let reason = match Self::open(&dir) {
            Err(RegistryError::Manifest { reason, .. }) => reason,
            opened => return opened.map(|registry| (registry, None)),
        };
        let _writer = write_lock(&dir)?;
        if let Err(RegistryError::Manifest { path, .. }) = read_manifest(&dir) {
            let moved_to = dir.join(format!(
                "{MANIFEST_FILE}.corrupt-{}",
                Timestamp::now().as_millis()
            ));
            std::fs::rename(&path, &moved_to).map_err(|error| io_error(&path, error))?;
            sync_dir(&dir).map_err(|error| io_error(&dir, error))?;
            return Ok((Self::open(dir)?, Some(SetAside { moved_to, reason })));
        }
        // Another process wrote a good manifest meanwhile.
        Ok((Self::open(dir)?, None))
    }

    /// Takes the cross-process write lock and adopts the manifest as on disk, so a write by another
    /// process since is kept rather than overwritten. The lock holds until the file is dropped.
    fn lock_and_reload(&self, manifest: &mut Manifest) -> Result<std::fs::File, RegistryError> {
        let lock = write_lock(&self.dir)?;
        *manifest = read_manifest(&self.dir)?;
        Ok(lock)
    }

    /// Adopts the manifest as it is on disk now, when its size or modification time changed since
    /// the last call, so versions another process promoted or rolled back (`prescale retrain`,
    /// `prescale models rollback`) become visible through [`Self::list`]. Returns whether it was
    /// read. A manifest that cannot be read leaves the last one in place.
    pub fn reload_if_changed(&self) -> Result<bool, RegistryError> {
        let path = self.dir.join(MANIFEST_FILE);
        let stamp = match std::fs::metadata(&path) {
            Ok(metadata) => Some((metadata.modified().ok(), metadata.len())),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
            Err(error) => return Err(io_error(&path, error)),
        };
        let mut seen = self.seen.lock();
        if *seen == Some(stamp) {
            return Ok(false);
        }
        *self.manifest.lock() = read_manifest(&self.dir)?;
        *seen = Some(stamp);
        Ok(true)
    }

    /// The registry directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Every series with stored models, by canonical name.
    pub fn list(&self) -> Vec<(String, SeriesEntry)> {
        self.manifest
            .lock()
            .series
            .iter()
            .map(|(name, entry)| (name.clone(), entry.clone()))
            .collect()
    }

    /// The versions of `series`.
    pub fn entry(&self, series: &SeriesId) -> Option<SeriesEntry> {
        self.manifest
            .lock()
            .series
            .get(&series.to_string())
            .cloned()
    }

    /// Keeps at most `keep` versions per series (`None`: all; `[registry] keep_versions`): each
    /// [`Registry::add`] drops the oldest beyond the newest `keep`, but never the live version nor
    /// the newest earlier live one (the default rollback target, and what is served when the live
    /// file is corrupt). The manifest is written without them before their files are deleted, so
    /// a crash in between leaves only unlisted files behind, which the series' next version
    /// deletes.
    #[must_use]
    pub fn with_keep_versions(mut self, keep: Option<usize>) -> Self {
        self.keep_versions = keep;
        self
    }

    /// Stores `model` as the next version of `series`, promoted when `promote`, with `decision`
    /// recorded as the reason. The model file is durable before the manifest names it; versions
    /// beyond [`Registry::with_keep_versions`]'s are dropped.
    pub fn add(
        &self,
        series: &SeriesId,
        model: &FittedModel,
        promote: bool,
        decision: &str,
    ) -> Result<VersionInfo, RegistryError> {
        let key = series.to_string();
        let dir_name = series_dir(series);
        let series_dir = self.dir.join(&dir_name);
        std::fs::create_dir_all(&series_dir).map_err(|error| io_error(&series_dir, error))?;
        // Both held across the write so versions are unique and manifests are written in order,
        // by this process and any other writing the same directory.
        let created_at_ms = Timestamp::now().as_millis();
        let mut manifest = self.manifest.lock();
        let _writer = self.lock_and_reload(&mut manifest)?;
        let listed = manifest
            .series
            .get(&key)
            .and_then(|entry| entry.versions.iter().map(|v| v.version).max())
            .unwrap_or(0);
        // A crash after a model file was written and before the manifest was leaves an orphan:
        // never reuse its number.
        let version = listed.max(highest_file_version(&series_dir)) + 1;
        let file = format!("v{version:06}.model");
        let (bytes, crc32) = encode_model_file(&ModelFileRef {
            series: &key,
            version,
            prescale_version: env!("CARGO_PKG_VERSION"),
            created_at_ms,
            model,
        })
        .map_err(|error| RegistryError::Io {
            path: series_dir.join(&file),
            reason: format!("cannot encode the model: {error}"),
        })?;
        write_file_atomically(&series_dir, &file, &bytes)
            .map_err(|error| io_error(&series_dir.join(&file), error))?;
        let report = model.report();
        let info = VersionInfo {
            version,
            file,
            created_at_ms,
            prescale_version: env!("CARGO_PKG_VERSION").to_owned(),
            crc32,
            bytes: bytes.len() as u64,
            trained_from_ms: model.trained_start().as_millis(),
            trained_to_ms: model.trained_end().as_millis(),
            points: model.preprocessing().points,
            backtest_mae: report.combined.as_ref().map(|scores| scores.mae),
            backtest_mase: report.combined.as_ref().and_then(|scores| scores.mase),
            was_live: promote,
            decision: decision.to_owned(),
        };
        let mut updated = manifest.series.get(&key).cloned().unwrap_or(SeriesEntry {
            dir: dir_name,
            ..SeriesEntry::default()
        });
        updated.versions.push(info.clone());
        if promote {
            updated.live = Some(version);
        }
        let oldest_listed = updated
            .versions
            .iter()
            .map(|listed| listed.version)
            .min()
            .unwrap_or(version);
        if let Some(keep) = self.keep_versions {
            drop_oldest(&mut updated, keep);
        }
        let named: HashSet<u64> = updated.versions.iter().map(|kept| kept.version).collect();
        self.commit(&mut manifest, key, updated)?;
        // Written to the directory, named by no manifest now: versions beyond keep_versions, and
        // orphans of a crash or of a deletion that failed before. Files older than the oldest
        // version the manifest listed predate it (a manifest set aside) and stay for an operator.
        for (old, path) in version_files(&series_dir) {
            if old >= oldest_listed
                && !named.contains(&old)
                && let Err(error) = std::fs::remove_file(&path)
            {
                tracing::warn!(series = %series, version = old, path = %path.display(), %error, "cannot delete a model file no manifest names");
            }
        }
        Ok(info)
    }

    /// The live model of `series`: the promoted version or, when its file is corrupt, the newest
    /// earlier version that was live and reads back intact (the skipped ones are reported in
    /// [`LoadedModel::skipped`]). `None` when the series has no live version.
    pub fn load_live(&self, series: &SeriesId) -> Result<Option<LoadedModel>, RegistryError> {
        let Some(entry) = self.entry(series) else {
            return Ok(None);
        };
        let Some(live) = entry.live else {
            return Ok(None);
        };
        let mut candidates: Vec<&VersionInfo> = entry
            .versions
            .iter()
            .filter(|info| info.version == live || (info.was_live && info.version < live))
            .collect();
        candidates.sort_by_key(|info| std::cmp::Reverse(info.version));
        let mut skipped = Vec::new();
        let mut last_error = None;
        for info in candidates {
            match self.read(&series.to_string(), &entry, info) {
                Ok(model) => {
                    return Ok(Some(LoadedModel {
                        version: info.version,
                        model,
                        skipped,
                    }));
                }
                Err(error) => {
                    tracing::warn!(series = %series, version = info.version, %error, "skipping unreadable model version");
                    skipped.push((info.version, error.to_string()));
                    last_error = Some(error);
                }
            }
        }
        Err(last_error.unwrap_or(RegistryError::NotFound {
            series: series.to_string(),
            version: Some(live),
        }))
    }

    /// Version `version` of `series`, its hash checked.
    pub fn load(&self, series: &SeriesId, version: u64) -> Result<FittedModel, RegistryError> {
        let not_found = || RegistryError::NotFound {
            series: series.to_string(),
            version: Some(version),
        };
        let entry = self.entry(series).ok_or_else(not_found)?;
        let info = entry.version(version).ok_or_else(not_found)?;
        self.read(&series.to_string(), &entry, info)
    }

    /// Makes `version` (by default the newest earlier version that was live) the live version of
    /// `series`, after checking that its file reads back intact. Returns the version now live.
    pub fn rollback(&self, series: &SeriesId, version: Option<u64>) -> Result<u64, RegistryError> {
        let key = series.to_string();
        let entry = self.entry(series).ok_or_else(|| RegistryError::NotFound {
            series: key.clone(),
            version,
        })?;
        let target = match version {
            Some(version) => version,
            None => {
                let live = entry.live.ok_or_else(|| RegistryError::NotFound {
                    series: key.clone(),
                    version: None,
                })?;
                entry
                    .previous_live()
                    .ok_or(RegistryError::NothingToRollBack {
                        series: key.clone(),
                        live,
                    })?
            }
        };
        let info = entry
            .version(target)
            .ok_or_else(|| RegistryError::NotFound {
                series: key.clone(),
                version: Some(target),
            })?;
        self.read(&key, &entry, info)?;
        let mut manifest = self.manifest.lock();
        let _writer = self.lock_and_reload(&mut manifest)?;
        let mut updated = manifest.series.get(&key).cloned().unwrap_or(entry.clone());
        updated.live = Some(target);
        if let Some(info) = updated.versions.iter_mut().find(|v| v.version == target) {
            info.was_live = true;
            info.decision = format!("{}; rolled back to", info.decision);
        }
        self.commit(&mut manifest, key, updated)?;
        Ok(target)
    }

    /// Writes the manifest with `entry` for `key`, then adopts it in memory.
    fn commit(
        &self,
        manifest: &mut Manifest,
        key: String,
        entry: SeriesEntry,
    ) -> Result<(), RegistryError> {
        let mut next = Manifest {
            series: manifest.series.clone(),
        };
        next.series.insert(key, entry);
        let text = serde_json::to_vec_pretty(&next).map_err(|error| RegistryError::Manifest {
            path: self.dir.join(MANIFEST_FILE),
            reason: error.to_string(),
        })?;
        write_file_atomically(&self.dir, MANIFEST_FILE, &text)
            .map_err(|error| io_error(&self.dir.join(MANIFEST_FILE), error))?;
        *manifest = next;
        Ok(())
    }

    /// Reads and verifies one model file.
    fn read(
        &self,
        key: &str,
        entry: &SeriesEntry,
        info: &VersionInfo,
    ) -> Result<FittedModel, RegistryError> {
        let path = self.dir.join(&entry.dir).join(&info.file);
        let bytes = std::fs::read(&path).map_err(|error| io_error(&path, error))?;
        let corrupt = |reason: String| RegistryError::Corrupt {
            path: path.clone(),
            reason,
        };
        let file = decode_model_file(&bytes, info.crc32).map_err(corrupt)?;
        if file.version != info.version || file.series != key {
            return Err(corrupt(format!(
                "holds version {} of {}, the manifest expects version {} of {key}",
                file.version, file.series, info.version
            )));
        }
        Ok(file.model)
    }
}

/// Removes from `entry` its oldest versions beyond the newest `keep`, except the live version and
/// the newest earlier live one.
fn drop_oldest(entry: &mut SeriesEntry, keep: usize) {
    let live = entry.live;
    let fallback = entry.previous_live();
    let mut newest: Vec<u64> = entry.versions.iter().map(|info| info.version).collect();
    newest.sort_unstable_by(|a, b| b.cmp(a));
    let kept: HashSet<u64> = newest
        .into_iter()
        .take(keep)
        .chain(live)
        .chain(fallback)
        .collect();
    entry.versions.retain(|info| kept.contains(&info.version));
}

/// Takes the cross-process write lock of the registry in `dir`; it holds until the file is dropped.
fn write_lock(dir: &Path) -> Result<std::fs::File, RegistryError> {
    let path = dir.join(LOCK_FILE);
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|error| io_error(&path, error))?;
    lock.lock().map_err(|error| io_error(&path, error))?;
    Ok(lock)
}

fn io_error(path: &Path, error: impl std::fmt::Display) -> RegistryError {
    RegistryError::Io {
        path: path.to_owned(),
        reason: error.to_string(),
    }
}

#[cfg(test)]
mod tests;
