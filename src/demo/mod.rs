//! `prescale demo`: the main job on the embedded sample data, walked through the gRPC API of a server
//! running in-process on an ephemeral loopback port, serving the trained models committed in `models/`.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use prescale::app::telemetry::Telemetry;
use prescale::app::{self, Backtest, History, ModelChoice, SAMPLE_SERIES, ServingState};
use prescale::config::Config;
use prescale::domain::{Interval, Level, Step, Timestamp};
use prescale::ingest::{self, BadRowPolicy};
use prescale::plan::PlanningRule;
use prescale::service::proto::{
    self, admin_service_client::AdminServiceClient, forecast_service_client::ForecastServiceClient,
    ingest_service_client::IngestServiceClient, plan_service_client::PlanServiceClient,
};
use prescale::service::{self, ServerOptions};
use prescale::store::PolarsStore;
use tokio_stream::StreamExt;
use tonic::transport::{Channel, Endpoint};

use crate::output::{out, outln, print_series_table, write_simulation_outputs};

mod prometheus;

/// The demo workload: NYC taxi demand scaled so the weekly peak needs about 50 replicas at 70%,
/// planned for at most 1% of steps short.
const DEMO_WORKLOAD: &str = include_str!("workload.toml");

/// Samples per pushed message.
const PUSH_BATCH: usize = 4096;

/// A Prometheus-compatible API the demo pulls its workload's history from, and the query.
#[derive(Debug, Clone)]
pub(crate) struct PrometheusDemo {
    /// Base URL of the API.
    pub(crate) url: String,
    /// PromQL returning one series.
    pub(crate) query: String,
}

/// Runs the demo: see the module documentation; with `prometheus`, the demo workload on that
/// source instead (see [`prometheus`]).
pub(crate) fn run(
    config: &Config,
    output_dir: &Path,
    prometheus: Option<&PrometheusDemo>,
) -> Result<()> {
    std::fs::create_dir_all(output_dir)
        .with_context(|| format!("creating {}", output_dir.display()))?;
    let runtime = crate::runtime::multi_threaded()?;
    match prometheus {
        Some(source) => runtime.block_on(prometheus::walk(
            config,
            &source.url,
            &source.query,
            output_dir,
        )),
        None => runtime.block_on(walk(config, output_dir)),
    }
}

async fn walk(config: &Config, output_dir: &Path) -> Result<()> {
    let directory = tempfile::tempdir().context("creating a temporary store directory")?;
    let store = Arc::new(PolarsStore::open(directory.path(), config.store_options())?);
    let app = History::new(store);
    // The trained models of `models/`, so the server plans from registry models as in production
    // rather than training each series on first use.
    app::install_sample_models(&directory.path().join("models"))
        .context("installing the sample models")?;
    let state = ServingState::open(
        app.clone(),
        directory.path(),
        config.temporary_server_settings(),
        Arc::new(Telemetry::default()),
    )?;
    let server = service::spawn_local(state, ServerOptions::default()).await?;
    let address = server.addr;
    outln!(
        "prescale demo: gRPC server in-process on {address}, temporary store at {}",
        directory.path().display()
    )?;
    let channel = Endpoint::from_shared(format!("http://{address}"))?
        .connect()
        .await
        .context("connecting to the in-process server")?;

    push_samples(&channel).await?;
    let listed = AdminServiceClient::new(channel.clone())
        .list_series(proto::ListSeriesRequest::default())
        .await?
        .into_inner();
    outln!(
        "\n== AdminService.ListSeries: {} series",
        listed.series.len()
    )?;
    print_series_table(&app.list_series()?)?;

    backtest_samples(&app)?;
    forecast_taxi(&channel, output_dir).await?;
    plan_taxi(&channel, output_dir).await?;

    let taxi = app.regular_series(&SAMPLE_SERIES[0].series_id(), None)?;
    let workload = prescale::plan::Workload::from_toml(DEMO_WORKLOAD)?;
    outln!("\n== replay of the last 7 days, replanning every hour")?;
    // Planned under the workload's SLO, with the curve over every candidate rule and the HPA
    // spending the same replica-hours beside each, as `prescale simulate` prints them.
    let replay = app::replay_with_slo(
        &taxi,
        &workload,
        app::simulate_params(
            7.0,
            Duration::from_secs(3600),
            config.settings.history_window.span(taxi.step()),
            prescale::events::EventCalendar::default(),
        ),
        ModelChoice::Ensemble,
        app::ReplayFits::EveryReplan,
    )?;
    out!("{replay}")?;
    write_simulation_outputs(
        &replay,
        Some(&output_dir.join("nyc_taxi_simulation.csv")),
        Some(&output_dir.join("nyc_taxi_simulation.png")),
    )?;

    server.shutdown().await.context("server task")??;
    outln!("\nserver shut down; outputs in {}", output_dir.display())?;
    Ok(())
}

