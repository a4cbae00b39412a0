//! How the server plans and bounds its work: horizons, history, replanning, fit concurrency, the
//! model cache, retention and the registry's schedule.
//!
//! The one home of these settings: `crate::config::Config::settings` fills every field from its
//! configuration key (named on each field) and `prescale serve`, the demo and `bench-grpc` pass it
//! on from there; the store's retention and retraining's promotion margin are derived from it.

use std::path::PathBuf;
use std::time::Duration;

use crate::forecast::HistoryWindow;
use crate::registry::CronSchedule;

/// How the server plans and bounds its work. Validated by [`crate::config::Config`]; each field
/// names the configuration key it comes from.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Horizon of every plan and the default forecast horizon (`[planning] plan_horizon`).
    pub plan_horizon: Duration,
    /// Longest horizon a forecast request may ask for (`[planning] max_horizon`).
    pub max_horizon: Duration,
    /// History models are fitted on: sized to each series' step unless `[planning]
    /// history_window` fixes its length.
    pub history_window: HistoryWindow,
    /// Every plan is recomputed at least this often (`[planning] replan_interval`).
    pub replan_interval: Duration,
    /// A workload's plan is recomputed as soon as this many new samples of its series arrived
    /// (`[planning] replan_after_samples`).
    pub replan_after_samples: u64,
    /// Fits (forecasts, plans, retraining) running at once, on threads of their own at a lower CPU
    /// priority than serving; the rest wait (`[planning] max_concurrent_fits`).
    pub max_concurrent_fits: usize,
    /// Fitted models kept for forecast requests, least recently used going first
    /// (`[planning] model_cache_entries`).
    pub model_cache_entries: usize,
    /// Samples older than this are dropped hourly; `None` keeps everything (`[store] retention`;
    /// the store takes the same value to enforce it on open).
    pub retention: Option<Duration>,
    /// The model registry's directory; `None` is `<data_dir>/models` (`[registry] dir`).
    pub models_dir: Option<PathBuf>,
    /// Retraining promotes a new model when its backtest MAE is at most `1 + margin` times the
    /// live model's on the same recent folds (`[registry] promotion_margin`).
    pub promotion_margin: f64,
    /// When the server retrains every series; `None` never (`[registry] schedule`, nightly unless
    /// set; servers over a temporary store have none).
    pub retrain_schedule: Option<CronSchedule>,
    /// Model versions kept per series, the oldest dropped first (never the live one nor the
    /// newest earlier live one; in a fleet store, never one the live pointer names); `None` keeps
    /// all (`[registry] keep_versions`).
    pub keep_versions: Option<usize>,
    /// How often the registry's manifest is re-read so that versions promoted or rolled back by
    /// another process are served; `None` never (`[registry] watch_interval`).
    pub registry_watch: Option<Duration>,
    /// How workloads with a `source` poll it and retry it (`[sources]`).
    pub sources: SourceTiming,
}

/// How the followers of sourced workloads poll and retry (`[sources]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceTiming {
    /// Time between polls for new points; `None` polls once per source step
    /// (`[sources] poll_interval`).
    pub poll_interval: Option<Duration>,
    /// Wait after the first failure; it doubles with each failure in a row
    /// (`[sources] retry_initial`).
    pub retry_initial: Duration,
    /// Longest wait between retries (`[sources] retry_max`).
    pub retry_max: Duration,
}

impl Default for SourceTiming {
    fn default() -> Self {
        Self {
            poll_interval: None,
            retry_initial: Duration::from_secs(1),
            retry_max: Duration::from_secs(300),
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            plan_horizon: Duration::from_secs(24 * 3600),
            max_horizon: Duration::from_secs(7 * 24 * 3600),
            history_window: HistoryWindow::Sized,
            replan_interval: Duration::from_secs(300),
            replan_after_samples: 12,
            max_concurrent_fits: 2,
            model_cache_entries: 1024,
            retention: None,
            models_dir: None,
            promotion_margin: 0.05,
            retrain_schedule: None,
            keep_versions: Some(10),
            registry_watch: Some(Duration::from_secs(10)),
            sources: SourceTiming::default(),
        }
    }
}
