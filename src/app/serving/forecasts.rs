//! Forecasts: the served forecast and its model, model versions, requested horizons, and the cache
//! of single-member fits (the ensemble is served from the live models, see `live_models`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::app::{AppError, ModelChoice, fit, forecast_with_events, parse_horizon};
use crate::domain::{Forecast, Horizon, Level, SeriesId, Step, TimeRange, TimeSeries};
use crate::events::AppliedEvent;
use crate::forecast::{FittedModel, Predict};

use super::live_models::LiveModel;
use super::{ServingState, blocking};

/// The model behind a served forecast: a live model re-anchored on the newest data (ensemble), or
/// a single-member fit kept for forecast requests.
#[derive(Debug)]
pub struct CachedModel {
    /// See [`model_version`]; a live model's version ends in `-v<registry version>`.
    pub version: String,
    /// The model, forecasting from the end of the newest data.
    pub model: FittedModel,
    /// The stretch of history it was fitted on.
    pub trained: TimeRange,
    /// Use mark of the single-member cache (least recently used go first).
    last_used: AtomicU64,
}

/// A forecast with the model that made it.
#[derive(Debug)]
pub struct ServedForecast {
    /// The forecast, with the upcoming events applied.
    pub forecast: Forecast,
    /// The model.
    pub model: Arc<CachedModel>,
    /// Which model was asked for.
    pub choice: ModelChoice,
    /// Planned events whose uplift was applied.
    pub applied_events: Vec<AppliedEvent>,
    /// Planned events in the forecast that could not be applied (no past occurrence to learn
    /// from).
    pub skipped_events: Vec<String>,
}

/// Opaque model version: the model kind, the end of its training window and a CRC-32 of the training
/// values, so the same data and model give the same version and any new sample gives a new one.
pub fn model_version(choice: ModelChoice, history: &TimeSeries) -> String {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&history.start().as_millis().to_le_bytes());
    hasher.update(&history.step().as_millis().to_le_bytes());
    for value in history.values() {
        hasher.update(&value.to_bits().to_le_bytes());
    }
    format!(
        "{choice}-{}-{:08x}",
        history.end().as_millis(),
        hasher.finalize()
    )
}

/// Version of a served live model: the data it was re-anchored on (see [`model_version`]) and its
/// registry version, so a new sample or a promotion gives a new one.
pub(super) fn live_version(registry_version: u64, history: &TimeSeries) -> String {
    format!(
        "{}-v{registry_version}",
        model_version(ModelChoice::Ensemble, history)
    )
}

impl ServingState {
    /// Parses a requested horizon against `step` and the configured maximum; empty is the plan
    /// horizon.
    pub fn horizon(&self, text: &str, step: Step) -> Result<Horizon, AppError> {
        let text = if text.trim().is_empty() {
            humantime::format_duration(self.settings.plan_horizon).to_string()
        } else {
            text.to_owned()
        };
        let horizon = parse_horizon(&text, step)?;
        let max_steps = (self.settings.max_horizon.as_millis() / step.as_millis() as u128) as usize;
        if horizon.steps() > max_steps {
            return Err(AppError::InvalidRequest {
                reason: format!(
                    "horizon {text} is {} steps of {step}; the server allows at most {} ({})",
                    horizon.steps(),
                    max_steps,
                    humantime::format_duration(self.settings.max_horizon)
                ),
            });
        }
        Ok(horizon)
    }

