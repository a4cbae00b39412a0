//! The fleet benchmark: release `prescale serve` replicas of one fleet on 127.0.0.1, with a real
//! etcd (`/usr/bin/etcd`) and, for serving, a real Prometheus (`/usr/bin/prometheus`) as history.
//! One timed pass per figure (not criterion: each figure needs processes started and killed).
//!
//! - `serving`: three replicas plan `--workloads` workloads (30) pulled from Prometheus. `GetPlan`
//!   one call at a time from one client, `--calls` (20,000) each way in alternating blocks: direct
//!   to the owner, and through a non-owner that forwards to it (the goal: non-owner p99 at most
//!   twice the direct p99); the replicas' CPU per call each way. Then `--kills` (5) times `kill -9`
//!   of a replica (each in turn) and the time until every workload it owned answers `GetPlan`
//!   through both survivors, with the membership lease `--lease` (3s); the killed replica restarts
//!   on its data directory before the next kill.
//! - `retrain`: `--series` (3,000) series of 28 days at 5 minutes, stored on their owners, retrained
//!   by one replica, then by three (each retrains what it stores, all at once) on the same
//!   machine, so with the same CPU: the figure shows correctness (every series gets one live model,
//!   on its owner) and the fleet's overhead, not a speed-up. `--fits` (2) fit threads per replica.
//!
//! Run: `cargo bench --bench fleet -- [serving] [retrain] [--calls N] [--workloads N] [--kills N]
//! [--lease 3s] [--series N] [--fits N]` (both phases when none is named). Prints the tables of
//! docs/BENCHMARKS.md, "Fleet". Skips with a message when etcd or Prometheus is not installed.

#[path = "../../tests/etcd_support/mod.rs"]
mod etcd_support;
#[path = "../../tests/fleet_support/mod.rs"]
mod fleet_support;
#[path = "../../tests/prometheus_support/mod.rs"]
mod prometheus_support;
mod replica;
mod retrain;
mod serving;

use std::time::Duration;

use replica::FleetSettings;

/// Latencies of one kind of call.
#[derive(Debug)]
pub(crate) struct Summary {
    calls: usize,
    p50: Duration,
    p90: Duration,
    p99: Duration,
    max: Duration,
}

/// Sorts `latencies` and summarises them.
pub(crate) fn summary(latencies: &mut [Duration]) -> Summary {
    latencies.sort_unstable();
    let at = |quantile: f64| {
        let index = ((latencies.len() as f64 * quantile).ceil() as usize).saturating_sub(1);
        latencies[index.min(latencies.len() - 1)]
    };
    Summary {
        calls: latencies.len(),
        p50: at(0.50),
        p90: at(0.90),
        p99: at(0.99),
        max: at(1.0),
    }
}

fn millis(duration: Duration) -> String {
    format!("{:.3}", duration.as_secs_f64() * 1000.0)
}

/// The command line after cargo's own `--bench`.
#[derive(Debug)]
struct Options {
    serving: bool,
    retrain: bool,
    calls: usize,
    workloads: usize,
    kills: usize,
    lease: String,
    series: usize,
    fits: usize,
}

fn options() -> Options {
    let mut options = Options {
        serving: false,
        retrain: false,
        calls: 20_000,
        workloads: 30,
        kills: 5,
        lease: "3s".to_owned(),
        series: 3_000,
        fits: 2,
    };
    let mut args = std::env::args().skip(1).filter(|arg| arg != "--bench");
    while let Some(arg) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| panic!("{arg} needs a value"));
        let number = |text: String| -> usize {
            text.parse()
                .unwrap_or_else(|_| panic!("{text:?} is not a number"))
        };
        match arg.as_str() {
            "serving" => options.serving = true,
            "retrain" => options.retrain = true,
            "--calls" => options.calls = number(value()),
            "--workloads" => options.workloads = number(value()),
            "--kills" => options.kills = number(value()),
            "--lease" => options.lease = value(),
            "--series" => options.series = number(value()),
            "--fits" => options.fits = number(value()),
            other => panic!("unknown argument {other:?}"),
        }
    }
    if !options.serving && !options.retrain {
        options.serving = true;
        options.retrain = true;
    }
    options
}

