//! `prescale bench-soak`: a long mixed load on a `prescale serve` process of its own, with the
//! server's resident memory and `GetPlan` latency reported every interval (a benchmark, never a
//! test; figures in `docs/BENCHMARKS.md`).
//!
//! It starts `prescale serve` (this binary) on a temporary data directory on 127.0.0.1, stores 28
//! days of `--workloads` 5-minute series, upserts a workload on each and waits for their plans; then,
//! for `--duration`, all at once:
//! - `Push`: streams of ten messages, one a second, each the next 5-minute sample of every series
//!   (so each workload is replanned every `planning.replan_after_samples` messages);
//! - `GetPlan` paced at `--rate` calls per second from eight connections, latency measured from when
//!   each call was due;
//! - `--watchers` `WatchPlans` streams on every workload, counting the plans they receive;
//! - an ensemble `Forecast` of a day every `--forecast-every`, round the series;
//! - one `Retrain` of every series at `--retrain-at`.
//!
//! Every `--report-every` it prints the server's `VmRSS` (from `/proc/PID/status`) and what the
//! interval served.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use parking_lot::Mutex;
use prescale::service::proto::{
    self, admin_service_client::AdminServiceClient, forecast_service_client::ForecastServiceClient,
    ingest_service_client::IngestServiceClient, plan_service_client::PlanServiceClient,
};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use crate::bench_grpc::{connect, daily_series, percentile};
use crate::output::outln;

const STEP_MS: i64 = 300_000;
/// 2026-01-01T00:00:00Z, as `daily_series` starts.
const START_MS: i64 = 1_767_225_600_000;
/// Connections `GetPlan` is spread over.
const GET_PLAN_CLIENTS: u32 = 8;

#[derive(Debug, Args)]
pub(crate) struct SoakArgs {
    /// How long the mixed load runs.
    #[arg(long, default_value = "30m")]
    duration: humantime::Duration,
    /// Workloads, each on a series of its own.
    #[arg(long, default_value_t = 20)]
    workloads: usize,
    /// `GetPlan` calls per second, all connections together.
    #[arg(long, default_value_t = 200)]
    rate: u32,
    /// `WatchPlans` streams open on every workload.
    #[arg(long, default_value_t = 4)]
    watchers: usize,
    /// Time between ensemble forecasts.
    #[arg(long, default_value = "2s")]
    forecast_every: humantime::Duration,
    /// When the one retrain of every series starts.
    #[arg(long, default_value = "10m")]
    retrain_at: humantime::Duration,
    /// Interval of the memory and latency report.
    #[arg(long, default_value = "1m")]
    report_every: humantime::Duration,
}

/// What the load tasks count; the reporter takes and resets it each interval.
#[derive(Debug, Default)]
struct Counts {
    /// `GetPlan` latencies of the interval.
    get_plan: Mutex<Vec<Duration>>,
    /// Failed calls of any kind.
    errors: AtomicU64,
    /// Samples of acknowledged `Push` streams.
    pushed: AtomicU64,
    /// Plans received by the watchers.
    watched: AtomicU64,
    /// Forecasts answered.
    forecasts: AtomicU64,
    /// Set while the retrain job runs.
    retraining: std::sync::atomic::AtomicBool,
}

/// Runs the soak: see the module documentation.
pub(crate) fn run(args: &SoakArgs) -> Result<()> {
    crate::runtime::multi_threaded()?.block_on(soak(args))
}

