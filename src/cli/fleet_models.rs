//! `prescale models list|show|rollback|claim-store` in a fleet with a model store
//! (`[fleet] model_store`): the versions are the files in the store and the live version of a
//! series is the pointer in etcd, so `list` and `show` read those (not this machine's registry),
//! and `rollback` checks the target version file in the store and moves the pointer, in a
//! transaction that requires the pointer unchanged since it was read. The series' owner follows
//! the pointer and serves the version at once. `claim-store` writes this fleet's id into the
//! store's claim (see [`ModelStore::claim_for`]). None of them joins the fleet: they need no
//! member id. Design: docs/decisions.md, "Fleet mode: models in an object store".

use anyhow::{Context, Result, bail};
use prescale::config::FleetConfig;
use prescale::domain::{SeriesId, Timestamp};
use prescale::fleet::etcd::{Compare, Etcd, Op};
use prescale::fleet::{fleet_id, record_key};
use prescale::registry::{LivePointer, MODELS_TABLE, ModelStore, ModelStoreLocation, StoreClaim};

use super::models::ModelsCommand;
use crate::output::outln;

/// Who a pointer moved by this command names.
const MOVED_BY: &str = "prescale models rollback";

/// Who a claim of the store written by this command names.
const CLAIMED_BY: &str = "prescale models claim-store";

/// Runs `command` on the fleet's model store at `location` and its live pointers in etcd.
pub(super) fn models(
    fleet: &FleetConfig,
    location: &ModelStoreLocation,
    command: ModelsCommand,
) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async {
        let etcd = super::connect_etcd(fleet).await?;
        let store = ModelStore::open(location)?;
        match command {
            ModelsCommand::List { .. } => list(fleet, &etcd, &store).await,
            ModelsCommand::Show { name, .. } => show(fleet, &etcd, &store, &name.parse()?).await,
            ModelsCommand::Rollback { name, version, .. } => {
                let series: SeriesId = name.parse()?;
                let live = move_pointer(fleet, &etcd, &store, &series, version).await?;
                outln!("{series}: v{live} is live in the fleet")?;
                Ok(())
            }
            ModelsCommand::ClaimStore { .. } => claim_store(fleet, &etcd, &store).await,
        }
    })
}

/// Makes the store this fleet's, whichever fleet claimed it before, and says whose it was.
async fn claim_store(fleet: &FleetConfig, etcd: &Etcd, store: &ModelStore) -> Result<()> {
    let fleet_id = fleet_id(etcd, &fleet.prefix).await?;
    let location = store.location();
    let held = store.claim().await?;
    if let Some(held) = held.as_ref().filter(|held| held.fleet_id == fleet_id) {
        outln!(
            "{location} is already this fleet's ({fleet_id}, claimed by {} at {})",
            held.claimed_by,
            Timestamp::from_millis(held.claimed_at_ms)
        )?;
        return Ok(());
    }
    let claim = StoreClaim::new(fleet_id, &fleet.prefix, CLAIMED_BY);
    store.take_over(&claim).await?;
    match held {
        Some(held) => outln!(
            "{location} is now fleet {}'s (etcd prefix {:?}), no longer fleet {}'s (etcd prefix {:?}, claimed by {} at {})",
            claim.fleet_id,
            claim.etcd_prefix,
            held.fleet_id,
            held.etcd_prefix,
            held.claimed_by,
            Timestamp::from_millis(held.claimed_at_ms)
        )?,
        None => outln!(
            "{location} is now fleet {}'s (etcd prefix {:?})",
            claim.fleet_id,
            claim.etcd_prefix
        )?,
    }
    Ok(())
}

/// One line per series with a live pointer: its live version, the versions in the store, and
/// who moved the pointer why.
async fn list(fleet: &FleetConfig, etcd: &Etcd, store: &ModelStore) -> Result<()> {
    let prefix = record_key(&fleet.prefix, MODELS_TABLE, "");
    let (entries, _) = etcd.get_prefix(&prefix).await?;
    if entries.is_empty() {
        outln!("no models trained yet (no live model pointer under {prefix} in etcd)")?;
    }
    for entry in entries {
        let name = entry.key.strip_prefix(&prefix).unwrap_or(&entry.key);
        let series: SeriesId = name.parse()?;
        let pointer = LivePointer::decode(name, &entry.value)?;
        let versions = store.versions(&series).await?;
        outln!(
            "{series}  live v{}  {}  moved by {}: {}",
            pointer.live.version,
            super::models::versions(versions.len()),
            pointer.moved_by,
            pointer.decision
        )?;
    }
    Ok(())
}

/// Every version of `series` in the store, the live one (per its pointer in etcd) marked `*`
/// and those a rollback can return to marked `earlier`, and the pointer's retired floor.
async fn show(
    fleet: &FleetConfig,
    etcd: &Etcd,
    store: &ModelStore,
    series: &SeriesId,
) -> Result<()> {
    let key = record_key(&fleet.prefix, MODELS_TABLE, &series.to_string());
    let pointer = match etcd.get(&key).await? {
        Some(entry) => Some(LivePointer::decode(&series.to_string(), &entry.value)?),
        None => None,
    };
    let versions = store.versions(series).await?;
    if versions.is_empty() && pointer.is_none() {
        bail!(
            "no models of {series} in the fleet's model store {}",
            store.location()
        );
    }
    match &pointer {
        Some(pointer) => {
            outln!(
                "{series} ({}): v{} is live in the fleet, moved by {}: {}",
                store.location(),
                pointer.live.version,
                pointer.moved_by,
                pointer.decision
            )?;
            if pointer.retired_below > 0 {
                outln!(
                    "versions below v{} that the pointer does not name are retired (deleted by keep_versions; no rollback to them)",
                    pointer.retired_below
                )?;
            }
        }
        None => outln!(
            "{series} ({}): no live version in the fleet",
            store.location()
        )?,
    }
    for version in versions {
        let (stored, _) = store.find(series, version).await?;
        let live = pointer.as_ref().map(|pointer| pointer.live.version) == Some(version);
        let earlier = pointer
            .as_ref()
            .is_some_and(|pointer| pointer.earlier.iter().any(|e| e.version == version));
        outln!(
            "{} v{version}  {} bytes  crc32 {:08x}{}",
            if live { "*" } else { " " },
            stored.bytes,
            stored.crc32,
            if earlier { "  earlier" } else { "" }
        )?;
    }
    Ok(())
}

/// Makes `version` (by default the previous live version) the fleet's live version of `series`;
/// returns it.
async fn move_pointer(
    fleet: &FleetConfig,
    etcd: &Etcd,
    store: &ModelStore,
    series: &SeriesId,
    version: Option<u64>,
) -> Result<u64> {
    let key = record_key(&fleet.prefix, MODELS_TABLE, &series.to_string());
    let entry = etcd
        .get(&key)
        .await?
        .with_context(|| format!("{series} has no live model in the fleet"))?;
    let pointer = LivePointer::decode(&series.to_string(), &entry.value)?;
    let (target, bytes) = match (pointer.remembered(version), version) {
        (Some(stored), _) => (stored.clone(), store.get(stored).await?),
        (None, Some(version)) if version < pointer.retired_below => bail!(
            "v{version} of {series} is retired: its owner deletes the versions below v{} that the live pointer does not name ([registry] keep_versions); roll back to one it names ({})",
            pointer.retired_below,
            pointer
                .named()
                .map(|named| format!("v{named}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
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