    /// Forecasts `series` with `choice`: the ensemble from the live model re-anchored on the newest
    /// data (trained on first use when the series has none); a single member from a fit cached until
    /// a new sample arrives. The history is read, the live model re-anchored and a first-use model
    /// trained from the blocking pool; fitting and predicting run on the fit threads,
    /// `max_concurrent_fits` at a time. Stored events are masked out of the history and those
    /// in the forecast applied, as plans apply them (see [`forecast_with_events`]).
    pub async fn forecast(
        self: &Arc<Self>,
        series: SeriesId,
        horizon: String,
        levels: Vec<Level>,
        choice: ModelChoice,
    ) -> Result<ServedForecast, AppError> {
        let state = Arc::clone(self);
        let wanted = series.clone();
        let served = if choice == ModelChoice::Ensemble {
            let (history, horizon, live, anchored) = blocking(move || {
                let history = state.events.load()?.mask(&state.recent_history(&series)?);
                let horizon = state.horizon(&horizon, history.step())?;
                let live = state.live_model(&series)?;
                // Here, on the blocking pool inside the runtime, so that a model that cannot be
                // re-anchored can start its background refit.
                let anchored = state.reanchor_live(&series, &live, &history)?;
                state.refit_on_level_shift(&series, &live, &history);
                Ok((history, horizon, live, anchored))
            })
            .await?;
            let state = Arc::clone(self);
            self.run_blocking(move || {
                state.live_forecast(&live, anchored, &history, horizon, &levels)
            })
            .await?
        } else {
            self.run_blocking(move || {
                let history = state.events.load()?.mask(&state.recent_history(&series)?);
                let horizon = state.horizon(&horizon, history.step())?;
                let model = state.model_for(&series, choice, &history)?;
                let forecast = model.model.predict(horizon, &levels)?;
                Ok(ServedForecast {
                    forecast,
                    model,
                    choice,
                    applied_events: Vec::new(),
                    skipped_events: Vec::new(),
                })
            })
            .await?
        };
        self.apply_events(wanted, served).await
    }

    /// `served` with the stored events that reach into it applied. Most forecasts have none and
    /// come back as they are; otherwise the events' uplifts are learned, each past occurrence
    /// costing a fit, as a plan learns them.
    async fn apply_events(
        self: &Arc<Self>,
        series: SeriesId,
        served: ServedForecast,
    ) -> Result<ServedForecast, AppError> {
        let calendar = self.events.load()?;
        let base = &served.forecast;
        let upcoming = calendar
            .reaching(base, Duration::ZERO)
            .events()
            .iter()
            .any(|event| event.range().to() > base.start());
        if !upcoming {
            return Ok(served);
        }
        let state = Arc::clone(self);
        blocking(move || {
            let history = state.recent_history(&series)?;
            let horizon = Horizon::try_from(served.forecast.len())?;
            let levels: Vec<Level> = served
                .forecast
                .intervals()
                .iter()
                .map(|interval| interval.level)
                .collect();
            let apply =
                |forecast_with: &dyn Fn(&TimeSeries, Horizon) -> Result<Forecast, AppError>| {
                    forecast_with_events(
                        &history,
                        horizon,
                        &calendar,
                        &forecast_with,
                        Duration::ZERO,
                    )
                };
            let with_events = match served.choice {
                ModelChoice::Ensemble => {
                    let live = state.live_model(&series)?;
                    apply(&state.live_forecaster(&series, &live, &levels))?
                }
                choice => apply(&state.member_forecaster(choice, &served.model, &levels))?,
            };
            Ok(ServedForecast {
                forecast: with_events.forecast,
                applied_events: with_events.applied,
                skipped_events: with_events.skipped,
                ..served
            })
        })
        .await
    }

