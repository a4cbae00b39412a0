//! Stored workloads: the workloads file in the data directory, each workload's entry with the live
//! state of its plan, and what its executor reported it runs.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::app::AppError;
use crate::domain::SeriesId;
use crate::plan::{Workload, WorkloadParams};
use crate::simulate::RuleChoice;
use crate::store::write_file_atomically;

use super::{Applied, PlanState, ServingState};

/// Name of the workloads file in the data directory.
const WORKLOADS_FILE: &str = "workloads.toml";

/// A workload and the live state of its plan.
#[derive(Debug)]
pub(super) struct WorkloadEntry {
    /// The workload as last upserted; replaced in place so watchers keep their channel.
    pub(super) workload: RwLock<Workload>,
    /// Publishes the plan state; `WatchPlans` streams subscribe to it, and dropping the entry
    /// (deleting the workload) ends them.
    pub(super) plan: watch::Sender<PlanState>,
    /// What the executor last reported it runs (the newest report, by its time); the next plan
    /// starts from it.
    pub(super) applied: Mutex<Option<Applied>>,
    /// In a fleet, whether the report the fleet holds has been read since this replica last
    /// gained the workload (see `fleet_applied`); cleared when it loses the workload.
    pub(super) fleet_applied_read: AtomicBool,
    /// In a fleet, held while a report is written to etcd and then here, so that the reports of
    /// one workload are recorded one at a time and etcd ends with the newest.
    pub(super) reporting: tokio::sync::Mutex<()>,
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
            fleet_applied_read: AtomicBool::new(false),
            reporting: tokio::sync::Mutex::new(()),
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

    /// Deletes a workload and its report of applied replicas; its watch streams end. Blocking:
    /// writes the workloads file (and, alone, the applied file).
    pub fn delete_workload(&self, name: &str) -> Result<(), AppError> {
        let mut workloads = self.workloads.write();
        if !workloads.contains_key(name) {
            return Err(unknown_workload(name));
        }
        write_workloads(&self.data_dir, &others(&workloads, name))?;
        if let Some(removed) = workloads.remove(name) {
            self.forget_saved_applied(&workloads, name, &removed);
        }
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

/// The error for a workload that does not exist.
pub(super) fn unknown_workload(name: &str) -> AppError {
    AppError::NotFound {
        kind: "workload",
        name: name.to_owned(),
    }
}

/// The workloads stored in `dir`, each checked; none when there is no workloads file.
pub(super) fn read_workloads(dir: &std::path::Path) -> Result<Vec<Workload>, AppError> {
    let file: WorkloadsFile = read_toml_file(dir, WORKLOADS_FILE)?;
    file.workload
        .into_iter()
        .map(|params| Ok(params.check()?))
        .collect()
}

/// Replaces the workloads file in `dir` with `workloads`, atomically.
fn write_workloads(dir: &std::path::Path, workloads: &[Workload]) -> Result<(), AppError> {
    let file = WorkloadsFile {
        workload: workloads.iter().map(WorkloadParams::from).collect(),
    };
    write_toml_file(dir, WORKLOADS_FILE, &file, "workloads")
}

/// File `name` in the data directory `dir`, decoded from TOML; the default when there is none.
pub(super) fn read_toml_file<T>(dir: &std::path::Path, name: &str) -> Result<T, AppError>
where
    T: serde::de::DeserializeOwned + Default,
{
    let path = dir.join(name);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(T::default()),
        Err(source) => return Err(AppError::Input { path, source }),
    };
    toml::from_str(&text).map_err(|error| AppError::InvalidRequest {
        reason: format!("{}: {error}", path.display()),
    })
}

/// Replaces file `name` in the data directory `dir` (created if need be) with `value` as TOML,
/// atomically; `what` names the content in an encoding error.
pub(super) fn write_toml_file(
    dir: &std::path::Path,
    name: &str,
    value: &impl Serialize,
    what: &str,
) -> Result<(), AppError> {
    std::fs::create_dir_all(dir).map_err(|source| AppError::Output {
        path: dir.to_owned(),
        source,
    })?;
    let text = toml::to_string(value).map_err(|error| AppError::InvalidRequest {
        reason: format!("cannot encode {what}: {error}"),
    })?;
    write_file_atomically(dir, name, text.as_bytes())?;
    Ok(())
}
