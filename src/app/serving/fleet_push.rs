//! Pushed samples in a fleet: the TSDB is their source of truth. The owner of a series writes
//! pushed samples through to the TSDB (Prometheus remote-write) before it stores and acknowledges
//! them, so they outlive it; a replica that gains a pushed series (a member left or joined, or it
//! restarted) refills its store from the TSDB before it plans or answers for it, and reads it once
//! more when every old owner must have seen the move (a *late top-up*). Alone, or in a fleet
//! without a TSDB, pushes are stored as before. Design: docs/decisions.md, "Fleet mode: pushed
//! samples and events".

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::app::AppError;
use crate::domain::{PrometheusSource, Sample, SeriesId, Step, Timestamp};
use crate::ingest::prometheus::{
    MAX_POINTS_PER_REQUEST, PrometheusClient, RemoteWriteClient, SourceError, prometheus_labels,
};
use crate::store::{SeriesSamples, validate_batch};

use super::{Placement, ServingState, blocking};

/// The newest stretch a refill reads first, to learn the series' step (and so its fit window).
const FIRST_CHUNK: Duration = Duration::from_secs(7 * 24 * 3600);
/// Pause before refills that failed are tried again, and between looks for gained series.
const REFILL_RETRY: Duration = Duration::from_secs(2);
/// Added to the bound after which no old owner writes a moved series through any more (see
/// [`ServingState::late_top_up_after`]), for the watch to bring the move to an old owner that
/// reaches etcd, and for the step-down's last renewal attempt, which may end 100 ms past its
/// deadline.
const LATE_TOP_UP_MARGIN: Duration = Duration::from_secs(2);

/// The fleet's TSDB: written through on push, read on refill.
#[derive(Debug)]
pub(super) struct FleetTsdb {
    /// Posts remote-write requests.
    writer: RemoteWriteClient,
    /// Reads exact series back (the query API).
    reader: PrometheusClient,
}

/// Which pushed series this replica works on, and which it is refilling.
#[derive(Debug, Default)]
pub(super) struct Refills {
    /// The series of workloads without a source that this replica owned or warmed (joining, for
    /// the share it will own) at the last re-sync: a series worked on now and not then was gained.
    worked: HashSet<SeriesId>,
    /// Of `worked`, those it only warmed: their current owner still takes their pushes.
    warming: HashSet<SeriesId>,
    /// Of `worked`, those it owned holding its lease (not warmed, nor answered read-only): a
    /// series owned now and not then is topped up late.
    owned: HashSet<SeriesId>,
    /// Gained series not refilled yet: nobody plans them here, or answers for them once owned,
    /// until they are.
    pending: HashSet<SeriesId>,
    /// Warmed series this replica now owns: read again for what was pushed to their old owner
    /// after the warm-up's refill, while the warmed plans keep being served.
    top_ups: HashSet<SeriesId>,
    /// Series this replica came to own, with when to read them once more: by then every old
    /// owner has seen the move or stepped down, and what it wrote through before is in the TSDB,
    /// even after the refill's or the top-up's read. Not pending meanwhile; read once.
    late_top_ups: HashMap<SeriesId, Instant>,
}

/// Which read of a series from the TSDB: each is taken off its own queue once it succeeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reading {
    /// Of a gained series, pending until it lands.
    Refill,
    /// Of a warmed series once owned.
    TopUp,
    /// Of an owned series once every old owner has seen the move.
    LateTopUp,
}

impl ServingState {
    /// Writes pushed samples through to the TSDB at `query`'s base URL and `remote_write_url`
    /// (credentials, CA and timeout from `query`), and refills gained series from it. Call before
    /// [`ServingState::join_fleet`]. Blocking: reads credential files.
    pub fn use_tsdb(
        &self,
        query: &PrometheusSource,
        remote_write_url: &str,
    ) -> Result<(), AppError> {
        let reader = PrometheusClient::new(query).map_err(|error| AppError::InvalidRequest {
            reason: format!("the fleet's tsdb: {error}"),
        })?;
        let writer = RemoteWriteClient::new(query, remote_write_url)?;
        // Set once, before serving; a second call keeps the first.
        let _ = self.tsdb.set(FleetTsdb { writer, reader });
        Ok(())
    }

