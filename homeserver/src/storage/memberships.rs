//! `room_memberships` (room shard, authoritative) and `user_rooms` (user
//! shard, the index "rooms of a user").

use ruma::{OwnedRoomId, OwnedUserId, RoomId, UserId};
use sqlx::{FromRow, PgConnection, PgExecutor};

/// A membership row of `user_rooms`.
#[derive(Clone, Debug, FromRow)]
pub struct UserRoom {
    pub room_id: String,
    pub membership: String,
    pub event_id: String,
    /// When the index changed: a position of the user's database, which
    /// `/sync` compares with the user's position in its token.
    pub stream_pos: i64,
    /// The member event's position in the room's database: where the
    /// membership is in the room's history.
    pub room_pos: i64,
    /// The member event's `origin_server_ts`.
    pub membership_ts: i64,
}

impl UserRoom {
    pub fn room_id(&self) -> Option<OwnedRoomId> {
        OwnedRoomId::try_from(self.room_id.as_str()).ok()
    }
}

/// A membership change of `room_memberships` (the room's database).
pub struct MembershipChange<'a> {
    pub room_id: &'a RoomId,
    pub user_id: &'a UserId,
    pub membership: &'a str,
    pub event_id: &'a str,
    pub stream_pos: i64,
    pub displayname: Option<&'a str>,
    pub avatar_url: Option<&'a str>,
    /// The user is local: the change must still reach the user's
    /// `user_rooms` (the outbox flag, cleared once it has).
    pub index_pending: bool,
    /// The member event's `origin_server_ts`.
    pub changed_ts: i64,
}

pub async fn set_room_membership(conn: &mut PgConnection, change: &MembershipChange<'_>) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO room_memberships (room_id, user_id, membership, event_id, stream_pos, displayname, avatar_url, index_pending, changed_ts)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
         ON CONFLICT (room_id, user_id) DO UPDATE SET membership = EXCLUDED.membership, event_id = EXCLUDED.event_id,
            stream_pos = EXCLUDED.stream_pos, displayname = EXCLUDED.displayname, avatar_url = EXCLUDED.avatar_url,
            index_pending = EXCLUDED.index_pending, changed_ts = EXCLUDED.changed_ts",
    )
    .bind(change.room_id.as_str())
    .bind(change.user_id.as_str())
    .bind(change.membership)
    .bind(change.event_id)
    .bind(change.stream_pos)
    .bind(change.displayname)
    .bind(change.avatar_url)
    .bind(change.index_pending)
    .bind(change.changed_ts)
    .execute(conn)
    .await?;
    Ok(())
}

/// A membership on its way from the room's database to the user's index.
#[derive(Clone, Debug, FromRow)]
pub struct IndexEntry {
    pub room_id: String,
    pub user_id: String,
    pub membership: String,
    pub event_id: String,
    /// The member event's position in the room's database.
    pub stream_pos: i64,
    /// When it was written (the event's `origin_server_ts`).
    pub changed_ts: i64,
}

/// Writes the membership into the user's index at the user database's
/// position `stream_pos`, unless the index already has a newer one of the
/// room (the repair task may replay an old entry after a newer change). A
/// new membership un-forgets the room.
pub async fn set_user_room(conn: &mut PgConnection, entry: &IndexEntry, stream_pos: i64) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO user_rooms (user_id, room_id, membership, event_id, stream_pos, room_pos, membership_ts) VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (user_id, room_id) DO UPDATE SET membership = EXCLUDED.membership, event_id = EXCLUDED.event_id,
            stream_pos = EXCLUDED.stream_pos, room_pos = EXCLUDED.room_pos, membership_ts = EXCLUDED.membership_ts, forgotten = FALSE
         WHERE user_rooms.room_pos < EXCLUDED.room_pos",
    )
    .bind(&entry.user_id)
    .bind(&entry.room_id)
    .bind(&entry.membership)
    .bind(&entry.event_id)
    .bind(stream_pos)
    .bind(entry.stream_pos)
    .bind(entry.changed_ts)
    .execute(conn)
    .await?;
    Ok(())
}

/// Clears the outbox flag of an entry that reached the user's index, unless
/// a newer change replaced it meanwhile (that one is still on its way).
pub async fn index_done(db: impl PgExecutor<'_>, entry: &IndexEntry) -> sqlx::Result<()> {
    sqlx::query("UPDATE room_memberships SET index_pending = FALSE WHERE room_id = $1 AND user_id = $2 AND event_id = $3")
        .bind(&entry.room_id)
        .bind(&entry.user_id)
        .bind(&entry.event_id)
        .execute(db)
        .await?;
    Ok(())
}

