//! Reading, validating and storing workloads, and how load becomes replicas.

use super::*;

/// The commented example shipped beside `Cargo.toml`.
const EXAMPLE: &str = include_str!("../../../workload.example.toml");

#[test]
fn example_file_validates() {
    let workload = Workload::from_toml(EXAMPLE).unwrap();
    assert_eq!(workload.name(), "checkout");
    assert_eq!(workload.warm_up(), Duration::from_secs(600));
    assert_eq!(workload.mode(), Mode::ForecastAndScale);
    assert_eq!(workload.scale_in().max_step_down, Some(3));
    assert_eq!(
        workload.scale_in().stabilisation_window,
        Duration::from_secs(900)
    );
    assert_eq!(
        workload.max_capacity(),
        MaxCapacityBreach::Increase {
            buffer_percent: 10.0
        }
    );
    assert!((workload.load_per_replica() - 84.0).abs() < 1e-9);
    assert_eq!(workload.slo().unwrap().text(), "1%");
    assert!(!workload.planning_level_is_explicit());
}

#[test]
fn stored_parameters_validate_back_into_the_same_workload() {
    let defaults = WorkloadParams::new("api", "requests", 10.0, 5, Duration::from_secs(90))
        .check()
        .unwrap();
    for workload in [Workload::from_toml(EXAMPLE).unwrap(), defaults] {
        let text = toml::to_string(&WorkloadParams::from(&workload)).unwrap();
        assert_eq!(Workload::from_toml(&text).unwrap(), workload, "{text}");
    }
}

/// A workload with only the required keys.
const MINIMAL: &str = r#"
    name = "api"
    series = "requests"
    capacity_per_replica = 10
    max_replicas = 5
    warm_up = "2m"
"#;

#[test]
fn defaults_fill_optional_keys() {
    let workload = Workload::from_toml(MINIMAL).unwrap();
    assert_eq!(workload.min_replicas(), 1);
    assert_eq!(workload.mode(), Mode::ForecastOnly);
    assert_eq!(
        workload.planning_level(),
        Level::from_percent(95.0).unwrap()
    );
    assert_eq!(workload.max_capacity(), MaxCapacityBreach::Honour);
    assert_eq!(workload.scale_in().max_step_down, None);
}

#[test]
fn unknown_keys_and_bad_values_are_named() {
    let typo = EXAMPLE.replace("warm_up", "warmup");
    let error = Workload::from_toml(&typo).unwrap_err();
    assert!(
        matches!(&error, PlanError::ParseWorkload { message } if message.contains("warmup")),
        "{error}"
    );
    let cases = [
        ("min_replicas = 2", "min_replicas = 61", "min_replicas"),
        (
            "capacity_per_replica = 120.0",
            "capacity_per_replica = -1.0",
            "capacity_per_replica",
        ),
        (
            "target_utilisation = 70",
            "target_utilisation = 170",
            "target_utilisation",
        ),
        (
            "# planning_level = 95",
            "planning_level = 100",
            "planning_level",
        ),
        (
            "max_short_steps = \"1%\"",
            "max_short_steps = \"60%\"",
            "slo.max_short_steps",
        ),
        (
            "buffer_percent = 10",
            "buffer_percent = 101",
            "max_capacity.buffer_percent",
        ),
        (
            "max_step_down = 3",
            "max_step_down = 0",
            "scale_in.max_step_down",
        ),
        ("warm_up = \"10m\"", "warm_up = \"3d\"", "warm_up"),
        ("series = 'http", "series = '9http", "series"),
    ];
    for (from, to, field) in cases {
        let text = EXAMPLE.replace(from, to);
        match Workload::from_toml(&text) {
            Err(PlanError::InvalidWorkload { field: got, .. }) => {
                assert_eq!(got, field, "replacing {from:?}")
            }
            other => panic!("replacing {from:?}: expected an invalid {field}, got {other:?}"),
        }
    }
    let unparsable = EXAMPLE.replace("\"10m\"", "\"ten minutes\"");
    assert!(matches!(
        Workload::from_toml(&unparsable),
        Err(PlanError::ParseWorkload { .. })
    ));
}

#[test]
fn names_are_ascii_words_of_at_most_200_bytes() {
    let named = |name: &str| WorkloadParams::new(name, "requests", 10.0, 5, Duration::ZERO).check();
    let longest = "a".repeat(200);
    for good in [
        "api",
        "checkout-v2",
        "team_a.web:eu",
        "2fa-api",
        longest.as_str(),
    ] {
        assert_eq!(named(good).unwrap().name(), good);
    }
    assert_eq!(named(" api ").unwrap().name(), "api", "trimmed, as before");
    let too_long = "a".repeat(10_000);
    for bad in ["", " ", "a\nb", "a b", "caf\u{e9}", too_long.as_str()] {
        let error = named(bad).unwrap_err();
        assert!(
            matches!(error, PlanError::InvalidWorkload { field: "name", .. }),
            "{bad:?}: {error}"
        );
        assert!(error.to_string().len() < 200, "{error}");
    }
    let from_file = EXAMPLE.replace("name = \"checkout\"", "name = \"check\\nout\"");
    assert!(matches!(
        Workload::from_toml(&from_file),
        Err(PlanError::InvalidWorkload { field: "name", .. })
    ));
}

