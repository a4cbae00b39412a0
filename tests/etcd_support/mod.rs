//! A real etcd (Debian's `etcd-server`, `/usr/bin/etcd`) on 127.0.0.1 for the fleet tests: one
//! member on free ports with a temporary data directory, killed (and its data removed) on drop.
//! A test that uses it also declares `mod prometheus_support;` (the port and HTTP helpers).

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::prometheus_support::{free_port, http_get};

/// The etcd binary the tests start.
pub(crate) const ETCD: &str = "/usr/bin/etcd";

/// Whether etcd is missing; says so, for the test to skip.
pub(crate) fn missing() -> bool {
    if Path::new(ETCD).exists() {
        return false;
    }
    eprintln!("skipped: {ETCD} is not installed");
    true
}

/// Starts `prescale serve --config <config>` as fleet member `id` and waits until it has joined
/// (its "fleet member" line comes once its member key is in etcd); the rest of its output is read,
/// so the server never writes to a closed pipe. Its log (stderr) is appended to
/// [`member_log`]`(config)`, across restarts.
pub(crate) fn start_member(id: &str, config: &Path) -> Child {
    start_member_with_env(id, config, &[])
}

/// [`start_member`] with the environment variables `env` set (`RUST_LOG`, which a benchmark sets
/// to keep the logging out of its figures; an S3 model store's credentials).
pub(crate) fn start_member_with_env(id: &str, config: &Path, env: &[(String, String)]) -> Child {
    let mut command = Command::new(env!("CARGO_BIN_EXE_prescale"));
    command
        .arg("--config")
        .arg(config)
        .arg("serve")
        .env_remove("PRESCALE_CONFIG")
        .stdout(Stdio::piped())
        .stderr(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(member_log(config))
                .expect("a log file beside the config"),
        );
    command.envs(env.iter().map(|(key, value)| (key, value)));
    let mut child = command.spawn().expect("prescale serve starts");
    let mut lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
    let joined = lines
        .by_ref()
        .map_while(Result::ok)
        .any(|line| line.starts_with("fleet member"));
    assert!(
        joined,
        "replica {id} did not join the fleet ({}); the end of its log:\n{}",
        // Its output ended before the line: it is exiting.
        child
            .wait()
            .map_or_else(|error| error.to_string(), |status| status.to_string()),
        log_tail(&member_log(config), 20)
    );
    std::thread::spawn(move || lines.for_each(drop));
    child
}

/// Where [`start_member_with_env`] keeps the log of the member configured by `config`: beside it.
pub(crate) fn member_log(config: &Path) -> std::path::PathBuf {
    config.with_extension("log")
}

/// The last `lines` lines of the log at `path` (empty when there is none), for a failing test to
/// show why a process it started is gone.
pub(crate) fn log_tail(path: &Path, lines: usize) -> String {
    let log = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = log.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A running single-member etcd; killed on drop.
pub(crate) struct LocalEtcd {
    /// Its client URL, `http://127.0.0.1:<port>`.
    pub(crate) url: String,
    /// Its peer URL.
    peer_url: String,
    /// Its TLS flags (none: plaintext).
    tls: Vec<String>,
    /// The process.
    child: Child,
    /// Its data directory.
    _directory: tempfile::TempDir,
}

impl LocalEtcd {
    /// Starts etcd and waits until `/health` answers healthy.
    pub(crate) fn start() -> Self {
        let directory = tempfile::tempdir().expect("a temporary directory");
        let url = format!("http://127.0.0.1:{}", free_port());
        let peer_url = format!("http://127.0.0.1:{}", free_port());
        let child = spawn(directory.path(), &url, &peer_url, &[]);
        let etcd = Self {
            url,
            peer_url,
            tls: Vec::new(),
            child,
            _directory: directory,
        };
        etcd.wait_healthy();
        etcd
    }

    /// Starts etcd serving clients over TLS with the certificate `cert` and key `key`, and asking
    /// them for a certificate `ca` signed (`--client-cert-auth`); waits until it accepts
    /// connections.
    pub(crate) fn start_tls(cert: &Path, key: &Path, ca: &Path) -> Self {
        let directory = tempfile::tempdir().expect("a temporary directory");
        let port = free_port();
        let url = format!("https://127.0.0.1:{port}");
        let peer_url = format!("http://127.0.0.1:{}", free_port());
        let tls = vec![
            format!("--cert-file={}", cert.display()),
            format!("--key-file={}", key.display()),
            format!("--trusted-ca-file={}", ca.display()),
            "--client-cert-auth".to_owned(),
        ];
        let child = spawn(directory.path(), &url, &peer_url, &tls);
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "etcd at {url} not listening within 30 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Self {
            url,
            peer_url,
            tls,
            child,
            _directory: directory,
        }
    }

    /// Kills etcd (`kill -9`), keeping its data directory for [`LocalEtcd::restart`].
    pub(crate) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts etcd again on the same ports and data directory, and waits until it is healthy.
    pub(crate) fn restart(&mut self) {
        self.child = spawn(self._directory.path(), &self.url, &self.peer_url, &self.tls);
        self.wait_healthy();
    }

    fn wait_healthy(&self) {
        wait_healthy(&self.url);
    }
}

