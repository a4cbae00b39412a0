//! How `prescale workloads` prints what the server answers: a workload's definition, its status
//! (SLO rule, source, replicas reported applied), its plan in short form, and a listing row.

use anyhow::Result;
use std::time::Duration;

use prescale::domain::{Step, Timestamp};
use prescale::plan::{PlanningRule, steps_in_force};
use prescale::service::proto;

use super::server_client::series_text;
use crate::output::outln;

/// One `label: value` line of `show`, values aligned.
macro_rules! field {
    ($label:expr, $($value:tt)*) => {
        outln!("{:<16} {}", concat!($label, ":"), format_args!($($value)*))
    };
}

/// The workload's definition: what `UpsertWorkload` stored, one setting per line.
pub(super) fn print_definition(workload: &proto::Workload) -> Result<()> {
    field!("workload", "{}", workload.name)?;
    field!("series", "{}", series_of(workload))?;
    field!("mode", "{}", workload.mode)?;
    field!(
        "capacity",
        "{} per replica, planned at {}% utilisation",
        workload.capacity_per_replica,
        or_default(workload.target_utilisation)
    )?;
    let beyond_max = match &workload.max_capacity {
        Some(max) if max.breach == "increase" => format!(
            "above max when the forecast needs it, plus {}% of the need",
            or_default(max.buffer_percent)
        ),
        _ => "never above max".to_owned(),
    };
    field!(
        "replicas",
        "{} to {} ({beyond_max})",
        or_default(workload.min_replicas),
        workload.max_replicas
    )?;
    field!("warm-up", "{}", workload.warm_up)?;
    field!("planning", "{}", planning_of(workload))?;
    if let Some(slo) = &workload.slo {
        field!("slo", "at most {} of steps short", slo.max_short_steps)?;
    }
    if let Some(scale_in) = &workload.scale_in {
        let per_step = match scale_in.max_step_down {
            0 => "no limit per step".to_owned(),
            replicas => format!("at most {replicas} fewer replicas per step"),
        };
        field!(
            "scale-in",
            "{per_step}, held {} after a change",
            scale_in.stabilisation_window
        )?;
    }
    match prometheus_of(workload) {
        Some(source) => field!(
            "source",
            "prometheus {} query {:?} every {}",
            source.url,
            source.query,
            source.step
        )?,
        None => field!("source", "none: samples are pushed (IngestService, import)")?,
    }
    Ok(())
}

/// An optional setting as the server answered it; "the default" when it left it unset (a prescale
/// server fills every setting in, defaults included).
fn or_default<T: std::fmt::Display>(value: Option<T>) -> String {
    value.map_or_else(|| "the default".to_owned(), |value| value.to_string())
}

/// What `GetWorkload` adds to the definition: the rule the SLO chose, the source's status and the
/// replicas the executor reported applied.
pub(super) fn print_status(workload: &proto::Workload) -> Result<()> {
    if let Some(rule) = &workload.slo_status {
        // "slo-met" and "slo-not-met" say whether it met the SLO; "explicit" does not.
        let met = match (rule.source.as_str(), rule.met) {
            ("explicit", true) => ": the slo is met",
            ("explicit", false) => ": the slo is not met",
            _ => "",
        };
        field!(
            "slo rule",
            "{} ({}{met})",
            PlanningRule::text(rule.level, rule.headroom),
            rule.source
        )?;
    }
    if let Some(status) = &workload.source_status {
        print_source_status(status)?;
    }
    match &workload.applied {
        Some(applied) => field!(
            "applied",
            "{} replicas at {}",
            applied.replicas,
            Timestamp::from_millis(applied.time_ms)
        )?,
        None => field!("applied", "none reported")?,
    }
    Ok(())
}

/// The source follower's last pull, what it holds and its last error.
fn print_source_status(status: &proto::SourceStatus) -> Result<()> {
    let last_pull = if status.last_success_ms == 0 {
        "no pull succeeded yet".to_owned()
    } else {
        format!(
            "last pull at {}",
            Timestamp::from_millis(status.last_success_ms)
        )
    };
    let history = if status.history_available_from_ms == 0 {
        "no history stored".to_owned()
    } else {
        format!(
            "history from {}{}",
            Timestamp::from_millis(status.history_available_from_ms),
            if status.history_short {
                " (shorter than the history window)"
            } else {
                ""
            }
        )
    };
    field!(
        "source status",
        "{last_pull}, {} points pulled, {history}",
        status.points_pulled
    )?;
    if !status.last_error.is_empty() {
        field!("source error", "{}", status.last_error)?;
    }
    Ok(())
}

/// The plan in short form: revision, when it was made and until when it runs, the rule it is
/// planned on, the replicas wanted now.
pub(super) fn print_plan(plan: &proto::Plan) -> Result<()> {
    // Past its last step the KEDA scaler answers UNAVAILABLE for the workload.
    let runs_until = end_ms(plan).map_or_else(String::new, |end| {
        format!(", runs until {}", Timestamp::from_millis(end))
    });
    field!(
        "plan",
        "revision {}, generated at {}{runs_until}{}",
        plan.revision,
        Timestamp::from_millis(plan.generated_at_ms),
        if plan.read_only {
            " (read-only: the replica answering has lost etcd)"
        } else {
            ""
        }
    )?;
    field!(
        "  planned on",
        "the {}",
        PlanningRule::text(plan.planning_level, plan.planning_headroom)
    )?;
    if let Some(slo) = &plan.slo {
        field!("  slo", "{}", slo.reason)?;
    }
    print_now(plan, Timestamp::now().as_millis())?;
    field!("  model", "{}", plan.model_version)?;
    Ok(())
}

