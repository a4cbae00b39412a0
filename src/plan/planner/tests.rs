//! The planner's rules: upper-bound sizing, warm-up, scale-in, max-capacity breach, reasons, and
//! property tests of its bounds.

use std::time::Duration;

use proptest::prelude::*;

use super::*;
use crate::domain::{Interval, Level, Step, TimeRange};
use crate::plan::{MaxCapacityBreach, PlanningRule, WorkloadParams};

const STEP_MILLIS: i64 = 5 * 60 * 1000;

fn step() -> Step {
    Step::try_from(STEP_MILLIS).unwrap()
}

fn level(percent: f64) -> Level {
    Level::from_percent(percent).unwrap()
}

/// A forecast whose 80% and 95% bands lie `spread80` and `spread95` around the point.
fn forecast(point: &[f64], spread80: f64, spread95: f64) -> Forecast {
    let band = |spread: f64, percent: f64| Interval {
        level: level(percent),
        lower: point.iter().map(|value| value - spread).collect(),
        upper: point.iter().map(|value| value + spread).collect(),
    };
    Forecast::new(
        Timestamp::from_millis(0),
        step(),
        point.to_vec(),
        vec![band(spread80, 80.0), band(spread95, 95.0)],
    )
}

fn workload() -> Workload {
    WorkloadParams::new("api", "requests", 10.0, 20, Duration::from_secs(600))
        .target_utilisation(100.0)
        .min_replicas(2)
        .stabilisation_window(Duration::from_secs(900))
        .max_step_down(Some(2))
        .check()
        .unwrap()
}

#[test]
fn plans_on_the_upper_bound_and_requests_ahead_by_warm_up() {
    let workload = workload();
    let forecast = forecast(&[30.0, 30.0, 30.0, 80.0, 80.0, 80.0], 5.0, 10.0);
    let plan = Planner::new(&workload).plan(&forecast).unwrap();
    let desired: Vec<u32> = plan.steps().iter().map(|step| step.desired).collect();
    // The 95% upper bound is 40 then 90 load units: 4 then 9 replicas.
    assert_eq!(desired, [4, 4, 4, 9, 9, 9]);
    assert_eq!(
        plan.steps()[3].request_at.as_millis(),
        3 * STEP_MILLIS - 600_000
    );
    // Ten minutes before the ramp the executor already asks for 9; fifteen minutes before, not yet.
    assert_eq!(
        plan.target_at(Timestamp::from_millis(3 * STEP_MILLIS - 600_000)),
        Some(9)
    );
    assert_eq!(
        plan.target_at(Timestamp::from_millis(3 * STEP_MILLIS - 600_001)),
        Some(4)
    );
    assert_eq!(plan.target_at(Timestamp::from_millis(-600_000)), Some(4));
    // Made while the step before it is served, the plan asks for its first step until then.
    assert_eq!(plan.target_at(Timestamp::from_millis(-600_001)), Some(4));
    assert_eq!(
        plan.target_at(Timestamp::from_millis(-STEP_MILLIS - 600_000)),
        Some(4)
    );
    assert_eq!(
        plan.target_at(Timestamp::from_millis(-STEP_MILLIS - 600_001)),
        None
    );
    assert_eq!(
        plan.ceiling_at(Timestamp::from_millis(-STEP_MILLIS - 600_000)),
        plan.ceiling_at(Timestamp::from_millis(0))
    );
    assert_eq!(plan.steps()[0].low, 2);
    assert_eq!(plan.steps()[0].high, 4);
}

/// A warm-up of two steps: replicas asked for a one-step peak are still warming at the step
/// before it, and the lower need there does not cancel them.
#[test]
fn replicas_warming_for_a_later_step_are_kept() {
    let workload = workload().as_oracle();
    let forecast = forecast(&[30.0, 30.0, 80.0, 30.0, 30.0, 30.0], 5.0, 10.0);
    let plan = Planner::new(&workload).plan(&forecast).unwrap();
    let desired: Vec<u32> = plan.steps().iter().map(|step| step.desired).collect();
    assert_eq!(desired, [4, 4, 9, 4, 4, 4]);
    // Requested at 0 for the peak at 10 minutes: asked for at 0 and still at 5 minutes.
    assert_eq!(plan.target_at(Timestamp::from_millis(0)), Some(9));
    assert_eq!(plan.target_at(Timestamp::from_millis(STEP_MILLIS)), Some(9));
    assert_eq!(
        plan.target_at(Timestamp::from_millis(3 * STEP_MILLIS)),
        Some(4)
    );
}