/// Entries still flagged after `older_than_ms`: their writer crashed or
/// failed between the room's commit and the user's index.
pub async fn index_pending(db: impl PgExecutor<'_>, older_than_ms: i64, limit: i64) -> sqlx::Result<Vec<IndexEntry>> {
    sqlx::query_as(
        "SELECT room_id, user_id, membership, event_id, stream_pos, changed_ts FROM room_memberships
         WHERE index_pending AND changed_ts < $1 ORDER BY changed_ts LIMIT $2",
    )
    .bind(older_than_ms)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// The user's membership in a room, from the room's authoritative table.
pub async fn membership(db: impl PgExecutor<'_>, room_id: &RoomId, user_id: &UserId) -> sqlx::Result<Option<String>> {
    sqlx::query_scalar("SELECT membership FROM room_memberships WHERE room_id = $1 AND user_id = $2")
        .bind(room_id.as_str())
        .bind(user_id.as_str())
        .fetch_optional(db)
        .await
}

/// Members of a room with the given membership.
pub async fn members_with(db: impl PgExecutor<'_>, room_id: &RoomId, memberships: &[&str]) -> sqlx::Result<Vec<OwnedUserId>> {
    let users: Vec<String> = sqlx::query_scalar(
        "SELECT user_id FROM room_memberships WHERE room_id = $1 AND membership = ANY($2) ORDER BY user_id",
    )
    .bind(room_id.as_str())
    .bind(memberships)
    .fetch_all(db)
    .await?;
    Ok(users.into_iter().filter_map(|u| OwnedUserId::try_from(u).ok()).collect())
}

/// A member a client may name a room after, with the room-specific profile.
#[derive(Clone, Debug, FromRow)]
pub struct Hero {
    pub user_id: String,
    pub displayname: Option<String>,
    pub avatar_url: Option<String>,
}

/// Up to `limit` joined or invited members other than `except`, in a
/// stable order, for clients to name a room that has no name.
pub async fn heroes(db: impl PgExecutor<'_>, room_id: &RoomId, except: &UserId, limit: i64) -> sqlx::Result<Vec<Hero>> {
    sqlx::query_as(
        "SELECT user_id, displayname, avatar_url FROM room_memberships
         WHERE room_id = $1 AND membership IN ('join', 'invite') AND user_id <> $2 ORDER BY user_id LIMIT $3",
    )
    .bind(room_id.as_str())
    .bind(except.as_str())
    .bind(limit)
    .fetch_all(db)
    .await
}

/// Joined members with their room-specific profile.
pub async fn joined_profiles(db: impl PgExecutor<'_>, room_id: &RoomId) -> sqlx::Result<Vec<(String, Option<String>, Option<String>)>> {
    sqlx::query_as(
        "SELECT user_id, displayname, avatar_url FROM room_memberships WHERE room_id = $1 AND membership = 'join' ORDER BY user_id",
    )
    .bind(room_id.as_str())
    .fetch_all(db)
    .await
}

/// `(joined, invited)` member counts.
pub async fn counts(db: impl PgExecutor<'_>, room_id: &RoomId) -> sqlx::Result<(i64, i64)> {
    sqlx::query_as(
        "SELECT COUNT(*) FILTER (WHERE membership = 'join'), COUNT(*) FILTER (WHERE membership = 'invite')
         FROM room_memberships WHERE room_id = $1",
    )
    .bind(room_id.as_str())
    .fetch_one(db)
    .await
}

/// Rooms of a user (not forgotten), from the user's index.
pub async fn rooms_of_user(db: impl PgExecutor<'_>, user_id: &UserId) -> sqlx::Result<Vec<UserRoom>> {
    sqlx::query_as(
        "SELECT room_id, membership, event_id, stream_pos, room_pos, membership_ts FROM user_rooms WHERE user_id = $1 AND NOT forgotten",
    )
    .bind(user_id.as_str())
    .fetch_all(db)
    .await
}

/// Rooms the user has joined.
pub async fn joined_rooms(db: impl PgExecutor<'_>, user_id: &UserId) -> sqlx::Result<Vec<OwnedRoomId>> {
    let rooms: Vec<String> = sqlx::query_scalar(
        "SELECT room_id FROM user_rooms WHERE user_id = $1 AND membership = 'join' ORDER BY room_id",
    )
    .bind(user_id.as_str())
    .fetch_all(db)
    .await?;
    Ok(rooms.into_iter().filter_map(|r| OwnedRoomId::try_from(r).ok()).collect())
}

/// Marks a left room forgotten; false if the user is still in it.
pub async fn forget(db: impl PgExecutor<'_>, user_id: &UserId, room_id: &RoomId) -> sqlx::Result<bool> {
    let updated = sqlx::query(
        "UPDATE user_rooms SET forgotten = TRUE WHERE user_id = $1 AND room_id = $2 AND membership IN ('leave', 'ban')",
    )
    .bind(user_id.as_str())
    .bind(room_id.as_str())
    .execute(db)
    .await?;
    Ok(updated.rows_affected() == 1)
}

/// A joined member with their room display name and the position of their
/// member event.
#[derive(Clone, Debug, FromRow)]
pub struct JoinedMember {
    pub user_id: String,
    pub displayname: Option<String>,
    pub stream_pos: i64,
}

/// The joined members of a room (for push rule evaluation).
pub async fn joined_members(db: impl PgExecutor<'_>, room_id: &RoomId) -> sqlx::Result<Vec<JoinedMember>> {
    sqlx::query_as("SELECT user_id, displayname, stream_pos FROM room_memberships WHERE room_id = $1 AND membership = 'join'")
        .bind(room_id.as_str())
        .fetch_all(db)
        .await
}

/// Everyone joined to any of `rooms` (one query for many rooms: staff
/// accounts are in thousands).
pub async fn joined_members_of_rooms(db: impl PgExecutor<'_>, rooms: &[OwnedRoomId]) -> sqlx::Result<Vec<OwnedUserId>> {
    let ids: Vec<&str> = rooms.iter().map(|r| r.as_str()).collect();
    let users: Vec<String> = sqlx::query_scalar("SELECT DISTINCT user_id FROM room_memberships WHERE room_id = ANY($1) AND membership = 'join'")
        .bind(&ids)
        .fetch_all(db)
        .await?;
    Ok(users.into_iter().filter_map(|u| OwnedUserId::try_from(u).ok()).collect())
}
