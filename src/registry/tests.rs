use crate::domain::{Step, TimeSeries, Timestamp};
use crate::forecast::{Fit, Horizon, ModelParams, Predict};

use super::*;

/// Two weeks of an hourly daily cycle starting `shift` hours later, fitted by the ensemble.
fn fitted(level: f64) -> FittedModel {
    let values: Vec<f64> = (0..24 * 14)
        .map(|t| level + 10.0 * (2.0 * std::f64::consts::PI * t as f64 / 24.0).sin())
        .collect();
    let series = TimeSeries::new(
        Timestamp::from_millis(0),
        Step::try_from(3_600_000).unwrap(),
        values,
    );
    ModelParams::ensemble()
        .check()
        .unwrap()
        .fit(&series)
        .unwrap()
}

fn points(model: &FittedModel) -> Vec<f64> {
    model
        .predict_default(Horizon::try_from(24).unwrap())
        .unwrap()
        .point()
        .to_vec()
}

fn series() -> SeriesId {
    SeriesId::new("api_requests").unwrap()
}

#[test]
fn a_stored_model_reads_back_and_forecasts_the_same() {
    let directory = tempfile::tempdir().unwrap();
    let registry = Registry::open(directory.path()).unwrap();
    let model = fitted(100.0);
    let info = registry
        .add(&series(), &model, true, "first model")
        .unwrap();
    assert_eq!(info.version, 1);
    assert!(info.backtest_mae.is_some());

    let reopened = Registry::open(directory.path()).unwrap();
    let loaded = reopened.load_live(&series()).unwrap().unwrap();
    assert_eq!(loaded.version, 1);
    assert!(loaded.skipped.is_empty());
    assert_eq!(points(&loaded.model), points(&model));
    assert_eq!(loaded.model.report(), model.report());
    let listed = reopened.list();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].1.live, Some(1));
}

#[test]
fn rollback_returns_to_the_previous_live_version() {
    let directory = tempfile::tempdir().unwrap();
    let registry = Registry::open(directory.path()).unwrap();
    let first = fitted(100.0);
    let second = fitted(200.0);
    registry.add(&series(), &first, true, "first").unwrap();
    registry.add(&series(), &second, true, "better").unwrap();
    registry
        .add(&series(), &second, false, "refused: worse")
        .unwrap();
    assert_eq!(registry.entry(&series()).unwrap().live, Some(2));

    // The refused version 3 was never live: the default rollback skips it.
    assert_eq!(registry.rollback(&series(), None).unwrap(), 1);
    let reopened = Registry::open(directory.path()).unwrap();
    let live = reopened.load_live(&series()).unwrap().unwrap();
    assert_eq!(live.version, 1);
    assert_eq!(points(&live.model), points(&first));
    assert!(matches!(
        reopened.rollback(&series(), None),
        Err(RegistryError::NothingToRollBack { live: 1, .. })
    ));
    // An explicit version may go forward again.
    assert_eq!(reopened.rollback(&series(), Some(3)).unwrap(), 3);
    assert!(matches!(
        reopened.rollback(&series(), Some(9)),
        Err(RegistryError::NotFound {
            version: Some(9),
            ..
        })
    ));
}

#[test]
fn a_corrupt_or_truncated_live_file_is_reported_and_the_previous_version_served() {
    for damage in ["flip", "truncate"] {
        let directory = tempfile::tempdir().unwrap();
        let registry = Registry::open(directory.path()).unwrap();
        let first = fitted(100.0);
        registry.add(&series(), &first, true, "first").unwrap();
        registry
            .add(&series(), &fitted(200.0), true, "second")
            .unwrap();
        let entry = registry.entry(&series()).unwrap();
        let path = directory
            .path()
            .join(&entry.dir)
            .join(&entry.version(2).unwrap().file);
        let mut bytes = std::fs::read(&path).unwrap();
        if damage == "flip" {
            let middle = bytes.len() / 2;
            bytes[middle] ^= 0x40;
        } else {
            bytes.truncate(bytes.len() * 2 / 3);
        }
        std::fs::write(&path, &bytes).unwrap();

        let loaded = registry.load_live(&series()).unwrap().unwrap();
        assert_eq!(loaded.version, 1, "{damage}");
        assert_eq!(loaded.skipped.len(), 1, "{damage}");
        assert_eq!(loaded.skipped[0].0, 2);
        assert!(
            loaded.skipped[0].1.contains("CRC-32"),
            "{:?}",
            loaded.skipped
        );
        assert_eq!(points(&loaded.model), points(&first));
        assert!(matches!(
            registry.load(&series(), 2),
            Err(RegistryError::Corrupt { .. })
        ));
        // A rollback target must read back intact too.
        assert!(registry.rollback(&series(), Some(2)).is_err());
    }
}