/// IngestService.Push: every sample series, in batches, on one client stream.
async fn push_samples(channel: &Channel) -> Result<()> {
    let mut requests = Vec::new();
    for sample in SAMPLE_SERIES {
        let parsed = ingest::parse_csv(
            sample.csv.as_bytes(),
            Path::new(sample.file_name),
            BadRowPolicy::Reject,
            &app::store_timestamp_rule(),
        )?;
        let series = Some(proto::SeriesRef {
            name: sample.series_id().name().to_owned(),
            labels: Default::default(),
        });
        for chunk in parsed.samples.chunks(PUSH_BATCH) {
            requests.push(proto::WriteRequest {
                series: vec![proto::SeriesSamples {
                    series: series.clone(),
                    timestamps_ms: chunk.iter().map(|s| s.timestamp.as_millis()).collect(),
                    values: chunk.iter().map(|s| s.value).collect(),
                }],
            });
        }
        outln!("  {:<24} {}", sample.name, sample.description)?;
    }
    let reply = IngestServiceClient::new(channel.clone())
        .push(tokio_stream::iter(requests))
        .await?
        .into_inner();
    outln!(
        "== IngestService.Push: {} samples accepted in {} messages",
        reply.accepted,
        reply.batches
    )?;
    Ok(())
}

/// Holds out the last day of each sample series and scores every model on it (a local use case).
fn backtest_samples(app: &History) -> Result<()> {
    let levels = Level::DEFAULTS.to_vec();
    for sample in SAMPLE_SERIES {
        let history = app.regular_series(&sample.series_id(), None)?;
        let backtest = Backtest {
            horizon: app::parse_horizon("1d", history.step())?,
            folds: 1,
            levels: levels.clone(),
            max_history: (28 * 86_400_000 / history.step().as_millis()) as usize,
        };
        outln!(
            "\n== {} ({}): last day held out, fit on up to 28 days before it",
            sample.name,
            history.step()
        )?;
        out!(
            "{}",
            app::format_scores(&backtest.run(&history, &ModelChoice::all())?, &levels)
        )?;
    }
    Ok(())
}

