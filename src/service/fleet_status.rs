//! How a replica says its fleet state to clients and probes: the gRPC health service's
//! [`FLEET_HEALTH_SERVICE`] entry follows the fleet view, and a plan served read-only (the
//! replica has lost etcd) carries `read_only`. The server's overall health (the empty service
//! name, which Kubernetes probes ask) is `NOT_SERVING` only while the replica joins, and stays
//! `SERVING` while read-only: the replica still answers
//! every plan it holds, and an etcd outage reaches every replica at once, so failing the
//! readiness probe would take the whole fleet out of its Service and turn a degraded state into
//! an outage, and failing liveness would restart pods that are serving. Design:
//! docs/decisions.md, "Fleet mode: replicas coordinated through etcd".

use std::sync::Arc;

use prost::bytes::{Bytes, BytesMut};
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use super::proto;
use crate::app::ServingState;
use crate::fleet::FleetView;

/// The health service name of this replica's fleet membership: `SERVING` while it is an active
/// member holding its etcd lease, `NOT_SERVING` while it is joining (warming its share) or has
/// lost etcd and serves read-only. Set only in fleet mode.
pub const FLEET_HEALTH_SERVICE: &str = "prescale.v1.Fleet";

/// The health entry naming member `member_id`: `SERVING` on that member's API for as long as it
/// runs in a fleet, so a replica can tell that an address reaches it and not another server (see
/// [`check_advertised`](super::check_advertised)).
pub fn member_health_service(member_id: &str) -> String {
    format!("{FLEET_HEALTH_SERVICE}/{member_id}")
}

/// Sets the health of [`FLEET_HEALTH_SERVICE`] and of the server as a whole (`""`) from `view`.
/// The server is `NOT_SERVING` only while joining: a readiness probe keeps a new replica out of
/// its Service until it has warmed its share and turned active (it does not even know the
/// fleet's workloads at first). Read-only, it stays `SERVING` (see the module's doc).
async fn set_fleet_health(health: &HealthReporter, view: &FleetView) {
    let active = view.incarnation.is_some() && !view.is_joining();
    let status = |serving: bool| {
        if serving {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        }
    };
    health
        .set_service_status(FLEET_HEALTH_SERVICE, status(active))
        .await;
    health
        .set_service_status("", status(!view.is_joining()))
        .await;
}

/// Sets the fleet health from the current view, and returns a task that keeps it current until
/// shutdown; in a replica running alone, sets nothing and the task ends at once.
pub(super) async fn follow_fleet_health(
    health: HealthReporter,
    state: Arc<ServingState>,
) -> tokio::task::JoinHandle<()> {
    let Some(mut view) = state.fleet_view() else {
        return tokio::spawn(async {});
    };
    let current = Arc::clone(&view.borrow_and_update());
    health
        .set_service_status(
            member_health_service(&current.self_id),
            ServingStatus::Serving,
        )
        .await;
    set_fleet_health(&health, &current).await;
    let shutdown = state.shutdown_token().clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                changed = view.changed() => if changed.is_err() { return },
            }
            let current = Arc::clone(&view.borrow_and_update());
            if shutdown.is_cancelled() {
                return;
            }
            set_fleet_health(&health, &current).await;
        }
    })
}

/// `plan`, an encoded `Plan`, with `read_only` set. Protobuf merges a message's encodings when
/// they are concatenated, so the cached encoding is reused and only the flag is appended.
pub(super) fn marked_read_only(plan: Bytes) -> Bytes {
    let flag = prost::Message::encode_to_vec(&proto::Plan {
        read_only: true,
        ..Default::default()
    });
    let mut marked = BytesMut::with_capacity(plan.len() + flag.len());
    marked.extend_from_slice(&plan);
    marked.extend_from_slice(&flag);
    marked.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_marked_plan_decodes_as_the_same_plan_read_only() {
        let plan = proto::Plan {
            workload: "checkout".to_owned(),
            revision: 7,
            generated_at_ms: 1_700_000_000_000,
            ..Default::default()
        };
        let bytes = Bytes::from(prost::Message::encode_to_vec(&plan));
        let decoded: proto::Plan = prost::Message::decode(marked_read_only(bytes)).unwrap();
        assert_eq!(
            decoded,
            proto::Plan {
                read_only: true,
                ..plan
            }
        );
    }
}
