//! Fleet mode: several `prescale serve` replicas share the workloads through etcd. Each replica
//! holds a member key on a lease; every replica watches the members and computes who owns each
//! series by rendezvous hashing, so there is no leader and no coordination of our own. Design:
//! docs/decisions.md, "Fleet mode: replicas coordinated through etcd".

pub mod etcd;
mod handover;
mod identity;
mod membership;
mod ownership;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

pub use identity::fleet_id;
pub use membership::{EtcdCoordinator, MembershipSettings};
pub use ownership::{FleetView, Member, MemberInfo, MemberState, Route};

/// A replica's membership in a fleet: the live members as it sees them and writes fenced by its
/// membership. etcd backs it today ([`EtcdCoordinator`]); a Kubernetes-Lease backend would be a
/// second implementation.
pub trait Coordinator: Send + Sync + std::fmt::Debug {
    /// This replica's id.
    fn member_id(&self) -> &str;

    /// The latest [`FleetView`], and every change after it.
    fn view(&self) -> watch::Receiver<Arc<FleetView>>;

    /// How long after a change of the members is committed any replica may still act on its view
    /// from before it (take pushes for a series that moved away): one that reaches the
    /// coordination service learns of the change through its watch, and one that does not steps
    /// down (read-only) within this of its last renewal, which came before the change.
    fn stale_view_bound(&self) -> Duration;

    /// Applies `ops` only if this replica is still the member it was in its latest view (its member
    /// key has the same create revision) and no member joined after that view: a replica that lost
    /// its lease, or decided on a stale view, has its write refused. Returns whether it applied,
    /// and what its deletes deleted.
    fn fenced_write<'a>(
        &'a self,
        ops: &'a [etcd::Op],
    ) -> Pin<Box<dyn Future<Output = Result<FencedWrite, FleetError>> + Send + 'a>> {
        self.fenced_write_if(&[], ops)
    }

    /// [`Coordinator::fenced_write`] that also requires every compare of `conditions` to hold in
    /// the same transaction (a report of applied replicas requires its workload's record), so a
    /// write refused may have failed either; the caller reads what it needs to tell which.
    fn fenced_write_if<'a>(
        &'a self,
        conditions: &'a [etcd::Compare],
        ops: &'a [etcd::Op],
    ) -> Pin<Box<dyn Future<Output = Result<FencedWrite, FleetError>> + Send + 'a>>;

    /// Turns this replica from joining to active (its member key's state, on the same lease and
    /// incarnation), once it has warmed its share. Returns `false` when it is no longer the member
    /// it registered as (its lease was lost meanwhile); it then registers again, still joining.
    fn activate(&self) -> BoxFuture<'_, Result<bool, FleetError>>;

    /// Leaves the fleet: stops renewing and revokes the lease, so the others take over at once.
    fn leave(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>>;

    /// The key of record `name` of the fleet-wide table `table` (`workloads`), for
    /// [`Coordinator::fenced_write`].
    fn record_key(&self, table: &str, name: &str) -> String;

    /// Record `name` of `table`, if there is one.
    fn record<'a>(
        &'a self,
        table: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<Vec<u8>>, FleetError>> {
        Box::pin(async move {
            let record = self.record_with_revision(table, name).await?;
            Ok(record.map(|(value, _)| value))
        })
    }

    /// Record `name` of `table` and its modification revision, for a write that must not undo a
    /// change made after the read (`etcd::Compare::ModRevisionBelow` the revision + 1).
    fn record_with_revision<'a>(
        &'a self,
        table: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<RevisedRecord>, FleetError>>;

    /// Every record of `table` by name, and the revision they were read at.
    fn records<'a>(&'a self, table: &'a str) -> BoxFuture<'a, Result<Records, FleetError>>;

    /// The changes of `table` after `revision`.
    fn watch_records<'a>(
        &'a self,
        table: &'a str,
        revision: i64,
    ) -> BoxFuture<'a, Result<RecordWatch, FleetError>>;
}

/// The etcd key of record `name` of fleet-wide table `table` in the fleet under `prefix` (what
/// [`Coordinator::record_key`] gives), for a tool that is not a member.
pub fn record_key(prefix: &str, table: &str, name: &str) -> String {
    format!("{prefix}{table}/{name}")
}

