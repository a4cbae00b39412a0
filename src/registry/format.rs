//! The registry's on-disk format: the manifest's records, the model file's bytes, and the names
//! of series directories and version files. `models/README.md` describes the same format for
//! people; a change here needs a migration of the stored files (see that README).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{RegistryError, io_error};
use crate::domain::SeriesId;
use crate::forecast::FittedModel;

/// Name of the manifest in the registry directory.
pub const MANIFEST_FILE: &str = "manifest.json";

/// First bytes of every model file: format name and version.
const MAGIC: &[u8; 8] = b"PSMODEL1";

/// What the manifest records about one stored version (the model itself stays in its file).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersionInfo {
    /// Version number, increasing per series from 1.
    pub version: u64,
    /// File name inside the series directory.
    pub file: String,
    /// When it was trained (milliseconds since the epoch).
    pub created_at_ms: i64,
    /// prescale version that trained it.
    pub prescale_version: String,
    /// CRC-32 of the file's payload.
    pub crc32: u32,
    /// File size in bytes.
    pub bytes: u64,
    /// First and one-past-last time of the training window (milliseconds since the epoch).
    pub trained_from_ms: i64,
    /// End of the training window.
    pub trained_to_ms: i64,
    /// Points fitted.
    pub points: usize,
    /// Backtest MAE of the ensemble in the series' units, when it could be backtested.
    pub backtest_mae: Option<f64>,
    /// Backtest MASE of the ensemble.
    pub backtest_mase: Option<f64>,
    /// Whether it was ever live (rollbacks return to these).
    pub was_live: bool,
    /// Why it was or was not promoted.
    pub decision: String,
}

/// The versions of one series.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SeriesEntry {
    /// Directory of its files inside the registry.
    pub dir: String,
    /// The promoted version, if any.
    pub live: Option<u64>,
    /// Every stored version, oldest first.
    pub versions: Vec<VersionInfo>,
}

impl SeriesEntry {
    /// The newest version before the live one that was live: the default rollback target.
    pub fn previous_live(&self) -> Option<u64> {
        let live = self.live?;
        self.versions
            .iter()
            .filter(|info| info.was_live && info.version < live)
            .map(|info| info.version)
            .max()
    }

    /// The record of `version`.
    pub fn version(&self, version: u64) -> Option<&VersionInfo> {
        self.versions.iter().find(|info| info.version == version)
    }
}

/// The manifest: every series' versions and its live one.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(super) struct Manifest {
    /// Entries by series (its canonical text form).
    pub(super) series: BTreeMap<String, SeriesEntry>,
}

/// The payload of a model file, borrowed for writing.
#[derive(Serialize)]
pub(super) struct ModelFileRef<'a> {
    /// The series, in its canonical text form.
    pub(super) series: &'a str,
    /// The version this file holds.
    pub(super) version: u64,
    /// prescale version that trained it.
    pub(super) prescale_version: &'a str,
    /// When it was trained (milliseconds since the epoch).
    pub(super) created_at_ms: i64,
    /// The trained model.
    pub(super) model: &'a FittedModel,
}

/// The payload of a model file, as read.
///
/// `prescale_version` and `created_at_ms` are in the file too; the reader skips them (the manifest
/// carries both).
#[derive(Deserialize)]
pub(super) struct ModelFile {
    /// The series, in its canonical text form.
    pub(super) series: String,
    /// The version this file holds.
    pub(super) version: u64,
    /// The trained model.
    pub(super) model: FittedModel,
}

/// A model file's bytes (`MAGIC`, the payload's CRC-32 in little endian, the payload encoded with
/// `rmp_serde::to_vec_named`) and that CRC-32.
pub(super) fn encode_model_file(
    contents: &ModelFileRef<'_>,
) -> Result<(Vec<u8>, u32), rmp_serde::encode::Error> {
    let payload = rmp_serde::to_vec_named(contents)?;
    let crc32 = crc32fast::hash(&payload);
    let mut bytes = Vec::with_capacity(payload.len() + 12);
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&crc32.to_le_bytes());
    bytes.extend_from_slice(&payload);
    Ok((bytes, crc32))
}

/// The CRC-32 a model file's header records, `None` when it is no model file.
pub(super) fn header_crc32(bytes: &[u8]) -> Option<u32> {
    if bytes.len() < MAGIC.len() + 4 || &bytes[..MAGIC.len()] != MAGIC {
        return None;
    }
    let crc: [u8; 4] = bytes[MAGIC.len()..MAGIC.len() + 4].try_into().ok()?;
    Some(u32::from_le_bytes(crc))
}

/// Checks a model file's header and CRC-32 (against the file's own and `manifest_crc32`) and
/// decodes its payload; the error says why the file is corrupt.
pub(super) fn decode_model_file(bytes: &[u8], manifest_crc32: u32) -> Result<ModelFile, String> {
    let Some(stored) = header_crc32(bytes) else {
        return Err(format!("{} bytes, not a prescale model file", bytes.len()));
    };
    let payload = &bytes[MAGIC.len() + 4..];
    let actual = crc32fast::hash(payload);
    if stored != actual || stored != manifest_crc32 {
        return Err(format!(
            "CRC-32 {actual:08x} of the payload, {stored:08x} in the file, {manifest_crc32:08x} in the manifest"
        ));
    }
    rmp_serde::from_slice(payload).map_err(|error| format!("cannot decode: {error}"))
}

/// A directory name for `series`: its name made file-safe plus a CRC-32 of its canonical form,
/// so label sets that sanitise alike stay apart.
pub(super) fn series_dir(series: &SeriesId) -> String {
    let canonical = series.to_string();
    let safe: String = series
        .name()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    format!("{safe}-{:08x}", crc32fast::hash(canonical.as_bytes()))
}

/// The manifest in `dir`, empty when there is none yet.
pub(super) fn read_manifest(dir: &Path) -> Result<Manifest, RegistryError> {
    let path = dir.join(MANIFEST_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|error| RegistryError::Manifest {
            path: path.clone(),
            reason: error.to_string(),
        }),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(Manifest::default()),
        Err(error) => Err(io_error(&path, error)),
    }
}

/// The highest `vNNNNNN.model` number in `dir`, 0 when none.
pub(super) fn highest_file_version(dir: &Path) -> u64 {
    version_files(dir)
        .into_iter()
        .map(|(version, _)| version)
        .max()
        .unwrap_or(0)
}

/// The files in `dir` that hold or were to hold a version, with its number: `vNNNNNN.model` and
/// the temporaries of interrupted writes (`vNNNNNN.model.<pid>.<n>.tmp`).
pub(super) fn version_files(dir: &Path) -> Vec<(u64, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let version = name
                .strip_prefix('v')?
                .split('.')
                .next()?
                .parse::<u64>()
                .ok()?;
            Some((version, entry.path()))
        })
        .collect()
}
