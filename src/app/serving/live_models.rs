//! The live models: the promoted model of every series, read from the registry at start, trained
//! once on first use when a series has none, swapped in whole on promotion, and re-read when
//! another process promotes or rolls back a version.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::app::telemetry::Telemetry;
use crate::app::{AppError, ModelChoice, fit_served, unfitted_level_shift};
use crate::domain::{SeriesId, TimeSeries, Timestamp};
use crate::forecast::FittedModel;
use crate::registry::Registry;

use super::{ServingState, blocking};

/// A promoted model as served: re-anchored on the newest data for every forecast and plan.
#[derive(Debug)]
pub(super) struct LiveModel {
    /// Its version in the registry.
    pub(super) version: u64,
    /// The model as trained (forecasting from its training end until re-anchored).
    pub(super) model: FittedModel,
    /// The end of the newest history checked for a level shift the model was not fitted with
    /// (see [`ServingState::refit_on_level_shift`]): only newer history is checked again.
    shift_checked: Mutex<Option<Timestamp>>,
}

impl LiveModel {
    /// Version `version` of a series' model, `model`, as served.
    pub(super) fn new(version: u64, model: FittedModel) -> Self {
        Self {
            version,
            model,
            shift_checked: Mutex::new(None),
        }
    }
}

impl ServingState {
    /// The live model of `series`; when it has none, fits one on the newest history (event windows
    /// masked, as retraining does), registers it as promoted and serves it from then on. Blocking.
    pub(super) fn live_model(&self, series: &SeriesId) -> Result<Arc<LiveModel>, AppError> {
        if let Some(live) = self.live.read().get(series) {
            return Ok(Arc::clone(live));
        }
        let lock = Arc::clone(self.first_use.lock().entry(series.clone()).or_default());
        let trained = {
            let _training = lock.lock();
            // Bound first: a read guard held across `train_first` would deadlock its write.
            let trained_meanwhile = self.live.read().get(series).cloned();
            match trained_meanwhile {
                Some(live) => Ok(live),
                None => self.train_first(series),
            }
        };
        self.first_use.lock().remove(series);
        trained
    }

    /// Fits, registers and promotes the first model of `series`; with the fleet's shared models,
    /// serves the version its pointer names instead, when it has one. Blocking.
    fn train_first(&self, series: &SeriesId) -> Result<Arc<LiveModel>, AppError> {
        if let Some(live) = self.load_shared_live(series)? {
            return Ok(live);
        }
        let live = self.fit_live(
            series,
            "first use: the series had no live model",
            |history| self.fit_blocking(move || fit_served(&history, ModelChoice::Ensemble)),
        )?;
        tracing::info!(series = %series, version = live.version, "trained the first model on first use");
        Ok(live)
    }

    /// Fits a model of `series` with `fit_with` on its newest history (event windows masked, as
    /// retraining does), registers it as promoted with `note` and makes it live. Blocking.
    fn fit_live(
        &self,
        series: &SeriesId,
        note: &str,
        fit_with: impl FnOnce(TimeSeries) -> Result<FittedModel, AppError>,
    ) -> Result<Arc<LiveModel>, AppError> {
        let history = self.events.load()?.mask(&self.recent_history(series)?);
        let model = fit_with(history).inspect_err(|_| self.metrics.model_errors.inc())?;
        self.metrics.model_fits.inc();
        let version = if self.shares_models() {
            self.publish_blocking(series, &model, note)?
        } else {
            self.registry.add(series, &model, true, note)?.version
        };
        Ok(self.promote(series, version, model))
    }

    /// `live`, the live model of `series`, re-anchored on `history`, the series' newest data.
    /// When it cannot be (the series' step changed, its grid moved), the series is refitted in
    /// the background and this fails with [`AppError::Refitting`]: each workload keeps its last
    /// good plan meanwhile, and is replanned once the refitted model is live. Blocking.
    pub(super) fn reanchor_live(
        self: &Arc<Self>,
        series: &SeriesId,
        live: &LiveModel,
        history: &TimeSeries,
    ) -> Result<FittedModel, AppError> {
        live.model.reanchor(history).map_err(|error| {
            self.metrics.model_errors.inc();
            let reason = error.to_string();
            self.refit_in_background(
                series,
                &format!("the live model could not be re-anchored on the newest data: {reason}"),
            );
            AppError::Refitting {
                series: series.clone(),
                reason,
            }
        })
    }

