//! Fleet-wide workloads: in a fleet, `UpsertWorkload` and `DeleteWorkload` write the workload to
//! etcd (the `workloads` table) in a transaction fenced by this replica's membership, and every
//! replica follows that table into its own workloads file, so a workload given to any replica is
//! planned by its owner and answered by all. Alone, they write the workloads file as before.
//! Design: docs/decisions.md, "Fleet mode: replicas coordinated through etcd".

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use crate::app::AppError;
use crate::fleet::etcd::{Compare, Op};
use crate::fleet::{Coordinator, FencedWrite, FleetError, RecordChange, RecordWatch};
use crate::plan::{Workload, WorkloadParams};

use super::fleet_applied::APPLIED_TABLE;
use super::workloads::unknown_workload;
use super::{ServingState, blocking};

/// The fleet-wide table of workloads.
pub(super) const WORKLOADS_TABLE: &str = "workloads";

pub(super) fn fleet_error(error: FleetError) -> AppError {
    AppError::Fleet {
        reason: error.to_string(),
    }
}

impl ServingState {
    /// Validates and stores a workload: alone, in the workloads file; in a fleet, first in etcd (a
    /// write fenced by this replica's membership, refused with [`AppError::Fleet`] once it has lost
    /// it), then here; the other replicas apply it from etcd.
    pub async fn store_workload(
        self: &Arc<Self>,
        workload: Workload,
    ) -> Result<Workload, AppError> {
        if let Some(coordinator) = self.fleet_writer("UpsertWorkload")? {
            let params = WorkloadParams::from(&workload);
            put_record(
                coordinator.as_ref(),
                WORKLOADS_TABLE,
                workload.name(),
                &params,
            )
            .await?;
        }
        let state = Arc::clone(self);
        blocking(move || state.upsert_workload(workload)).await
    }

    /// Deletes a workload and its report of applied replicas: alone, from the workloads and
    /// applied files; in a fleet, first from etcd (fenced as [`ServingState::store_workload`]),
    /// then here. In a fleet, whether it exists is etcd's answer, not this replica's copy (which
    /// follows etcd a moment behind): the delete itself tells whether it deleted the record, and
    /// [`AppError::NotFound`] means it did not.
    pub async fn remove_workload(self: &Arc<Self>, name: &str) -> Result<(), AppError> {
        let in_fleet = match self.fleet_writer("DeleteWorkload")? {
            Some(coordinator) => {
                let key = coordinator.record_key(WORKLOADS_TABLE, name);
                let deleted = fenced_any_view(coordinator.as_ref(), &[Op::Delete { key }]).await?;
                // The executor's report goes with the workload, so one created again by that name
                // starts from nothing; its own write, since a transaction counts the deletes of
                // both records together. A report is written only while the workload's record
                // exists (`report_fleet_applied`), so none comes after this. Also when the workload
                // was not there: a report left by a delete whose second write failed goes too. The
                // workload is deleted either way, so a failure here is logged, not answered.
                let report = coordinator.record_key(APPLIED_TABLE, name);
                if let Err(error) =
                    fenced_any_view(coordinator.as_ref(), &[Op::Delete { key: report }]).await
                {
                    tracing::warn!(workload = name, %error, "the report of applied replicas of a deleted workload was not deleted");
                }
                if deleted == 0 {
                    return Err(unknown_workload(name));
                }
                true
            }
            None => false,
        };
        let state = Arc::clone(self);
        let name = name.to_owned();
        match blocking(move || state.delete_workload(&name)).await {
            // This replica's watch of the fleet's table applied the deletion first, or had not yet
            // applied the workload's upsert (its deletion follows it).
            Err(AppError::NotFound { .. }) if in_fleet => Ok(()),
            deleted => deleted,
        }
    }

    /// Follows the fleet's workloads into this replica's until shutdown: reads the table (a
    /// workload held here but not there is deleted), then applies each change; reads it again after
    /// a failure.
    pub(super) async fn sync_workloads(self: Arc<Self>, coordinator: Arc<dyn Coordinator>) {
        self.until_shutdown("workloads", || self.follow_workloads(coordinator.as_ref()))
            .await;
    }

