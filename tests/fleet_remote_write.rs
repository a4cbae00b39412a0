//! Prometheus remote-write into a fleet of `prescale serve` processes on 127.0.0.1, coordinated
//! through a real etcd, with a real Prometheus (remote-write receiver on) as the fleet's TSDB: a
//! request posted to one replica's `/api/v1/write` is answered 204 only once each series is
//! stored at its owner, and only there, and written through to Prometheus; with bearer tokens, the
//! sender's token goes with the shares forwarded to the other owners.

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

/// The remote-write series `load_<index>`: the last day at 30 minutes, each value telling the
/// series and the step apart.
fn last_day(count: usize) -> Vec<prescale::ingest::remote_write_proto::TimeSeries> {
    let now = prescale::domain::Timestamp::now().as_millis();
    let last = now.div_euclid(30 * 60_000) * 30 * 60_000;
    (0..count)
        .map(|index| {
            let samples: Vec<(i64, f64)> = (0..SAMPLES)
                .map(|step| {
                    let at = last - (SAMPLES - 1 - step) as i64 * 30 * 60_000;
                    (at, (100 * index + step) as f64)
                })
                .collect();
            series(&[("__name__", &series_name(index))], &samples)
        })
        .collect()
}

/// An etcd, a Prometheus taking remote-write, and two replicas with `/metrics` (remote-write on)
/// and that Prometheus as their TSDB, requiring one of `tokens` when there are any; returned once
/// both are active.
async fn fleet(tokens: &[&str]) -> (etcd_support::LocalEtcd, LocalPrometheus, Vec<Replica>) {
    let etcd = etcd_support::LocalEtcd::start();
    let prometheus = LocalPrometheus::start_accepting_history();
    let replicas: Vec<Replica> = ["r0", "r1"]
        .iter()
        .map(|id| {
            ReplicaConfig::new(id, &etcd.url)
                .metrics()
                .tsdb(&prometheus.url)
                .tokens(tokens)
                .start()
        })
        .collect();
    let client = Etcd::connect(std::slice::from_ref(&etcd.url), Duration::from_secs(2))
        .await
        .unwrap();
    fleet_support::fleet_view(&client, replicas.len()).await;
    (etcd, prometheus, replicas)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_tokens_the_senders_token_reaches_the_other_owners() {
    if etcd_support::missing() || prometheus_support::missing() {
        return;
    }
    const TOKEN: &str = "fleet-remote-write-token-0123";
    let (etcd, prometheus, replicas) = fleet(&[TOKEN]).await;
    let url = format!("{}/api/v1/write", replicas[0].metrics.as_deref().unwrap());
    assert_eq!(post(&url, body(last_day(SERIES)), None).await, 401);
    // Every series in the TSDB, those the receiver does not own too: their owner took the
    // forwarded share with the sender's token.
    assert_eq!(post(&url, body(last_day(SERIES)), Some(TOKEN)).await, 204);
    for index in 0..SERIES {
        let name = series_name(index);
        assert_eq!(
            prometheus_support::samples_over(&prometheus.url, &name, "2d"),
            SAMPLES as u64,
            "{name}"
        );
    }
    drop(etcd);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_write_to_one_replica_lands_at_each_series_owner_and_in_the_tsdb() {
    if etcd_support::missing() || prometheus_support::missing() {
        return;
    }
    let (etcd, prometheus, replicas) = fleet(&[]).await;

    let receiver = replicas[0].metrics.as_deref().unwrap();
    let status = post(
        &format!("{receiver}/api/v1/write"),
        body(last_day(SERIES)),
        None,
    )
    .await;
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