    /// Starts a background refit of `series` when `history`, its newest data with event windows
    /// masked, holds a level shift that a fit would now find but `live` was not fitted with
    /// ([`unfitted_level_shift`]): re-anchored, `live` follows the newest points with its lags
    /// but keeps the level and bands it learned, so its upper bounds stay on the old level until
    /// the next retrain. `live` serves meanwhile. Only history newer than `live`'s last check is
    /// checked (preprocessing only, no fit), and each shift starts one refit. Blocking.
    pub(super) fn refit_on_level_shift(
        self: &Arc<Self>,
        series: &SeriesId,
        live: &LiveModel,
        history: &TimeSeries,
    ) {
        {
            let mut checked = live.shift_checked.lock();
            if checked.is_some_and(|end| end >= history.end()) {
                return;
            }
            *checked = Some(history.end());
        }
        let refitting_for = self.shift_refits.lock().get(series).copied();
        let shift = match unfitted_level_shift(&live.model, history, refitting_for.as_ref()) {
            Ok(Some(shift)) => shift,
            Ok(None) => return,
            Err(error) => {
                tracing::debug!(series = %series, %error, "no level-shift check on this history");
                return;
            }
        };
        let started = self.refit_in_background(
            series,
            &format!(
                "the newest data shows a level shift the live model (version {}) was not fitted \
                 with: from {:.4} to {:.4} at {}",
                live.version, shift.before, shift.after, shift.at
            ),
        );
        // With a refit already under way, newer data is checked again against what it makes live.
        if started {
            self.shift_refits.lock().insert(series.clone(), shift);
            self.metrics.level_shift_refits.inc();
        }
    }

    /// Refits `series` on the fit threads, unless a refit of it is under way, registers the new
    /// model as a promoted version (as a first-use fit does) and replans its workloads. `why` says
    /// why the live model should not serve on. Returns whether it started one. Must run inside the
    /// runtime.
    fn refit_in_background(self: &Arc<Self>, series: &SeriesId, why: &str) -> bool {
        if !self.refits.lock().insert(series.clone()) {
            return false;
        }
        self.metrics.model_refits.inc();
        tracing::warn!(series = %series, reason = %why, "refitting the live model in the background; plans stay as they were until then");
        let note = format!("refit: {why}");
        let (state, series) = (Arc::clone(self), series.clone());
        tokio::runtime::Handle::current().spawn(async move {
            let (worker, target) = (Arc::clone(&state), series.clone());
            // On the blocking pool, the fit on the fit threads: storing a shared model reaches the
            // model store and etcd through the runtime.
            let refitted = blocking(move || {
                worker.fit_live(&target, &note, |history| {
                    worker.fit_blocking(move || fit_served(&history, ModelChoice::Ensemble))
                })
            })
            .await;
            state.refits.lock().remove(&series);
            match refitted {
                Ok(live) => {
                    tracing::info!(series = %series, version = live.version, "the refitted model is live; replanning");
                    state.mark_due(&series);
                    state.replan.notify_one();
                }
                Err(AppError::ShuttingDown) => {}
                Err(error) => {
                    tracing::error!(series = %series, %error, "the background refit failed; the next plan or forecast starts another");
                }
            }
        });
        true
    }

    /// Makes `model` (registry version `version`) the live model of `series`, unless a newer
    /// version is live already; returns the one now live.
    pub(super) fn promote(
        &self,
        series: &SeriesId,
        version: u64,
        model: FittedModel,
    ) -> Arc<LiveModel> {
        let mut live = self.live.write();
        if let Some(current) = live.get(series)
            && current.version > version
        {
            return Arc::clone(current);
        }
        self.metrics.models_promoted.inc();
        let promoted = Arc::new(LiveModel::new(version, model));
        live.insert(series.clone(), Arc::clone(&promoted));
        promoted
    }

