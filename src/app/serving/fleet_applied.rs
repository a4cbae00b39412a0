//! Reports of applied replicas in a fleet: the owner of a workload writes each report that changes
//! the replica count to etcd (`<prefix>applied/<workload>`, beside the workloads table) before it
//! holds it, and a replica that takes a workload over (a restart, a rolling update, a dead owner)
//! reads it before its first plan of it, so that plan starts from what the executor last
//! reported. A report is written only while the workload's record exists, and deleting a
//! workload deletes its report just after it (`fleet_workloads`), so none outlives it.
//! Design: docs/decisions.md, "Reports of applied replicas outlive the process".

use std::sync::atomic::Ordering;

use crate::app::AppError;
use crate::fleet::Coordinator;
use crate::fleet::etcd::Compare;

use super::ServingState;
use super::applied::{Applied, Newer, SavedApplied, compare_to_held};
use super::fleet_workloads::{WORKLOADS_TABLE, fenced_put, fleet_error};
use super::workloads::{WorkloadEntry, unknown_workload};

/// The fleet-wide table of reports, one record per workload (`{"replicas":..,"at_ms":..}`).
pub(super) const APPLIED_TABLE: &str = "applied";

impl ServingState {
    /// Records `applied`, reported for workload `name` (`entry`), at its owner: the fleet's report
    /// is read first if this replica has not read it since it gained the workload; a report older
    /// than the one held is dropped; one that changes the replica count is written to etcd, fenced
    /// by this replica's membership in its current view (a write that depends on who owns the
    /// workload, so refused rather than retried when the view is stale) and by the workload's
    /// record existing ([`AppError::NotFound`] once it is deleted), and held here only once
    /// written. A workload's reports are recorded one at a time, so etcd ends with the newest.
    pub(super) async fn report_fleet_applied(
        &self,
        coordinator: &dyn Coordinator,
        name: &str,
        entry: &WorkloadEntry,
        applied: Applied,
    ) -> Result<(), AppError> {
        let _reporting = entry.reporting.lock().await;
        self.read_fleet_applied(coordinator, name, entry).await?;
        let held = *entry.applied.lock();
        match compare_to_held(held, applied) {
            Newer::No => return Ok(()),
            Newer::SameReplicas => {}
            Newer::NewReplicas => {
                let value = serde_json::to_vec(&SavedApplied::from(applied)).map_err(|error| {
                    AppError::InvalidRequest {
                        reason: format!("cannot encode the report of workload {name}: {error}"),
                    }
                })?;
                // Only while the workload's record exists: a report racing a delete through any
                // replica (this replica's copy follows etcd a moment behind) would otherwise be
                // left behind the delete, for a workload created again by that name to inherit.
                let workload = Compare::Exists {
                    key: coordinator.record_key(WORKLOADS_TABLE, name),
                };
                let written =
                    fenced_put(coordinator, &[workload], APPLIED_TABLE, name, value).await;
                if let Err(error) = written {
                    // Refused: the fence or the workload; etcd says which.
                    return Err(match coordinator.record(WORKLOADS_TABLE, name).await {
                        Ok(None) => unknown_workload(name),
                        _ => error,
                    });
                }
            }
        }
        entry.hold_newest(applied);
        Ok(())
    }

    /// What the executor of workload `name` (`entry`) last reported, as its next plan starts from
    /// it (and `GetWorkload` shows it): in a fleet, the fleet's report is read first when this
    /// replica has not read it since it gained the workload. A failed read is logged and the
    /// report held here (none, after a handover) is the answer; the next call reads again.
    pub(super) async fn held_applied(&self, name: &str, entry: &WorkloadEntry) -> Option<Applied> {
        if let Some(coordinator) = self.fleet.get()
            && let Err(error) = self
                .read_fleet_applied(coordinator.as_ref(), name, entry)
                .await
        {
            tracing::warn!(workload = %name, %error, "reading the fleet's report of applied replicas failed; answering from the report held here");
        }
        *entry.applied.lock()
    }

    /// Holds the fleet's report of workload `name` (`entry`) when it is newer than the one held,
    /// unless it was read since this replica gained the workload. Marked read only while this
    /// replica owns the workload (not while it only warms it to own it: the owner's reports go on
    /// meanwhile), checked under the workloads' lock against the view a re-sync clears the marks
    /// under ([`ServingState::forget_unowned_reports`]), so a workload lost meanwhile is read
    /// again once gained back.
    async fn read_fleet_applied(
        &self,
        coordinator: &dyn Coordinator,
        name: &str,
        entry: &WorkloadEntry,
    ) -> Result<(), AppError> {
        if entry.fleet_applied_read.load(Ordering::Acquire) {
            return Ok(());
        }
        let record = coordinator
            .record(APPLIED_TABLE, name)
            .await
            .map_err(fleet_error)?;
        if let Some(bytes) = record {
            let saved: SavedApplied =
                serde_json::from_slice(&bytes).map_err(|error| AppError::InvalidRequest {
                    reason: format!(
                        "the fleet's report of workload {name} does not decode: {error}"
                    ),
                })?;
            entry.hold_newest(saved.into());
        }
        let series = entry.workload.read().series().clone();
        let _workloads = self.workloads.read();
        if self.owns_now(&series) {
            entry.fleet_applied_read.store(true, Ordering::Release);
        }
        Ok(())
    }

    /// Unmarks the reports read from the fleet of the workloads this replica no longer owns, so
    /// each is read again before its first plan once gained back (another owner may have
    /// recorded newer ones meanwhile). Under the workloads' write lock: see
    /// `read_fleet_applied`.
    pub(super) fn forget_unowned_reports(&self) {
        let workloads = self.workloads.write();
        for entry in workloads.values() {
            if !self.owns_now(entry.workload.read().series()) {
                entry.fleet_applied_read.store(false, Ordering::Release);
            }
        }
    }

    /// Drops the reports held when joining a fleet: those of the applied file, saved by this
    /// data directory's replica when it ran alone. The fleet's are read from etcd instead.
    pub(super) fn drop_reports_held_alone(&self) {
        for entry in self.workloads.read().values() {
            *entry.applied.lock() = None;
        }
    }
}
