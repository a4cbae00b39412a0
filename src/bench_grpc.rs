//! `prescale bench-grpc`: a load test of the gRPC API on loopback.
//!
//! Against a server given with `--address` (e.g. a `prescale serve` in another process) or, by
//! default, one started in-process over a temporary store. It stores 28 days of a 5-minute series,
//! upserts a workload and waits for its plan, then measures:
//! - `GetPlan` from `--clients` concurrent clients, each on its own connection, for `--duration`:
//!   first as fast as they can (throughput, and latency under saturation), then paced at `--rate`
//!   calls per second in all (latency at that load, measured from when each call was due, so a
//!   stalled server cannot hide its backlog);
//! - with `--retrain-series N`, `GetPlan` paced at `--rate` again while the server retrains N more
//!   series of 28 days (`AdminService.Retrain`), to compare its latency with the idle paced phase;
//! - `Push` from `--push-clients` client streams of `--batch`-sample messages: samples per second.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::output::outln;
use anyhow::{Context, Result, bail};
use clap::Args;
use prescale::app::telemetry::Telemetry;
use prescale::app::{History, ServingState};
use prescale::config::Config;
use prescale::service::proto::{
    self, admin_service_client::AdminServiceClient, ingest_service_client::IngestServiceClient,
    plan_service_client::PlanServiceClient,
};
use prescale::service::{self, LocalServer, ServerOptions};
use prescale::store::PolarsStore;
use tonic::transport::{Channel, Endpoint};

const STEP_MS: i64 = 300_000;
const DAY_MS: i64 = 86_400_000;
/// 2026-01-01T00:00:00Z.
const START_MS: i64 = 1_767_225_600_000;

#[derive(Debug, Args)]
pub(crate) struct BenchArgs {
    /// Server to load (host:port); default: an in-process server on 127.0.0.1:0.
    #[arg(long)]
    address: Option<String>,
    /// Concurrent GetPlan clients, one connection each.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// GetPlan calls per second for the paced phase (all clients together; 0 skips it).
    #[arg(long, default_value_t = 5000)]
    rate: u32,
    /// How long each phase runs.
    #[arg(long, default_value = "10s")]
    duration: humantime::Duration,
    /// Concurrent Push streams.
    #[arg(long, default_value_t = 4)]
    push_clients: usize,
    /// Samples per pushed message.
    #[arg(long, default_value_t = 10_000)]
    batch: usize,
    /// Series each Push stream spreads its samples over.
    #[arg(long, default_value_t = 100)]
    series_per_client: usize,
    /// Series of 28 days to retrain during a second paced GetPlan phase (0 skips it).
    #[arg(long, default_value_t = 0)]
    retrain_series: usize,
}

/// Runs the load test: see the module documentation.
pub(crate) fn run(config: &Config, args: &BenchArgs) -> Result<()> {
    crate::runtime::multi_threaded()?.block_on(bench(config, args))
}

async fn bench(config: &Config, args: &BenchArgs) -> Result<()> {
    let target = Target::start(config, args).await?;
    outln!(
        "bench-grpc against {} ({})",
        target.address,
        if target.local.is_some() {
            "in-process server"
        } else {
            "external server"
        }
    )?;
    let channel = connect(&target.address).await?;
    let name = format!("bench-{}", std::process::id());
    let retrained = store_history(&channel, &name, args.retrain_series).await?;
    wait_for_first_plan(&channel, &name).await?;
    get_plan_phases(&target.address, &channel, &name, args, retrained).await?;
    push_phase(&target.address, &name, args).await?;
    target.stop().await
}

/// The server under load: one given with `--address`, or one in-process over a temporary store.
struct Target {
    /// `host:port` the clients connect to.
    address: String,
    /// The in-process server and its store's directory, removed when the test ends.
    local: Option<(tempfile::TempDir, LocalServer)>,
}

impl Target {
    async fn start(config: &Config, args: &BenchArgs) -> Result<Self> {
        if let Some(address) = &args.address {
            return Ok(Self {
                address: address.clone(),
                local: None,
            });
        }
        let directory = tempfile::tempdir()?;
        let mut store_options = config.store_options();
        store_options.fsync = false;
        let store = Arc::new(PolarsStore::open(directory.path(), store_options)?);
        let state = ServingState::open(
            History::new(store),
            directory.path(),
            config.temporary_server_settings(),
            Arc::new(Telemetry::default()),
        )?;
        let options = ServerOptions {
            max_streams: args.clients + args.push_clients + 16,
            ..ServerOptions::default()
        };
        let server = service::spawn_local(state, options).await?;
        Ok(Self {
            address: server.addr.to_string(),
            local: Some((directory, server)),
        })
    }