/// ForecastService.Forecast of NYC taxi one day ahead, written as CSV.
async fn forecast_taxi(channel: &Channel, output_dir: &Path) -> Result<()> {
    let response = ForecastServiceClient::new(channel.clone())
        .forecast(proto::ForecastRequest {
            series: Some(proto::SeriesRef {
                name: SAMPLE_SERIES[0].series_id().name().to_owned(),
                labels: Default::default(),
            }),
            horizon: "1d".to_owned(),
            levels: vec![80.0, 95.0],
            model: "ensemble".to_owned(),
        })
        .await?
        .into_inner();
    let model = response.model.clone().unwrap_or_default();
    outln!(
        "\n== ForecastService.Forecast nyc_taxi: {} steps from {}, model {} (backtest MASE {:.3})",
        response.mean.len(),
        Timestamp::from_millis(response.start_ms),
        model.version,
        model.backtest_mase
    )?;
    for member in &response.members {
        outln!(
            "  {:<16} weight {:.3}  backtest MASE {:.3}",
            member.name,
            member.weight,
            member.backtest_mase
        )?;
    }
    for skipped in &response.skipped_members {
        outln!("  skipped {skipped}")?;
    }
    let step = Step::try_from(response.step_ms)?;
    let intervals = response
        .bands
        .iter()
        .map(|band| {
            Ok(Interval {
                level: Level::from_percent(band.level)?,
                lower: band.lower.clone(),
                upper: band.upper.clone(),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let forecast = prescale::domain::Forecast::new(
        Timestamp::from_millis(response.start_ms),
        step,
        response.mean,
        intervals,
    );
    let path = output_dir.join("nyc_taxi_forecast.csv");
    app::write_forecast_csv(&forecast, &path)?;
    outln!("  written to {}", path.display())?;
    Ok(())
}

/// PlanService: upsert the demo workload, watch its first plan, print it and write it as CSV.
async fn plan_taxi(channel: &Channel, output_dir: &Path) -> Result<()> {
    let mut plans = PlanServiceClient::new(channel.clone());
    let stored = upsert_workload(&mut plans, DEMO_WORKLOAD).await?;
    outln!("\n== PlanService.UpsertWorkload {}", stored.name)?;
    let mut watch = plans
        .watch_plans(proto::WatchPlansRequest {
            workloads: vec![stored.name.clone()],
        })
        .await?
        .into_inner();
    let Some(plan) = tokio::time::timeout(Duration::from_secs(300), watch.next())
        .await
        .context("waiting for the first plan")?
    else {
        bail!("the plan stream ended before the first plan");
    };
    let plan = plan?;
    print_plan(&plan)?;
    let path = output_dir.join("nyc_taxi_plan.csv");
    write_plan_csv(&plan, &path)?;
    outln!("  written to {}", path.display())?;
    Ok(())
}

/// PlanService.UpsertWorkload of the workload `text` describes (a `workload.toml`).
async fn upsert_workload(
    plans: &mut PlanServiceClient<Channel>,
    text: &str,
) -> Result<proto::Workload> {
    let workload = prescale::plan::Workload::from_toml(text)?;
    Ok(plans
        .upsert_workload(proto::UpsertWorkloadRequest {
            workload: Some(service::workload_message(&workload)),
        })
        .await?
        .into_inner())
}

fn print_plan(plan: &proto::Plan) -> Result<()> {
    let steps = plan.steps.clone().unwrap_or_default();
    outln!(
        "== PlanService.WatchPlans: plan revision {} for {} ({}, {} steps of {} s, planned on the {}, warm-up {} s, model {})",
        plan.revision,
        plan.workload,
        plan.mode,
        steps.at_ms.len(),
        plan.step_ms / 1000,
        PlanningRule::text(plan.planning_level, plan.planning_headroom),
        plan.warm_up_ms / 1000,
        plan.model_version
    )?;
    if let Some(slo) = &plan.slo {
        outln!("{}", slo.reason)?;
    }
    if let Some(reactive) = &plan.reactive {
        outln!(
            "reactive now: {} replicas (load {:.1} at {}); executors apply max(planned, reactive)",
            reactive.replicas,
            reactive.observed_load,
            Timestamp::from_millis(reactive.observed_at_ms)
        )?;
    }
    outln!(
        "{:<22} {:<22} {:>8} {:>6} {:>6} {:>12}  reason",
        "request at",
        "serve from",
        "desired",
        "low",
        "high",
        "planned load"
    )?;
    for reason in &steps.reasons {
        let index = reason.step as usize;
        outln!(
            "{:<22} {:<22} {:>8} {:>6} {:>6} {:>12.1}  {}",
            Timestamp::from_millis(steps.request_at_ms[index]).to_string(),
            Timestamp::from_millis(steps.at_ms[index]).to_string(),
            steps.desired[index],
            steps.low[index],
            steps.high[index],
            steps.planned_load[index],
            reason.reason
        )?;
    }
    Ok(())
}

/// `timestamp,desired,low,high,reason`, as `prescale plan --output` writes it.
fn write_plan_csv(plan: &proto::Plan, path: &Path) -> Result<()> {
    let mut out = std::io::BufWriter::new(
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
    );
    writeln!(out, "timestamp,desired,low,high,reason")?;
    let steps = plan.steps.clone().unwrap_or_default();
    let mut reasons = steps.reasons.iter().peekable();
    for index in 0..steps.at_ms.len() {
        let reason = reasons
            .next_if(|reason| reason.step as usize == index)
            .map_or("", |reason| reason.reason.as_str());
        writeln!(
            out,
            "{},{},{},{},{}",
            Timestamp::from_millis(steps.request_at_ms[index]),
            steps.desired[index],
            steps.low[index],
            steps.high[index],
            reason.replace(',', ";")
        )?;
    }
    out.flush()?;
    Ok(())
}
