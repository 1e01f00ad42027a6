//! Presence: what a user set (`online`, `unavailable`, `offline`, a status
//! message) and whether the user is still there.
//!
//! The two have different costs, so they live in different places:
//! - The *state* is a row on the user's database (`storage::presence`) that
//!   takes a stream position when it changes, so syncs deliver the change
//!   exactly once like any other stream. It changes rarely.
//! - *Activity* (the last time the user synced or set presence) changes on
//!   every sync of every connected client. Writing it to PostgreSQL would be
//!   an UPDATE per client and minute; it lives in [`activity`] instead: one
//!   sorted set per logical shard in Redis (shared by the workers), or in
//!   memory for a single process.
//!
//! A user whose activity is older than `offline_after` goes `offline`: the
//! [`sweeper`] of the database holding the user's shard pops the user from
//! the activity set and writes the state change. The pop is atomic, so one
//! worker acts per user; a worker that dies between pop and write, a Redis
//! that lost its data or a restarted single process leave `online` rows
//! without activity, which the sweeper's slower pass over the database
//! gives activity "now", so they too go offline unless they come back.

pub mod activity;
pub mod sweeper;

use ruma::{UserId, presence::PresenceState};

use crate::{
    http::ApiResult,
    server::Homeserver,
    storage::{self, presence::StatusMsg},
};

/// Records that `user_id` is here in `state` (from `/sync?set_presence=`,
/// sliding sync or `PUT /presence`), storing a state change and waking
/// everyone who shares a room with the user when the state changed.
pub async fn set(server: &Homeserver, user_id: &UserId, state: &PresenceState, status_msg: StatusMsg<'_>) -> ApiResult<()> {
    if *state == PresenceState::Offline {
        server.activity.forget(user_id).await;
    } else {
        server.activity.touch(user_id).await;
    }
    let mut tx = server.db.user_shard(user_id).begin().await?;
    let changed = storage::presence::set(&mut tx, user_id, state.as_str(), status_msg).await?;
    tx.commit().await?;
    if changed {
        notify_audience(server, user_id).await?;
    }
    Ok(())
}

/// Wakes the syncs of everyone who sees `user_id`'s presence.
async fn notify_audience(server: &Homeserver, user_id: &UserId) -> ApiResult<()> {
    let audience = crate::rooms::membership::users_sharing_rooms(server, user_id).await?;
    server.notifier.notify_users(audience.iter());
    Ok(())
}

/// A user counts as currently active this long after the last activity.
const CURRENTLY_ACTIVE_MS: i64 = 5 * 60 * 1000;

/// The `last_active_ago` and `currently_active` of a presence event: from
/// the user's last activity where known, else from the last state change.
pub fn activity_fields(state: &str, changed_ts: i64, last_active_ts: Option<i64>, now: i64) -> (i64, bool) {
    let last = last_active_ts.map_or(changed_ts, |active| active.max(changed_ts));
    let ago = (now - last).max(0);
    (ago, state == "online" && ago < CURRENTLY_ACTIVE_MS)
}
