//! Fleet models: in a fleet with a model store (`[fleet] model_store`), every model version is an
//! immutable file in the store and the live version of each series is a pointer in etcd (the
//! `models` table), moved only by a write fenced by the owner's membership. The owner of a series
//! fits and retrains it; a replica that gains a series (after a kill or a join) serves the version
//! the pointer names instead of fitting, and fits only a series with no live version. Every
//! replica follows the pointers, so a version moved by another path (`prescale models rollback`)
//! is served at once. A pointed version that cannot be read fails the plan (retried on the next
//! pass) rather than being refitted: the pointer stays the one truth of what is live.
//! Without a model store each replica keeps its own registry, as alone.
//! Design: docs/decisions.md, "Fleet mode: models in an object store".

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::RwLock;

use crate::app::{AppError, fit_candidate};
use crate::domain::SeriesId;
use crate::fleet::etcd::Compare;
use crate::fleet::{Coordinator, RecordChange};
use crate::forecast::FittedModel;
use crate::registry::{
    EncodedVersion, LivePointer, MODELS_TABLE, ModelStore, RegistryError, StoredVersion,
};

use super::ServingState;
use super::fleet_workloads::{fenced_put, read_and_watch};
use super::live_models::LiveModel;

/// The fleet's models as this replica follows them.
#[derive(Debug)]
pub(super) struct SharedModels {
    /// Where the version files are.
    store: ModelStore,
    /// The live pointer of every series with one, as read from etcd: read whole, then followed.
    pointers: RwLock<HashMap<SeriesId, LivePointer>>,
    /// Set once the pointers were read whole: until then no series is fitted on first use, since
    /// it may have a live version.
    read: AtomicBool,
}

impl ServingState {
    /// Keeps models in `store`, the pointers in the fleet's etcd, from the time this replica
    /// joins a fleet. Call before [`ServingState::join_fleet`]; the models of the local registry
    /// are no longer served (their version numbers are this replica's own). Returns `false` (and
    /// changes nothing) when a store was set already.
    pub fn share_models(&self, store: ModelStore) -> bool {
        let shared = SharedModels {
            store,
            pointers: RwLock::new(HashMap::new()),
            read: AtomicBool::new(false),
        };
        let set = self.shared_models.set(shared).is_ok();
        if set {
            self.live.write().clear();
        }
        set
    }

    /// The shared models and the fleet, when this replica shares models through a fleet.
    fn shared(&self) -> Option<(&SharedModels, &Arc<dyn Coordinator>)> {
        Some((self.shared_models.get()?, self.fleet.get()?))
    }

    /// Whether models are the fleet's (a model store and a fleet) rather than the registry's.
    pub(super) fn shares_models(&self) -> bool {
        self.shared().is_some()
    }

    /// Blocking. With shared models, the version the pointer of `series` names, read from the
    /// store and made live here (`None`: the series has no live version, fit it). Fails while the
    /// pointers are not read yet.
    pub(super) fn load_shared_live(
        &self,
        series: &SeriesId,
    ) -> Result<Option<Arc<LiveModel>>, AppError> {
        let Some((shared, _)) = self.shared() else {
            return Ok(None);
        };
        if !shared.read.load(Ordering::Acquire) {
            return Err(AppError::Fleet {
                reason: "the fleet's live model pointers are not read yet".to_owned(),
            });
        }
        let Some(pointer) = shared.pointers.read().get(series).cloned() else {
            return Ok(None);
        };
        let handle = tokio::runtime::Handle::current();
        let bytes = handle
            .block_on(shared.store.get(&pointer.live))
            .inspect_err(|_| self.metrics.model_store_failures.inc())?;
        let model = ModelStore::decode(series, &pointer.live, &bytes)
            .inspect_err(|_| self.metrics.model_load_failures.inc())?;
        self.metrics.models_loaded.inc();
        tracing::info!(series = %series, version = pointer.live.version, "serving the fleet's live version");
        Ok(Some(self.serve_version(
            series,
            pointer.live.version,
            model,
        )))
    }

