//! Series a live model cannot simply serve, over a real server on 127.0.0.1:0: a cycle of a few
//! steps (which augurs' ETS cannot model) and a sampling interval that changes under a live model.

mod common;
mod grpc_support;

use std::time::Duration;

use common::{TestServer, next_plan, watch_plans};
use grpc_support::{START_MS, STEP_MS, daily, forecast_request, settings, workload, write_request};
use prescale::service::ServerOptions;
use prescale::service::proto::{
    self, forecast_service_client::ForecastServiceClient,
    ingest_service_client::IngestServiceClient, plan_service_client::PlanServiceClient,
};
use tonic::transport::Channel;

/// `count` samples of `name` every `step_ms` from `START_MS + first_ms`: a cycle of `period`
/// samples on a steady level.
fn short_cycle(
    name: &str,
    first_ms: i64,
    step_ms: i64,
    count: i64,
    period: i64,
) -> proto::WriteRequest {
    let (timestamps_ms, values) = (0..count)
        .map(|index| {
            let phase = std::f64::consts::TAU * (index % period) as f64 / period as f64;
            let noise = ((index * 7919) % 13) as f64;
            (
                START_MS + first_ms + index * step_ms,
                500.0 + 200.0 * phase.cos() + noise,
            )
        })
        .unzip();
    write_request(name, timestamps_ms, values)
}

async fn get_plan(channel: &Channel, name: &str) -> Result<proto::Plan, tonic::Status> {
    PlanServiceClient::new(channel.clone())
        .get_plan(proto::GetPlanRequest {
            workload: name.to_owned(),
        })
        .await
        .map(tonic::Response::into_inner)
}

/// A 10- or 20-minute job on a 5-minute series (a 2- or 4-step cycle) made augurs' ETS panic
/// inside the ensemble: `Forecast` and every plan of the series failed with INTERNAL for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_series_with_a_two_or_four_step_cycle_is_forecast_and_planned() {
    let server = TestServer::start(settings(), ServerOptions::default()).await;
    let channel = server.channel().await;
    for (name, period) in [("every_ten_minutes", 2), ("every_twenty_minutes", 4)] {
        IngestServiceClient::new(channel.clone())
            .write(short_cycle(name, 0, STEP_MS, 3 * 288, period))
            .await
            .unwrap();
        let forecast = ForecastServiceClient::new(channel.clone())
            .forecast(forecast_request(name, "2h"))
            .await
            .unwrap_or_else(|status| panic!("{name}: {status:?}"))
            .into_inner();
        assert_eq!(forecast.mean.len(), 24, "{name}");
        assert!(forecast.mean.iter().all(|value| value.is_finite()));

        PlanServiceClient::new(channel.clone())
            .upsert_workload(workload(name, name))
            .await
            .unwrap();
        let mut watch = watch_plans(&channel, &[name]).await;
        let plan = next_plan(&mut watch).await;
        assert_eq!(plan.step_ms, STEP_MS, "{name}");
        assert_eq!(get_plan(&channel, name).await.unwrap(), plan);
    }
    server.shutdown().await;
}

/// A scrape interval moved from 5 minutes to 1: once the series' median step is a minute, the live
/// model (fitted on 5-minute steps) cannot be re-anchored on it. `GetPlan` keeps answering with
/// the last good plan while the series is refitted in the background, and then a plan on the new
/// step is published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_series_whose_step_changes_keeps_its_plan_and_is_refitted_in_the_background() {
    let server = TestServer::start(settings(), ServerOptions::default()).await;
    let channel = server.channel().await;
    let days = 3 * 288;
    IngestServiceClient::new(channel.clone())
        .write(daily("load", 0, days))
        .await
        .unwrap();
    PlanServiceClient::new(channel.clone())
        .upsert_workload(workload("api", "load"))
        .await
        .unwrap();
    let mut watch = watch_plans(&channel, &["api"]).await;
    let first = next_plan(&mut watch).await;
    assert_eq!(first.step_ms, STEP_MS);

    // More one-minute samples than the five-minute ones before them: the median step is a minute.
    let minute = 60_000;
    IngestServiceClient::new(channel.clone())
        .write(short_cycle("load", days * STEP_MS, minute, days + 60, 60))
        .await
        .unwrap();
    // Until the refitted model is live, GetPlan answers with the plan it had.
    let failed = tokio::time::timeout(Duration::from_secs(120), async {
        while server.metrics.plan_failures.get() == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(failed.is_ok(), "the live model was never found stale");
    let meanwhile = get_plan(&channel, "api").await.unwrap();
    assert!(meanwhile.step_ms == STEP_MS || meanwhile.step_ms == minute);

    let mut refreshed = next_plan(&mut watch).await;
    for _ in 0..5 {
        if refreshed.step_ms == minute {
            break;
        }
        refreshed = next_plan(&mut watch).await;
    }
    assert_eq!(refreshed.step_ms, minute, "a plan on the new step");
    assert!(refreshed.revision > first.revision);
    assert_ne!(refreshed.model_version, first.model_version);
    assert_eq!(get_plan(&channel, "api").await.unwrap().step_ms, minute);
    assert_eq!(server.metrics.model_refits.get(), 1);
    server.shutdown().await;
}
