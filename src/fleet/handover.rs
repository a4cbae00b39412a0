//! Handing work over without a gap: a replica joins as [`MemberState::Joining`], computes the
//! plans of the share it will own once active (the owners in the view with every joining member
//! active) while the current owners keep serving, then turns active; and a replica that has
//! stepped down (its etcd lease lost) keeps answering for the share it owned in its last view,
//! read-only. Design: docs/decisions.md, "Fleet mode: replicas coordinated through etcd".

use super::ownership::{FleetView, Member, MemberState};

impl FleetView {
    /// This replica's member in the view, if its key is in it.
    pub fn self_member(&self) -> Option<&Member> {
        self.members.iter().find(|member| member.id == self.self_id)
    }

    /// Whether this replica holds its lease and has registered as joining: it warms its future
    /// share and owns nothing yet.
    pub fn is_joining(&self) -> bool {
        self.incarnation.is_some()
            && self
                .self_member()
                .is_some_and(|member| member.info.state == MemberState::Joining)
    }

    /// Whether this replica has stepped down (its lease renewals failed, or its member key went)
    /// after having been a member: it serves what it owned in its last view, read-only, and
    /// writes nothing until it has registered again.
    pub fn is_read_only(&self) -> bool {
        self.incarnation.is_none() && !self.members.is_empty()
    }

    /// The member that will own `key` once every joining member is active: the rendezvous winner
    /// over every live member.
    pub fn future_owner_of(&self, key: &str) -> Option<&Member> {
        let mut settled = self.clone();
        for member in &mut settled.members {
            member.info.state = MemberState::Active;
        }
        let id = settled.owner_of(key)?.id.clone();
        self.members.iter().find(|member| member.id == id)
    }

    /// Whether this replica, joining, will own `key` once active: it plans `key` ahead.
    pub fn warms(&self, key: &str) -> bool {
        self.is_joining()
            && self
                .future_owner_of(key)
                .is_some_and(|member| member.id == self.self_id)
    }

    /// Whether `key` is this replica's in its last view although it has stepped down: it answers
    /// for `key` from what it holds and changes nothing.
    pub fn holds_read_only(&self, key: &str) -> bool {
        self.is_read_only()
            && self
                .owner_of(key)
                .is_some_and(|member| member.id == self.self_id)
    }
}

#[cfg(test)]
mod tests {
    use super::super::ownership::MemberInfo;
    use super::*;

    fn member(id: &str, state: MemberState, revision: i64) -> Member {
        Member {
            id: id.to_owned(),
            info: MemberInfo {
                addr: format!("{id}:1"),
                scaler_addr: None,
                state,
            },
            create_revision: revision,
        }
    }

    #[test]
    fn a_joining_member_warms_exactly_the_keys_it_will_own() {
        let view = FleetView {
            members: vec![
                member("a", MemberState::Active, 1),
                member("b", MemberState::Active, 2),
                member("c", MemberState::Active, 3),
                member("d", MemberState::Joining, 4),
            ],
            revision: 4,
            self_id: "d".to_owned(),
            incarnation: Some(4),
        };
        let mut settled = view.clone();
        settled.members[3].info.state = MemberState::Active;
        let keys: Vec<String> = (0..400).map(|index| format!("k{index}")).collect();
        let warmed = keys.iter().filter(|key| view.warms(key)).count();
        assert!((60..=140).contains(&warmed), "{warmed} of 400");
        for key in &keys {
            assert_eq!(view.warms(key), settled.owns(key), "{key}");
            assert!(!view.owns(key), "a joining member owns nothing");
        }
    }

    #[test]
    fn a_stepped_down_member_holds_its_last_share_read_only() {
        let mut view = FleetView {
            members: vec![
                member("a", MemberState::Active, 1),
                member("b", MemberState::Active, 2),
            ],
            revision: 2,
            self_id: "a".to_owned(),
            incarnation: Some(1),
        };
        let keys: Vec<String> = (0..100).map(|index| format!("k{index}")).collect();
        let owned: Vec<bool> = keys.iter().map(|key| view.owns(key)).collect();
        assert!(!view.is_read_only());
        view.incarnation = None;
        assert!(view.is_read_only());
        for (key, owned) in keys.iter().zip(owned) {
            assert_eq!(view.holds_read_only(key), owned, "{key}");
            assert!(!view.owns(key));
        }
    }
}
