//! The KEDA external scaler over real sockets: prescale's own generated client checks each call
//! and what the scaler listener refuses to serve (its TLS and `prescale serve` wiring are in
//! `tests/keda_scaler_listener.rs`); then Python's grpcio, with stubs compiled from
//! KEDA's vendored proto at test time, plays KEDA and its HPA over a replayed day and the HPA's
//! replicas are checked against the plan at every step.
//!
//! Dates come from a [`ManualClock`] the test moves through the plan's day; the plans themselves
//! are real (four weeks of a daily cycle, the live model trained on first use).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{ManualClock, TestServer, connect, manifest_dir, scaled_object, venv_python};
use prescale::app::{PlanState, PublishedPlan, Settings};
use prescale::domain::{Sample, SeriesId, Timestamp};
use prescale::plan::{HPA_TOLERANCE, Workload};
use prescale::service::externalscaler::GetMetricsRequest;
use prescale::service::externalscaler::external_scaler_client::ExternalScalerClient;
use prescale::service::proto;
use prescale::service::{ScalerOptions, ServerOptions};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{ChildStdin, ChildStdout};
use tonic::Code;

const TOKEN: &str = "a-token-for-the-main-listener";

/// Ten-minute steps of the replayed history.
const STEP_MS: i64 = 600_000;
const DAY_MS: i64 = 86_400_000;
/// The end of the history: a midnight, when the load is lowest.
const HISTORY_END_MS: i64 = 1_767_225_600_000;

/// Four weeks of a daily cycle at ten-minute steps, between 12,000 (midnight) and 22,000 (noon),
/// with a little deterministic noise; the newest sample is a midnight's.
fn daily_load() -> Vec<Sample> {
    let samples = 28 * DAY_MS / STEP_MS;
    (1..=samples)
        .map(|index| {
            let at = HISTORY_END_MS - (samples - index) * STEP_MS;
            let phase = std::f64::consts::TAU * (at % DAY_MS) as f64 / DAY_MS as f64;
            let noise = 300.0 * ((index * 7919) % 13) as f64 / 13.0;
            Sample::new(at, 17_000.0 - 5_000.0 * phase.cos() + noise)
        })
        .collect()
}

/// A workload on the `shop_rps` series, `mode` as given.
fn workload(name: &str, mode: &str, capacity: f64, min_replicas: u32) -> Workload {
    Workload::from_toml(&format!(
        r#"
            name = "{name}"
            series = "shop_rps"
            capacity_per_replica = {capacity}
            min_replicas = {min_replicas}
            max_replicas = 200
            warm_up = "10m"
            mode = "{mode}"
        "#
    ))
    .unwrap()
}

/// A server with its scaler listener and bearer tokens on the main one, four weeks of
/// [`daily_load`] stored, and the workloads `checkout` (scaled by prescale), `report`
/// (forecast-only) and `others` stored, each with its first plan published.
async fn serve(clock: &ManualClock, others: Vec<Workload>) -> TestServer {
    let mut workloads = vec![
        workload("checkout", "forecast-and-scale", 400.0, 2),
        workload("report", "forecast-only", 400.0, 2),
    ];
    workloads.extend(others);
    let server = TestServer::start_with_scaler(
        tempfile::tempdir().unwrap(),
        Settings::default(),
        ServerOptions {
            tokens: vec![TOKEN.to_owned()],
            ..ServerOptions::default()
        },
        Arc::new(clock.clone()),
        Some(ScalerOptions::default()),
    )
    .await;
    let state = Arc::clone(&server.state);
    let names: Vec<String> = workloads.iter().map(|w| w.name().to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        let series = SeriesId::new("shop_rps").unwrap();
        state
            .history()
            .store()
            .append(&series, &daily_load())
            .unwrap();
        for workload in workloads {
            state.upsert_workload(workload).unwrap();
        }
    })
    .await
    .unwrap();
    for name in names {
        ready_plan(&server, &name, 0).await;
    }
    server
}

