//! Each workload's latest plan as gauges: the replicas it asks for now, the reactive
//! recommendation, the interval level and headroom planned on, how its SLO's rule did in the
//! replay (met or not, short steps, replica-hours, cost against the oracle), the plan's revision,
//! age and end, the longest time between two plans, and the backtest error of the model behind
//! it. Evaluated at every scrape (a plan's target moves with time between refreshes), set when a
//! plan is published and removed when its workload is deleted or, in a fleet, moves to another
//! replica, so there is one series per workload and gauge, shown by the replica that plans it.

use std::collections::BTreeMap;
use std::sync::Arc;

use parking_lot::Mutex;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::gauge::ConstGauge;

use crate::app::PublishedPlan;
use crate::domain::{SeriesId, Timestamp};
use crate::plan::Plan;

/// The latest plan of every workload that has one.
#[derive(Debug, Default)]
pub(super) struct PlanGauges {
    /// Plans by workload name; locked to publish, forget, or read them once per scrape.
    plans: Mutex<BTreeMap<String, PlanEntry>>,
    /// The longest time between two plans of a workload (`[planning] replan_interval`), in
    /// seconds, once the serving state has said it.
    replan_interval: Mutex<Option<f64>>,
}

/// What the gauges of one workload are computed from.
#[derive(Debug)]
struct PlanEntry {
    /// The workload's series, in its canonical text form (a label of the model's gauge).
    series: String,
    /// The published plan.
    plan: Arc<PublishedPlan>,
    /// Backtest MASE of the model the plan was made with, when it could be backtested.
    backtest_mase: Option<f64>,
}

impl PlanGauges {
    pub(super) fn record(
        &self,
        workload: &str,
        series: &SeriesId,
        plan: Arc<PublishedPlan>,
        backtest_mase: Option<f64>,
    ) {
        self.plans.lock().insert(
            workload.to_owned(),
            PlanEntry {
                series: series.to_string(),
                plan,
                backtest_mase,
            },
        );
    }

    pub(super) fn forget(&self, workload: &str) {
        self.plans.lock().remove(workload);
    }

    pub(super) fn set_replan_interval(&self, seconds: f64) {
        *self.replan_interval.lock() = Some(seconds);
    }
}

/// Replicas `plan` asks for at `time` ([`Plan::target_at`]); before its span its first step's,
/// after it its last step's (a plan that has run out still says what it last asked for).
pub(super) fn desired_at(plan: &Plan, time: Timestamp) -> u32 {
    plan.target_at(time).unwrap_or_else(|| {
        let steps = plan.steps();
        if time < plan.start() {
            steps[0].desired
        } else {
            steps[steps.len() - 1].desired
        }
    })
}

/// One gauge: its name, help, and a value (or none) from a workload's entry.
type GaugeSpec = (
    &'static str,
    &'static str,
    fn(&PlanEntry, Timestamp) -> Option<f64>,
);

