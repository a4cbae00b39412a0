//! The gRPC data path end to end, a real server on 127.0.0.1:0 and tonic clients over a real
//! socket: pushing samples, forecasts, workloads and their plans as new data arrives, retraining
//! jobs and events, and a graceful shutdown. Error codes are in `grpc_errors.rs`; health,
//! reflection, tokens, `/metrics` and TLS in `grpc_access.rs`.

mod common;
mod grpc_support;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{TestServer, next_plan, watch_plans};
use grpc_support::{
    DAY_MS, START_MS, STEP_MS, code_of, daily, forecast_request, settings, with_workload_api,
    workload,
};
use prescale::app::telemetry::Telemetry;
use prescale::service::ServerOptions;
use prescale::service::proto::{
    self, admin_service_client::AdminServiceClient, event_service_client::EventServiceClient,
    forecast_service_client::ForecastServiceClient, ingest_service_client::IngestServiceClient,
    plan_service_client::PlanServiceClient,
};
use prescale::store::{MetricStore, PolarsStore, StoreOptions};
use tokio_stream::StreamExt;
use tonic::Code;
use tonic::transport::Channel;

/// Pushes ten days of `load` in one-day messages on one client stream.
async fn push_ten_days(channel: &Channel) -> proto::WriteResponse {
    let messages: Vec<_> = (0..10).map(|day| daily("load", day * 288, 288)).collect();
    IngestServiceClient::new(channel.clone())
        .push(tokio_stream::iter(messages))
        .await
        .unwrap()
        .into_inner()
}

/// A server holding ten days of `load`.
async fn serve_ten_days() -> (TestServer, Channel) {
    let server = TestServer::start(settings(), ServerOptions::default()).await;
    let channel = server.channel().await;
    push_ten_days(&channel).await;
    (server, channel)
}