    /// Blocking. Stores `model`, just fitted for `series` (first use, or a refit), as its next
    /// version and makes it live: the file first, then the pointer (fenced). Returns the version.
    pub(super) fn publish_blocking(
        &self,
        series: &SeriesId,
        model: &FittedModel,
        decision: &str,
    ) -> Result<u64, AppError> {
        let handle = tokio::runtime::Handle::current();
        let version = handle.block_on(self.next_version(series))?;
        let encoded = ModelStore::encode(series, version, model)?;
        handle.block_on(self.put_and_point(series, encoded, true, decision))?;
        Ok(version)
    }

    /// The next version number of `series`: above its live one and every file in the store.
    async fn next_version(&self, series: &SeriesId) -> Result<u64, AppError> {
        let (shared, _) = self.shared_or_error()?;
        let live = shared
            .pointers
            .read()
            .get(series)
            .map_or(0, |pointer| pointer.live.version);
        let stored = shared
            .store
            .highest_version(series)
            .await
            .inspect_err(|_| self.metrics.model_store_failures.inc())?;
        Ok(live.max(stored) + 1)
    }

    fn shared_or_error(&self) -> Result<(&SharedModels, &Arc<dyn Coordinator>), AppError> {
        self.shared().ok_or_else(|| AppError::Fleet {
            reason: "this replica keeps no models in a fleet model store".to_owned(),
        })
    }

    /// Writes `encoded` (a new version of `series`) to the store and, when `promote`, moves the
    /// series' pointer to it. A failed write leaves the pointer where it was (counted in
    /// `prescale_model_store_failures_total`); a replica that lost its membership, or no longer
    /// owns the series, cannot move it.
    async fn put_and_point(
        &self,
        series: &SeriesId,
        encoded: EncodedVersion,
        promote: bool,
        decision: &str,
    ) -> Result<(), AppError> {
        let (shared, coordinator) = self.shared_or_error()?;
        self.check_owned(series)?;
        let stored = shared.store.put_new(encoded).await.inspect_err(|error| {
            self.metrics.model_store_failures.inc();
            tracing::error!(series = %series, %error, "the model store refused the new version; the live version stays");
        })?;
        if promote {
            let previous = shared.pointers.read().get(series).cloned();
            let pointer =
                LivePointer::promoted(previous, stored, coordinator.member_id(), decision);
            self.move_pointer(series, pointer).await?;
        }
        self.drop_old_versions(series).await;
        Ok(())
    }

    /// Deletes the version files of `series` beyond the newest `[registry] keep_versions`,
    /// except those its live pointer names (the live one and the earlier ones a rollback returns
    /// to). First it raises the pointer's retired floor above them, in a write that requires the
    /// pointer unchanged since it was read here and this replica's membership: a rollback that
    /// moved the pointer meanwhile wins (nothing is deleted now; the next version retries), and a
    /// rollback after it is refused for those versions. A failure is logged and counted in
    /// `prescale_model_store_failures_total`; the new version stands.
    async fn drop_old_versions(&self, series: &SeriesId) {
        let (Some(keep), Some((shared, coordinator))) =
            (self.settings.keep_versions, self.shared())
        else {
            return;
        };
        let failed = |error: RegistryError| {
            self.metrics.model_store_failures.inc();
            tracing::warn!(series = %series, %error, "cannot delete a model version beyond keep_versions");
        };
        let name = series.to_string();
        let (pointer, revision) = match coordinator.record_with_revision(MODELS_TABLE, &name).await
        {
            Ok(Some((value, revision))) => match LivePointer::decode(&name, &value) {
                Ok(pointer) => (pointer, revision),
                Err(error) => return failed(error),
            },
            // No live version: nothing to spare the others for.
            Ok(None) => return,
            Err(error) => {
                tracing::warn!(series = %series, %error, "cannot read the live pointer; old model versions stay until the next version");
                return;
            }
        };
        let versions = match shared.store.versions(series).await {
            Ok(versions) => versions,
            Err(error) => return failed(error),
        };
        let named: HashSet<u64> = pointer.named().collect();
        let retired: Vec<u64> = versions
            .iter()
            .rev()
            .skip(keep)
            .filter(|version| !named.contains(version))
            .copied()
            .collect();
        let Some(highest) = retired.iter().max() else {
            return;
        };
        if pointer.retired_below <= *highest {
            let raised = pointer.retiring_below(highest + 1);
            let unchanged = Compare::ModRevisionBelow {
                key: coordinator.record_key(MODELS_TABLE, &name),
                revision: revision + 1,
            };
            let written = fenced_put(
                coordinator.as_ref(),
                &[unchanged],
                MODELS_TABLE,
                &name,
                raised.encode(),
            )
            .await;
            if let Err(error) = written {
                tracing::info!(series = %series, %error, "the live pointer moved since it was read (a rollback?); old model versions stay until the next version");
                return;
            }
            shared.pointers.write().insert(series.clone(), raised);
        }
        for version in retired {
            if let Err(error) = shared.store.delete(series, version).await {
                failed(error);
            }
        }
    }

