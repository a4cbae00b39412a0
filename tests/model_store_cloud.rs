//! The fleet's model store in a cloud bucket or container (`[fleet] model_store =
//! "s3://bucket/prefix"` or `"az://container/prefix"`), against real servers on 127.0.0.1: an S3
//! server (`s3s-fs`, see `tests/s3_support`) and Azure's Blob Storage emulator (Azurite, see
//! `tests/azure_support`). On each: a version is written once, under the location's prefix, and
//! reads back checked; a second write of the same version is refused by the server (a conditional
//! put); two prefixes do not see each other's versions; a deleted version is no longer listed; wrong
//! credentials are refused and the error names the store; a prefix claimed by one fleet refuses
//! another until taken over. On Azure a missing container and a missing account are refused too.

mod azure_support;
mod prometheus_support;
mod s3_support;

use std::path::Path;

use azure_support::LocalAzure;
use prescale::domain::SeriesId;
use prescale::forecast::FittedModel;
use prescale::registry::{ModelStore, ModelStoreLocation, Registry, RegistryError, StoreClaim};
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

/// `url` (`s3://models/<prefix>`, `az://models/<prefix>`) at `endpoint`.
fn location(url: &str, endpoint: &str) -> ModelStoreLocation {
    ModelStoreLocation::parse(url)
        .unwrap()
        .with_endpoint(Some(endpoint), None)
        .unwrap()
}

/// `store_a` (at `url_a`, prefix `fleet-a`) and `store_b` (prefix `fleet-b`) are two prefixes of
/// one bucket or container whose objects `objects` lists, as the server keeps them.
async fn versions_are_written_once_under_the_prefix(
    store_a: ModelStore,
    url_a: &str,
    store_b: ModelStore,
    objects: impl Fn() -> Vec<String>,
) {
    store_a.check().await.unwrap();
    let series = SeriesId::new("api_requests").unwrap();
    assert_eq!(store_a.highest_version(&series).await.unwrap(), 0);

    let model = committed_model();
    let encoded = ModelStore::encode(&series, 1, &model).unwrap();
    let stored = store_a.put_new(encoded.clone()).await.unwrap();
    assert_eq!(store_a.versions(&series).await.unwrap(), [1]);
    // The object is there, under the location's prefix.
    let listed = objects();
    assert_eq!(listed, [format!("fleet-a/{}", stored.key)], "{listed:?}");

    // Immutable: the server refuses a second write of the key, and the object stays.
    let refused = store_a.put_new(encoded).await.unwrap_err();
    assert!(
        matches!(refused, RegistryError::ObjectStore { .. }) && refused.to_string().contains(url_a),
        "{refused}"
    );
    let bytes = store_a.get(&stored).await.unwrap();
    let read = ModelStore::decode(&series, &stored, &bytes).unwrap();
    // The same model: every learned value, bit for bit.
    assert_eq!(format!("{read:?}"), format!("{model:?}"));
    let (found, found_bytes) = store_a.find(&series, 1).await.unwrap();
    assert_eq!((found, found_bytes), (stored.clone(), bytes));
    assert!(store_a.find(&series, 2).await.is_err());

    // A second version lists after the first; the other prefix sees neither; deleting the first
    // leaves the second.
    let second = ModelStore::encode(&series, 2, &model).unwrap();
    store_a.put_new(second).await.unwrap();
    assert_eq!(store_a.versions(&series).await.unwrap(), [1, 2]);
    assert_eq!(store_b.versions(&series).await.unwrap(), Vec::<u64>::new());
    store_a.delete(&series, 1).await.unwrap();
    assert_eq!(store_a.versions(&series).await.unwrap(), [2]);

    // Each prefix is one fleet's: its claim is kept beside the versions, another fleet is
    // refused, and an operator's take-over hands it to the other.
    let a = StoreClaim::new("a1".to_owned(), "/prescale/", "a-0");
    let b = StoreClaim::new("b2".to_owned(), "/staging/", "b-0");
    store_a.claim_for(&a).await.unwrap();
    store_b.claim_for(&b).await.unwrap();
    let refused = store_a.claim_for(&b).await.unwrap_err();
    assert!(
        matches!(refused, RegistryError::ClaimedByAnotherFleet { .. })
            && refused.to_string().contains(url_a),
        "{refused}"
    );
    assert!(
        objects().contains(&"fleet-a/fleet.json".to_owned()),
        "{:?}",
        objects()
    );
    assert_eq!(store_a.take_over(&b).await.unwrap(), Some(a.clone()));
    assert_eq!(store_a.claim().await.unwrap(), Some(b));
    assert!(store_a.claim_for(&a).await.is_err());
    assert_eq!(store_a.versions(&series).await.unwrap(), [2]);
}

