//! How the server plans and bounds its work: horizons, history, replanning, fit concurrency, the
//! model cache, retention and the registry's schedule.

use std::path::PathBuf;
use std::time::Duration;

use crate::registry::CronSchedule;

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
