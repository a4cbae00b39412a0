//! Model version files in an object store, for fleet mode: every version of a series is one
//! immutable object (`<series-dir>/v000001.model`, the registry's own file format and layout),
//! written only if no object has that key, so a version once written never changes. Which version
//! is live is not kept here: the fleet keeps that pointer in etcd (see `app::serving`'s
//! fleet models). Design: docs/decisions.md, "Fleet mode: models in an object store".
//!
//! The calls that reach the store are async; encoding and decoding a model are CPU work and are
//! plain functions, for the caller to run off the async threads.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use object_store::local::LocalFileSystem;
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};

use super::RegistryError;
use super::format::{ModelFileRef, decode_model_file, encode_model_file, header_crc32, series_dir};
use crate::domain::{SeriesId, Timestamp};
use crate::forecast::FittedModel;

/// Where the fleet's model versions are kept (`[fleet] model_store`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelStoreLocation {
    /// A directory every replica sees (a shared volume): `file:///path`.
    Directory(PathBuf),
}

impl ModelStoreLocation {
    /// Parses a store URL. Only `file:///absolute/path` is built in: the cloud backends of
    /// `object_store` turn on a feature of a crate Polars shares, which would rebuild Polars.
    pub fn parse(url: &str) -> Result<Self, String> {
        let url = url.trim();
        if let Some(path) = url.strip_prefix("file://") {
            let path = PathBuf::from(path);
            if !path.is_absolute() || path.parent().is_none() {
                return Err(format!(
                    "{url:?} must name an absolute directory other than / (file:///var/lib/prescale-models)"
                ));
            }
            return Ok(Self::Directory(path));
        }
        match url.split_once("://") {
            Some((scheme, _)) => Err(format!(
                "{scheme}:// stores are not built into this prescale; use file:///path (a directory every replica mounts)"
            )),
            None => Err(format!("{url:?} is not a URL (file:///path)")),
        }
    }
}

impl fmt::Display for ModelStoreLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Directory(path) => write!(f, "file://{}", path.display()),
        }
    }
}

/// What it takes to read a stored version back: its key and the CRC-32 of its payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredVersion {
    /// The version number, increasing per series from 1.
    pub version: u64,
    /// The object's key inside the store.
    pub key: String,
    /// CRC-32 of the file's payload.
    pub crc32: u32,
    /// The object's size in bytes.
    pub bytes: u64,
}

/// A version file encoded and ready to be written.
#[derive(Debug, Clone)]
pub struct EncodedVersion {
    /// Where it goes and how it is checked.
    pub stored: StoredVersion,
    /// The file's bytes.
    contents: Vec<u8>,
}

/// Model version files in an object store.
#[derive(Debug)]
pub struct ModelStore {
    /// The store (a local directory today).
    store: Arc<dyn ObjectStore>,
    /// Where it is, for messages.
    location: ModelStoreLocation,
}

impl ModelStore {
    /// Opens the store at `location`, creating a missing directory.
    pub fn open(location: &ModelStoreLocation) -> Result<Self, RegistryError> {
        let store = match location {
            ModelStoreLocation::Directory(path) => {
                std::fs::create_dir_all(path).map_err(|error| super::io_error(path, error))?;
                LocalFileSystem::new_with_prefix(path).map_err(|error| {
                    RegistryError::ObjectStore {
                        location: location.to_string(),
                        key: String::new(),
                        reason: error.to_string(),
                    }
                })?
            }
        };
        Ok(Self {
            store: Arc::new(store),
            location: location.clone(),
        })
    }

    /// Where the store is.
    pub fn location(&self) -> &ModelStoreLocation {
        &self.location
    }

    fn failed(&self, key: &str, error: impl fmt::Display) -> RegistryError {
        RegistryError::ObjectStore {
            location: self.location.to_string(),
            key: key.to_owned(),
            reason: error.to_string(),
        }
    }

    /// The highest version of `series` in the store, 0 when it has none.
    pub async fn highest_version(&self, series: &SeriesId) -> Result<u64, RegistryError> {
        Ok(self.versions(series).await?.last().copied().unwrap_or(0))
    }

    /// Every version number of `series` in the store, lowest first.
    pub async fn versions(&self, series: &SeriesId) -> Result<Vec<u64>, RegistryError> {
        let dir = series_dir(series);
        let listed = match self
            .store
            .list_with_delimiter(Some(&StorePath::from(dir.as_str())))
            .await
        {
            Ok(listed) => listed,
            Err(object_store::Error::NotFound { .. }) => return Ok(Vec::new()),
            Err(error) => return Err(self.failed(&dir, error)),
        };
        let mut versions: Vec<u64> = listed
            .objects
            .iter()
            .filter_map(|object| version_of(object.location.filename()?))
            .collect();
        versions.sort_unstable();
        Ok(versions)
    }

