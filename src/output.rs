//! What the commands print and write beside their main output: the series table and details, an
//! import report, a fitted model's summary, a simulation's CSV and chart. Shared by the `cli`
//! commands and the demo.

use std::io;
use std::path::Path;

use anyhow::Result;
use prescale::app::{ImportReport, SloReplay};
use prescale::domain::{Step, Timestamp};
use prescale::forecast::FittedModel;
use prescale::store::SeriesSummary;

/// `print!` to standard output that returns an error instead of panicking, for `?`; a reader that
/// went away (`prescale series show NAME | head`) is [`StdoutClosed`], which ends the command
/// quietly.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        write!(std::io::stdout().lock(), $($arg)*).map_err($crate::output::stdout_failed)
    }};
}

/// `println!` to standard output that returns an error instead of panicking, as [`out!`].
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*).map_err($crate::output::stdout_failed)
    }};
}

pub(crate) use {out, outln};

/// Standard output was closed by its reader: the rest of the output is not wanted, and the command
/// ends without an error.
#[derive(Debug, thiserror::Error)]
#[error("standard output closed")]
pub(crate) struct StdoutClosed;

/// The error of a failed write to standard output: [`StdoutClosed`] for a closed pipe.
pub(crate) fn stdout_failed(error: io::Error) -> anyhow::Error {
    if error.kind() == io::ErrorKind::BrokenPipe {
        StdoutClosed.into()
    } else {
        anyhow::Error::new(error).context("cannot write to standard output")
    }
}

/// The import's counts, and the skipped rows by kind with the first of each.
pub(crate) fn print_import(report: &ImportReport, file: &Path) -> Result<()> {
    outln!(
        "imported {} samples from {} into {}",
        report.accepted,
        file.display(),
        report.series
    )?;
    if report.missing > 0 {
        outln!(
            "{} rows with an empty value left as gaps (missing samples)",
            report.missing
        )?;
    }
    if report.skipped.is_empty() {
        return Ok(());
    }
    outln!("skipped {} bad rows:", report.skipped.len())?;
    let mut kinds: Vec<_> = report.skipped.iter().map(|row| row.kind).collect();
    kinds.sort();
    kinds.dedup();
    for kind in kinds {
        let rows: Vec<_> = report
            .skipped
            .iter()
            .filter(|row| row.kind == kind)
            .collect();
        let first = rows[0];
        outln!(
            "  {:>6} x {kind} (first at row/line {}: {})",
            rows.len(),
            first.position,
            first.detail
        )?;
    }
    Ok(())
}

fn describe_step(step: Option<Step>) -> String {
    step.map_or_else(|| "-".to_owned(), |step| step.to_string())
}

fn describe_time(time: Option<Timestamp>) -> String {
    time.map_or_else(|| "-".to_owned(), |time| time.to_string())
}

/// One line per series: samples, extent, median step, gaps.
pub(crate) fn print_series_table(summaries: &[SeriesSummary]) -> Result<()> {
    if summaries.is_empty() {
        outln!("no series stored")?;
        return Ok(());
    }
    let width = summaries
        .iter()
        .map(|summary| summary.series.to_string().len())
        .max()
        .unwrap_or(6)
        .max(6);
    outln!(
        "{:<width$}  {:>8}  {:<24}  {:<24}  {:>8}  {:>5}",
        "SERIES",
        "SAMPLES",
        "FIRST",
        "LAST",
        "STEP",
        "GAPS"
    )?;
    for summary in summaries {
        outln!(
            "{:<width$}  {:>8}  {:<24}  {:<24}  {:>8}  {:>5}",
            summary.series.to_string(),
            summary.samples,
            describe_time(summary.first),
            describe_time(summary.last),
            describe_step(summary.median_step),
            summary.gaps.len()
        )?;
    }
    Ok(())
}

/// One series, with its ten longest gaps.
pub(crate) fn print_series_details(summary: &SeriesSummary) -> Result<()> {
    outln!("series:      {}", summary.series)?;
    outln!("samples:     {}", summary.samples)?;
    outln!("first:       {}", describe_time(summary.first))?;
    outln!("last:        {}", describe_time(summary.last))?;
    outln!("median step: {}", describe_step(summary.median_step))?;
    outln!(
        "gaps:        {} (longer than twice the median step)",
        summary.gaps.len()
    )?;
    let mut gaps = summary.gaps.clone();
    gaps.sort_by_key(|gap| std::cmp::Reverse(gap.before.as_millis() - gap.after.as_millis()));
    for gap in gaps.iter().take(10) {
        let length = Step::try_from(gap.before.as_millis() - gap.after.as_millis())
            .map_or_else(|_| "?".to_owned(), |step| step.to_string());
        outln!("  {} .. {}  ({length})", gap.after, gap.before)?;
    }
    if gaps.len() > 10 {
        outln!("  ... {} shorter gaps not shown", gaps.len() - 10)?;
    }
    Ok(())
}

/// What a fit found: its window, seasonal periods, level shift, members used and skipped.
pub(crate) fn print_model(model: &FittedModel) -> Result<()> {
    let periods: Vec<String> = model
        .preprocessing()
        .seasonality
        .periods()
        .iter()
        .map(|period| period.steps.to_string())
        .collect();
    let weights: Vec<String> = model
        .weights()
        .iter()
        .filter(|(_, weight)| *weight > 0.0)
        .map(|(kind, weight)| format!("{kind} {weight:.2}"))
        .collect();
    outln!(
        "  fitted on {} .. {} ({} points)",
        model.trained_start(),
        model.trained_end(),
        model.preprocessing().points
    )?;
    outln!("  seasonal periods (steps): {}", periods.join(", "))?;
    if let Some(shift) = model.preprocessing().level_shift {
        let how = match (shift.multiplicative, shift.damping) {
            (true, _) => "scaled".to_owned(),
            (false, Some(factor)) => format!("moved, its wiggle damped by {factor:.2},"),
            (false, None) => "moved".to_owned(),
        };
        outln!(
            "  level shift at {}: {:.4} -> {:.4} (older history {how} to the new level)",
            shift.at,
            shift.before,
            shift.after,
        )?;
    }
    outln!("  members used: {}", weights.join(", "))?;
    for (kind, reason) in model.report().skipped() {
        if !reason.is_empty() {
            outln!("  skipped {kind}: {reason}")?;
        }
    }
    Ok(())
}

/// The summary, timeline and curve CSV, and the chart, of a replay, where asked for.
pub(crate) fn write_simulation_outputs(
    replay: &SloReplay,
    output: Option<&Path>,
    chart: Option<&Path>,
) -> Result<()> {
    let report = &replay.report;
    if let Some(path) = output {
        report.write_summary_csv(std::fs::File::create(path)?)?;
        let timeline = path.with_extension("timeline.csv");
        report.write_timeline_csv(std::fs::File::create(&timeline)?)?;
        outln!("wrote {} and {}", path.display(), timeline.display())?;
        let levels = path.with_extension("levels.csv");
        replay.write_levels_csv(std::fs::File::create(&levels)?)?;
        outln!("wrote {}", levels.display())?;
    }
    if let Some(path) = chart {
        report.write_png(path, (1600, 700))?;
        outln!("wrote chart {}", path.display())?;
    }
    Ok(())
}
