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
//! Everything lives in one [`ServingState`] value (no process-global state), so a process can hold several
//! (tests, or one per shard) and a replica that owns a shard of the series is a second value over
//! another [`MetricStore`](crate::store::MetricStore).
//!
//! One file per concern, each an `impl ServingState` block: `ingest`, `forecasts`, `live_models`,
//! `workloads`, `applied`, `plans`, `retrain_jobs`, `events`, `maintenance`, `sources`; `settings` holds
//! [`Settings`].

mod applied;
mod events;
mod fleet;
mod fleet_applied;
mod fleet_events;
mod fleet_handover;
mod fleet_models;
mod fleet_push;
mod fleet_workloads;
mod forecasts;
mod ingest;
mod live_models;
mod maintenance;
mod plans;
mod retrain_jobs;
mod settings;
mod sources;
mod workloads;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use parking_lot::{Mutex, RwLock};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::domain::{SeriesId, Timestamp};
use crate::fleet::Coordinator;
use crate::forecast::LevelShift;
use crate::registry::Registry;

use super::telemetry::Telemetry;
use super::{AppError, Clock, EventStore, FitPool, FitPriority, History, ModelChoice, SystemClock};

pub use applied::Applied;
pub use fleet::{Placement, Unavailable};
pub use forecasts::{CachedModel, ServedForecast, model_version};
pub use plans::{PlanState, PublishedPlan};
pub use retrain_jobs::{Job, JobState};
pub use settings::{Settings, SourceTiming};
pub use sources::SourceStatus;

use applied::AppliedSaves;
use live_models::{LiveModel, load_live_models};
use sources::Follower;
use workloads::{WorkloadEntry, read_workloads};

/// What a serving process holds over the [`History`]: workloads and their latest plans, the live
/// models, retraining jobs and events, and the background tasks that keep them current. The CLI's
/// one-shot commands use the [`History`] alone.
#[derive(Debug)]
pub struct ServingState {
    /// The metric history and its use cases (ingest, windows, export), as the CLI has them.
    history: History,
    /// Planned events, stored in the data directory; every plan and retrain reads them.
    events: EventStore,
    /// Where the workloads file and the events live (and the registry, unless `models_dir`).
    data_dir: PathBuf,
    /// How plans are made and work is bounded; fixed for the life of the state.
    settings: Settings,
    /// Counters and histograms `/metrics` shows; shared with the service's request layer.
    metrics: Arc<Telemetry>,
    /// Every stored workload by name, with its plan state. The map is locked only to add, remove
    /// or list entries; each entry has its own locks, so a refresh never blocks the others.
    workloads: RwLock<BTreeMap<String, Arc<WorkloadEntry>>>,
    /// Alone, the applied file the reports of applied replicas are saved in, as it is written.
    applied_saves: AppliedSaves,
    /// Versioned models on disk; the live ones are mirrored in `live`.
    registry: Registry,
    /// The live model of every series that has one. An entry is replaced whole on promotion, so a
    /// reader holds the old or the new model, never a mix, and never waits on a fit.
    live: RwLock<HashMap<SeriesId, Arc<LiveModel>>>,
    /// One lock per series being trained on first use, so concurrent requests fit it once.
    first_use: Mutex<HashMap<SeriesId, Arc<Mutex<()>>>>,
    /// Series whose live model could not be re-anchored and is being refitted in the background,
    /// so each is refitted once however many plans and forecasts find it stale.
    refits: Mutex<HashSet<SeriesId>>,
    /// The level shift the last background refit of each series was started for (see
    /// `refit_on_level_shift`), so a shift starts one refit however often it is seen.
    shift_refits: Mutex<HashMap<SeriesId, LevelShift>>,
    /// Single-member fits for forecast requests (the ensemble is served from `live`).
    models: Mutex<HashMap<(SeriesId, ModelChoice), Arc<CachedModel>>>,
    /// Use counter of `models`: each lookup takes the next mark, and the entry with the lowest
    /// mark is evicted first when the cache is over `model_cache_entries`.
    model_uses: AtomicU64,
    /// Every retraining job started since the process began, by id, so `GetJob` can follow it.
    jobs: Mutex<BTreeMap<String, Arc<Job>>>,
    /// The number of the last job started; ids are `retrain-<n>`.
    job_ids: AtomicU64,
    /// Fits run here, below the serving threads' priority; closed when the planner stops.
    fits: FitPool,
    /// Set once the planner has stopped on shutdown: no new fit is queued after it, so draining
    /// ends.
    fits_closed: AtomicBool,
    /// Wakes the planner before its next tick: enough new samples, an upsert, an event, a
    /// promotion.
    replan: Notify,
    /// Cancelled on shutdown: watch streams end, background loops return, jobs start no new
    /// series.
    shutdown: CancellationToken,
    /// The tasks feeding server streams (`WatchPlans`, the scaler's streams, streams passed on
    /// from another replica): each holds this state, and a server's shutdown waits for them, so
    /// that nothing holds the store once the server has stopped.
    streams: TaskTracker,
    /// The date the retraining schedule follows and jobs and plans are stamped with: the system's
    /// clock, or in tests one that follows tokio's paused time.
    clock: Arc<dyn Clock>,
    /// The follower of each workload with a history source, by workload name; `run_sources` starts
    /// and stops them, `GetWorkload` reads their status.
    followers: Mutex<HashMap<String, Follower>>,
    /// Wakes `run_sources` when workloads were upserted or deleted.
    sources_changed: Notify,
    /// The fleet this replica has joined (set once, before serving); unset, it runs alone and
    /// owns every workload.
    fleet: OnceLock<Arc<dyn Coordinator>>,
    /// In a fleet with a model store, the store and the fleet's live pointers (set once, before
    /// joining); unset, models are the registry's.
    shared_models: OnceLock<fleet_models::SharedModels>,
    /// In a fleet, the TSDB pushed samples are written through to and refilled from (set once,
    /// before serving); unset, pushed samples stay in this replica's store only.
    tsdb: OnceLock<fleet_push::FleetTsdb>,
    /// In a fleet, the pushed series this replica owns and those it is refilling from the TSDB.
    refills: Mutex<fleet_push::Refills>,
    /// Wakes the refills when a re-sync found gained pushed series.
    refill_wake: Notify,
}

