//! How a [`FittedModel`] is stored: the calibrated ensemble and the newest points, under the
//! field names `learned`, `recent` and `recent_start`. Model files are written with
//! `rmp_serde::to_vec_named`, so these names (and those of every type inside) are the file format:
//! renaming one is a format change that needs a migration.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::domain::Timestamp;

use super::fitted::{CalibratedEnsemble, FittedModel};

/// The serialised form of a [`FittedModel`], borrowed for writing.
#[derive(Serialize)]
struct SerializedModelRef<'a> {
    /// What the fit learned.
    learned: &'a CalibratedEnsemble,
    /// Newest gap-free values on the model scale.
    recent: &'a [f64],
    /// Time of `recent[0]`.
    recent_start: Timestamp,
}

/// The serialised form of a [`FittedModel`], owned for reading.
#[derive(Deserialize)]
struct SerializedModel {
    /// What the fit learned.
    learned: CalibratedEnsemble,
    /// Newest gap-free values on the model scale.
    recent: Vec<f64>,
    /// Time of `recent[0]`.
    recent_start: Timestamp,
}

impl Serialize for FittedModel {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        SerializedModelRef {
            learned: &self.ensemble,
            recent: &self.recent,
            recent_start: self.recent_start,
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for FittedModel {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let stored = SerializedModel::deserialize(deserializer)?;
        stored.learned.check().map_err(serde::de::Error::custom)?;
        if stored.recent.is_empty() {
            return Err(serde::de::Error::custom("a model holds its newest points"));
        }
        let points = i64::try_from(stored.recent.len()).unwrap_or(i64::MAX);
        let end = stored
            .recent_start
            .saturating_add_millis(points.saturating_mul(stored.learned.step.as_millis()));
        Ok(FittedModel {
            non_negative: stored.learned.summary.non_negative,
            ensemble: Arc::new(stored.learned),
            recent: stored.recent,
            recent_start: stored.recent_start,
            end,
        })
    }
}
