//! The gRPC service end to end: a real server on 127.0.0.1:0 and tonic clients over a real socket.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{TestServer, next_plan, watch_plans};
use prescale::app::Settings;
use prescale::service::proto::{
    self, admin_service_client::AdminServiceClient, event_service_client::EventServiceClient,
    forecast_service_client::ForecastServiceClient, ingest_service_client::IngestServiceClient,
    plan_service_client::PlanServiceClient,
};
use prescale::service::{ServerOptions, TlsFiles};
use prescale::store::{MetricStore, PolarsStore, StoreOptions};
use tokio_stream::StreamExt;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};
use tonic::{Code, Request};

const STEP_MS: i64 = 300_000;
const DAY_MS: i64 = 86_400_000;
/// 2015-01-01T00:00:00Z.
const START_MS: i64 = 1_420_070_400_000;

/// Settings for tests: replan only when data arrives (one sample is enough), never on the clock.
fn settings() -> Settings {
    Settings {
        replan_interval: Duration::from_secs(24 * 3600),
        replan_after_samples: 1,
        ..Settings::default()
    }
}

fn series(name: &str) -> Option<proto::SeriesRef> {
    Some(proto::SeriesRef {
        name: name.to_owned(),
        labels: [("service".to_owned(), "api".to_owned())].into(),
    })
}

/// `count` 5-minute samples of a daily cycle from `first` (a step index), with bounded deterministic
/// noise.
fn daily(name: &str, first: i64, count: i64) -> proto::WriteRequest {
    let (timestamps_ms, values) = (first..first + count)
        .map(|index| {
            let time = START_MS + index * STEP_MS;
            let phase = (time % DAY_MS) as f64 / DAY_MS as f64 * std::f64::consts::TAU;
            let noise = ((index * 7919) % 13) as f64 - 6.0;
            (time, 500.0 + 300.0 * phase.sin() + noise)
        })
        .unzip();
    proto::WriteRequest {
        series: vec![proto::SeriesSamples {
            series: series(name),
            timestamps_ms,
            values,
        }],
    }
}

fn workload(name: &str, series_name: &str) -> proto::UpsertWorkloadRequest {
    proto::UpsertWorkloadRequest {
        workload: Some(proto::Workload {
            name: name.to_owned(),
            series: series(series_name),
            capacity_per_replica: 50.0,
            target_utilisation: Some(70.0),
            min_replicas: Some(2),
            max_replicas: 100,
            warm_up: "10m".to_owned(),
            planning_level: None,
            mode: "forecast-and-scale".to_owned(),
            scale_in: None,
            max_capacity: None,
        }),
    }
}

