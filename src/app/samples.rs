//! The sample series embedded in the binary, so `prescale demo` runs from any directory.
//!
//! They are copies of files in `notebooks-data/`; see its README for provenance and licences.

use crate::domain::SeriesId;

/// One embedded sample series.
#[derive(Debug, Clone, Copy)]
pub struct SampleSeries {
    /// Series name it is imported under.
    pub name: &'static str,
    /// File it was copied from, in `notebooks-data/`.
    pub file_name: &'static str,
    /// What it measures.
    pub description: &'static str,
    /// The CSV text (`timestamp,value`).
    pub csv: &'static str,
}

impl SampleSeries {
    /// The series id the demo stores it under.
    pub fn series_id(&self) -> SeriesId {
        SeriesId::new(self.name).expect("invariant: embedded sample names are valid series names")
    }
}

/// One entry of [`SAMPLE_SERIES`]: the file is named once, for the field and the embedded text.
macro_rules! sample {
    ($name:literal, $file:literal, $description:literal) => {
        SampleSeries {
            name: $name,
            file_name: $file,
            description: $description,
            csv: include_str!(concat!("../../notebooks-data/", $file)),
        }
    };
}

/// Every embedded sample series.
pub const SAMPLE_SERIES: &[SampleSeries] = &[
    sample!(
        "nyc_taxi",
        "nyc_taxi.csv",
        "NYC taxi passengers per 30 min (NAB)"
    ),
    sample!(
        "ec2_cpu_5f5533",
        "ec2_cpu_utilization_5f5533.csv",
        "AWS EC2 CPU utilisation %, 5 min (NAB)"
    ),
    sample!(
        "ec2_cpu_ac20cd",
        "ec2_cpu_utilization_ac20cd.csv",
        "AWS EC2 CPU utilisation %, 5 min (NAB)"
    ),
    sample!(
        "rds_cpu_cc0c53",
        "rds_cpu_utilization_cc0c53.csv",
        "AWS RDS CPU utilisation %, 5 min (NAB)"
    ),
    sample!(
        "traffic_occupancy_6005",
        "occupancy_6005.csv",
        "Minneapolis road occupancy %, irregular 5 min with outages (NAB)"
    ),
    sample!(
        "traffic_speed_6005",
        "speed_6005.csv",
        "Minneapolis road speed mph, irregular 5 min with outages (NAB)"
    ),
];

/// The committed model registry of the sample series (`models/` at the repository root: the
/// manifest and every model file, as `prescale retrain` wrote them; see `models/README.md`),
/// embedded so `prescale demo` serves trained models from any directory. Paths are relative to the
/// registry directory.
pub const SAMPLE_MODELS: &[(&str, &[u8])] = include!(concat!(env!("OUT_DIR"), "/sample_models.rs"));

/// Writes [`SAMPLE_MODELS`] into the registry directory `dir`, which should be empty: a server
/// opened on it then serves those models as the live versions of the sample series.
pub fn install_sample_models(dir: &std::path::Path) -> std::io::Result<()> {
    for (relative, bytes) in SAMPLE_MODELS {
        let path = dir.join(relative);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(path, bytes)?;
    }
    Ok(())
}
