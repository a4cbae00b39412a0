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

use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
use object_store::local::LocalFileSystem;
use object_store::path::Path as StorePath;
use object_store::prefix::PrefixStore;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, RetryConfig};
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
    /// A bucket of Amazon S3 or of an S3-compatible store: `s3://bucket/prefix`.
    S3(S3Location),
    /// A container of Azure Blob Storage: `az://container/prefix`.
    Azure(AzureLocation),
}

/// An S3 bucket and the key prefix the versions go under (`s3://bucket/prefix`), with the
/// endpoint of an S3-compatible store (MinIO, Ceph RGW, R2, ...) and the region to sign for.
/// Credentials are not kept here: they come from the environment, as every AWS client takes them
/// (see [`ModelStore::open_with_env`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Location {
    /// The bucket's name.
    pub bucket: String,
    /// The key prefix, without leading or trailing '/'; empty: the bucket's root.
    pub prefix: String,
    /// `http(s)://host[:port]` of an S3-compatible store, addressed path-style; `None`: AWS's
    /// endpoint of the region (or `AWS_ENDPOINT`).
    pub endpoint: Option<String>,
    /// The region requests are signed for; `None`: `AWS_REGION`, else us-east-1.
    pub region: Option<String>,
}

/// An Azure Blob Storage container and the blob-name prefix the versions go under
/// (`az://container/prefix`), with the endpoint of the storage account when it is not
/// `https://<account>.blob.core.windows.net`. The account and its credentials are not kept here:
/// they come from the environment, as Azure's own tools take them (see
/// [`ModelStore::open_with_env`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AzureLocation {
    /// The container's name.
    pub container: String,
    /// The blob-name prefix, without leading or trailing '/'; empty: the container's root.
    pub prefix: String,
    /// `http(s)://host[:port][/path]` of the account's blob service: a sovereign cloud's, a
    /// private endpoint's, or an emulator's path-style one (`http://127.0.0.1:10000/account`);
    /// `None`: `https://<account>.blob.core.windows.net`.
    pub endpoint: Option<String>,
}

