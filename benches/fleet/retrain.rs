//! Retraining a fleet's series: `series` synthetic 5-minute series of 28 days, each stored on its
//! owner (as routed pushes leave them), then one `Retrain` of every stored series started on every
//! replica at once; the wall time until every job ended, the replicas' CPU time, and a check that
//! every series got a live model, in its owner's registry only.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::time::{Duration, Instant};

use prescale::domain::SeriesId;
use prescale::fleet::etcd::Etcd;
use prescale::registry::Registry;
use prescale::service::proto::{
    self, JobState, admin_service_client::AdminServiceClient,
    ingest_service_client::IngestServiceClient,
};
use tonic::transport::Channel;

use crate::fleet_support::Replica;
use crate::fleet_support::fleet_view;
use crate::replica::{self, FleetSettings, cpu_seconds, rss_mib};

/// 28 days of 5-minute points.
const POINTS: usize = 28 * 288;
const STEP_MS: i64 = 300_000;
/// The metric name of every series; label `i` tells them apart.
const SERIES_NAME: &str = "bench_fleet_load";
/// Series per Write request.
const PER_WRITE: usize = 20;

/// What one retrain run measured.
#[derive(Debug)]
pub(crate) struct RetrainRun {
    /// Replicas in the fleet.
    pub(crate) replicas: usize,
    /// Series each replica stored (and so retrained).
    pub(crate) per_replica: Vec<usize>,
    /// From the first Retrain call until every job ended.
    pub(crate) wall: Duration,
    /// CPU seconds of all replicas together over the retrain.
    pub(crate) cpu_seconds: f64,
    /// Resident memory of each replica after storing, before the retrain (MiB).
    pub(crate) rss_stored_mib: Vec<f64>,
    /// Resident memory of each replica after the retrain (MiB).
    pub(crate) rss_trained_mib: Vec<f64>,
    /// Series the jobs reported failed.
    pub(crate) failed: u32,
    /// Series with a live model, over all registries.
    pub(crate) with_model: usize,
    /// Bytes of model files and manifests, over all registries.
    pub(crate) model_bytes: u64,
}

/// Series `index`'s samples: a daily cycle with its own level, amplitude and phase, lower
/// weekends, a slight trend and deterministic noise.
fn samples(index: usize, end_ms: i64) -> (Vec<i64>, Vec<f64>) {
    let level = 200.0 + (index % 97) as f64 * 13.0;
    let amplitude = level * (0.3 + (index % 7) as f64 * 0.05);
    let phase = (index % 24) as f64 / 24.0 * std::f64::consts::TAU;
    (0..POINTS)
        .map(|point| {
            let time = end_ms - (POINTS - 1 - point) as i64 * STEP_MS;
            let day = point as f64 / 288.0;
            let weekend = if (point / 288) % 7 >= 5 { 0.7 } else { 1.0 };
            let cycle = (day * std::f64::consts::TAU + phase).sin();
            let noise = ((point * 7919 + index * 104_729) % 61) as f64 / 61.0 - 0.5;
            let value = (level + amplitude * cycle) * weekend + day * 0.5 + noise * amplitude * 0.1;
            (time, value)
        })
        .unzip()
}

fn series_ref(index: usize) -> proto::SeriesRef {
    proto::SeriesRef {
        name: SERIES_NAME.to_owned(),
        labels: [("i".to_owned(), index.to_string())].into(),
    }
}

/// Series `index`'s id, as the replicas name it (and hash it to its owner).
fn series_id(index: usize) -> String {
    SeriesId::with_labels(SERIES_NAME, [("i", index.to_string())])
        .expect("a valid series")
        .to_string()
}

