//! What an appservice is sent (spec: "the homeserver should send events
//! that match the namespaces"): events sent by or about (`state_key`) a
//! user of its namespaces, and everything in a room that is in its rooms
//! namespace, has a joined or invited member of its users namespace, or
//! whose canonical alias (or an alternative) is in its aliases namespace.
//!
//! Rooms are judged by their current members and aliases when the batch
//! meets them (one query per room and batch, on the room's database): a
//! room a ghost has since left is no longer of interest for events the
//! ghost saw.

use std::collections::HashMap;

use serde_json::Value as JsonValue;

use super::Appservice;
use crate::{
    server::Homeserver,
    storage::{events::{self, StoredEvent}, memberships},
};

/// One batch's judgement of events and rooms for one appservice.
pub struct Interest<'a> {
    server: &'a Homeserver,
    appservice: &'a Appservice,
    rooms: HashMap<String, bool>,
}

impl<'a> Interest<'a> {
    pub fn new(server: &'a Homeserver, appservice: &'a Appservice) -> Self {
        Self { server, appservice, rooms: HashMap::new() }
    }

    /// Whether the appservice gets the event.
    pub async fn event(&mut self, event: &StoredEvent) -> sqlx::Result<bool> {
        let Some(room_id) = event.pdu.get("room_id").and_then(JsonValue::as_str) else { return Ok(false) };
        let about_user = event.pdu.get("type").and_then(JsonValue::as_str) == Some("m.room.member")
            && event.pdu.get("state_key").and_then(JsonValue::as_str).is_some_and(|user| self.appservice.is_user(user));
        if about_user {
            // Its later events in this batch are the appservice's too.
            self.rooms.insert(room_id.to_owned(), true);
            return Ok(true);
        }
        if self.appservice.is_user(&event.sender) {
            return Ok(true);
        }
        self.room(room_id).await
    }

    /// Whether the appservice gets what happens in the room.
    pub async fn room(&mut self, room_id: &str) -> sqlx::Result<bool> {
        if let Some(known) = self.rooms.get(room_id) {
            return Ok(*known);
        }
        let interested = self.judge_room(room_id).await?;
        self.rooms.insert(room_id.to_owned(), interested);
        Ok(interested)
    }

    async fn judge_room(&self, room_id: &str) -> sqlx::Result<bool> {
        let namespaces = &self.appservice.namespaces;
        if namespaces.is_room(room_id) {
            return Ok(true);
        }
        let Ok(room) = ruma::OwnedRoomId::try_from(room_id) else { return Ok(false) };
        let db = self.server.db.room_shard(&room);
        let members = memberships::members_with(db, &room, &["join", "invite"]).await?;
        if members.iter().any(|member| self.appservice.is_user(member.as_str())) {
            return Ok(true);
        }
        let Some(aliases) = events::current_state_event(db, &room, "m.room.canonical_alias", "").await? else { return Ok(false) };
        let content = aliases.pdu.get("content");
        let canonical = content.and_then(|content| content.get("alias")).and_then(JsonValue::as_str);
        let alternatives = content.and_then(|content| content.get("alt_aliases")).and_then(JsonValue::as_array).into_iter().flatten().filter_map(JsonValue::as_str);
        Ok(canonical.into_iter().chain(alternatives).any(|alias| namespaces.is_alias(alias)))
    }
}
