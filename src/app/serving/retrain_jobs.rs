//! Retraining jobs: on request (the `Retrain` call) and on the configured schedule, each series
//! retrained on the fit threads and its model promoted when it is not worse than the live one.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU32, AtomicUsize, Ordering};

use parking_lot::Mutex;
use tokio::task::JoinSet;

use crate::app::{AppError, RetrainSettings};
use crate::domain::{SeriesId, Timestamp};

use super::ServingState;

/// State of a retraining job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    /// Series are still being retrained.
    Running,
    /// Every series was retrained.
    Succeeded,
    /// At least one series failed.
    Failed,
    /// Shutdown stopped it before every series was done.
    Cancelled,
}

/// Progress of a retraining job, readable while it runs.
#[derive(Debug)]
pub struct Job {
    /// Handle returned to the caller.
    pub id: String,
    /// Series to retrain.
    pub total: u32,
    /// Series done, successfully or not; workers add to it as they go.
    done: AtomicU32,
    /// Series that failed, with why.
    failures: Mutex<Vec<(SeriesId, String)>>,
    /// When it started.
    pub started_at: Timestamp,
    /// When it finished, in milliseconds since the epoch; 0 while it runs (a finish is stored as
    /// at least 1).
    finished_at: AtomicI64,
}

impl Job {
    /// Series done, successfully or not.
    pub fn done(&self) -> u32 {
        self.done.load(Ordering::Acquire)
    }

    /// Series that failed, with why.
    pub fn failures(&self) -> Vec<(SeriesId, String)> {
        self.failures.lock().clone()
    }

    /// When it finished, if it has.
    pub fn finished_at(&self) -> Option<Timestamp> {
        match self.finished_at.load(Ordering::Acquire) {
            0 => None,
            millis => Some(Timestamp::from_millis(millis)),
        }
    }

    /// Running, or how it ended.
    pub fn state(&self) -> JobState {
        if self.finished_at().is_none() {
            JobState::Running
        } else if !self.failures.lock().is_empty() {
            JobState::Failed
        } else if self.done() < self.total {
            JobState::Cancelled
        } else {
            JobState::Succeeded
        }
    }
}

impl ServingState {
    /// Starts retraining `series` (every stored series when `None`) in the background, as
    /// `prescale retrain` does, and returns the job to follow. See [`ServingState::run_retrain_job`].
    pub fn retrain(self: &Arc<Self>, series: Option<Vec<SeriesId>>) -> Result<Arc<Job>, AppError> {
        let (job, series) = self.new_job(series)?;
        tokio::spawn(Arc::clone(self).run_retrain_job(Arc::clone(&job), series));
        Ok(job)
    }

    /// Registers a job over `series` (every stored series when `None`); checks named series exist.
    fn new_job(
        &self,
        series: Option<Vec<SeriesId>>,
    ) -> Result<(Arc<Job>, Vec<SeriesId>), AppError> {
        let series = match series {
            Some(series) => {
                for one in &series {
                    self.history.store().summary(one)?;
                }
                series
            }
            // In a fleet each owner retrains its own share.
            None => self
                .history
                .store()
                .series()
                .into_iter()
                .filter(|series| self.owns(series))
                .collect(),
        };
        let id = format!(
            "retrain-{}",
            self.job_ids.fetch_add(1, Ordering::Relaxed) + 1
        );
        let job = Arc::new(Job {
            id: id.clone(),
            total: u32::try_from(series.len()).unwrap_or(u32::MAX),
            done: AtomicU32::new(0),
            failures: Mutex::new(Vec::new()),
            started_at: self.now(),
            finished_at: AtomicI64::new(0),
        });
        self.jobs.lock().insert(id, Arc::clone(&job));
        Ok((job, series))
    }

