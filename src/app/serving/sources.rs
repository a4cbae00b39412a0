//! Workloads whose series is pulled from a Prometheus-compatible API: one follower task per sourced
//! workload backfills the history window the store lacks, then polls each step for new points. Points
//! are stored through [`ServingState::ingest`], the path pushed samples take, so replanning after
//! `replan_after_samples` works the same. Design: docs/decisions.md, "Prometheus as a history source".

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::app::AppError;
use crate::domain::{PrometheusSource, SeriesId, Timestamp};
use crate::ingest::prometheus::{PrometheusClient, SourceError};
use crate::store::{SeriesSamples, StoreError};

use super::{ServingState, blocking};

/// What a workload's source did last, for `GetWorkload`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SourceStatus {
    /// The last pull's error (`reason: message`), cleared by the next success.
    pub last_error: Option<String>,
    /// Short name of that error's kind (`connect`, `query_error`, `several_series`, ...).
    pub last_error_reason: Option<&'static str>,
    /// When the last pull succeeded.
    pub last_success: Option<Timestamp>,
    /// Points pulled and stored since the follower started.
    pub points_pulled: u64,
    /// Oldest point stored for the workload's series.
    pub history_from: Option<Timestamp>,
    /// The source holds less than the history window (its retention is shorter): plans use what
    /// there is.
    pub history_short: bool,
}

/// A running follower of one workload's source.
#[derive(Debug)]
pub(super) struct Follower {
    /// The source it follows; a workload upserted with another source gets a new follower.
    source: PrometheusSource,
    /// The series it fills.
    series: SeriesId,
    /// Cancelled when the workload is deleted, its source changes, or the server stops.
    stop: CancellationToken,
    /// Its status, shared with the task.
    status: Arc<Mutex<SourceStatus>>,
    /// The task; awaited on shutdown.
    task: JoinHandle<()>,
}

/// Why a pull failed: the source, or the store it writes to.
#[derive(Debug, thiserror::Error)]
enum PullError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Store(#[from] AppError),
}

impl PullError {
    fn reason(&self) -> &'static str {
        match self {
            Self::Source(error) => error.reason(),
            Self::Store(_) => "store",
        }
    }
}

impl From<StoreError> for PullError {
    fn from(error: StoreError) -> Self {
        Self::Store(error.into())
    }
}

impl ServingState {
    /// The status of workload `name`'s source; `None` when it has none (or its follower has not
    /// started yet).
    pub fn source_status(&self, name: &str) -> Option<SourceStatus> {
        self.followers
            .lock()
            .get(name)
            .map(|follower| follower.status.lock().clone())
    }

    /// Keeps one follower per sourced workload this replica owns until shutdown: started,
    /// restarted and stopped as workloads are upserted and deleted and, in a fleet, as ownership
    /// moves. On shutdown every follower is stopped and awaited.
    pub async fn run_sources(self: Arc<Self>) {
        let mut retired = Vec::new();
        loop {
            retired.extend(self.reconcile_followers());
            retired.retain(|task: &JoinHandle<()>| !task.is_finished());
            tokio::select! {
                () = self.sources_changed.notified() => {}
                () = self.shutdown.cancelled() => break,
            }
        }
        let followers: Vec<Follower> = self.followers.lock().drain().map(|(_, f)| f).collect();
        for follower in &followers {
            follower.stop.cancel();
        }
        let tasks = followers.into_iter().map(|follower| follower.task);
        for task in tasks.chain(retired) {
            if let Err(error) = task.await {
                tracing::error!(%error, "a source follower failed");
            }
        }
    }