/// The workload's plan once its revision is above `after`, within three minutes.
async fn ready_plan(server: &TestServer, name: &str, after: u64) -> Arc<PublishedPlan> {
    let mut plans = server.state.watch_plan(name).unwrap();
    let wait =
        plans.wait_for(|state| matches!(state, PlanState::Ready(plan) if plan.revision > after));
    let state = tokio::time::timeout(Duration::from_secs(180), wait)
        .await
        .expect("a plan within three minutes")
        .unwrap()
        .clone();
    match state {
        PlanState::Ready(plan) => plan,
        other => panic!("{other:?}"),
    }
}

/// The replicas the plan wants at `time`: the executor rule with the plan's reactive count.
fn planned(plan: &PublishedPlan, time: Timestamp) -> u32 {
    let reactive = plan.plan.reactive().map_or(0, |reactive| reactive.replicas);
    plan.plan.executor_target(time, reactive).unwrap()
}

/// A warm-up shorter than the step: a plan made just after the newest sample starts at the next
/// step, and its first replicas are not due for most of this one. KEDA asking meanwhile gets the
/// plan's first step (with the reactive count), not an error calling a fresh plan stale.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_made_after_the_newest_sample_is_served_before_its_first_request() {
    let clock = ManualClock::default();
    let quick = Workload::from_toml(
        r#"
            name = "quick"
            series = "shop_rps"
            capacity_per_replica = 400
            min_replicas = 2
            max_replicas = 200
            warm_up = "2m"
            mode = "forecast-and-scale"
        "#,
    )
    .unwrap();
    let server = serve(&clock, vec![quick]).await;
    let plan = ready_plan(&server, "quick", 0).await;
    assert_eq!(plan.plan.start().as_millis(), HISTORY_END_MS + STEP_MS);
    // A minute after the newest sample: the first step's replicas are asked for seven minutes on.
    let now = Timestamp::from_millis(HISTORY_END_MS + 60_000);
    clock.set(now);
    let mut scaler = ExternalScalerClient::new(
        connect(server.scaler_address.expect("the scaler listens")).await,
    );
    let quick = scaled_object("quick", &[("workload", "quick")]);
    let spec = scaler
        .get_metric_spec(quick.clone())
        .await
        .unwrap()
        .into_inner();
    let metrics = scaler
        .get_metrics(GetMetricsRequest {
            scaled_object_ref: Some(quick.clone()),
            metric_name: spec.metric_specs[0].metric_name.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = plan.plan.steps()[0].desired;
    let reactive = plan.plan.reactive().map_or(0, |reactive| reactive.replicas);
    assert_eq!(
        metrics.metric_values[0].metric_value,
        i64::from(first.max(reactive))
    );
    assert!(
        scaler
            .is_active(quick.clone())
            .await
            .unwrap()
            .into_inner()
            .result
    );

    // Before the newest sample's step the plan covers nothing: a stream opened then ends with
    // UNAVAILABLE after its headers, and is counted with that code, not as OK.
    clock.set(Timestamp::from_millis(HISTORY_END_MS - STEP_MS));
    let mut activity = scaler.stream_is_active(quick).await.unwrap().into_inner();
    let ended = activity.message().await.unwrap_err();
    assert_eq!(ended.code(), Code::Unavailable, "{ended:?}");
    let method = "/externalscaler.ExternalScaler/StreamIsActive";
    assert_eq!(server.metrics.requests(method, "UNAVAILABLE"), 1);
    assert_eq!(server.metrics.requests(method, "OK"), 0);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scaler_serves_the_plan_for_now_without_a_token_and_nothing_else() {
    let clock = ManualClock::default();
    let server = serve(&clock, Vec::new()).await;
    let plan = ready_plan(&server, "checkout", 0).await;
    let now = plan.plan.start().saturating_add_millis(3_600_000);
    clock.set(now);
    let scaler_channel = connect(server.scaler_address.expect("the scaler listens")).await;
    let mut scaler = ExternalScalerClient::new(scaler_channel.clone());
    let checkout = scaled_object("checkout", &[("workload", "checkout")]);

    let spec = scaler
        .get_metric_spec(checkout.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(spec.metric_specs.len(), 1);
    let metric = &spec.metric_specs[0];
    assert_eq!((metric.target_size, metric.target_size_float), (1, 1.0));

    let metrics = scaler
        .get_metrics(GetMetricsRequest {
            scaled_object_ref: Some(checkout.clone()),
            metric_name: metric.metric_name.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let value = &metrics.metric_values[0];
    let expected = planned(&plan, now);
    assert!(expected >= 2, "the plan wants replicas: {expected}");
    assert_eq!(value.metric_name, metric.metric_name);
    assert_eq!(value.metric_value, i64::from(expected));
    assert_eq!(value.metric_value_float, f64::from(expected));
    assert!(
        scaler
            .is_active(checkout.clone())
            .await
            .unwrap()
            .into_inner()
            .result
    );

    // A forecast-only workload reports and never acts.
    let report = scaled_object("report", &[("workload", "report")]);
    assert!(
        !scaler
            .is_active(report.clone())
            .await
            .unwrap()
            .into_inner()
            .result
    );
    let refused = scaler
        .get_metrics(GetMetricsRequest {
            scaled_object_ref: Some(report.clone()),
            metric_name: metric.metric_name.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(refused.message().contains("forecast-only"), "{refused:?}");

    // Errors KEDA logs: an unknown workload, a trigger naming none, a bad tolerance.
    let unknown = scaler
        .get_metric_spec(scaled_object("x", &[("workload", "nope")]))
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
    assert!(unknown.message().contains("nope"), "{unknown:?}");
    let unnamed = scaler.is_active(scaled_object("x", &[])).await.unwrap_err();
    assert_eq!(unnamed.code(), Code::InvalidArgument);
    assert!(unnamed.message().contains("shop/x"), "{unnamed:?}");
    let bad = scaler
        .is_active(scaled_object(
            "x",
            &[("workload", "checkout"), ("scaleUpTolerance", "lots")],
        ))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument, "{bad:?}");

    // StreamIsActive: the activity at once, then again when a new plan is published.
    let mut activity = scaler
        .stream_is_active(checkout.clone())
        .await
        .unwrap()
        .into_inner();
    let first = tokio::time::timeout(Duration::from_secs(30), activity.message())
        .await
        .unwrap()
        .unwrap()
        .expect("the current activity at once");
    assert!(first.result);
    let mut specs = scaler
        .stream_metric_spec(checkout.clone())
        .await
        .unwrap()
        .into_inner();
    let streamed = specs.message().await.unwrap().expect("the spec at once");
    assert_eq!(streamed, spec, "the streamed spec is GetMetricSpec's");
    let state = Arc::clone(&server.state);
    tokio::task::spawn_blocking(move || {
        state
            .upsert_workload(workload("checkout", "forecast-and-scale", 300.0, 2))
            .unwrap()
    })
    .await
    .unwrap();
    let mut replanned = ready_plan(&server, "checkout", plan.revision).await;
    while planned(&replanned, now) <= expected {
        // A scheduled replan of the old workload came first.
        replanned = ready_plan(&server, "checkout", replanned.revision).await;
    }
    let pushed = tokio::time::timeout(Duration::from_secs(60), activity.message())
        .await
        .expect("a message when the plan changes")
        .unwrap()
        .expect("the stream is open");
    assert!(pushed.result);

    // A stream on a workload ends when the workload is deleted.
    let mut report_activity = scaler
        .stream_is_active(report.clone())
        .await
        .unwrap()
        .into_inner();
    let inactive = report_activity.message().await.unwrap().expect("at once");
    assert!(!inactive.result, "forecast-only is never active");
    let state = Arc::clone(&server.state);
    tokio::task::spawn_blocking(move || state.delete_workload("report").unwrap())
        .await
        .unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match report_activity.message().await {
                // A plan published before the deletion sends its activity first.
                Ok(Some(activity)) => assert!(!activity.result, "forecast-only is never active"),
                other => return other,
            }
        }
    })
    .await
    .expect("the stream ends when its workload is deleted");
    assert!(matches!(ended, Ok(None)), "{ended:?}");

    // The scaler listener serves no prescale service, so no write: unimplemented, token or not.
    let mut admin = proto::plan_service_client::PlanServiceClient::new(scaler_channel.clone());
    let upsert = admin
        .delete_workload(proto::DeleteWorkloadRequest {
            name: "checkout".to_owned(),
        })
        .await
        .unwrap_err();
    assert_eq!(upsert.code(), Code::Unimplemented, "{upsert:?}");
    let mut ingest = proto::ingest_service_client::IngestServiceClient::new(scaler_channel);
    let write = ingest
        .write(proto::WriteRequest::default())
        .await
        .unwrap_err();
    assert_eq!(write.code(), Code::Unimplemented, "{write:?}");
    // ...while the main listener asks for its token.
    let mut main = proto::plan_service_client::PlanServiceClient::new(server.channel().await);
    let unauthenticated = main
        .get_plan(proto::GetPlanRequest {
            workload: "checkout".to_owned(),
        })
        .await
        .unwrap_err();
    assert_eq!(unauthenticated.code(), Code::Unauthenticated);

    let rendered = server.metrics.render();
    assert!(
        rendered.contains("/externalscaler.ExternalScaler/GetMetrics"),
        "scaler calls are counted like every call"
    );
    server.shutdown().await;
    // Shutdown ends both streams (after any message already on its way) with UNAVAILABLE, not
    // OK, which would read as a normal end: KEDA is to open them again.
    for status in [ending(&mut activity).await, ending(&mut specs).await] {
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        assert!(status.message().contains("shutting down"), "{status:?}");
    }
}

/// The status a server stream ends with, within 10 s; panics when it ends OK.
async fn ending<T>(stream: &mut tonic::Streaming<T>) -> tonic::Status {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), stream.message()).await {
            Ok(Ok(Some(_))) => {}
            Ok(Ok(None)) => panic!("the stream ended OK"),
            Ok(Err(status)) => return status,
            Err(_) => panic!("the stream did not end at shutdown"),
        }
    }
}

