//! What each workload's executor reported it runs (`ReportApplied`): plans start from it (the
//! scale-in policy steps down from what runs) and the KEDA scaler serves from it, so it outlives
//! the process. The newest report (by its time) is held; one that changes the replica count is
//! saved before it is acknowledged: alone, in the applied file beside the workloads file; in a
//! fleet, in etcd beside the fleet's workloads (`fleet_applied`). Design: docs/decisions.md,
//! "Reports of applied replicas outlive the process".

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::app::AppError;
use crate::domain::Timestamp;
use crate::store::{MAX_FUTURE, latest_accepted};

use super::workloads::{WorkloadEntry, read_toml_file, write_toml_file};
use super::{ServingState, blocking};

/// Name of the applied file in the data directory.
const APPLIED_FILE: &str = "applied.toml";

/// What an executor reported it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    /// Replicas running.
    pub replicas: u32,
    /// When they were applied.
    pub at: Timestamp,
}

/// A report as saved: a table of the applied file, or the value of the fleet's record (JSON).
#[derive(Debug, Clone, Copy, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SavedApplied {
    /// Replicas running.
    replicas: u32,
    /// When they were applied, epoch milliseconds.
    at_ms: i64,
}

impl From<Applied> for SavedApplied {
    fn from(applied: Applied) -> Self {
        Self {
            replicas: applied.replicas,
            at_ms: applied.at.as_millis(),
        }
    }
}

impl From<SavedApplied> for Applied {
    fn from(saved: SavedApplied) -> Self {
        Self {
            replicas: saved.replicas,
            at: Timestamp::from_millis(saved.at_ms),
        }
    }
}

/// The applied file: the report of each workload that has one, by name.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct AppliedFile {
    /// One table per workload.
    #[serde(default)]
    workload: BTreeMap<String, SavedApplied>,
}

/// What a report is to the one held (see [`compare_to_held`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Newer {
    /// Older than the report held: dropped, and acknowledged all the same.
    No,
    /// The newest, with the replica count held: held, not saved again (the saved one has the
    /// same count and the time of the report that set it).
    SameReplicas,
    /// The newest with another replica count, or the first: saved, then held.
    NewReplicas,
}

/// What `report` is to the report `held`: the newest report (by its time; a tie goes to the
/// later call) wins.
pub(super) fn compare_to_held(held: Option<Applied>, report: Applied) -> Newer {
    match held {
        Some(held) if report.at < held.at => Newer::No,
        Some(held) if held.replicas == report.replicas => Newer::SameReplicas,
        _ => Newer::NewReplicas,
    }
}

/// The applied file of a replica that runs alone, as it is written.
#[derive(Debug, Default)]
pub(super) struct AppliedSaves {
    /// Held while the file is written: writers take turns, and each writes the reports held when
    /// its turn comes, so the last one writes the newest.
    writing: Mutex<()>,
    /// A report held is not in the file yet: set before a save is asked for, cleared by the save
    /// that writes it (and set again when that write fails). Reports that arrive while a save
    /// writes are saved together by the next one.
    unsaved: AtomicBool,
}

impl WorkloadEntry {
    /// Holds `report` when it is the newest; says what it was to the one held before.
    pub(super) fn hold_newest(&self, report: Applied) -> Newer {
        let mut held = self.applied.lock();
        let newer = compare_to_held(*held, report);
        if newer != Newer::No {
            *held = Some(report);
        }
        newer
    }
}

impl ServingState {
    /// Records what the executor of `name` runs: later plans and the KEDA scaler start from it. A
    /// report time before the epoch, or ahead of the clock by more than the store allows a sample
    /// ([`MAX_FUTURE`]), is refused: the scaler takes a report newer than the value it served as
    /// what runs now, so a report from the future would stand until the clock passed it. A report
    /// older than the one held is acknowledged and dropped. One that changes the replica count is
    /// saved before this returns: alone, in the applied file (written off the async threads); in a
    /// fleet, in etcd by the owner (see `report_fleet_applied`), refused while read-only.
    pub async fn report_applied(
        self: &Arc<Self>,
        name: &str,
        applied: Applied,
    ) -> Result<(), AppError> {
        check_applied_time(applied.at, self.now())?;
        let entry = self.entry(name)?;
        if let Some(coordinator) = self.fleet_writer("ReportApplied")? {
            return self
                .report_fleet_applied(coordinator.as_ref(), name, &entry, applied)
                .await;
        }
        if entry.hold_newest(applied) == Newer::NewReplicas {
            self.applied_saves.unsaved.store(true, Ordering::SeqCst);
        }
        if !self.applied_saves.unsaved.load(Ordering::SeqCst) {
            return Ok(());
        }
        let state = Arc::clone(self);
        blocking(move || state.save_applied(&state.workloads.read())).await
    }

    /// What the executor of `name` last reported, as held here.
    pub fn applied(&self, name: &str) -> Result<Option<Applied>, AppError> {
        Ok(*self.entry(name)?.applied.lock())
    }