    /// Encodes `model` as version `version` of `series`. CPU work: run it off the async threads.
    pub fn encode(
        series: &SeriesId,
        version: u64,
        model: &FittedModel,
    ) -> Result<EncodedVersion, RegistryError> {
        let key = version_key(series, version);
        let (contents, crc32) = encode_model_file(&ModelFileRef {
            series: &series.to_string(),
            version,
            prescale_version: env!("CARGO_PKG_VERSION"),
            created_at_ms: Timestamp::now().as_millis(),
            model,
        })
        .map_err(|error| RegistryError::Io {
            path: PathBuf::from(&key),
            reason: format!("cannot encode the model: {error}"),
        })?;
        Ok(EncodedVersion {
            stored: StoredVersion {
                version,
                key,
                crc32,
                bytes: contents.len() as u64,
            },
            contents,
        })
    }

    /// Writes `encoded` under its key, only if no object has that key (a version is immutable).
    pub async fn put_new(&self, encoded: EncodedVersion) -> Result<StoredVersion, RegistryError> {
        let options = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        let key = StorePath::from(encoded.stored.key.as_str());
        self.store
            .put_opts(&key, PutPayload::from(encoded.contents), options)
            .await
            .map_err(|error| self.failed(&encoded.stored.key, error))?;
        Ok(encoded.stored)
    }

    /// The bytes of `stored`, unchecked (see [`ModelStore::decode`]).
    pub async fn get(&self, stored: &StoredVersion) -> Result<Vec<u8>, RegistryError> {
        let read = async {
            let got = self
                .store
                .get(&StorePath::from(stored.key.as_str()))
                .await?;
            got.bytes().await
        };
        read.await
            .map(|bytes| bytes.to_vec())
            .map_err(|error| self.failed(&stored.key, error))
    }

    /// Version `version` of `series` as the store holds it, whether or not a pointer names it,
    /// with its bytes (check them with [`ModelStore::decode`]).
    pub async fn find(
        &self,
        series: &SeriesId,
        version: u64,
    ) -> Result<(StoredVersion, Vec<u8>), RegistryError> {
        let key = version_key(series, version);
        let bytes = self
            .get(&StoredVersion {
                version,
                key: key.clone(),
                crc32: 0,
                bytes: 0,
            })
            .await?;
        let crc32 = header_crc32(&bytes).ok_or_else(|| RegistryError::Corrupt {
            path: PathBuf::from(&key),
            reason: format!("{} bytes, not a prescale model file", bytes.len()),
        })?;
        let stored = StoredVersion {
            version,
            key,
            crc32,
            bytes: bytes.len() as u64,
        };
        Ok((stored, bytes))
    }

    /// Checks `bytes` against `stored` (CRC-32, series and version) and decodes the model. CPU
    /// work: run it off the async threads.
    pub fn decode(
        series: &SeriesId,
        stored: &StoredVersion,
        bytes: &[u8],
    ) -> Result<FittedModel, RegistryError> {
        let corrupt = |reason: String| RegistryError::Corrupt {
            path: PathBuf::from(&stored.key),
            reason,
        };
        let file = decode_model_file(bytes, stored.crc32).map_err(corrupt)?;
        let key = series.to_string();
        if file.version != stored.version || file.series != key {
            return Err(corrupt(format!(
                "holds version {} of {}, expected version {} of {key}",
                file.version, file.series, stored.version
            )));
        }
        Ok(file.model)
    }
}

/// The key of version `version` of `series`.
fn version_key(series: &SeriesId, version: u64) -> String {
    format!("{}/v{version:06}.model", series_dir(series))
}

/// The version number of a version file's name (`v000012.model`).
fn version_of(file_name: &str) -> Option<u64> {
    file_name
        .strip_prefix('v')?
        .strip_suffix(".model")?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_absolute_directories_are_stores() {
        assert_eq!(
            ModelStoreLocation::parse("file:///var/lib/models"),
            Ok(ModelStoreLocation::Directory(PathBuf::from(
                "/var/lib/models"
            )))
        );
        assert!(ModelStoreLocation::parse("file://relative/dir").is_err());
        assert!(ModelStoreLocation::parse("file:///").is_err());
        let s3 = ModelStoreLocation::parse("s3://bucket/models").unwrap_err();
        assert!(s3.contains("s3:// stores are not built"), "{s3}");
        assert!(ModelStoreLocation::parse("/var/lib/models").is_err());
    }

    #[test]
    fn version_files_are_numbered() {
        assert_eq!(version_of("v000012.model"), Some(12));
        assert_eq!(version_of("v000012.model#1"), None);
        assert_eq!(version_of("manifest.json"), None);
    }
}
