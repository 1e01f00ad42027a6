//! Push: each user's ruleset (server defaults plus their own rules), its
//! evaluation for every event, and the delivery of notifications to push
//! gateways.
//!
//! Evaluation happens after commit, off the request path: one processor per
//! database tails the events stream from a cursor stored beside it
//! (`processor`), writes each recipient's push actions (what `/sync` counts)
//! and queues notifications for their pushers in the same transaction that
//! moves the cursor; the sender (`sender`) delivers the queue with retries.
//! Only one worker runs a database's processor at a time (`worker`). See
//! ARCHITECTURE.md, "Push".

mod evaluate;
mod processor;
mod sender;
mod worker;

use ruma::{
    RoomId, UInt, UserId, api::client::sync::sync_events::UnreadNotificationsCount,
    events::push_rules::PushRulesEventContent, push::Ruleset,
};
use serde_json::Value as JsonValue;
use sqlx::PgExecutor;

pub use self::{
    sender::gateway_base_url,
    worker::{PushWorker, Wakeup},
};
use crate::{
    http::ApiResult,
    storage::{account_data, push_actions, receipts},
};

/// The user's ruleset. The stored one has its server-default rules brought
/// up to the current defaults (keeping the user's `enabled` and `actions`
/// for them); a user who never changed a rule has the defaults.
pub async fn ruleset(db: impl PgExecutor<'_>, user_id: &UserId) -> anyhow::Result<Ruleset> {
    let defaults = Ruleset::server_default(user_id);
    let Some(stored) = account_data::push_rules(db, user_id).await? else {
        return Ok(defaults);
    };
    let mut ruleset: Ruleset = serde_json::from_value(stored)?;
    ruleset.update_with_server_default(defaults);
    Ok(ruleset)
}

/// The `m.push_rules` account data content for a ruleset.
pub fn account_data_content(ruleset: Ruleset) -> ApiResult<JsonValue> {
    Ok(serde_json::to_value(PushRulesEventContent::new(ruleset))?)
}

/// The user's unread notifications in a room: the events after their read
/// receipt (after `joined_at`, their join's position, without one) whose
/// push actions notify, and of those the ones that highlight. Events the
/// processor has not evaluated yet count once it has; it then wakes the
/// user's syncs.
pub async fn unread_notifications(db: impl PgExecutor<'_> + Copy, room_id: &RoomId, user_id: &UserId, joined_at: i64) -> sqlx::Result<UnreadNotificationsCount> {
    let read_upto = receipts::read_up_to(db, room_id, user_id).await?.unwrap_or(joined_at);
    let (notifications, highlights) = push_actions::unread_counts(db, room_id, user_id, read_upto).await?;
    let mut counts = UnreadNotificationsCount::new();
    counts.notification_count = Some(UInt::try_from(notifications).unwrap_or_default());
    counts.highlight_count = Some(UInt::try_from(highlights).unwrap_or_default());
    Ok(counts)
}
