//! Ingest: storing batches of samples (and waking the planner when a workload's series received
//! enough), resolving series selectors, and the history models are fitted on.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use crate::app::AppError;
use crate::domain::{SeriesId, TimeSeries};
use crate::store::{SeriesSamples, SeriesSummary};

use super::ServingState;

impl ServingState {
    /// Stores a batch (all or nothing) and schedules replans of workloads that received enough new
    /// samples. Blocking: the store writes its log.
    pub fn ingest(&self, batch: &[SeriesSamples]) -> Result<usize, AppError> {
        let accepted = self.history.store().append_batch(batch)?;
        self.metrics.samples_ingested.inc_by(accepted as u64);
        let threshold = self.settings.replan_after_samples;
        let mut wake = false;
        for entry in self.workloads.read().values() {
            let series = entry.workload.read().series().clone();
            let added: u64 = batch
                .iter()
                .filter(|part| part.series == series)
                .map(|part| part.samples.len() as u64)
                .sum();
            if added > 0
                && entry.new_samples.fetch_add(added, Ordering::AcqRel) + added >= threshold
            {
                wake = true;
            }
        }
        if wake {
            self.replan.notify_one();
        }
        Ok(accepted)
    }

    /// The one stored series a selector names: the exact series when it is stored; otherwise the only
    /// series whose name is `name` (any name when empty) and whose labels include `labels`.
    pub fn resolve_series(
        &self,
        name: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<SeriesId, AppError> {
        if let Ok(exact) = SeriesId::with_labels(name, labels.clone())
            && self
                .history
                .store()
                .summary(&exact)
                .is_ok_and(|s| s.samples > 0)
        {
            return Ok(exact);
        }
        let mut matching: Vec<SeriesId> = self
            .history
            .store()
            .series()
            .into_iter()
            .filter(|series| {
                (name.is_empty() || series.name() == name) && series.matches_labels(labels)
            })
            .collect();
        let selector = format!("{name}{labels:?}");
        match matching.len() {
            0 => Err(AppError::NotFound {
                kind: "series",
                name: selector,
            }),
            1 => Ok(matching.remove(0)),
            count => Err(AppError::InvalidRequest {
                reason: format!(
                    "selector {} matches {count} series (e.g. {} and {}); name one",
                    crate::domain::quoted(&selector),
                    matching[0].abbreviated(),
                    matching[1].abbreviated()
                ),
            }),
        }
    }

    /// Summaries of every stored series.
    pub fn list_series(&self) -> Result<Vec<SeriesSummary>, AppError> {
        self.history.list_series()
    }

    /// One page of the stored series (see [`crate::app::History::list_series_page`]).
    pub fn list_series_page(
        &self,
        after: Option<&SeriesId>,
        size: usize,
    ) -> Result<(Vec<SeriesSummary>, Option<SeriesId>), AppError> {
        self.history.list_series_page(after, size)
    }

    /// Deletes a series and its samples, durably; returns how many samples it held. Workloads on it
    /// keep their last plan and are replanned at once, which fails with `UnknownSeries` (logged,
    /// counted in `prescale_plan_refresh_failures_total`) until samples of it arrive again. Its
    /// models stay in the registry (and live): a series that comes back is served by its last
    /// model re-anchored on the new samples, until the next retrain. Blocking: writes the log.
    pub fn delete_series(&self, series: &SeriesId) -> Result<usize, AppError> {
        let samples = self.history.store().delete_series(series)?;
        self.models.lock().retain(|(cached, _), _| cached != series);
        self.mark_due(series);
        self.replan.notify_one();
        Ok(samples)
    }

    /// The newest `history_window` of `series` on its median step, bucket means.
    pub fn recent_history(&self, series: &SeriesId) -> Result<TimeSeries, AppError> {
        self.history
            .recent_window(series, self.settings.history_window)
    }
}