    /// Moves the pointer of `series` with a write fenced by this replica's membership.
    async fn move_pointer(&self, series: &SeriesId, pointer: LivePointer) -> Result<(), AppError> {
        let (shared, coordinator) = self.shared_or_error()?;
        let value = pointer.encode();
        fenced_put(
            coordinator.as_ref(),
            &[],
            MODELS_TABLE,
            &series.to_string(),
            value,
        )
        .await?;
        shared.pointers.write().insert(series.clone(), pointer);
        Ok(())
    }

    fn check_owned(&self, series: &SeriesId) -> Result<(), AppError> {
        if self.owns(series) {
            return Ok(());
        }
        Err(AppError::Fleet {
            reason: format!(
                "series {series} is owned by another replica (or by none now): its models are trained there"
            ),
        })
    }

    /// Retrains `series` with shared models: fits and compares with the live model on the fit
    /// threads, writes the new version file, and moves the pointer when it is promoted. A failed
    /// write fails the retrain and leaves the live model and its pointer as they were.
    pub(super) async fn retrain_shared(
        self: &Arc<Self>,
        series: &SeriesId,
    ) -> Result<(), AppError> {
        self.check_owned(series)?;
        let version = self.next_version(series).await?;
        let settings = self.retrain_settings()?;
        let live = self.live.read().get(series).cloned();
        let (state, target) = (Arc::clone(self), series.clone());
        let (model, comparison, encoded) = self
            .run_blocking(move || {
                let live_model = live.as_ref().map(|live| &live.model);
                let (model, comparison) =
                    fit_candidate(&state.history, &target, &settings, live_model)
                        .inspect_err(|_| state.metrics.model_errors.inc())?;
                let encoded = ModelStore::encode(&target, version, &model)?;
                Ok((model, comparison, encoded))
            })
            .await?;
        self.metrics.model_fits.inc();
        self.put_and_point(series, encoded, comparison.promote, &comparison.reason)
            .await?;
        tracing::info!(series = %series, promoted = comparison.promote, version, reason = %comparison.reason, "retrained");
        if comparison.promote {
            self.metrics.models_promoted.inc();
            self.serve_version(series, version, model);
            self.mark_due(series);
        }
        Ok(())
    }

    /// Reads `stored` of `series` from the store and decodes it on the blocking pool.
    async fn read_version(
        &self,
        series: &SeriesId,
        stored: &StoredVersion,
    ) -> Result<FittedModel, AppError> {
        let (shared, _) = self.shared_or_error()?;
        let bytes = shared
            .store
            .get(stored)
            .await
            .inspect_err(|_| self.metrics.model_store_failures.inc())?;
        let (target, stored) = (series.clone(), stored.clone());
        let decoded =
            tokio::task::spawn_blocking(move || ModelStore::decode(&target, &stored, &bytes))
                .await
                .map_err(|error| AppError::Worker {
                    reason: error.to_string(),
                })?;
        Ok(decoded.inspect_err(|_| self.metrics.model_load_failures.inc())?)
    }

    /// Makes `model` (version `version`) the live model of `series` here, whatever was live.
    fn serve_version(&self, series: &SeriesId, version: u64, model: FittedModel) -> Arc<LiveModel> {
        let live = Arc::new(LiveModel::new(version, model));
        self.live.write().insert(series.clone(), Arc::clone(&live));
        live
    }

