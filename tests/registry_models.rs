//! The committed registry in `models/` (trained models of the `notebooks-data/` series) still loads
//! and forecasts with the current code. A change of the model file format must come with a
//! migration of these files (see `models/README.md`); this test makes an accidental one fail.

use std::path::PathBuf;

use prescale::domain::SeriesId;
use prescale::forecast::{Horizon, Predict};
use prescale::registry::{MANIFEST_FILE, Registry};

/// Steps forecast from every stored model: a day of the 30-minute series, four hours of the
/// 5-minute ones.
const HORIZON_STEPS: usize = 48;

/// The registry directory at the repository root.
fn models_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models")
}

#[test]
fn every_model_in_the_manifest_loads_and_forecasts() {
    let dir = models_dir();
    let manifest = dir.join(MANIFEST_FILE);
    assert!(
        manifest.is_file(),
        "{} is missing: models/ must hold the registry of the notebooks-data series, produced by \
         `prescale retrain` as models/README.md describes",
        manifest.display()
    );
    let registry = Registry::open(&dir).expect("the committed manifest reads");
    let listed = registry.list();
    assert!(!listed.is_empty(), "{} names no series", manifest.display());
    let horizon = Horizon::try_from(HORIZON_STEPS).expect("a positive horizon");
    let mut checked = 0;
    for (name, entry) in &listed {
        let series: SeriesId = name
            .parse()
            .unwrap_or_else(|error| panic!("manifest key {name:?}: {error}"));
        assert!(!entry.versions.is_empty(), "{name} lists no versions");
        for info in &entry.versions {
            let context = format!("{name} version {} ({})", info.version, info.file);
            let model = registry
                .load(&series, info.version)
                .unwrap_or_else(|error| panic!("{context} does not load: {error}"));
            let forecast = model
                .predict_default(horizon)
                .unwrap_or_else(|error| panic!("{context} does not forecast: {error}"));
            assert_eq!(forecast.len(), HORIZON_STEPS, "{context}");
            assert_eq!(forecast.step(), model.step(), "{context}");
            assert!(
                forecast.point().iter().all(|value| value.is_finite()),
                "{context}: non-finite point forecast"
            );
            assert!(
                forecast.intervals().len() >= 2,
                "{context}: expected the default 80% and 95% intervals"
            );
            for interval in forecast.intervals() {
                assert_eq!(interval.lower.len(), HORIZON_STEPS, "{context}");
                assert_eq!(interval.upper.len(), HORIZON_STEPS, "{context}");
                for ((lower, upper), point) in interval
                    .lower
                    .iter()
                    .zip(&interval.upper)
                    .zip(forecast.point())
                {
                    assert!(
                        lower.is_finite() && upper.is_finite(),
                        "{context}: non-finite bound"
                    );
                    assert!(
                        lower <= point && point <= upper,
                        "{context}: point {point} outside [{lower}, {upper}]"
                    );
                }
            }
            // Intervals come sorted by level: each wider one holds the narrower.
            for pair in forecast.intervals().windows(2) {
                let (inner, outer) = (&pair[0], &pair[1]);
                assert!(
                    inner.level < outer.level,
                    "{context}: levels not increasing"
                );
                for step in 0..HORIZON_STEPS {
                    assert!(
                        outer.lower[step] <= inner.lower[step]
                            && inner.upper[step] <= outer.upper[step],
                        "{context}: the {} band does not hold the {} band at step {step}",
                        outer.level,
                        inner.level
                    );
                }
            }
            checked += 1;
        }
    }
    assert!(checked > 0, "no model file was checked");
}
