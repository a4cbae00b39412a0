//! Every error of the gRPC service has its status code: a real server on 127.0.0.1:0 holding
//! three days of `load` and ten samples of `short` (both labelled `service=api`), with a 64 KiB
//! message limit and one stream at a time.

mod common;
mod grpc_support;

use std::time::Duration;

use common::TestServer;
use grpc_support::{code_of, daily, forecast_request, settings, workload};
use prescale::service::ServerOptions;
use prescale::service::proto::{
    self, admin_service_client::AdminServiceClient, event_service_client::EventServiceClient,
    forecast_service_client::ForecastServiceClient, ingest_service_client::IngestServiceClient,
    plan_service_client::PlanServiceClient,
};
use tonic::Code;
use tonic::transport::Channel;

/// The server every test here calls: small limits, and the two series stored.
async fn serve_load_and_short() -> (TestServer, Channel) {
    let options = ServerOptions {
        max_message_bytes: 64 * 1024,
        max_streams: 1,
        ..ServerOptions::default()
    };
    let server = TestServer::start(settings(), options).await;
    let channel = server.channel().await;
    let mut ingest = IngestServiceClient::new(channel.clone());
    ingest.write(daily("load", 0, 3 * 288)).await.unwrap();
    ingest.write(daily("short", 0, 10)).await.unwrap();
    (server, channel)
}

