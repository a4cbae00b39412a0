//! Fleet mode in the serving state: with a [`Coordinator`] joined, this replica plans and follows
//! the sources of only the workloads whose series it owns, re-syncs when the members change, and
//! tells the service where a call for another replica's work goes. Without one (the default) it
//! owns everything. Design: docs/decisions.md, "Fleet mode: replicas coordinated through etcd".

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::watch;

use crate::domain::SeriesId;
use crate::fleet::{Coordinator, FleetView, Member, Route};

use super::ServingState;
use crate::app::AppError;

/// Where a call about a series (or the workload on it) is answered. Two placements are equal when
/// calls go to the same place: a member is the same place across its incarnations (registered
/// again with a new lease, as after an etcd outage, it keeps its id and addresses), and nowhere is
/// nowhere whatever the reason.
#[derive(Debug, Clone)]
pub enum Placement {
    /// Here: this replica owns it, or runs alone.
    Local,
    /// On another member, to which the call is forwarded.
    Remote(Member),
    /// Nowhere now, for the reason given.
    Unavailable(Unavailable),
}

/// Why no replica answers a call now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unavailable {
    /// No member is active, or the owner has stepped down. (A replica that has stepped down
    /// answers for what it owned in its last view itself, read-only: [`Placement::Local`].)
    NoActiveMember,
    /// `member`, the owner, gained the series in a handover and is loading its history from the
    /// fleet's TSDB; it answers once it has.
    Refilling {
        /// The owner's member id.
        member: String,
    },
}

impl std::fmt::Display for Unavailable {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NoActiveMember => formatter.write_str(
                "no replica of the fleet serves this now (its owner stepped down, or no member is active); retry",
            ),
            Self::Refilling { member } => write!(
                formatter,
                "member {member} owns this series and is loading its history from the fleet's tsdb after a handover; retry"
            ),
        }
    }
}

impl PartialEq for Placement {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Local, Self::Local) | (Self::Unavailable(_), Self::Unavailable(_)) => true,
            (Self::Remote(member), Self::Remote(other)) => {
                member.id == other.id && member.info == other.info
            }
            _ => false,
        }
    }
}

impl Eq for Placement {}

impl ServingState {
    /// Joins the fleet `coordinator` runs: from now on this replica plans only what it owns.
    /// Returns `false` (and changes nothing) when it had joined one already.
    pub fn join_fleet(&self, coordinator: Arc<dyn Coordinator>) -> bool {
        let joined = self.fleet.set(coordinator).is_ok();
        if joined {
            self.drop_reports_held_alone();
            self.resync_ownership();
        }
        joined
    }

    /// The fleet's view as this replica sees it, and every change; `None` when it runs alone.
    pub fn fleet_view(&self) -> Option<watch::Receiver<Arc<FleetView>>> {
        self.fleet.get().map(|coordinator| coordinator.view())
    }

    /// Where a call about `series` is answered: nowhere while this replica, its owner, refills it
    /// from the TSDB ([`Unavailable::Refilling`]).
    pub fn placement(&self, series: &SeriesId) -> Placement {
        match (self.write_placement(series), self.fleet.get()) {
            (Placement::Local, Some(coordinator)) if self.refilling(series) => {
                Placement::Unavailable(Unavailable::Refilling {
                    member: coordinator.member_id().to_owned(),
                })
            }
            (placement, _) => placement,
        }
    }

    /// Where samples of `series` are written: its owner, even while it refills the series (the
    /// samples go to the TSDB first, so the refill reads them too).
    pub fn write_placement(&self, series: &SeriesId) -> Placement {
        let Some(coordinator) = self.fleet.get() else {
            return Placement::Local;
        };
        let view = coordinator.view();
        let view = view.borrow();
        let key = series.to_string();
        match view.route(&key) {
            Route::Local => Placement::Local,
            Route::Forward(member) => Placement::Remote(member.clone()),
            // Stepped down: answered from the plans held here, read-only (see `fleet_handover`).
            Route::Unavailable if view.holds_read_only(&key) => Placement::Local,
            Route::Unavailable => Placement::Unavailable(Unavailable::NoActiveMember),
        }
    }

    /// Where a call about workload `name` is answered: where its series is.
    pub fn workload_placement(&self, name: &str) -> Result<Placement, AppError> {
        let series = self.entry(name)?.workload.read().series().clone();
        Ok(self.placement(&series))
    }

    /// Whether this replica works on `series` (plans it, follows its source): it owns it and holds
    /// its lease, or it is joining and will own it (its warm-up). Read-only, it works on nothing.
    pub(super) fn owns(&self, series: &SeriesId) -> bool {
        let Some(coordinator) = self.fleet.get() else {
            return true;
        };
        let view = coordinator.view();
        let view = view.borrow();
        let key = series.to_string();
        view.owns(&key) || view.warms(&key)
    }

    /// Whether this replica owns `series` now and holds its lease (alone: always); unlike
    /// [`ServingState::owns`], not while it only warms it to own it.
    pub(super) fn owns_now(&self, series: &SeriesId) -> bool {
        self.fleet
            .get()
            .is_none_or(|coordinator| coordinator.view().borrow().owns(&series.to_string()))
    }

    /// Re-syncs with the fleet until shutdown: follows the fleet's workloads, and each change of
    /// the members makes every workload due (the planner skips those owned elsewhere) and
    /// reconciles the source followers. On shutdown, leaves the fleet so the others take over at
    /// once.
    pub async fn run_fleet(self: Arc<Self>) {
        let Some(coordinator) = self.fleet.get().cloned() else {
            return;
        };
        let workloads = Arc::clone(&self).sync_workloads(Arc::clone(&coordinator));
        let models = Arc::clone(&self).follow_model_pointers();
        let events = Arc::clone(&self).sync_events(Arc::clone(&coordinator));
        let refills = Arc::clone(&self).run_refills();
        let ownership = async {
            let mut view = coordinator.view();
            self.record_fleet(&view.borrow_and_update());
            loop {
                tokio::select! {
                    () = self.shutdown.cancelled() => break,
                    changed = view.changed() => if changed.is_err() { break },
                }
                self.record_fleet(&view.borrow_and_update());
                self.resync_ownership();
            }
        };
        tokio::join!(workloads, events, refills, ownership, models);
        coordinator.leave().await;
    }

    /// Whether this replica shows the series of workloads on `series` on its `/metrics` (their
    /// plan gauges, their source's error counters): it plans them (it owns them, or warms them to
    /// own them), or answers for them read-only. Elsewhere their owner shows them.
    pub(super) fn shows_workload_metrics(&self, series: &SeriesId) -> bool {
        self.owns(series) || self.write_placement(series) == Placement::Local
    }

    /// Removes the series of the workloads this replica no longer shows (see
    /// [`ServingState::shows_workload_metrics`]). Under the workloads' write lock: a plan
    /// published or a source error counted meanwhile is recorded under their read lock after the
    /// same check, so its series is either removed here or never recorded.
    fn forget_unowned_workload_metrics(&self) {
        let workloads = self.workloads.write();
        for (name, entry) in workloads.iter() {
            if !self.shows_workload_metrics(entry.workload.read().series()) {
                self.metrics.forget_workload(name);
            }
        }
    }

    fn resync_ownership(&self) {
        self.forget_unowned_models();
        self.forget_unowned_workload_metrics();
        self.forget_unowned_reports();
        if self.note_gained_series() {
            self.refill_wake.notify_one();
        }
        for entry in self.workloads.read().values() {
            entry.due.store(true, Ordering::Release);
        }
        self.replan.notify_one();
        self.sources_changed.notify_one();
    }
}