/// Runs one fleet of `replica_count` replicas through the retrain of `series` series.
pub(crate) async fn run(
    settings: &FleetSettings,
    replica_count: usize,
    series: usize,
) -> RetrainRun {
    let mut replicas: Vec<Replica> = (0..replica_count)
        .map(|index| replica::start(&format!("t{replica_count}-{index}"), settings))
        .collect();
    // No per-call deadline: a Write that crosses the store's checkpoint threshold writes the
    // checkpoint inside its call, which takes long on a loaded machine.
    let mut channels = Vec::new();
    for replica in &replicas {
        channels.push(replica.channel().await);
    }
    let etcd = Etcd::connect(std::slice::from_ref(&settings.etcd), Duration::from_secs(5))
        .await
        .expect("etcd answers");
    let view = fleet_view(&etcd, replica_count).await;
    let owner_of = |index: usize| -> usize {
        let owner = view.owner_of(&series_id(index)).expect("an active member");
        replicas
            .iter()
            .position(|replica| replica.id == owner.id)
            .expect("the owner is one of ours")
    };
    let owners: Vec<usize> = (0..series).map(owner_of).collect();
    let end_ms = prescale::domain::Timestamp::now().as_millis() / STEP_MS * STEP_MS;
    store(&channels, &owners, end_ms).await;
    let pids: Vec<u32> = replicas.iter().filter_map(Replica::pid).collect();
    let rss_stored_mib = pids.iter().copied().map(rss_mib).collect();
    let cpu_before: f64 = pids.iter().copied().map(cpu_seconds).sum();

    let started = Instant::now();
    let mut jobs = Vec::new();
    for channel in &channels {
        let job = AdminServiceClient::new(channel.clone())
            .retrain(proto::RetrainRequest {
                series: Vec::new(),
                all: true,
            })
            .await
            .expect("the retrain starts")
            .into_inner();
        jobs.push(job);
    }
    let failed = follow(&channels, &mut jobs).await;
    let wall = started.elapsed();
    let cpu_seconds: f64 = pids.iter().copied().map(cpu_seconds).sum::<f64>() - cpu_before;
    let rss_trained_mib = pids.iter().copied().map(rss_mib).collect();
    for replica in &mut replicas {
        replica.kill();
    }
    let (with_model, model_bytes) = check_models(&replicas, &owners, series);
    RetrainRun {
        replicas: replica_count,
        per_replica: (0..replica_count)
            .map(|replica| owners.iter().filter(|owner| **owner == replica).count())
            .collect(),
        wall,
        cpu_seconds,
        rss_stored_mib,
        rss_trained_mib,
        failed,
        with_model,
        model_bytes,
    }
}

/// Writes every series to its owner's replica.
async fn store(channels: &[Channel], owners: &[usize], end_ms: i64) {
    for (replica, channel) in channels.iter().enumerate() {
        let mine: Vec<usize> = (0..owners.len())
            .filter(|index| owners[*index] == replica)
            .collect();
        for chunk in mine.chunks(PER_WRITE) {
            let series = chunk
                .iter()
                .map(|index| {
                    let (timestamps_ms, values) = samples(*index, end_ms);
                    proto::SeriesSamples {
                        series: Some(series_ref(*index)),
                        timestamps_ms,
                        values,
                    }
                })
                .collect();
            IngestServiceClient::new(channel.clone())
                .max_encoding_message_size(64 << 20)
                .write(proto::WriteRequest { series })
                .await
                .expect("the owner stores its series");
        }
    }
}

/// Polls every job until all have ended; the series they failed.
async fn follow(channels: &[Channel], jobs: &mut [proto::Job]) -> u32 {
    while jobs.iter().any(|job| job.state == JobState::Running as i32) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        for (job, channel) in jobs.iter_mut().zip(channels) {
            if job.state == JobState::Running as i32 {
                *job = AdminServiceClient::new(channel.clone())
                    .get_job(proto::GetJobRequest { id: job.id.clone() })
                    .await
                    .expect("the job is known")
                    .into_inner();
            }
        }
    }
    for job in jobs.iter() {
        assert_eq!(job.state, JobState::Succeeded as i32, "{job:?}");
    }
    jobs.iter().map(|job| job.failed).sum()
}

/// Every series has a live model in its owner's registry and in no other; the series with one
/// and the registries' bytes on disk.
fn check_models(replicas: &[Replica], owners: &[usize], series: usize) -> (usize, u64) {
    let owner_by_name: HashMap<String, usize> = (0..series)
        .map(|index| (series_id(index), owners[index]))
        .collect();
    let mut seen = BTreeSet::new();
    let mut bytes = 0;
    for (index, replica) in replicas.iter().enumerate() {
        let dir = replica.data_dir().join("models");
        let registry = Registry::open(&dir).expect("the replica's registry opens");
        for (name, entry) in registry.list() {
            assert!(entry.live.is_some(), "{name} has no live model");
            assert!(
                seen.insert(name.clone()),
                "{name} has models on two replicas"
            );
            assert_eq!(
                owner_by_name.get(&name),
                Some(&index),
                "{name} trained by a non-owner"
            );
        }
        bytes += directory_bytes(&dir);
    }
    assert_eq!(seen.len(), series, "series without a live model");
    (seen.len(), bytes)
}

fn directory_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .map(|entry| match entry.metadata() {
            Ok(metadata) if metadata.is_dir() => directory_bytes(&entry.path()),
            Ok(metadata) => metadata.len(),
            Err(_) => 0,
        })
        .sum()
}
