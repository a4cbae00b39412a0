//! Planned events over the server: adding or removing one replans every workload, since its uplift
//! may apply to any of them.

use crate::app::AppError;
use crate::events::{Event, EventSpec};

use super::ServingState;

impl ServingState {
    /// Stores an event and schedules every plan (its uplift may apply to any workload).
    pub fn add_event(&self, spec: &EventSpec) -> Result<Event, AppError> {
        let event = self.events.add(spec)?;
        self.mark_all_due();
        Ok(event)
    }

    /// Removes every event called `name` and schedules every plan.
    pub fn remove_event(&self, name: &str) -> Result<usize, AppError> {
        let removed = self.events.remove(name)?;
        self.mark_all_due();
        Ok(removed)
    }
}
