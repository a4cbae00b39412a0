//! Requests whose fields the server could not store, log or act on are refused with
//! `INVALID_ARGUMENT` naming the field, and leave the server as it was: a real server on
//! 127.0.0.1:0 and tonic clients over a real socket.

mod common;
mod grpc_support;

use std::sync::Arc;

use common::{TestServer, connect, scaled_object};
use grpc_support::{
    DAY_MS, START_MS, code_of, settings, with_workload_api, workload, workload_names,
};
use prescale::app::SystemClock;
use prescale::domain::Timestamp;
use prescale::service::externalscaler::GetMetricsRequest;
use prescale::service::externalscaler::external_scaler_client::ExternalScalerClient;
use prescale::service::proto::{
    self, event_service_client::EventServiceClient, plan_service_client::PlanServiceClient,
};
use prescale::service::{ScalerOptions, ServerOptions};
use tonic::Code;
use tonic::transport::Channel;

fn event(name: &str, start_ms: i64, end_ms: i64) -> proto::Event {
    proto::Event {
        name: name.to_owned(),
        start_ms,
        end_ms,
        multiplier: Some(2.0),
        like: String::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_beyond_the_year_9999_is_refused_and_the_calendar_still_reads() {
    let server = TestServer::start(settings(), ServerOptions::default()).await;
    let mut events = EventServiceClient::new(server.channel().await);
    let kept = events
        .add_event(event("launch", START_MS, START_MS + DAY_MS))
        .await
        .unwrap()
        .into_inner();
    for (start_ms, end_ms, field) in [
        (1 << 62, i64::MAX, "start"),
        (START_MS, i64::MAX, "end"),
        (i64::MIN, START_MS, "start"),
        // Microseconds given by mistake: milliseconds in the year 58900.
        (
            1_796_540_759_393_000,
            1_796_540_759_393_000 + DAY_MS,
            "start",
        ),
    ] {
        let (code, message) = code_of(events.add_event(event("poison", start_ms, end_ms)).await);
        assert_eq!(code, Code::InvalidArgument, "{message}");
        assert!(message.contains(field), "{message}");
    }
    let listed = events
        .list_events(proto::ListEventsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.events, vec![kept]);
    server.shutdown().await;
}

/// A server holding workload `api` (on series `load`, which has no samples), and a client of it.
async fn serve_workload_api() -> (TestServer, PlanServiceClient<Channel>) {
    let server = TestServer::start(settings(), ServerOptions::default()).await;
    let plans = with_workload_api(server.channel().await).await;
    (server, plans)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workload_name_too_long_or_with_a_line_break_is_refused_naming_the_field() {
    let (server, mut plans) = serve_workload_api().await;
    for name in ["a".repeat(10_000), "a\nb".to_owned()] {
        let (code, message) = code_of(plans.upsert_workload(workload(&name, "load")).await);
        assert_eq!(code, Code::InvalidArgument, "{message}");
        assert!(message.contains("`name`"), "{message}");
        assert!(message.len() < 200, "{message}");
    }
    assert_eq!(workload_names(&mut plans).await, ["api"]);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_of_applied_replicas_from_before_1970_or_the_far_future_is_refused() {
    let (server, mut plans) = serve_workload_api().await;
    let report = |time_ms: i64| proto::ReportAppliedRequest {
        workload: "api".to_owned(),
        replicas: 3,
        time_ms,
    };
    let now_ms = Timestamp::now().as_millis();
    let ten_days_ms = 10 * DAY_MS;
    for time_ms in [
        now_ms + ten_days_ms,
        now_ms + 2 * DAY_MS,
        -1,
        i64::MIN,
        i64::MAX,
    ] {
        let (code, message) = code_of(plans.report_applied(report(time_ms)).await);
        assert_eq!(code, Code::InvalidArgument, "{time_ms}: {message}");
        assert!(message.contains("time"), "{message}");
    }
    // 0 means now; a time in the past or a little ahead (clocks out of step) is taken.
    for time_ms in [0, START_MS, now_ms + 3_600_000] {
        plans.report_applied(report(time_ms)).await.unwrap();
    }
    server.shutdown().await;
}

/// A call naming a workload with an empty name is the caller's mistake, not an unknown workload:
/// `INVALID_ARGUMENT` naming the field (or, for KEDA, the trigger's `workload` key), through every
/// call that names one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_workload_name_is_an_invalid_argument_naming_the_field() {
    let server = TestServer::start_with_scaler(
        tempfile::tempdir().unwrap(),
        settings(),
        ServerOptions::default(),
        Arc::new(SystemClock),
        Some(ScalerOptions::default()),
    )
    .await;
    let mut plans = PlanServiceClient::new(server.channel().await);
    plans
        .upsert_workload(workload("api", "load"))
        .await
        .unwrap();
    let refusals = [
        (
            "workload",
            code_of(plans.get_plan(proto::GetPlanRequest::default()).await),
        ),
        (
            "name",
            code_of(
                plans
                    .get_workload(proto::GetWorkloadRequest::default())
                    .await,
            ),
        ),
        (
            "name",
            code_of(
                plans
                    .delete_workload(proto::DeleteWorkloadRequest::default())
                    .await,
            ),
        ),
        (
            "workloads[1]",
            code_of(
                plans
                    .watch_plans(proto::WatchPlansRequest {
                        workloads: vec!["api".to_owned(), String::new()],
                    })
                    .await,
            ),
        ),
        (
            "workload",
            code_of(
                plans
                    .report_applied(proto::ReportAppliedRequest {
                        replicas: 3,
                        ..Default::default()
                    })
                    .await,
            ),
        ),
    ];
    for (field, (code, message)) in refusals {
        assert_eq!(code, Code::InvalidArgument, "{field}: {message}");
        assert!(message.contains(&format!("`{field}`")), "{message}");
    }
    let mut scaler = ExternalScalerClient::new(connect(server.scaler_address.unwrap()).await);
    let unnamed = scaled_object("checkout", &[("workload", "")]);
    let keda = [
        code_of(scaler.is_active(unnamed.clone()).await),
        code_of(scaler.get_metric_spec(unnamed.clone()).await),
        code_of(
            scaler
                .get_metrics(GetMetricsRequest {
                    scaled_object_ref: Some(unnamed.clone()),
                    metric_name: String::new(),
                })
                .await,
        ),
        code_of(scaler.stream_is_active(unnamed.clone()).await),
        code_of(scaler.stream_metric_spec(unnamed).await),
    ];
    for (code, message) in keda {
        assert_eq!(code, Code::InvalidArgument, "{message}");
        assert!(message.contains("`workload`"), "{message}");
    }
    // Nothing was deleted.
    assert_eq!(workload_names(&mut plans).await, ["api"]);
    server.shutdown().await;
}

/// An events file holding an event it cannot read back (written before event times were checked)
/// fails every read, but `RemoveEvent` of that name repairs it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_event_is_removed_by_name_and_the_calendar_reads_again() {
    let directory = tempfile::tempdir().unwrap();
    std::fs::write(
        directory.path().join("events.toml"),
        "[[event]]\nname = \"launch\"\nstart = \"2025-01-01T00:00:00Z\"\n\
         end = \"2025-01-02T00:00:00Z\"\nmultiplier = 2.0\n\n\
         [[event]]\nname = \"m3\"\nstart = \"4611686018427387904ms\"\n\
         end = \"9223372036854775807ms\"\n",
    )
    .unwrap();
    let server = TestServer::start_in(directory, settings(), ServerOptions::default()).await;
    let mut events = EventServiceClient::new(server.channel().await);
    let (code, message) = code_of(events.list_events(proto::ListEventsRequest {}).await);
    assert_eq!(code, Code::InvalidArgument, "{message}");
    assert!(message.contains("m3"), "{message}");
    events
        .remove_event(proto::RemoveEventRequest {
            name: "m3".to_owned(),
        })
        .await
        .unwrap();
    let listed = events
        .list_events(proto::ListEventsRequest {})
        .await
        .unwrap()
        .into_inner();
    let names: Vec<&str> = listed.events.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["launch"]);
    server.shutdown().await;
}
