//! Plans: the plan state each workload publishes, computing a plan from the live model and the
//! stored events, and the background planner that keeps every plan fresh.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::app::planning::plan_with;
use crate::app::slo::rule_levels;
use crate::app::{AppError, PlanOutcome, choose_rule};
use crate::domain::{TimeSeries, Timestamp};
use crate::plan::{Plan, Workload};
use crate::simulate::RuleChoice;

use super::forecasts::live_version;
use super::live_models::LiveModel;
use super::workloads::{ChosenRule, WorkloadEntry};
use super::{ServingState, blocking};

/// A plan as published to executors, with where it came from.
#[derive(Debug)]
pub struct PublishedPlan {
    /// Increases by one with every new plan of the workload.
    pub revision: u64,
    /// When it was computed.
    pub generated_at: Timestamp,
    /// The schedule.
    pub plan: Plan,
    /// Version of the model its forecast came from (see [`model_version`](super::model_version)).
    pub model_version: String,
    /// Planned events whose uplift was applied.
    pub applied_events: Vec<String>,
    /// Planned events that could not be applied, with why.
    pub skipped_events: Vec<String>,
    /// The planning rule the workload's SLO chose from the live model's backtest, with its
    /// replay; `None` without an SLO or when the model stores no backtest forecasts.
    pub rule: Option<RuleChoice>,
}

/// A plan as computed, before it is published.
#[derive(Debug)]
struct ComputedPlan {
    /// Version of the model its forecast came from.
    model_version: String,
    /// Backtest MASE of that model, when it could be backtested.
    backtest_mase: Option<f64>,
    /// The plan and the events it applied or skipped.
    outcome: PlanOutcome,
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

impl ServingState {
    /// The latest plan state of a workload, without computing anything.
    pub fn plan(&self, name: &str) -> Result<PlanState, AppError> {
        Ok(self.entry(name)?.plan.borrow().clone())
    }

    /// The rule the SLO chose for the workload's newest good plan, if it has an SLO and a plan.
    pub fn plan_rule(&self, name: &str) -> Option<RuleChoice> {
        match self.plan(name).ok()? {
            PlanState::Ready(plan)
            | PlanState::Failed {
                last: Some(plan), ..
            } => plan.rule.clone(),
            PlanState::Pending | PlanState::Failed { last: None, .. } => None,
        }
    }

    /// A receiver of a workload's plan state: the current one at once, then every change. The
    /// sender goes away when the workload is deleted.
    pub fn watch_plan(&self, name: &str) -> Result<watch::Receiver<PlanState>, AppError> {
        Ok(self.entry(name)?.plan.subscribe())
    }

    /// Computes a plan for `workload` from the newest history and the stored events, with the live
    /// model re-anchored on that history; `chosen` keeps the SLO's rule between plans. Blocking.
    fn compute_plan(
        self: &Arc<Self>,
        workload: &Workload,
        running: Option<u32>,
        chosen: &Mutex<Option<ChosenRule>>,
    ) -> Result<ComputedPlan, AppError> {
        let history = self.recent_history(workload.series())?;
        let horizon = self.horizon("", history.step())?;
        let calendar = self.events.load()?;
        let live = self.live_model(workload.series())?;
        self.refit_on_level_shift(workload.series(), &live, &calendar.mask(&history));
        let rule = self.slo_rule(&live, &history, workload, chosen);
        let planned = rule.as_ref().map_or_else(
            || workload.clone(),
            |rule| workload.with_planning_rule(rule.rule()),
        );
        let workload = &planned;
        let levels = rule_levels(workload);
        let forecast_with = self.live_forecaster(workload.series(), &live, &levels);
        let mut outcome = plan_with(
            &history,
            workload,
            horizon,
            &calendar,
            &forecast_with,
            running,
        )
        .inspect_err(|_| self.metrics.model_errors.inc())?;
        outcome.rule = rule;
        Ok(ComputedPlan {
            model_version: live_version(live.version, &history),
            backtest_mase: live
                .model
                .report()
                .combined
                .as_ref()
                .and_then(|scores| scores.mase),
            outcome,
        })
    }

