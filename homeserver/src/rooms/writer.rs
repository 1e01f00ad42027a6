//! The one writer of a room: builds PDUs, authorizes them against the
//! room's current state and persists them, all inside one transaction that
//! holds the room's row lock. Two workers sending into one room queue on
//! that lock, so a room's events form one line and never fork.

use std::{collections::BTreeSet, time::Instant};

use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, DeviceId, MilliSecondsSinceUnixEpoch, OwnedEventId, OwnedRoomId,
    OwnedUserId, RoomId, RoomVersionId, UserId,
    canonical_json::{redact, to_canonical_value},
    events::TimelineEventType,
    room_version_rules::RoomVersionRules,
    signatures::{JsonError, hash_and_sign_event, reference_hash},
    state_res,
};
use serde_json::Value as JsonValue;
use sqlx::{Postgres, Transaction};

use super::pdu::{ClientEvent, Pdu};
use crate::{
    http::{
        ApiError, ApiResult,
        limits::{self, MAX_EVENT_BYTES},
    },
    server::Homeserver,
    storage::{self, events, memberships},
};

/// An event a local user wants to add to a room.
#[derive(Clone, Debug)]
pub struct NewEvent {
    pub kind: TimelineEventType,
    pub content: JsonValue,
    pub state_key: Option<String>,
    pub redacts: Option<OwnedEventId>,
}

impl NewEvent {
    pub fn state(kind: TimelineEventType, state_key: impl Into<String>, content: JsonValue) -> Self {
        Self { kind, content, state_key: Some(state_key.into()), redacts: None }
    }

    pub fn message(kind: TimelineEventType, content: JsonValue) -> Self {
        Self { kind, content, state_key: None, redacts: None }
    }
}

/// A client's transaction id, for idempotent sends.
#[derive(Clone, Copy, Debug)]
pub struct TxnRef<'a> {
    pub device_id: &'a DeviceId,
    pub txn_id: &'a str,
}

/// An open write transaction on one room.
pub struct RoomWriter<'s> {
    server: &'s Homeserver,
    tx: Transaction<'static, Postgres>,
    room_id: OwnedRoomId,
    rules: RoomVersionRules,
    last_event_id: Option<OwnedEventId>,
    depth: i64,
    /// Users to wake after commit besides the joined members (invitees,
    /// users who just left).
    wake: BTreeSet<OwnedUserId>,
    /// When the transaction was begun, for `event_persist_duration_seconds`.
    opened: Instant,
    /// Events stored so far (a retried transaction id stores none).
    persisted: u64,
    /// Local users' membership changes, for their indexes after commit
    /// (see `user_index`).
    index: Vec<memberships::IndexEntry>,
}

impl<'s> RoomWriter<'s> {
    /// Opens an existing room for writing; 404 if the server does not know it.
    pub async fn open(server: &'s Homeserver, room_id: &RoomId) -> ApiResult<Self> {
        let opened = Instant::now();
        let mut tx = server.db.room_shard(room_id).begin().await?;
        let Some(head) = events::lock_room(&mut tx, room_id).await? else {
            return Err(ApiError::not_found("Unknown room"));
        };
        let version = RoomVersionId::try_from(head.room_version.as_str())
            .map_err(|_| ApiError::Internal(anyhow::anyhow!("stored room version {} is invalid", head.room_version)))?;
        Ok(Self {
            server,
            tx,
            room_id: room_id.to_owned(),
            rules: rules_of(&version)?,
            last_event_id: head.last_event_id.and_then(|id| OwnedEventId::try_from(id).ok()),
            depth: head.depth,
            wake: BTreeSet::new(),
            opened,
            persisted: 0,
            index: Vec::new(),
        })
    }

    /// Creates the room row; the caller appends `m.room.create` next.
    pub async fn create(server: &'s Homeserver, room_id: &RoomId, version: &RoomVersionId, creator: &UserId) -> ApiResult<Self> {
        let opened = Instant::now();
        let mut tx = server.db.room_shard(room_id).begin().await?;
        events::insert_room(&mut tx, room_id, version.as_str(), creator).await?;
        events::lock_room(&mut tx, room_id).await?;
        Ok(Self {
            server,
            tx,
            room_id: room_id.to_owned(),
            rules: rules_of(version)?,
            last_event_id: None,
            depth: 0,
            wake: BTreeSet::new(),
            opened,
            persisted: 0,
            index: Vec::new(),
        })
    }

    /// Appends one event and commits: the common case of a single send.
    pub async fn append_one(server: &'s Homeserver, room_id: &RoomId, sender: &UserId, event: NewEvent, txn: Option<TxnRef<'_>>) -> ApiResult<OwnedEventId> {
        let mut writer = Self::open(server, room_id).await?;
        let event_id = writer.append(sender, event, txn).await?;
        writer.commit().await?;
        Ok(event_id)
    }

    pub fn room_id(&self) -> &RoomId {
        &self.room_id
    }

    /// The open transaction, for reads that must see this writer's events.
    pub fn conn(&mut self) -> &mut sqlx::PgConnection {
        &mut self.tx
    }

