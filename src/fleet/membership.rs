//! Membership through etcd: a replica puts `<prefix>members/<id>` = [`MemberInfo`] on a lease,
//! renews the lease every third of its TTL, and watches the members prefix; every change publishes
//! a new [`FleetView`]. A replica whose renewals have failed for longer than the step-down deadline
//! (shorter than the TTL, as client-go's RenewDeadline is shorter than its LeaseDuration) steps down
//! before etcd can expire its key and another replica take its series: it stops writing and answers
//! `UNAVAILABLE` for its own work, then registers again (a new incarnation) once etcd answers.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::etcd::{Compare, Entry, Etcd, KeepAlive, Op, Watch, WatchEvent, prefix_end};
use super::ownership::{FleetView, Member, MemberInfo, MemberState};
use super::{BoxFuture, Coordinator, FencedWrite, FleetError, RecordWatch, Records, RevisedRecord};

/// How a replica takes part in the fleet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MembershipSettings {
    /// The etcd key prefix of this fleet (`/prescale/`); members live under `<prefix>members/`.
    pub prefix: String,
    /// This replica's id, unique in the fleet.
    pub member_id: String,
    /// What it publishes.
    pub info: MemberInfo,
    /// The lease TTL: how long after its last renewal a silent replica stays a member.
    pub lease_ttl: Duration,
}

impl MembershipSettings {
    /// The prefix of every member key.
    pub fn members_prefix(&self) -> String {
        format!("{}members/", self.prefix)
    }

    fn member_key(&self) -> String {
        format!("{}{}", self.members_prefix(), self.member_id)
    }

    /// How often the lease is renewed: a third of its TTL.
    fn renew_every(&self) -> Duration {
        self.lease_ttl / 3
    }

    /// How long renewals may fail before the replica steps down: four fifths of the TTL.
    pub fn step_down_after(&self) -> Duration {
        self.lease_ttl * 4 / 5
    }
}

/// A replica's membership in an etcd fleet; two background tasks keep it current until
/// [`Coordinator::leave`] or the stop token: one renews the lease (and steps down), one follows
/// the members. They are apart so that a slow etcd read never delays a step-down.
#[derive(Debug)]
pub struct EtcdCoordinator {
    /// The connection.
    etcd: Etcd,
    /// How it takes part.
    settings: MembershipSettings,
    /// The latest view, published by the background tasks.
    view: watch::Receiver<Arc<FleetView>>,
    /// What the tasks share; the lease is revoked on leave.
    shared: Arc<Mutex<Shared>>,
    /// Stops the background tasks.
    stop: CancellationToken,
}

/// The membership state both tasks update; each change is published as a new view.
#[derive(Debug)]
struct Shared {
    /// Live members by id.
    members: BTreeMap<String, Member>,
    /// The revision the member list reflects.
    revision: i64,
    /// This replica's incarnation (its member key's create revision) while registered and renewing.
    incarnation: Option<i64>,
    /// The current lease, 0 for none.
    lease: i64,
    /// The state this replica registers with: joining until [`Coordinator::activate`], then
    /// active (a registration after a step-down is active at once: it holds its share's plans).
    state: MemberState,
}

/// What the background tasks work with.
#[derive(Debug, Clone)]
struct Registration {
    etcd: Etcd,
    settings: MembershipSettings,
    publish: Arc<watch::Sender<Arc<FleetView>>>,
    shared: Arc<Mutex<Shared>>,
}

impl EtcdCoordinator {
    /// Registers this replica (its id must not be live already), reads the members and starts the
    /// tasks that renew the lease and follow the members until `stop`.
    pub async fn join(
        etcd: Etcd,
        settings: MembershipSettings,
        stop: CancellationToken,
    ) -> Result<(Arc<Self>, JoinHandle<()>), FleetError> {
        let (publish, view) = watch::channel(Arc::new(FleetView::default()));
        let shared = Arc::new(Mutex::new(Shared {
            members: BTreeMap::new(),
            revision: 0,
            incarnation: None,
            lease: 0,
            state: settings.info.state,
        }));
        let registration = Registration {
            etcd: etcd.clone(),
            settings: settings.clone(),
            publish: Arc::new(publish),
            shared: Arc::clone(&shared),
        };
        let keep_alive = registration.register().await?;
        let watch = registration.reload().await?;
        let renewing = registration.clone().renew_loop(keep_alive, stop.clone());
        let following = registration.follow_loop(watch, stop.clone());
        let task = tokio::spawn(async move {
            tokio::join!(renewing, following);
        });
        Ok((
            Arc::new(Self {
                etcd,
                settings,
                view,
                shared,
                stop,
            }),
            task,
        ))
    }
}