#[test]
fn a_crash_between_model_file_and_manifest_leaves_the_registry_consistent() {
    let directory = tempfile::tempdir().unwrap();
    let registry = Registry::open(directory.path()).unwrap();
    registry
        .add(&series(), &fitted(100.0), true, "first")
        .unwrap();
    let entry = registry.entry(&series()).unwrap();
    let series_dir = directory.path().join(&entry.dir);
    // What a crash leaves: the next model file written (and a torn temporary of a manifest),
    // but the manifest still naming version 1 only.
    std::fs::copy(
        series_dir.join("v000001.model"),
        series_dir.join("v000002.model"),
    )
    .unwrap();
    std::fs::write(
        directory.path().join("manifest.json.tmp"),
        b"{\"series\": {",
    )
    .unwrap();
    // And, from a crash before that, a torn temporary of the model file after it.
    std::fs::write(series_dir.join("v000003.model.4242.0.tmp"), b"PRSC").unwrap();
    drop(registry);

    let reopened = Registry::open(directory.path()).unwrap();
    let live = reopened.load_live(&series()).unwrap().unwrap();
    assert_eq!(live.version, 1);
    // The orphans' numbers are not reused, and the next version deletes them.
    let next = reopened
        .add(&series(), &fitted(120.0), true, "next")
        .unwrap();
    assert_eq!(next.version, 4);
    assert_eq!(reopened.load_live(&series()).unwrap().unwrap().version, 4);
    assert_eq!(model_files(&series_dir), ["v000001.model", "v000004.model"]);
}

#[test]
fn files_older_than_a_set_aside_manifest_stay_for_the_operator() {
    let directory = tempfile::tempdir().unwrap();
    let registry = Registry::open(directory.path())
        .unwrap()
        .with_keep_versions(Some(1));
    registry.add(&series(), &fitted(100.0), true, "a").unwrap();
    registry.add(&series(), &fitted(110.0), true, "b").unwrap();
    let series_dir = directory.path().join(series_dir(&series()));
    drop(registry);
    std::fs::write(directory.path().join(MANIFEST_FILE), b"{\"series\": {").unwrap();

    let (reopened, set_aside) = Registry::open_or_set_aside(directory.path()).unwrap();
    assert!(set_aside.is_some());
    let reopened = reopened.with_keep_versions(Some(1));
    for level in [120.0, 130.0, 140.0] {
        reopened
            .add(&series(), &fitted(level), true, "after")
            .unwrap();
    }
    // Versions 1 and 2 are named by the manifest set aside only; of the new ones, keep_versions
    // drops 3 (the live 5 and the fallback 4 stay).
    assert_eq!(
        model_files(&series_dir),
        [
            "v000001.model",
            "v000002.model",
            "v000004.model",
            "v000005.model"
        ]
    );
}

