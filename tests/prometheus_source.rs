//! Workloads whose history is pulled from a real Prometheus (Debian's `/usr/bin/prometheus`, seeded
//! with `promtool` from `notebooks-data`, on 127.0.0.1): a 28-day backfill in chunks whose every point
//! is the source's value, following points pushed into Prometheus afterwards, a restart that pulls
//! only what is new, and sources that fail (refused connection, syntax error, 10,000 series, none,
//! NaN) with a clear status, a counter and nothing written, while the rest keeps working; https with a
//! CA file and basic auth.

mod common;
mod grpc_support;
mod prometheus_support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use prescale::app::{Settings, SourceTiming};
use prescale::domain::{Aggregation, SeriesId, Step, TimeRange, Timestamp};
use prescale::forecast::HistoryWindow;
use prescale::service::ServerOptions;
use prescale::service::proto::plan_service_client::PlanServiceClient;
use prescale::service::proto::{self, GetWorkloadRequest, SourceStatus, UpsertWorkloadRequest};
use prescale::store::{MetricStore, StoreError};

use common::TestServer;
use grpc_support::workload_names;
use prometheus_support::{LocalPrometheus, Seed};

const MINUTE_MS: i64 = 60_000;
const DAY_MS: i64 = 24 * 60 * MINUTE_MS;

/// Settings with the planner held back (these tests look at the store, not at plans) and quick
/// polls and retries.
fn settings(history_window: Duration) -> Settings {
    Settings {
        history_window: HistoryWindow::Fixed(history_window),
        replan_after_samples: u64::MAX,
        replan_interval: Duration::from_secs(3600),
        registry_watch: None,
        sources: SourceTiming {
            poll_interval: Some(Duration::from_millis(200)),
            retry_initial: Duration::from_millis(100),
            retry_max: Duration::from_secs(1),
        },
        ..Settings::default()
    }
}

fn now_ms() -> i64 {
    Timestamp::now().as_millis()
}

/// Now, rounded down to a half hour.
fn half_hour_now() -> i64 {
    now_ms().div_euclid(30 * MINUTE_MS) * 30 * MINUTE_MS
}

/// A workload on series `series`, pulled from `url` with `query` at `step`.
fn sourced(name: &str, series: &str, url: &str, query: &str, step: &str) -> UpsertWorkloadRequest {
    UpsertWorkloadRequest {
        workload: Some(proto::Workload {
            name: name.to_owned(),
            series: Some(proto::SeriesRef {
                name: series.to_owned(),
                labels: Default::default(),
            }),
            capacity_per_replica: 100.0,
            max_replicas: 50,
            warm_up: "10m".to_owned(),
            source: Some(proto::Source {
                kind: Some(proto::source::Kind::Prometheus(proto::PrometheusSource {
                    url: url.to_owned(),
                    query: query.to_owned(),
                    step: step.to_owned(),
                    timeout: "5s".to_owned(),
                    ..Default::default()
                })),
            }),
            ..Default::default()
        }),
    }
}

