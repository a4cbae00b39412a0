//! Prometheus remote-write into prescale over real sockets: hand-built bodies against
//! `/api/v1/write` (malformed, oversized, stale markers only, wrong headers, tokens), and a real
//! Prometheus (`/usr/bin/prometheus` on 127.0.0.1) that scrapes prescale's own `/metrics`, sends
//! what it scrapes with `remote_write` (metadata and stale markers included), reads each
//! workload's plan gauges, and evaluates the alert rules of `deploy/prometheus` on them.

mod common;
mod grpc_support;
mod prometheus_support;
mod remote_write_support;

use std::sync::Arc;
use std::time::Duration;

use prescale::app::PlanState;
use prescale::domain::{Sample, SeriesId, Timestamp};
use prescale::plan::Workload;
use prescale::service::remote_write::{RemoteWriteLimits, STALE_MARKER_BITS};
use prescale::store::SeriesSamples;
use remote_write_support::{
    Prometheus, Receiver, TOKEN, body, eventually, post, remote_write_block, series,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The refusal reasons a well-formed sender never causes.
const REFUSALS: [&str; 9] = [
    "unauthorized",
    "unsupported_media_type",
    "unsupported_version",
    "too_large",
    "not_snappy",
    "bad_protobuf",
    "invalid_series",
    "invalid_sample",
    "store_failure",
];

fn now_ms() -> i64 {
    Timestamp::now().as_millis()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_bodies_are_refused_whole_and_nothing_is_written() {
    let receiver = Receiver::start(&[], RemoteWriteLimits::default()).await;
    let url = receiver.write_url();
    let now = now_ms();
    let good = series(&[("__name__", "load"), ("job", "api")], &[(now, 1.0)]);

    assert_eq!(post(&url, b"not snappy at all".to_vec(), None).await, 400);
    let not_protobuf = snap::raw::Encoder::new().compress_vec(&[0xff; 64]).unwrap();
    assert_eq!(post(&url, not_protobuf, None).await, 400);
    let bad_label = series(&[("__name__", "load"), ("bad-label", "x")], &[(now, 1.0)]);
    assert_eq!(
        post(&url, body(vec![good.clone(), bad_label]), None).await,
        400
    );
    let nameless = series(&[("job", "api")], &[(now, 1.0)]);
    assert_eq!(
        post(&url, body(vec![good.clone(), nameless]), None).await,
        400
    );
    let two_days_ahead = now + 2 * 86_400_000;
    let future = series(
        &[("__name__", "other")],
        &[(now, 1.0), (two_days_ahead, 2.0)],
    );
    assert_eq!(
        post(&url, body(vec![good.clone(), future]), None).await,
        400
    );
    assert_eq!(receiver.stored(None).await, vec![], "nothing written");

    // A stale marker alone, and a metadata-only request (no series): accepted, nothing written.
    let stale = series(
        &[("__name__", "load"), ("job", "api")],
        &[(now, f64::from_bits(STALE_MARKER_BITS))],
    );
    assert_eq!(post(&url, body(vec![stale]), None).await, 204);
    assert_eq!(post(&url, body(vec![]), None).await, 204);
    assert_eq!(receiver.stored(None).await, vec![]);

    let metrics = &receiver.server.metrics;
    for (outcome, count) in [
        ("not_snappy", 1),
        ("bad_protobuf", 1),
        ("invalid_series", 2),
        ("invalid_sample", 1),
        ("accepted", 2),
    ] {
        assert_eq!(metrics.remote_write_requests(outcome), count, "{outcome}");
    }
    assert_eq!(metrics.remote_write_samples("stale_marker"), 1);
    assert_eq!(metrics.remote_write_samples("accepted"), 0);

    // The same series, well formed, is stored; NaN other than the stale marker is dropped.
    let mixed = series(
        &[("__name__", "load"), ("job", "api"), ("empty", "")],
        &[(now - 1_000, 3.0), (now, f64::NAN)],
    );
    assert_eq!(post(&url, body(vec![good, mixed]), None).await, 204);
    assert_eq!(
        receiver.stored(None).await,
        vec![("load{job=\"api\"}".to_owned(), 2)]
    );
    assert_eq!(metrics.remote_write_samples("accepted"), 2);
    assert_eq!(metrics.remote_write_samples("non_finite"), 1);
    let text = metrics.render();
    assert!(
        text.contains("prescale_remote_write_requests_total{outcome=\"invalid_series\"} 2\n"),
        "{text}"
    );
    receiver.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_get_413_and_the_server_keeps_serving() {
    let receiver = Receiver::start(&[], RemoteWriteLimits::default()).await;
    let url = receiver.write_url();
    // 100 MB declared in Content-Length: refused before any of the body is sent.
    let declared = format!("Content-Length: {}", 100_000_000);
    assert_eq!(raw_post_status(receiver.http, &declared, 0).await, 413);
    // 100 MB of zeros compress to less than the body limit, but the snappy header says 100 MB.
    let bomb = snap::raw::Encoder::new()
        .compress_vec(&vec![0; 100_000_000])
        .unwrap();
    assert!(bomb.len() < RemoteWriteLimits::default().max_body_bytes);
    assert_eq!(post(&url, bomb, None).await, 413);
    // A chunked body without a length: answered 413 once it passes the limit, unread beyond.
    let chunked = "Transfer-Encoding: chunked";
    assert_eq!(raw_post_status(receiver.http, chunked, 100).await, 413);
    assert_eq!(
        receiver.server.metrics.remote_write_requests("too_large"),
        3
    );

    let good = series(&[("__name__", "load")], &[(now_ms(), 1.0)]);
    assert_eq!(post(&url, body(vec![good]), None).await, 204);
    assert_eq!(receiver.stored(None).await, vec![("load".to_owned(), 1)]);
    receiver.shutdown().await;
}

/// Posts a request with `framing` (its length header) over a raw socket, then up to `mebibytes`
/// 1 MiB chunks of zeros (chunked encoding), stopping once the server answers; its status code.
async fn raw_post_status(address: std::net::SocketAddr, framing: &str, mebibytes: usize) -> u16 {
    let socket = tokio::net::TcpStream::connect(address).await.unwrap();
    let (mut read, mut write) = socket.into_split();
    let head = format!(
        "POST /api/v1/write HTTP/1.1\r\nHost: {address}\r\nContent-Encoding: snappy\r\n\
         Content-Type: application/x-protobuf\r\n{framing}\r\n\r\n"
    );
    let writer = tokio::spawn(async move {
        write.write_all(head.as_bytes()).await?;
        let chunk = [
            format!("{:x}\r\n", 1 << 20).into_bytes(),
            vec![0; 1 << 20],
            b"\r\n".to_vec(),
        ]
        .concat();
        for _ in 0..mebibytes {
            write.write_all(&chunk).await?;
        }
        // Keeps the connection open (an unsent body) until the test has its answer.
        std::future::pending::<()>().await;
        Ok::<(), std::io::Error>(())
    });
    let mut response = vec![0; 64];
    let read_bytes = tokio::time::timeout(Duration::from_secs(30), read.read(&mut response))
        .await
        .expect("an answer before the whole body is sent")
        .unwrap();
    writer.abort();
    let head = String::from_utf8_lossy(&response[..read_bytes]).into_owned();
    head.split(' ').nth(1).unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_and_the_spec_headers_are_enforced() {
    let receiver = Receiver::start(&[TOKEN], RemoteWriteLimits::default()).await;
    let url = receiver.write_url();
    let good = || body(vec![series(&[("__name__", "load")], &[(now_ms(), 1.0)])]);
    assert_eq!(post(&url, good(), None).await, 401);
    assert_eq!(
        post(&url, good(), Some("wrong-token-0123456789")).await,
        401
    );
    let client = reqwest::Client::new();
    let send = |encoding: &str, content_type: &str, version: &str| {
        client
            .post(&url)
            .bearer_auth(TOKEN)
            .header("Content-Encoding", encoding)
            .header("Content-Type", content_type)
            .header("X-Prometheus-Remote-Write-Version", version)
            .body(good())
            .send()
    };
    let status = |response: reqwest::Response| response.status().as_u16();
    let protobuf = "application/x-protobuf";
    assert_eq!(status(send("gzip", protobuf, "0.1.0").await.unwrap()), 415);
    assert_eq!(
        status(send("snappy", "application/json", "0.1.0").await.unwrap()),
        415
    );
    let v2 = "application/x-protobuf;proto=io.prometheus.write.v2.Request";
    assert_eq!(status(send("snappy", v2, "2.0.0").await.unwrap()), 415);
    assert_eq!(
        status(send("snappy", protobuf, "2.0.0").await.unwrap()),
        400
    );
    assert_eq!(receiver.stored(Some(TOKEN)).await, vec![]);
    let v1 = "application/x-protobuf;proto=prometheus.WriteRequest";
    assert_eq!(status(send("snappy", v1, "0.1.0").await.unwrap()), 204);
    assert_eq!(receiver.stored(Some(TOKEN)).await.len(), 1);
    let metrics = &receiver.server.metrics;
    assert_eq!(metrics.remote_write_requests("unauthorized"), 2);
    assert_eq!(metrics.remote_write_requests("unsupported_media_type"), 3);
    assert_eq!(metrics.remote_write_requests("unsupported_version"), 1);
    receiver.shutdown().await;
}

/// A scrape target the test can take away: `/metrics` with one gauge until `stop` is cancelled.
async fn ephemeral_target() -> (u16, tokio_util::sync::CancellationToken) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let stop = tokio_util::sync::CancellationToken::new();
    let router = axum::Router::new().route(
        "/metrics",
        axum::routing::get(|| async { "# TYPE ephemeral_gauge gauge\nephemeral_gauge 42\n" }),
    );
    tokio::spawn(
        axum::serve(listener, router)
            .with_graceful_shutdown(stop.clone().cancelled_owned())
            .into_future(),
    );
    (port, stop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_delivers_its_scraped_series_with_stale_markers_and_metadata() {
    let receiver = Receiver::start(&[TOKEN], RemoteWriteLimits::default()).await;
    let (target_port, stop_target) = ephemeral_target().await;
    let url = receiver.write_url();
    let config = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
         scrape_configs:\n  - job_name: prescale\n    static_configs:\n      - targets: ['{}']\n  \
         - job_name: ephemeral\n    static_configs:\n      - targets: ['127.0.0.1:{target_port}']\n{}{}",
        receiver.http,
        remote_write_block(&url, "authorized", true),
        remote_write_block(&url, "anonymous", false).replace("remote_write:\n", ""),
    );
    let prometheus = Prometheus::start(&config, &[("token", TOKEN)]);
    let up = format!("up{{instance=\"{}\",job=\"prescale\"}}", receiver.http);
    let ephemeral =
        format!("ephemeral_gauge{{instance=\"127.0.0.1:{target_port}\",job=\"ephemeral\"}}");
    let delivered = eventually(60, || async {
        let stored = receiver.stored(Some(TOKEN)).await;
        [&up, &ephemeral].iter().all(|name| {
            stored
                .iter()
                .any(|(series, samples)| series == *name && *samples > 0)
        })
    })
    .await;
    assert!(
        delivered,
        "stored: {:?}\n{}",
        receiver.stored(Some(TOKEN)).await,
        prometheus.log()
    );
    assert_eq!(
        prometheus.query(&up).await,
        Some(1.0),
        "Prometheus scrapes prescale"
    );

    // The target goes away: Prometheus marks its series stale and sends the markers.
    stop_target.cancel();
    let metrics = &receiver.server.metrics;
    let stale = eventually(60, || async {
        metrics.remote_write_samples("stale_marker") > 0
    })
    .await;
    assert!(stale, "no stale marker arrived\n{}", prometheus.log());
    let metadata = eventually(60, || async {
        prometheus
            .own_metric("prometheus_remote_storage_metadata_total", "authorized")
            .await
            > 0.0
    })
    .await;
    assert!(metadata, "no metadata was sent\n{}", prometheus.log());
    let accepted_before = metrics.remote_write_requests("accepted");
    // Everything the authorised queue sent was accepted: samples, stale markers and metadata.
    for failed in [
        "prometheus_remote_storage_samples_failed_total",
        "prometheus_remote_storage_metadata_failed_total",
    ] {
        assert_eq!(
            prometheus.own_metric(failed, "authorized").await,
            0.0,
            "{failed}"
        );
    }
    // The queue without the token is refused, and Prometheus counts the failures.
    let refused = eventually(30, || async {
        prometheus
            .own_metric(
                "prometheus_remote_storage_samples_failed_total",
                "anonymous",
            )
            .await
            > 0.0
    })
    .await;
    assert!(refused, "{}", prometheus.log());
    assert!(metrics.remote_write_requests("unauthorized") > 0);
    for reason in REFUSALS.iter().filter(|reason| **reason != "unauthorized") {
        assert_eq!(metrics.remote_write_requests(reason), 0, "{reason}");
    }
    assert!(accepted_before > 0);
    drop(prometheus);
    receiver.shutdown().await;
}

/// Ten days of a daily cycle at 5-minute steps ending now.
fn ten_days_to_now(series: &SeriesId) -> Vec<SeriesSamples> {
    const STEP_MS: i64 = 300_000;
    let end = now_ms() / STEP_MS * STEP_MS;
    let samples = (0..2880)
        .map(|index| {
            let time = end - (2879 - index) * STEP_MS;
            let phase = (time % 86_400_000) as f64 / 86_400_000.0 * std::f64::consts::TAU;
            Sample::new(
                time,
                500.0 + 300.0 * phase.sin() + ((index * 7919) % 13) as f64,
            )
        })
        .collect();
    vec![SeriesSamples {
        series: series.clone(),
        samples,
    }]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_each_workloads_plan_gauges_and_evaluates_the_alert_rules() {
    // Plans cover 30 minutes: less than the hour PrescalePlanRunningOut asks for.
    let settings = prescale::app::Settings {
        plan_horizon: Duration::from_secs(30 * 60),
        ..grpc_support::settings()
    };
    let receiver = Receiver::start_with(settings, &[], RemoteWriteLimits::default()).await;
    let state = Arc::clone(&receiver.server.state);
    let load: SeriesId = "load{service=\"api\"}".parse().unwrap();
    let batch = ten_days_to_now(&load);
    state.ingest(&batch).unwrap();
    let workload = Workload::from_toml(
        "name = \"api\"\nseries = 'load{service=\"api\"}'\ncapacity_per_replica = 50\n\
         max_replicas = 100\nwarm_up = \"10m\"\nmode = \"forecast-and-scale\"\n",
    )
    .unwrap();
    state.upsert_workload(workload).unwrap();
    let mut plans = state.watch_plan("api").unwrap();
    tokio::time::timeout(Duration::from_secs(120), async {
        loop {
            if matches!(&*plans.borrow_and_update(), PlanState::Ready(_)) {
                return;
            }
            plans.changed().await.unwrap();
        }
    })
    .await
    .expect("a plan within two minutes");

    let rules = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/prometheus/prescale-alerts.yml"
    );
    let config = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - '{rules}'\n\
         scrape_configs:\n  - job_name: prescale\n    static_configs:\n      - targets: ['{}']\n",
        receiver.http
    );
    let prometheus = Prometheus::start(&config, &[]);
    let desired = "prescale_plan_desired_replicas{job=\"prescale\",workload=\"api\"}";
    let scraped = eventually(60, || async { prometheus.query(desired).await.is_some() }).await;
    assert!(
        scraped,
        "{}\n{}",
        receiver.server.metrics.render(),
        prometheus.log()
    );
    assert_eq!(
        prometheus.query("up{job=\"prescale\"}").await,
        Some(1.0),
        "Prometheus scrapes the OpenMetrics exposition"
    );
    // The planner may publish another plan meanwhile: compare with the plan whose revision
    // Prometheus scraped, once it has scraped the newest.
    let matched = eventually(60, || async {
        let before = Timestamp::now().saturating_add_millis(-2_000);
        let revision = prometheus
            .query("prescale_plan_revision{workload=\"api\"}")
            .await;
        let value = prometheus.query(desired).await;
        let level = prometheus
            .query("prescale_plan_level_ratio{workload=\"api\"}")
            .await;
        let after = Timestamp::now();
        let PlanState::Ready(plan) = state.plan("api").unwrap() else {
            return false;
        };
        if revision != Some(plan.revision as f64) {
            return false;
        }
        let expected: Vec<f64> = [before, after]
            .iter()
            .map(|time| f64::from(plan.plan.target_at(*time).expect("the plan covers now")))
            .collect();
        let value = value.expect("the desired replicas gauge");
        assert!(expected.contains(&value), "{value} not in {expected:?}");
        assert_eq!(level, Some(plan.plan.level().fraction()));
        true
    })
    .await;
    assert!(
        matched,
        "Prometheus never scraped the newest plan\n{}",
        prometheus.log()
    );
    let mase = prometheus
        .query(
            "prescale_model_backtest_mase{workload=\"api\",series=\"load{service=\\\"api\\\"}\"}",
        )
        .await
        .expect("the backtest error of the model behind the plan");
    assert!(mase.is_finite() && mase > 0.0, "{mase}");

    // The shipped alert rules load in this Prometheus and evaluate without error on what it
    // scrapes from prescale; of them only PrescalePlanRunningOut holds, for this workload (pending
    // for its `for`).
    let shipped = std::fs::read_to_string(rules)
        .unwrap()
        .matches("- alert:")
        .count();
    let evaluated = eventually(60, || async {
        let answer = prometheus.api("/api/v1/rules").await;
        let rules = all_rules(&answer);
        rules.len() == shipped
            && rules.iter().all(|rule| {
                rule["lastEvaluation"]
                    .as_str()
                    .is_some_and(|time| !time.starts_with("0001"))
            })
    })
    .await;
    let answer = prometheus.api("/api/v1/rules").await;
    assert!(evaluated, "{answer}\n{}", prometheus.log());
    for rule in all_rules(&answer) {
        assert_eq!(rule["health"], "ok", "{rule}");
    }
    let alerting = eventually(60, || async {
        let answer = prometheus.api("/api/v1/alerts").await;
        answer["data"]["alerts"]
            .as_array()
            .is_some_and(|alerts| !alerts.is_empty())
    })
    .await;
    let answer = prometheus.api("/api/v1/alerts").await;
    assert!(alerting, "{answer}");
    let alerts = answer["data"]["alerts"].as_array().unwrap();
    assert_eq!(alerts.len(), 1, "{answer}");
    assert_eq!(alerts[0]["labels"]["alertname"], "PrescalePlanRunningOut");
    assert_eq!(alerts[0]["labels"]["workload"], "api");
    assert_eq!(alerts[0]["state"], "pending");

    // The shipped Grafana dashboard's queries, with its variables set as Grafana would for this
    // job and workload, evaluate in this Prometheus, and each over metrics with samples here
    // finds data (the SLO, fleet and gRPC panels have none on this server).
    let (queries, variables) = common::dashboard_queries();
    assert!(queries.len() >= 25, "{queries:?}");
    let text = receiver.server.metrics.render();
    let sampled = |name: &str| {
        text.lines().any(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(['{', ' ']))
        })
    };
    let mut with_data = 0;
    for query in &queries {
        for variable in query.split('$').skip(1) {
            let name: String = variable
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            assert!(
                name == "__rate_interval" || variables.contains(&name),
                "{query} uses ${name}, which the dashboard does not define"
            );
        }
        let set = query
            .replace("$__rate_interval", "1m")
            .replace("$job", "prescale")
            .replace("$workload", "api");
        let shown = common::metric_names(&set).iter().all(|name| sampled(name));
        let answered = eventually(30, || async {
            let answer = prometheus.instant(&set).await;
            answer["status"] == "success"
                && (!shown
                    || answer["data"]["result"]
                        .as_array()
                        .is_some_and(|result| !result.is_empty()))
        })
        .await;
        let answer = prometheus.instant(&set).await;
        assert!(answered, "{set}: {answer}\n{text}");
        with_data += usize::from(shown);
    }
    assert!(with_data >= 18, "{with_data} of {} queries", queries.len());

    assert!(
        text.contains("prescale_plan_desired_replicas{workload=\"api\"}"),
        "{text}"
    );

    // Deleting the workload removes its gauges.
    state.delete_workload("api").unwrap();
    let text = receiver.server.metrics.render();
    assert!(!text.contains("workload=\"api\""), "{text}");
    drop(prometheus);
    receiver.shutdown().await;
}

/// Every rule of every group in an `/api/v1/rules` answer.
fn all_rules(answer: &serde_json::Value) -> Vec<&serde_json::Value> {
    answer["data"]["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|group| group["rules"].as_array())
        .flatten()
        .collect()
}