/// `store` (at `named`) was opened with credentials its server refuses: checking it, listing it and
/// writing to it fail, the errors name the store, and `objects` stays empty.
async fn wrong_credentials_are_refused(
    store: ModelStore,
    named: &str,
    objects: impl Fn() -> Vec<String>,
) {
    let message = store.check().await.unwrap_err().to_string();
    assert!(message.contains(named), "{message}");
    let series = SeriesId::new("api_requests").unwrap();
    let message = store.versions(&series).await.unwrap_err().to_string();
    assert!(message.contains(named), "{message}");
    let encoded = ModelStore::encode(&series, 1, &committed_model()).unwrap();
    assert!(store.put_new(encoded).await.is_err());
    assert!(objects().is_empty());
}

/// The keys of every object of bucket `models` on `server`.
fn s3_objects(server: &LocalS3) -> Vec<String> {
    let dir = server.bucket_dir("models");
    s3_support::files(&dir)
        .iter()
        .map(|path| path.strip_prefix(&dir).unwrap().display().to_string())
        .collect()
}

#[tokio::test]
async fn in_s3_versions_are_written_once_under_the_prefix_and_read_back_checked() {
    if s3_support::missing() {
        return;
    }
    let server = LocalS3::start(&["models"]);
    let open = |prefix: &str| {
        let url = format!("s3://models/{prefix}");
        ModelStore::open_with_env(&location(&url, &server.url), server.env()).unwrap()
    };
    versions_are_written_once_under_the_prefix(
        open("fleet-a"),
        "s3://models/fleet-a",
        open("fleet-b"),
        || s3_objects(&server),
    )
    .await;
}

#[tokio::test]
async fn in_s3_a_wrong_key_pair_is_refused_and_the_error_names_the_store() {
    if s3_support::missing() {
        return;
    }
    let server = LocalS3::start(&["models"]);
    let at = location("s3://models/fleet", &server.url);
    let store = ModelStore::open_with_env(&at, server.env_with_wrong_secret()).unwrap();
    let named = format!("s3://models/fleet at {}", server.url);
    wrong_credentials_are_refused(store, &named, || s3_objects(&server)).await;
}

#[tokio::test]
async fn in_azure_versions_are_written_once_under_the_prefix_and_read_back_checked() {
    if azure_support::missing() {
        return;
    }
    let server = LocalAzure::start(&["models"]);
    let open = |prefix: &str| {
        let url = format!("az://models/{prefix}");
        ModelStore::open_with_env(&location(&url, &server.endpoint), server.env()).unwrap()
    };
    versions_are_written_once_under_the_prefix(
        open("fleet-a"),
        "az://models/fleet-a",
        open("fleet-b"),
        || server.blobs("models"),
    )
    .await;
}

#[tokio::test]
async fn in_azure_a_wrong_key_a_missing_container_or_account_is_refused_naming_the_store() {
    if azure_support::missing() {
        return;
    }
    let server = LocalAzure::start(&["models"]);
    let at = location("az://models/fleet", &server.endpoint);
    let store = ModelStore::open_with_env(&at, server.env_with_wrong_key()).unwrap();
    let named = format!("az://models/fleet at {}", server.endpoint);
    wrong_credentials_are_refused(store, &named, || server.blobs("models")).await;

    let absent = location("az://absent/fleet", &server.endpoint);
    let missing = ModelStore::open_with_env(&absent, server.env()).unwrap();
    let message = missing.check().await.unwrap_err().to_string();
    assert!(message.contains("az://absent/fleet"), "{message}");

    // Without an account there is nothing to address: refused when the store is opened.
    let error = ModelStore::open_with_env(&at, Vec::new())
        .unwrap_err()
        .to_string();
    assert!(error.contains("az://models/fleet"), "{error}");
}
