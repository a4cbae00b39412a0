//! The fleet benchmark's replicas: release `prescale serve` processes of one fleet on 127.0.0.1
//! (the fleet tests' replicas, `tests/fleet_support`, tuned for load), each with its own data
//! directory, which a restart after `kill -9` keeps; and the fleet's member list read from etcd,
//! from which the benchmark computes each series' owner with the same rendezvous hashing the
//! replicas use.

use std::time::Duration;

use tonic::transport::Channel;

use crate::fleet_support::{Replica, ReplicaConfig};

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

/// Starts replica `id` and waits until it has joined the fleet: no fsync, 64 MiB messages,
/// `settings.fits` fit threads, logging errors only.
pub(crate) fn start(id: &str, settings: &FleetSettings) -> Replica {
    let lease_ttl = humantime::parse_duration(&settings.lease_ttl).expect("--lease is a duration");
    ReplicaConfig::new(id, &settings.etcd)
        .lease_ttl(lease_ttl)
        .no_fsync()
        .max_message_mib(64)
        .max_concurrent_fits(settings.fits)
        .log("error")
        .start()
}

/// A new connection to `replica`'s gRPC API, with connect and call timeouts.
pub(crate) async fn channel(replica: &Replica) -> Channel {
    Channel::from_shared(format!("http://{}", replica.address))
        .expect("a valid URI")
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(10))
        .connect()
        .await
        .expect("the replica accepts a connection")
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