/// Python playing KEDA and its HPA, driven line by line (see `tests/python/keda_hpa.py`).
struct Keda {
    child: tokio::process::Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
}

impl Keda {
    async fn start(scaler: std::net::SocketAddr) -> Self {
        let python = tokio::task::spawn_blocking(venv_python).await.unwrap();
        let mut child = tokio::process::Command::new(python)
            .arg(manifest_dir().join("tests/python/keda_hpa.py"))
            .arg(scaler.to_string())
            .arg(manifest_dir().join("proto"))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("python starts");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut keda = Self {
            child,
            stdin,
            stdout,
        };
        assert_eq!(keda.read().await, "ready");
        keda
    }

    async fn read(&mut self) -> String {
        let line = tokio::time::timeout(Duration::from_secs(120), self.stdout.next_line())
            .await
            .expect("python answers within two minutes")
            .unwrap();
        match line {
            Some(line) => line,
            None => {
                let output = self.child.wait().await.unwrap();
                panic!("python exited ({output}); its stderr is above")
            }
        }
    }

    async fn command(&mut self, line: &str) -> String {
        self.stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .unwrap();
        self.stdin.flush().await.unwrap();
        self.read().await
    }

    /// One HPA sync of `scaled_object`: the replicas its HPA runs after it, and the error the
    /// metric call gave (`-` for none).
    async fn sync(&mut self, scaled_object: &str) -> (u32, String) {
        let answer = self.command(&format!("sync {scaled_object}")).await;
        let field = |key: &str| {
            answer
                .split_whitespace()
                .find_map(|word| word.strip_prefix(&format!("{key}=")).map(str::to_owned))
                .unwrap_or_else(|| panic!("no {key} in {answer:?}"))
        };
        (field("replicas").parse().unwrap(), field("error"))
    }
}