    /// Stops the in-process server, if any, and removes its store.
    async fn stop(self) -> Result<()> {
        if let Some((directory, server)) = self.local {
            server.shutdown().await??;
            drop(directory);
        }
        Ok(())
    }
}

/// A new connection to `address`, with Nagle's algorithm off.
pub(crate) async fn connect(address: &str) -> Result<Channel> {
    Endpoint::from_shared(format!("http://{address}"))?
        .tcp_nodelay(true)
        .connect()
        .await
        .context("connecting")
}

/// Stores 28 days of the series the plans are made from and of the `retrain_series` series the
/// retrain phase retrains; returns the latter.
async fn store_history(
    channel: &Channel,
    name: &str,
    retrain_series: usize,
) -> Result<Vec<proto::SeriesRef>> {
    IngestServiceClient::new(channel.clone())
        .write(proto::WriteRequest {
            series: vec![daily_series(Some(planned_series(name)), 0)],
        })
        .await?;
    let retrained: Vec<proto::SeriesRef> = (0..retrain_series)
        .map(|index| proto::SeriesRef {
            name: format!("bench_retrain_{index}"),
            labels: [("run".to_owned(), name.to_owned())].into(),
        })
        .collect();
    for chunk in retrained.chunks(16) {
        IngestServiceClient::new(channel.clone())
            .write(proto::WriteRequest {
                series: chunk
                    .iter()
                    .enumerate()
                    .map(|(index, series)| daily_series(Some(series.clone()), index))
                    .collect(),
            })
            .await?;
    }
    Ok(retrained)
}

/// The series the benchmark's workload is planned from.
fn planned_series(name: &str) -> proto::SeriesRef {
    proto::SeriesRef {
        name: "bench_load".to_owned(),
        labels: [("run".to_owned(), name.to_owned())].into(),
    }
}