/// Waits until the etcd member at `url` answers `/health` healthy (it has a leader).
fn wait_healthy(url: &str) {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(30) {
        if http_get(url, "/health")
            .is_some_and(|(status, body)| status == 200 && body.contains("true"))
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("etcd at {url} not healthy within 30 s");
}

impl Drop for LocalEtcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running etcd cluster of several members on 127.0.0.1, with short heartbeats and elections
/// (50 ms, 500 ms); each member killed (and its data removed) on drop.
pub(crate) struct LocalCluster {
    /// Each member's client URL, `http://127.0.0.1:<port>`, by index.
    pub(crate) urls: Vec<String>,
    /// The members' processes, `None` once killed.
    children: Vec<Option<Child>>,
    /// Their data directories.
    _directory: tempfile::TempDir,
}

impl LocalCluster {
    /// Starts `members` members as one new cluster and waits until each answers healthy (it has a
    /// leader).
    pub(crate) fn start(members: usize) -> Self {
        let directory = tempfile::tempdir().expect("a temporary directory");
        let urls: Vec<String> = (0..members)
            .map(|_| format!("http://127.0.0.1:{}", free_port()))
            .collect();
        let peers: Vec<String> = (0..members)
            .map(|_| format!("http://127.0.0.1:{}", free_port()))
            .collect();
        let initial_cluster = peers
            .iter()
            .enumerate()
            .map(|(index, peer)| format!("m{index}={peer}"))
            .collect::<Vec<_>>()
            .join(",");
        let children = (0..members)
            .map(|index| {
                let flags = [
                    format!("--name=m{index}"),
                    format!("--initial-cluster={initial_cluster}"),
                    "--initial-cluster-state=new".to_owned(),
                    "--heartbeat-interval=50".to_owned(),
                    "--election-timeout=500".to_owned(),
                ];
                Some(spawn_member(
                    &directory.path().join(format!("m{index}")),
                    &urls[index],
                    &peers[index],
                    &flags,
                ))
            })
            .collect();
        let cluster = Self {
            urls,
            children,
            _directory: directory,
        };
        for url in &cluster.urls {
            wait_healthy(url);
        }
        cluster
    }

    /// Kills member `index` (`kill -9`).
    pub(crate) fn kill(&mut self, index: usize) {
        if let Some(mut child) = self.children[index].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for index in 0..self.children.len() {
            self.kill(index);
        }
    }
}

/// Starts one etcd member with its data in `directory`, with the flags `tls`.
fn spawn(directory: &Path, url: &str, peer_url: &str, tls: &[String]) -> Child {
    let mut flags = tls.to_vec();
    flags.push("--name=test".to_owned());
    flags.push(format!("--initial-cluster=test={peer_url}"));
    spawn_member(directory, url, peer_url, &flags)
}

/// Starts an etcd member with its data in `directory`, serving clients on `url` and its peers on
/// `peer_url`, with the flags `flags` (its name and cluster among them).
fn spawn_member(directory: &Path, url: &str, peer_url: &str, flags: &[String]) -> Child {
    Command::new(ETCD)
        .args(flags)
        .arg(format!("--data-dir={}", directory.join("data").display()))
        .arg(format!("--listen-client-urls={url}"))
        .arg(format!("--advertise-client-urls={url}"))
        .arg(format!("--listen-peer-urls={peer_url}"))
        .arg(format!("--initial-advertise-peer-urls={peer_url}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("etcd starts")
}
