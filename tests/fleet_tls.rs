//! A fleet of `prescale serve` processes on 127.0.0.1 whose gRPC APIs and KEDA scalers serve TLS
//! (`[server.tls]`, `[scaler.tls]` asking for client certificates, all signed by one CA, `[fleet]
//! peer_ca_file`), coordinated through a real etcd, each workload pulled from a real Prometheus:
//! calls about another replica's work are forwarded to it over TLS, so every workload answers the
//! same plan and the same KEDA metric through either replica. And a fleet on an etcd that serves
//! TLS and asks for client certificates (`https://` endpoints, `[fleet] etcd_ca_file`,
//! `etcd_cert_file`, `etcd_key_file`).

mod etcd_support;
mod fleet_support;
mod prometheus_support;

use std::time::Duration;

use fleet_support::{PeerTls, Replica, ReplicaConfig, settled_owner};
use prescale::fleet::etcd::{Etcd, EtcdTls};
use prescale::service::externalscaler::{
    GetMetricsRequest, ScaledObjectRef, external_scaler_client::ExternalScalerClient,
};

/// Workloads, enough that both replicas own some.
const WORKLOADS: usize = 8;

/// A CA and a certificate it signed for 127.0.0.1 (where every replica listens), written into
/// `directory`.
fn pki(directory: &std::path::Path) -> PeerTls {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate().unwrap())
        .unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let write = |name: &str, text: &str| {
        let path = directory.join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    PeerTls {
        cert: write("replica.pem", &cert.pem()),
        key: write("replica.key", &key.serialize_pem()),
        ca: write("ca.pem", &ca.pem()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_serving_tls_forward_to_each_other_over_tls() {
    if etcd_support::missing() || prometheus_support::missing() {
        return;
    }
    let etcd = etcd_support::LocalEtcd::start();
    let prometheus = fleet_support::prometheus_with(WORKLOADS);
    let directory = tempfile::tempdir().unwrap();
    let tls = pki(directory.path());
    let replicas: Vec<Replica> = ["t0", "t1"]
        .iter()
        .map(|id| ReplicaConfig::new(id, &etcd.url).scaler().tls(&tls).start())
        .collect();
    let client = Etcd::connect(std::slice::from_ref(&etcd.url), Duration::from_secs(2))
        .await
        .unwrap();
    fleet_support::fleet_view(&client, replicas.len()).await;
    let names = fleet_support::upsert_all(&replicas[0], WORKLOADS, &prometheus.url).await;

    // Every workload answers its owner's plan through both replicas: the other one forwarded the
    // call over TLS.
    let both: Vec<&Replica> = replicas.iter().collect();
    fleet_support::answered_alike(&both, &names, Duration::from_secs(180)).await;
    // Each workload is followed by exactly one replica, its owner (waited for: a replica whose
    // view has not yet seen the other turn active still follows the other's share for a moment),
    // and both own some.
    let mut owned = [0; 2];
    for name in &names {
        owned[settled_owner(&replicas, &[0, 1], name).await] += 1;
    }
    assert!(owned.iter().all(|count| *count > 0), "{owned:?}");

    // KEDA (with a client certificate, as the scalers ask) gets every workload's metric through
    // either scaler: the other one forwarded the call over TLS with its own certificate.
    for name in &names {
        let mut values = Vec::new();
        for replica in &replicas {
            let answer = ExternalScalerClient::new(replica.scaler_channel().await)
                .get_metrics(GetMetricsRequest {
                    scaled_object_ref: Some(ScaledObjectRef {
                        name: "checkout".to_owned(),
                        namespace: "shop".to_owned(),
                        scaler_metadata: [("workload".to_owned(), name.clone())].into(),
                    }),
                    metric_name: String::new(),
                })
                .await
                .unwrap_or_else(|status| panic!("GetMetrics through {}: {status}", replica.id))
                .into_inner();
            values.push(answer.metric_values[0].metric_value);
        }
        assert!(
            values[0] > 0 && values[1] == values[0],
            "{name}: {values:?}"
        );
    }

    drop(etcd);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_join_through_an_etcd_that_serves_tls_and_asks_for_client_certificates() {
    if etcd_support::missing() {
        return;
    }
    let directory = tempfile::tempdir().unwrap();
    let tls = pki(directory.path());
    let etcd = etcd_support::LocalEtcd::start_tls(&tls.cert, &tls.key, &tls.ca);
    let replicas: Vec<Replica> = ["e0", "e1"]
        .iter()
        .map(|id| ReplicaConfig::new(id, &etcd.url).etcd_tls(&tls).start())
        .collect();
    let ca = std::fs::read(&tls.ca).unwrap();
    let identity = (
        std::fs::read(&tls.cert).unwrap(),
        std::fs::read(&tls.key).unwrap(),
    );
    let endpoints = std::slice::from_ref(&etcd.url);
    let client = Etcd::connect_with(
        endpoints,
        Duration::from_secs(2),
        Some(&EtcdTls {
            ca: ca.clone(),
            identity: Some(identity),
        }),
    )
    .await
    .unwrap();
    let view = fleet_support::fleet_view(&client, replicas.len()).await;
    assert_eq!(view.members.len(), 2);
    // Without a client certificate etcd answers nothing.
    let refused = Etcd::connect_with(
        endpoints,
        Duration::from_secs(2),
        Some(&EtcdTls { ca, identity: None }),
    )
    .await;
    assert!(refused.is_err(), "etcd took a client without a certificate");
}