/// What a [`Coordinator::fenced_write`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FencedWrite {
    /// The fence held and the ops were applied, in one transaction.
    Applied {
        /// Keys its deletes deleted: the number that existed in etcd at that revision, so a
        /// delete tells whether there was anything to delete.
        deleted: u64,
    },
    /// The writer is no longer the member of its view, or a member joined after that view, or a
    /// condition of [`Coordinator::fenced_write_if`] did not hold: nothing was applied.
    Refused,
}

impl FencedWrite {
    /// Whether the ops were applied.
    pub fn applied(self) -> bool {
        matches!(self, Self::Applied { .. })
    }
}

/// A boxed future of the [`Coordinator`]'s calls.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The records of a fleet-wide table by name, and the revision they were read at.
pub type Records = (Vec<(String, Vec<u8>)>, i64);

/// A record's value and its modification revision.
pub type RevisedRecord = (Vec<u8>, i64);

/// A change of a fleet-wide table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordChange {
    /// Record `name` was written.
    Put {
        /// The record's name.
        name: String,
        /// Its value.
        value: Vec<u8>,
    },
    /// Record `name` was deleted.
    Delete {
        /// The record's name.
        name: String,
    },
}

/// The changes of one fleet-wide table, as they happen.
#[derive(Debug)]
pub struct RecordWatch {
    /// The etcd watch on the table's prefix.
    watch: etcd::Watch,
    /// The prefix, stripped from keys.
    prefix: String,
}

impl RecordWatch {
    fn new(watch: etcd::Watch, prefix: String) -> Self {
        Self { watch, prefix }
    }

    /// The next batch of changes, in revision order; an error when the watch ended (read the
    /// table again).
    pub async fn next(&mut self) -> Result<Vec<RecordChange>, FleetError> {
        let events = self.watch.next().await?;
        Ok(events
            .into_iter()
            .filter_map(|event| match event {
                etcd::WatchEvent::Put(entry) => Some(RecordChange::Put {
                    name: entry.key.strip_prefix(&self.prefix)?.to_owned(),
                    value: entry.value,
                }),
                etcd::WatchEvent::Delete { key, .. } => Some(RecordChange::Delete {
                    name: key.strip_prefix(&self.prefix)?.to_owned(),
                }),
            })
            .collect())
    }
}

/// Errors of the fleet: reaching etcd, and what it answers.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// An etcd endpoint is not a valid URL.
    #[error("etcd endpoint {endpoint:?} is invalid: {reason}")]
    Endpoint {
        /// The endpoint as configured.
        endpoint: String,
        /// What is wrong with it.
        reason: String,
    },
    /// No etcd endpoint answered at start.
    #[error("etcd is unreachable at {endpoints}: {reason}")]
    Unreachable {
        /// The endpoints tried, comma-separated.
        endpoints: String,
        /// The last failure.
        reason: String,
    },
    /// etcd refused or failed a call.
    #[error("etcd {operation} failed ({code:?}): {message}")]
    Etcd {
        /// The call.
        operation: &'static str,
        /// Its gRPC status code.
        code: tonic::Code,
        /// etcd's message.
        message: String,
    },
    /// A call got no answer in time.
    #[error("etcd {operation} timed out after {after:?}")]
    Timeout {
        /// The call.
        operation: &'static str,
        /// The bound.
        after: Duration,
    },
    /// A stream to etcd ended.
    #[error("the etcd {stream} stream closed")]
    StreamClosed {
        /// Which stream.
        stream: &'static str,
    },
    /// The lease expired (or was revoked) before it was renewed.
    #[error("etcd lease {lease:x} has expired")]
    LeaseExpired {
        /// The lease id.
        lease: i64,
    },
    /// A live member already has this replica's id.
    #[error("fleet member id {member_id:?} is taken by a live member")]
    MemberIdTaken {
        /// The id.
        member_id: String,
    },
    /// The operating system's random source failed (making the fleet's id).
    #[error("the operating system's random source failed")]
    Random,
    /// A key or value read from etcd does not decode.
    #[error("cannot decode {what} from etcd: {reason}")]
    Decode {
        /// What was read.
        what: String,
        /// Why it does not decode.
        reason: String,
    },
}