    /// Stores a batch of pushed samples this replica owns: in a fleet with a TSDB, first written
    /// through to it as `encode` makes a remote-write body of it (the service layer owns the wire
    /// format; nothing is stored when the write fails: [`AppError::TsdbWrite`]), then here.
    pub async fn ingest_owned(
        self: &Arc<Self>,
        batch: Vec<SeriesSamples>,
        encode: fn(&[SeriesSamples]) -> Vec<u8>,
    ) -> Result<usize, AppError> {
        let Some(tsdb) = self.tsdb.get().filter(|_| self.fleet.get().is_some()) else {
            self.check_still_owned(&batch)?;
            let state = Arc::clone(self);
            return blocking(move || state.ingest(&batch)).await;
        };
        let now = Timestamp::now();
        let (batch, body) = blocking(move || {
            // What the store would refuse (a NaN, a time far ahead) is refused before the TSDB
            // has it, so the TSDB never holds what no replica could refill.
            validate_batch(&batch, now)?;
            let body = encode(&batch);
            Ok((batch, body))
        })
        .await?;
        // Checked last before the write-through, so that a replica which has seen a series move
        // (or lost etcd) writes none of it from then on: what it wrote before reaches the TSDB
        // within the writer's longest write, which the new owner's late top-up waits for.
        self.check_still_owned(&batch)?;
        tsdb.writer.write(&body).await?;
        let state = Arc::clone(self);
        blocking(move || state.ingest(&batch)).await
    }

    /// Refuses `batch` unless, in a fleet, this replica holds its lease
    /// ([`AppError::FleetReadOnly`] once it has lost etcd: its series may have moved since) and
    /// still owns each series in it (the members changed since the push was routed: the client
    /// resends and reaches the new owner).
    fn check_still_owned(&self, batch: &[SeriesSamples]) -> Result<(), AppError> {
        let Some(coordinator) = self.fleet_writer("storing pushed samples")? else {
            return Ok(());
        };
        let view = coordinator.view();
        let view = view.borrow();
        match batch
            .iter()
            .find(|part| !view.owns(&part.series.to_string()))
        {
            Some(part) => Err(AppError::Fleet {
                reason: format!(
                    "series {} is no longer owned by member {} (the fleet's members are changing); retry",
                    part.series.abbreviated(),
                    coordinator.member_id()
                ),
            }),
            None => Ok(()),
        }
    }

    /// How long after this replica came to own a series its late top-up reads it: the longest
    /// an old owner may still route pushes by its view from before the move
    /// ([`crate::fleet::Coordinator::stale_view_bound`]), then the longest a write-through it
    /// began by then takes, then [`LATE_TOP_UP_MARGIN`].
    fn late_top_up_after(&self, tsdb: &FleetTsdb) -> Duration {
        let stale_view = self
            .fleet
            .get()
            .map_or(Duration::ZERO, |coordinator| coordinator.stale_view_bound());
        stale_view + tsdb.writer.longest_write() + LATE_TOP_UP_MARGIN
    }

    /// Whether `series` was gained and is not refilled yet.
    pub(super) fn refilling(&self, series: &SeriesId) -> bool {
        self.refills.lock().pending.contains(series)
    }

    /// After a change of members: the pushed series (of workloads without a source) this replica
    /// owns or warms now and did not before are pending a refill, those it warmed and now owns
    /// are to be topped up, and every one it owns holding its lease now and did not before (a
    /// handover, or its return from read-only) is to be topped up late; those it lost are none of
    /// these. Returns whether any is pending or to be topped up now.
    pub(super) fn note_gained_series(&self) -> bool {
        let Some(tsdb) = self.tsdb.get() else {
            return false;
        };
        let pushed: Vec<SeriesId> = self
            .workloads
            .read()
            .values()
            .filter_map(|entry| {
                let workload = entry.workload.read();
                workload
                    .source()
                    .is_none()
                    .then(|| workload.series().clone())
            })
            .collect();
        let mut worked = HashSet::new();
        let mut warming = HashSet::new();
        let mut owned = HashSet::new();
        for series in pushed {
            if self.write_placement(&series) == Placement::Local {
                // Not owned when answered read-only: it may move meanwhile, and back.
                if self.owns(&series) {
                    owned.insert(series.clone());
                }
                worked.insert(series);
            } else if self.owns(&series) {
                warming.insert(series.clone());
                worked.insert(series);
            }
        }
        let late_top_up_at = Instant::now() + self.late_top_up_after(tsdb);
        let mut refills = self.refills.lock();
        let gained: Vec<SeriesId> = worked.difference(&refills.worked).cloned().collect();
        let newly_owned: Vec<SeriesId> = owned.difference(&refills.owned).cloned().collect();
        let owned_after_warming: Vec<SeriesId> = refills
            .warming
            .iter()
            .filter(|series| worked.contains(*series) && !warming.contains(*series))
            .cloned()
            .collect();
        refills.pending.retain(|series| worked.contains(series));
        refills.pending.extend(gained);
        refills
            .top_ups
            .retain(|series| worked.contains(series) && !warming.contains(series));
        refills.top_ups.extend(owned_after_warming);
        refills
            .late_top_ups
            .retain(|series, _| owned.contains(series));
        for series in newly_owned {
            refills.late_top_ups.insert(series, late_top_up_at);
        }
        refills.worked = worked;
        refills.warming = warming;
        refills.owned = owned;
        !(refills.pending.is_empty() && refills.top_ups.is_empty())
    }