async fn soak(args: &SoakArgs) -> Result<()> {
    let directory = tempfile::tempdir()?;
    let (mut server, address) = start_server(directory.path())?;
    let pid = server.id();
    outln!("bench-soak: prescale serve pid {pid} on {address}")?;
    let channel = connect(&address).await?;
    let names = setup(&channel, args.workloads).await?;
    let counts = Arc::new(Counts::default());
    let stop = CancellationToken::new();
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(push(
        connect(&address).await?,
        names.clone(),
        Arc::clone(&counts),
        stop.clone(),
    ));
    for client in 0..GET_PLAN_CLIENTS {
        let interval = Duration::from_secs_f64(f64::from(GET_PLAN_CLIENTS) / f64::from(args.rate));
        tasks.spawn(get_plan(
            connect(&address).await?,
            names.clone(),
            interval,
            interval.mul_f64(f64::from(client) / f64::from(GET_PLAN_CLIENTS)),
            Arc::clone(&counts),
            stop.clone(),
        ));
    }
    for _ in 0..args.watchers {
        tasks.spawn(watch(
            connect(&address).await?,
            Arc::clone(&counts),
            stop.clone(),
        ));
    }
    tasks.spawn(forecast(
        channel.clone(),
        names.len(),
        args.forecast_every.into(),
        Arc::clone(&counts),
        stop.clone(),
    ));
    tasks.spawn(retrain(
        channel.clone(),
        args.retrain_at.into(),
        Arc::clone(&counts),
        stop.clone(),
    ));
    report(pid, args.duration.into(), args.report_every.into(), &counts).await?;
    stop.cancel();
    while let Some(result) = tasks.join_next().await {
        result?;
    }
    let terminated = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()?;
    if !terminated.success() || !server.wait()?.success() {
        bail!(
            "the server did not stop cleanly; its log:\n{}",
            std::fs::read_to_string(directory.path().join("serve.log")).unwrap_or_default()
        );
    }
    Ok(())
}

/// `prescale serve` on `data` and an ephemeral loopback port; its address as it printed it.
fn start_server(data: &std::path::Path) -> Result<(std::process::Child, String)> {
    use std::io::BufRead;
    let mut child = std::process::Command::new(std::env::current_exe()?)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "off",
        ])
        .arg("--data-dir")
        .arg(data)
        .env_remove("PRESCALE_CONFIG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(data.join("serve.log"))?)
        .spawn()
        .context("starting prescale serve")?;
    let stdout = child.stdout.take().context("no stdout")?;
    let mut lines = std::io::BufReader::new(stdout).lines();
    let line = lines.next().context("the server printed nothing")??;
    // The server prints again as it stops; its stdout stays read so that it can.
    std::thread::spawn(move || lines.for_each(drop));
    let address = line
        .strip_prefix("prescale serving gRPC on ")
        .and_then(|rest| rest.split(' ').next())
        .with_context(|| format!("unexpected first line {line:?}"))?
        .to_owned();
    Ok((child, address))
}

fn series(index: usize) -> proto::SeriesRef {
    proto::SeriesRef {
        name: "soak_load".to_owned(),
        labels: [("workload".to_owned(), index.to_string())].into(),
    }
}

