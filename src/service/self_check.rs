//! A joining replica's check of its own advertised address (`[fleet] advertise`): before it turns
//! active, and so before any other replica forwards a call to it, it calls its API at that
//! address as they will (over TLS verified with the fleet's CA when the API serves TLS) and asks
//! the gRPC health of its own member entry ([`member_health_service`]), which only this replica
//! answers `SERVING`. A wrong address (nothing listening, another server, another replica) would
//! otherwise fail every forwarded call about its share for as long as it runs. Design:
//! docs/decisions.md, "Fleet mode: replicas coordinated through etcd".

use std::time::Duration;

use tokio::time::Instant;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use super::ServiceError;
use super::fleet_status::member_health_service;
use super::forward::Forwarder;

/// Bound on each call of the check.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause between attempts (a new pod's DNS name may take a moment to resolve).
const RETRY: Duration = Duration::from_millis(500);

/// Checks that `address` reaches the API of this replica, member `member_id`, trying again until
/// `within` has passed; `peer_ca` (PEM) is the fleet's CA when the API serves TLS.
pub async fn check_advertised(
    address: &str,
    member_id: &str,
    peer_ca: Option<&[u8]>,
    within: Duration,
) -> Result<(), ServiceError> {
    let refused = |reason: String| ServiceError::AdvertiseUnreachable {
        address: address.to_owned(),
        member_id: member_id.to_owned(),
        reason,
    };
    let channel = Forwarder::to_apis(peer_ca, CALL_TIMEOUT)
        .channel(member_id, address)
        .map_err(|status| refused(status.message().to_owned()))?;
    let request = HealthCheckRequest {
        service: member_health_service(member_id),
    };
    let deadline = Instant::now() + within;
    loop {
        let asked = tokio::time::timeout(
            CALL_TIMEOUT,
            HealthClient::new(channel.clone()).check(request.clone()),
        )
        .await;
        let reason = match asked {
            Ok(Ok(answer)) if answer.get_ref().status() == ServingStatus::Serving => return Ok(()),
            Ok(Ok(answer)) => format!("it answers {:?} for this member", answer.get_ref().status()),
            Ok(Err(status)) if status.code() == Code::NotFound => {
                "another server answers there, which does not know this member".to_owned()
            }
            Ok(Err(status)) => format!("{:?}: {}", status.code(), status.message()),
            Err(_) => format!("no answer within {CALL_TIMEOUT:?}"),
        };
        if Instant::now() + RETRY >= deadline {
            return Err(refused(reason));
        }
        tracing::debug!(address, %reason, "the advertised address does not reach this replica yet; retrying");
        tokio::time::sleep(RETRY).await;
    }
}