impl Coordinator for EtcdCoordinator {
    fn member_id(&self) -> &str {
        &self.settings.member_id
    }

    fn view(&self) -> watch::Receiver<Arc<FleetView>> {
        self.view.clone()
    }

    /// The lease TTL: the watch shares the connection the renewals go through, and a replica whose
    /// renewals fail steps down at [`MembershipSettings::step_down_after`] (4/5 of the TTL) after
    /// its last one, bounding each renewal attempt by that deadline.
    fn stale_view_bound(&self) -> Duration {
        self.settings.lease_ttl
    }

    fn fenced_write_if<'a>(
        &'a self,
        conditions: &'a [Compare],
        ops: &'a [Op],
    ) -> Pin<Box<dyn Future<Output = Result<FencedWrite, FleetError>> + Send + 'a>> {
        Box::pin(async move {
            let view = Arc::clone(&self.view.borrow());
            let Some(incarnation) = view.incarnation else {
                return Ok(FencedWrite::Refused);
            };
            let members = self.settings.members_prefix();
            let fence = [
                Compare::CreateRevisionEquals {
                    key: self.settings.member_key(),
                    revision: incarnation,
                },
                // Mod, not create: a member that turned active after the view (taking keys from
                // this writer) refuses the write as a member that joined after it does.
                Compare::ModRevisionBelowInRange {
                    range_end: String::from_utf8_lossy(&prefix_end(&members)).into_owned(),
                    key: members,
                    revision: view.revision + 1,
                },
            ];
            let compares: Vec<Compare> = fence
                .into_iter()
                .chain(conditions.iter().cloned())
                .collect();
            let outcome = self.etcd.txn(&compares, ops, &[]).await?;
            Ok(if outcome.succeeded {
                FencedWrite::Applied {
                    deleted: outcome.deleted,
                }
            } else {
                FencedWrite::Refused
            })
        })
    }

    fn activate(&self) -> BoxFuture<'_, Result<bool, FleetError>> {
        Box::pin(async move {
            let (incarnation, lease) = {
                let shared = self.shared.lock();
                (shared.incarnation, shared.lease)
            };
            let Some(incarnation) = incarnation else {
                return Ok(false);
            };
            let info = MemberInfo {
                state: MemberState::Active,
                ..self.settings.info.clone()
            };
            let key = self.settings.member_key();
            let outcome = self
                .etcd
                .txn(
                    &[Compare::CreateRevisionEquals {
                        key: key.clone(),
                        revision: incarnation,
                    }],
                    &[Op::Put {
                        key,
                        value: encode_info(&info)?,
                        lease,
                    }],
                    &[],
                )
                .await?;
            if outcome.succeeded {
                self.shared.lock().state = MemberState::Active;
                tracing::info!(member = %self.settings.member_id, incarnation, "active in the fleet");
            }
            Ok(outcome.succeeded)
        })
    }

    fn leave(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(async move {
            self.stop.cancel();
            let lease = std::mem::take(&mut self.shared.lock().lease);
            if lease != 0
                && let Err(error) = self.etcd.revoke(lease).await
            {
                tracing::warn!(%error, "revoking the fleet lease on leave failed; it expires by itself");
            }
        })
    }

    fn record_key(&self, table: &str, name: &str) -> String {
        super::record_key(&self.settings.prefix, table, name)
    }

    fn record_with_revision<'a>(
        &'a self,
        table: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<RevisedRecord>, FleetError>> {
        Box::pin(async move {
            let entry = self.etcd.get(&self.record_key(table, name)).await?;
            Ok(entry.map(|entry| (entry.value, entry.mod_revision)))
        })
    }

    fn records<'a>(&'a self, table: &'a str) -> BoxFuture<'a, Result<Records, FleetError>> {
        Box::pin(async move {
            let prefix = self.table_prefix(table);
            let (entries, revision) = self.etcd.get_prefix(&prefix).await?;
            let records = entries
                .into_iter()
                .filter_map(|entry| {
                    let name = entry.key.strip_prefix(&prefix)?.to_owned();
                    Some((name, entry.value))
                })
                .collect();
            Ok((records, revision))
        })
    }

    fn watch_records<'a>(
        &'a self,
        table: &'a str,
        revision: i64,
    ) -> BoxFuture<'a, Result<RecordWatch, FleetError>> {
        Box::pin(async move {
            let prefix = self.table_prefix(table);
            let watch = self.etcd.watch_prefix(&prefix, revision + 1).await?;
            Ok(RecordWatch::new(watch, prefix))
        })
    }
}

