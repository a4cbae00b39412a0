//! `deploy/kubernetes-fleet/prescale.toml`, the fleet's configuration, run as the StatefulSet runs
//! it: `prescale serve` with the pod's environment (its member id and advertised addresses, which
//! differ per pod and are not in the shared file) joins a real etcd under the pod's name and
//! advertises its DNS name under the headless Service; without that environment the file is
//! refused, naming the missing key.

mod etcd_support;
mod prometheus_support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// The fleet's file with what only a cluster has replaced: the token Secret's path by a file here,
/// the shared model volume by a directory here, the listeners by free loopback ports, the etcd
/// Service by `etcd`, and Prometheus by a loopback address nothing listens on (the TSDB is used only
/// by pushes and refills, which this test makes none of).
fn local_copy(directory: &Path, etcd: &str) -> std::path::PathBuf {
    let text = include_str!("../deploy/kubernetes-fleet/prescale.toml");
    let replacements = [
        ("/etc/prescale-tokens/tokens.txt", "TOKENS"),
        ("http://etcd.etcd.svc.cluster.local:2379", etcd),
        ("0.0.0.0:50051", "127.0.0.1:0"),
        ("0.0.0.0:9464", "127.0.0.1:0"),
        ("0.0.0.0:50052", "127.0.0.1:0"),
        ("/var/lib/prescale-models", "MODELS"),
        (
            "http://prometheus.monitoring.svc.cluster.local:9090",
            "http://127.0.0.1:9",
        ),
    ];
    let tokens = directory.join("tokens.txt");
    std::fs::write(&tokens, "kubernetes-token-0123456789abcdef\n").unwrap();
    let models = directory.join("models");
    std::fs::create_dir(&models).unwrap();
    let mut text = text.to_owned();
    for (from, to) in replacements {
        assert!(text.contains(from), "{from} moved: update this test");
        let to = match to {
            "TOKENS" => tokens.to_str().unwrap(),
            "MODELS" => models.to_str().unwrap(),
            to => to,
        };
        text = text.replace(from, to);
    }
    let path = directory.join("prescale.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn serve(config: &Path, data: &Path, pod: &[(&str, &str)]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_prescale"));
    command
        .arg("--config")
        .arg(config)
        .arg("serve")
        .arg("--data-dir")
        .arg(data)
        .env_remove("PRESCALE_CONFIG")
        .env_remove("PRESCALE_MEMBER_ID")
        .env_remove("PRESCALE_ADVERTISE")
        .env_remove("PRESCALE_SCALER_ADVERTISE")
        .envs(pod.iter().copied());
    command
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fleet_configuration_joins_under_the_pods_name() {
    if etcd_support::missing() {
        return;
    }
    let etcd = etcd_support::LocalEtcd::start();
    let directory = tempfile::tempdir().unwrap();
    let config = local_copy(directory.path(), &etcd.url);
    let data = directory.path().join("data");
    let host = "prescale-1.prescale-peers.prescale.svc.cluster.local";
    let grpc = format!("{host}:50051");
    let scaler = format!("{host}:50052");
    let pod = [
        ("PRESCALE_MEMBER_ID", "prescale-1"),
        ("PRESCALE_ADVERTISE", grpc.as_str()),
        ("PRESCALE_SCALER_ADVERTISE", scaler.as_str()),
    ];
    let mut child = serve(&config, &data, &pod)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let joined = BufReader::new(child.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok)
        .find(|line| line.starts_with("fleet member"));
    let client = prescale::fleet::etcd::Etcd::connect(
        std::slice::from_ref(&etcd.url),
        Duration::from_secs(2),
    )
    .await
    .unwrap();
    let member = client.get("/prescale/members/prescale-1").await.unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let joined = joined.expect("the replica joined the fleet");
    assert!(
        joined.starts_with(&format!("fleet member prescale-1 (advertised as {grpc})")),
        "{joined}"
    );
    let info: prescale::fleet::MemberInfo =
        serde_json::from_slice(&member.expect("the member key").value).unwrap();
    assert_eq!(info.addr, grpc);
    assert_eq!(info.scaler_addr.as_deref(), Some(scaler.as_str()));

    // Without the pod's environment the shared file names no member: refused at start.
    let output = serve(&config, &data, &[]).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains("fleet.member_id"), "{stderr}");
}