    /// What the executor of `name` last reported, for `GetWorkload`: the report its next plan
    /// starts from (in a fleet, at its owner, which reads the fleet's report first when it has not
    /// since it gained the workload).
    pub async fn reported_applied(&self, name: &str) -> Result<Option<Applied>, AppError> {
        let entry = self.entry(name)?;
        Ok(self.held_applied(name, &entry).await)
    }

    /// Holds the reports of the applied file (read at open) of the workloads in `workloads`; the
    /// file is written again without the others (a workload deleted by a process that stopped
    /// before it wrote the file), so that a workload created again by that name later does not
    /// inherit one. A file that cannot be parsed is replaced, and no report is held. Blocking.
    pub(super) fn hold_saved_applied(
        &self,
        workloads: &BTreeMap<String, Arc<WorkloadEntry>>,
    ) -> Result<(), AppError> {
        let mut orphans = 0;
        let file: AppliedFile = match read_toml_file(&self.data_dir, APPLIED_FILE) {
            Ok(file) => file,
            // The reports are the executors' to send again, and the file is written atomically:
            // one that cannot be read (edited by hand) is logged and replaced by the reports held
            // (none yet), never a reason to refuse to serve the workloads.
            Err(error @ AppError::InvalidRequest { .. }) => {
                tracing::warn!(%error, "the saved reports of applied replicas cannot be read; starting without them");
                self.applied_saves.unsaved.store(true, Ordering::SeqCst);
                return self.save_applied(workloads);
            }
            Err(error) => return Err(error),
        };
        for (name, saved) in file.workload {
            match workloads.get(&name) {
                Some(entry) => *entry.applied.lock() = Some(saved.into()),
                None => orphans += 1,
            }
        }
        if orphans > 0 {
            self.applied_saves.unsaved.store(true, Ordering::SeqCst);
            self.save_applied(workloads)?;
        }
        Ok(())
    }

    /// Alone, writes the applied file again without workload `name`'s report (its entry
    /// `removed`) once it has been removed from `workloads`. A failure is logged: the workload is
    /// deleted all the same, and the next save (or start) leaves its report out. Blocking.
    pub(super) fn forget_saved_applied(
        &self,
        workloads: &BTreeMap<String, Arc<WorkloadEntry>>,
        name: &str,
        removed: &WorkloadEntry,
    ) {
        if self.fleet.get().is_some() || removed.applied.lock().is_none() {
            return;
        }
        self.applied_saves.unsaved.store(true, Ordering::SeqCst);
        if let Err(error) = self.save_applied(workloads) {
            tracing::warn!(workload = %name, %error, "writing the applied file without the deleted workload's report failed");
        }
    }

    /// Writes the reports held by `workloads` (as the caller holds the map, locked) to the
    /// applied file, unless every report is saved already. Blocking.
    fn save_applied(
        &self,
        workloads: &BTreeMap<String, Arc<WorkloadEntry>>,
    ) -> Result<(), AppError> {
        let _writing = self.applied_saves.writing.lock();
        if !self.applied_saves.unsaved.swap(false, Ordering::SeqCst) {
            return Ok(());
        }
        let file = AppliedFile {
            workload: workloads
                .iter()
                .filter_map(|(name, entry)| {
                    let applied = (*entry.applied.lock())?;
                    Some((name.clone(), SavedApplied::from(applied)))
                })
                .collect(),
        };
        write_toml_file(
            &self.data_dir,
            APPLIED_FILE,
            &file,
            "the reports of applied replicas",
        )
        .inspect_err(|_| self.applied_saves.unsaved.store(true, Ordering::SeqCst))
    }
}

/// Refuses a report time `at` before the epoch or more than [`MAX_FUTURE`] ahead of `now`.
fn check_applied_time(at: Timestamp, now: Timestamp) -> Result<(), AppError> {
    let latest = latest_accepted(now);
    let reason = if at < Timestamp::from_millis(0) {
        format!("applied time {at} is before the epoch, 1970-01-01T00:00:00Z")
    } else if at > latest {
        format!(
            "applied time {at} is more than {} ahead of the server's clock (accepted up to {latest})",
            humantime::format_duration(MAX_FUTURE)
        )
    } else {
        return Ok(());
    };
    Err(AppError::InvalidRequest { reason })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(replicas: u32, at_ms: i64) -> Applied {
        Applied {
            replicas,
            at: Timestamp::from_millis(at_ms),
        }
    }

    #[test]
    fn the_newest_report_wins_and_only_a_new_count_is_saved() {
        assert_eq!(compare_to_held(None, report(3, 10)), Newer::NewReplicas);
        let held = Some(report(3, 10));
        assert_eq!(compare_to_held(held, report(4, 9)), Newer::No);
        assert_eq!(compare_to_held(held, report(3, 20)), Newer::SameReplicas);
        assert_eq!(compare_to_held(held, report(4, 10)), Newer::NewReplicas);
    }
}