/// Splits `rest` (after the scheme) into a container or bucket name and a key prefix. The name
/// is 3 to 63 lowercase letters, digits and `extra`, starts and ends with a letter or digit, and
/// holds no `never` (S3 refuses two periods in a row, Azure two hyphens).
fn name_and_prefix<'a>(
    url: &str,
    rest: &'a str,
    what: &str,
    extra: &[u8],
    never: &str,
) -> Result<(&'a str, &'a str), String> {
    let (name, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let valid = (3..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || extra.contains(&b))
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
        && !name.contains(never);
    if !valid {
        let extra: Vec<String> = extra.iter().map(|b| format!("'{}'", *b as char)).collect();
        return Err(format!(
            "{url:?}: {name:?} is not a {what} name (3 to 63 lowercase letters, digits and {}, no {never:?})",
            extra.join(" and ")
        ));
    }
    let prefix = prefix.trim_matches('/');
    StorePath::parse(prefix)
        .map_err(|error| format!("{url:?}: {prefix:?} is not a key prefix: {error}"))?;
    Ok((name, prefix))
}

impl ModelStoreLocation {
    /// Parses a store URL: `file:///absolute/path`, `s3://bucket[/prefix]` or
    /// `az://container[/prefix]` (see [`ModelStoreLocation::with_endpoint`] for the rest of a
    /// cloud location).
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
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = name_and_prefix(url, rest, "bucket", b".-", "..")?;
            return Ok(Self::S3(S3Location {
                bucket: bucket.to_owned(),
                prefix: prefix.to_owned(),
                endpoint: None,
                region: None,
            }));
        }
        if let Some(rest) = url.strip_prefix("az://") {
            let (container, prefix) = name_and_prefix(url, rest, "container", b"-", "--")?;
            return Ok(Self::Azure(AzureLocation {
                container: container.to_owned(),
                prefix: prefix.to_owned(),
                endpoint: None,
            }));
        }
        match url.split_once("://") {
            Some((scheme, _)) => Err(format!(
                "{scheme}:// stores are not built into this prescale; use s3://bucket/prefix (S3 or an S3-compatible store), az://container/prefix (Azure Blob Storage) or file:///path (a directory every replica mounts)"
            )),
            None => Err(format!(
                "{url:?} is not a URL (s3://bucket/prefix, az://container/prefix or file:///path)"
            )),
        }
    }

    /// Sets a cloud location's endpoint and an S3 location's region. An S3 endpoint is
    /// `http(s)://host[:port]` (an S3-compatible store, addressed path-style); an Azure one may
    /// add a path (an emulator's account, `http://127.0.0.1:10000/account`). Either given for a
    /// directory, or a region for Azure, is an error.
    pub fn with_endpoint(
        self,
        endpoint: Option<&str>,
        region: Option<&str>,
    ) -> Result<Self, String> {
        if endpoint.is_none() && region.is_none() {
            return Ok(self);
        }
        let endpoint = endpoint
            .map(|endpoint| {
                let endpoint = endpoint.trim().trim_end_matches('/');
                let rest = endpoint
                    .strip_prefix("https://")
                    .or_else(|| endpoint.strip_prefix("http://"))
                    .unwrap_or_default();
                let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
                let path_allowed = matches!(self, Self::Azure(_));
                if host.is_empty()
                    || rest.contains(['?', '#'])
                    || (!path.is_empty() && !path_allowed)
                {
                    let form = if path_allowed {
                        "http(s)://host[:port][/path] (http://127.0.0.1:10000/devstoreaccount1)"
                    } else {
                        "http(s)://host[:port] (https://minio.storage:9000)"
                    };
                    return Err(format!("endpoint {endpoint:?} must be {form}"));
                }
                Ok(endpoint.to_owned())
            })
            .transpose()?;
        let region = region
            .map(|region| match region.trim() {
                "" => Err("the region is empty".to_owned()),
                region => Ok(region.to_owned()),
            })
            .transpose()?;
        match self {
            Self::S3(mut s3) => {
                s3.endpoint = endpoint.or(s3.endpoint);
                s3.region = region.or(s3.region);
                Ok(Self::S3(s3))
            }
            Self::Azure(mut azure) if region.is_none() => {
                azure.endpoint = endpoint.or(azure.endpoint);
                Ok(Self::Azure(azure))
            }
            Self::Azure(_) => Err(
                "a region is for s3:// stores; an Azure account's region is its endpoint's"
                    .to_owned(),
            ),
            other => Err(format!(
                "an endpoint and a region are for s3:// and az:// stores, not {other}"
            )),
        }
    }
}

impl fmt::Display for ModelStoreLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Directory(path) => write!(f, "file://{}", path.display()),
            Self::S3(s3) => {
                write!(f, "s3://{}", s3.bucket)?;
                if !s3.prefix.is_empty() {
                    write!(f, "/{}", s3.prefix)?;
                }
                if let Some(endpoint) = &s3.endpoint {
                    write!(f, " at {endpoint}")?;
                }
                Ok(())
            }
            Self::Azure(azure) => {
                write!(f, "az://{}", azure.container)?;
                if !azure.prefix.is_empty() {
                    write!(f, "/{}", azure.prefix)?;
                }
                if let Some(endpoint) = &azure.endpoint {
                    write!(f, " at {endpoint}")?;
                }
                Ok(())
            }
        }
    }
}

/// The variables of `env` named `<prefix>...` that a cloud backend knows, as its config keys (the
/// crate parses each lowercased name, as its `from_env` builders do).
fn settings<K: std::str::FromStr>(
    env: impl IntoIterator<Item = (String, String)>,
    prefix: &str,
) -> Vec<(K, String)> {
    env.into_iter()
        .filter(|(name, _)| name.starts_with(prefix))
        .filter_map(|(name, value)| Some((name.to_ascii_lowercase().parse().ok()?, value)))
        .collect()
}

/// A 5xx, a 429 or a lost connection is retried three times within 30 s (the crate's default, ten
/// within three minutes, would hold a plan that long).
fn store_retries() -> RetryConfig {
    RetryConfig {
        max_retries: 3,
        retry_timeout: std::time::Duration::from_secs(30),
        ..RetryConfig::default()
    }
}