impl ServingState {
    /// Serving state over `history`, keeping workloads, reports of applied replicas and events in
    /// `data_dir`; loads stored workloads with their reports and every live model of the registry. A live model file that fails its check is reported
    /// (log and `prescale_model_load_failures_total`) and the newest earlier live version is served;
    /// a series with none readable is trained on first use. A manifest that does not decode is moved
    /// aside and the registry starts empty (log and `prescale_registry_manifest_resets_total`; see
    /// [`Registry::open_or_set_aside`]). Blocking: reads the model files.
    pub fn open(
        history: History,
        data_dir: impl Into<PathBuf>,
        settings: Settings,
        metrics: Arc<Telemetry>,
    ) -> Result<Arc<Self>, AppError> {
        Self::open_with_clock(history, data_dir, settings, metrics, Arc::new(SystemClock))
    }

    /// As [`ServingState::open`], reading dates from `clock` (a test's [`super::TokioClock`]).
    pub fn open_with_clock(
        history: History,
        data_dir: impl Into<PathBuf>,
        settings: Settings,
        metrics: Arc<Telemetry>,
        clock: Arc<dyn Clock>,
    ) -> Result<Arc<Self>, AppError> {
        let data_dir = data_dir.into();
        let stored = read_workloads(&data_dir)?;
        let workloads = stored
            .into_iter()
            .map(|workload| (workload.name().to_owned(), WorkloadEntry::new(workload)))
            .collect();
        let (registry, set_aside) = Registry::open_or_set_aside(
            settings
                .models_dir
                .clone()
                .unwrap_or_else(|| data_dir.join("models")),
        )?;
        let registry = registry.with_keep_versions(settings.keep_versions);
        if let Some(aside) = set_aside {
            metrics.manifest_resets.inc();
            tracing::error!(moved_to = %aside.moved_to.display(), reason = %aside.reason, "the registry manifest is corrupt: moved aside; serving starts with no live models and trains each series on first use");
        }
        let live = load_live_models(&registry, &metrics);
        metrics.set_replan_interval(settings.replan_interval);
        let state = Arc::new(Self {
            history,
            registry,
            live: RwLock::new(live),
            first_use: Mutex::new(HashMap::new()),
            refits: Mutex::new(HashSet::new()),
            shift_refits: Mutex::new(HashMap::new()),
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
            applied_saves: AppliedSaves::default(),
            models: Mutex::new(HashMap::new()),
            model_uses: AtomicU64::new(0),
            jobs: Mutex::new(BTreeMap::new()),
            job_ids: AtomicU64::new(0),
            replan: Notify::new(),
            shutdown: CancellationToken::new(),
            streams: TaskTracker::new(),
            clock,
            followers: Mutex::new(HashMap::new()),
            sources_changed: Notify::new(),
            fleet: OnceLock::new(),
            shared_models: OnceLock::new(),
            tsdb: OnceLock::new(),
            refills: Mutex::default(),
            refill_wake: Notify::new(),
        });
        state.hold_saved_applied(&state.workloads.read())?;
        Ok(state)
    }

    /// The metric history the state serves.
    pub fn history(&self) -> &History {
        &self.history
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
    pub fn metrics(&self) -> &Arc<Telemetry> {
        &self.metrics
    }

    /// The current date, as the state's clock reads it.
    pub fn now(&self) -> Timestamp {
        self.clock.timestamp()
    }

    /// Cancelled when the server shuts down: watch streams end and background work drains.
    pub fn shutdown_token(&self) -> &CancellationToken {
        &self.shutdown
    }

    /// Runs `task`, the feeder of a server stream, until it ends by itself (on shutdown, when the
    /// shutdown token is cancelled); [`Self::streams_ended`] waits for it.
    pub fn spawn_stream(&self, task: impl Future<Output = ()> + Send + 'static) {
        self.streams.spawn(task);
    }

    /// Completes once every task started by [`Self::spawn_stream`] has ended and dropped what it
    /// held; for the server's shutdown, after the shutdown token is cancelled.
    pub async fn streams_ended(&self) {
        self.streams.close();
        self.streams.wait().await;
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
}

/// Runs blocking `work` on the blocking pool (for work that fits at most through
/// [`ServingState::fit_blocking`]).
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

/// A serving state over the repository's sample series (`nyc_taxi` and the others) in `dir`, with
/// default settings and dates from `clock`.
#[cfg(test)]
fn sample_state(dir: &std::path::Path, clock: Arc<dyn Clock>) -> Arc<ServingState> {
    use crate::store::{PolarsStore, StoreOptions};

    let store = PolarsStore::open(dir, StoreOptions::default()).unwrap();
    let history = History::new(Arc::new(store));
    history.import_samples().unwrap();
    ServingState::open_with_clock(
        history,
        dir,
        Settings::default(),
        Arc::new(Telemetry::default()),
        clock,
    )
    .unwrap()
}