/// The names of the files in `dir`, sorted.
fn model_files(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn two_writers_on_one_directory_keep_each_others_versions() {
    let directory = tempfile::tempdir().unwrap();
    let server = Registry::open(directory.path()).unwrap();
    let cron_job = Registry::open(directory.path()).unwrap();
    let other = SeriesId::new("checkout").unwrap();
    server
        .add(&series(), &fitted(100.0), true, "server")
        .unwrap();
    // The second writer opened before the first wrote: it must not write its stale manifest back.
    let info = cron_job
        .add(&series(), &fitted(120.0), true, "cron job")
        .unwrap();
    assert_eq!(info.version, 2);
    cron_job
        .add(&other, &fitted(50.0), true, "cron job")
        .unwrap();
    server.rollback(&series(), Some(1)).unwrap();

    let reopened = Registry::open(directory.path()).unwrap();
    let entry = reopened.entry(&series()).unwrap();
    assert_eq!(
        entry.versions.iter().map(|v| v.version).collect::<Vec<_>>(),
        [1, 2]
    );
    assert_eq!(entry.live, Some(1));
    assert_eq!(reopened.entry(&other).unwrap().live, Some(1));
}

#[tokio::test]
async fn a_store_version_is_written_once_and_reads_back_checked() {
    let directory = tempfile::tempdir().unwrap();
    let location = ModelStoreLocation::Directory(directory.path().join("models"));
    let store = ModelStore::open(&location).unwrap();
    assert_eq!(store.highest_version(&series()).await.unwrap(), 0);
    let model = fitted(100.0);
    let encoded = ModelStore::encode(&series(), 1, &model).unwrap();
    let stored = store.put_new(encoded.clone()).await.unwrap();
    assert_eq!(store.highest_version(&series()).await.unwrap(), 1);
    // Immutable: the same key is refused, and the file stays.
    let refused = store.put_new(encoded).await.unwrap_err();
    assert!(
        matches!(refused, RegistryError::ObjectStore { .. }),
        "{refused}"
    );
    let bytes = store.get(&stored).await.unwrap();
    let read = ModelStore::decode(&series(), &stored, &bytes).unwrap();
    assert_eq!(points(&read), points(&model));
    let (found, found_bytes) = store.find(&series(), 1).await.unwrap();
    assert_eq!((found, found_bytes), (stored.clone(), bytes.clone()));
    let other = SeriesId::new("other").unwrap();
    assert!(matches!(
        ModelStore::decode(&other, &stored, &bytes),
        Err(RegistryError::Corrupt { .. })
    ));
    let mut flipped = bytes;
    *flipped.last_mut().unwrap() ^= 1;
    assert!(ModelStore::decode(&series(), &stored, &flipped).is_err());
    assert!(store.find(&series(), 2).await.is_err());
}

#[tokio::test]
async fn a_store_is_claimed_by_one_fleet_and_taken_over_only_on_purpose() {
    let directory = tempfile::tempdir().unwrap();
    let location = ModelStoreLocation::Directory(directory.path().join("models"));
    let store = ModelStore::open(&location).unwrap();
    let ours = StoreClaim::new("a1".to_owned(), "/prescale/", "replica-0");
    assert_eq!(store.claim().await.unwrap(), None);
    store.claim_for(&ours).await.unwrap();
    assert_eq!(store.claim().await.unwrap(), Some(ours.clone()));
    // Its other replicas, and its restarts, find the store theirs; the first claim stays.
    let again = StoreClaim::new("a1".to_owned(), "/prescale/", "replica-1");
    store.claim_for(&again).await.unwrap();
    assert_eq!(store.claim().await.unwrap(), Some(ours.clone()));

    // Another fleet is refused, told whose store it is and what to do.
    let other = StoreClaim::new("b2".to_owned(), "/staging/", "replica-0");
    let refused = store.claim_for(&other).await.unwrap_err();
    let message = refused.to_string();
    assert!(
        matches!(refused, RegistryError::ClaimedByAnotherFleet { .. }),
        "{message}"
    );
    for part in [
        "fleet a1",
        "\"/prescale/\"",
        "replica-0",
        "this fleet is b2",
        "claim-store",
    ] {
        assert!(message.contains(part), "{part}: {message}");
    }

    // Taken over on purpose, it is the other fleet's, and the first is refused in turn.
    assert_eq!(store.take_over(&other).await.unwrap(), Some(ours.clone()));
    store.claim_for(&other).await.unwrap();
    assert!(store.claim_for(&ours).await.is_err());
    // The claim is not a version of any series.
    assert_eq!(store.versions(&series()).await.unwrap(), Vec::<u64>::new());
}

#[test]
fn versions_beyond_keep_are_dropped_but_never_the_live_one_or_its_fallback() {
    let directory = tempfile::tempdir().unwrap();
    let registry = Registry::open(directory.path())
        .unwrap()
        .with_keep_versions(Some(2));
    let model = fitted(100.0);
    let add = |promote| registry.add(&series(), &model, promote, "test").unwrap();
    let listed = |registry: &Registry| -> Vec<u64> {
        let entry = registry.entry(&series()).unwrap();
        entry.versions.iter().map(|info| info.version).collect()
    };
    let files = || model_files(&directory.path().join(series_dir(&series())));
    add(true);
    add(true);
    add(false);
    add(false);
    // The newest two (4, 3), the live one (2) and the one live before it (1).
    assert_eq!(listed(&registry), [1, 2, 3, 4]);
    add(false);
    assert_eq!(listed(&registry), [1, 2, 4, 5]);
    assert_eq!(
        files(),
        [
            "v000001.model",
            "v000002.model",
            "v000004.model",
            "v000005.model"
        ]
    );
    add(true);
    // 6 is live, 2 the default rollback target; 1 and 4 go.
    assert_eq!(listed(&registry), [2, 5, 6]);
    assert_eq!(files(), ["v000002.model", "v000005.model", "v000006.model"]);
    assert_eq!(registry.load_live(&series()).unwrap().unwrap().version, 6);
    // Numbers are not reused, and what another process opens is the same.
    assert_eq!(add(false).version, 7);
    let reopened = Registry::open(directory.path()).unwrap();
    assert_eq!(listed(&reopened), [2, 6, 7]);
    assert_eq!(reopened.rollback(&series(), None).unwrap(), 2);
}