/// Stores 28 days of each workload's series, upserts the workloads and waits for every first plan.
async fn setup(channel: &Channel, workloads: usize) -> Result<Vec<String>> {
    let started = Instant::now();
    let mut ingest = IngestServiceClient::new(channel.clone());
    for index in 0..workloads {
        ingest
            .write(proto::WriteRequest {
                series: vec![daily_series(Some(series(index)), index)],
            })
            .await?;
    }
    let mut plans = PlanServiceClient::new(channel.clone());
    let names: Vec<String> = (0..workloads)
        .map(|index| format!("soak-{index}"))
        .collect();
    for (index, name) in names.iter().enumerate() {
        plans
            .upsert_workload(proto::UpsertWorkloadRequest {
                workload: Some(proto::Workload {
                    name: name.clone(),
                    series: Some(series(index)),
                    capacity_per_replica: 50.0,
                    max_replicas: 200,
                    warm_up: "10m".to_owned(),
                    ..Default::default()
                }),
            })
            .await?;
    }
    for name in &names {
        loop {
            match plans
                .get_plan(proto::GetPlanRequest {
                    workload: name.clone(),
                })
                .await
            {
                Ok(_) => break,
                Err(status) if status.code() == tonic::Code::Unavailable => {
                    if started.elapsed() > Duration::from_secs(600) {
                        bail!("no plan for {name} after ten minutes");
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(status) => return Err(status.into()),
            }
        }
    }
    outln!(
        "setup: {workloads} workloads on 28 days of 5-minute history, planned after {:.1} s",
        started.elapsed().as_secs_f64()
    )?;
    Ok(names)
}

/// `Push` streams of ten messages, one a second, each the next step of every series.
async fn push(channel: Channel, names: Vec<String>, counts: Arc<Counts>, stop: CancellationToken) {
    let mut ingest = IngestServiceClient::new(channel);
    let mut step: i64 = 28 * 288;
    while !stop.is_cancelled() {
        let first = step;
        step += 10;
        let messages = (first..first + 10).map(|step| {
            let time = START_MS + step * STEP_MS;
            proto::WriteRequest {
                series: (0..names.len())
                    .map(|index| proto::SeriesSamples {
                        series: Some(series(index)),
                        timestamps_ms: vec![time],
                        values: vec![
                            daily_series(None, index).values[(step % (28 * 288)) as usize],
                        ],
                    })
                    .collect(),
            }
        });
        let paced = tokio_stream::StreamExt::throttle(
            tokio_stream::iter(messages.collect::<Vec<_>>()),
            Duration::from_secs(1),
        );
        match ingest.push(paced).await {
            Ok(reply) => {
                counts
                    .pushed
                    .fetch_add(reply.into_inner().accepted, Ordering::Relaxed);
            }
            Err(_) => {
                counts.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// `GetPlan` every `interval` from `offset`, round the workloads, latency from when each was due.
async fn get_plan(
    channel: Channel,
    names: Vec<String>,
    interval: Duration,
    offset: Duration,
    counts: Arc<Counts>,
    stop: CancellationToken,
) {
    let mut plans = PlanServiceClient::new(channel);
    let mut due = Instant::now() + offset;
    let mut next = 0;
    while !stop.is_cancelled() {
        tokio::time::sleep_until(due.into()).await;
        let workload = names[next % names.len()].clone();
        next += 1;
        match plans.get_plan(proto::GetPlanRequest { workload }).await {
            Ok(_) => counts.get_plan.lock().push(due.elapsed()),
            Err(_) => {
                counts.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        due += interval;
    }
}

/// One `WatchPlans` on every workload, counting the plans it receives.
async fn watch(channel: Channel, counts: Arc<Counts>, stop: CancellationToken) {
    let mut plans = PlanServiceClient::new(channel);
    let Ok(stream) = plans.watch_plans(proto::WatchPlansRequest::default()).await else {
        counts.errors.fetch_add(1, Ordering::Relaxed);
        return;
    };
    let mut stream = stream.into_inner();
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            message = stream.message() => match message {
                Ok(Some(_)) => {
                    counts.watched.fetch_add(1, Ordering::Relaxed);
                }
                _ => {
                    counts.errors.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            },
        }
    }
}

/// An ensemble forecast of a day every `every`, round the series.
async fn forecast(
    channel: Channel,
    series_count: usize,
    every: Duration,
    counts: Arc<Counts>,
    stop: CancellationToken,
) {
    let mut forecasts = ForecastServiceClient::new(channel);
    let mut next = 0;
    while !stop.is_cancelled() {
        let request = proto::ForecastRequest {
            series: Some(series(next % series_count)),
            horizon: "1d".to_owned(),
            ..Default::default()
        };
        next += 1;
        match forecasts.forecast(request).await {
            Ok(_) => counts.forecasts.fetch_add(1, Ordering::Relaxed),
            Err(_) => counts.errors.fetch_add(1, Ordering::Relaxed),
        };
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
    }
}

/// One retrain of every series at `at`, followed until it finishes.
async fn retrain(channel: Channel, at: Duration, counts: Arc<Counts>, stop: CancellationToken) {
    tokio::select! {
        () = stop.cancelled() => return,
        () = tokio::time::sleep(at) => {}
    }
    let mut admin = AdminServiceClient::new(channel);
    let started = Instant::now();
    let Ok(job) = admin
        .retrain(proto::RetrainRequest {
            all: true,
            ..Default::default()
        })
        .await
    else {
        counts.errors.fetch_add(1, Ordering::Relaxed);
        return;
    };
    let id = job.into_inner().id;
    counts.retraining.store(true, Ordering::Relaxed);
    while !stop.is_cancelled() {
        tokio::time::sleep(Duration::from_secs(1)).await;
        match admin.get_job(proto::GetJobRequest { id: id.clone() }).await {
            Ok(job) if job.get_ref().finished_at_ms != 0 => {
                let job = job.into_inner();
                // A closed standard output ends the command through the report loop.
                let _ = outln!(
                    "retrain: {} series ({} failed) in {:.1} s",
                    job.total,
                    job.failed,
                    started.elapsed().as_secs_f64()
                );
                break;
            }
            Ok(_) => {}
            Err(_) => {
                counts.errors.fetch_add(1, Ordering::Relaxed);
                break;
            }
        }
    }
    counts.retraining.store(false, Ordering::Relaxed);
}

/// The server's resident memory in MiB, from `/proc/PID/status`.
fn rss_mib(pid: u32) -> Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: f64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .context("no VmRSS")?
        .parse()?;
    Ok(kib / 1024.0)
}

/// Prints one row per `every` until `duration` is over, then the run's summary.
async fn report(pid: u32, duration: Duration, every: Duration, counts: &Counts) -> Result<()> {
    outln!(
        "| minute | RSS MiB | GetPlan calls | p50 ms | p99 ms | max ms | pushed | plans watched | forecasts | errors | retrain |"
    )?;
    outln!("|---|---|---|---|---|---|---|---|---|---|---|")?;
    let started = Instant::now();
    let mut rows = Vec::new();
    let mut next = started + every;
    while next <= started + duration {
        tokio::time::sleep_until(next.into()).await;
        next += every;
        let mut latencies = std::mem::take(&mut *counts.get_plan.lock());
        latencies.sort();
        let ms = |latency: Duration| latency.as_secs_f64() * 1000.0;
        let rss = rss_mib(pid)?;
        let p99 = ms(percentile(&latencies, 0.99));
        outln!(
            "| {:.1} | {rss:.0} | {} | {:.2} | {p99:.2} | {:.1} | {} | {} | {} | {} | {} |",
            started.elapsed().as_secs_f64() / 60.0,
            latencies.len(),
            ms(percentile(&latencies, 0.50)),
            ms(latencies.last().copied().unwrap_or_default()),
            counts.pushed.swap(0, Ordering::Relaxed),
            counts.watched.swap(0, Ordering::Relaxed),
            counts.forecasts.swap(0, Ordering::Relaxed),
            counts.errors.swap(0, Ordering::Relaxed),
            if counts.retraining.load(Ordering::Relaxed) {
                "running"
            } else {
                ""
            },
        )?;
        rows.push((rss, p99));
    }
    let warm = rows.len() / 6;
    if let (Some(first), Some(last)) = (rows.get(warm), rows.last()) {
        let p99s = rows[warm..].iter().map(|row| row.1);
        outln!(
            "after warm-up (row {}): RSS {:.0} -> {:.0} MiB (max {:.0}); GetPlan p99 {:.2}..{:.2} ms",
            warm + 1,
            first.0,
            last.0,
            rows[warm..].iter().map(|row| row.0).fold(0.0, f64::max),
            p99s.clone().fold(f64::INFINITY, f64::min),
            p99s.fold(0.0, f64::max),
        )?;
    }
    Ok(())
}