    /// Runs `follow` (which follows a fleet-wide table) until shutdown, again a second after each
    /// failure; `table` names it in the log.
    pub(super) async fn until_shutdown<F, Follow>(&self, table: &str, mut follow: F)
    where
        F: FnMut() -> Follow,
        Follow: std::future::Future<Output = Result<(), AppError>>,
    {
        loop {
            if let Err(error) = follow().await {
                tracing::warn!(table, %error, "following a fleet-wide table failed; reading it again");
            }
            tokio::select! {
                () = self.shutdown.cancelled() => return,
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    /// The next changes `watch` reports, or `None` at shutdown.
    pub(super) async fn next_changes(
        &self,
        watch: &mut RecordWatch,
    ) -> Result<Option<Vec<RecordChange>>, AppError> {
        tokio::select! {
            () = self.shutdown.cancelled() => Ok(None),
            changes = watch.next() => changes.map(Some).map_err(fleet_error),
        }
    }

    async fn follow_workloads(
        self: &Arc<Self>,
        coordinator: &dyn Coordinator,
    ) -> Result<(), AppError> {
        let (records, mut watch) = read_and_watch(coordinator, WORKLOADS_TABLE).await?;
        let names: HashSet<&str> = records.iter().map(|(name, _)| name.as_str()).collect();
        for name in self.workload_names() {
            if !names.contains(name.as_str()) {
                self.apply_workload_record(&name, None).await;
            }
        }
        for (name, value) in &records {
            self.apply_workload_record(name, Some(value)).await;
        }
        loop {
            let Some(changes) = self.next_changes(&mut watch).await? else {
                return Ok(());
            };
            for change in changes {
                match change {
                    RecordChange::Put { name, value } => {
                        self.apply_workload_record(&name, Some(&value)).await;
                    }
                    RecordChange::Delete { name } => self.apply_workload_record(&name, None).await,
                }
            }
        }
    }

    /// Makes workload `name` here what the fleet holds: `value` (its encoded parameters), or none.
    async fn apply_workload_record(self: &Arc<Self>, name: &str, value: Option<&[u8]>) {
        let state = Arc::clone(self);
        let applied = match value {
            Some(bytes) => match serde_json::from_slice::<Workload>(bytes) {
                Ok(workload) if self.workload(name).is_ok_and(|held| held == workload) => Ok(()),
                Ok(workload) => blocking(move || state.upsert_workload(workload).map(drop)).await,
                Err(error) => Err(AppError::InvalidRequest {
                    reason: format!("the fleet's workload {name} does not decode: {error}"),
                }),
            },
            None if self.workload(name).is_err() => Ok(()),
            None => {
                let name = name.to_owned();
                blocking(move || state.delete_workload(&name)).await
            }
        };
        if let Err(error) = applied {
            tracing::warn!(workload = %name, %error, "applying the fleet's workload failed");
        }
    }
}

/// Reads fleet-wide `table` whole, and watches its changes from that read on.
pub(super) async fn read_and_watch(
    coordinator: &dyn Coordinator,
    table: &str,
) -> Result<(Vec<(String, Vec<u8>)>, RecordWatch), AppError> {
    let (records, revision) = coordinator.records(table).await.map_err(fleet_error)?;
    let watch = coordinator
        .watch_records(table, revision)
        .await
        .map_err(fleet_error)?;
    Ok((records, watch))
}

/// Writes record `name` of `table` (`value` as JSON), fenced by this replica's membership; a
/// record that does not depend on who owns what (a workload, an event), so tried again with the
/// next view ([`fenced_any_view`]).
pub(super) async fn put_record(
    coordinator: &dyn Coordinator,
    table: &str,
    name: &str,
    value: &impl serde::Serialize,
) -> Result<(), AppError> {
    let value = serde_json::to_vec(value).map_err(|error| AppError::InvalidRequest {
        reason: format!("cannot encode {table} record {name}: {error}"),
    })?;
    let key = coordinator.record_key(table, name);
    fenced_any_view(
        coordinator,
        &[Op::Put {
            key,
            value,
            lease: 0,
        }],
    )
    .await
    .map(drop)
}

/// Writes `value` as record `name` of fleet-wide table `table`, fenced by this replica's
/// membership in the view it decided on, and only if every compare of `conditions` holds: a write
/// that depends on ownership (a model pointer, a report of applied replicas) is never retried with
/// a later view.
pub(super) async fn fenced_put(
    coordinator: &dyn Coordinator,
    conditions: &[Compare],
    table: &str,
    name: &str,
    value: Vec<u8>,
) -> Result<(), AppError> {
    let key = coordinator.record_key(table, name);
    let put = [Op::Put {
        key,
        value,
        lease: 0,
    }];
    match coordinator.fenced_write_if(conditions, &put).await {
        Ok(FencedWrite::Applied { .. }) => Ok(()),
        Ok(FencedWrite::Refused) => Err(refused()),
        Err(error) => Err(fleet_error(error)),
    }
}

/// How many times a fenced write refused for a stale view is tried with the next view.
const FENCED_ATTEMPTS: usize = 3;

/// Runs `ops` fenced by this replica's membership; returns how many keys its deletes deleted.
/// For writes that do not depend on who owns what: one refused because a member changed after
/// this replica's view (one turning active, most often) is tried again with the next view, while
/// this replica still holds its lease.
pub(super) async fn fenced_any_view(
    coordinator: &dyn Coordinator,
    ops: &[Op],
) -> Result<u64, AppError> {
    let mut view = coordinator.view();
    for _ in 0..FENCED_ATTEMPTS {
        view.borrow_and_update();
        match coordinator.fenced_write(ops).await {
            Ok(FencedWrite::Applied { deleted }) => return Ok(deleted),
            Ok(FencedWrite::Refused) if view.borrow().incarnation.is_some() => {
                // The next view, or the same one again after a while.
                let _ = tokio::time::timeout(Duration::from_secs(1), view.changed()).await;
            }
            Ok(FencedWrite::Refused) => break,
            Err(error) => return Err(fleet_error(error)),
        }
    }
    Err(refused())
}

fn refused() -> AppError {
    AppError::Fleet {
        reason: "the write was refused: this replica is no longer the fleet member it was (its lease was lost, or members changed); retry".to_owned(),
    }
}
