//! Push rule evaluation: who an event notifies, and how.
//!
//! Each local member's ruleset is run by ruma (`Ruleset::get_actions`) with
//! the room's context as the spec defines it: member count, the member's
//! display name in the room and the power levels (for
//! `sender_notification_permission`, i.e. `@room`). The context is the
//! room's current state, read when a batch first meets the room: it trails
//! the events by the processor's lag (milliseconds), and members who joined
//! after an event are left out by position. Rooms and rulesets are cached
//! for one batch.

use std::collections::HashMap;

use anyhow::Context as _;
use ruma::{
    OwnedRoomId, OwnedUserId, RoomId, RoomVersionId, UInt, UserId,
    events::{
        AnySyncTimelineEvent,
        room::power_levels::{RoomPowerLevels, RoomPowerLevelsEventContent, RoomPowerLevelsSource},
    },
    push::{Action, PushConditionPowerLevelsCtx, PushConditionRoomCtx, Ruleset, Tweak},
    serde::Raw,
};
use serde_json::Value as JsonValue;

use crate::{
    server::Homeserver,
    storage::{events, events::StoredEvent, memberships},
};

/// What one recipient's rules decided about one event; only events that
/// notify or highlight someone produce one.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub user_id: OwnedUserId,
    pub notify: bool,
    pub highlight: bool,
    /// The `set_tweak` actions (sound, highlight, …) for the push gateway.
    pub tweaks: Vec<Tweak>,
}

/// A room as push rules see it, at the time of an event.
struct RoomContext {
    member_count: UInt,
    /// Local joined members: `(user, display name, position of their member event)`.
    members: Vec<(OwnedUserId, String, i64)>,
    power_levels: PushConditionPowerLevelsCtx,
}

/// Evaluates the events of one batch, caching what several events share.
pub struct Evaluator<'s> {
    server: &'s Homeserver,
    rooms: HashMap<OwnedRoomId, RoomContext>,
    rulesets: HashMap<OwnedUserId, Ruleset>,
}

impl<'s> Evaluator<'s> {
    pub fn new(server: &'s Homeserver) -> Self {
        Self { server, rooms: HashMap::new(), rulesets: HashMap::new() }
    }

    /// The outcomes of `event` for every local member that was joined when
    /// it was sent (and the invitee of an invite), the sender excepted.
    pub async fn evaluate(&mut self, room_id: &RoomId, event: &StoredEvent) -> anyhow::Result<Vec<Outcome>> {
        let Ok(sender) = OwnedUserId::try_from(event.sender.as_str()) else {
            tracing::warn!(event_id = %event.event_id, "not evaluating push rules for an event with an invalid sender");
            return Ok(Vec::new());
        };
        let raw: Raw<AnySyncTimelineEvent> = Raw::from_json(serde_json::value::to_raw_value(&event.pdu)?);
        let context = self.room(room_id).await?;
        // One context per event; only the recipient's fields change below.
        let mut room_context = PushConditionRoomCtx::new(room_id.to_owned(), context.member_count, sender, String::new())
            .with_power_levels(context.power_levels.clone());
        let mut recipients: Vec<(OwnedUserId, String)> = context
            .members
            .iter()
            .filter(|(user_id, _, joined_at)| *joined_at < event.stream_pos && user_id.as_str() != event.sender)
            .map(|(user_id, name, _)| (user_id.clone(), name.clone()))
            .collect();
        recipients.extend(self.local_invitee(event));

        let mut outcomes = Vec::new();
        for (user_id, display_name) in recipients {
            room_context.user_id = user_id;
            room_context.user_display_name = display_name;
            let actions = self.ruleset(&room_context.user_id).await?.get_actions(&raw, &room_context).await;
            let notify = actions.iter().any(Action::should_notify);
            let highlight = actions.iter().any(Action::is_highlight);
            if notify || highlight {
                let tweaks = actions.iter().filter_map(|action| match action {
                    Action::SetTweak(tweak) => Some(tweak.clone()),
                    _ => None,
                });
                let tweaks = tweaks.collect();
                outcomes.push(Outcome { user_id: room_context.user_id.clone(), notify, highlight, tweaks });
            }
        }
        Ok(outcomes)
    }

