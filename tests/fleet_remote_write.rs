//! Prometheus remote-write into a fleet of `prescale serve` processes on 127.0.0.1, coordinated
//! through a real etcd, with a real Prometheus (remote-write receiver on) as the fleet's TSDB: a
//! request posted to one replica's `/api/v1/write` is answered 204 only once each series is
//! stored at its owner, and only there, and written through to Prometheus.

mod common;
mod etcd_support;
mod fleet_support;
mod grpc_support;
mod prometheus_support;
mod remote_write_support;

use std::time::Duration;

use fleet_support::{Replica, ReplicaConfig, series_name};
use prescale::fleet::etcd::Etcd;
use prometheus_support::LocalPrometheus;
use remote_write_support::{body, post, series};

/// Series written, enough that both replicas own some.
const SERIES: usize = 8;
/// Samples written per series: the last day at 30 minutes.
const SAMPLES: usize = 48;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_write_to_one_replica_lands_at_each_series_owner_and_in_the_tsdb() {
    if etcd_support::missing() || prometheus_support::missing() {
        return;
    }
    let etcd = etcd_support::LocalEtcd::start();
    let prometheus = LocalPrometheus::start_accepting_history();
    let replicas: Vec<Replica> = ["w0", "w1"]
        .iter()
        .map(|id| {
            ReplicaConfig::new(id, &etcd.url)
                .metrics()
                .tsdb(&prometheus.url)
                .start()
        })
        .collect();
    let client = Etcd::connect(std::slice::from_ref(&etcd.url), Duration::from_secs(2))
        .await
        .unwrap();
    fleet_support::fleet_view(&client, replicas.len()).await;

    let now = prescale::domain::Timestamp::now().as_millis();
    let last = now.div_euclid(30 * 60_000) * 30 * 60_000;
    let timeseries = (0..SERIES)
        .map(|index| {
            let samples: Vec<(i64, f64)> = (0..SAMPLES)
                .map(|step| {
                    let at = last - (SAMPLES - 1 - step) as i64 * 30 * 60_000;
                    (at, (100 * index + step) as f64)
                })
                .collect();
            series(&[("__name__", &series_name(index))], &samples)
        })
        .collect();
    let receiver = replicas[0].metrics.as_deref().unwrap();
    let status = post(&format!("{receiver}/api/v1/write"), body(timeseries), None).await;
    assert_eq!(status, 204);

    // Answered means stored at the owner, and only there, and written through to the TSDB.
    let mut owners = Vec::new();
    for index in 0..SERIES {
        let name = series_name(index);
        let mut holders = Vec::new();
        for (position, replica) in replicas.iter().enumerate() {
            match replica.stored(&name).await {
                0 => {}
                count if count == SAMPLES as u64 => holders.push(position),
                other => panic!("{name}: {other} samples at {}", replica.id),
            }
        }
        assert_eq!(holders.len(), 1, "{name} stored at {holders:?}");
        owners.push(holders[0]);
        assert_eq!(
            prometheus_support::samples_over(&prometheus.url, &name, "2d"),
            SAMPLES as u64,
            "{name}"
        );
    }
    assert!(
        owners.contains(&0) && owners.contains(&1),
        "every series owned by one replica: {owners:?}"
    );
    drop(etcd);
}
