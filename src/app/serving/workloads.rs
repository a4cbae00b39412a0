//! Stored workloads: the workloads file in the data directory, each workload's entry with the live
//! state of its plan, and what its executor reported it runs.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::app::AppError;
use crate::domain::{SeriesId, Timestamp};
use crate::plan::{Workload, WorkloadParams};
use crate::simulate::RuleChoice;
use crate::store::{MAX_FUTURE, latest_accepted, write_file_atomically};

use super::{PlanState, ServingState};

/// Name of the workloads file in the data directory.
const WORKLOADS_FILE: &str = "workloads.toml";

/// What an executor reported it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    /// Replicas running.
    pub replicas: u32,
    /// When they were applied.
    pub at: Timestamp,
}

/// A workload and the live state of its plan.
#[derive(Debug)]
pub(super) struct WorkloadEntry {
    /// The workload as last upserted; replaced in place so watchers keep their channel.
    pub(super) workload: RwLock<Workload>,
    /// Publishes the plan state; `WatchPlans` streams subscribe to it, and dropping the entry
    /// (deleting the workload) ends them.
    pub(super) plan: watch::Sender<PlanState>,
    /// What the executor last reported it runs; the next plan starts from it.
    pub(super) applied: Mutex<Option<Applied>>,
    /// Samples of the workload's series stored since its last plan started.
    pub(super) new_samples: AtomicU64,
    /// Replan at the next opportunity (schedule tick, upsert, retrain).
    pub(super) due: AtomicBool,
    /// A refresh is running; another is not started until it ends.
    pub(super) in_flight: AtomicBool,
    /// Revision of the newest published plan (0 before the first).
    pub(super) revision: AtomicU64,
    /// The rule the workload's SLO chose from a live model's backtest, kept until the model or
    /// the workload changes.
    pub(super) rule: Mutex<Option<ChosenRule>>,
}

/// A rule chosen by a workload's SLO, with what it was chosen for.
#[derive(Debug)]
pub(super) struct ChosenRule {
    /// Registry version of the live model whose backtest it was chosen from.
    pub(super) model_version: u64,
    /// The workload as it was when chosen: an upsert that changes it chooses again.
    pub(super) workload: Workload,
    /// The choice (`None` without an SLO or without backtest folds).
    pub(super) choice: Option<RuleChoice>,
}

impl WorkloadEntry {
    /// A new entry, due for its first plan.
    pub(super) fn new(workload: Workload) -> Arc<Self> {
        Arc::new(Self {
            workload: RwLock::new(workload),
            plan: watch::Sender::new(PlanState::Pending),
            applied: Mutex::new(None),
            new_samples: AtomicU64::new(0),
            due: AtomicBool::new(true),
            in_flight: AtomicBool::new(false),
            revision: AtomicU64::new(0),
            rule: Mutex::new(None),
        })
    }
}

/// The `[[workload]]` tables of the workloads file.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct WorkloadsFile {
    /// One table per workload, in name order.
    #[serde(default)]
    workload: Vec<WorkloadParams>,
}

impl ServingState {
    /// Validates and stores a workload (replacing one of the same name) and schedules its plan; a
    /// workload with a source is refused while another pulls its series from another source.
    /// Blocking: writes the workloads file.
    pub fn upsert_workload(&self, workload: Workload) -> Result<Workload, AppError> {
        let mut workloads = self.workloads.write();
        let mut stored = others(&workloads, workload.name());
        if let Some(source) = workload.source()
            && let Some(other) = stored.iter().find(|other| {
                other.series() == workload.series()
                    && other
                        .source()
                        .is_some_and(|theirs| !theirs.reads_same_series(source))
            })
        {
            // Two sources filling one series would interleave two queries' points.
            return Err(AppError::InvalidRequest {
                reason: format!(
                    "source: series {} is already pulled by workload {:?} from another source; \
                     give this workload its own series",
                    workload.series(),
                    other.name()
                ),
            });
        }
        stored.push(workload.clone());
        write_workloads(&self.data_dir, &stored)?;
        match workloads.get(workload.name()) {
            Some(entry) => {
                *entry.workload.write() = workload.clone();
                entry.due.store(true, Ordering::Release);
            }
            None => {
                workloads.insert(
                    workload.name().to_owned(),
                    WorkloadEntry::new(workload.clone()),
                );
            }
        }
        drop(workloads);
        self.replan.notify_one();
        self.sources_changed.notify_one();
        Ok(workload)
    }