/// The per-workload plan gauges.
const PLAN_GAUGES: [GaugeSpec; 11] = [
    (
        "prescale_plan_desired_replicas",
        "Replicas the workload's plan asks for now (warm-up included), before the reactive floor.",
        |entry, now| Some(f64::from(desired_at(&entry.plan.plan, now))),
    ),
    (
        "prescale_plan_reactive_replicas",
        "The reactive (HPA formula) recommendation of the workload's latest plan, when it had an observation.",
        |entry, _| {
            entry
                .plan
                .plan
                .reactive()
                .map(|reactive| f64::from(reactive.replicas))
        },
    ),
    (
        "prescale_plan_level_ratio",
        "Interval level the workload's plan is sized on (0.95: the upper bound of the 95% interval).",
        |entry, _| Some(entry.plan.plan.level().fraction()),
    ),
    (
        "prescale_plan_headroom_ratio",
        "Factor on the planning level's upper bound the workload's plan is sized on (1: the bound itself; above 1: a headroom rule its SLO chose).",
        |entry, _| Some(entry.plan.plan.headroom()),
    ),
    (
        "prescale_plan_slo_met",
        "1 when the level the workload plans on met its SLO in the replay of its model's backtest, 0 when no level did (it then plans on the fewest short steps); absent without an SLO.",
        |entry, _| {
            entry
                .plan
                .rule
                .as_ref()
                .map(|rule| f64::from(u8::from(rule.met())))
        },
    ),
    (
        "prescale_plan_slo_replayed_short_ratio",
        "Share of steps short of capacity when the workload's planning rule was replayed on its model's backtest folds.",
        |entry, _| {
            entry
                .plan
                .rule
                .as_ref()
                .map(|rule| rule.chosen.short_share())
        },
    ),
    (
        "prescale_plan_slo_replayed_replica_hours",
        "Replica-hours the workload's planning rule spent in the replay of its model's backtest folds.",
        |entry, _| {
            entry
                .plan
                .rule
                .as_ref()
                .map(|rule| rule.chosen.replica_hours)
        },
    ),
    (
        "prescale_plan_slo_replayed_oracle_ratio",
        "Replica-hours of the workload's planning rule in the replay over those of a plan made from the true demand.",
        |entry, _| {
            entry
                .plan
                .rule
                .as_ref()
                .map(|rule| rule.chosen.vs_oracle())
                .filter(|ratio| ratio.is_finite())
        },
    ),
    (
        "prescale_plan_revision",
        "Revision of the workload's latest plan (increases with every plan).",
        |entry, _| Some(entry.plan.revision as f64),
    ),
    (
        "prescale_plan_generated_timestamp_seconds",
        "When the workload's latest plan was computed, in seconds since the epoch.",
        |entry, _| Some(entry.plan.generated_at.as_millis() as f64 / 1000.0),
    ),
    (
        "prescale_plan_end_timestamp_seconds",
        "When the workload's latest plan runs out (the end of its last step), in seconds since the epoch; from then on the KEDA scaler answers UNAVAILABLE for it.",
        |entry, _| Some(entry.plan.plan.end().as_millis() as f64 / 1000.0),
    ),
];

impl Collector for PlanGauges {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let plans = self.plans.lock();
        if plans.is_empty() {
            return Ok(());
        }
        let now = Timestamp::now();
        for (name, help, value) in PLAN_GAUGES {
            let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for (workload, entry) in plans.iter() {
                // A plan stamped by a clock ahead of the system's (tests' paused clocks) is
                // evaluated at its own time.
                let Some(value) = value(entry, now.max(entry.plan.generated_at)) else {
                    continue;
                };
                let labels = [("workload", workload.as_str())];
                ConstGauge::new(value).encode(metric.encode_family(&labels)?)?;
            }
        }
        if let Some(seconds) = *self.replan_interval.lock() {
            let mut metric = encoder.encode_descriptor(
                "prescale_plan_replan_interval_seconds",
                "Longest time between two plans of the workload ([planning] replan_interval): a plan older than a few of these is stale.",
                None,
                MetricType::Gauge,
            )?;
            for workload in plans.keys() {
                let labels = [("workload", workload.as_str())];
                ConstGauge::new(seconds).encode(metric.encode_family(&labels)?)?;
            }
        }
        let mut metric = encoder.encode_descriptor(
            "prescale_model_backtest_mase",
            "Backtest MASE of the model behind the workload's latest plan (below 1 beats the one-day seasonal naive forecast).",
            None,
            MetricType::Gauge,
        )?;
        for (workload, entry) in plans.iter() {
            if let Some(mase) = entry.backtest_mase.filter(|mase| mase.is_finite()) {
                let labels = [
                    ("workload", workload.as_str()),
                    ("series", entry.series.as_str()),
                ];
                ConstGauge::new(mase).encode(metric.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}