fn forecast_request(series_name: &str, horizon: &str) -> proto::ForecastRequest {
    proto::ForecastRequest {
        series: series(series_name),
        horizon: horizon.to_owned(),
        levels: vec![80.0, 95.0],
        model: String::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_forecast_upsert_and_watch_plans_follow_new_data() {
    let server = TestServer::start(settings(), ServerOptions::default()).await;
    let channel = server.channel().await;
    let mut ingest = IngestServiceClient::new(channel.clone());

    // Ten days in one-day messages on one client stream.
    let messages: Vec<_> = (0..10).map(|day| daily("load", day * 288, 288)).collect();
    let pushed = ingest
        .push(tokio_stream::iter(messages))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((pushed.accepted, pushed.batches), (2880, 10));

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

    // A second forecast of the same data reuses the model.
    let again = ForecastServiceClient::new(channel.clone())
        .forecast(forecast_request("load", "2h"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.model.unwrap().version, model.version);
    assert_eq!(again.mean.len(), 24);

    // A selector by labels alone finds the one series carrying them.
    let mut by_labels = forecast_request("", "1h");
    by_labels.series.as_mut().unwrap().name.clear();
    let found = ForecastServiceClient::new(channel.clone())
        .forecast(by_labels)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(found.model.unwrap().version, model.version);

    let mut plans = PlanServiceClient::new(channel.clone());
    let stored = plans
        .upsert_workload(workload("api", "load"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stored.warm_up, "10m");
    assert_eq!(stored.planning_level, Some(95.0));
    let mut watch = watch_plans(&channel, &["api"]).await;
    let first = next_plan(&mut watch).await;
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
    let got = plans
        .get_plan(proto::GetPlanRequest {
            workload: "api".to_owned(),
        })
        .await
        .unwrap()
        .into_inner();
    // GetPlan writes bytes encoded once per revision (service::plan_route); on the wire they are the
    // same message WatchPlans sent.
    assert_eq!(got, first);

    plans
        .report_applied(proto::ReportAppliedRequest {
            workload: "api".to_owned(),
            replicas: 9,
            time_ms: 0,
        })
        .await
        .unwrap();

    // One more hour of data: a new plan is pushed to the watcher, starting an hour later.
    ingest.write(daily("load", 2880, 12)).await.unwrap();
    let second = next_plan(&mut watch).await;
    assert!(second.revision > first.revision);
    assert_eq!(
        second.steps.as_ref().unwrap().at_ms[0],
        steps.at_ms[0] + 3_600_000
    );
    assert_ne!(second.model_version, first.model_version);
    assert_eq!(
        second.reactive.unwrap().observed_at_ms,
        START_MS + 10 * DAY_MS + 11 * STEP_MS
    );

    let listed = plans
        .list_workloads(proto::ListWorkloadsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.workloads.len(), 1);
    assert!(server.metrics.plan_refreshes.get() >= 2);
    assert_eq!(
        server
            .metrics
            .requests("/prescale.v1.ForecastService/Forecast", "OK"),
        3
    );
    server.shutdown().await;
}

#[track_caller]
fn code_of<T>(result: Result<tonic::Response<T>, tonic::Status>) -> (Code, String) {
    let status = result.err().expect("the call fails");
    (status.code(), status.message().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_has_its_code() {
    let options = ServerOptions {
        max_message_bytes: 64 * 1024,
        max_streams: 1,
        ..ServerOptions::default()
    };
    let server = TestServer::start(settings(), options).await;
    let channel = server.channel().await;
    let mut ingest = IngestServiceClient::new(channel.clone());
    let mut forecasts = ForecastServiceClient::new(channel.clone());
    let mut plans = PlanServiceClient::new(channel.clone());
    ingest.write(daily("load", 0, 3 * 288)).await.unwrap();
    ingest.write(daily("short", 0, 10)).await.unwrap();

    // InvalidArgument: non-finite values (and nothing of the batch is stored), malformed requests.
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
    let listed = AdminServiceClient::new(channel.clone())
        .list_series(proto::ListSeriesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.series.len(), 2, "the refused batch stored nothing");
    for (horizon, why) in [
        ("0", "zero"),
        ("30d", "beyond the maximum"),
        ("soon", "malformed"),
        ("7m", "not a whole number of steps"),
    ] {
        let (code, message) = code_of(forecasts.forecast(forecast_request("load", horizon)).await);
        assert_eq!(code, Code::InvalidArgument, "{why}: {message}");
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
        code_of(plans.upsert_workload(bad_workload).await).0,
        Code::InvalidArgument
    );

    // NotFound.
    assert_eq!(
        code_of(forecasts.forecast(forecast_request("missing", "1h")).await).0,
        Code::NotFound
    );
    let mut ambiguous = forecast_request("", "1h");
    ambiguous.series.as_mut().unwrap().name.clear();
    let (code, message) = code_of(forecasts.forecast(ambiguous).await);
    assert_eq!(code, Code::InvalidArgument, "{message}");
    assert!(message.contains("matches 2 series"), "{message}");
    let get = |name: &str| proto::GetPlanRequest {
        workload: name.to_owned(),
    };
    assert_eq!(
        code_of(plans.get_plan(get("nobody")).await).0,
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

    // FailedPrecondition: too little history, saying needed and got.
    let (code, message) = code_of(forecasts.forecast(forecast_request("short", "1h")).await);
    assert_eq!(code, Code::FailedPrecondition, "{message}");
    assert!(
        message.contains("needed") || message.contains("need"),
        "{message}"
    );
    assert!(message.contains("10"), "{message}");

    // ...also for a plan whose series is too short: GetPlan reports the failed first attempt.
    plans
        .upsert_workload(workload("tiny", "short"))
        .await
        .unwrap();
    let failed = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            match plans.get_plan(get("tiny")).await {
                Err(status) if status.code() == Code::Unavailable => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                other => return other,
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(code_of(failed).0, Code::FailedPrecondition);

    // ResourceExhausted: a message over the limit, and a stream beyond max_streams.
    let (code, message) = code_of(ingest.write(daily("load", 20_000, 10_000)).await);
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

    let directory = server.shutdown().await;
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(item) = watch.next().await {
            if item.is_err() {
                break;
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the watch stream ends when the server stops");

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
async fn retrain_jobs_and_events_over_the_api() {
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
async fn health_reflection_metrics_and_tokens() {
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};

    let token = "0123456789abcdef-test-token";
    let options = ServerOptions {
        tokens: vec![token.to_owned()],
        ..ServerOptions::default()
    };
    let server = TestServer::start(settings(), options).await;
    let channel = server.channel().await;

    // Health needs no token.
    let health = HealthClient::new(channel.clone())
        .check(HealthCheckRequest {
            service: "prescale.v1.PlanService".to_owned(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(health.status, ServingStatus::Serving as i32);

    // Everything else does.
    let mut admin = AdminServiceClient::new(channel.clone());
    let (code, _) = code_of(admin.list_series(proto::ListSeriesRequest {}).await);
    assert_eq!(code, Code::Unauthenticated);
    let mut wrong = Request::new(proto::ListSeriesRequest {});
    wrong.metadata_mut().insert(
        "authorization",
        "Bearer 0123456789abcdef-test-tokem".parse().unwrap(),
    );
    assert_eq!(
        code_of(admin.list_series(wrong).await).0,
        Code::Unauthenticated
    );
    let mut right = Request::new(proto::ListSeriesRequest {});
    right
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    admin.list_series(right).await.unwrap();

    // Reflection v1 and v1alpha both list the prescale services.
    {
        use tonic_reflection::pb::v1::ServerReflectionRequest;
        use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
        let mut request = Request::new(tokio_stream::iter([ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        }]));
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        let mut replies = ServerReflectionClient::new(channel.clone())
            .server_reflection_info(request)
            .await
            .unwrap()
            .into_inner();
        let reply = replies.next().await.unwrap().unwrap();
        let Some(MessageResponse::ListServicesResponse(list)) = reply.message_response else {
            panic!("unexpected reply {reply:?}");
        };
        let names: Vec<_> = list
            .service
            .iter()
            .map(|service| service.name.as_str())
            .collect();
        for name in prescale::service::SERVICE_NAMES {
            assert!(names.contains(&name), "{names:?}");
        }
    }
    {
        use tonic_reflection::pb::v1alpha::ServerReflectionRequest;
        use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse;
        let mut request = Request::new(tokio_stream::iter([ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::FileContainingSymbol(
                "prescale.v1.PlanService".to_owned(),
            )),
        }]));
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        let mut replies = ServerReflectionClient::new(channel.clone())
            .server_reflection_info(request)
            .await
            .unwrap()
            .into_inner();
        let reply = replies.next().await.unwrap().unwrap();
        assert!(
            matches!(reply.message_response, Some(MessageResponse::FileDescriptorResponse(ref files)) if !files.file_descriptor_proto.is_empty()),
            "{reply:?}"
        );
    }

    // /metrics over HTTP shows the requests just made.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let metrics_address = listener.local_addr().unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let metrics_task = tokio::spawn(prescale::service::serve_metrics(
        listener,
        Arc::clone(&server.metrics),
        stop.clone().cancelled_owned(),
    ));
    let body = http_get(metrics_address, "/metrics").await;
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    assert!(body.contains("text/plain; version=0.0.4"), "{body}");
    assert!(
        body.contains(
            "prescale_grpc_requests_total{method=\"/prescale.v1.AdminService/ListSeries\",code=\"UNAUTHENTICATED\"} 2"
        ),
        "{body}"
    );
    assert!(body.contains("prescale_grpc_request_duration_seconds_bucket{method=\"/grpc.health.v1.Health/Check\",le=\"+Inf\"} 1"), "{body}");
    stop.cancel();
    metrics_task.await.unwrap().unwrap();
    server.shutdown().await;
}

/// A minimal HTTP/1.1 GET over a raw socket; returns the whole response.
async fn http_get(address: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut socket = tokio::net::TcpStream::connect(address).await.unwrap();
    socket
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
    let mut response = String::new();
    socket.read_to_string(&mut response).await.unwrap();
    response
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_tls() {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let directory = tempfile::tempdir().unwrap();
    let cert = directory.path().join("server.pem");
    let key = directory.path().join("server.key");
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    let options = ServerOptions {
        tls: Some(TlsFiles { cert, key }),
        ..ServerOptions::default()
    };
    let server = TestServer::start(settings(), options).await;
    let channel = Endpoint::from_shared(format!("https://{}", server.address))
        .unwrap()
        .tls_config(
            ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(certified.cert.pem()))
                .domain_name("localhost"),
        )
        .unwrap()
        .connect()
        .await
        .unwrap();
    let listed = AdminServiceClient::new(channel)
        .list_series(proto::ListSeriesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(listed.series.is_empty());
    // A plaintext client cannot talk to it.
    let plaintext = Endpoint::from_shared(format!("http://{}", server.address))
        .unwrap()
        .connect()
        .await;
    if let Ok(channel) = plaintext {
        assert!(
            AdminServiceClient::new(channel)
                .list_series(proto::ListSeriesRequest {})
                .await
                .is_err()
        );
    }
    server.shutdown().await;
}
