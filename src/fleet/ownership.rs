//! Who owns what: the live members as one replica sees them, and rendezvous (highest random weight)
//! hashing of a key (a series id) onto them. Every replica computes the same owner from the same
//! member list, so no assignment is stored anywhere, and when a member joins or leaves only the keys
//! it gains or held move. The hash is xxh3, whose output is fixed by its specification, so replicas
//! built by different Rust releases agree (std's `DefaultHasher` makes no such promise).
//! Source: Thaler and Ravishankar, "A Name-Based Mapping Scheme for Rendezvous" (1996).

use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::xxh3_64;

/// Whether a member takes work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MemberState {
    /// Registered, not yet taking work.
    Joining,
    /// Owns its share of the series.
    Active,
}

/// What a member publishes under its key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberInfo {
    /// Where its gRPC API answers (`host:port`), for forwarded calls.
    pub addr: String,
    /// Where its KEDA external scaler answers, when it serves one.
    #[serde(default)]
    pub scaler_addr: Option<String>,
    /// Whether it takes work.
    pub state: MemberState,
}

/// A live member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Its id (the last part of its key).
    pub id: String,
    /// What it published.
    pub info: MemberInfo,
    /// The revision that created its key: one incarnation of the member.
    pub create_revision: i64,
}

/// The fleet as one replica sees it at one etcd revision.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FleetView {
    /// The live members, by id.
    pub members: Vec<Member>,
    /// The etcd revision the view reflects.
    pub revision: i64,
    /// This replica's id.
    pub self_id: String,
    /// This replica's member key's create revision while it holds its lease; `None` once it has
    /// stepped down (renewal failed past the deadline), when it must not write or serve owned work.
    pub incarnation: Option<i64>,
}

/// Where a call for a key goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route<'a> {
    /// This replica owns the key and serves it.
    Local,
    /// Another member owns it.
    Forward(&'a Member),
    /// Nobody can serve it now: no active member, or this replica owns it but has stepped down.
    Unavailable,
}

impl FleetView {
    /// The active member that owns `key`: the one with the highest xxh3 of `member id, 0, key`
    /// (ties, which need a 64-bit collision, go to the smaller id).
    pub fn owner_of(&self, key: &str) -> Option<&Member> {
        self.members
            .iter()
            .filter(|member| member.info.state == MemberState::Active)
            .max_by(|a, b| {
                weight(&a.id, key)
                    .cmp(&weight(&b.id, key))
                    .then_with(|| b.id.cmp(&a.id))
            })
    }

    /// Where a call for `key` goes from this replica.
    pub fn route(&self, key: &str) -> Route<'_> {
        match self.owner_of(key) {
            Some(owner) if owner.id == self.self_id => {
                if self.incarnation.is_some() {
                    Route::Local
                } else {
                    Route::Unavailable
                }
            }
            Some(owner) => Route::Forward(owner),
            None => Route::Unavailable,
        }
    }

    /// Whether this replica owns `key` and may work on it (it holds its lease).
    pub fn owns(&self, key: &str) -> bool {
        self.route(key) == Route::Local
    }
}

/// The rendezvous weight of `key` on member `id`.
fn weight(id: &str, key: &str) -> u64 {
    let mut bytes = Vec::with_capacity(id.len() + 1 + key.len());
    bytes.extend_from_slice(id.as_bytes());
    bytes.push(0);
    bytes.extend_from_slice(key.as_bytes());
    xxh3_64(&bytes)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn view(ids: &[&str]) -> FleetView {
        FleetView {
            members: ids
                .iter()
                .enumerate()
                .map(|(index, id)| Member {
                    id: (*id).to_owned(),
                    info: MemberInfo {
                        addr: format!("127.0.0.1:{}", 5000 + index),
                        scaler_addr: None,
                        state: MemberState::Active,
                    },
                    create_revision: 1 + index as i64,
                })
                .collect(),
            revision: 10,
            self_id: ids[0].to_owned(),
            incarnation: Some(1),
        }
    }

    fn owners(view: &FleetView, keys: &[String]) -> HashMap<String, String> {
        keys.iter()
            .map(|key| (key.clone(), view.owner_of(key).unwrap().id.clone()))
            .collect()
    }

    #[test]
    fn the_weight_is_xxh3_and_stays_the_same_across_builds() {
        // Pinned: a change of hash would move every series on a mixed-version rollout.
        assert_eq!(
            weight("replica-a", "cpu{app=\"web\"}"),
            weight("replica-a", "cpu{app=\"web\"}")
        );
        assert_eq!(weight("a", "b"), xxh3_64(b"a\0b"));
        assert_eq!(xxh3_64(b""), 0x2d06_8005_38d3_94c2);
    }

    #[test]
    fn keys_spread_evenly_and_only_a_departed_members_keys_move() {
        let keys: Vec<String> = (0..3000).map(|index| format!("series-{index}")).collect();
        let three = view(&["a", "b", "c"]);
        let before = owners(&three, &keys);
        for id in ["a", "b", "c"] {
            let share = before.values().filter(|owner| *owner == id).count();
            assert!((850..=1150).contains(&share), "{id} owns {share} of 3000");
        }
        let two = view(&["a", "c"]);
        let after = owners(&two, &keys);
        for key in &keys {
            if before[key] != "b" {
                assert_eq!(
                    before[key], after[key],
                    "{key} moved though its owner stayed"
                );
            }
        }
        let four = view(&["a", "b", "c", "d"]);
        let grown = owners(&four, &keys);
        let moved = keys
            .iter()
            .filter(|key| before[*key] != grown[*key])
            .count();
        assert!(
            keys.iter()
                .all(|key| before[key] == grown[key] || grown[key] == "d")
        );
        assert!(
            (600..=900).contains(&moved),
            "{moved} of 3000 moved to the fourth"
        );
    }

    #[test]
    fn joining_members_own_nothing_and_a_stepped_down_owner_is_unavailable() {
        let mut fleet = view(&["a", "b"]);
        fleet.members[1].info.state = MemberState::Joining;
        assert!(
            (0..100).all(|index| fleet.owns(&format!("k{index}"))),
            "a joining member takes no key"
        );
        fleet.incarnation = None;
        assert_eq!(fleet.route("k1"), Route::Unavailable);
        fleet.members[1].info.state = MemberState::Active;
        let forwarded = (0..100)
            .filter(|index| matches!(fleet.route(&format!("k{index}")), Route::Forward(member) if member.id == "b"))
            .count();
        assert!(forwarded > 20, "{forwarded} of 100 go to b");
    }
}