/// The replicas the plan wants at `now_ms`, the reactive recommendation, and what an executor
/// runs from the two.
fn print_now(plan: &proto::Plan, now_ms: i64) -> Result<()> {
    let no_steps = proto::PlanSteps::default();
    let steps = plan.steps.as_ref().unwrap_or(&no_steps);
    let in_force = in_force(plan, steps, now_ms);
    // The most any step in force needs, and the largest ceiling among them, as executors read it.
    let wanted = in_force.clone().map(|range| {
        let desired = steps.desired[range.clone()].iter().copied().max();
        let ceiling = steps.ceiling[range].iter().copied().max();
        (desired.unwrap_or(0), ceiling.unwrap_or(0))
    });
    match (&in_force, wanted) {
        (Some(range), Some((desired, _))) => {
            let (first, last) = (*range.start(), *range.end());
            let through = if last > first {
                format!(
                    ", through the step requested at {} for {}",
                    Timestamp::from_millis(steps.request_at_ms[last]),
                    Timestamp::from_millis(steps.at_ms[last])
                )
            } else {
                String::new()
            };
            field!(
                "  wanted now",
                "{desired} replicas (the most the steps in force need: from the one serving from {}{through})",
                Timestamp::from_millis(steps.at_ms[first]),
            )?;
        }
        _ => match (steps.request_at_ms.first(), end_ms(plan)) {
            (Some(first), _) if now_ms < *first => field!(
                "  wanted now",
                "none yet: the first step is requested at {}",
                Timestamp::from_millis(*first)
            )?,
            (Some(_), Some(end)) => field!(
                "  wanted now",
                "none: the plan ran out at {}",
                Timestamp::from_millis(end)
            )?,
            _ => field!("  wanted now", "none: the plan has no steps")?,
        },
    }
    let Some(reactive) = &plan.reactive else {
        return Ok(());
    };
    field!(
        "  reactive",
        "{} replicas (load {:.1} at {})",
        reactive.replicas,
        reactive.observed_load,
        Timestamp::from_millis(reactive.observed_at_ms)
    )?;
    if let Some((desired, ceiling)) = wanted {
        field!(
            "  to run now",
            "{} replicas: the larger of planned and reactive, at most the ceiling of {}",
            desired.max(reactive.replicas).min(ceiling.max(desired)),
            ceiling.max(desired)
        )?;
    }
    Ok(())
}

/// When the plan runs out, epoch milliseconds: the end of its last step (`None` without steps).
fn end_ms(plan: &proto::Plan) -> Option<i64> {
    let last = plan.steps.as_ref()?.at_ms.last()?;
    Some(last + plan.step_ms)
}

/// The steps an executor sizes on at `now_ms` ([`steps_in_force`] over the plan's columns);
/// `None` outside the plan, or when its step or warm-up is not one a plan can have.
fn in_force(
    plan: &proto::Plan,
    steps: &proto::PlanSteps,
    now_ms: i64,
) -> Option<std::ops::RangeInclusive<usize>> {
    let start = Timestamp::from_millis(*steps.at_ms.first()?);
    let step = Step::try_from(plan.step_ms).ok()?;
    let warm_up = Duration::from_millis(u64::try_from(plan.warm_up_ms).ok()?);
    let len = steps
        .at_ms
        .len()
        .min(steps.desired.len())
        .min(steps.ceiling.len());
    steps_in_force(start, step, warm_up, len, Timestamp::from_millis(now_ms))
}

/// One line of `workloads list`: name, series, mode, planning, source when pulled.
pub(super) fn print_row(workload: &proto::Workload) -> Result<()> {
    let planning = match (&workload.planning_level, &workload.slo) {
        (Some(level), _) => format!("{level}%"),
        (None, Some(slo)) => format!("slo {}", slo.max_short_steps),
        (None, None) => "-".to_owned(),
    };
    let source =
        prometheus_of(workload).map_or_else(|| "-".to_owned(), |source| source.url.clone());
    outln!(
        "{:<24}  {:<32}  {:<18}  {planning:<16}  {source}",
        workload.name,
        series_of(workload),
        workload.mode
    )?;
    Ok(())
}

/// The workload's series in the store's text (`load{svc="a"}`).
fn series_of(workload: &proto::Workload) -> String {
    workload
        .series
        .as_ref()
        .map_or_else(String::new, series_text)
}

/// How the planning level is set: explicitly (it wins over an SLO), or chosen by the SLO.
fn planning_of(workload: &proto::Workload) -> String {
    match (workload.planning_level, &workload.slo) {
        (Some(level), Some(_)) => format!("the {level}% upper bound (set: it wins over the slo)"),
        (Some(level), None) => format!("the {level}% upper bound"),
        (None, _) => "the level the slo chooses by replaying backtests".to_owned(),
    }
}

/// The workload's Prometheus source, when it is pulled.
fn prometheus_of(workload: &proto::Workload) -> Option<&proto::PrometheusSource> {
    match workload.source.as_ref()?.kind.as_ref()? {
        proto::source::Kind::Prometheus(source) => Some(source),
    }
}