    /// With shared models, drops the live models of the series this replica no longer owns, so
    /// one it gains again is read from the pointer, which may have moved meanwhile.
    pub(super) fn forget_unowned_models(&self) {
        if self.shares_models() {
            self.live.write().retain(|series, _| self.owns(series));
            self.shift_refits
                .lock()
                .retain(|series, _| self.owns(series));
        }
    }

    /// Follows the fleet's live pointers until shutdown (with shared models): reads the table,
    /// then applies each change; reads it again after a failure.
    pub(super) async fn follow_model_pointers(self: Arc<Self>) {
        let Some((_, coordinator)) = self.shared() else {
            return;
        };
        let coordinator = Arc::clone(coordinator);
        self.until_shutdown(MODELS_TABLE, || self.follow_pointers(coordinator.as_ref()))
            .await;
    }

    async fn follow_pointers(&self, coordinator: &dyn Coordinator) -> Result<(), AppError> {
        let (shared, _) = self.shared_or_error()?;
        let (records, mut watch) = read_and_watch(coordinator, MODELS_TABLE).await?;
        let pointers: HashMap<SeriesId, LivePointer> = records
            .iter()
            .filter_map(|(name, value)| decode_pointer(name, Some(value)))
            .filter_map(|(series, pointer)| Some((series, pointer?)))
            .collect();
        let held: Vec<SeriesId> = self.live.read().keys().cloned().collect();
        *shared.pointers.write() = pointers;
        if !shared.read.swap(true, Ordering::AcqRel) {
            // Plans tried before this first read failed for want of it (a joining replica plans
            // its future share at once): try them again now rather than at the next tick.
            self.mark_all_due();
            self.replan.notify_one();
        }
        for series in held {
            self.serve_pointed_version(&series).await;
        }
        loop {
            let Some(changes) = self.next_changes(&mut watch).await? else {
                return Ok(());
            };
            for change in changes {
                let (name, value) = match &change {
                    RecordChange::Put { name, value } => (name, Some(value.as_slice())),
                    RecordChange::Delete { name } => (name, None),
                };
                let Some((series, pointer)) = decode_pointer(name, value) else {
                    continue;
                };
                match pointer {
                    Some(pointer) => shared.pointers.write().insert(series.clone(), pointer),
                    None => shared.pointers.write().remove(&series),
                };
                self.serve_pointed_version(&series).await;
            }
        }
    }

    /// Brings the live model of `series` here in line with its pointer, when this replica holds
    /// one that differs: an owned series is given the pointed version (its workloads replanned),
    /// another's is dropped. A series not held is read on first use.
    async fn serve_pointed_version(&self, series: &SeriesId) {
        let Some((shared, _)) = self.shared() else {
            return;
        };
        let Some(held) = self.live_version(series) else {
            return;
        };
        let pointed = shared.pointers.read().get(series).map(|p| p.live.clone());
        if pointed.as_ref().map(|stored| stored.version) == Some(held) {
            return;
        }
        let Some(stored) = pointed.filter(|_| self.owns(series)) else {
            self.live.write().remove(series);
            return;
        };
        match self.read_version(series, &stored).await {
            Ok(model) => {
                self.metrics.models_loaded.inc();
                tracing::info!(series = %series, version = stored.version, "serving the version the fleet's pointer names");
                self.serve_version(series, stored.version, model);
                self.mark_due(series);
                self.replan.notify_one();
            }
            Err(error) => {
                tracing::error!(series = %series, version = stored.version, %error, "the version the fleet's pointer names cannot be read; the model served stays");
            }
        }
    }
}

/// The series and pointer of record `name` (`None` inside: deleted); records that do not decode
/// are reported and skipped.
fn decode_pointer(name: &str, value: Option<&[u8]>) -> Option<(SeriesId, Option<LivePointer>)> {
    let series = match name.parse::<SeriesId>() {
        Ok(series) => series,
        Err(error) => {
            tracing::error!(record = %name, %error, "a live model pointer names a series that does not parse");
            return None;
        }
    };
    let Some(value) = value else {
        return Some((series, None));
    };
    match LivePointer::decode(name, value) {
        Ok(pointer) => Some((series, Some(pointer))),
        Err(error) => {
            tracing::error!(series = %series, %error, "skipping a live model pointer");
            None
        }
    }
}