    /// A stored workload.
    pub fn workload(&self, name: &str) -> Result<Workload, AppError> {
        Ok(self.entry(name)?.workload.read().clone())
    }

    /// Every stored workload, by name.
    pub fn workloads(&self) -> Vec<Workload> {
        self.workloads
            .read()
            .values()
            .map(|entry| entry.workload.read().clone())
            .collect()
    }

    /// Deletes a workload; its watch streams end. Blocking: writes the workloads file.
    pub fn delete_workload(&self, name: &str) -> Result<(), AppError> {
        let mut workloads = self.workloads.write();
        if !workloads.contains_key(name) {
            return Err(unknown_workload(name));
        }
        write_workloads(&self.data_dir, &others(&workloads, name))?;
        workloads.remove(name);
        self.metrics.forget_workload(name);
        self.sources_changed.notify_one();
        Ok(())
    }

    /// The stored entry of workload `name`.
    pub(super) fn entry(&self, name: &str) -> Result<Arc<WorkloadEntry>, AppError> {
        self.workloads
            .read()
            .get(name)
            .cloned()
            .ok_or_else(|| unknown_workload(name))
    }

    /// Names of every workload.
    pub fn workload_names(&self) -> Vec<String> {
        self.workloads.read().keys().cloned().collect()
    }

    /// Records what the executor of `name` runs; later plans start from it. A report time before
    /// the epoch, or ahead of the clock by more than the store allows a sample ([`MAX_FUTURE`]), is
    /// refused: the scaler takes a report newer than the value it served as what runs now, so a
    /// report from the future would stand until the clock passed it.
    pub fn report_applied(&self, name: &str, applied: Applied) -> Result<(), AppError> {
        check_applied_time(applied.at, self.now())?;
        let entry = self.entry(name)?;
        *entry.applied.lock() = Some(applied);
        Ok(())
    }

    /// What the executor of `name` last reported.
    pub fn applied(&self, name: &str) -> Result<Option<Applied>, AppError> {
        Ok(*self.entry(name)?.applied.lock())
    }

    /// Schedules a replan of every workload on `series` (its live model changed).
    pub(super) fn mark_due(&self, series: &SeriesId) {
        for entry in self.workloads.read().values() {
            if entry.workload.read().series() == series {
                entry.due.store(true, Ordering::Release);
            }
        }
    }

    /// Schedules a replan of every workload (an event changed, and its uplift may apply to any).
    pub(super) fn mark_all_due(&self) {
        for entry in self.workloads.read().values() {
            entry.due.store(true, Ordering::Release);
        }
        self.replan.notify_one();
    }
}

/// Every stored workload but the one called `name`.
fn others(workloads: &BTreeMap<String, Arc<WorkloadEntry>>, name: &str) -> Vec<Workload> {
    workloads
        .iter()
        .filter(|(key, _)| key.as_str() != name)
        .map(|(_, entry)| entry.workload.read().clone())
        .collect()
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

/// The error for a workload that does not exist.
pub(super) fn unknown_workload(name: &str) -> AppError {
    AppError::NotFound {
        kind: "workload",
        name: name.to_owned(),
    }
}

/// The workloads stored in `dir`, each checked; none when there is no workloads file.
pub(super) fn read_workloads(dir: &std::path::Path) -> Result<Vec<Workload>, AppError> {
    let path = dir.join(WORKLOADS_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(AppError::Input { path, source }),
    };
    let file: WorkloadsFile = toml::from_str(&text).map_err(|error| AppError::InvalidRequest {
        reason: format!("{}: {error}", path.display()),
    })?;
    file.workload
        .into_iter()
        .map(|params| Ok(params.check()?))
        .collect()
}

/// Replaces the workloads file in `dir` with `workloads`, atomically.
fn write_workloads(dir: &std::path::Path, workloads: &[Workload]) -> Result<(), AppError> {
    std::fs::create_dir_all(dir).map_err(|source| AppError::Output {
        path: dir.to_owned(),
        source,
    })?;
    let file = WorkloadsFile {
        workload: workloads.iter().map(WorkloadParams::from).collect(),
    };
    let text = toml::to_string(&file).map_err(|error| AppError::InvalidRequest {
        reason: format!("cannot encode workloads: {error}"),
    })?;
    write_file_atomically(dir, WORKLOADS_FILE, text.as_bytes())?;
    Ok(())
}