impl EtcdCoordinator {
    /// The prefix of fleet-wide table `table`.
    fn table_prefix(&self, table: &str) -> String {
        format!("{}{table}/", self.settings.prefix)
    }
}

impl Registration {
    /// Grants a lease and creates the member key on it, unless a live member has the same id. The
    /// new incarnation is not published until the members are read again ([`Self::reload`]), so a
    /// fenced write never rests on a view older than its writer.
    async fn register(&self) -> Result<KeepAlive, FleetError> {
        let lease = self.etcd.grant(self.settings.lease_ttl).await?;
        let key = self.settings.member_key();
        let info = MemberInfo {
            state: self.shared.lock().state,
            ..self.settings.info.clone()
        };
        let value = encode_info(&info)?;
        let outcome = self
            .etcd
            .txn(
                &[Compare::CreateRevisionEquals {
                    key: key.clone(),
                    revision: 0,
                }],
                &[Op::Put { key, value, lease }],
                &[],
            )
            .await?;
        if !outcome.succeeded {
            // Best effort: the lease would expire by itself.
            let _ = self.etcd.revoke(lease).await;
            return Err(FleetError::MemberIdTaken {
                member_id: self.settings.member_id.clone(),
            });
        }
        let keep_alive = self.etcd.keep_alive(lease).await?;
        let mut shared = self.shared.lock();
        shared.lease = lease;
        shared.incarnation = Some(outcome.revision);
        drop(shared);
        tracing::info!(member = %self.settings.member_id, incarnation = outcome.revision, state = ?info.state, "joined the fleet");
        Ok(keep_alive)
    }

    /// Reads every member, publishes the view, and watches for changes after it.
    async fn reload(&self) -> Result<Watch, FleetError> {
        let prefix = self.settings.members_prefix();
        let (entries, revision) = self.etcd.get_prefix(&prefix).await?;
        let watch = self.etcd.watch_prefix(&prefix, revision + 1).await?;
        let mut shared = self.shared.lock();
        shared.members.clear();
        for entry in entries {
            apply_put(&mut shared, &prefix, entry);
        }
        shared.revision = revision;
        self.publish(&shared);
        Ok(watch)
    }

    fn publish(&self, shared: &Shared) {
        self.publish.send_replace(Arc::new(FleetView {
            members: shared.members.values().cloned().collect(),
            revision: shared.revision,
            self_id: self.settings.member_id.clone(),
            incarnation: shared.incarnation,
        }));
    }

