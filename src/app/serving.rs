//! The long-running application a server drives: stored workloads with their latest plans, the live
//! models of the registry, background replanning, retraining jobs (on request and on a schedule)
//! and the counters `/metrics` shows.
//!
//! Ensemble forecasts and plans come from each series' live (promoted) model re-anchored on the
//! newest data, never from a fit per request: the live models are read from the registry at start,
//! a series without one is trained once on first use (and that model registered as its first
//! version), and retraining swaps a promoted model in with one map insert. Single-member forecasts
//! (`model = "ets"` etc.) are not in the registry and are still fitted on demand, cached until a
//! new sample arrives.
//!
//! Everything lives in one [`AppState`] value (no process-global state), so a process can hold several
//! (tests, or one per shard) and a replica that owns a shard of the series is a second value over
//! another [`MetricStore`](crate::store::MetricStore).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::domain::{Forecast, Horizon, Level, SeriesId, Step, TimeRange, TimeSeries, Timestamp};
use crate::events::{Event, EventSpec};
use crate::forecast::{FittedModel, Predict};
use crate::plan::{Plan, Workload, WorkloadParams};
use crate::registry::{CronSchedule, Registry};
use crate::store::{SeriesSamples, SeriesSummary, write_file_atomically};

use super::metrics::Metrics;
use super::planning::{plan_levels, plan_with};
use super::{
    App, AppError, EventStore, FitPool, FitPriority, ModelChoice, RetrainSettings, fit,
    parse_horizon,
};

/// Name of the workloads file in the data directory.
const WORKLOADS_FILE: &str = "workloads.toml";

/// How the server plans and bounds its work. Validated by [`crate::config::Config`].
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Horizon of every plan and the default forecast horizon.
    pub plan_horizon: Duration,
    /// Longest horizon a forecast request may ask for.
    pub max_horizon: Duration,
    /// History models are fitted on: the newest stretch of this length.
    pub history_window: Duration,
    /// Every plan is recomputed at least this often.
    pub replan_interval: Duration,
    /// A workload's plan is recomputed as soon as this many new samples of its series arrived.
    pub replan_after_samples: u64,
    /// Fits (forecasts, plans, retraining) running at once, on threads of their own at a lower CPU
    /// priority than serving; the rest wait.
    pub max_concurrent_fits: usize,
    /// Fitted models kept for forecast requests (least recently used go first).
    pub model_cache_entries: usize,
    /// Samples older than this are dropped hourly (the store's retention); `None` keeps everything.
    pub retention: Option<Duration>,
    /// The model registry's directory; `None` is `<data_dir>/models`.
    pub models_dir: Option<PathBuf>,
    /// Retraining promotes a new model when its backtest MAE is at most `1 + margin` times the
    /// live model's on the same recent folds.
    pub promotion_margin: f64,
    /// When the server retrains every series; `None` never (`prescale serve` takes
    /// `[registry] schedule`).
    pub retrain_schedule: Option<CronSchedule>,
    /// How often the registry's manifest is re-read so that versions promoted or rolled back by
    /// another process are served; `None` never.
    pub registry_watch: Option<Duration>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            plan_horizon: Duration::from_secs(24 * 3600),
            max_horizon: Duration::from_secs(7 * 24 * 3600),
            history_window: Duration::from_secs(28 * 24 * 3600),
            replan_interval: Duration::from_secs(300),
            replan_after_samples: 12,
            max_concurrent_fits: 2,
            model_cache_entries: 1024,
            retention: None,
            models_dir: None,
            promotion_margin: 0.05,
            retrain_schedule: None,
            registry_watch: Some(Duration::from_secs(10)),
        }
    }
}

/// A plan as published to executors, with where it came from.
#[derive(Debug)]
pub struct PublishedPlan {
    /// Increases by one with every new plan of the workload.
    pub revision: u64,
    /// When it was computed.
    pub generated_at: Timestamp,
    /// The schedule.
    pub plan: Plan,
    /// Version of the model its forecast came from (see [`model_version`]).
    pub model_version: String,
    /// Planned events whose uplift was applied.
    pub applied_events: Vec<String>,
    /// Planned events that could not be applied, with why.
    pub skipped_events: Vec<String>,
}

