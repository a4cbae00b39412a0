//! Fleet-wide events: in a fleet, `AddEvent` and `RemoveEvent` write the event to etcd (the
//! `events` table, one record per event name and start, as the events file keys them) in a
//! transaction fenced by this replica's membership, and every replica follows that table into its
//! own events file, so an event given to any replica is applied by every owner's plans. Alone, they
//! write the events file as before. Design: docs/decisions.md, "Fleet mode: pushed samples and
//! events".

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::app::AppError;
use crate::events::{Event, EventCalendar, EventSpec};
use crate::fleet::etcd::Op;
use crate::fleet::{Coordinator, RecordChange};

use super::fleet_workloads::{fenced_any_view, fleet_error, put_record, read_and_watch};
use super::{ServingState, blocking};

/// The fleet-wide table of events.
const EVENTS_TABLE: &str = "events";

/// The record name of `event`: its name and start, which identify it in the events file too.
fn record_name(event: &Event) -> String {
    format!("{}@{}", event.name(), event.range().from().as_millis())
}

impl ServingState {
    /// Validates and stores an event: alone, in the events file; in a fleet, first in etcd (a
    /// write fenced by this replica's membership), then here; the other replicas apply it from
    /// etcd. Every plan is scheduled.
    pub async fn publish_event(self: &Arc<Self>, spec: EventSpec) -> Result<Event, AppError> {
        if let Some(coordinator) = self.fleet_writer("AddEvent")? {
            let event = spec.check()?;
            let name = record_name(&event);
            put_record(
                coordinator.as_ref(),
                EVENTS_TABLE,
                &name,
                &EventSpec::from(&event),
            )
            .await?;
        }
        let state = Arc::clone(self);
        blocking(move || state.add_event(&spec)).await
    }

    /// Removes every event called `name`: alone, from the events file; in a fleet, first from etcd
    /// (fenced as [`ServingState::publish_event`]), then here. Returns how many went: in a fleet,
    /// the records the fenced delete itself deleted, not those the read before it found (a remove
    /// through another replica in between deleted those), and [`AppError::NotFound`] when it
    /// deleted none.
    pub async fn withdraw_event(self: &Arc<Self>, name: &str) -> Result<usize, AppError> {
        let state = Arc::clone(self);
        let owned_name = name.to_owned();
        let Some(coordinator) = self.fleet_writer("RemoveEvent")? else {
            return blocking(move || state.remove_event(&owned_name)).await;
        };
        let (records, _) = coordinator
            .records(EVENTS_TABLE)
            .await
            .map_err(fleet_error)?;
        let ops: Vec<Op> = records
            .iter()
            .filter(|(_, value)| {
                serde_json::from_slice::<EventSpec>(value).is_ok_and(|spec| spec.name == name)
            })
            .map(|(record, _)| Op::Delete {
                key: coordinator.record_key(EVENTS_TABLE, record),
            })
            .collect();
        let not_found = || AppError::NotFound {
            kind: "event",
            name: name.to_owned(),
        };
        if ops.is_empty() {
            return Err(not_found());
        }
        let deleted = fenced_any_view(coordinator.as_ref(), &ops).await?;
        if deleted == 0 {
            return Err(not_found());
        }
        let removed = usize::try_from(deleted).unwrap_or(usize::MAX);
        // The table is what counts; this replica's file may not have had them yet.
        match blocking(move || state.remove_event(&owned_name)).await {
            Ok(_) | Err(AppError::NotFound { .. }) => Ok(removed),
            Err(error) => Err(error),
        }
    }

    /// Follows the fleet's events into this replica's events file until shutdown; reads the table
    /// again after a failure.
    pub(super) async fn sync_events(self: Arc<Self>, coordinator: Arc<dyn Coordinator>) {
        self.until_shutdown(EVENTS_TABLE, || self.follow_events(coordinator.as_ref()))
            .await;
    }

    /// Reads the table (the events file becomes exactly it), then applies each change.
    async fn follow_events(
        self: &Arc<Self>,
        coordinator: &dyn Coordinator,
    ) -> Result<(), AppError> {
        let (records, mut watch) = read_and_watch(coordinator, EVENTS_TABLE).await?;
        let mut table: BTreeMap<String, Vec<u8>> = records.into_iter().collect();
        self.apply_event_table(&table).await;
        loop {
            let Some(changes) = self.next_changes(&mut watch).await? else {
                return Ok(());
            };
            for change in changes {
                match change {
                    RecordChange::Put { name, value } => table.insert(name, value),
                    RecordChange::Delete { name } => table.remove(&name),
                };
            }
            self.apply_event_table(&table).await;
        }
    }

    /// Makes this replica's events what the fleet's `table` holds; schedules every plan when that
    /// changed them. A record that does not decode is skipped (and logged).
    async fn apply_event_table(self: &Arc<Self>, table: &BTreeMap<String, Vec<u8>>) {
        let events: Vec<Event> = table
            .iter()
            .filter_map(|(name, value)| {
                let event = serde_json::from_slice::<EventSpec>(value)
                    .map_err(|error| error.to_string())
                    .and_then(|spec| spec.check().map_err(|error| error.to_string()));
                event
                    .inspect_err(|error| {
                        tracing::warn!(event = %name, %error, "the fleet's event does not decode; skipped");
                    })
                    .ok()
            })
            .collect();
        let state = Arc::clone(self);
        let calendar = EventCalendar::new(events);
        match blocking(move || state.events.replace(&calendar)).await {
            Ok(true) => self.mark_all_due(),
            Ok(false) => {}
            Err(error) => tracing::warn!(%error, "applying the fleet's events failed"),
        }
    }
}