    /// Builds, authorizes and stores one event. With a transaction id that
    /// was already used, returns the earlier event instead.
    pub async fn append(&mut self, sender: &UserId, new: NewEvent, txn: Option<TxnRef<'_>>) -> ApiResult<OwnedEventId> {
        if let Some(txn) = txn
            && let Some(existing) = events::event_for_txn(&mut self.tx, &self.room_id, sender, txn.device_id, txn.txn_id).await?
        {
            return OwnedEventId::try_from(existing).map_err(|err| ApiError::Internal(err.into()));
        }

        let content_raw = serde_json::value::to_raw_value(&new.content)?;
        let auth_types = state_res::auth_types_for_event(&new.kind, sender, new.state_key.as_deref(), &content_raw, &self.rules.authorization)
            .map_err(ApiError::bad_json)?;
        let keys: Vec<(String, String)> = auth_types.into_iter().map(|(kind, key)| (kind.to_string(), key)).collect();
        let auth_pdus = events::current_state_pdus(&mut self.tx, &self.room_id, &keys).await?;

        let (pdu, json) = self.build_pdu(sender, &new, &auth_pdus)?;
        authorize(&self.rules, &pdu, &auth_pdus)?;
        self.persist(pdu, json, &new, txn).await
    }

    /// The signed PDU for `new` on top of the room's head.
    fn build_pdu(&self, sender: &UserId, new: &NewEvent, auth_pdus: &[Pdu]) -> ApiResult<(Pdu, JsonValue)> {
        if !new.content.is_object() {
            return Err(ApiError::bad_json("Event content must be a JSON object"));
        }
        limits::check_event_field("type", &new.kind.to_string())?;
        if let Some(state_key) = &new.state_key {
            limits::check_event_field("state_key", state_key)?;
        }
        let content = to_canonical_value(&new.content)
            .map_err(|err| ApiError::bad_json(format!("Event content is not canonical JSON: {err}")))?;
        let mut auth_events: Vec<String> = auth_pdus.iter().map(|pdu| pdu.event_id.to_string()).collect();
        auth_events.sort();
        let strings = |items: Vec<String>| CanonicalJsonValue::Array(items.into_iter().map(CanonicalJsonValue::String).collect());

        let mut object = CanonicalJsonObject::new();
        object.insert("auth_events".into(), strings(auth_events));
        object.insert("content".into(), content);
        object.insert("depth".into(), CanonicalJsonValue::Integer((self.depth + 1).try_into().map_err(|_| ApiError::forbidden("Room is too deep"))?));
        object.insert("origin_server_ts".into(), CanonicalJsonValue::Integer(MilliSecondsSinceUnixEpoch::now().get().into()));
        object.insert("prev_events".into(), strings(self.last_event_id.iter().map(ToString::to_string).collect()));
        object.insert("room_id".into(), CanonicalJsonValue::String(self.room_id.to_string()));
        object.insert("sender".into(), CanonicalJsonValue::String(sender.to_string()));
        object.insert("type".into(), CanonicalJsonValue::String(new.kind.to_string()));
        if let Some(state_key) = &new.state_key {
            object.insert("state_key".into(), CanonicalJsonValue::String(state_key.clone()));
        }
        if let Some(redacts) = &new.redacts {
            object.insert("redacts".into(), CanonicalJsonValue::String(redacts.to_string()));
        }

        // The content hash is taken over the event without signatures: an
        // event over the limit fails already here.
        hash_and_sign_event(self.server.server_name().as_str(), &self.server.signing_key, &mut object, &self.rules.redaction).map_err(|err| match err {
            JsonError::PduTooLarge => too_large(),
            err => ApiError::Internal(anyhow::anyhow!("signing event: {err}")),
        })?;
        let hash = reference_hash(&object, &self.rules).map_err(|err| ApiError::Internal(anyhow::anyhow!("hashing event: {err}")))?;
        let event_id = OwnedEventId::try_from(format!("${hash}")).map_err(|err| ApiError::Internal(err.into()))?;
        let text = serde_json::to_string(&object)?;
        if text.len() > MAX_EVENT_BYTES {
            return Err(too_large());
        }
        let json = serde_json::to_value(&object)?;
        let pdu = Pdu::from_json(event_id, &text)?;
        Ok((pdu, json))
    }