/// The plan state of a workload.
#[derive(Debug, Clone)]
pub enum PlanState {
    /// The first plan is being computed.
    Pending,
    /// The latest plan.
    Ready(Arc<PublishedPlan>),
    /// The latest attempt failed; `last` is the newest plan that succeeded, if any.
    Failed {
        /// Why the latest attempt failed.
        error: Arc<AppError>,
        /// The newest good plan.
        last: Option<Arc<PublishedPlan>>,
    },
}

/// What an executor reported it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    /// Replicas running.
    pub replicas: u32,
    /// When they were applied.
    pub at: Timestamp,
}

/// A workload and the live state of its plan.
#[derive(Debug)]
struct WorkloadEntry {
    workload: RwLock<Workload>,
    plan: watch::Sender<PlanState>,
    applied: Mutex<Option<Applied>>,
    /// Samples of the workload's series stored since its last plan started.
    new_samples: AtomicU64,
    /// Replan at the next opportunity (schedule tick, upsert, retrain).
    due: AtomicBool,
    /// A refresh is running; another is not started until it ends.
    in_flight: AtomicBool,
    revision: AtomicU64,
}

impl WorkloadEntry {
    fn new(workload: Workload) -> Arc<Self> {
        Arc::new(Self {
            workload: RwLock::new(workload),
            plan: watch::Sender::new(PlanState::Pending),
            applied: Mutex::new(None),
            new_samples: AtomicU64::new(0),
            due: AtomicBool::new(true),
            in_flight: AtomicBool::new(false),
            revision: AtomicU64::new(0),
        })
    }
}

/// A promoted model as served: re-anchored on the newest data for every forecast and plan.
#[derive(Debug)]
struct LiveModel {
    /// Its version in the registry.
    version: u64,
    /// The model as trained (forecasting from its training end until re-anchored).
    model: FittedModel,
}

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
    /// The forecast.
    pub forecast: Forecast,
    /// The model.
    pub model: Arc<CachedModel>,
    /// Which model was asked for.
    pub choice: ModelChoice,
}

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
    done: AtomicU32,
    failures: Mutex<Vec<(SeriesId, String)>>,
    /// When it started.
    pub started_at: Timestamp,
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

/// The `[[workload]]` tables of the workloads file.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct WorkloadsFile {
    #[serde(default)]
    workload: Vec<WorkloadParams>,
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
fn live_version(registry_version: u64, history: &TimeSeries) -> String {
    format!(
        "{}-v{registry_version}",
        model_version(ModelChoice::Ensemble, history)
    )
}

/// The serving application: use cases of [`App`] plus workloads, plans, models and jobs.
#[derive(Debug)]
pub struct AppState {
    app: App,
    events: EventStore,
    data_dir: PathBuf,
    settings: Settings,
    metrics: Arc<Metrics>,
    workloads: RwLock<BTreeMap<String, Arc<WorkloadEntry>>>,
    /// Versioned models on disk; the live ones are mirrored in `live`.
    registry: Registry,
    /// The live model of every series that has one. An entry is replaced whole on promotion, so a
    /// reader holds the old or the new model, never a mix, and never waits on a fit.
    live: RwLock<HashMap<SeriesId, Arc<LiveModel>>>,
    /// One lock per series being trained on first use, so concurrent requests fit it once.
    first_use: Mutex<HashMap<SeriesId, Arc<Mutex<()>>>>,
    /// Single-member fits for forecast requests (the ensemble is served from `live`).
    models: Mutex<HashMap<(SeriesId, ModelChoice), Arc<CachedModel>>>,
    model_uses: AtomicU64,
    jobs: Mutex<BTreeMap<String, Arc<Job>>>,
    job_ids: AtomicU64,
    /// Fits run here, below the serving threads' priority; closed when the planner stops.
    fits: FitPool,
    fits_closed: AtomicBool,
    replan: Notify,
    shutdown: CancellationToken,
}