/// Whether an HPA with the default tolerance ignores a move from `current` to `desired`.
fn swallowed(current: u32, desired: u32) -> bool {
    (1.0 - f64::from(desired) / f64::from(current)).abs() <= HPA_TOLERANCE
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keda_and_its_hpa_run_the_planned_replicas_through_a_replayed_day() {
    let clock = ManualClock::default();
    // Needs one replica for its load, so its plan is its minimum, 54, all day.
    let steady = workload("steady", "forecast-and-scale", 1e9, 54);
    let server = serve(&clock, vec![steady]).await;
    let mut keda = Keda::start(server.scaler_address.expect("the scaler listens")).await;
    for init in [
        // The default HPA, and prescale compensating for its tolerance (the server's default).
        "init compensated checkout 1 0.1 -",
        // An HPA with `behavior.scaleUp.tolerance: 0`, told to the trigger.
        "init exact checkout 1 0 0",
        "init report report 7 0.1 -",
    ] {
        assert_eq!(keda.command(init).await, "ok");
    }
    let first = ready_plan(&server, "checkout", 0).await;
    let (start, end) = (first.plan.start(), first.plan.end());
    let (mut compensated_replicas, mut compensations, mut kept_above, mut steps) = (1, 0, 0, 0);
    let mut now = start;
    while now < end {
        clock.set(now);
        let plan = match server.state.plan("checkout").unwrap() {
            PlanState::Ready(plan) => plan,
            other => panic!("{other:?}"),
        };
        let wanted = planned(&plan, now);

        let (exact, error) = keda.sync("exact").await;
        assert_eq!(error, "-");
        assert_eq!(
            exact, wanted,
            "at {now}: the HPA without tolerance runs the plan"
        );

        let before = compensated_replicas;
        let (after, error) = keda.sync("compensated").await;
        assert_eq!(error, "-");
        assert!(
            after >= wanted,
            "at {now}: {before} -> {after}, never below the plan's {wanted}"
        );
        if wanted > before && swallowed(before, wanted) {
            // Rounded up to the smallest count the tolerance lets through.
            assert!(
                after > wanted && swallowed(before, after - 1),
                "at {now}: {before} -> {wanted} gave {after}"
            );
            compensations += 1;
        } else if wanted < before && swallowed(before, wanted) {
            assert_eq!(
                after, before,
                "at {now}: the HPA keeps a small scale-down's replicas"
            );
            kept_above += 1;
        } else {
            assert_eq!(after, wanted, "at {now}: {before} -> {wanted}");
        }
        compensated_replicas = after;

        let (report, error) = keda.sync("report").await;
        assert_eq!(
            (report, error.as_str()),
            (7, "FAILED_PRECONDITION"),
            "forecast-only never scales"
        );
        steps += 1;
        now = now.saturating_add_millis(STEP_MS);
    }
    assert!(steps >= 100, "a day of ten-minute steps: {steps}");
    assert!(
        compensations > 0,
        "the day's ramps hit the tolerance: {compensations}"
    );
    eprintln!(
        "{steps} steps, {compensations} scale-ups rounded past the tolerance, {kept_above} small scale-downs kept"
    );

    // The tolerance case, literally: the HPA runs 50 and the plan wants 54 (its minimum). The
    // executor's report says 50 run; prescale serves 55, which the HPA follows. A trigger told the
    // HPA has no tolerance (it has one here) serves the plain 54, which the HPA swallows.
    let mut main = proto::plan_service_client::PlanServiceClient::new(server.channel().await);
    let mut report = tonic::Request::new(proto::ReportAppliedRequest {
        workload: "steady".to_owned(),
        replicas: 50,
        time_ms: 0,
    });
    report
        .metadata_mut()
        .insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
    main.report_applied(report).await.unwrap();
    let steady = ready_plan(&server, "steady", 0).await;
    clock.set(steady.plan.start().saturating_add_millis(STEP_MS));
    assert_eq!(
        planned(&steady, steady.plan.start().saturating_add_millis(STEP_MS)),
        54
    );
    assert_eq!(keda.command("init fifty steady 50 0.1 -").await, "ok");
    assert_eq!(
        keda.sync("fifty").await,
        (55, "-".to_owned()),
        "50 -> 54 is served as 55"
    );
    assert_eq!(
        keda.command("init uncompensated steady 50 0.1 0").await,
        "ok"
    );
    assert_eq!(
        keda.sync("uncompensated").await,
        (50, "-".to_owned()),
        "54 alone is swallowed"
    );

    drop(keda);
    server.shutdown().await;
}
