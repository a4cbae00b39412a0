//! The alert rules shipped in `deploy/prometheus/` against Debian's `promtool` 2.42 (installed by
//! `.ci/run`, skipped without it): the rules file loads, and its unit tests, which make each alert
//! fire on the series it is for and not on a healthy one beside it, pass. That every metric the
//! rules name is one `prescale serve` exposes is checked in `grpc.rs`
//! (`a_workload_with_an_slo_reports_the_rule_it_plans_on`).

mod common;

use std::path::Path;
use std::process::Command;

/// Debian's promtool.
const PROMTOOL: &str = "/usr/bin/promtool";

/// `promtool ARGS` in `deploy/prometheus`; its exit status and output.
fn promtool(args: &[&str]) -> (bool, String) {
    let output = Command::new(PROMTOOL)
        .args(args)
        .current_dir(common::manifest_dir().join("deploy/prometheus"))
        .output()
        .expect("promtool runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

#[test]
fn the_alert_rules_load_and_pass_their_unit_tests() {
    if !Path::new(PROMTOOL).exists() {
        eprintln!("skipped: {PROMTOOL} is not installed");
        return;
    }
    let (checked, output) = promtool(&["check", "rules", "prescale-alerts.yml"]);
    assert!(checked, "{output}");
    assert!(output.contains("SUCCESS: 10 rules found"), "{output}");
    let (tested, output) = promtool(&["test", "rules", "prescale-alerts.test.yml"]);
    assert!(tested, "{output}");
    assert!(output.contains("SUCCESS"), "{output}");
}