    async fn persist(&mut self, pdu: Pdu, json: JsonValue, new: &NewEvent, txn: Option<TxnRef<'_>>) -> ApiResult<OwnedEventId> {
        let unsigned = match &new.state_key {
            Some(key) => events::current_state_entry(&mut *self.tx, &self.room_id, &new.kind.to_string(), key)
                .await?
                .map(|(id, content, sender)| serde_json::json!({ "prev_content": content, "replaces_state": id, "prev_sender": sender })),
            None => None,
        };

        let stream_pos = storage::stream::advance(&mut self.tx).await?;
        let depth = self.depth + 1;
        events::insert_event(
            &mut self.tx,
            events::NewEventRow { pdu: &pdu, json: &json, stream_pos, unsigned, txn: txn.map(|t| (t.device_id, t.txn_id)) },
        )
        .await?;
        events::set_room_head(&mut self.tx, &self.room_id, &pdu.event_id, depth, stream_pos).await?;

        if let Some(state_key) = &pdu.state_key {
            events::set_current_state(&mut self.tx, &self.room_id, &pdu.kind.to_string(), state_key, &pdu.event_id, stream_pos).await?;
            if pdu.kind == TimelineEventType::RoomMember {
                self.record_membership(&pdu, state_key, stream_pos).await?;
            }
        }
        if let (TimelineEventType::RoomRedaction, Some(target)) = (&pdu.kind, &pdu.redacts) {
            let redaction = ClientEvent::from_stored(pdu.event_id.clone(), stream_pos, &json, None, None);
            self.apply_redaction(target, &JsonValue::Object(redaction.json)).await?;
        }

        self.depth = depth;
        self.last_event_id = Some(pdu.event_id.clone());
        self.persisted += 1;
        Ok(pdu.event_id)
    }

    async fn record_membership(&mut self, pdu: &Pdu, state_key: &str, stream_pos: i64) -> ApiResult<()> {
        let Ok(target) = UserId::parse(state_key) else { return Ok(()) };
        let content = pdu.content_value();
        let membership = content.get("membership").and_then(JsonValue::as_str).unwrap_or("leave");
        let local = target.server_name() == self.server.server_name();
        let changed_ts: i64 = pdu.origin_server_ts.get().into();
        let change = memberships::MembershipChange {
            room_id: &self.room_id,
            user_id: &target,
            membership,
            event_id: pdu.event_id.as_str(),
            stream_pos,
            displayname: content.get("displayname").and_then(JsonValue::as_str),
            avatar_url: content.get("avatar_url").and_then(JsonValue::as_str),
            index_pending: local,
            changed_ts,
        };
        memberships::set_room_membership(&mut self.tx, &change).await?;
        if local {
            self.index.push(memberships::IndexEntry {
                room_id: self.room_id.to_string(),
                user_id: target.to_string(),
                membership: membership.to_owned(),
                event_id: pdu.event_id.to_string(),
                stream_pos,
                changed_ts,
            });
        }
        self.wake.insert(target);
        Ok(())
    }

    /// Replaces the target's content by its redacted form (redaction rules
    /// of the room version); the target must be in this room.
    async fn apply_redaction(&mut self, target: &ruma::EventId, redaction: &JsonValue) -> ApiResult<()> {
        let Some(stored) = events::pdu_json(&mut self.tx, &self.room_id, target).await? else {
            return Ok(());
        };
        let object: CanonicalJsonObject = serde_json::from_str(&stored)?;
        let redacted = redact(object, &self.rules.redaction, None).map_err(|err| ApiError::Internal(anyhow::anyhow!("redacting: {err}")))?;
        events::store_redaction(&mut self.tx, &self.room_id, target, &serde_json::to_value(&redacted)?, redaction).await?;
        Ok(())
    }

    /// Commits, carries membership changes into the users' indexes, then
    /// wakes the push processors and every member's waiting syncs. Nothing
    /// is acknowledged to a client before this returns.
    pub async fn commit(self) -> ApiResult<()> {
        let Self { server, tx, room_id, mut wake, opened, persisted, index, .. } = self;
        tx.commit().await?;
        server.metrics.events.committed(opened, persisted);
        server.push_wakeup.events_committed();
        for entry in &index {
            super::user_index::apply(server, entry).await?;
        }
        wake.extend(memberships::members_with(server.db.room_shard(&room_id), &room_id, &["join"]).await?);
        server.notifier.notify_users(wake.iter());
        Ok(())
    }
}

/// The rules of a room version this server implements.
pub fn rules_of(version: &RoomVersionId) -> ApiResult<RoomVersionRules> {
    version.rules().ok_or_else(|| ApiError::Internal(anyhow::anyhow!("no rules for room version {version}")))
}

/// 413 `M_TOO_LARGE`: the event with its envelope is over the spec's limit.
fn too_large() -> ApiError {
    ApiError::too_large(format!("Event is larger than {MAX_EVENT_BYTES} bytes"))
}

/// Checks the event against the authorization rules with the room's current
/// state; failures are the client's: 403 with the rule that failed.
fn authorize(rules: &RoomVersionRules, pdu: &Pdu, auth_pdus: &[Pdu]) -> ApiResult<()> {
    let by_id = |id: &ruma::EventId| auth_pdus.iter().find(|p| p.event_id == id).cloned();
    let by_key = |kind: &ruma::events::StateEventType, key: &str| {
        let kind = kind.to_string();
        auth_pdus.iter().find(|p| p.kind.to_string() == kind && p.state_key.as_deref() == Some(key)).cloned()
    };
    state_res::check_state_independent_auth_rules(&rules.authorization, pdu, by_id)
        .and_then(|()| state_res::check_state_dependent_auth_rules(&rules.authorization, pdu, by_key))
        .map_err(|reason| ApiError::forbidden(format!("Event not allowed: {reason}")))
}
