//! The fleet benchmark's replicas: release `prescale serve` processes of one fleet on 127.0.0.1,
//! each with its own data directory, which a restart after `kill -9` keeps (as a StatefulSet pod
//! keeps its volume); and the fleet's member list read from etcd, from which the benchmark computes
//! each series' owner with the same rendezvous hashing the replicas use.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use prescale::fleet::etcd::Etcd;
use prescale::fleet::{FleetView, Member, MemberInfo};
use tonic::transport::Channel;

use crate::prometheus_support::free_port;

/// The fleet's etcd key prefix (the default of `[fleet] prefix`).
const PREFIX: &str = "/prescale/";

/// Settings every replica of a run shares.
#[derive(Debug, Clone)]
pub(crate) struct FleetSettings {
    /// The etcd client URL.
    pub(crate) etcd: String,
    /// `[fleet] lease_ttl`.
    pub(crate) lease_ttl: String,
    /// `[planning] max_concurrent_fits`: the fit threads of plans and retrain jobs.
    pub(crate) fits: usize,
}

/// A `prescale serve` replica; killed on drop.
pub(crate) struct Replica {
    /// Its member id.
    pub(crate) id: String,
    /// Its gRPC address.
    pub(crate) address: String,
    /// The running process, `None` after a kill.
    child: Option<Child>,
    /// Its config file (in `directory`).
    config: PathBuf,
    /// Its data directory and config file; kept across restarts.
    directory: tempfile::TempDir,
}

impl Replica {
    /// Starts replica `id` and waits until it has joined the fleet.
    pub(crate) fn start(id: &str, settings: &FleetSettings) -> Self {
        let directory = tempfile::tempdir().expect("a temporary directory");
        let address = format!("127.0.0.1:{}", free_port());
        let config = directory.path().join("prescale.toml");
        std::fs::write(
            &config,
            config_text(directory.path(), id, &address, settings),
        )
        .expect("the config file");
        let mut replica = Self {
            id: id.to_owned(),
            address,
            child: None,
            config,
            directory,
        };
        replica.restart();
        replica
    }

    /// Starts the process again on the same data directory and waits until it has joined.
    pub(crate) fn restart(&mut self) {
        let mut child = Command::new(env!("CARGO_BIN_EXE_prescale"))
            .arg("--config")
            .arg(&self.config)
            .arg("serve")
            .env_remove("PRESCALE_CONFIG")
            .env("RUST_LOG", "error")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("prescale serve starts");
        let mut lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        // The fleet line comes once the member key is in etcd.
        let joined = lines
            .by_ref()
            .map_while(Result::ok)
            .any(|line| line.starts_with("fleet member"));
        assert!(joined, "replica {} did not join the fleet", self.id);
        // The rest is read, so the server never writes to a closed pipe.
        std::thread::spawn(move || lines.for_each(drop));
        self.child = Some(child);
    }

    /// `kill -9`, and the process reaped.
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("kill -9");
            child.wait().expect("reaped");
        }
    }

    /// Its process id while it runs.
    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Its data directory.
    pub(crate) fn data_dir(&self) -> &Path {
        self.directory.path()
    }

    /// A new connection to its gRPC API.
    pub(crate) async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.address))
            .expect("a valid URI")
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(10))
            .connect()
            .await
            .expect("the replica accepts a connection")
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill();
    }
}

fn config_text(data: &Path, id: &str, address: &str, settings: &FleetSettings) -> String {
    format!(
        r#"data_dir = "{data}"
[store]
fsync = false
[server]
listen = "{address}"
metrics_listen = "off"
max_message_mib = 64
[planning]
max_concurrent_fits = {fits}
[registry]
schedule = "off"
[sources]
poll_interval = "1s"
retry_initial = "200ms"
retry_max = "1s"
[fleet]
etcd_endpoints = ["{etcd}"]
member_id = "{id}"
advertise = "{address}"
lease_ttl = "{ttl}"
etcd_timeout = "2s"
"#,
        data = data.display(),
        fits = settings.fits,
        etcd = settings.etcd,
        ttl = settings.lease_ttl,
    )
}

/// The fleet's members as etcd holds them now.
pub(crate) async fn fleet_view(etcd: &Etcd) -> FleetView {
    let prefix = format!("{PREFIX}members/");
    let (entries, revision) = etcd.get_prefix(&prefix).await.expect("etcd answers");
    let members = entries
        .into_iter()
        .map(|entry| Member {
            id: entry.key[prefix.len()..].to_owned(),
            info: serde_json::from_slice::<MemberInfo>(&entry.value).expect("a member record"),
            create_revision: entry.create_revision,
        })
        .collect();
    FleetView {
        members,
        revision,
        ..FleetView::default()
    }
}

/// CPU seconds (user + system) process `pid` has used, from `/proc/<pid>/stat`.
pub(crate) fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at its closing parenthesis;
    // utime and stime are the 14th and 15th fields, in clock ticks.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks = |index: usize| {
        fields
            .get(index)
            .and_then(|field| field.parse::<f64>().ok())
    };
    // SAFETY: sysconf with a valid name has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (ticks(11).unwrap_or(0.0) + ticks(12).unwrap_or(0.0)) / per_second
}

/// Resident memory of process `pid` in MiB, from `/proc/<pid>/status`.
pub(crate) fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0)
}