    /// Starts followers for sourced workloads without one (or whose source changed) and stops those
    /// of workloads gone; returns the stopped followers' tasks.
    fn reconcile_followers(self: &Arc<Self>) -> Vec<JoinHandle<()>> {
        let wanted: HashMap<String, (PrometheusSource, SeriesId)> = self
            .workloads()
            .into_iter()
            .filter(|workload| self.owns(workload.series()))
            .filter_map(|workload| {
                let source = workload.source()?.clone();
                Some((
                    workload.name().to_owned(),
                    (source, workload.series().clone()),
                ))
            })
            .collect();
        let mut followers = self.followers.lock();
        let stale: Vec<String> = followers
            .iter()
            .filter(|(name, follower)| {
                wanted.get(*name).is_none_or(|(source, series)| {
                    *source != follower.source || *series != follower.series
                })
            })
            .map(|(name, _)| name.clone())
            .collect();
        let mut stopped = Vec::new();
        // Followers replaced because their workload's source reads another series now (another
        // query or server), its series kept: the new follower replaces what they stored once they
        // have stopped. A new step, timeout or credentials keep what is stored.
        let mut replaced: HashMap<String, JoinHandle<()>> = HashMap::new();
        for name in stale {
            if let Some(follower) = followers.remove(&name) {
                follower.stop.cancel();
                match wanted.get(&name) {
                    Some((source, series))
                        if *series == follower.series
                            && !source.reads_same_series(&follower.source) =>
                    {
                        replaced.insert(name, follower.task);
                    }
                    _ => stopped.push(follower.task),
                }
            }
        }
        for (name, (source, series)) in wanted {
            if followers.contains_key(&name) {
                continue;
            }
            let stop = self.shutdown.child_token();
            let status = Arc::new(Mutex::new(SourceStatus::default()));
            let task = tokio::spawn(Arc::clone(self).follow(
                name.clone(),
                PrometheusClientSpec {
                    source: source.clone(),
                    series: series.clone(),
                },
                stop.clone(),
                Arc::clone(&status),
                replaced.remove(&name),
            ));
            followers.insert(
                name,
                Follower {
                    source,
                    series,
                    stop,
                    status,
                    task,
                },
            );
        }
        stopped
    }

    /// Counts a failure of workload `name`'s source (filling `series`) for `reason`, unless the
    /// workload was deleted or its series moved to another replica's `/metrics` meanwhile (its
    /// follower stops soon after). Under the workloads' read lock, as a plan's gauges are
    /// recorded (see `forget_unowned_workload_metrics`).
    fn record_source_error(&self, name: &str, series: &SeriesId, reason: &'static str) {
        let workloads = self.workloads.read();
        if workloads.contains_key(name) && self.shows_workload_metrics(series) {
            self.metrics.record_source_error(name, reason);
        }
    }

