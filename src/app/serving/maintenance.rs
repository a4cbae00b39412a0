//! Maintenance: the hourly retention pass and flushing the store's log on shutdown.

use std::sync::Arc;
use std::time::Duration;

use crate::app::AppError;

use super::ServingState;

impl ServingState {
    /// Enforces the retention every hour until shutdown, on the blocking pool.
    pub async fn run_maintenance(self: Arc<Self>) {
        let Some(retention) = self.settings.retention else {
            return;
        };
        let mut tick = tokio::time::interval(Duration::from_secs(3600));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = self.shutdown.cancelled() => break,
                _ = tick.tick() => {}
            }
            let state = Arc::clone(&self);
            let dropped = tokio::task::spawn_blocking(move || {
                state
                    .history
                    .store()
                    .enforce_retention(state.now(), retention)
            })
            .await;
            match dropped {
                Ok(Ok(dropped)) => tracing::debug!(dropped, "retention enforced"),
                Ok(Err(error)) => tracing::warn!(%error, "retention failed"),
                Err(error) => tracing::warn!(%error, "retention worker failed"),
            }
        }
    }

    /// Flushes the store's log to the device, for a shutdown. Blocking, and quick whatever the
    /// number of series: checkpointing is left to the store's own schedule (`checkpoint_after_mib`),
    /// and the next start replays the log since the last checkpoint (see "Metric store" in
    /// docs/decisions.md).
    pub fn flush(&self) -> Result<(), AppError> {
        Ok(self.history.store().sync()?)
    }
}