/// A headroom rule sizes each step on the planning level's upper bound times the headroom.
#[test]
fn a_headroom_rule_sizes_on_the_bound_times_the_headroom() {
    let workload = workload().with_planning_rule(PlanningRule {
        level: level(80.0),
        headroom: 1.5,
    });
    let forecast = forecast(&[30.0, 30.0, 30.0], 5.0, 10.0);
    let plan = Planner::new(&workload).plan(&forecast).unwrap();
    // The 80% upper bound is 35 load units; 52.5 need 6 replicas of 10.
    assert!(plan.steps().iter().all(|step| step.desired == 6));
    assert_eq!(plan.steps()[0].planned_load, 52.5);
    assert_eq!((plan.level(), plan.headroom()), (level(80.0), 1.5));
    assert!(plan.to_string().contains("80% upper bound x1.5"), "{plan}");
}

#[test]
fn scale_in_is_held_then_limited() {
    let workload = workload();
    let forecast = forecast(
        &[150.0, 150.0, 20.0, 20.0, 20.0, 20.0, 20.0, 20.0],
        0.0,
        0.0,
    );
    let plan = Planner::new(&workload).plan(&forecast).unwrap();
    let desired: Vec<u32> = plan.steps().iter().map(|step| step.desired).collect();
    // Window 15 min = 3 steps, then at most 2 replicas per step.
    assert_eq!(desired, [15, 15, 15, 15, 13, 13, 13, 11]);
    assert_eq!(plan.steps()[4].reason, Some(Reason::HeldByScaleIn));
}

#[test]
fn starts_from_running_replicas_and_carries_reactive() {
    let workload = workload();
    let forecast = forecast(&[20.0; 4], 0.0, 0.0);
    let observation = Observation {
        at: Timestamp::from_millis(-STEP_MILLIS),
        load: 130.0,
        replicas: 10,
    };
    let plan = Planner::new(&workload)
        .latest(observation)
        .plan(&forecast)
        .unwrap();
    // Running 10, the policy allows 2 fewer per step and no window has started yet.
    assert_eq!(plan.steps()[0].desired, 8);
    let reactive = plan.reactive().unwrap();
    assert_eq!(reactive.replicas, 13);
    assert_eq!(
        plan.executor_target(Timestamp::from_millis(0), reactive.replicas),
        Some(13)
    );
    assert_eq!(
        plan.executor_target(Timestamp::from_millis(0), 99),
        Some(20)
    );
}

#[test]
fn max_breach_honours_or_raises() {
    let forecast = forecast(&[300.0, 300.0], 0.0, 0.0);
    let honour = workload();
    let plan = Planner::new(&honour).plan(&forecast).unwrap();
    assert_eq!(plan.steps()[0].desired, 20);
    let raise = WorkloadParams::new("api", "requests", 10.0, 20, Duration::ZERO)
        .target_utilisation(100.0)
        .max_capacity_breach(MaxCapacityBreach::Increase {
            buffer_percent: 10.0,
        })
        .check()
        .unwrap();
    let plan = Planner::new(&raise).plan(&forecast).unwrap();
    assert_eq!(plan.steps()[0].desired, 30);
    assert_eq!(plan.steps()[0].ceiling, 33);
    assert_eq!(
        plan.executor_target(Timestamp::from_millis(0), 50),
        Some(33)
    );
}

#[test]
fn reasons_name_events_and_daily_ramps() {
    let workload = WorkloadParams::new("api", "requests", 10.0, 100, Duration::ZERO)
        .target_utilisation(100.0)
        .stabilisation_window(Duration::ZERO)
        .check()
        .unwrap();
    let steps_per_day = usize::try_from(DAY_MILLIS / STEP_MILLIS).unwrap();
    // Two days of a daily square wave: up at 08:00, down at 20:00.
    let point: Vec<f64> = (0..2 * steps_per_day)
        .map(|index| {
            let hour = (index % steps_per_day) * 24 / steps_per_day;
            if (8..20).contains(&hour) { 200.0 } else { 50.0 }
        })
        .collect();
    let forecast = forecast(&point, 0.0, 0.0);
    let event_start = forecast.time_at(steps_per_day + 8 * 12);
    let annotations = [Annotation {
        range: TimeRange::new(event_start, event_start.saturating_add_millis(STEP_MILLIS)).unwrap(),
        label: "launch".to_owned(),
    }];
    let plan = Planner::new(&workload)
        .annotations(&annotations)
        .plan(&forecast)
        .unwrap();
    let reasons: Vec<String> = plan
        .changes()
        .map(|step| step.reason.as_ref().unwrap().to_string())
        .collect();
    // Day one has no earlier day to compare with; day two repeats it.
    assert_eq!(
        reasons,
        ["initial", "trend", "trend", "event: launch", "daily ramp"]
    );
    assert!(plan.to_string().contains("event: launch"));
}