    /// One follower: pulls what the store lacks, then waits a poll interval (or, after a failure, a
    /// backoff that doubles up to `retry_max`), until `stop`. With `replacing`, the follower of the
    /// workload's previous source: once that has stopped, the series' samples (the other source's)
    /// are deleted, so the first pull backfills the whole window from this source.
    async fn follow(
        self: Arc<Self>,
        name: String,
        spec: PrometheusClientSpec,
        stop: CancellationToken,
        status: Arc<Mutex<SourceStatus>>,
        replacing: Option<JoinHandle<()>>,
    ) {
        if let Some(previous) = replacing {
            tokio::select! {
                () = stop.cancelled() => return,
                finished = previous => if let Err(error) = finished {
                    tracing::error!(%error, "a source follower failed");
                },
            }
            let state = Arc::clone(&self);
            let series = spec.series.clone();
            let deleted = blocking(move || match state.delete_series(&series) {
                Err(AppError::Store(StoreError::UnknownSeries { .. })) => Ok(0),
                other => other,
            })
            .await;
            match deleted {
                Ok(samples) => tracing::info!(
                    workload = %name,
                    series = %spec.series,
                    samples,
                    "the workload's source changed: its series is pulled again from the new one"
                ),
                Err(error) => tracing::warn!(
                    workload = %name,
                    %error,
                    "the workload's source changed, but its series could not be cleared"
                ),
            }
        }
        let timing = self.settings.sources;
        let mut backoff = timing.retry_initial;
        let mut client: Option<PrometheusClient> = None;
        loop {
            let pulled = tokio::select! {
                () = stop.cancelled() => return,
                pulled = self.pull_once(&mut client, &spec, &status) => pulled,
            };
            let wait = match pulled {
                Ok(()) => {
                    backoff = timing.retry_initial;
                    timing
                        .poll_interval
                        .unwrap_or_else(|| spec.source.step().as_duration())
                }
                Err(error) => {
                    let reason = error.reason();
                    tracing::warn!(workload = %name, reason, %error, retry_in = ?backoff, "pulling the workload's history source failed");
                    self.record_source_error(&name, &spec.series, reason);
                    let mut status = status.lock();
                    status.last_error = Some(format!("{reason}: {error}"));
                    status.last_error_reason = Some(reason);
                    drop(status);
                    // Credentials may have been rotated: the next attempt reads the files again.
                    client = None;
                    let wait = backoff;
                    backoff = (backoff * 2).min(timing.retry_max);
                    wait
                }
            };
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Pulls the source's points from the newest stored one (or the start of the history window)
    /// to now, chunk by chunk; each chunk is checked whole before it is stored.
    async fn pull_once(
        self: &Arc<Self>,
        client: &mut Option<PrometheusClient>,
        spec: &PrometheusClientSpec,
        status: &Mutex<SourceStatus>,
    ) -> Result<(), PullError> {
        let client = match client {
            Some(client) => client,
            None => {
                // Reads the credentials and CA files: off the async threads.
                let source = spec.source.clone();
                let built = tokio::task::spawn_blocking(move || PrometheusClient::new(&source))
                    .await
                    .map_err(|error| AppError::Worker {
                        reason: error.to_string(),
                    })??;
                client.insert(built)
            }
        };
        let step = spec.source.step();
        let now = self.now().floor_to(step);
        let window_start = now
            .saturating_add_millis(-millis(self.settings.history_window.span(step)))
            .floor_to(step);
        let stored = self.stored_extent(&spec.series).await?;
        let from = match stored {
            Some((_, last)) if last >= window_start => {
                last.floor_to(step).saturating_add_millis(step.as_millis())
            }
            _ => window_start,
        };
        let mut oldest = stored.map(|(first, _)| first);
        let mut pulled = 0_u64;
        for chunk in client.chunks(from, now) {
            let samples = client.query_chunk(chunk).await?;
            let Some(first) = samples.first() else {
                continue;
            };
            oldest = Some(oldest.map_or(first.timestamp, |old| old.min(first.timestamp)));
            let count = samples.len() as u64;
            let batch = [SeriesSamples {
                series: spec.series.clone(),
                samples,
            }];
            let state = Arc::clone(self);
            blocking(move || state.ingest(&batch)).await?;
            pulled += count;
            status.lock().points_pulled += count;
        }
        if pulled == 0 && from <= now {
            return Err(SourceError::NoSeries { from, to: now }.into());
        }
        let mut status = status.lock();
        status.last_error = None;
        status.last_error_reason = None;
        status.last_success = Some(self.now());
        status.history_from = oldest;
        status.history_short = oldest.is_some_and(|first| first > window_start);
        Ok(())
    }

    /// First and last stored timestamps of `series`, if it has any.
    async fn stored_extent(
        self: &Arc<Self>,
        series: &SeriesId,
    ) -> Result<Option<(Timestamp, Timestamp)>, PullError> {
        let state = Arc::clone(self);
        let series = series.clone();
        let summary = blocking(move || match state.history.store().summary(&series) {
            Ok(summary) => Ok(summary.first.zip(summary.last)),
            Err(StoreError::UnknownSeries { .. }) => Ok(None),
            Err(error) => Err(error.into()),
        });
        Ok(summary.await?)
    }
}

/// What a follower pulls: the source, and the series it fills.
#[derive(Debug, Clone)]
struct PrometheusClientSpec {
    source: PrometheusSource,
    series: SeriesId,
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}
