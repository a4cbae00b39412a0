//! The commands that forecast a history: `forecast`, `backtest`, `plan` and `simulate`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use clap::Args;
use prescale::app::{self, AppError, Backtest, EventStore, ModelChoice};
use prescale::config::Config;
use prescale::domain::{Forecast, Horizon, TimeSeries};
use prescale::forecast::{HistoryWindow, Predict};

use super::args::InputArgs;
use crate::output::{out, outln, print_model, write_simulation_outputs};

#[derive(Debug, Args)]
pub(super) struct ForecastArgs {
    #[command(flatten)]
    pub(super) input: InputArgs,
    /// How far ahead: a duration (1d, 90m) or a number of steps.
    #[arg(long, default_value = "1d")]
    horizon: String,
    /// Interval levels in percent.
    #[arg(long, default_value = "80,95")]
    levels: String,
    /// ensemble, or one member: seasonal_naive, fft, trend, forest, scryer, mstl, ets, seasonal_ar.
    #[arg(long, default_value = "ensemble")]
    model: String,
    /// Output CSV: timestamp,mean,lower_L,upper_L... per level.
    #[arg(long)]
    output: PathBuf,
}

#[derive(Debug, Args)]
pub(super) struct BacktestArgs {
    #[command(flatten)]
    pub(super) input: InputArgs,
    /// Steps forecast from each origin: a duration or a number of steps.
    #[arg(long, default_value = "1d")]
    horizon: String,
    /// Number of rolling origins over the most recent history.
    #[arg(long, default_value_t = 5)]
    folds: usize,
    /// Interval levels in percent.
    #[arg(long, default_value = "80,95")]
    levels: String,
    /// Most recent history each fit may use [default: `planning.history_window`, which unless
    /// set is sized to the step: 28 days of 5-minute or hourly data, 8 years of daily data].
    #[arg(long)]
    max_history: Option<humantime::Duration>,
    /// Only this model [default: every member and the ensemble].
    #[arg(long)]
    model: Option<String>,
    /// Also write the table as CSV.
    #[arg(long)]
    output: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub(super) struct PlanArgs {
    #[command(flatten)]
    pub(super) input: InputArgs,
    /// Workload file (see workload.example.toml).
    #[arg(long)]
    workload: PathBuf,
    /// How far ahead to plan.
    #[arg(long, default_value = "1d")]
    horizon: String,
    /// Replicas running now [default: what the latest load needs, within min_replicas and the
    /// maximum].
    #[arg(long)]
    current_replicas: Option<u32>,
    /// Forecasting model.
    #[arg(long, default_value = "ensemble")]
    model: String,
    /// Output CSV: timestamp,desired,low,high,reason.
    #[arg(long)]
    output: PathBuf,
}

#[derive(Debug, Args)]
pub(super) struct SimulateArgs {
    #[command(flatten)]
    pub(super) input: InputArgs,
    /// Workload file (see workload.example.toml).
    #[arg(long)]
    workload: PathBuf,
    /// Days of history to replay (the end of the series).
    #[arg(long, default_value_t = 7.0)]
    days: f64,
    /// How often the predictive strategy replans.
    #[arg(long, default_value = "1h")]
    replan_every: humantime::Duration,
    /// Forecasting model.
    #[arg(long, default_value = "ensemble")]
    model: String,
    /// Replay as the service serves between retrains (e.g. `1d` for the nightly retrain): each fit
    /// is re-anchored on the newest history at the replans until this long after it, then
    /// refitted. Without it, every replan fits anew.
    #[arg(long)]
    retrain_every: Option<humantime::Duration>,
    /// Write the per-strategy summary as CSV (and the timeline beside it as *.timeline.csv).
    #[arg(long)]
    output: Option<PathBuf>,
    /// Write a PNG chart of demand and each strategy's capacity.
    #[arg(long)]
    chart: Option<PathBuf>,
}

/// `prescale forecast`: fitted on the newest `planning.history_window`, as the service fits, with
/// the stored events applied as plans apply them.
pub(super) fn forecast(config: &Config, args: &ForecastArgs) -> Result<()> {
    let history = args.input.load(config)?;
    let history = history.newest(config.settings.history_window.span(history.step()));
    let horizon = app::parse_horizon(&args.horizon, history.step())?;
    let levels = app::parse_levels(&args.levels)?;
    let choice: ModelChoice = args.model.parse()?;
    let calendar = EventStore::new(&config.data_dir).load()?;
    let model = app::fit(&calendar.mask(&history), choice)?;
    // The model above forecasts from the end of the history; learning an event's uplift
    // forecasts from before its past occurrences, which takes a fit each.
    let forecast_with = |window: &TimeSeries, horizon: Horizon| -> Result<Forecast, AppError> {
        if window.end() == history.end() {
            return Ok(model.predict(horizon, &levels)?);
        }
        Ok(app::fit(window, choice)?.predict(horizon, &levels)?)
    };
    let with_events =
        app::forecast_with_events(&history, horizon, &calendar, &forecast_with, Duration::ZERO)?;
    let forecast = with_events.forecast;
    app::write_forecast_csv(&forecast, &args.output)?;
    for applied in &with_events.applied {
        outln!(
            "event {} applied from {} to {}: up to x{:.2}, learned from {} past occurrences",
            applied.name,
            applied.pre_warm_from,
            applied.range.to(),
            applied.peak_multiplier,
            applied.occurrences
        )?;
    }
    for skipped in &with_events.skipped {
        outln!("warning: event {skipped} has no past occurrence to learn from; not applied")?;
    }
    outln!(
        "forecast {} steps of {} from {} with {choice} to {}",
        forecast.len(),
        forecast.step(),
        forecast.start(),
        args.output.display()
    )?;
    print_model(&model)?;
    Ok(())
}

/// `prescale backtest`: every model (or one) from rolling origins, as a table and optionally CSV.
pub(super) fn backtest(config: &Config, args: &BacktestArgs) -> Result<()> {
    let history = args.input.load(config)?;
    let levels = app::parse_levels(&args.levels)?;
    let backtest = Backtest {
        horizon: app::parse_horizon(&args.horizon, history.step())?,
        folds: args.folds,
        levels: levels.clone(),
        max_history: args
            .max_history
            .map_or(config.settings.history_window, |span| {
                HistoryWindow::Fixed(span.into())
            })
            .points(history.step()),
    };
    let choices = match &args.model {
        Some(model) => vec![model.parse()?],
        None => ModelChoice::all(),
    };
    let scores = backtest.run(&history, &choices)?;
    outln!(
        "backtest: {} folds of {} steps ({}) on {} points; MASE scaled by the in-sample one-day seasonal naive error",
        backtest.folds,
        backtest.horizon.steps(),
        history.step(),
        history.len()
    )?;
    out!("{}", app::format_scores(&scores, &levels))?;
    if let Some(path) = &args.output {
        app::write_scores_csv(&scores, &levels, path)?;
    }
    Ok(())
}

/// `prescale plan`: a forecast of the newest `planning.history_window` turned into a plan.
pub(super) fn plan(config: &Config, args: &PlanArgs) -> Result<()> {
    let history = args.input.load(config)?;
    let history = history.newest(config.settings.history_window.span(history.step()));
    let workload = app::load_workload(&args.workload)?;
    let horizon = app::parse_horizon(&args.horizon, history.step())?;
    let calendar = EventStore::new(&config.data_dir).load()?;
    let outcome = app::build_plan(
        &history,
        &workload,
        horizon,
        &calendar,
        args.model.parse()?,
        args.current_replicas,
    )?;
    app::write_plan_csv(&outcome.plan, &args.output)?;
    out!("{}", outcome.plan)?;
    if let Some(rule) = &outcome.rule {
        outln!("{rule}")?;
    }
    for skipped in &outcome.skipped_events {
        outln!("warning: event {skipped} has no past occurrence to learn from; not applied")?;
    }
    outln!(
        "wrote {} plan steps to {}",
        outcome.plan.steps().len(),
        args.output.display()
    )?;
    Ok(())
}

/// `prescale simulate`: the replay of predictive plans vs the HPA vs an oracle.
pub(super) fn simulate(config: &Config, args: &SimulateArgs) -> Result<()> {
    let history = args.input.load(config)?;
    let workload = app::load_workload(&args.workload)?;
    let calendar = EventStore::new(&config.data_dir).load()?;
    let fits = args
        .retrain_every
        .map_or(app::ReplayFits::EveryReplan, |every| {
            app::ReplayFits::RetrainEvery(every.into())
        });
    let replay = app::replay_with_slo(
        &history,
        &workload,
        app::simulate_params(
            args.days,
            args.replan_every.into(),
            config.settings.history_window.span(history.step()),
            calendar,
        ),
        args.model.parse()?,
        fits,
    )?;
    outln!("models: {fits}")?;
    out!("{replay}")?;
    write_simulation_outputs(&replay, args.output.as_deref(), args.chart.as_deref())?;
    Ok(())
}
