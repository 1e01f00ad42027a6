//! `required_state`: which state events of a room a sliding sync client
//! wants, as `(event type, state key)` pairs with the MSC4186 wildcards:
//! `*` for any type or any key, `$ME` for the user's own id as a key, and
//! `["m.room.member", "$LAZY"]` for the members the returned timeline needs.

use std::collections::BTreeSet;

use ruma::{UserId, events::StateEventType};
use serde_json::Value as JsonValue;

const WILDCARD: &str = "*";
const ME: &str = "$ME";
const LAZY: &str = "$LAZY";
const MEMBER: &str = "m.room.member";

/// A room's `required_state`, as requested (merged over every list and
/// subscription that covers the room). Kept with the tokens unresolved so
/// that what a connection was sent compares equal across requests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequiredState {
    pairs: BTreeSet<(String, String)>,
}

impl RequiredState {
    pub fn from_request(pairs: &[(StateEventType, String)]) -> Self {
        Self { pairs: pairs.iter().map(|(kind, key)| (kind.to_string(), key.clone())).collect() }
    }

    /// Adds what `other` asks for (a room in two lists gets the union).
    pub fn merge(&mut self, other: &Self) {
        self.pairs.extend(other.pairs.iter().cloned());
    }

    /// Whether a client sent state for `self` already has everything
    /// `wanted` asks for.
    pub fn covers(&self, wanted: &Self) -> bool {
        wanted.pairs.is_subset(&self.pairs)
    }

    /// Whether the members of the timeline's senders and targets are wanted.
    pub fn lazy_members(&self) -> bool {
        self.pairs.contains(&(MEMBER.to_owned(), LAZY.to_owned()))
    }

    /// The pairs to select in the database, `$ME` resolved and `$LAZY` left
    /// out (the caller adds the members it stands for).
    pub fn selection(&self, user_id: &UserId) -> Vec<(String, String)> {
        self.pairs
            .iter()
            .filter(|(_, key)| key != LAZY)
            .map(|(kind, key)| (kind.clone(), if key == ME { user_id.to_string() } else { key.clone() }))
            .collect()
    }

    /// Whether the state event `(kind, key)` is wanted, not counting `$LAZY`.
    pub fn matches(&self, kind: &str, key: &str, user_id: &UserId) -> bool {
        self.pairs.iter().filter(|(_, want_key)| want_key != LAZY).any(|(want_kind, want_key)| {
            let kind_ok = want_kind == WILDCARD || want_kind == kind;
            let key_ok = want_key == WILDCARD || want_key == key || (want_key == ME && key == user_id.as_str());
            kind_ok && key_ok
        })
    }

    /// The form stored with a connection's rooms: a JSON array of pairs.
    pub fn to_json(&self) -> JsonValue {
        JsonValue::Array(self.pairs.iter().map(|(kind, key)| JsonValue::from(vec![kind.clone(), key.clone()])).collect())
    }

    /// Reads the stored form; anything unreadable reads as "nothing was
    /// sent", which only makes the server send more.
    pub fn from_json(value: &JsonValue) -> Self {
        let pairs = value
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|pair| match pair.as_array()?.as_slice() {
                [kind, key] => Some((kind.as_str()?.to_owned(), key.as_str()?.to_owned())),
                _ => None,
            })
            .collect();
        Self { pairs }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn required(pairs: &[(&str, &str)]) -> RequiredState {
        RequiredState::from_request(&pairs.iter().map(|(kind, key)| (StateEventType::from(*kind), (*key).to_owned())).collect::<Vec<_>>())
    }

    #[test]
    fn wildcards_and_me() {
        let me = ruma::user_id!("@me:example.org");
        let state = required(&[("m.room.name", ""), ("m.room.member", "$ME"), ("*", "shared"), ("m.space.child", "*")]);
        assert!(state.matches("m.room.name", "", me));
        assert!(!state.matches("m.room.topic", "", me));
        assert!(state.matches("m.room.member", "@me:example.org", me));
        assert!(!state.matches("m.room.member", "@other:example.org", me));
        assert!(state.matches("org.example.anything", "shared", me));
        assert!(state.matches("m.space.child", "!any:example.org", me));
        assert!(required(&[("*", "*")]).matches("x", "y", me));
    }

    #[test]
    fn lazy_is_not_a_literal_key() {
        let me = ruma::user_id!("@me:example.org");
        let state = required(&[("m.room.member", "$LAZY"), ("m.room.create", "")]);
        assert!(state.lazy_members());
        assert!(!state.matches("m.room.member", "$LAZY", me));
        assert_eq!(state.selection(me), vec![("m.room.create".to_owned(), String::new())]);
    }

    #[test]
    fn merge_covers_and_round_trip() {
        let mut a = required(&[("m.room.name", "")]);
        let b = required(&[("m.room.topic", "")]);
        assert!(!a.covers(&b));
        a.merge(&b);
        assert!(a.covers(&b));
        assert_eq!(RequiredState::from_json(&a.to_json()), a);
        assert_eq!(RequiredState::from_json(&serde_json::json!("garbage")), RequiredState::default());
    }
}