    /// The base forecaster of plans and of forecasts with events: the live model re-anchored on
    /// windows that reach its training data; a fit for windows ending before it (learning an
    /// event's uplift forecasts from before each past occurrence, and no stored model forecasts
    /// from before its training data). Runs on the blocking pool.
    pub(super) fn live_forecaster<'a>(
        self: &'a Arc<Self>,
        series: &'a SeriesId,
        live: &'a LiveModel,
        levels: &'a [Level],
    ) -> impl Fn(&TimeSeries, Horizon) -> Result<Forecast, AppError> + 'a {
        move |window: &TimeSeries, horizon: Horizon| {
            if window.end() >= live.model.trained_end() {
                let anchored = self.reanchor_live(series, live, window)?;
                return Ok(anchored.predict(horizon, levels)?);
            }
            self.metrics.model_fits.inc();
            let (window, levels) = (window.clone(), levels.to_vec());
            self.fit_blocking(move || {
                Ok(fit(&window, ModelChoice::Ensemble)?.predict(horizon, &levels)?)
            })
        }
    }

    /// [`ServingState::live_forecaster`] for a single member: `model`, fitted on the newest
    /// history, forecasts from its end; earlier windows take a fit. Runs on the blocking pool.
    fn member_forecaster<'a>(
        self: &'a Arc<Self>,
        choice: ModelChoice,
        model: &'a CachedModel,
        levels: &'a [Level],
    ) -> impl Fn(&TimeSeries, Horizon) -> Result<Forecast, AppError> + 'a {
        move |window: &TimeSeries, horizon: Horizon| {
            if window.end() >= model.trained.to() {
                return Ok(model.model.predict(horizon, levels)?);
            }
            self.metrics.model_fits.inc();
            let (window, levels) = (window.clone(), levels.to_vec());
            self.fit_blocking(move || Ok(fit(&window, choice)?.predict(horizon, &levels)?))
        }
    }

    /// The ensemble forecast of `anchored`, the live model `live` re-anchored on `history`. CPU
    /// work: runs on a fit thread.
    fn live_forecast(
        &self,
        live: &LiveModel,
        anchored: FittedModel,
        history: &TimeSeries,
        horizon: Horizon,
        levels: &[Level],
    ) -> Result<ServedForecast, AppError> {
        let forecast = anchored.predict(horizon, levels)?;
        let trained = TimeRange::new(live.model.trained_start(), live.model.trained_end())
            .expect("invariant: a fitted history is not empty");
        Ok(ServedForecast {
            forecast,
            model: Arc::new(CachedModel {
                version: live_version(live.version, history),
                model: anchored,
                trained,
                last_used: AtomicU64::new(0),
            }),
            choice: ModelChoice::Ensemble,
            applied_events: Vec::new(),
            skipped_events: Vec::new(),
        })
    }

    /// The cached single-member model of `series` fitted on exactly `history`, or a new fit that
    /// replaces it.
    fn model_for(
        &self,
        series: &SeriesId,
        choice: ModelChoice,
        history: &TimeSeries,
    ) -> Result<Arc<CachedModel>, AppError> {
        let version = model_version(choice, history);
        let key = (series.clone(), choice);
        let use_mark = self.model_uses.fetch_add(1, Ordering::Relaxed);
        if let Some(cached) = self.models.lock().get(&key)
            && cached.version == version
        {
            cached.last_used.store(use_mark, Ordering::Relaxed);
            return Ok(Arc::clone(cached));
        }
        let model = fit(history, choice).inspect_err(|_| self.metrics.model_errors.inc())?;
        self.metrics.model_fits.inc();
        let trained = TimeRange::new(history.start(), history.end())
            .expect("invariant: a fitted history is not empty");
        let cached = Arc::new(CachedModel {
            version,
            model,
            trained,
            last_used: AtomicU64::new(use_mark),
        });
        let mut models = self.models.lock();
        models.insert(key, Arc::clone(&cached));
        while models.len() > self.settings.model_cache_entries.max(1) {
            let oldest = models
                .iter()
                .min_by_key(|(_, model)| model.last_used.load(Ordering::Relaxed))
                .map(|(key, _)| key.clone())
                .expect("invariant: the cache is not empty");
            models.remove(&oldest);
        }
        Ok(cached)
    }
}

#[cfg(test)]
mod tests {
    use super::super::sample_state;
    use super::*;
    use crate::app::SystemClock;

    /// Ensemble forecasts re-anchor and predict on the fit threads, so `max_concurrent_fits`
    /// bounds them as it bounds fits: each one, after the first use trained the model, is one task
    /// of the fit pool.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn ensemble_forecasts_run_on_the_fit_threads() {
        let directory = tempfile::tempdir().unwrap();
        let state = sample_state(directory.path(), Arc::new(SystemClock));
        let series: SeriesId = "nyc_taxi".parse().unwrap();
        let forecast = || {
            state.forecast(
                series.clone(),
                "1d".to_owned(),
                Level::DEFAULTS.to_vec(),
                ModelChoice::Ensemble,
            )
        };
        forecast().await.unwrap();
        let before = state.fits.tasks_started();
        for _ in 0..3 {
            forecast().await.unwrap();
        }
        assert_eq!(state.fits.tasks_started() - before, 3);
    }
}