/// Upserts the workload `name` and polls `GetPlan` until its first plan is ready.
async fn wait_for_first_plan(channel: &Channel, name: &str) -> Result<()> {
    let mut plans = PlanServiceClient::new(channel.clone());
    plans
        .upsert_workload(proto::UpsertWorkloadRequest {
            workload: Some(proto::Workload {
                name: name.to_owned(),
                series: Some(planned_series(name)),
                capacity_per_replica: 50.0,
                max_replicas: 200,
                warm_up: "10m".to_owned(),
                ..Default::default()
            }),
        })
        .await?;
    let waited = Instant::now();
    let plan = loop {
        match plans
            .get_plan(proto::GetPlanRequest {
                workload: name.to_owned(),
            })
            .await
        {
            Ok(plan) => break plan.into_inner(),
            Err(status) if status.code() == tonic::Code::Unavailable => {
                if waited.elapsed() > Duration::from_secs(120) {
                    bail!("no plan after two minutes");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(status) => return Err(status.into()),
        }
    };
    outln!(
        "setup: 8064 samples stored, first plan ({} steps, {} bytes encoded) after {:.2} s",
        plan.steps.as_ref().map_or(0, |steps| steps.at_ms.len()),
        prost::Message::encoded_len(&plan),
        waited.elapsed().as_secs_f64()
    )?;
    Ok(())
}

/// GetPlan from `--clients` concurrent clients: saturated, then paced at `--rate`, then paced
/// during a retrain of `retrained` (when there are any).
async fn get_plan_phases(
    address: &str,
    channel: &Channel,
    name: &str,
    args: &BenchArgs,
    retrained: Vec<proto::SeriesRef>,
) -> Result<()> {
    let duration: Duration = args.duration.into();
    let mut channels = Vec::with_capacity(args.clients);
    for _ in 0..args.clients {
        channels.push(connect(address).await?);
    }
    let (calls, elapsed, latencies) = get_plan_phase(&channels, name, duration, None).await?;
    report(
        "GetPlan, saturated",
        args.clients,
        calls,
        elapsed,
        &latencies,
    )?;
    if args.rate == 0 {
        return Ok(());
    }
    let (calls, elapsed, latencies) =
        get_plan_phase(&channels, name, duration, Some(args.rate)).await?;
    report(
        &format!("GetPlan, paced at {} calls/s", args.rate),
        args.clients,
        calls,
        elapsed,
        &latencies,
    )?;
    if !retrained.is_empty() {
        let idle_p99 = percentile(&latencies, 0.99);
        retrain_phase(
            channel, &channels, name, duration, args.rate, retrained, idle_p99,
        )
        .await?;
    }
    Ok(())
}

/// Push from `--push-clients` concurrent streams; each message spreads `--batch` samples over its
/// series.
async fn push_phase(address: &str, name: &str, args: &BenchArgs) -> Result<()> {
    let duration: Duration = args.duration.into();
    let deadline = Instant::now() + duration;
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for client in 0..args.push_clients {
        let channel = connect(address).await?;
        let (batch, per_client) = (args.batch, args.series_per_client.max(1));
        let run = name.to_owned();
        tasks.spawn(async move {
            let messages = async_messages(client, batch, per_client, run, deadline);
            let reply = IngestServiceClient::new(channel).push(messages).await?;
            Ok::<_, tonic::Status>(reply.into_inner().accepted)
        });
    }
    let mut accepted = 0;
    while let Some(result) = tasks.join_next().await {
        accepted += result??;
    }
    let elapsed = started.elapsed().as_secs_f64();
    outln!(
        "Push: {} streams of {}-sample messages, {accepted} samples in {elapsed:.1} s = {:.0} samples/s",
        args.push_clients,
        args.batch,
        accepted as f64 / elapsed
    )?;
    Ok(())
}

/// 28 days of a 5-minute daily cycle with a little deterministic noise, shifted by `offset` hours.
pub(crate) fn daily_series(
    series: Option<proto::SeriesRef>,
    offset: usize,
) -> proto::SeriesSamples {
    let (timestamps_ms, values) = (0..28 * 288)
        .map(|index: i64| {
            let time = START_MS + index * STEP_MS;
            let shifted = time + (offset as i64 % 24) * 3_600_000;
            let phase = (shifted % DAY_MS) as f64 / DAY_MS as f64 * std::f64::consts::TAU;
            (
                time,
                1000.0 + 600.0 * phase.sin() + ((index * 7919) % 31) as f64,
            )
        })
        .unzip();
    proto::SeriesSamples {
        series,
        timestamps_ms,
        values,
    }
}

/// Starts retraining `retrained` and runs a paced GetPlan phase meanwhile; reports its latency
/// against the idle paced phase's p99, and how much of the phase the retrain covered.
async fn retrain_phase(
    channel: &Channel,
    channels: &[Channel],
    name: &str,
    duration: Duration,
    rate: u32,
    retrained: Vec<proto::SeriesRef>,
    idle_p99: Duration,
) -> Result<()> {
    let mut admin = AdminServiceClient::new(channel.clone());
    let total = retrained.len();
    let job = admin
        .retrain(proto::RetrainRequest {
            series: retrained,
            all: false,
        })
        .await?
        .into_inner();
    let started = Instant::now();
    let (calls, elapsed, latencies) = get_plan_phase(channels, name, duration, Some(rate)).await?;
    let progress = admin
        .get_job(proto::GetJobRequest { id: job.id.clone() })
        .await?
        .into_inner();
    report(
        &format!("GetPlan, paced at {rate} calls/s during a retrain"),
        channels.len(),
        calls,
        elapsed,
        &latencies,
    )?;
    let p99 = percentile(&latencies, 0.99);
    let coverage = if progress.finished_at_ms == 0 {
        "still running when the phase ended: it covered the whole phase".to_owned()
    } else {
        format!(
            "finished {:.1} s after the phase started (the phase ran {elapsed:.1} s)",
            (progress.finished_at_ms - job.started_at_ms) as f64 / 1000.0
        )
    };
    outln!(
        "retrain job {}: {}/{total} series done, {} failed, {coverage}; GetPlan p99 {:.3} ms vs {:.3} ms idle = {:.2}x",
        job.id,
        progress.done,
        progress.failed,
        p99.as_secs_f64() * 1e3,
        idle_p99.as_secs_f64() * 1e3,
        p99.as_secs_f64() / idle_p99.as_secs_f64().max(1e-9),
    )?;
    // Let the job finish so the next phase runs on an idle server.
    loop {
        let progress = admin
            .get_job(proto::GetJobRequest { id: job.id.clone() })
            .await?
            .into_inner();
        if progress.finished_at_ms != 0 {
            outln!(
                "retrain job {} finished: {}/{total} series in {:.1} s",
                job.id,
                progress.done,
                started.elapsed().as_secs_f64()
            )?;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

/// Runs GetPlan from one task per channel for `duration`, back to back or paced at `rate` calls/s
/// in all; returns the calls made, the wall time and the sorted latencies.
async fn get_plan_phase(
    channels: &[Channel],
    name: &str,
    duration: Duration,
    rate: Option<u32>,
) -> Result<(usize, f64, Vec<Duration>)> {
    let started = Instant::now();
    let deadline = started + duration;
    let interval =
        rate.map(|rate| Duration::from_secs_f64(channels.len() as f64 / f64::from(rate)));
    let count = channels.len() as f64;
    let mut tasks = tokio::task::JoinSet::new();
    for (index, channel) in channels.iter().enumerate() {
        let name = name.to_owned();
        let mut client = PlanServiceClient::new(channel.clone());
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            // Paced clients start spread over one interval so calls do not arrive in bursts.
            let mut next_due =
                interval.map(|interval| started + interval.mul_f64(index as f64 / count));
            loop {
                let sent = match (next_due, interval) {
                    (Some(due), Some(interval)) => {
                        if due >= deadline {
                            break;
                        }
                        tokio::time::sleep_until(due.into()).await;
                        next_due = Some(due + interval);
                        due
                    }
                    _ => {
                        let now = Instant::now();
                        if now >= deadline {
                            break;
                        }
                        now
                    }
                };
                client
                    .get_plan(proto::GetPlanRequest {
                        workload: name.clone(),
                    })
                    .await?;
                latencies.push(sent.elapsed());
            }
            Ok::<_, tonic::Status>(latencies)
        });
    }
    let mut latencies = Vec::new();
    while let Some(result) = tasks.join_next().await {
        latencies.extend(result??);
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort();
    Ok((latencies.len(), elapsed, latencies))
}

fn report(
    phase: &str,
    clients: usize,
    calls: usize,
    elapsed: f64,
    latencies: &[Duration],
) -> Result<()> {
    if latencies.is_empty() {
        outln!("{phase}: no calls completed")?;
        return Ok(());
    }
    let percentile = |p: f64| percentile(latencies, p).as_secs_f64() * 1000.0;
    outln!(
        "{phase}: {clients} clients, {calls} calls in {elapsed:.1} s = {:.0} calls/s; latency p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
        calls as f64 / elapsed,
        percentile(0.50),
        percentile(0.90),
        percentile(0.99),
        latencies
            .last()
            .map_or(0.0, |max| max.as_secs_f64() * 1000.0),
    )?;
    Ok(())
}

/// The `p` quantile of sorted `latencies` (nearest rank); zero when there are none.
pub(crate) fn percentile(latencies: &[Duration], p: f64) -> Duration {
    if latencies.is_empty() {
        return Duration::ZERO;
    }
    let index = ((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1;
    latencies[index]
}

/// Messages of `batch` samples over `series` series of one client, generated until `deadline`.
fn async_messages(
    client: usize,
    batch: usize,
    series: usize,
    run: String,
    deadline: Instant,
) -> impl tokio_stream::Stream<Item = proto::WriteRequest> + Send + 'static {
    let per_series = (batch / series).max(1);
    let mut round: i64 = 0;
    let refs: Vec<proto::SeriesRef> = (0..series)
        .map(|index| proto::SeriesRef {
            name: "bench_push".to_owned(),
            labels: [
                ("run".to_owned(), run.clone()),
                ("client".to_owned(), client.to_string()),
                ("series".to_owned(), index.to_string()),
            ]
            .into(),
        })
        .collect();
    tokio_stream::iter(std::iter::from_fn(move || {
        if Instant::now() >= deadline {
            return None;
        }
        let first = round * per_series as i64;
        round += 1;
        Some(proto::WriteRequest {
            series: refs
                .iter()
                .map(|series| proto::SeriesSamples {
                    series: Some(series.clone()),
                    timestamps_ms: (first..first + per_series as i64)
                        .map(|index| START_MS + index * 15_000)
                        .collect(),
                    values: (first..first + per_series as i64)
                        .map(|index| (index % 1000) as f64)
                        .collect(),
                })
                .collect(),
        })
    }))
}