    /// Refills pending series, then tops up warmed ones, then tops up late those whose time has
    /// come, until shutdown: woken by each re-sync, and every [`REFILL_RETRY`] to retry failed
    /// reads, take in workloads the fleet added since and find late top-ups due.
    pub(super) async fn run_refills(self: Arc<Self>) {
        let Some(tsdb) = self.tsdb.get() else {
            return;
        };
        loop {
            self.note_gained_series();
            let now = Instant::now();
            let queued: Vec<(SeriesId, Reading)> = {
                let refills = self.refills.lock();
                let pending = refills
                    .pending
                    .iter()
                    .map(|series| (series, Reading::Refill));
                let top_ups = refills
                    .top_ups
                    .iter()
                    .map(|series| (series, Reading::TopUp));
                let late = refills
                    .late_top_ups
                    .iter()
                    .filter(|(_, due)| **due <= now)
                    .map(|(series, _)| (series, Reading::LateTopUp));
                pending
                    .chain(top_ups)
                    .chain(late)
                    .map(|(series, reading)| (series.clone(), reading))
                    .collect()
            };
            for (series, reading) in &queued {
                if self.shutdown.is_cancelled() {
                    return;
                }
                match self.refill(tsdb, series).await {
                    Ok(samples) => {
                        tracing::info!(series = %series, samples, ?reading, "refilled a series from the tsdb");
                        self.refills.lock().done(series, *reading, now);
                        self.mark_due(series);
                        self.replan.notify_one();
                    }
                    Err(error) => {
                        tracing::warn!(series = %series, %error, ?reading, "refilling a series from the tsdb failed; retrying");
                    }
                }
            }
            tokio::select! {
                () = self.shutdown.cancelled() => return,
                () = self.refill_wake.notified() => {}
                () = tokio::time::sleep(REFILL_RETRY) => {}
            }
        }
    }

    /// Reads `series` from the TSDB over its fit window (sized to the step of its newest week)
    /// into the store; returns the samples read.
    async fn refill(&self, tsdb: &FleetTsdb, series: &SeriesId) -> Result<usize, AppError> {
        let labels = prometheus_labels(series);
        let now = self.now();
        let failed = |error: SourceError| AppError::Fleet {
            reason: format!("refilling {series} from the tsdb: {error}"),
        };
        let first_from = now.saturating_add_millis(-millis(FIRST_CHUNK));
        let mut samples = tsdb
            .reader
            .exact_series(&labels, first_from, now)
            .await
            .map_err(failed)?;
        let Some(step) = median_step(&samples) else {
            return self.store_refill(series, samples).await;
        };
        let from = now.saturating_add_millis(-millis(self.settings.history_window.span(step)));
        let chunk = step.as_millis().saturating_mul(MAX_POINTS_PER_REQUEST);
        let mut until = first_from;
        while until > from {
            let after = until.saturating_add_millis(-chunk).max(from);
            let mut older = tsdb
                .reader
                .exact_series(&labels, after, until)
                .await
                .map_err(failed)?;
            older.append(&mut samples);
            samples = older;
            until = after;
        }
        self.store_refill(series, samples).await
    }

    async fn store_refill(
        &self,
        series: &SeriesId,
        samples: Vec<Sample>,
    ) -> Result<usize, AppError> {
        if samples.is_empty() {
            return Ok(0);
        }
        let batch = vec![SeriesSamples {
            series: series.clone(),
            samples,
        }];
        let store = Arc::clone(self.history.store());
        blocking(move || Ok(store.append_batch(&batch)?)).await
    }
}

impl Refills {
    /// Takes `series` off the queue of `reading`, which succeeded. A late top-up stays queued when
    /// it was queued again, for a later time, after `queued_at` (the series moved away and back).
    fn done(&mut self, series: &SeriesId, reading: Reading, queued_at: Instant) {
        match reading {
            Reading::Refill => {
                self.pending.remove(series);
            }
            Reading::TopUp => {
                self.top_ups.remove(series);
            }
            Reading::LateTopUp => {
                if self
                    .late_top_ups
                    .get(series)
                    .is_some_and(|due| *due <= queued_at)
                {
                    self.late_top_ups.remove(series);
                }
            }
        }
    }
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// The median time between consecutive samples (sorted, as the TSDB answers them); `None` with
/// fewer than two.
fn median_step(samples: &[Sample]) -> Option<Step> {
    let mut gaps: Vec<i64> = samples
        .windows(2)
        .map(|pair| pair[1].timestamp.as_millis() - pair[0].timestamp.as_millis())
        .filter(|gap| *gap > 0)
        .collect();
    if gaps.is_empty() {
        return None;
    }
    let middle = gaps.len() / 2;
    let (_, median, _) = gaps.select_nth_unstable(middle);
    Step::try_from(*median).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_step_ignores_one_gap() {
        let at = |minutes: i64| Sample::new(minutes * 60_000, 1.0);
        let samples = [at(0), at(5), at(10), at(60), at(65)];
        assert_eq!(median_step(&samples), Some(Step::FIVE_MINUTES));
        assert_eq!(median_step(&samples[..1]), None);
    }
}