fn main() {
    let options = options();
    if etcd_support::missing() || prometheus_support::missing() {
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    println!(
        "fleet benchmark: {options:?}; load average before: {}",
        load_average()
    );
    if options.serving {
        let etcd = etcd_support::LocalEtcd::start();
        let settings = FleetSettings {
            etcd: etcd.url.clone(),
            lease_ttl: options.lease.clone(),
            fits: options.fits,
        };
        runtime.block_on(serving_phase(&settings, &options));
    }
    if options.retrain {
        for replicas in [1, 3] {
            // A fresh etcd per run, so no member of the previous run is in the view.
            let etcd = etcd_support::LocalEtcd::start();
            let settings = FleetSettings {
                etcd: etcd.url.clone(),
                lease_ttl: options.lease.clone(),
                fits: options.fits,
            };
            let run = runtime.block_on(retrain::run(&settings, replicas, options.series));
            print_retrain(&run, options.series);
        }
    }
    println!("load average after: {}", load_average());
}

async fn serving_phase(settings: &FleetSettings, options: &Options) {
    let mut fleet = serving::ServingFleet::start(settings, options.workloads).await;
    println!("workloads per replica: {:?}", fleet.spread().await);
    let measured = fleet.forwarding(options.calls).await;
    println!("| path | calls | p50 ms | p90 ms | p99 ms | max ms | replicas' CPU per call |");
    println!("|---|---|---|---|---|---|---|");
    for (path, summary, cpu) in [
        (
            "direct to the owner",
            &measured.direct,
            measured.cpu_per_call[0],
        ),
        (
            "through a non-owner",
            &measured.forwarded,
            measured.cpu_per_call[1],
        ),
    ] {
        println!(
            "| {path} | {} | {} | {} | {} | {} | {:.0} µs |",
            summary.calls,
            millis(summary.p50),
            millis(summary.p90),
            millis(summary.p99),
            millis(summary.max),
            cpu * 1e6
        );
    }
    println!(
        "p99 ratio (non-owner / direct): {:.2}; p50 ratio {:.2}",
        measured.forwarded.p99.as_secs_f64() / measured.direct.p99.as_secs_f64(),
        measured.forwarded.p50.as_secs_f64() / measured.direct.p50.as_secs_f64()
    );
    let mut kills = fleet.reownership(options.kills).await;
    kills.sort_by_key(|kill| kill.elapsed);
    let seconds: Vec<String> = kills
        .iter()
        .map(|kill| format!("{:.2} ({})", kill.elapsed.as_secs_f64(), kill.workloads))
        .collect();
    if let (Some(median), Some(max)) = (kills.get(kills.len() / 2), kills.last()) {
        println!(
            "re-ownership after kill -9, lease {}: median {:.2} s, max {:.2} s over {} kills; sorted s (workloads): {}",
            settings.lease_ttl,
            median.elapsed.as_secs_f64(),
            max.elapsed.as_secs_f64(),
            kills.len(),
            seconds.join(", ")
        );
    }
}

fn print_retrain(run: &retrain::RetrainRun, series: usize) {
    let mib = |values: &[f64]| {
        values
            .iter()
            .map(|value| format!("{value:.0}"))
            .collect::<Vec<_>>()
            .join(" + ")
    };
    println!(
        "retrain, {} replica(s): series per replica {:?}; wall {:.1} s ({:.1} series/s); replicas' CPU {:.1} s ({:.1} ms per series); failed {}; live models {}/{series}; model store {} bytes ({:.0} per series); RSS MiB stored {} -> trained {}",
        run.replicas,
        run.per_replica,
        run.wall.as_secs_f64(),
        series as f64 / run.wall.as_secs_f64(),
        run.cpu_seconds,
        run.cpu_seconds * 1000.0 / series as f64,
        run.failed,
        run.with_model,
        run.model_bytes,
        run.model_bytes as f64 / series as f64,
        mib(&run.rss_stored_mib),
        mib(&run.rss_trained_mib),
    );
}

/// `/proc/loadavg`'s three averages, for the record of what else ran.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}
