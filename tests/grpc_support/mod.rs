//! Requests and settings the gRPC tests (`tests/grpc*.rs`) share: a daily-cycle series, a workload,
//! forecast requests, and reading the code of a failed call.

#![allow(dead_code)]

use std::time::Duration;

use prescale::app::Settings;
use prescale::service::proto;
use tonic::Code;

pub(crate) const STEP_MS: i64 = 300_000;
pub(crate) const DAY_MS: i64 = 86_400_000;
/// 2015-01-01T00:00:00Z.
pub(crate) const START_MS: i64 = 1_420_070_400_000;

/// Settings for tests: replan only when data arrives (one sample is enough), never on the clock.
pub(crate) fn settings() -> Settings {
    Settings {
        replan_interval: Duration::from_secs(24 * 3600),
        replan_after_samples: 1,
        ..Settings::default()
    }
}

pub(crate) fn series(name: &str) -> Option<proto::SeriesRef> {
    Some(proto::SeriesRef {
        name: name.to_owned(),
        labels: [("service".to_owned(), "api".to_owned())].into(),
    })
}

/// `count` 5-minute samples of a daily cycle from `first` (a step index), with bounded deterministic
/// noise.
pub(crate) fn daily(name: &str, first: i64, count: i64) -> proto::WriteRequest {
    let (timestamps_ms, values) = (first..first + count)
        .map(|index| {
            let time = START_MS + index * STEP_MS;
            let phase = (time % DAY_MS) as f64 / DAY_MS as f64 * std::f64::consts::TAU;
            let noise = ((index * 7919) % 13) as f64 - 6.0;
            (time, 500.0 + 300.0 * phase.sin() + noise)
        })
        .unzip();
    write_request(name, timestamps_ms, values)
}

/// A write of `values` at `timestamps_ms` to series `name`.
pub(crate) fn write_request(
    name: &str,
    timestamps_ms: Vec<i64>,
    values: Vec<f64>,
) -> proto::WriteRequest {
    proto::WriteRequest {
        series: vec![proto::SeriesSamples {
            series: series(name),
            timestamps_ms,
            values,
        }],
    }
}

pub(crate) fn workload(name: &str, series_name: &str) -> proto::UpsertWorkloadRequest {
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
            source: None,
            source_status: None,
            slo: None,
            slo_status: None,
            applied: None,
        }),
    }
}

/// A client of the server at `channel`, which holds workload `api` on series `load` (upserted
/// here).
pub(crate) async fn with_workload_api(
    channel: tonic::transport::Channel,
) -> proto::plan_service_client::PlanServiceClient<tonic::transport::Channel> {
    let mut plans = proto::plan_service_client::PlanServiceClient::new(channel);
    plans
        .upsert_workload(workload("api", "load"))
        .await
        .unwrap();
    plans
}

pub(crate) fn forecast_request(series_name: &str, horizon: &str) -> proto::ForecastRequest {
    proto::ForecastRequest {
        series: series(series_name),
        horizon: horizon.to_owned(),
        levels: vec![80.0, 95.0],
        model: String::new(),
    }
}

/// The names of the workloads the server lists.
pub(crate) async fn workload_names(
    plans: &mut proto::plan_service_client::PlanServiceClient<tonic::transport::Channel>,
) -> Vec<String> {
    plans
        .list_workloads(proto::ListWorkloadsRequest {})
        .await
        .unwrap()
        .into_inner()
        .workloads
        .into_iter()
        .map(|workload| workload.name)
        .collect()
}

#[track_caller]
pub(crate) fn code_of<T>(result: Result<tonic::Response<T>, tonic::Status>) -> (Code, String) {
    let status = result.err().expect("the call fails");
    (status.code(), status.message().to_owned())
}