    /// Runs a retraining job: `max_concurrent_fits` workers take the series one by one, each fit on
    /// the fit threads, through the same [`crate::app::retrain_series`] as the CLI
    /// (compare with the live model, register, promote only when not worse by more than the
    /// margin). A promoted model replaces the live one at once and its workloads are replanned.
    /// A failure is recorded in the job and the others go on; on shutdown no new series starts.
    pub async fn run_retrain_job(self: Arc<Self>, job: Arc<Job>, series: Vec<SeriesId>) {
        let series = Arc::new(series);
        let next = Arc::new(AtomicUsize::new(0));
        let workers = self
            .settings
            .max_concurrent_fits
            .clamp(1, series.len().max(1));
        let mut running = JoinSet::new();
        for _ in 0..workers {
            let (state, job, series, next) = (
                Arc::clone(&self),
                Arc::clone(&job),
                Arc::clone(&series),
                Arc::clone(&next),
            );
            running.spawn(async move {
                while !state.shutdown.is_cancelled() {
                    let Some(one) = series.get(next.fetch_add(1, Ordering::Relaxed)).cloned()
                    else {
                        break;
                    };
                    let retrained = if state.shares_models() {
                        state.retrain_shared(&one).await
                    } else {
                        let (worker, target) = (Arc::clone(&state), one.clone());
                        state
                            .run_blocking(move || worker.retrain_one(&target))
                            .await
                    };
                    match retrained {
                        Ok(()) => {}
                        Err(AppError::ShuttingDown) => break,
                        Err(error) => job.failures.lock().push((one, error.to_string())),
                    }
                    job.done.fetch_add(1, Ordering::AcqRel);
                }
            });
        }
        while running.join_next().await.is_some() {}
        job.finished_at
            .store(self.now().as_millis().max(1), Ordering::Release);
        tracing::info!(job = %job.id, done = job.done(), failed = job.failures.lock().len(), "retraining finished");
        self.replan.notify_one();
    }

    /// Retrains one series and swaps its model in when promoted. Blocking and CPU-heavy.
    fn retrain_one(&self, series: &SeriesId) -> Result<(), AppError> {
        let settings = self.retrain_settings()?;
        let outcome = crate::app::retrain_series(&self.history, &self.registry, series, &settings)
            .inspect_err(|error| {
                if matches!(error, AppError::Forecast(_)) {
                    self.metrics.model_errors.inc();
                }
            })?;
        self.metrics.model_fits.inc();
        tracing::info!(series = %series, promoted = outcome.promoted, version = ?outcome.version, reason = %outcome.reason, "retrained");
        if let (true, Some(version)) = (outcome.promoted, outcome.version) {
            self.promote(series, version, outcome.model);
            self.mark_due(series);
        }
        Ok(())
    }

    /// How a retraining job retrains one series: the configured window and margin, the events.
    pub(super) fn retrain_settings(&self) -> Result<RetrainSettings, AppError> {
        Ok(RetrainSettings {
            history_window: self.settings.history_window,
            promotion_margin: self.settings.promotion_margin,
            concurrency: 1,
            dry_run: false,
            events: self.events.load()?,
        })
    }

    /// Runs the retraining job of every series at each time of `retrain_schedule` (UTC, on the
    /// state's clock; waits are tokio timers) until shutdown; a job still running when the next
    /// time comes delays that one.
    pub async fn run_retrain_schedule(self: Arc<Self>) {
        let Some(schedule) = self.settings.retrain_schedule.clone() else {
            return;
        };
        loop {
            let now = self.clock.now();
            let Some(next) = schedule.next_after(now) else {
                tracing::warn!(schedule = %schedule, "the retraining schedule never fires");
                return;
            };
            let wait = (next - now).to_std().unwrap_or_default();
            tokio::select! {
                () = self.shutdown.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
            }
            match self.new_job(None) {
                Ok((job, series)) => {
                    tracing::info!(job = %job.id, series = series.len(), "scheduled retraining");
                    Arc::clone(&self).run_retrain_job(job, series).await;
                }
                Err(error) => tracing::warn!(%error, "scheduled retraining could not start"),
            }
        }
    }

    /// A retraining job.
    pub fn job(&self, id: &str) -> Result<Arc<Job>, AppError> {
        self.jobs
            .lock()
            .get(id)
            .cloned()
            .ok_or_else(|| AppError::NotFound {
                kind: "job",
                name: id.to_owned(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(total: u32, done: u32, failures: usize, finished: bool) -> Job {
        Job {
            id: "retrain-1".to_owned(),
            total,
            done: AtomicU32::new(done),
            failures: Mutex::new(
                (0..failures)
                    .map(|index| {
                        (
                            SeriesId::new(&format!("s{index}")).unwrap(),
                            "bad".to_owned(),
                        )
                    })
                    .collect(),
            ),
            started_at: Timestamp::from_millis(1),
            finished_at: AtomicI64::new(if finished { 2 } else { 0 }),
        }
    }

    #[test]
    fn a_job_says_how_it_ended() {
        assert_eq!(job(3, 1, 0, false).state(), JobState::Running);
        assert_eq!(job(3, 3, 0, true).state(), JobState::Succeeded);
        assert_eq!(job(3, 3, 1, true).state(), JobState::Failed);
        // Shutdown stopped it after one series of three.
        assert_eq!(job(3, 1, 0, true).state(), JobState::Cancelled);
        assert_eq!(job(3, 1, 1, true).state(), JobState::Failed);
    }
}
