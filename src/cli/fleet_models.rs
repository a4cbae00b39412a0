//! `prescale models rollback` in a fleet with a model store (`[fleet] model_store`): the live
//! version of a series is the pointer in etcd, so the rollback checks the target version file in
//! the store and moves the pointer, in a transaction that requires the pointer unchanged since it
//! was read. The series' owner follows the pointer and serves the version at once.
//! Design: docs/decisions.md, "Fleet mode: models in an object store".

use anyhow::{Context, Result, bail};
use prescale::config::FleetConfig;
use prescale::domain::SeriesId;
use prescale::fleet::etcd::{Compare, Op};
use prescale::fleet::record_key;
use prescale::registry::{LivePointer, MODELS_TABLE, ModelStore, ModelStoreLocation};

/// Who a pointer moved by this command names.
const MOVED_BY: &str = "prescale models rollback";

/// Makes `version` (by default the previous live version) the fleet's live version of `series`;
/// returns it.
pub(super) fn rollback(
    fleet: &FleetConfig,
    location: &ModelStoreLocation,
    series: &SeriesId,
    version: Option<u64>,
) -> Result<u64> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(move_pointer(fleet, location, series, version))
}

async fn move_pointer(
    fleet: &FleetConfig,
    location: &ModelStoreLocation,
    series: &SeriesId,
    version: Option<u64>,
) -> Result<u64> {
    let etcd = super::connect_etcd(fleet).await?;
    let key = record_key(&fleet.prefix, MODELS_TABLE, &series.to_string());
    let entry = etcd
        .get(&key)
        .await?
        .with_context(|| format!("{series} has no live model in the fleet"))?;
    let pointer = LivePointer::decode(&series.to_string(), &entry.value)?;
    let store = ModelStore::open(location)?;
    let (target, bytes) = match (pointer.remembered(version), version) {
        (Some(stored), _) => (stored.clone(), store.get(stored).await?),
        (None, Some(version)) => store.find(series, version).await?,
        (None, None) => bail!(
            "{series} has no version before v{} to roll back to",
            pointer.live.version
        ),
    };
    let (checked, owned) = (target.clone(), series.clone());
    tokio::task::spawn_blocking(move || ModelStore::decode(&owned, &checked, &bytes))
        .await
        .context("checking the version file")??;
    let moved = pointer.rolled_back(target, MOVED_BY);
    let applied = etcd
        .txn(
            &[Compare::ModRevisionBelow {
                key: key.clone(),
                revision: entry.mod_revision + 1,
            }],
            &[Op::Put {
                key,
                value: moved.encode(),
                lease: 0,
            }],
            &[],
        )
        .await?
        .succeeded;
    if !applied {
        bail!(
            "the live pointer of {series} moved meanwhile; nothing changed, run the rollback again"
        );
    }
    Ok(moved.live.version)
}