    /// The local target of an invite, with the display name the invite
    /// carries: `.m.rule.invite_for_me` is for them, who are not joined yet.
    fn local_invitee(&self, event: &StoredEvent) -> Option<(OwnedUserId, String)> {
        let content = event.pdu.get("content")?;
        if event.pdu.get("type")?.as_str()? != "m.room.member" || content.get("membership")?.as_str()? != "invite" {
            return None;
        }
        let invitee = UserId::parse(event.pdu.get("state_key")?.as_str()?).ok()?;
        let display_name = content.get("displayname").and_then(JsonValue::as_str).unwrap_or_default().to_owned();
        (invitee.server_name() == self.server.server_name() && invitee.as_str() != event.sender).then_some((invitee, display_name))
    }

    /// The user's ruleset; the server defaults if the stored one does not
    /// parse, so one bad row cannot stop the stream for everyone.
    async fn ruleset(&mut self, user_id: &UserId) -> anyhow::Result<&Ruleset> {
        if !self.rulesets.contains_key(user_id) {
            let ruleset = match super::ruleset(self.server.db.user_shard(user_id), user_id).await {
                Ok(ruleset) => ruleset,
                Err(err) if err.is::<serde_json::Error>() => {
                    tracing::warn!(%user_id, error = %err, "stored push rules do not parse; using the defaults");
                    Ruleset::server_default(user_id)
                }
                Err(err) => return Err(err),
            };
            self.rulesets.insert(user_id.to_owned(), ruleset);
        }
        Ok(&self.rulesets[user_id])
    }

    async fn room(&mut self, room_id: &RoomId) -> anyhow::Result<&RoomContext> {
        if !self.rooms.contains_key(room_id) {
            let context = self.load_room(room_id).await?;
            self.rooms.insert(room_id.to_owned(), context);
        }
        Ok(&self.rooms[room_id])
    }

    async fn load_room(&self, room_id: &RoomId) -> anyhow::Result<RoomContext> {
        let db = self.server.db.room_shard(room_id);
        let joined = memberships::joined_members(db, room_id).await?;
        let member_count = UInt::try_from(joined.len()).unwrap_or(UInt::MAX);
        let members = joined
            .into_iter()
            .filter_map(|member| {
                let user_id = OwnedUserId::try_from(member.user_id).ok()?;
                (user_id.server_name() == self.server.server_name()).then(|| (user_id, member.displayname.unwrap_or_default(), member.stream_pos))
            })
            .collect();
        Ok(RoomContext { member_count, members, power_levels: self.power_levels(room_id).await? })
    }

    /// The room's current power levels; the spec's defaults (the creator at
    /// 100) when it has none or they do not parse.
    async fn power_levels(&self, room_id: &RoomId) -> anyhow::Result<PushConditionPowerLevelsCtx> {
        let db = self.server.db.room_shard(room_id);
        let version = events::room_version(db, room_id).await?.with_context(|| format!("room {room_id} has no version"))?;
        let version = RoomVersionId::try_from(version.as_str())?;
        let rules = version.rules().with_context(|| format!("no rules for room version {version}"))?;
        let creator = events::current_state_event(db, room_id, "m.room.create", "")
            .await?
            .and_then(|create| OwnedUserId::try_from(create.sender).ok());
        let content = events::current_state_event(db, room_id, "m.room.power_levels", "")
            .await?
            .and_then(|event| event.pdu.get("content").cloned())
            .and_then(|content| serde_json::from_value::<RoomPowerLevelsEventContent>(content).ok());
        let source = content.map_or(RoomPowerLevelsSource::None, RoomPowerLevelsSource::Original);
        Ok(RoomPowerLevels::new(source, &rules.authorization, creator).into())
    }
}