fn get(name: &str) -> proto::GetPlanRequest {
    proto::GetPlanRequest {
        workload: name.to_owned(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_samples_are_invalid_arguments_and_the_batch_stores_nothing() {
    let (server, channel) = serve_load_and_short().await;
    let mut ingest = IngestServiceClient::new(channel.clone());
    let mut bad = daily("load", 10_000, 5);
    bad.series[0].values[3] = f64::NAN;
    bad.series.push(daily("other", 0, 5).series.remove(0));
    let (code, message) = code_of(ingest.write(bad).await);
    assert_eq!(code, Code::InvalidArgument, "{message}");
    let mut infinite = daily("load", 10_000, 5);
    infinite.series[0].values[0] = f64::INFINITY;
    assert_eq!(
        code_of(ingest.write(infinite).await).0,
        Code::InvalidArgument
    );
    let mut mismatched = daily("load", 10_000, 5);
    mismatched.series[0].values.pop();
    assert_eq!(
        code_of(ingest.write(mismatched).await).0,
        Code::InvalidArgument
    );
    let thousand_years_ms = 1000 * 365 * grpc_support::DAY_MS;
    for time in [i64::MIN, grpc_support::START_MS + thousand_years_ms] {
        let mut out_of_range = daily("other", 0, 5);
        out_of_range.series[0].timestamps_ms[2] = time;
        let (code, message) = code_of(ingest.write(out_of_range).await);
        assert_eq!(code, Code::InvalidArgument, "{message}");
        assert!(message.contains("timestamp"), "{message}");
    }
    let listed = AdminServiceClient::new(channel.clone())
        .list_series(proto::ListSeriesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.series.len(), 2, "the refused batch stored nothing");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_forecast_requests_and_workloads_are_invalid_arguments() {
    let (server, channel) = serve_load_and_short().await;
    let mut forecasts = ForecastServiceClient::new(channel.clone());
    for (horizon, why, says) in [
        ("0", "zero", "at least one step"),
        ("0s", "zero", "at least one step"),
        ("30d", "beyond the maximum", "at most"),
        ("soon", "malformed", "neither a step count nor a duration"),
        ("7m", "not a whole number of steps", "not a whole number"),
    ] {
        let (code, message) = code_of(forecasts.forecast(forecast_request("load", horizon)).await);
        assert_eq!(code, Code::InvalidArgument, "{why}: {message}");
        assert!(message.contains(says), "{why}: {message}");
    }
    let mut level = forecast_request("load", "1h");
    level.levels = vec![150.0];
    assert_eq!(
        code_of(forecasts.forecast(level).await).0,
        Code::InvalidArgument
    );
    let mut model = forecast_request("load", "1h");
    model.model = "crystal_ball".to_owned();
    assert_eq!(
        code_of(forecasts.forecast(model).await).0,
        Code::InvalidArgument
    );
    let mut bad_workload = workload("api", "load");
    bad_workload.workload.as_mut().unwrap().max_replicas = 0;
    assert_eq!(
        code_of(
            PlanServiceClient::new(channel.clone())
                .upsert_workload(bad_workload)
                .await
        )
        .0,
        Code::InvalidArgument
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_series_workloads_jobs_and_events_are_not_found() {
    let (server, channel) = serve_load_and_short().await;
    assert_eq!(
        code_of(
            ForecastServiceClient::new(channel.clone())
                .forecast(forecast_request("missing", "1h"))
                .await
        )
        .0,
        Code::NotFound
    );
    assert_eq!(
        code_of(
            PlanServiceClient::new(channel.clone())
                .get_plan(get("nobody"))
                .await
        )
        .0,
        Code::NotFound
    );
    assert_eq!(
        code_of(
            AdminServiceClient::new(channel.clone())
                .get_job(proto::GetJobRequest {
                    id: "retrain-99".to_owned()
                })
                .await
        )
        .0,
        Code::NotFound
    );
    assert_eq!(
        code_of(
            EventServiceClient::new(channel.clone())
                .remove_event(proto::RemoveEventRequest {
                    name: "launch".to_owned()
                })
                .await
        )
        .0,
        Code::NotFound
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_selector_matching_two_series_is_an_invalid_argument_saying_so() {
    let (server, channel) = serve_load_and_short().await;
    let mut ambiguous = forecast_request("", "1h");
    ambiguous.series.as_mut().unwrap().name.clear();
    let (code, message) = code_of(
        ForecastServiceClient::new(channel.clone())
            .forecast(ambiguous)
            .await,
    );
    assert_eq!(code, Code::InvalidArgument, "{message}");
    assert!(message.contains("matches 2 series"), "{message}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_little_history_fails_its_precondition_saying_needed_and_got() {
    let (server, channel) = serve_load_and_short().await;
    let (code, message) = code_of(
        ForecastServiceClient::new(channel.clone())
            .forecast(forecast_request("short", "1h"))
            .await,
    );
    assert_eq!(code, Code::FailedPrecondition, "{message}");
    assert!(
        message.contains("needed") || message.contains("need"),
        "{message}"
    );
    assert!(message.contains("10"), "{message}");
    server.shutdown().await;
}

/// Upserts workload `tiny` on the ten samples of `short` and waits for its first plan attempt, which
/// fails: `GetPlan` answers `Unavailable` until then.
async fn plan_on_short(plans: &mut PlanServiceClient<Channel>) -> tonic::Status {
    first_plan_failure(plans, "tiny", "short").await
}

/// Upserts workload `name` on `series` and waits for its first plan attempt, which fails.
async fn first_plan_failure(
    plans: &mut PlanServiceClient<Channel>,
    name: &str,
    series: &str,
) -> tonic::Status {
    plans.upsert_workload(workload(name, series)).await.unwrap();
    let failed = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            match plans.get_plan(get(name)).await {
                Err(status) if status.code() == Code::Unavailable => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                other => return other,
            }
        }
    })
    .await
    .unwrap();
    failed.expect_err("the call fails")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_plan_reports_a_first_plan_on_too_short_a_series_as_a_failed_precondition() {
    let (server, channel) = serve_load_and_short().await;
    let status = plan_on_short(&mut PlanServiceClient::new(channel)).await;
    assert_eq!(status.code(), Code::FailedPrecondition);
    server.shutdown().await;
}

/// `NotFound` would say the workload is unknown; it exists, and its series does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_plan_reports_a_workload_on_a_missing_series_as_a_failed_precondition() {
    let (server, channel) = serve_load_and_short().await;
    let status =
        first_plan_failure(&mut PlanServiceClient::new(channel), "orphan", "nowhere").await;
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert!(status.message().contains("orphan"), "{status:?}");
    assert!(status.message().contains("nowhere"), "{status:?}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_messages_and_streams_beyond_the_limit_exhaust_resources() {
    let (server, channel) = serve_load_and_short().await;
    let mut plans = PlanServiceClient::new(channel.clone());
    plan_on_short(&mut plans).await;

    let (code, message) = code_of(
        IngestServiceClient::new(channel.clone())
            .write(daily("load", 20_000, 10_000))
            .await,
    );
    assert_eq!(code, Code::ResourceExhausted, "{message}");
    let mut watch = plans
        .watch_plans(proto::WatchPlansRequest {
            workloads: vec!["tiny".to_owned()],
        })
        .await
        .unwrap()
        .into_inner();
    let (code, message) = code_of(
        plans
            .watch_plans(proto::WatchPlansRequest {
                workloads: vec!["tiny".to_owned()],
            })
            .await,
    );
    assert_eq!(code, Code::ResourceExhausted, "{message}");
    drop(watch.message());
    assert_eq!(
        server
            .metrics
            .requests("/prescale.v1.IngestService/Write", "RESOURCE_EXHAUSTED"),
        1
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forecast_requests_beyond_the_limits_are_refused_with_short_messages() {
    let (server, channel) = serve_load_and_short().await;
    let mut forecasts = ForecastServiceClient::new(channel);

    let mut too_many_levels = forecast_request("load", "1h");
    too_many_levels.levels = (0..17).map(|index| 50.0 + f64::from(index)).collect();
    let (code, message) = code_of(forecasts.forecast(too_many_levels).await);
    assert_eq!(code, Code::InvalidArgument, "{message}");
    assert!(message.len() < 100, "{message}");
    let mut most_levels = forecast_request("load", "1h");
    most_levels.levels = (0..16).map(|index| 50.0 + f64::from(index)).collect();
    forecasts.forecast(most_levels).await.unwrap();

    // 125 * 2^64 ms + 1h: a cast to i64 milliseconds would wrap it to one hour.
    let (code, message) = code_of(
        forecasts
            .forecast(forecast_request("load", "2305843009213697552s"))
            .await,
    );
    assert_eq!(code, Code::InvalidArgument, "{message}");

    // A week at 5-minute steps is over the 64 KiB message limit: refused while sending.
    let (code, message) = code_of(forecasts.forecast(forecast_request("load", "7d")).await);
    assert_eq!(code, Code::ResourceExhausted, "{message}");
    server.shutdown().await;
}