/// `store` itself, or the part of it under `prefix` when there is one.
fn under_prefix(store: impl ObjectStore, prefix: &str) -> Arc<dyn ObjectStore> {
    if prefix.is_empty() {
        Arc::new(store)
    } else {
        Arc::new(PrefixStore::new(store, prefix))
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

/// The object at the store's top level that names the fleet using it.
const CLAIM_KEY: &str = "fleet.json";

/// Which fleet uses a model store, kept in it (`fleet.json` under the prefix). A fleet's first
/// replica writes it; a replica of another fleet pointed at the same store is refused instead of
/// mixing its versions in, where each fleet's retention would delete the other's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreClaim {
    /// The fleet's id (kept in its etcd; see `fleet::fleet_id`).
    pub fleet_id: String,
    /// The fleet's etcd key prefix, to name it to an operator.
    pub etcd_prefix: String,
    /// Who wrote the claim: a member id, or `prescale models claim-store`.
    pub claimed_by: String,
    /// When, in milliseconds since the epoch.
    pub claimed_at_ms: i64,
}

impl StoreClaim {
    /// A claim for fleet `fleet_id` under etcd prefix `etcd_prefix`, by `claimed_by`, now.
    pub fn new(fleet_id: String, etcd_prefix: &str, claimed_by: &str) -> Self {
        Self {
            fleet_id,
            etcd_prefix: etcd_prefix.to_owned(),
            claimed_by: claimed_by.to_owned(),
            claimed_at_ms: Timestamp::now().as_millis(),
        }
    }
}

/// Model version files in an object store.
#[derive(Debug)]
pub struct ModelStore {
    /// The store: a local directory or an S3 bucket.
    store: Arc<dyn ObjectStore>,
    /// Where it is, for messages.
    location: ModelStoreLocation,
}

impl ModelStore {
    /// Opens the store at `location`, creating a missing directory; a cloud store takes its
    /// credentials from this process's environment (see [`ModelStore::open_with_env`]).
    pub fn open(location: &ModelStoreLocation) -> Result<Self, RegistryError> {
        Self::open_with_env(location, std::env::vars())
    }

    /// Opens the store at `location`. An S3 store takes the `AWS_*` variables of `env` as AWS's
    /// own clients do: static keys (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
    /// `AWS_SESSION_TOKEN`), else a web identity (`AWS_WEB_IDENTITY_TOKEN_FILE` and
    /// `AWS_ROLE_ARN`, as EKS's IAM roles for service accounts set them), else the container's
    /// or the instance's credentials; the location's endpoint and region win over `env`'s. An
    /// Azure store takes the `AZURE_*` variables: the account (`AZURE_STORAGE_ACCOUNT_NAME`),
    /// then its key (`AZURE_STORAGE_ACCOUNT_KEY`), else a workload identity (`AZURE_CLIENT_ID`,
    /// `AZURE_TENANT_ID` and `AZURE_FEDERATED_TOKEN_FILE`, as AKS's workload identity sets them),
    /// else a service principal's secret (`AZURE_CLIENT_SECRET`), else a SAS token
    /// (`AZURE_STORAGE_SAS_KEY`), else the managed identity of the VM or pod. Nothing is sent
    /// before the first call.
    pub fn open_with_env(
        location: &ModelStoreLocation,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, RegistryError> {
        let failed = |reason: String| RegistryError::ObjectStore {
            location: location.to_string(),
            key: String::new(),
            reason,
        };
        let store: Arc<dyn ObjectStore> = match location {
            ModelStoreLocation::Directory(path) => {
                std::fs::create_dir_all(path).map_err(|error| super::io_error(path, error))?;
                Arc::new(
                    LocalFileSystem::new_with_prefix(path)
                        .map_err(|error| failed(error.to_string()))?,
                )
            }
            ModelStoreLocation::S3(s3) => {
                let mut builder = AmazonS3Builder::new();
                for (key, value) in settings::<AmazonS3ConfigKey>(env, "AWS_") {
                    builder = builder.with_config(key, value);
                }
                builder = builder
                    .with_bucket_name(&s3.bucket)
                    .with_retry(store_retries());
                if let Some(endpoint) = &s3.endpoint {
                    builder = builder
                        .with_endpoint(endpoint)
                        .with_allow_http(endpoint.starts_with("http://"))
                        .with_virtual_hosted_style_request(false);
                }
                if let Some(region) = &s3.region {
                    builder = builder.with_region(region);
                }
                let bucket = builder.build().map_err(|error| failed(error.to_string()))?;
                under_prefix(bucket, &s3.prefix)
            }
            ModelStoreLocation::Azure(azure) => {
                let mut builder = MicrosoftAzureBuilder::new();
                for (key, value) in settings::<AzureConfigKey>(env, "AZURE_") {
                    builder = builder.with_config(key, value);
                }
                builder = builder
                    .with_container_name(&azure.container)
                    .with_retry(store_retries());
                if let Some(endpoint) = &azure.endpoint {
                    builder = builder
                        .with_endpoint(endpoint.clone())
                        .with_allow_http(endpoint.starts_with("http://"));
                }
                let container = builder.build().map_err(|error| failed(error.to_string()))?;
                under_prefix(container, &azure.prefix)
            }
        };
        Ok(Self {
            store,
            location: location.clone(),
        })
    }

    /// Checks that the store answers and lets these credentials list it (its top level under
    /// the prefix): wrong credentials or permissions and a missing bucket are refused here, before
    /// any model is fitted for it.
    pub async fn check(&self) -> Result<(), RegistryError> {
        self.store
            .list_with_delimiter(None)
            .await
            .map(drop)
            .map_err(|error| self.failed("", error))
    }

    /// The store's claim, if a fleet has claimed it.
    pub async fn claim(&self) -> Result<Option<StoreClaim>, RegistryError> {
        match self.read(CLAIM_KEY).await {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|error| {
                self.failed(CLAIM_KEY, format!("the claim does not decode: {error}"))
            }),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(error) => Err(self.failed(CLAIM_KEY, error)),
        }
    }

    /// Makes the store `claim`'s fleet's if no fleet has claimed it (written only if no claim is
    /// there, so of two fleets claiming at once one wins), and refuses it when another fleet has.
    pub async fn claim_for(&self, claim: &StoreClaim) -> Result<(), RegistryError> {
        let held = match self.claim().await? {
            Some(held) => held,
            None => match self.put_claim(claim, PutMode::Create).await {
                Ok(()) => return Ok(()),
                // Refused because another claim got there first: that one is compared below.
                Err(error) => self.claim().await?.ok_or(error)?,
            },
        };
        if held.fleet_id == claim.fleet_id {
            return Ok(());
        }
        Err(RegistryError::ClaimedByAnotherFleet {
            location: self.location.to_string(),
            held: Box::new(held),
            fleet_id: claim.fleet_id.clone(),
        })
    }

    /// Makes the store `claim`'s fleet's whoever claimed it before (an operator's decision, for
    /// a fleet whose etcd was rebuilt and so has a new id); the claim it replaced, if any.
    pub async fn take_over(&self, claim: &StoreClaim) -> Result<Option<StoreClaim>, RegistryError> {
        let replaced = self.claim().await?;
        self.put_claim(claim, PutMode::Overwrite).await?;
        Ok(replaced)
    }

    async fn put_claim(&self, claim: &StoreClaim, mode: PutMode) -> Result<(), RegistryError> {
        let bytes =
            serde_json::to_vec(claim).expect("invariant: a claim of strings and numbers encodes");
        let options = PutOptions {
            mode,
            ..PutOptions::default()
        };
        self.store
            .put_opts(
                &StorePath::from(CLAIM_KEY),
                PutPayload::from(bytes),
                options,
            )
            .await
            .map(drop)
            .map_err(|error| self.failed(CLAIM_KEY, error))
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

    /// Deletes version `version` of `series` (retention; a missing one is not an error).
    pub async fn delete(&self, series: &SeriesId, version: u64) -> Result<(), RegistryError> {
        let key = version_key(series, version);
        match self.store.delete(&StorePath::from(key.as_str())).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(error) => Err(self.failed(&key, error)),
        }
    }

    /// The bytes of `stored`, unchecked (see [`ModelStore::decode`]).
    pub async fn get(&self, stored: &StoredVersion) -> Result<Vec<u8>, RegistryError> {
        self.read(&stored.key)
            .await
            .map_err(|error| self.failed(&stored.key, error))
    }

    /// The bytes of the object at `key`.
    async fn read(&self, key: &str) -> Result<Vec<u8>, object_store::Error> {
        let got = self.store.get(&StorePath::from(key)).await?;
        Ok(got.bytes().await?.to_vec())
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
        let gcs = ModelStoreLocation::parse("gs://bucket/models").unwrap_err();
        assert!(gcs.contains("gs:// stores are not built"), "{gcs}");
        assert!(ModelStoreLocation::parse("/var/lib/models").is_err());
    }

    #[test]
    fn s3_locations_name_a_bucket_and_a_prefix() {
        let location = |url: &str| match ModelStoreLocation::parse(url) {
            Ok(ModelStoreLocation::S3(s3)) => (s3.bucket, s3.prefix),
            other => panic!("{url}: {other:?}"),
        };
        assert_eq!(
            location("s3://prescale-models/fleet/a/"),
            ("prescale-models".to_owned(), "fleet/a".to_owned())
        );
        assert_eq!(
            location("s3://models"),
            ("models".to_owned(), String::new())
        );
        for bad in [
            "s3://",
            "s3://Models",
            "s3://ab",
            "s3://-models",
            "s3://models/a//b",
            "s3://my..models",
        ] {
            assert!(ModelStoreLocation::parse(bad).is_err(), "{bad}");
        }
        let s3 = ModelStoreLocation::parse("s3://models/fleet").unwrap();
        let at = s3
            .clone()
            .with_endpoint(Some("http://127.0.0.1:9000/"), Some("eu-west-1"))
            .unwrap();
        assert_eq!(at.to_string(), "s3://models/fleet at http://127.0.0.1:9000");
        let ModelStoreLocation::S3(at) = at else {
            unreachable!()
        };
        assert_eq!(at.region.as_deref(), Some("eu-west-1"));
        for bad in [
            "127.0.0.1:9000",
            "http://",
            "https://host/path",
            "ftp://host",
        ] {
            assert!(s3.clone().with_endpoint(Some(bad), None).is_err(), "{bad}");
        }
        assert!(s3.clone().with_endpoint(None, Some(" ")).is_err());
        let directory = ModelStoreLocation::parse("file:///srv/models").unwrap();
        assert!(directory.clone().with_endpoint(None, None).is_ok());
        assert!(directory.with_endpoint(None, Some("eu-west-1")).is_err());
    }

    #[test]
    fn azure_locations_name_a_container_a_prefix_and_maybe_an_endpoint() {
        let Ok(ModelStoreLocation::Azure(azure)) =
            ModelStoreLocation::parse("az://prescale-models/fleet/a/")
        else {
            panic!("az:// is an Azure location");
        };
        assert_eq!(
            (
                azure.container.as_str(),
                azure.prefix.as_str(),
                azure.endpoint
            ),
            ("prescale-models", "fleet/a", None)
        );
        for bad in [
            "az://",
            "az://Models",
            "az://my--models",
            "az://my.models",
            "az://m",
        ] {
            assert!(ModelStoreLocation::parse(bad).is_err(), "{bad}");
        }
        let azure = ModelStoreLocation::parse("az://models/fleet").unwrap();
        let emulator = azure
            .clone()
            .with_endpoint(Some("http://127.0.0.1:10000/devstoreaccount1/"), None)
            .unwrap();
        assert_eq!(
            emulator.to_string(),
            "az://models/fleet at http://127.0.0.1:10000/devstoreaccount1"
        );
        assert!(
            azure
                .clone()
                .with_endpoint(None, Some("westeurope"))
                .is_err()
        );
        for bad in ["127.0.0.1:10000", "https://", "https://host/a?sv=1"] {
            assert!(
                azure.clone().with_endpoint(Some(bad), None).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn version_files_are_numbered() {
        assert_eq!(version_of("v000012.model"), Some(12));
        assert_eq!(version_of("v000012.model#1"), None);
        assert_eq!(version_of("manifest.json"), None);
    }
}