#[test]
fn missing_level_and_empty_forecast_are_errors() {
    let workload = workload();
    let bare = Forecast::new(Timestamp::from_millis(0), step(), vec![1.0], Vec::new());
    assert!(matches!(
        Planner::new(&workload).plan(&bare),
        Err(PlanError::MissingLevel { .. })
    ));
    let empty = Forecast::new(Timestamp::from_millis(0), step(), Vec::new(), Vec::new());
    assert!(matches!(
        Planner::new(&workload).plan(&empty),
        Err(PlanError::EmptyForecast)
    ));
}

fn arbitrary_case() -> impl Strategy<Value = (Workload, Forecast, Option<u32>)> {
    (
        1u32..5,
        0u32..30,
        proptest::option::of(1u32..6),
        0u64..6,
        any::<bool>(),
        prop::collection::vec((0.0f64..400.0, 0.0f64..60.0, 0.0f64..60.0), 1..80),
        proptest::option::of(0u32..60),
    )
        .prop_map(
            |(min, extra, max_step_down, window_steps, raise, loads, running)| {
                let breach = if raise {
                    MaxCapacityBreach::Increase {
                        buffer_percent: 20.0,
                    }
                } else {
                    MaxCapacityBreach::Honour
                };
                let workload = WorkloadParams::new(
                    "api",
                    "requests",
                    10.0,
                    min + extra,
                    Duration::from_secs(300),
                )
                .min_replicas(min)
                .target_utilisation(80.0)
                .max_step_down(max_step_down)
                .stabilisation_window(Duration::from_millis(
                    window_steps * STEP_MILLIS.unsigned_abs(),
                ))
                .max_capacity_breach(breach)
                .check()
                .expect("generated parameters are in range");
                let point: Vec<f64> = loads.iter().map(|(point, _, _)| *point).collect();
                let inner = |sign: f64| -> Vec<f64> {
                    loads
                        .iter()
                        .map(|(point, inner, _)| point + sign * inner)
                        .collect()
                };
                let outer = |sign: f64| -> Vec<f64> {
                    loads
                        .iter()
                        .map(|(point, inner, outer)| point + sign * (inner + outer))
                        .collect()
                };
                let forecast = Forecast::new(
                    Timestamp::from_millis(0),
                    step(),
                    point,
                    vec![
                        Interval {
                            level: level(95.0),
                            lower: inner(-1.0),
                            upper: inner(1.0),
                        },
                        Interval {
                            level: level(99.0),
                            lower: outer(-1.0),
                            upper: outer(1.0),
                        },
                    ],
                );
                (workload, forecast, running)
            },
        )
}

proptest! {
    #[test]
    fn plans_respect_bounds_and_scale_in_policy((workload, forecast, running) in arbitrary_case()) {
        let mut planner = Planner::new(&workload);
        if let Some(replicas) = running {
            planner = planner.latest(Observation {
                at: Timestamp::from_millis(-STEP_MILLIS),
                load: 100.0,
                replicas,
            });
        }
        let plan = planner.plan(&forecast).unwrap();
        prop_assert_eq!(plan.steps().len(), forecast.len());
        let policy = workload.scale_in();
        let window = i64::try_from(policy.stabilisation_window.as_millis()).unwrap();
        let honour = workload.max_capacity() == MaxCapacityBreach::Honour;
        let mut previous = running.map(|replicas| replicas.clamp(workload.min_replicas(), plan.steps()[0].ceiling));
        let mut last_change: Option<Timestamp> = None;
        for step in plan.steps() {
            prop_assert!(step.desired >= workload.min_replicas());
            prop_assert!(step.desired <= step.ceiling);
            if honour {
                prop_assert!(step.desired <= workload.max_replicas());
                prop_assert!(step.high <= workload.max_replicas());
            }
            prop_assert!(step.low <= step.desired && step.desired <= step.high);
            prop_assert!(step.expected_load.is_finite() && step.planned_load.is_finite());
            if let Some(previous) = previous {
                if step.desired < previous {
                    let limit = policy.max_step_down.unwrap_or(u32::MAX);
                    prop_assert!(previous - step.desired <= limit, "stepped down {} -> {}", previous, step.desired);
                    if let Some(changed) = last_change {
                        prop_assert!(step.at.as_millis() - changed.as_millis() >= window,
                            "stepped down at {} within the window after a change at {}", step.at, changed);
                    }
                }
                if step.desired != previous {
                    last_change = Some(step.at);
                }
            }
            previous = Some(step.desired);
        }
    }

    #[test]
    fn plans_never_fall_below_the_forecast_need((workload, forecast, _running) in arbitrary_case()) {
        let plan = Planner::new(&workload).plan(&forecast).unwrap();
        let upper = &forecast.interval(workload.planning_level()).unwrap().upper;
        for (step, load) in plan.steps().iter().zip(upper) {
            let need = workload.replicas_for(*load).clamp(workload.min_replicas(), step.ceiling);
            prop_assert!(step.desired >= need);
        }
    }
}
