//! The live pointer of a series' model in a fleet: the value of the series' record in the
//! fleet-wide `models` table (in etcd), naming the version file in the model store that is live and the versions live
//! before it (rollbacks return to those). Version files are immutable; only the pointer moves.
//! Design: docs/decisions.md, "Fleet mode: models in an object store".

use serde::{Deserialize, Serialize};

use super::{RegistryError, StoredVersion};

/// The fleet-wide table of live pointers, one record per series (named by its canonical form).
pub const MODELS_TABLE: &str = "models";

/// Earlier live versions a pointer remembers.
const EARLIER_KEPT: usize = 8;

/// The live pointer of one series.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LivePointer {
    /// The live version.
    pub live: StoredVersion,
    /// Versions live before it, oldest first (at most eight); a rollback returns to the newest.
    pub earlier: Vec<StoredVersion>,
    /// Who moved the pointer: a member id, or `prescale models rollback`.
    pub moved_by: String,
    /// Why it moved.
    pub decision: String,
    /// Versions below this one that the pointer does not name may be deleted (the owner's
    /// retention, `[registry] keep_versions`): a rollback to one is refused. The owner raises it
    /// in a write that requires the pointer unchanged since it read it, before it deletes, so a
    /// rollback and a deletion never both act on one version. 0 in records written before it.
    #[serde(default)]
    pub retired_below: u64,
}

impl LivePointer {
    /// The pointer after `stored` is promoted over `previous` (the current pointer, if any).
    pub fn promoted(
        previous: Option<LivePointer>,
        stored: StoredVersion,
        moved_by: &str,
        decision: &str,
    ) -> Self {
        let retired_below = previous
            .as_ref()
            .map_or(0, |previous| previous.retired_below);
        let mut earlier = previous.map_or_else(Vec::new, |previous| {
            let mut earlier = previous.earlier;
            earlier.push(previous.live);
            earlier
        });
        let excess = earlier.len().saturating_sub(EARLIER_KEPT);
        earlier.drain(..excess);
        Self {
            live: stored,
            earlier,
            moved_by: moved_by.to_owned(),
            decision: decision.to_owned(),
            retired_below,
        }
    }

    /// The versions this pointer names: the live one and the earlier ones.
    pub fn named(&self) -> impl Iterator<Item = u64> + '_ {
        self.stored().map(|stored| stored.version)
    }

    /// The stored versions this pointer names: the live one, then the earlier ones.
    fn stored(&self) -> impl Iterator<Item = &StoredVersion> {
        std::iter::once(&self.live).chain(&self.earlier)
    }

    /// This pointer with the versions below `version` that it does not name retired (see
    /// [`LivePointer::retired_below`]); it never moves back. The live version, and who moved it
    /// there and why, stay.
    pub fn retiring_below(&self, version: u64) -> Self {
        Self {
            retired_below: self.retired_below.max(version),
            ..self.clone()
        }
    }

    /// The version a rollback to `version` goes to when this pointer remembers it (by default
    /// the newest earlier live version).
    pub fn remembered(&self, version: Option<u64>) -> Option<&StoredVersion> {
        match version {
            Some(wanted) => self.stored().find(|stored| stored.version == wanted),
            None => self.earlier.last(),
        }
    }

    /// The pointer after a rollback to `target`: the live and earlier versions below it stay
    /// earlier ones, to roll back further.
    pub fn rolled_back(&self, target: StoredVersion, moved_by: &str) -> Self {
        Self {
            earlier: self
                .earlier
                .iter()
                .chain(std::iter::once(&self.live))
                .filter(|stored| stored.version < target.version)
                .cloned()
                .collect(),
            decision: format!(
                "rolled back from version {} to version {}",
                self.live.version, target.version
            ),
            live: target,
            moved_by: moved_by.to_owned(),
            retired_below: self.retired_below,
        }
    }

    /// The record's value.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("invariant: a pointer of strings and numbers encodes")
    }

    /// A record's value read back.
    pub fn decode(series: &str, value: &[u8]) -> Result<Self, RegistryError> {
        serde_json::from_slice(value).map_err(|error| RegistryError::Pointer {
            series: series.to_owned(),
            reason: error.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(version: u64) -> StoredVersion {
        StoredVersion {
            version,
            key: format!("s/v{version:06}.model"),
            crc32: 7,
            bytes: 10,
        }
    }

    #[test]
    fn a_pointer_remembers_earlier_live_versions_and_rolls_back_to_them() {
        let mut pointer = LivePointer::promoted(None, stored(1), "m0", "no live model");
        for version in 2..=11 {
            pointer = LivePointer::promoted(Some(pointer), stored(version), "m0", "promoted");
        }
        assert_eq!(pointer.live.version, 11);
        let earlier: Vec<u64> = pointer.earlier.iter().map(|s| s.version).collect();
        assert_eq!(earlier, [3, 4, 5, 6, 7, 8, 9, 10]);
        assert_eq!(pointer.remembered(None).map(|s| s.version), Some(10));
        assert_eq!(pointer.remembered(Some(5)).map(|s| s.version), Some(5));
        assert_eq!(pointer.remembered(Some(2)), None);
        let back = pointer.rolled_back(stored(5), "operator");
        assert_eq!(back.live.version, 5);
        let earlier: Vec<u64> = back.earlier.iter().map(|s| s.version).collect();
        assert_eq!(earlier, [3, 4]);
        assert_eq!(LivePointer::decode("s", &back.encode()).unwrap(), back);
        assert!(LivePointer::decode("s", b"{}").is_err());
        // Forward to a version never live (a retrain that was not promoted): the one it replaces
        // is remembered.
        let forward = back.rolled_back(stored(12), "operator");
        assert_eq!(forward.remembered(None).map(|s| s.version), Some(5));
    }

    #[test]
    fn the_retired_floor_only_rises_and_outlives_promotions_and_rollbacks() {
        let pointer = LivePointer::promoted(None, stored(1), "m0", "no live model");
        let pointer = LivePointer::promoted(Some(pointer), stored(4), "m0", "promoted");
        assert_eq!(pointer.named().collect::<Vec<_>>(), [4, 1]);
        let retired = pointer.retiring_below(3);
        assert_eq!(retired.retired_below, 3);
        assert_eq!(retired.retiring_below(2).retired_below, 3);
        let promoted = LivePointer::promoted(Some(retired.clone()), stored(5), "m0", "promoted");
        assert_eq!(promoted.retired_below, 3);
        assert_eq!(promoted.rolled_back(stored(4), "operator").retired_below, 3);
        assert_eq!(
            LivePointer::decode("s", &retired.encode()).unwrap(),
            retired
        );
        // A record written before the floor existed reads as retiring nothing.
        let mut old: serde_json::Value = serde_json::from_slice(&pointer.encode()).unwrap();
        old.as_object_mut().unwrap().remove("retired_below");
        let old = LivePointer::decode("s", &serde_json::to_vec(&old).unwrap()).unwrap();
        assert_eq!(old.retired_below, 0);
    }
}