/// Upserts workload `api` on `load` and returns a watch on its plans with the first one.
async fn first_plan(channel: &Channel) -> (tonic::Streaming<proto::Plan>, proto::Plan) {
    PlanServiceClient::new(channel.clone())
        .upsert_workload(workload("api", "load"))
        .await
        .unwrap();
    let mut watch = watch_plans(channel, &["api"]).await;
    let first = next_plan(&mut watch).await;
    (watch, first)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_stores_every_message_of_the_stream() {
    let server = TestServer::start(settings(), ServerOptions::default()).await;
    let pushed = push_ten_days(&server.channel().await).await;
    assert_eq!((pushed.accepted, pushed.batches), (2880, 10));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forecast_has_its_time_axis_nested_bands_and_the_daily_cycle() {
    let (server, channel) = serve_ten_days().await;
    let forecast = ForecastServiceClient::new(channel.clone())
        .forecast(forecast_request("load", "1d"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(forecast.mean.len(), 288);
    assert_eq!(forecast.start_ms, START_MS + 10 * DAY_MS);
    assert_eq!(forecast.step_ms, STEP_MS);
    assert_eq!(
        forecast.timestamps_ms[1] - forecast.timestamps_ms[0],
        STEP_MS
    );
    assert_eq!(forecast.bands.len(), 2);
    let (band80, band95) = (&forecast.bands[0], &forecast.bands[1]);
    assert_eq!((band80.level, band95.level), (80.0, 95.0));
    for index in 0..288 {
        assert!(band95.lower[index] <= band80.lower[index]);
        assert!(band80.lower[index] <= forecast.mean[index]);
        assert!(forecast.mean[index] <= band80.upper[index]);
        assert!(band80.upper[index] <= band95.upper[index]);
    }
    // The daily cycle is forecast: the peak a quarter day in and the trough three quarters in.
    assert!(
        (forecast.mean[72] - 800.0).abs() < 60.0,
        "{}",
        forecast.mean[72]
    );
    assert!(
        (forecast.mean[216] - 200.0).abs() < 60.0,
        "{}",
        forecast.mean[216]
    );
    let model = forecast.model.clone().unwrap();
    assert!(model.version.starts_with("ensemble-"), "{}", model.version);
    assert!(model.seasonal_periods_ms.contains(&DAY_MS), "{model:?}");
    let weights: f64 = forecast.members.iter().map(|member| member.weight).sum();
    assert!((weights - 1.0).abs() < 1e-6, "{:?}", forecast.members);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forecasts_of_the_same_data_share_a_model_named_or_selected_by_labels() {
    let (server, channel) = serve_ten_days().await;
    let mut forecasts = ForecastServiceClient::new(channel.clone());
    let model = forecasts
        .forecast(forecast_request("load", "1d"))
        .await
        .unwrap()
        .into_inner()
        .model
        .unwrap();

    // A second forecast of the same data reuses the model.
    let again = forecasts
        .forecast(forecast_request("load", "2h"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.model.unwrap().version, model.version);
    assert_eq!(again.mean.len(), 24);

    // A selector by labels alone finds the one series carrying them.
    let mut by_labels = forecast_request("", "1h");
    by_labels.series.as_mut().unwrap().name.clear();
    let found = forecasts.forecast(by_labels).await.unwrap().into_inner();
    assert_eq!(found.model.unwrap().version, model.version);
    assert_eq!(
        server
            .metrics
            .requests("/prescale.v1.ForecastService/Forecast", "OK"),
        3
    );
    server.shutdown().await;
}

/// Prometheus treats a label with an empty value as absent, and so does the API: samples written
/// to `load{service="api",zone=""}` are `load{service="api"}`'s, and a selector's `zone=""`
/// selects a series without a `zone` label.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_label_with_an_empty_value_is_no_label() {
    let server = TestServer::start(settings(), ServerOptions::default()).await;
    let channel = server.channel().await;
    let with_empty_zone = |mut request: proto::WriteRequest| {
        let series = request.series[0].series.as_mut().unwrap();
        series.labels.insert("zone".to_owned(), String::new());
        request
    };
    let mut ingest = IngestServiceClient::new(channel.clone());
    ingest.write(daily("load", 0, 2 * 288)).await.unwrap();
    ingest
        .write(with_empty_zone(daily("load", 2 * 288, 288)))
        .await
        .unwrap();

    let listed = AdminServiceClient::new(channel.clone())
        .list_series(proto::ListSeriesRequest::default())
        .await
        .unwrap()
        .into_inner();
    let stored: Vec<_> = listed
        .series
        .iter()
        .map(|info| (info.series.clone().unwrap(), info.samples))
        .collect();
    assert_eq!(stored, [(grpc_support::series("load").unwrap(), 3 * 288)]);

    // The name and `zone=""` alone select the one `load` series, which has no zone.
    let mut selector = forecast_request("load", "1h");
    let labels = &mut selector.series.as_mut().unwrap().labels;
    labels.clear();
    labels.insert("zone".to_owned(), String::new());
    let forecast = ForecastServiceClient::new(channel.clone())
        .forecast(selector)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(forecast.mean.len(), 12);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upserted_workload_is_stored_with_its_defaults_and_listed() {
    let server = TestServer::start(settings(), ServerOptions::default()).await;
    let mut plans = PlanServiceClient::new(server.channel().await);
    let stored = plans
        .upsert_workload(workload("api", "load"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stored.warm_up, "10m");
    assert_eq!(stored.planning_level, Some(95.0));
    let listed = plans
        .list_workloads(proto::ListWorkloadsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.workloads.len(), 1);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_plan_has_every_column_and_requests_replicas_a_warm_up_ahead() {
    let (server, channel) = serve_ten_days().await;
    let (_watch, first) = first_plan(&channel).await;
    assert_eq!(first.workload, "api");
    let steps = first.steps.clone().unwrap();
    assert_eq!(steps.at_ms.len(), 288);
    for column in [
        steps.desired.len(),
        steps.low.len(),
        steps.high.len(),
        steps.ceiling.len(),
        steps.expected_load.len(),
        steps.planned_load.len(),
        steps.request_at_ms.len(),
    ] {
        assert_eq!(column, 288, "every column has one entry per step");
    }
    assert_eq!(steps.at_ms[0], START_MS + 10 * DAY_MS);
    for (request_at, at) in steps.request_at_ms.iter().zip(&steps.at_ms) {
        assert_eq!(
            *request_at,
            at - 600_000,
            "replicas are requested a warm-up ahead"
        );
    }
    for index in 0..288 {
        assert!((2..=100).contains(&steps.desired[index]));
        assert!(steps.low[index] <= steps.desired[index]);
        assert!(steps.desired[index] <= steps.high[index]);
    }
    assert_eq!(steps.reasons[0].step, 0, "the first step says why");
    assert!(
        steps
            .reasons
            .windows(2)
            .all(|pair| pair[0].step < pair[1].step),
        "reasons in step order"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_plan_returns_the_message_watch_plans_sent() {
    let (server, channel) = serve_ten_days().await;
    let (_watch, first) = first_plan(&channel).await;
    let got = PlanServiceClient::new(channel.clone())
        .get_plan(proto::GetPlanRequest {
            workload: "api".to_owned(),
        })
        .await
        .unwrap()
        .into_inner();
    // GetPlan writes bytes encoded once per revision (service::plan_route); on the wire they are the
    // same message WatchPlans sent.
    assert_eq!(got, first);
    server.shutdown().await;
}

/// A workload with an SLO and no planning level: its plan is made on the level the replay of the
/// live model's backtest chose, and `GetPlan`, `GetWorkload` and `/metrics` say which, with the
/// replayed short steps and cost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workload_with_an_slo_reports_the_rule_it_plans_on() {
    let (server, channel) = serve_ten_days().await;
    let mut request = workload("api", "load");
    request.workload.as_mut().unwrap().slo = Some(proto::Slo {
        max_short_steps: "1%".to_owned(),
    });
    let mut plans = PlanServiceClient::new(channel.clone());
    let stored = plans.upsert_workload(request).await.unwrap().into_inner();
    assert_eq!(stored.planning_level, None, "the SLO chooses the level");
    assert_eq!(stored.slo.unwrap().max_short_steps, "1%");
    let mut watch = watch_plans(&channel, &["api"]).await;
    let plan = next_plan(&mut watch).await;
    let slo = plan.slo.expect("a plan made under an SLO reports its rule");
    assert!(
        ["slo-met", "slo-not-met"].contains(&slo.source.as_str()),
        "{slo:?}"
    );
    assert_eq!(slo.met, slo.source == "slo-met");
    assert_eq!(slo.level, plan.planning_level);
    assert!(slo.folds >= 1 && slo.replayed_steps >= 288, "{slo:?}");
    assert!(
        slo.replayed_replica_hours > 0.0 && slo.replayed_vs_oracle > 0.0,
        "{slo:?}"
    );
    assert!(slo.reason.starts_with("slo 1%"), "{}", slo.reason);
    let described = plans
        .get_workload(proto::GetWorkloadRequest {
            name: "api".to_owned(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(described.slo_status, Some(slo.clone()));
    let metrics = server.metrics.render();
    let gauge = |name: &str| -> f64 {
        let prefix = format!("{name}{{workload=\"api\"}} ");
        metrics
            .lines()
            .find_map(|line| line.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("no {name} in {metrics}"))
            .parse()
            .unwrap()
    };
    assert_eq!(gauge("prescale_plan_slo_met"), f64::from(u8::from(slo.met)));
    assert_eq!(
        gauge("prescale_plan_slo_replayed_short_ratio"),
        slo.replayed_short_share
    );

    // The plan runs out at the end of its last step.
    let steps = plan.steps.as_ref().unwrap();
    assert_eq!(
        gauge("prescale_plan_end_timestamp_seconds"),
        (steps.at_ms.last().unwrap() + plan.step_ms) as f64 / 1000.0
    );

    // Every metric the shipped alert rules and Grafana dashboard name is one prescale exposes:
    // this server's plan gauges and counters, and the families shown only once they have a
    // sample (the fleet gauges of a fleet member, source errors, remote-write outcomes), given
    // one each on a telemetry of their own. A histogram's buckets are named by its family.
    let labelled = Telemetry::default();
    labelled.set_fleet(true, false, false);
    labelled.record_source_error("api", "timeout");
    labelled.record_remote_write("accepted");
    let exposed = server.metrics.render() + &labelled.render();
    let families: Vec<&str> = exposed
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE ")?.split(' ').next())
        .collect();
    let rules = std::fs::read_to_string(
        common::manifest_dir().join("deploy/prometheus/prescale-alerts.yml"),
    )
    .unwrap();
    let alerts: BTreeSet<String> = rules
        .lines()
        .filter_map(|line| line.trim_start().strip_prefix("expr:"))
        .flat_map(common::metric_names)
        .collect();
    let (queries, _) = common::dashboard_queries();
    let dashboard: BTreeSet<String> = queries
        .iter()
        .flat_map(|query| common::metric_names(query))
        .collect();
    assert!(alerts.len() >= 10, "{alerts:?}");
    assert!(dashboard.len() >= 25, "{dashboard:?}");
    for (shipped, named) in [("alert rules", alerts), ("dashboard", dashboard)] {
        for name in named {
            let family = name.strip_suffix("_bucket").unwrap_or(&name);
            assert!(
                families.contains(&family),
                "the {shipped} name {name}, which /metrics does not show: {families:?}"
            );
        }
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_data_pushes_a_new_plan_to_the_watcher() {
    let (server, channel) = serve_ten_days().await;
    let (mut watch, first) = first_plan(&channel).await;
    PlanServiceClient::new(channel.clone())
        .report_applied(proto::ReportAppliedRequest {
            workload: "api".to_owned(),
            replicas: 9,
            time_ms: 0,
        })
        .await
        .unwrap();

    // One more hour of data: a new plan is pushed to the watcher, starting an hour later.
    IngestServiceClient::new(channel.clone())
        .write(daily("load", 2880, 12))
        .await
        .unwrap();
    let second = next_plan(&mut watch).await;
    assert!(second.revision > first.revision);
    assert_eq!(
        second.steps.as_ref().unwrap().at_ms[0],
        first.steps.as_ref().unwrap().at_ms[0] + 3_600_000
    );
    assert_ne!(second.model_version, first.model_version);
    assert_eq!(
        second.reactive.unwrap().observed_at_ms,
        START_MS + 10 * DAY_MS + 11 * STEP_MS
    );
    assert!(server.metrics.plan_refreshes.get() >= 2);
    server.shutdown().await;
}

/// The replicas the first step of `plan` asks for.
fn first_desired(plan: &proto::Plan) -> u32 {
    plan.steps.as_ref().expect("a plan has steps").desired[0]
}

/// Workload `api` on `load`, stepping down at most one replica a step.
fn stepping_down() -> proto::UpsertWorkloadRequest {
    let mut request = workload("api", "load");
    request.workload.as_mut().unwrap().scale_in = Some(proto::ScaleIn {
        max_step_down: 1,
        stabilisation_window: String::new(),
    });
    request
}

/// The first plan of `api` from `server`, restarted on `directory`, and the server.
async fn first_plan_after_restart(directory: tempfile::TempDir) -> (TestServer, proto::Plan) {
    let server = TestServer::start_in(directory, settings(), ServerOptions::default()).await;
    let mut watch = watch_plans(&server.channel().await, &["api"]).await;
    let plan = next_plan(&mut watch).await;
    assert_eq!(plan.revision, 1, "the restarted server's first plan");
    (server, plan)
}

/// Reports that the executor of workload `api` runs `replicas` now.
async fn report_applied(plans: &mut PlanServiceClient<Channel>, replicas: u32) {
    plans
        .report_applied(proto::ReportAppliedRequest {
            workload: "api".to_owned(),
            replicas,
            time_ms: 0,
        })
        .await
        .unwrap();
}

/// What an executor reported it runs outlives a restart on the same data directory: the first plan
/// after it starts from the report, one replica a step down under a `max_step_down` of 1, where
/// the plan made before the report starts at what the load needs. Deleting the workload deletes
/// its report: one created again by that name starts from the load again after a restart. A saved
/// file that cannot be read is replaced at start, and the server serves without a report.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_of_applied_replicas_survives_a_restart_and_goes_with_its_workload() {
    const REPORTED: u32 = 90;
    let (server, channel) = serve_ten_days().await;
    let mut plans = PlanServiceClient::new(channel.clone());
    plans.upsert_workload(stepping_down()).await.unwrap();
    let mut watch = watch_plans(&channel, &["api"]).await;
    let unreported = first_desired(&next_plan(&mut watch).await);
    assert!(unreported < REPORTED / 2, "the load needs {unreported}");
    report_applied(&mut plans, REPORTED).await;
    drop(watch);

    let (server, restarted) = first_plan_after_restart(server.shutdown().await).await;
    assert_eq!(first_desired(&restarted), REPORTED - 1);

    let mut plans = PlanServiceClient::new(server.channel().await);
    plans
        .delete_workload(proto::DeleteWorkloadRequest {
            name: "api".to_owned(),
        })
        .await
        .unwrap();
    plans.upsert_workload(stepping_down()).await.unwrap();
    let (server, recreated) = first_plan_after_restart(server.shutdown().await).await;
    assert_eq!(first_desired(&recreated), unreported);

    // A saved file that cannot be read (edited by hand) does not stop the server: it serves, with
    // no report held, and replaces the file.
    let mut plans = PlanServiceClient::new(server.channel().await);
    report_applied(&mut plans, REPORTED).await;
    let directory = server.shutdown().await;
    let saved = directory.path().join("applied.toml");
    assert!(
        std::fs::read_to_string(&saved)
            .unwrap()
            .contains("replicas = 90")
    );
    std::fs::write(&saved, "[workload.api\nreplicas = ").unwrap();
    let (server, unreadable) = first_plan_after_restart(directory).await;
    assert_eq!(first_desired(&unreadable), unreported);
    let replaced = std::fs::read_to_string(&saved).unwrap();
    assert!(!replaced.contains("replicas = "), "{replaced}");
    server.shutdown().await;
}

/// The report of applied replicas held for workload `api`, as `GetWorkload` shows it.
async fn shown_applied(plans: &mut PlanServiceClient<Channel>) -> Option<proto::AppliedReport> {
    plans
        .get_workload(proto::GetWorkloadRequest {
            name: "api".to_owned(),
        })
        .await
        .unwrap()
        .into_inner()
        .applied
}

/// `GetWorkload` shows the report of applied replicas held for the workload, the newest by its
/// time (an older one is dropped), and the same after a restart; none before the first report.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_workload_shows_the_report_of_applied_replicas_held() {
    let newest = proto::AppliedReport {
        replicas: 7,
        time_ms: START_MS + DAY_MS,
    };
    let server = TestServer::start(settings(), ServerOptions::default()).await;
    let mut plans = with_workload_api(server.channel().await).await;
    assert_eq!(shown_applied(&mut plans).await, None);
    for (replicas, time_ms) in [(newest.replicas, newest.time_ms), (9, START_MS)] {
        plans
            .report_applied(proto::ReportAppliedRequest {
                workload: "api".to_owned(),
                replicas,
                time_ms,
            })
            .await
            .unwrap();
    }
    assert_eq!(shown_applied(&mut plans).await, Some(newest));

    let server = TestServer::start_in(
        server.shutdown().await,
        settings(),
        ServerOptions::default(),
    )
    .await;
    let mut plans = PlanServiceClient::new(server.channel().await);
    assert_eq!(shown_applied(&mut plans).await, Some(newest));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_open_streams_and_keeps_every_acknowledged_write() {
    let server = TestServer::start(settings(), ServerOptions::default()).await;
    let channel = server.channel().await;
    let mut ingest = IngestServiceClient::new(channel.clone());
    ingest.write(daily("load", 0, 3 * 288)).await.unwrap();
    let mut plans = PlanServiceClient::new(channel.clone());
    plans
        .upsert_workload(workload("api", "load"))
        .await
        .unwrap();
    let mut watch = plans
        .watch_plans(proto::WatchPlansRequest { workloads: vec![] })
        .await
        .unwrap()
        .into_inner();
    next_plan(&mut watch).await;
    ingest.write(daily("load", 3 * 288, 7)).await.unwrap();

    let state = std::sync::Arc::clone(&server.state);
    let directory = server.shutdown().await;
    // The stream's feeder has ended with the server: nothing else holds the state (and its store).
    assert_eq!(std::sync::Arc::strong_count(&state), 1);
    drop(state);
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(item) = watch.next().await {
            if let Err(status) = item {
                return Some(status);
            }
        }
        None
    })
    .await
    .expect("the watch stream ends when the server stops");
    // Not OK, which would read as a normal end: the executor is to reconnect.
    let status = ended.expect("the watch stream ends with a status");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.message().contains("shutting down"), "{status:?}");

    // A new server over the same directory has every acknowledged sample and the workload.
    let store = PolarsStore::open(directory.path(), StoreOptions::default()).unwrap();
    let summary = store
        .summary(&"load{service=\"api\"}".parse().unwrap())
        .unwrap();
    assert_eq!(summary.samples, 3 * 288 + 7);
    drop(store);
    let server = TestServer::start_in(directory, settings(), ServerOptions::default()).await;
    let workloads = PlanServiceClient::new(server.channel().await)
        .list_workloads(proto::ListWorkloadsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(workloads.workloads[0].name, "api");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retrain_job_over_the_api_reports_each_series_that_failed() {
    let server = TestServer::start(settings(), ServerOptions::default()).await;
    let channel = server.channel().await;
    let mut ingest = IngestServiceClient::new(channel.clone());
    ingest.write(daily("load", 0, 3 * 288)).await.unwrap();
    ingest.write(daily("short", 0, 10)).await.unwrap();
    let mut admin = AdminServiceClient::new(channel.clone());
    let job = admin
        .retrain(proto::RetrainRequest {
            series: vec![],
            all: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(job.total, 2);
    let finished = tokio::time::timeout(Duration::from_secs(120), async {
        loop {
            let job = admin
                .get_job(proto::GetJobRequest { id: job.id.clone() })
                .await
                .unwrap()
                .into_inner();
            if job.finished_at_ms != 0 {
                return job;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .unwrap();
    assert_eq!(finished.state, proto::JobState::Failed as i32);
    assert_eq!((finished.done, finished.failed), (2, 1));
    assert_eq!(finished.failures[0].series.as_ref().unwrap().name, "short");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_added_checked_listed_and_removed_over_the_api() {
    let server = TestServer::start(settings(), ServerOptions::default()).await;
    let channel = server.channel().await;
    let mut events = EventServiceClient::new(channel.clone());
    let added = events
        .add_event(proto::Event {
            name: "launch".to_owned(),
            start_ms: START_MS + 4 * DAY_MS,
            end_ms: START_MS + 4 * DAY_MS + 3_600_000,
            multiplier: Some(2.0),
            like: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(added.multiplier, Some(2.0));
    let bad = events
        .add_event(proto::Event {
            name: "backwards".to_owned(),
            start_ms: START_MS + 4 * DAY_MS,
            end_ms: START_MS,
            multiplier: None,
            like: String::new(),
        })
        .await;
    assert_eq!(code_of(bad).0, Code::InvalidArgument);
    let listed = events
        .list_events(proto::ListEventsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.events, vec![added]);
    let removed = events
        .remove_event(proto::RemoveEventRequest {
            name: "launch".to_owned(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(removed.removed, 1);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forecast_carries_the_uplift_of_the_events_in_it() {
    let (server, channel) = serve_ten_days().await;
    let mut forecasts = ForecastServiceClient::new(channel.clone());
    let before = forecasts
        .forecast(forecast_request("load", "1d"))
        .await
        .unwrap()
        .into_inner();
    assert!(before.applied_events.is_empty());
    // Doubled load from 06:00 to 08:00 of the forecast day: steps 72..96.
    let from = START_MS + 10 * DAY_MS + 6 * 3_600_000;
    EventServiceClient::new(channel.clone())
        .add_event(proto::Event {
            name: "launch".to_owned(),
            start_ms: from,
            end_ms: from + 2 * 3_600_000,
            multiplier: Some(2.0),
            like: String::new(),
        })
        .await
        .unwrap();
    let after = forecasts
        .forecast(forecast_request("load", "1d"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(after.applied_events.len(), 1, "{:?}", after.applied_events);
    assert!(after.applied_events[0].starts_with("launch "));
    for (step, (with, without)) in after.mean.iter().zip(&before.mean).enumerate() {
        let expected = if (72..96).contains(&step) {
            2.0 * without
        } else {
            *without
        };
        assert!(
            (with - expected).abs() <= 1e-9 * expected.abs().max(1.0),
            "step {step}: {with} vs {expected}"
        );
    }
    let (upper_after, upper_before) = (&after.bands[1].upper, &before.bands[1].upper);
    assert!((upper_after[80] - 2.0 * upper_before[80]).abs() <= 1e-9 * upper_before[80].abs());
    server.shutdown().await;
}