#[test]
fn deserialises_inside_a_larger_file() {
    #[derive(Debug, Deserialize)]
    struct File {
        workload: Vec<Workload>,
    }
    let good = format!("[[workload]]\n{MINIMAL}");
    let file: File = toml::from_str(&good).unwrap();
    assert_eq!(file.workload[0].max_replicas(), 5);
    let bad = good.replace("max_replicas = 5", "max_replicas = 0");
    let error = toml::from_str::<File>(&bad).unwrap_err().to_string();
    assert!(error.contains("max_replicas"), "{error}");
}

#[test]
fn buffer_requires_increase() {
    let text = EXAMPLE.replace("breach = \"increase\"", "breach = \"honour\"");
    assert!(matches!(
        Workload::from_toml(&text),
        Err(PlanError::InvalidWorkload {
            field: "max_capacity.buffer_percent",
            ..
        })
    ));
}

#[test]
fn replicas_follow_target_utilisation_and_breach_policy() {
    let workload = WorkloadParams::new("api", "requests", 100.0, 40, Duration::ZERO)
        .target_utilisation(50.0)
        .check()
        .unwrap();
    assert_eq!(workload.replicas_for(0.0), 0);
    assert_eq!(workload.replicas_for(f64::NAN), 0);
    assert_eq!(workload.replicas_for(100.0), 2);
    assert_eq!(workload.replicas_for(100.000_001), 3);
    assert_eq!(workload.ceiling_for(50), 40);
    let increasing = WorkloadParams::new("api", "requests", 100.0, 40, Duration::ZERO)
        .max_capacity_breach(MaxCapacityBreach::Increase {
            buffer_percent: 10.0,
        })
        .check()
        .unwrap();
    // The AWS documentation's example: need 50, max 40, buffer 10% -> effective max 55.
    assert_eq!(increasing.ceiling_for(50), 55);
    assert_eq!(increasing.ceiling_for(30), 40);
    // A fleet presumed from the load alone stays within min and the effective ceiling.
    assert_eq!(workload.presumed_running(5_000.0), 40);
    assert_eq!(workload.presumed_running(1e300), 40);
    assert_eq!(workload.presumed_running(0.0), workload.min_replicas());
    // Above `max_replicas` where the workload raises its maximum.
    assert!(increasing.replicas_for(5_000.0) > 40);
    assert_eq!(
        increasing.presumed_running(5_000.0),
        increasing.replicas_for(5_000.0)
    );
}

#[test]
fn a_prometheus_source_is_one_table_validated_with_the_workload() {
    let text = format!(
        "{MINIMAL}\n[source.prometheus]\nurl = \"http://prometheus:9090\"\n\
         query = 'sum(rate(http_requests_total{{service=\"checkout\"}}[5m]))'\nstep = \"5m\"\n\
         bearer_token_file = \"/run/token\"\n"
    );
    let workload = Workload::from_toml(&text).unwrap();
    let source = workload.source().unwrap();
    assert_eq!(source.url(), "http://prometheus:9090");
    assert_eq!(source.step(), crate::domain::Step::FIVE_MINUTES);
    let stored = toml::to_string(&WorkloadParams::from(&workload)).unwrap();
    assert_eq!(Workload::from_toml(&stored).unwrap(), workload, "{stored}");

    let bad = format!(
        "{MINIMAL}\n[source.prometheus]\nurl = \"prometheus:9090\"\nquery = 'up'\nstep = \"5m\"\n"
    );
    let error = Workload::from_toml(&bad).unwrap_err().to_string();
    assert!(error.contains("source.prometheus.url"), "{error}");
    let unknown = format!("{MINIMAL}\n[source.graphite]\nurl = \"http://g\"\n");
    assert!(Workload::from_toml(&unknown).is_err());
}

/// `slo.max_short_steps` is a percentage with its sign; an explicit `planning_level` beside it is
/// remembered as explicit (it wins), and both survive being stored.
#[test]
fn an_slo_is_a_percentage_and_an_explicit_level_is_remembered() {
    let with_slo = format!("{MINIMAL}slo = {{ max_short_steps = \"1%\" }}\n");
    let workload = Workload::from_toml(&with_slo).unwrap();
    assert_eq!(workload.slo().unwrap().max_short_share, 0.01);
    assert!(!workload.planning_level_is_explicit());
    assert_eq!(workload.planning_level().percent(), 95.0);
    let explicit = Workload::from_toml(&format!("{with_slo}planning_level = 80\n")).unwrap();
    assert!(explicit.planning_level_is_explicit());
    let seven =
        Workload::from_toml(&format!("{MINIMAL}slo = {{ max_short_steps = \"7%\" }}\n")).unwrap();
    assert_eq!(seven.slo().unwrap().text(), "7%");
    for stored in [&workload, &explicit, &seven] {
        let text = toml::to_string(&WorkloadParams::from(stored)).unwrap();
        assert_eq!(&Workload::from_toml(&text).unwrap(), stored, "{text}");
    }
    for bad in ["1", "0%", "60%", "x%"] {
        let text = format!("{MINIMAL}slo = {{ max_short_steps = \"{bad}\" }}\n");
        let error = Workload::from_toml(&text).unwrap_err().to_string();
        assert!(error.contains("slo.max_short_steps"), "{bad}: {error}");
    }
}

#[test]
fn a_rule_received_as_numbers_reads_as_its_display() {
    assert_eq!(PlanningRule::text(95.0, 1.0), "95% upper bound");
    assert_eq!(PlanningRule::text(10.0, 1.5), "10% upper bound x1.5");
    // A level no interval has is shown as given, not dropped.
    assert_eq!(PlanningRule::text(120.0, 1.0), "120% upper bound x1");
}