impl AppState {
    /// Serving state over `app`, keeping workloads and events in `data_dir`; loads stored workloads
    /// and every live model of the registry. A live model file that fails its check is reported
    /// (log and `prescale_model_load_failures_total`) and the newest earlier live version is served;
    /// a series with none readable is trained on first use. Blocking: reads the model files.
    pub fn open(
        app: App,
        data_dir: impl Into<PathBuf>,
        settings: Settings,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Self>, AppError> {
        let data_dir = data_dir.into();
        let stored = read_workloads(&data_dir)?;
        let workloads = stored
            .into_iter()
            .map(|workload| (workload.name().to_owned(), WorkloadEntry::new(workload)))
            .collect();
        let registry = Registry::open(
            settings
                .models_dir
                .clone()
                .unwrap_or_else(|| data_dir.join("models")),
        )?;
        let live = load_live_models(&registry, &metrics);
        Ok(Arc::new(Self {
            app,
            registry,
            live: RwLock::new(live),
            first_use: Mutex::new(HashMap::new()),
            events: EventStore::new(&data_dir),
            fits: FitPool::new(settings.max_concurrent_fits.max(1), FitPriority::Background)
                .map_err(|error| AppError::Worker {
                    reason: format!("cannot start the fit threads: {error}"),
                })?,
            fits_closed: AtomicBool::new(false),
            data_dir,
            settings,
            metrics,
            workloads: RwLock::new(workloads),
            models: Mutex::new(HashMap::new()),
            model_uses: AtomicU64::new(0),
            jobs: Mutex::new(BTreeMap::new()),
            job_ids: AtomicU64::new(0),
            replan: Notify::new(),
            shutdown: CancellationToken::new(),
        }))
    }

    /// The use cases over the store.
    pub fn app(&self) -> &App {
        &self.app
    }

    /// Planned events.
    pub fn events(&self) -> &EventStore {
        &self.events
    }

    /// The settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Counters for `/metrics`.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Cancelled when the server shuts down: watch streams end and background work drains.
    pub fn shutdown_token(&self) -> &CancellationToken {
        &self.shutdown
    }

    /// Runs CPU-heavy `work` on one of the `max_concurrent_fits` fit threads (queued until one is
    /// free), which run below the priority of the threads that answer calls.
    pub async fn run_blocking<T, F>(&self, work: F) -> Result<T, AppError>
    where
        F: FnOnce() -> Result<T, AppError> + Send + 'static,
        T: Send + 'static,
    {
        if self.fits_closed.load(Ordering::Acquire) {
            return Err(AppError::ShuttingDown);
        }
        self.fits.run(work).await
    }

    /// Runs a fit on the fit threads from blocking work (a thread of tokio's blocking pool, never an
    /// async thread nor a fit thread) and waits for it: for work that usually fits nothing (plans
    /// and forecasts re-anchor a live model) but sometimes must.
    fn fit_blocking<T, F>(&self, work: F) -> Result<T, AppError>
    where
        F: FnOnce() -> Result<T, AppError> + Send + 'static,
        T: Send + 'static,
    {
        tokio::runtime::Handle::current().block_on(self.run_blocking(work))
    }

    // ----- ingest -------------------------------------------------------------------------------

    /// Stores a batch (all or nothing) and schedules replans of workloads that received enough new
    /// samples. Blocking: the store writes its log.
    pub fn ingest(&self, batch: &[SeriesSamples]) -> Result<usize, AppError> {
        let accepted = self.app.store().append_batch(batch)?;
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
                .app
                .store()
                .summary(&exact)
                .is_ok_and(|s| s.samples > 0)
        {
            return Ok(exact);
        }
        let mut matching: Vec<SeriesId> = self
            .app
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
                    "selector {selector} matches {count} series (e.g. {} and {}); name one",
                    matching[0], matching[1]
                ),
            }),
        }
    }

    /// Summaries of every stored series.
    pub fn list_series(&self) -> Result<Vec<SeriesSummary>, AppError> {
        self.app.list_series()
    }

    /// The newest `history_window` of `series` on its median step, bucket means.
    pub fn recent_history(&self, series: &SeriesId) -> Result<TimeSeries, AppError> {
        self.app.recent_window(series, self.settings.history_window)
    }

    // ----- forecasts ----------------------------------------------------------------------------

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
    /// a new sample arrives. Runs on the blocking pool; fits run on the fit threads.
    pub async fn forecast(
        self: &Arc<Self>,
        series: SeriesId,
        horizon: String,
        levels: Vec<Level>,
        choice: ModelChoice,
    ) -> Result<ServedForecast, AppError> {
        let state = Arc::clone(self);
        if choice == ModelChoice::Ensemble {
            return blocking(move || {
                let history = state.recent_history(&series)?;
                let horizon = state.horizon(&horizon, history.step())?;
                let live = state.live_model(&series)?;
                let anchored = live
                    .model
                    .reanchor(&history)
                    .inspect_err(|_| state.metrics.model_errors.inc())?;
                let forecast = anchored.predict(horizon, &levels)?;
                let trained = TimeRange::new(live.model.trained_start(), live.model.trained_end())
                    .expect("invariant: a fitted history is not empty");
                Ok(ServedForecast {
                    forecast,
                    model: Arc::new(CachedModel {
                        version: live_version(live.version, &history),
                        model: anchored,
                        trained,
                        last_used: AtomicU64::new(0),
                    }),
                    choice,
                })
            })
            .await;
        }
        self.run_blocking(move || {
            let history = state.recent_history(&series)?;
            let horizon = state.horizon(&horizon, history.step())?;
            let model = state.model_for(&series, choice, &history)?;
            let forecast = model.model.predict(horizon, &levels)?;
            Ok(ServedForecast {
                forecast,
                model,
                choice,
            })
        })
        .await
    }

    /// The live model of `series`; when it has none, fits one on the newest history (event windows
    /// masked, as retraining does), registers it as promoted and serves it from then on. Blocking.
    fn live_model(&self, series: &SeriesId) -> Result<Arc<LiveModel>, AppError> {
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

    /// Fits, registers and promotes the first model of `series`. Blocking.
    fn train_first(&self, series: &SeriesId) -> Result<Arc<LiveModel>, AppError> {
        let history = self.events.load()?.mask(&self.recent_history(series)?);
        let model = self
            .fit_blocking(move || fit(&history, ModelChoice::Ensemble))
            .inspect_err(|_| self.metrics.model_errors.inc())?;
        self.metrics.model_fits.inc();
        let info = self.registry.add(
            series,
            &model,
            true,
            "first use: the series had no live model",
        )?;
        tracing::info!(series = %series, version = info.version, "trained the first model on first use");
        Ok(self.promote(series, info.version, model))
    }

    /// Makes `model` (registry version `version`) the live model of `series`, unless a newer
    /// version is live already; returns the one now live.
    fn promote(&self, series: &SeriesId, version: u64, model: FittedModel) -> Arc<LiveModel> {
        let mut live = self.live.write();
        if let Some(current) = live.get(series)
            && current.version > version
        {
            return Arc::clone(current);
        }
        self.metrics.models_promoted.inc();
        let promoted = Arc::new(LiveModel { version, model });
        live.insert(series.clone(), Arc::clone(&promoted));
        promoted
    }

    /// The registry version of the live model of `series`, if it has one.
    pub fn live_version(&self, series: &SeriesId) -> Option<u64> {
        self.live.read().get(series).map(|live| live.version)
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

    // ----- workloads and plans ------------------------------------------------------------------

    /// Validates and stores a workload (replacing one of the same name) and schedules its plan.
    /// Blocking: writes the workloads file.
    pub fn upsert_workload(&self, workload: Workload) -> Result<Workload, AppError> {
        let mut workloads = self.workloads.write();
        let mut stored = others(&workloads, workload.name());
        stored.push(workload.clone());
        write_workloads(&self.data_dir, &stored)?;
        match workloads.get(workload.name()) {
            Some(entry) => {
                *entry.workload.write() = workload.clone();
                entry.due.store(true, Ordering::Release);
            }
            None => {
                workloads.insert(
                    workload.name().to_owned(),
                    WorkloadEntry::new(workload.clone()),
                );
            }
        }
        drop(workloads);
        self.replan.notify_one();
        Ok(workload)
    }

    /// A stored workload.
    pub fn workload(&self, name: &str) -> Result<Workload, AppError> {
        Ok(self.entry(name)?.workload.read().clone())
    }

    /// Every stored workload, by name.
    pub fn workloads(&self) -> Vec<Workload> {
        self.workloads
            .read()
            .values()
            .map(|entry| entry.workload.read().clone())
            .collect()
    }

    /// Deletes a workload; its watch streams end. Blocking: writes the workloads file.
    pub fn delete_workload(&self, name: &str) -> Result<(), AppError> {
        let mut workloads = self.workloads.write();
        if !workloads.contains_key(name) {
            return Err(unknown_workload(name));
        }
        write_workloads(&self.data_dir, &others(&workloads, name))?;
        workloads.remove(name);
        Ok(())
    }

    fn entry(&self, name: &str) -> Result<Arc<WorkloadEntry>, AppError> {
        self.workloads
            .read()
            .get(name)
            .cloned()
            .ok_or_else(|| unknown_workload(name))
    }

    /// The latest plan state of a workload, without computing anything.
    pub fn plan(&self, name: &str) -> Result<PlanState, AppError> {
        Ok(self.entry(name)?.plan.borrow().clone())
    }

    /// A receiver of a workload's plan state: the current one at once, then every change. The
    /// sender goes away when the workload is deleted.
    pub fn watch_plan(&self, name: &str) -> Result<watch::Receiver<PlanState>, AppError> {
        Ok(self.entry(name)?.plan.subscribe())
    }

    /// Names of every workload.
    pub fn workload_names(&self) -> Vec<String> {
        self.workloads.read().keys().cloned().collect()
    }

    /// Records what the executor of `name` runs; later plans start from it.
    pub fn report_applied(&self, name: &str, applied: Applied) -> Result<(), AppError> {
        let entry = self.entry(name)?;
        *entry.applied.lock() = Some(applied);
        Ok(())
    }

    /// What the executor of `name` last reported.
    pub fn applied(&self, name: &str) -> Result<Option<Applied>, AppError> {
        Ok(*self.entry(name)?.applied.lock())
    }

    /// Computes a plan for `workload` from the newest history and the stored events, with the live
    /// model re-anchored on that history. Blocking.
    fn compute_plan(
        &self,
        workload: &Workload,
        running: Option<u32>,
    ) -> Result<(String, super::PlanOutcome), AppError> {
        let history = self.recent_history(workload.series())?;
        let horizon = self.horizon("", history.step())?;
        let calendar = self.events.load()?;
        let live = self.live_model(workload.series())?;
        let levels = plan_levels(workload);
        let forecast_with = |window: &TimeSeries, horizon: Horizon| -> Result<Forecast, AppError> {
            if window.end() >= live.model.trained_end() {
                return Ok(live.model.reanchor(window)?.predict(horizon, &levels)?);
            }
            // Learning an event's uplift forecasts from before each past occurrence; no stored
            // model forecasts from before its training data, so those take a fit.
            self.metrics.model_fits.inc();
            let (window, levels) = (window.clone(), levels.clone());
            self.fit_blocking(move || {
                Ok(fit(&window, ModelChoice::Ensemble)?.predict(horizon, &levels)?)
            })
        };
        let outcome = plan_with(
            &history,
            workload,
            horizon,
            &calendar,
            &forecast_with,
            running,
        )
        .inspect_err(|_| self.metrics.model_errors.inc())?;
        Ok((live_version(live.version, &history), outcome))
    }

    /// Recomputes the plan of `entry` on the blocking pool and publishes it.
    async fn refresh_plan(self: &Arc<Self>, entry: Arc<WorkloadEntry>) {
        let workload = entry.workload.read().clone();
        let running = entry.applied.lock().map(|applied| applied.replicas);
        let state = Arc::clone(self);
        let name = workload.name().to_owned();
        let computed = blocking(move || state.compute_plan(&workload, running)).await;
        match computed {
            Ok((model_version, outcome)) => {
                let revision = entry.revision.fetch_add(1, Ordering::AcqRel) + 1;
                let published = Arc::new(PublishedPlan {
                    revision,
                    generated_at: Timestamp::now(),
                    plan: outcome.plan,
                    model_version,
                    applied_events: outcome
                        .applied_events
                        .iter()
                        .map(|event| event.label.clone())
                        .collect(),
                    skipped_events: outcome.skipped_events,
                });
                self.metrics.plan_refreshes.inc();
                tracing::debug!(workload = %name, revision, "published plan");
                entry.plan.send_replace(PlanState::Ready(published));
            }
            Err(AppError::ShuttingDown) => {}
            Err(error) => {
                self.metrics.plan_failures.inc();
                tracing::warn!(workload = %name, %error, "plan refresh failed");
                let last = match &*entry.plan.borrow() {
                    PlanState::Ready(plan) => Some(Arc::clone(plan)),
                    PlanState::Failed { last, .. } => last.clone(),
                    PlanState::Pending => None,
                };
                entry.plan.send_replace(PlanState::Failed {
                    error: Arc::new(error),
                    last,
                });
            }
        }
    }

    /// Replans in the background until `shutdown`: every workload each `replan_interval`, and a
    /// workload as soon as `replan_after_samples` new samples of its series arrived or it was
    /// upserted. At most one refresh per workload runs at a time; fits share `max_concurrent_fits`.
    /// On shutdown, waits for refreshes in flight.
    pub async fn run_planner(self: Arc<Self>) {
        let mut tick = tokio::time::interval(self.settings.replan_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut running = JoinSet::new();
        loop {
            tokio::select! {
                () = self.shutdown.cancelled() => break,
                _ = tick.tick() => {
                    for entry in self.workloads.read().values() {
                        entry.due.store(true, Ordering::Release);
                    }
                }
                () = self.replan.notified() => {}
                Some(_) = running.join_next(), if !running.is_empty() => {}
            }
            let entries: Vec<Arc<WorkloadEntry>> =
                self.workloads.read().values().cloned().collect();
            for entry in entries {
                let enough =
                    entry.new_samples.load(Ordering::Acquire) >= self.settings.replan_after_samples;
                if !(entry.due.load(Ordering::Acquire) || enough)
                    || entry.in_flight.swap(true, Ordering::AcqRel)
                {
                    continue;
                }
                entry.due.store(false, Ordering::Release);
                entry.new_samples.store(0, Ordering::Release);
                let state = Arc::clone(&self);
                running.spawn(async move {
                    state.refresh_plan(Arc::clone(&entry)).await;
                    entry.in_flight.store(false, Ordering::Release);
                    // Samples or upserts that came in meanwhile get their turn.
                    state.replan.notify_one();
                });
            }
        }
        self.fits_closed.store(true, Ordering::Release);
        while running.join_next().await.is_some() {}
    }

    // ----- retraining ---------------------------------------------------------------------------

    /// Starts retraining `series` (every stored series when `None`) in the background, as
    /// `prescale retrain` does, and returns the job to follow. See [`AppState::run_retrain_job`].
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
                    self.app.store().summary(one)?;
                }
                series
            }
            None => self.app.store().series(),
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
            started_at: Timestamp::now(),
            finished_at: AtomicI64::new(0),
        });
        self.jobs.lock().insert(id, Arc::clone(&job));
        Ok((job, series))
    }

    /// Runs a retraining job: `max_concurrent_fits` workers take the series one by one, each fit on
    /// the fit threads, through the same [`super::retrain_series`] as the CLI
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
                    let worker = Arc::clone(&state);
                    let target = one.clone();
                    match state
                        .run_blocking(move || worker.retrain_one(&target))
                        .await
                    {
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
            .store(Timestamp::now().as_millis().max(1), Ordering::Release);
        tracing::info!(job = %job.id, done = job.done(), failed = job.failures.lock().len(), "retraining finished");
        self.replan.notify_one();
    }

    /// Retrains one series and swaps its model in when promoted. Blocking and CPU-heavy.
    fn retrain_one(&self, series: &SeriesId) -> Result<(), AppError> {
        let settings = RetrainSettings {
            history_window: self.settings.history_window,
            promotion_margin: self.settings.promotion_margin,
            concurrency: 1,
            dry_run: false,
            events: self.events.load()?,
        };
        let outcome = super::retrain_series(&self.app, &self.registry, series, &settings)
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
        if !self.registry.reload_if_changed()? {
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

    /// Runs the retraining job of every series at each time of `retrain_schedule` (UTC) until
    /// shutdown; a job still running when the next time comes delays that one.
    pub async fn run_retrain_schedule(self: Arc<Self>) {
        let Some(schedule) = self.settings.retrain_schedule.clone() else {
            return;
        };
        loop {
            let now = chrono::Utc::now();
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

    fn mark_due(&self, series: &SeriesId) {
        for entry in self.workloads.read().values() {
            if entry.workload.read().series() == series {
                entry.due.store(true, Ordering::Release);
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

    // ----- events -------------------------------------------------------------------------------

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

    fn mark_all_due(&self) {
        for entry in self.workloads.read().values() {
            entry.due.store(true, Ordering::Release);
        }
        self.replan.notify_one();
    }

    // ----- maintenance --------------------------------------------------------------------------

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
                    .app
                    .store()
                    .enforce_retention(Timestamp::now(), retention)
            })
            .await;
            match dropped {
                Ok(Ok(dropped)) => tracing::debug!(dropped, "retention enforced"),
                Ok(Err(error)) => tracing::warn!(%error, "retention failed"),
                Err(error) => tracing::warn!(%error, "retention worker failed"),
            }
        }
    }

    /// Flushes the store into its checkpoint files. Blocking.
    pub fn flush(&self) -> Result<(), AppError> {
        Ok(self.app.store().checkpoint()?)
    }
}

/// Runs blocking `work` on the blocking pool (for work that fits at most through
/// [`AppState::fit_blocking`]).
async fn blocking<T, F>(work: F) -> Result<T, AppError>
where
    F: FnOnce() -> Result<T, AppError> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|error| AppError::Worker {
            reason: error.to_string(),
        })?
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
fn read_live(registry: &Registry, metrics: &Metrics, series: &SeriesId) -> Option<LiveModel> {
    match registry.load_live(series) {
        Ok(Some(loaded)) => {
            for (version, reason) in &loaded.skipped {
                metrics.model_load_failures.inc();
                tracing::error!(series = %series, version, %reason, serving = loaded.version, "live model file is corrupt; serving an earlier version");
            }
            Some(LiveModel {
                version: loaded.version,
                model: loaded.model,
            })
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
fn load_live_models(registry: &Registry, metrics: &Metrics) -> HashMap<SeriesId, Arc<LiveModel>> {
    live_entries(registry)
        .into_iter()
        .filter_map(|(series, _)| {
            let loaded = read_live(registry, metrics, &series)?;
            metrics.models_loaded.inc();
            Some((series, Arc::new(loaded)))
        })
        .collect()
}

/// Every stored workload but the one called `name`.
fn others(workloads: &BTreeMap<String, Arc<WorkloadEntry>>, name: &str) -> Vec<Workload> {
    workloads
        .iter()
        .filter(|(key, _)| key.as_str() != name)
        .map(|(_, entry)| entry.workload.read().clone())
        .collect()
}

fn unknown_workload(name: &str) -> AppError {
    AppError::NotFound {
        kind: "workload",
        name: name.to_owned(),
    }
}

fn read_workloads(dir: &std::path::Path) -> Result<Vec<Workload>, AppError> {
    let path = dir.join(WORKLOADS_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(AppError::Output { path, source }),
    };
    let file: WorkloadsFile = toml::from_str(&text).map_err(|error| AppError::InvalidRequest {
        reason: format!("{}: {error}", path.display()),
    })?;
    file.workload
        .into_iter()
        .map(|params| Ok(params.check()?))
        .collect()
}

fn write_workloads(dir: &std::path::Path, workloads: &[Workload]) -> Result<(), AppError> {
    std::fs::create_dir_all(dir).map_err(|source| AppError::Output {
        path: dir.to_owned(),
        source,
    })?;
    let file = WorkloadsFile {
        workload: workloads.iter().map(WorkloadParams::from).collect(),
    };
    let text = toml::to_string(&file).map_err(|error| AppError::InvalidRequest {
        reason: format!("cannot encode workloads: {error}"),
    })?;
    write_file_atomically(dir, WORKLOADS_FILE, text.as_bytes())?;
    Ok(())
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
