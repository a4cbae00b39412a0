//! Crash-safe file replacement: a file is written under a temporary name, flushed, renamed into
//! place and its directory flushed, so a crash leaves the old or the new content, never a mix.
//!
//! Shared by the metric store (checkpoints, their manifest), the model registry (model files, the
//! manifest) and the app (events and workloads beside the store). It depends on nothing in the
//! crate, so none of them has to import another to get it.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Numbers the temporary files of this process, so two writers of one file never share one.
static TEMPORARY_FILES: AtomicU64 = AtomicU64::new(0);

/// Errors replacing a file.
///
/// The messages are the ones the metric store gave when this code lived there, so logs and alerts
/// that match on them keep working.
#[derive(Debug, thiserror::Error)]
pub enum AtomicWriteError {
    /// Creating, flushing or renaming the file, or flushing its directory, failed.
    #[error("store i/o on {path}: {source}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The caller's writer failed to fill the temporary file.
    #[error("checkpoint {path}: {reason}")]
    Write {
        /// The file being replaced.
        path: PathBuf,
        /// The writer's message.
        reason: String,
    },
}

/// Writes `name` in `dir` through a temporary file that `write` fills, flushed before the rename,
/// and flushes the directory. The temporary name (`name.<pid>.<n>.tmp`) is unique to the call, so
/// concurrent writers of one file never write into each other's temporary file: the last rename
/// wins whole. Callers that read, modify and write a file still serialise among themselves.
pub fn write_atomically(
    dir: &Path,
    name: &str,
    write: impl FnOnce(&mut File) -> Result<(), String>,
) -> Result<(), AtomicWriteError> {
    let final_path = dir.join(name);
    let temporary = dir.join(format!(
        "{name}.{}.{}.tmp",
        std::process::id(),
        TEMPORARY_FILES.fetch_add(1, Ordering::Relaxed)
    ));
    let io_error = |path: &Path| {
        let path = path.to_owned();
        move |source| AtomicWriteError::Io { path, source }
    };
    let mut file = File::create(&temporary).map_err(io_error(&temporary))?;
    write(&mut file).map_err(|reason| AtomicWriteError::Write {
        path: final_path.clone(),
        reason,
    })?;
    file.sync_all().map_err(io_error(&temporary))?;
    drop(file);
    fs::rename(&temporary, &final_path).map_err(io_error(&final_path))?;
    sync_dir(dir).map_err(io_error(dir))
}

/// Writes `bytes` to `dir/name` atomically (see [`write_atomically`]). For small files: manifests,
/// model files, the events and workloads kept beside the store.
pub fn write_file_atomically(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), AtomicWriteError> {
    write_atomically(dir, name, |file| {
        file.write_all(bytes).map_err(|error| error.to_string())
    })
}

/// Makes a directory's entries durable (files created in or renamed into it).
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir).and_then(|handle| handle.sync_all())
}