    /// The registry version of the live model of `series`, if it has one.
    pub fn live_version(&self, series: &SeriesId) -> Option<u64> {
        self.live.read().get(series).map(|live| live.version)
    }

    /// Re-reads the registry's manifest every `registry_watch` until shutdown and serves what it
    /// names (see [`Self::sync_live_models`]).
    pub async fn run_registry_watch(self: Arc<Self>) {
        let Some(period) = self.settings.registry_watch else {
            return;
        };
        let mut ticks = tokio::time::interval(period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        loop {
            tokio::select! {
                () = self.shutdown.cancelled() => return,
                _ = ticks.tick() => {}
            }
            let state = Arc::clone(&self);
            match blocking(move || state.sync_live_models()).await {
                Ok(0) => {}
                Ok(swapped) => tracing::info!(swapped, "live models changed in the registry"),
                Err(error) => tracing::warn!(%error, "the registry manifest could not be read"),
            }
        }
    }

    /// Makes the live model of every series the version the registry's manifest names now, when
    /// another process changed it (a newer promoted version, or a rollback to an older one), and
    /// replans the workloads on those series. Nothing is fitted. Returns how many were swapped.
    /// Blocking (file reads).
    pub fn sync_live_models(&self) -> Result<usize, AppError> {
        // Shared models follow the fleet's pointers instead (`follow_model_pointers`).
        if self.shares_models() || !self.registry.reload_if_changed()? {
            return Ok(0);
        }
        let mut swapped = 0;
        for (series, version) in live_entries(&self.registry) {
            if self.live_version(&series) == Some(version) {
                continue;
            }
            // A corrupt named version falls back to an earlier one, which may be the one served.
            let Some(loaded) = read_live(&self.registry, &self.metrics, &series)
                .filter(|loaded| self.live_version(&series) != Some(loaded.version))
            else {
                continue;
            };
            self.metrics.models_loaded.inc();
            tracing::info!(series = %series, version = loaded.version, "serving the registry's live version");
            self.live.write().insert(series.clone(), Arc::new(loaded));
            self.mark_due(&series);
            swapped += 1;
        }
        if swapped > 0 {
            self.replan.notify_one();
        }
        Ok(swapped)
    }
}

/// The series with a live version in `registry`, and that version; names that do not parse are
/// reported and left out.
fn live_entries(registry: &Registry) -> Vec<(SeriesId, u64)> {
    registry
        .list()
        .into_iter()
        .filter_map(|(name, entry)| {
            let live = entry.live?;
            match name.parse() {
                Ok(series) => Some((series, live)),
                Err(error) => {
                    tracing::error!(series = %name, %error, "registry names a series that does not parse");
                    None
                }
            }
        })
        .collect()
}

/// The live model of `series` as the registry has it: a live file that fails its check is
/// reported (log and metric) and the newest earlier live version read instead; `None` when the
/// series has no live version or none readable (also reported).
fn read_live(registry: &Registry, metrics: &Telemetry, series: &SeriesId) -> Option<LiveModel> {
    match registry.load_live(series) {
        Ok(Some(loaded)) => {
            for (version, reason) in &loaded.skipped {
                metrics.model_load_failures.inc();
                tracing::error!(series = %series, version, %reason, serving = loaded.version, "live model file is corrupt; serving an earlier version");
            }
            Some(LiveModel::new(loaded.version, loaded.model))
        }
        Ok(None) => None,
        Err(error) => {
            metrics.model_load_failures.inc();
            tracing::error!(series = %series, %error, "no readable live model: the model served stays, or the series is trained on first use");
            None
        }
    }
}

/// The live model of every series of `registry` (see [`read_live`]); a series with none readable
/// is left to first use.
pub(super) fn load_live_models(
    registry: &Registry,
    metrics: &Telemetry,
) -> HashMap<SeriesId, Arc<LiveModel>> {
    live_entries(registry)
        .into_iter()
        .filter_map(|(series, _)| {
            let loaded = read_live(registry, metrics, &series)?;
            metrics.models_loaded.inc();
            Some((series, Arc::new(loaded)))
        })
        .collect()
}