/// The source status `GetWorkload` shows for `name`, once `ready` accepts it (within 60 s).
async fn status_when(
    plans: &mut PlanServiceClient<tonic::transport::Channel>,
    name: &str,
    ready: impl Fn(&SourceStatus) -> bool,
) -> SourceStatus {
    let started = Instant::now();
    loop {
        let workload = plans
            .get_workload(GetWorkloadRequest {
                name: name.to_owned(),
            })
            .await
            .unwrap()
            .into_inner();
        if let Some(status) = &workload.source_status
            && ready(status)
        {
            return status.clone();
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{name}: no such source status within 60 s (last: {:?})",
            workload.source_status
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The value Prometheus evaluates at `at` for a raw series: its newest sample at or before `at`,
/// within the 31-minute lookback the test Prometheus runs with.
fn value_at(samples: &[(i64, f64)], at: i64) -> Option<f64> {
    let index = samples.partition_point(|(time, _)| *time <= at);
    let (time, value) = *samples.get(index.checked_sub(1)?)?;
    (at - time <= 31 * MINUTE_MS).then_some(value)
}

/// Every stored point of `series` as `(epoch ms, value)`, read through the store's window at `step`
/// (each bucket holds exactly one pulled point); none while the store holds none of it (a series
/// whose source changed, between its deletion and the first pull of the new query).
fn stored_points(store: &dyn MetricStore, series: &str, step: Step) -> Vec<(i64, f64)> {
    let series: SeriesId = series.parse().unwrap();
    let summary = match store.summary(&series) {
        Ok(summary) => summary,
        Err(StoreError::UnknownSeries { .. }) => return Vec::new(),
        Err(error) => panic!("{series}: {error}"),
    };
    let (Some(first), Some(last)) = (summary.first, summary.last) else {
        return Vec::new();
    };
    let range = TimeRange::new(first, last.saturating_add_millis(1)).unwrap();
    let window = match store.window(&series, range, step, Aggregation::Mean) {
        Ok(window) => window,
        Err(StoreError::UnknownSeries { .. }) => return Vec::new(),
        Err(error) => panic!("{series}: {error}"),
    };
    let points: Vec<(i64, f64)> = window
        .values()
        .iter()
        .enumerate()
        .filter(|(_, value)| value.is_finite())
        .map(|(index, value)| (first.as_millis() + index as i64 * step.as_millis(), *value))
        .collect();
    assert_eq!(points.len(), summary.samples, "one point per bucket");
    points
}

/// Names of the series the server's store holds.
fn stored_series(server: &TestServer) -> Vec<String> {
    server
        .state
        .history()
        .store()
        .series()
        .iter()
        .map(ToString::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfills_28_days_in_chunks_of_source_values_and_a_restart_pulls_only_what_is_new() {
    if prometheus_support::missing() {
        return;
    }
    // The last 30 days of NYC taxi demand (30-minute samples), ending now.
    let taxi = prometheus_support::nyc_taxi_ending_at(half_hour_now(), 30);
    let prometheus = LocalPrometheus::start(&[Seed {
        name: "nyc_taxi".to_owned(),
        samples: &taxi,
    }]);
    let settings = settings(Duration::from_secs(28 * 24 * 3600));
    let server = TestServer::start(settings.clone(), ServerOptions::default()).await;
    let mut plans = PlanServiceClient::new(server.channel().await);
    // A 2-minute step over 28 days is 20,160 points: more than one request may ask for.
    plans
        .upsert_workload(sourced("taxi", "taxi", &prometheus.url, "nyc_taxi", "2m"))
        .await
        .unwrap();
    let status = status_when(&mut plans, "taxi", |status| status.last_success_ms > 0).await;
    assert!(status.points_pulled > 11_000, "{status:?}");
    assert!(!status.history_short, "{status:?}");
    assert_eq!(status.last_error, "");
    let requests = prometheus.range_queries();
    assert!(
        requests >= status.points_pulled.div_ceil(10_000) && requests >= 3,
        "{requests} range queries for {} points",
        status.points_pulled
    );

    let step = Step::try_from(2 * MINUTE_MS).unwrap();
    let points = stored_points(server.state.history().store().as_ref(), "taxi", step);
    assert_eq!(points.len() as u64, status.points_pulled);
    let span = points.last().unwrap().0 - points[0].0;
    assert!(span >= 28 * DAY_MS - 4 * MINUTE_MS, "{span} ms of history");
    for (at, value) in &points {
        assert_eq!(Some(*value), value_at(&taxi, *at), "the point at {at}");
    }
    assert_eq!(server.metrics.samples_ingested.get(), status.points_pulled);

    // A restart over the same data directory continues from the newest stored point.
    let directory = server.shutdown().await;
    let before = prometheus.range_queries();
    let server = TestServer::start_in(directory, settings, ServerOptions::default()).await;
    let mut plans = PlanServiceClient::new(server.channel().await);
    let status = status_when(&mut plans, "taxi", |status| status.last_success_ms > 0).await;
    assert!(status.points_pulled <= 2, "re-pulled {status:?}");
    assert!(prometheus.range_queries() - before <= 2, "re-queried");
    assert_eq!(
        stored_points(server.state.history().store().as_ref(), "taxi", step).len() as u64,
        points.len() as u64 + status.points_pulled
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follows_points_pushed_into_prometheus_after_the_backfill() {
    if prometheus_support::missing() {
        return;
    }
    let prometheus = LocalPrometheus::start(&[]);
    let start = now_ms() / 1000 * 1000 - 60_000;
    let early: Vec<(i64, f64)> = (0..60)
        .map(|second| (start + second * 1000, 100.0 + second as f64))
        .collect();
    prometheus_support::remote_write(&prometheus.url, "live_load", &early).await;

    let server =
        TestServer::start(settings(Duration::from_secs(300)), ServerOptions::default()).await;
    let mut plans = PlanServiceClient::new(server.channel().await);
    plans
        .upsert_workload(sourced("live", "live", &prometheus.url, "live_load", "1s"))
        .await
        .unwrap();
    let status = status_when(&mut plans, "live", |status| status.last_success_ms > 0).await;
    assert!(status.points_pulled >= 60, "{status:?}");
    let step = Step::try_from(1000).unwrap();
    for (at, value) in stored_points(server.state.history().store().as_ref(), "live", step) {
        assert_eq!(Some(value), value_at(&early, at), "the point at {at}");
    }

    // New points pushed into Prometheus reach the store within a few polls.
    let pushed_at = now_ms();
    prometheus_support::remote_write(&prometheus.url, "live_load", &[(pushed_at, 4242.0)]).await;
    let started = Instant::now();
    loop {
        let points = stored_points(server.state.history().store().as_ref(), "live", step);
        if points
            .iter()
            .any(|(at, value)| *value == 4242.0 && *at >= pushed_at - 1000)
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the pushed point never arrived"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let points = stored_points(server.state.history().store().as_ref(), "live", step).len() as u64;
    assert_eq!(server.metrics.samples_ingested.get(), points);
    server.shutdown().await;
}

/// Two days of half-hourly points ending at `now`, rising from 10 by one a point.
fn two_days_to(now: i64) -> Vec<(i64, f64)> {
    (0..96)
        .map(|index| (now - (95 - index) * 30 * MINUTE_MS, 10.0 + index as f64))
        .collect()
}

/// A workload whose query changes has its series pulled again from the new query, not continued
/// from the old one's points; a second workload pulling the same series from another query is
/// refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_query_replaces_the_series_and_a_second_source_on_it_is_refused() {
    if prometheus_support::missing() {
        return;
    }
    let now = half_hour_now();
    let two_days = two_days_to(now);
    let prometheus = LocalPrometheus::start(&[Seed {
        name: "load".to_owned(),
        samples: &two_days,
    }]);
    let server = TestServer::start(
        settings(Duration::from_secs(24 * 3600)),
        ServerOptions::default(),
    )
    .await;
    let mut plans = PlanServiceClient::new(server.channel().await);
    plans
        .upsert_workload(sourced("chg", "chg", &prometheus.url, "load", "30m"))
        .await
        .unwrap();
    status_when(&mut plans, "chg", |status| status.last_success_ms > 0).await;
    let step = Step::try_from(30 * MINUTE_MS).unwrap();
    let store = server.state.history().store();
    let first = stored_points(store.as_ref(), "chg", step);
    assert!(first.len() >= 40, "{} points", first.len());

    plans
        .upsert_workload(sourced("chg", "chg", &prometheus.url, "load * 2", "30m"))
        .await
        .unwrap();
    let started = Instant::now();
    let doubled = loop {
        let points = stored_points(store.as_ref(), "chg", step);
        if points.len() >= first.len()
            && points
                .iter()
                .all(|(at, value)| Some(*value) == value_at(&two_days, *at).map(|v| 2.0 * v))
        {
            break points;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the series still holds the old query's points: {points:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(doubled[0].0, first[0].0, "the whole window pulled again");

    let refused = plans
        .upsert_workload(sourced("other", "chg", &prometheus.url, "load * 3", "30m"))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
    assert!(refused.message().contains("\"chg\""), "{refused:?}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_sources_fail_clearly_write_nothing_and_leave_the_rest_working() {
    if prometheus_support::missing() {
        return;
    }
    let now = half_hour_now();
    let two_days = two_days_to(now);
    let recent: Vec<(i64, f64)> = two_days[two_days.len() - 12..].to_vec();
    let one = [(now - 10 * MINUTE_MS, 1.0)];
    let mut seeds = vec![
        Seed {
            name: "load".to_owned(),
            samples: &two_days,
        },
        Seed {
            name: "recent_load".to_owned(),
            samples: &recent,
        },
    ];
    seeds.extend((0..10_000).map(|index| Seed {
        name: format!("many{{i=\"{index}\"}}"),
        samples: &one,
    }));
    let prometheus = LocalPrometheus::start(&seeds);
    let server = TestServer::start(
        settings(Duration::from_secs(24 * 3600)),
        ServerOptions::default(),
    )
    .await;
    let metrics_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let metrics_url = format!("http://{}", metrics_listener.local_addr().unwrap());
    let stop_metrics = tokio_util::sync::CancellationToken::new();
    let metrics_task = tokio::spawn(prescale::service::serve_metrics(
        metrics_listener,
        std::sync::Arc::clone(&server.metrics),
        stop_metrics.clone().cancelled_owned(),
    ));
    let mut plans = PlanServiceClient::new(server.channel().await);
    let refused = format!("http://127.0.0.1:{}", prometheus_support::free_port());
    let bad = [
        (
            "refused",
            refused.as_str(),
            "load",
            "connect",
            "cannot connect",
        ),
        (
            "syntax",
            &prometheus.url,
            "sum(rate(load[5m]",
            "query_error",
            "bad_data",
        ),
        (
            "many",
            &prometheus.url,
            "many",
            "several_series",
            "10000 series",
        ),
        (
            "none",
            &prometheus.url,
            "no_such_metric",
            "no_series",
            "no series",
        ),
        (
            "nan",
            &prometheus.url,
            "(load - load) / (load - load)",
            "nan_values",
            "NaN",
        ),
    ];
    for (name, url, query, _, _) in bad {
        plans
            .upsert_workload(sourced(name, name, url, query, "30m"))
            .await
            .unwrap();
    }
    for (name, query) in [("good", "load"), ("short", "recent_load")] {
        plans
            .upsert_workload(sourced(name, name, &prometheus.url, query, "30m"))
            .await
            .unwrap();
    }

    for (name, _, _, reason, message) in bad {
        let status = status_when(&mut plans, name, |status| !status.last_error.is_empty()).await;
        assert_eq!(status.last_error_reason, reason, "{name}: {status:?}");
        assert!(status.last_error.contains(message), "{name}: {status:?}");
        assert_eq!(status.points_pulled, 0, "{name}");
        assert_eq!(status.last_success_ms, 0, "{name}");
    }
    let good = status_when(&mut plans, "good", |status| status.last_success_ms > 0).await;
    assert_eq!(
        good.points_pulled, 49,
        "a day of 30-minute points, both ends: {good:?}"
    );
    assert!(!good.history_short);
    // A source holding less than the history window gives what it has, and says so.
    let short = status_when(&mut plans, "short", |status| status.last_success_ms > 0).await;
    assert!(short.history_short, "{short:?}");
    assert_eq!(short.history_available_from_ms, recent[0].0);
    assert_eq!(short.points_pulled, recent.len() as u64);

    // Nothing of a failing source was written; retries go on with backoff.
    let stored = stored_series(&server);
    assert_eq!(stored, ["good", "short"]);
    let retried = Instant::now();
    while server.metrics.source_errors("refused", "connect") < 3 {
        assert!(retried.elapsed() < Duration::from_secs(20), "no retries");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, body) =
        tokio::task::spawn_blocking(move || prometheus_support::http_get(&metrics_url, "/metrics"))
            .await
            .unwrap()
            .unwrap();
    assert_eq!(status, 200);
    let counters: BTreeMap<&str, f64> = body
        .lines()
        .filter_map(|line| line.strip_prefix("prescale_source_errors_total"))
        .filter_map(|line| {
            let (labels, count) = line.rsplit_once(' ')?;
            Some((labels, count.parse().ok()?))
        })
        .collect();
    for (name, _, _, reason, _) in bad {
        let labels = format!("{{workload=\"{name}\",reason=\"{reason}\"}}");
        assert!(
            counters
                .get(labels.as_str())
                .is_some_and(|count| *count >= 1.0),
            "{labels} in {counters:?}"
        );
    }

    // Upserting a workload with a fixed query restarts its follower, which then succeeds.
    plans
        .upsert_workload(sourced("syntax", "syntax", &prometheus.url, "load", "30m"))
        .await
        .unwrap();
    let fixed = status_when(&mut plans, "syntax", |status| status.last_success_ms > 0).await;
    assert_eq!(fixed.last_error, "");
    assert_eq!(fixed.points_pulled, 49);

    // Deleting a workload stops its follower: no more errors are counted for it.
    plans
        .delete_workload(proto::DeleteWorkloadRequest {
            name: "refused".to_owned(),
        })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(server.state.source_status("refused").is_none());
    let errors = server.metrics.source_errors("refused", "connect");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(server.metrics.source_errors("refused", "connect"), errors);
    let names = workload_names(&mut plans).await;
    assert_eq!(names.len(), 6, "{names:?}");
    assert!(!names.iter().any(|name| name == "refused"), "{names:?}");

    stop_metrics.cancel();
    metrics_task.await.unwrap().unwrap();
    server.shutdown().await;
}

#[test]
fn import_pulls_a_series_from_prometheus_once_and_refuses_a_bad_query() {
    if prometheus_support::missing() {
        return;
    }
    let taxi = prometheus_support::nyc_taxi_ending_at(half_hour_now(), 3);
    let prometheus = LocalPrometheus::start(&[Seed {
        name: "nyc_taxi".to_owned(),
        samples: &taxi,
    }]);
    let data = tempfile::tempdir().unwrap();
    let import = |query: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_prescale"))
            .args(["import", "--data-dir"])
            .arg(data.path())
            .args(["--prometheus", &prometheus.url, "--query", query])
            .args(["--since", "2d", "--step", "30m", "--series", "taxi"])
            .output()
            .unwrap()
    };
    let output = import("nyc_taxi");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("imported 97 samples"), "{stdout}");

    let failed = import("sum(rate(nyc_taxi[5m]");
    assert!(!failed.status.success());
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(stderr.contains("bad_data"), "{stderr}");

    let store = prescale::store::PolarsStore::open(data.path(), Default::default()).unwrap();
    let step = Step::try_from(30 * MINUTE_MS).unwrap();
    let points = stored_points(&store, "taxi", step);
    assert_eq!(points.len(), 97);
    for (at, value) in points {
        assert_eq!(Some(value), value_at(&taxi, at), "the point at {at}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulls_over_https_trusting_a_ca_file_with_basic_auth() {
    if prometheus_support::missing() {
        return;
    }
    let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    let files = tempfile::tempdir().unwrap();
    let cert = files.path().join("prometheus.pem");
    let key = files.path().join("prometheus.key");
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    let password = files.path().join("password");
    std::fs::write(&password, "test\n").unwrap();
    let wrong = files.path().join("wrong");
    std::fs::write(&wrong, "guess\n").unwrap();
    // bcrypt of "test", as Prometheus' basic-auth guide writes it.
    let web_config = format!(
        "tls_server_config:\n  cert_file: {}\n  key_file: {}\nbasic_auth_users:\n  \
         prescale: $2b$12$hNf2lSsxfm0.i4a.1kVpSOVyBCfIB51VRjgBUyv6kdnyTlgWj81Ay\n",
        cert.display(),
        key.display()
    );
    let now = half_hour_now();
    let day: Vec<(i64, f64)> = (0..49)
        .map(|index| (now - (48 - index) * 30 * MINUTE_MS, index as f64))
        .collect();
    let prometheus = LocalPrometheus::start_with_web_config(
        &[Seed {
            name: "load".to_owned(),
            samples: &day,
        }],
        Some(&web_config),
    );
    let https = prometheus.url.replace("http://", "https://");
    let server = TestServer::start(
        settings(Duration::from_secs(24 * 3600)),
        ServerOptions::default(),
    )
    .await;
    let mut plans = PlanServiceClient::new(server.channel().await);
    let secured = |name: &str, ca_file: &std::path::Path, password_file: &std::path::Path| {
        let mut request = sourced(name, name, &https, "load", "30m");
        if let Some(proto::source::Kind::Prometheus(source)) = request
            .workload
            .as_mut()
            .and_then(|workload| workload.source.as_mut())
            .and_then(|source| source.kind.as_mut())
        {
            source.ca_file = ca_file.display().to_string();
            source.basic_auth_username = "prescale".to_owned();
            source.basic_auth_password_file = password_file.display().to_string();
        }
        request
    };
    plans
        .upsert_workload(secured("trusted", &cert, &password))
        .await
        .unwrap();
    plans
        .upsert_workload(secured("wrong_password", &cert, &wrong))
        .await
        .unwrap();
    plans
        .upsert_workload(secured("untrusted", &password, &password))
        .await
        .unwrap();

    plans
        .upsert_workload(sourced("no_ca", "no_ca", &https, "load", "30m"))
        .await
        .unwrap();

    let trusted = status_when(&mut plans, "trusted", |status| status.last_success_ms > 0).await;
    assert_eq!(trusted.points_pulled, 49, "{trusted:?}");
    let refused = status_when(&mut plans, "wrong_password", |status| {
        !status.last_error.is_empty()
    })
    .await;
    assert_eq!(refused.last_error_reason, "http_status", "{refused:?}");
    assert!(refused.last_error.contains("401"), "{refused:?}");
    // A CA file that holds no certificate is an error naming it.
    let untrusted = status_when(&mut plans, "untrusted", |status| {
        !status.last_error.is_empty()
    })
    .await;
    assert_eq!(untrusted.last_error_reason, "file", "{untrusted:?}");
    assert!(untrusted.last_error.contains("password"), "{untrusted:?}");
    // Without the CA file, the system's roots do not trust Prometheus' certificate.
    let no_ca = status_when(&mut plans, "no_ca", |status| !status.last_error.is_empty()).await;
    assert_eq!(no_ca.last_error_reason, "connect", "{no_ca:?}");
    assert!(no_ca.last_error.contains("certificate"), "{no_ca:?}");
    let stored = stored_series(&server);
    assert_eq!(stored, ["trusted"]);
    server.shutdown().await;
}

/// `prescale demo --prometheus URL --query EXPR`: the demo workload backfilled from a real
/// Prometheus holding 28 days of taxi demand at 5-minute steps, and planned on it.
#[test]
fn the_demo_plans_on_a_series_pulled_from_prometheus() {
    if prometheus_support::missing() {
        return;
    }
    let five_minutes: Vec<(i64, f64)> = prometheus_support::nyc_taxi_ending_at(half_hour_now(), 28)
        .into_iter()
        .flat_map(|(at, value)| {
            (0..6).map(move |step| (at - 25 * MINUTE_MS + step * 5 * MINUTE_MS, value))
        })
        .collect();
    let prometheus = LocalPrometheus::start(&[Seed {
        name: "taxi_demand".to_owned(),
        samples: &five_minutes,
    }]);
    let output = tempfile::tempdir().unwrap();
    let demo = std::process::Command::new(env!("CARGO_BIN_EXE_prescale"))
        .args([
            "demo",
            "--prometheus",
            &prometheus.url,
            "--query",
            "taxi_demand",
        ])
        .arg("--output-dir")
        .arg(output.path())
        .env_remove("PRESCALE_CONFIG")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&demo.stdout);
    assert!(
        demo.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&demo.stderr)
    );
    let pulled: u64 = stdout
        .lines()
        .find_map(|line| line.strip_prefix("== source: "))
        .and_then(|rest| rest.split(' ').next())
        .and_then(|count| count.parse().ok())
        .unwrap_or_else(|| panic!("no source line in {stdout}"));
    assert!(pulled >= 27 * 288, "{pulled} points pulled:\n{stdout}");
    assert!(
        stdout.contains("== PlanService.WatchPlans: plan revision"),
        "{stdout}"
    );
    let plan = std::fs::read_to_string(output.path().join("prometheus_plan.csv")).unwrap();
    assert!(plan.starts_with("timestamp,desired,low,high,reason\n"));
    // A day of 5-minute steps, each asking for at least the workload's two replicas.
    let rows: Vec<&str> = plan.lines().skip(1).collect();
    assert_eq!(rows.len(), 288, "{plan}");
    for row in rows {
        let desired: u32 = row.split(',').nth(1).unwrap().parse().unwrap();
        assert!(desired >= 2, "{row}");
    }
}
