//! Fleet mode across changes of the members, with no call failing for them. A replica joins as
//! joining, plans the share it will own (its warm-up) while the current owners keep serving it,
//! then turns active. While views differ for a moment (an old owner has seen the new one active,
//! the new one not yet, or the reverse), a forwarded call that reaches a replica holding a fresh
//! plan of the workload is answered from it rather than refused. And a replica that has lost etcd
//! (stepped down) keeps answering for what it owned in its last view from the plans it holds,
//! read-only: it plans nothing and refuses fleet-wide writes until it has registered again.
//! Design: docs/decisions.md, "Fleet mode: replicas coordinated through etcd".

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::app::AppError;
use crate::fleet::{Coordinator, FleetView, MemberState};

use super::fleet_workloads::WORKLOADS_TABLE;
use super::{Placement, PlanState, ServingState};

/// How often the warm-up looks at the workloads and plans it waits for.
const WARM_POLL: Duration = Duration::from_millis(200);

impl ServingState {
    /// Whether this replica is in a fleet and has lost etcd: it serves its last plans read-only.
    pub fn fleet_read_only(&self) -> bool {
        self.fleet
            .get()
            .is_some_and(|coordinator| coordinator.view().borrow().is_read_only())
    }

    /// The coordinator through which fleet-wide write `operation` (`UpsertWorkload`,
    /// `AddEvent`, ...) goes: `None` when this replica runs alone. Refused with
    /// [`AppError::FleetReadOnly`] while this replica serves read-only, before anything is asked
    /// of etcd, so that every such write says so alike.
    pub(super) fn fleet_writer(
        &self,
        operation: &'static str,
    ) -> Result<Option<&Arc<dyn Coordinator>>, AppError> {
        match self.fleet.get() {
            Some(coordinator) if coordinator.view().borrow().is_read_only() => {
                Err(AppError::FleetReadOnly {
                    member: coordinator.member_id().to_owned(),
                    operation,
                })
            }
            coordinator => Ok(coordinator),
        }
    }

    /// Where a call about workload `name` is answered, `forwarded` here by another replica or
    /// not: the routing of every call about a workload (its plan, its plan stream, its status, the
    /// report of what runs, the KEDA scaler's calls). As [`ServingState::workload_placement`]
    /// (nowhere while its owner refills its series), except that a forwarded call about work
    /// another member owns in this replica's view is answered here when this replica holds a fresh
    /// plan of it: the sender's view and this one differ while the members change (this replica
    /// has just lost the workload, or has just warmed it and not yet seen itself active), and the
    /// plan held is the one the owner serves or has just served.
    pub fn answering_placement(&self, name: &str, forwarded: bool) -> Result<Placement, AppError> {
        let placement = self.workload_placement(name)?;
        if forwarded && matches!(placement, Placement::Remote(_)) && self.holds_fresh_plan(name) {
            return Ok(Placement::Local);
        }
        Ok(placement)
    }

    /// Whether workload `name` has a plan here computed within two replan intervals: one its
    /// owner (this replica then, or now) would still serve.
    fn holds_fresh_plan(&self, name: &str) -> bool {
        let Ok(state) = self.plan(name) else {
            return false;
        };
        let plan = match state {
            PlanState::Ready(plan)
            | PlanState::Failed {
                last: Some(plan), ..
            } => plan,
            PlanState::Pending | PlanState::Failed { last: None, .. } => return false,
        };
        let fresh_for =
            i64::try_from(self.settings.replan_interval.as_millis() * 2).unwrap_or(i64::MAX);
        self.now().as_millis() - plan.generated_at.as_millis() <= fresh_for
    }

    /// Sets the fleet gauges of `/metrics` from `view`.
    pub(super) fn record_fleet(&self, view: &FleetView) {
        self.metrics.set_fleet(
            view.incarnation.is_some(),
            view.is_read_only(),
            view.is_joining(),
        );
    }

    /// Turns this replica, registered as joining, active once it has planned the share it will
    /// own: the fleet's workloads are read and held here, every workload whose series it will own
    /// is planned (the planner and the source followers take them while it warms), and then its
    /// member key says active, so the others hand those workloads over with a plan ready here.
    /// After `timeout` it turns active anyway (the workloads not yet planned answer "pending"
    /// until they are). Registered again as joining after losing its lease meanwhile, it warms
    /// again. Ends once active, or on shutdown.
    pub async fn warm_then_activate(
        self: Arc<Self>,
        coordinator: Arc<dyn Coordinator>,
        timeout: Duration,
    ) {
        let mut view = coordinator.view();
        loop {
            let (joining, active) = {
                let current = view.borrow_and_update();
                let active = current.incarnation.is_some()
                    && current
                        .self_member()
                        .is_some_and(|member| member.info.state == MemberState::Active);
                (current.is_joining(), active)
            };
            if active {
                return;
            }
            if joining {
                let deadline = Instant::now() + timeout;
                let warmed = self.warm(coordinator.as_ref(), deadline).await;
                match coordinator.activate().await {
                    Ok(true) => {
                        tracing::info!(warmed, "warmed the fleet share; active");
                        return;
                    }
                    Ok(false) => {
                        tracing::warn!("the fleet lease was lost while warming; warming again")
                    }
                    Err(error) => tracing::warn!(%error, "turning active failed; retrying"),
                }
            }
            tokio::select! {
                () = self.shutdown.cancelled() => return,
                changed = view.changed() => if changed.is_err() { return },
                () = tokio::time::sleep(WARM_POLL * 5) => {}
            }
        }
    }

    /// Waits until the fleet's workloads are held here and those this replica will own have a
    /// plan, or `deadline`; returns how many it warmed.
    async fn warm(&self, coordinator: &dyn Coordinator, deadline: Instant) -> usize {
        let names = loop {
            match coordinator.records(WORKLOADS_TABLE).await {
                Ok((records, _)) => {
                    break records
                        .into_iter()
                        .map(|(name, _)| name)
                        .collect::<HashSet<_>>();
                }
                Err(error) if Instant::now() < deadline => {
                    tracing::warn!(%error, "reading the fleet's workloads to warm failed; retrying");
                }
                Err(_) => return 0,
            }
            if !self.pause_until(deadline).await {
                return 0;
            }
        };
        let mut waiting: Vec<String> = names.into_iter().collect();
        let mut warmed = 0;
        loop {
            let view = coordinator.view();
            let view = Arc::clone(&view.borrow());
            waiting.retain(|name| {
                let Ok(workload) = self.workload(name) else {
                    // Not yet applied from the fleet's table (or deleted meanwhile).
                    return view.is_joining();
                };
                if !view.warms(&workload.series().to_string()) {
                    return false;
                }
                let planned = matches!(self.plan(name), Ok(PlanState::Ready(_)));
                warmed += usize::from(planned);
                !planned
            });
            if waiting.is_empty() || !self.pause_until(deadline).await {
                return warmed;
            }
        }
    }

    /// Sleeps one poll, unless `deadline` has passed or the server shuts down (then `false`).
    async fn pause_until(&self, deadline: Instant) -> bool {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::select! {
            () = self.shutdown.cancelled() => false,
            () = tokio::time::sleep_until(deadline.min(Instant::now() + WARM_POLL)) => true,
        }
    }
}
