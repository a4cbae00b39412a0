//! PNG chart of a replay: demand and each strategy's serving capacity over time.
//!
//! Text is drawn with DejaVu Sans embedded in the binary (plotters' `ab_glyph` feature), so the chart
//! renders on machines without any installed font and without fontconfig or freetype.

use std::path::Path;
use std::sync::OnceLock;

use plotters::prelude::*;
use plotters::style::FontStyle;

use super::{SimulateError, SimulationReport, Strategy};

/// Registers the embedded font once per process; the outcome is kept so every chart reports it.
fn register_font() -> Result<(), String> {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            plotters::style::register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular())
                .map_err(|_| "embedded DejaVu Sans font is not a valid font".to_owned())
        })
        .clone()
}

fn colour(strategy: Strategy) -> RGBColor {
    match strategy {
        Strategy::Predictive => RGBColor(0, 114, 178),
        Strategy::Hpa => RGBColor(213, 94, 0),
        Strategy::Oracle => RGBColor(0, 158, 115),
    }
}

pub(super) fn draw(
    report: &SimulationReport,
    path: &Path,
    size: (u32, u32),
) -> Result<(), SimulateError> {
    let failed = |message: String| SimulateError::Chart {
        path: path.to_owned(),
        message,
    };
    register_font().map_err(failed)?;
    draw_inner(report, path, size).map_err(|error| failed(error.to_string()))
}

fn draw_inner(
    report: &SimulationReport,
    path: &Path,
    size: (u32, u32),
) -> Result<(), Box<dyn std::error::Error>> {
    let step_days = report.step().as_millis() as f64 / 86_400_000.0;
    let steps = report.demand().len();
    let capacity_per_replica = report.capacity_per_replica();
    let highest = report
        .runs()
        .iter()
        .flat_map(|run| run.timeline.iter())
        .map(|record| f64::from(record.ready_min) * capacity_per_replica)
        .chain(
            report
                .demand()
                .iter()
                .copied()
                .filter(|value| value.is_finite()),
        )
        .fold(0.0_f64, f64::max);

    let root = BitMapBackend::new(path, size).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!(
                "demand and serving capacity from {} (step {})",
                report.start(),
                report.step()
            ),
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(
            0.0..(steps as f64 * step_days).max(step_days),
            0.0..highest * 1.1 + 1.0,
        )?;
    chart
        .configure_mesh()
        .x_desc("days since start")
        .y_desc("load (capacity at 100%)")
        .draw()?;

    // Step lines: a value holds for its whole step, as the simulator assumes.
    let stepped = |values: Vec<f64>| -> Vec<(f64, f64)> {
        values
            .iter()
            .enumerate()
            .flat_map(|(index, &value)| {
                let from = index as f64 * step_days;
                [(from, value), (from + step_days, value)]
            })
            .filter(|(_, value)| value.is_finite())
            .collect()
    };
    chart
        .draw_series(LineSeries::new(
            stepped(report.demand().to_vec()),
            BLACK.stroke_width(2),
        ))?
        .label("demand")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK.stroke_width(2)));
    for run in report.runs() {
        let capacity = run
            .timeline
            .iter()
            .map(|record| f64::from(record.ready_min) * capacity_per_replica)
            .collect();
        let style = colour(run.strategy).stroke_width(1);
        chart
            .draw_series(LineSeries::new(stepped(capacity), style))?
            .label(format!(
                "{} ({} short steps, {:.3}x oracle replica-hours)",
                run.strategy, run.score.underprovisioned_steps, run.score.vs_oracle
            ))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}
