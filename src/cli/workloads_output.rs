//! How `prescale workloads` prints what the server answers: a workload's definition, its status
//! (SLO rule, source, replicas reported applied), its plan in short form, and a listing row.

use anyhow::Result;
use prescale::domain::{Level, Timestamp};
use prescale::plan::PlanningRule;
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
        workload.target_utilisation.unwrap_or(70.0)
    )?;
    let beyond_max = match &workload.max_capacity {
        Some(max) if max.breach == "increase" => format!(
            "above max when the forecast needs it, plus {}% of the need",
            max.buffer_percent.unwrap_or(10.0)
        ),
        _ => "never above max".to_owned(),
    };
    field!(
        "replicas",
        "{} to {} ({beyond_max})",
        workload.min_replicas.unwrap_or(1),
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
            rule_text(rule.level, rule.headroom),
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

/// The plan in short form: revision, when, the rule it is planned on, the replicas wanted now.
pub(super) fn print_plan(plan: &proto::Plan) -> Result<()> {
    field!(
        "plan",
        "revision {}, generated at {}{}",
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
        rule_text(plan.planning_level, plan.planning_headroom)
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
    let steps = plan.steps.clone().unwrap_or_default();
    let current = step_for(&steps, now_ms);
    match current {
        Some(index) => {
            let end = steps.at_ms[steps.at_ms.len() - 1] + plan.step_ms;
            field!(
                "  wanted now",
                "{} replicas (the step serving from {}, requested at {}){}",
                steps.desired[index],
                Timestamp::from_millis(steps.at_ms[index]),
                Timestamp::from_millis(steps.request_at_ms[index]),
                if now_ms >= end {
                    format!("; the plan ran out at {}", Timestamp::from_millis(end))
                } else {
                    String::new()
                }
            )?;
        }
        None => match steps.request_at_ms.first() {
            Some(first) => field!(
                "  wanted now",
                "none yet: the first step is requested at {}",
                Timestamp::from_millis(*first)
            )?,
            None => field!("  wanted now", "none: the plan has no steps")?,
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
    if let Some(index) = current {
        let ceiling = steps.ceiling[index];
        field!(
            "  to run now",
            "{} replicas: the larger of planned and reactive, at most the ceiling of {ceiling}",
            steps.desired[index].max(reactive.replicas).min(ceiling)
        )?;
    }
    Ok(())
}

/// The step an executor runs at `now_ms`: the last one whose replicas have been requested
/// (`request_at_ms <= now`), as `PlanService` documents; `None` before the first request.
fn step_for(steps: &proto::PlanSteps, now_ms: i64) -> Option<usize> {
    steps
        .request_at_ms
        .partition_point(|request_at| *request_at <= now_ms)
        .checked_sub(1)
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

/// A planning rule in words, as plans print it (`95% upper bound`, `10% upper bound x1.5`); the
/// figures as sent when the level is out of range.
fn rule_text(level_percent: f64, headroom: f64) -> String {
    match Level::from_percent(level_percent) {
        Ok(level) => PlanningRule { level, headroom }.to_string(),
        Err(_) => format!("{level_percent}% upper bound x{headroom}"),
    }
}
