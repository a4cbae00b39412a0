//! `prescale demo --prometheus URL`: the demo workload with its history pulled from a
//! Prometheus-compatible API instead of the embedded samples. An in-process server follows the
//! source as `prescale serve` does (backfill of `planning.history_window`, then a poll each step),
//! plans on what it pulled, and the demo prints the source's status and the plan.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use prescale::app::telemetry::Telemetry;
use prescale::app::{History, ServingState};
use prescale::config::Config;
use prescale::domain::Timestamp;
use prescale::service::proto::{self, plan_service_client::PlanServiceClient};
use prescale::service::{self, ServerOptions};
use prescale::store::PolarsStore;
use tonic::transport::{Channel, Endpoint};

use super::{DEMO_WORKLOAD, print_plan, upsert_workload, write_plan_csv};
use crate::output::outln;

/// How long the demo waits for the source's first pull and for the first plan.
const PATIENCE: Duration = Duration::from_secs(120);

/// Runs the demo workload on `query` at `url`: see the module documentation.
pub(crate) async fn walk(config: &Config, url: &str, query: &str, output_dir: &Path) -> Result<()> {
    let directory = tempfile::tempdir().context("creating a temporary store directory")?;
    let store = std::sync::Arc::new(PolarsStore::open(directory.path(), config.store_options())?);
    let state = ServingState::open(
        History::new(store),
        directory.path(),
        config.temporary_server_settings(),
        std::sync::Arc::new(Telemetry::default()),
    )?;
    let server = service::spawn_local(state, ServerOptions::default()).await?;
    outln!(
        "prescale demo: gRPC server in-process on {}, temporary store at {}",
        server.addr,
        directory.path().display()
    )?;
    let channel = Endpoint::from_shared(format!("http://{}", server.addr))?
        .connect()
        .await
        .context("connecting to the in-process server")?;
    let text = format!(
        "{DEMO_WORKLOAD}\n[source.prometheus]\nurl = {}\nquery = {}\nstep = \"5m\"\n",
        toml::Value::String(url.to_owned()),
        toml::Value::String(query.to_owned()),
    );
    let mut plans = PlanServiceClient::new(channel.clone());
    let stored = upsert_workload(&mut plans, &text).await?;
    outln!(
        "\n== PlanService.UpsertWorkload {} on {query:?} from {url}, 5-minute steps",
        stored.name
    )?;
    let status = first_pull(&mut plans, &stored.name).await?;
    outln!(
        "== source: {} points pulled, history from {}{}",
        status.points_pulled,
        Timestamp::from_millis(status.history_available_from_ms),
        if status.history_short {
            " (less than the history window: planning on what the source keeps)"
        } else {
            ""
        }
    )?;
    let plan = first_plan(&channel, &stored.name).await?;
    print_plan(&plan)?;
    let path = output_dir.join("prometheus_plan.csv");
    write_plan_csv(&plan, &path)?;
    outln!("  written to {}", path.display())?;
    server.shutdown().await.context("server task")??;
    outln!("\nserver shut down; outputs in {}", output_dir.display())?;
    Ok(())
}

/// Polls `GetWorkload` until the source's first pull succeeded; fails with the source's error if
/// it has one when patience runs out.
async fn first_pull(
    plans: &mut PlanServiceClient<Channel>,
    name: &str,
) -> Result<proto::SourceStatus> {
    let started = Instant::now();
    loop {
        let workload = plans
            .get_workload(proto::GetWorkloadRequest {
                name: name.to_owned(),
            })
            .await?
            .into_inner();
        let status = workload.source_status.unwrap_or_default();
        if status.last_success_ms != 0 {
            return Ok(status);
        }
        if started.elapsed() > PATIENCE {
            bail!(
                "no successful pull from the source in {} s: {}",
                PATIENCE.as_secs(),
                if status.last_error.is_empty() {
                    "no answer yet"
                } else {
                    &status.last_error
                }
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Polls `GetPlan` until a plan is computed. A plan tried before the backfill was stored fails
/// (its series is still unknown) and is retried once the pulled samples arrive, so every error
/// waits; the last one is reported when patience runs out.
async fn first_plan(channel: &Channel, name: &str) -> Result<proto::Plan> {
    let mut plans = PlanServiceClient::new(channel.clone());
    let started = Instant::now();
    loop {
        match plans
            .get_plan(proto::GetPlanRequest {
                workload: name.to_owned(),
            })
            .await
        {
            Ok(plan) => return Ok(plan.into_inner()),
            Err(status) if started.elapsed() > PATIENCE => {
                bail!(
                    "no plan after {} s: {}",
                    PATIENCE.as_secs(),
                    status.message()
                )
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}