    /// Renews the lease every third of its TTL until `stop`; steps down when renewals have failed
    /// past the deadline, and registers again (a new incarnation) once etcd answers.
    async fn renew_loop(self, keep_alive: KeepAlive, stop: CancellationToken) {
        let mut keep_alive = Some(keep_alive);
        let mut renewed_at = Instant::now();
        let mut next_attempt = renewed_at + self.settings.renew_every();
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep_until(next_attempt) => {}
            }
            let attempt = Instant::now();
            // A renewal that hangs (etcd gone without a reset) must not hold the step-down past
            // its deadline.
            let deadline = renewed_at + self.settings.step_down_after();
            let renewal = tokio::time::timeout_at(
                deadline.max(attempt + Duration::from_millis(100)),
                self.renew(&mut keep_alive),
            );
            let renewed = renewal.await.unwrap_or(Err(FleetError::Timeout {
                operation: "lease keep-alive",
                after: self.settings.step_down_after(),
            }));
            next_attempt = attempt + self.settings.renew_every();
            let Err(error) = renewed else {
                renewed_at = attempt;
                continue;
            };
            tracing::warn!(%error, "renewing the fleet lease failed");
            let mut shared = self.shared.lock();
            if shared.incarnation.is_some()
                && (renewed_at.elapsed() >= self.settings.step_down_after()
                    || matches!(error, FleetError::LeaseExpired { .. }))
            {
                tracing::error!(member = %self.settings.member_id, "stepping down: the fleet lease was not renewed in time");
                shared.incarnation = None;
                self.publish(&shared);
            } else if shared.incarnation.is_some() && deadline > Instant::now() {
                // Retry no later than the deadline, so the step-down is not a tick late.
                next_attempt = next_attempt.min(deadline);
            }
        }
    }

    /// Renews the lease once. After a step-down, registers again on a new lease (revoking the old
    /// one, if it still lives, so its member key goes at once) and reads the members.
    async fn renew(&self, keep_alive: &mut Option<KeepAlive>) -> Result<(), FleetError> {
        let (incarnation, lease) = {
            let shared = self.shared.lock();
            (shared.incarnation, shared.lease)
        };
        if incarnation.is_none() {
            *keep_alive = None;
            if lease != 0 {
                // Best effort: an expired lease is not found, and an unreachable etcd fails the
                // registration below anyway.
                let _ = self.etcd.revoke(lease).await;
            }
            *keep_alive = Some(self.register().await?);
            // The follower reads the members again and publishes the new incarnation.
            self.shared.lock().revision = 0;
            return Ok(());
        }
        let Some(stream) = keep_alive else {
            *keep_alive = Some(self.etcd.keep_alive(lease).await?);
            return Ok(());
        };
        let renewed = stream.renew().await;
        if renewed.is_err() {
            // A broken stream while the lease lives: open a new one next time.
            *keep_alive = None;
        }
        renewed.map(|_| ())
    }

    /// Follows the members until `stop`; reads them again when the watch ends or the renewer
    /// registered a new incarnation.
    async fn follow_loop(self, watch: Watch, stop: CancellationToken) {
        let mut watch = Some(watch);
        loop {
            if self.shared.lock().revision == 0 {
                watch = None;
            }
            let Some(current) = watch.as_mut() else {
                tokio::select! {
                    () = stop.cancelled() => return,
                    reloaded = self.reload() => match reloaded {
                        Ok(reloaded) => watch = Some(reloaded),
                        Err(error) => {
                            tracing::warn!(%error, "reading the fleet members failed; retrying");
                            tokio::select! {
                                () = stop.cancelled() => return,
                                () = tokio::time::sleep(self.settings.renew_every()) => {}
                            }
                        }
                    },
                }
                continue;
            };
            tokio::select! {
                () = stop.cancelled() => return,
                events = current.next() => match events {
                    Ok(events) => self.apply(events),
                    Err(error) => {
                        tracing::warn!(%error, "the fleet members watch ended; reading them again");
                        watch = None;
                    }
                },
                // Wakes to notice a new incarnation (`revision` reset) while no event comes.
                () = tokio::time::sleep(self.settings.renew_every()) => {}
            }
        }
    }

    fn apply(&self, events: Vec<WatchEvent>) {
        let prefix = self.settings.members_prefix();
        let mut shared = self.shared.lock();
        if shared.revision == 0 {
            // A new incarnation: the members are read again before anything is published.
            return;
        }
        for event in events {
            match event {
                WatchEvent::Put(entry) => {
                    shared.revision = shared.revision.max(entry.mod_revision);
                    apply_put(&mut shared, &prefix, entry);
                }
                WatchEvent::Delete { key, revision } => {
                    shared.revision = shared.revision.max(revision);
                    let Some(id) = key.strip_prefix(&prefix) else {
                        continue;
                    };
                    shared.members.remove(id);
                    if id == self.settings.member_id && shared.incarnation.is_some() {
                        // The lease expired (or was revoked) under us.
                        tracing::error!(member = %id, "stepping down: the member key is gone");
                        shared.incarnation = None;
                    }
                }
            }
        }
        self.publish(&shared);
    }
}

/// What a member publishes, as its key's value.
fn encode_info(info: &MemberInfo) -> Result<Vec<u8>, FleetError> {
    serde_json::to_vec(info).map_err(|error| FleetError::Decode {
        what: "member info".to_owned(),
        reason: error.to_string(),
    })
}

fn apply_put(shared: &mut Shared, prefix: &str, entry: Entry) {
    let Some(id) = entry.key.strip_prefix(prefix) else {
        return;
    };
    match serde_json::from_slice::<MemberInfo>(&entry.value) {
        Ok(info) => {
            shared.members.insert(
                id.to_owned(),
                Member {
                    id: id.to_owned(),
                    info,
                    create_revision: entry.create_revision,
                },
            );
        }
        Err(error) => {
            tracing::warn!(key = %entry.key, %error, "ignoring a member key that does not decode");
        }
    }
}
