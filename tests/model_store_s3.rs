//! The fleet's model store in an S3 bucket (`[fleet] model_store = "s3://bucket/prefix"`), against
//! a real S3 server on 127.0.0.1 (`s3s-fs`, see `tests/s3_support`): a version is written once,
//! under the location's prefix, and reads back checked; a second write of the same version is
//! refused by the server (a conditional put); two prefixes in one bucket do not see each other's
//! versions; a wrong key pair is refused and the error names the store.

mod prometheus_support;
mod s3_support;

use std::path::Path;

use prescale::domain::SeriesId;
use prescale::forecast::FittedModel;
use prescale::registry::{ModelStore, ModelStoreLocation, Registry, RegistryError};
use s3_support::LocalS3;

/// The live model of nyc_taxi in the committed registry (`models/`).
fn committed_model() -> FittedModel {
    let registry = Registry::open(Path::new(env!("CARGO_MANIFEST_DIR")).join("models")).unwrap();
    let (name, _) = registry
        .list()
        .into_iter()
        .find(|(name, _)| name.starts_with("nyc_taxi"))
        .expect("nyc_taxi in models/");
    let series: SeriesId = name.parse().unwrap();
    registry
        .load_live(&series)
        .unwrap()
        .expect("a live version")
        .model
}

/// `s3://models/<prefix>` on `server`.
fn location(server: &LocalS3, prefix: &str) -> ModelStoreLocation {
    ModelStoreLocation::parse(&format!("s3://models/{prefix}"))
        .unwrap()
        .with_s3_endpoint(Some(&server.url), None)
        .unwrap()
}

/// Every object of bucket `bucket` on `server`: its key.
fn objects(server: &LocalS3, bucket: &str) -> Vec<String> {
    let dir = server.bucket_dir(bucket);
    s3_support::files(&dir)
        .iter()
        .map(|path| path.strip_prefix(&dir).unwrap().display().to_string())
        .collect()
}

#[tokio::test]
async fn versions_are_written_once_under_the_prefix_and_read_back_checked() {
    if s3_support::missing() {
        return;
    }
    let server = LocalS3::start(&["models"]);
    let store = ModelStore::open_with_env(&location(&server, "fleet-a"), server.env()).unwrap();
    let series = SeriesId::new("api_requests").unwrap();
    assert_eq!(store.highest_version(&series).await.unwrap(), 0);

    let model = committed_model();
    let encoded = ModelStore::encode(&series, 1, &model).unwrap();
    let stored = store.put_new(encoded.clone()).await.unwrap();
    assert_eq!(store.versions(&series).await.unwrap(), [1]);
    // The object is in the bucket, under the location's prefix.
    let in_bucket = objects(&server, "models");
    assert_eq!(
        in_bucket,
        [format!("fleet-a/{}", stored.key)],
        "{in_bucket:?}"
    );

    // Immutable: the server refuses a second write of the key, and the object stays.
    let refused = store.put_new(encoded).await.unwrap_err();
    assert!(
        matches!(refused, RegistryError::ObjectStore { .. })
            && refused.to_string().contains("s3://models/fleet-a"),
        "{refused}"
    );
    let bytes = store.get(&stored).await.unwrap();
    let read = ModelStore::decode(&series, &stored, &bytes).unwrap();
    // The same model: every learned value, bit for bit.
    assert_eq!(format!("{read:?}"), format!("{model:?}"));
    let (found, found_bytes) = store.find(&series, 1).await.unwrap();
    assert_eq!((found, found_bytes), (stored.clone(), bytes));
    assert!(store.find(&series, 2).await.is_err());

    // A second version lists after the first; another prefix of the bucket sees neither.
    let second = ModelStore::encode(&series, 2, &model).unwrap();
    store.put_new(second).await.unwrap();
    assert_eq!(store.versions(&series).await.unwrap(), [1, 2]);
    let other = ModelStore::open_with_env(&location(&server, "fleet-b"), server.env()).unwrap();
    assert_eq!(other.versions(&series).await.unwrap(), Vec::<u64>::new());
}

#[tokio::test]
async fn a_wrong_key_pair_is_refused_and_the_error_names_the_store() {
    if s3_support::missing() {
        return;
    }
    let server = LocalS3::start(&["models"]);
    let wrong = server.env_with_wrong_secret();
    let store = ModelStore::open_with_env(&location(&server, "fleet"), wrong).unwrap();
    let series = SeriesId::new("api_requests").unwrap();
    let error = store.versions(&series).await.unwrap_err();
    let message = error.to_string();
    assert!(
        message.contains(&format!("s3://models/fleet at {}", server.url)),
        "{message}"
    );
    let encoded = ModelStore::encode(&series, 1, &committed_model()).unwrap();
    assert!(store.put_new(encoded).await.is_err());
    assert!(objects(&server, "models").is_empty());
}
