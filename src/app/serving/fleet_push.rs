//! Pushed samples in a fleet: the TSDB is their source of truth. The owner of a series writes
//! pushed samples through to the TSDB (Prometheus remote-write) before it stores and acknowledges
//! them, so they outlive it; a replica that gains a pushed series (a member left or joined, or it
//! restarted) refills its store from the TSDB before it plans or answers for it. Alone, or in a
//! fleet without a TSDB, pushes are stored as before. Design: docs/decisions.md, "Fleet mode:
//! pushed samples and events".

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

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
    /// Gained series not refilled yet: nobody plans them here, or answers for them once owned,
    /// until they are.
    pending: HashSet<SeriesId>,
    /// Warmed series this replica now owns: read again for what was pushed to their old owner
    /// after the warm-up's refill, while the warmed plans keep being served.
    top_ups: HashSet<SeriesId>,
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
        tsdb.writer.write(&body).await?;
        let state = Arc::clone(self);
        blocking(move || state.ingest(&batch)).await
    }

    /// Whether `series` was gained and is not refilled yet.
    pub(super) fn refilling(&self, series: &SeriesId) -> bool {
        self.refills.lock().pending.contains(series)
    }

    /// After a change of members: the pushed series (of workloads without a source) this replica
    /// owns or warms now and did not before are pending a refill, and those it warmed and now owns
    /// are to be topped up; those it lost are neither. Returns whether any is pending or to be
    /// topped up.
    pub(super) fn note_gained_series(&self) -> bool {
        if self.tsdb.get().is_none() {
            return false;
        }
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
        for series in pushed {
            if self.write_placement(&series) == Placement::Local {
                worked.insert(series);
            } else if self.owns(&series) {
                warming.insert(series.clone());
                worked.insert(series);
            }
        }
        let mut refills = self.refills.lock();
        let gained: Vec<SeriesId> = worked.difference(&refills.worked).cloned().collect();
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
        refills.worked = worked;
        refills.warming = warming;
        !(refills.pending.is_empty() && refills.top_ups.is_empty())
    }

    /// Refills pending series, then tops up warmed ones, until shutdown: woken by each re-sync,
    /// and every [`REFILL_RETRY`] to retry failed refills and take in workloads the fleet added
    /// since.
    pub(super) async fn run_refills(self: Arc<Self>) {
        let Some(tsdb) = self.tsdb.get() else {
            return;
        };
        loop {
            self.note_gained_series();
            let (pending, top_ups): (Vec<SeriesId>, Vec<SeriesId>) = {
                let refills = self.refills.lock();
                (
                    refills.pending.iter().cloned().collect(),
                    refills.top_ups.iter().cloned().collect(),
                )
            };
            let queued = pending.iter().map(|series| (series, true));
            for (series, gained) in queued.chain(top_ups.iter().map(|series| (series, false))) {
                if self.shutdown.is_cancelled() {
                    return;
                }
                match self.refill(tsdb, series).await {
                    Ok(samples) => {
                        tracing::info!(series = %series, samples, gained, "refilled a series from the tsdb");
                        let mut refills = self.refills.lock();
                        if gained {
                            refills.pending.remove(series);
                        } else {
                            refills.top_ups.remove(series);
                        }
                        drop(refills);
                        self.mark_due(series);
                        self.replan.notify_one();
                    }
                    Err(error) => {
                        tracing::warn!(series = %series, %error, gained, "refilling a series from the tsdb failed; retrying");
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