    /// The rule `workload`'s SLO chooses from the live model's stored backtest forecasts: chosen
    /// once per promoted model (each retrain that promotes one chooses again, with no fit) and
    /// kept in `chosen` until the model or the workload changes, so every plan of a model version
    /// is made on the same rule even as newer history slides its oldest folds out of the window.
    fn slo_rule(
        &self,
        live: &LiveModel,
        history: &TimeSeries,
        workload: &Workload,
        chosen: &Mutex<Option<ChosenRule>>,
    ) -> Option<RuleChoice> {
        workload.slo()?;
        let mut chosen = chosen.lock();
        if let Some(kept) = chosen.as_ref()
            && kept.model_version == live.version
            && kept.workload == *workload
        {
            return kept.choice.clone();
        }
        let choice = choose_rule(&live.model, history, workload);
        self.metrics.slo_rule_choices.inc();
        *chosen = Some(ChosenRule {
            model_version: live.version,
            workload: workload.clone(),
            choice: choice.clone(),
        });
        choice
    }

    /// Recomputes the plan of `entry` on the blocking pool and publishes it.
    async fn refresh_plan(self: &Arc<Self>, entry: Arc<WorkloadEntry>) {
        let workload = entry.workload.read().clone();
        let name = workload.name().to_owned();
        let running = self
            .held_applied(&name, &entry)
            .await
            .map(|applied| applied.replicas);
        let state = Arc::clone(self);
        let cache = Arc::clone(&entry);
        let computed = blocking(move || state.compute_plan(&workload, running, &cache.rule)).await;
        match computed {
            Ok(ComputedPlan {
                model_version,
                backtest_mase,
                outcome,
            }) => {
                let revision = entry.revision.fetch_add(1, Ordering::AcqRel) + 1;
                let published = Arc::new(PublishedPlan {
                    revision,
                    generated_at: self.now(),
                    plan: outcome.plan,
                    model_version,
                    applied_events: outcome
                        .applied_events
                        .iter()
                        .map(|event| event.label.clone())
                        .collect(),
                    skipped_events: outcome.skipped_events,
                    rule: outcome.rule,
                });
                self.metrics.plan_refreshes.inc();
                tracing::debug!(workload = %name, revision, "published plan");
                // Under the map's lock, so a workload deleted meanwhile, or one whose ownership
                // moved meanwhile, gets no gauges back.
                let workloads = self.workloads.read();
                let series = entry.workload.read().series().clone();
                if workloads
                    .get(&name)
                    .is_some_and(|current| Arc::ptr_eq(current, &entry))
                    && self.shows_workload_metrics(&series)
                {
                    self.metrics
                        .record_plan(&name, &series, Arc::clone(&published), backtest_mase);
                }
                drop(workloads);
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
            // Biased: when a tick and a wake-up are ready together (at start, the first tick and
            // an upsert's notification), the tick marks every workload due before any plan is
            // spawned, so one pass plans each workload once. Unbiased, the wake-up could spawn a
            // plan first and the tick then mark the workload due again: a second, identical plan.
            tokio::select! {
                biased;
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
                // In a fleet, another replica plans what it owns, and a series this replica gained
                // is planned once refilled from the TSDB; `due` stays set, so it is planned on the
                // next pass after that.
                let series = entry.workload.read().series().clone();
                if !self.owns(&series) || self.refilling(&series) {
                    continue;
                }
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
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::sample_state;
    use super::*;
    use crate::app::{Settings, TokioClock};
    use crate::domain::{Forecast, Horizon, Sample, SeriesId};
    use crate::forecast::Predict;
    use crate::store::SeriesSamples;

    /// The plan `plans` holds now.
    fn published(plans: &watch::Receiver<PlanState>) -> Arc<PublishedPlan> {
        match &*plans.borrow() {
            PlanState::Ready(plan) => Arc::clone(plan),
            other => panic!("no plan: {other:?}"),
        }
    }

    /// The plan of workload `name` refreshed now.
    async fn refreshed(state: &Arc<ServingState>, name: &str) -> Arc<PublishedPlan> {
        state.refresh_plan(state.entry(name).unwrap()).await;
        match state.plan(name).unwrap() {
            PlanState::Ready(plan) => plan,
            other => panic!("no plan: {other:?}"),
        }
    }

    /// The workload `taxi` on the sample series `nyc_taxi`, with the line `extra` added.
    fn taxi(extra: &str) -> Workload {
        Workload::from_toml(&format!(
            r#"
                name = "taxi"
                series = "nyc_taxi"
                capacity_per_replica = 500
                max_replicas = 100
                warm_up = "10m"
                {extra}
            "#
        ))
        .unwrap()
    }

    /// Under tokio's paused time: with no new data, the planner recomputes a plan once
    /// `replan_interval` has passed, and not before. The plans themselves are real work (on the
    /// blocking pool, which holds the paused clock still meanwhile).
    #[tokio::test(start_paused = true)]
    async fn every_plan_is_recomputed_each_replan_interval() {
        let directory = tempfile::tempdir().unwrap();
        let interval = Settings::default().replan_interval;
        let start = Timestamp::parse("2025-03-10T00:00:00Z").unwrap();
        let state = sample_state(directory.path(), Arc::new(TokioClock::starting_at(start)));
        state
            .upsert_workload(taxi(r#"mode = "forecast-and-scale""#))
            .unwrap();
        let mut plans = state.watch_plan("taxi").unwrap();
        let planner = tokio::spawn(Arc::clone(&state).run_planner());

        plans.changed().await.unwrap();
        let first = published(&plans);
        assert_eq!((first.revision, first.generated_at), (1, start));
        tokio::time::sleep(interval - Duration::from_secs(1)).await;
        assert!(
            !plans.has_changed().unwrap(),
            "no new data: no new plan before the interval"
        );
        tokio::time::timeout(Duration::from_secs(2), plans.changed())
            .await
            .expect("a new plan once the interval has passed")
            .unwrap();
        let second = published(&plans);
        let due = start.saturating_add_millis(interval.as_millis() as i64);
        assert_eq!(second.revision, 2);
        assert!(
            (due..due.saturating_add_millis(1000)).contains(&second.generated_at),
            "{}",
            second.generated_at
        );
        assert_eq!(
            second.model_version, first.model_version,
            "the same data and the same live model"
        );
        state.shutdown_token().cancel();
        planner.await.unwrap();
    }

    /// The SLO's rule is chosen once per live model and workload definition: a replan on the same
    /// model reuses it, and an upsert that changes the workload or a newly promoted model chooses
    /// again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_slo_rule_is_chosen_once_per_model_version_and_workload() {
        let directory = tempfile::tempdir().unwrap();
        let start = Timestamp::parse("2025-03-10T00:00:00Z").unwrap();
        let state = sample_state(directory.path(), Arc::new(TokioClock::starting_at(start)));
        let with_slo = |share: &str| taxi(&format!(r#"slo = {{ max_short_steps = "{share}" }}"#));
        let choices = || state.metrics.slo_rule_choices.get();
        let plan_now = async || refreshed(&state, "taxi").await;

        state.upsert_workload(with_slo("1%")).unwrap();
        let first = plan_now().await;
        let rule = first.rule.clone().expect("a rule chosen from the backtest");
        assert_eq!(choices(), 1);
        let second = plan_now().await;
        assert_eq!(second.revision, first.revision + 1);
        assert_eq!(choices(), 1, "the same model and workload: no new choice");
        assert_eq!(second.rule.as_ref(), Some(&rule));

        state.upsert_workload(with_slo("5%")).unwrap();
        plan_now().await;
        assert_eq!(choices(), 2, "a changed SLO chooses again");

        let series = SeriesId::new("nyc_taxi").unwrap();
        let live = state.live_model(&series).unwrap();
        state.promote(&series, live.version + 1, live.model.clone());
        plan_now().await;
        assert_eq!(choices(), 3, "a promoted model chooses again");
        plan_now().await;
        assert_eq!(choices(), 3);
    }

    /// A level shift after the live model's fit starts one background refit. The series: 28 days
    /// of 5-minute CPU with a daily cycle, then 3 hours 20 points above it (a rise must last a
    /// sixteenth of its daily season, 90 minutes). The refitted model is fitted with the shift and
    /// forecasts the new level, where the re-anchored one stayed below it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_level_shift_after_the_fit_refits_the_live_model_once() {
        const RISE: f64 = 20.0;
        let directory = tempfile::tempdir().unwrap();
        let start = Timestamp::parse("2025-03-10T00:00:00Z").unwrap();
        let state = sample_state(directory.path(), Arc::new(TokioClock::starting_at(start)));
        let series = SeriesId::new("api_cpu").unwrap();
        let (day, days, hours) = (288, 28, 36);
        let first_time = start.saturating_add_millis(-(days as i64) * 86_400_000);
        let cpu = |index: usize| {
            let phase = (index % day) as f64 / day as f64 * std::f64::consts::TAU;
            40.0 + 15.0 * phase.sin() + ((index * 7919) % 17) as f64 / 8.0
        };
        let samples = |from: usize, to: usize, rise: f64| SeriesSamples {
            series: series.clone(),
            samples: (from..to)
                .map(|index| Sample {
                    timestamp: first_time.saturating_add_millis(index as i64 * 300_000),
                    value: cpu(index) + rise,
                })
                .collect(),
        };
        state.ingest(&[samples(0, days * day, 0.0)]).unwrap();
        state
            .upsert_workload(
                Workload::from_toml(
                    r#"
                        name = "api"
                        series = "api_cpu"
                        capacity_per_replica = 10
                        max_replicas = 100
                        warm_up = "10m"
                    "#,
                )
                .unwrap(),
            )
            .unwrap();
        let shift_refits = || state.metrics.level_shift_refits.get();
        let plan_now = async || refreshed(&state, "api").await;
        plan_now().await;
        let first = state.live_model(&series).unwrap();
        assert_eq!(shift_refits(), 0, "no shift since the fit");

        let end = days * day;
        state.ingest(&[samples(end, end + hours, RISE)]).unwrap();
        let newest = state.recent_history(&series).unwrap();
        let horizon = Horizon::try_from(36).unwrap();
        let stale = state
            .reanchor_live(&series, &first, &newest)
            .unwrap()
            .predict(horizon, &[])
            .unwrap();
        plan_now().await;
        assert_eq!(shift_refits(), 1, "the shift starts a refit");
        let refitted = tokio::time::timeout(Duration::from_secs(120), async {
            loop {
                match state.live_model(&series).unwrap() {
                    live if live.version > first.version => return live,
                    _ => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        })
        .await
        .expect("the refitted model goes live");
        let shift = refitted
            .model
            .preprocessing()
            .level_shift
            .expect("the refit is fitted with the shift");
        assert!(shift.after - shift.before > RISE / 2.0, "{shift:?}");
        let first_raised = first_time.saturating_add_millis(end as i64 * 300_000);
        assert!(
            (shift.at.as_millis() - first_raised.as_millis()).abs() <= 3 * 300_000,
            "the shift starts with the raised samples, not at {}",
            shift.at
        );
        plan_now().await;
        plan_now().await;
        assert_eq!(shift_refits(), 1, "the refitted model knows the shift");

        // The next 3 hours, where the level holds.
        let fresh = state
            .reanchor_live(&series, &refitted, &newest)
            .unwrap()
            .predict(horizon, &[])
            .unwrap();
        let next = end + hours;
        let error = |forecast: &Forecast| {
            forecast
                .point()
                .iter()
                .enumerate()
                .map(|(offset, value)| (value - cpu(next + offset) - RISE).abs())
                .sum::<f64>()
                / forecast.len() as f64
        };
        let (stale, fresh) = (error(&stale), error(&fresh));
        assert!(
            fresh < stale / 2.0,
            "mean error over the next 3 hours: refitted {fresh:.2}, re-anchored {stale:.2}"
        );
    }
}
