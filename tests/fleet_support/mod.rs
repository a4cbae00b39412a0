//! Starting `prescale serve` replicas of a fleet for the tests: the process, returned once it has
//! joined the fleet.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// Runs `prescale --config <config> serve` as replica `id` and returns once it printed that it
/// joined the fleet (its member key is in etcd); its further output is read and dropped.
pub(crate) fn spawn_joined(id: &str, config: &Path) -> Child {
    let mut child = Command::new(env!("CARGO_BIN_EXE_prescale"))
        .arg("--config")
        .arg(config)
        .arg("serve")
        .env_remove("PRESCALE_CONFIG")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    // The fleet line comes once the member key is in etcd.
    let joined = lines
        .by_ref()
        .map_while(Result::ok)
        .any(|line| line.starts_with("fleet member"));
    assert!(joined, "replica {id} did not join the fleet");
    // The rest is read, so the server never writes to a closed pipe.
    std::thread::spawn(move || lines.for_each(drop));
    child
}
