//! The directories, read side: the public room list (`rooms.published`
//! with each room's summary from its current state) and the user directory
//! (joined members of given rooms). Rows live on the rooms' shards; callers
//! ask every shard and merge, so results are ordered the same way in SQL
//! and in Rust (ids compared bytewise, `COLLATE "C"`).

use ruma::{OwnedRoomId, RoomId, UserId};
use sqlx::{FromRow, PgExecutor};

/// A published room with what the directory shows of it.
#[derive(Clone, Debug, FromRow)]
pub struct PublishedRoom {
    pub room_id: String,
    pub name: Option<String>,
    pub topic: Option<String>,
    pub canonical_alias: Option<String>,
    pub avatar_url: Option<String>,
    pub join_rule: Option<String>,
    pub history_visibility: Option<String>,
    pub guest_access: Option<String>,
    /// `type` of `m.room.create` (`m.space`, …); `None` for plain rooms.
    pub room_type: Option<String>,
    pub num_joined_members: i64,
    /// How many rooms of this shard match the query, beyond the limit too.
    pub total: i64,
}

/// Which published rooms to list.
#[derive(Clone, Copy, Debug)]
pub struct PublishedRoomsQuery<'a> {
    /// Case-insensitive substring of the name, topic or canonical alias.
    pub search_term: Option<&'a str>,
    /// Room types to include, `""` for rooms without a type; `None` for all.
    pub room_types: Option<&'a [&'a str]>,
    pub limit: i64,
}

/// Whether the room is in the public directory; `None` for an unknown room.
pub async fn is_published(db: impl PgExecutor<'_>, room_id: &RoomId) -> sqlx::Result<Option<bool>> {
    sqlx::query_scalar("SELECT published FROM rooms WHERE room_id = $1")
        .bind(room_id.as_str())
        .fetch_optional(db)
        .await
}

/// Published rooms matching the query, most joined members first.
pub async fn published_rooms(db: impl PgExecutor<'_>, query: PublishedRoomsQuery<'_>) -> sqlx::Result<Vec<PublishedRoom>> {
    let pattern = query.search_term.map(|term| format!("%{}%", super::escape_like(term)));
    sqlx::query_as(
        "SELECT *, COUNT(*) OVER () AS total FROM (
            SELECT r.room_id,
                MAX(e.pdu->'content'->>'name') FILTER (WHERE s.event_type = 'm.room.name') AS name,
                MAX(e.pdu->'content'->>'topic') FILTER (WHERE s.event_type = 'm.room.topic') AS topic,
                MAX(e.pdu->'content'->>'alias') FILTER (WHERE s.event_type = 'm.room.canonical_alias') AS canonical_alias,
                MAX(e.pdu->'content'->>'url') FILTER (WHERE s.event_type = 'm.room.avatar') AS avatar_url,
                MAX(e.pdu->'content'->>'join_rule') FILTER (WHERE s.event_type = 'm.room.join_rules') AS join_rule,
                MAX(e.pdu->'content'->>'history_visibility') FILTER (WHERE s.event_type = 'm.room.history_visibility') AS history_visibility,
                MAX(e.pdu->'content'->>'guest_access') FILTER (WHERE s.event_type = 'm.room.guest_access') AS guest_access,
                MAX(e.pdu->'content'->>'type') FILTER (WHERE s.event_type = 'm.room.create') AS room_type,
                (SELECT COUNT(*) FROM room_memberships m WHERE m.room_id = r.room_id AND m.membership = 'join') AS num_joined_members
            FROM rooms r
            JOIN room_state s ON s.room_id = r.room_id AND s.state_key = ''
                AND s.event_type IN ('m.room.create', 'm.room.name', 'm.room.topic', 'm.room.canonical_alias', 'm.room.avatar',
                                     'm.room.join_rules', 'm.room.history_visibility', 'm.room.guest_access')
            JOIN events e ON e.room_id = s.room_id AND e.event_id = s.event_id
            WHERE r.published
            GROUP BY r.room_id
         ) summary
         WHERE ($1::text IS NULL OR name ILIKE $1 OR topic ILIKE $1 OR canonical_alias ILIKE $1)
           AND ($2::text[] IS NULL OR COALESCE(room_type, '') = ANY($2))
         ORDER BY num_joined_members DESC, room_id COLLATE \"C\"
         LIMIT $3",
    )
    .bind(pattern)
    .bind(query.room_types)
    .bind(query.limit)
    .fetch_all(db)
    .await
}

/// A user found in the user directory, with their profile in a shared room.
#[derive(Clone, Debug, FromRow)]
pub struct DirectoryUser {
    pub user_id: String,
    pub displayname: Option<String>,
    pub avatar_url: Option<String>,
    /// The display name or the localpart starts with the search term.
    pub prefix_match: bool,
}

/// Users joined to any of `rooms`, except `searcher`, whose id or display
/// name contains `term` (case-insensitive): prefix matches first, then by
/// user id.
pub async fn search_joined_members(db: impl PgExecutor<'_>, rooms: &[OwnedRoomId], searcher: &UserId, term: &str, limit: i64) -> sqlx::Result<Vec<DirectoryUser>> {
    let rooms: Vec<&str> = rooms.iter().map(|room| room.as_str()).collect();
    let escaped = super::escape_like(term);
    sqlx::query_as(
        "SELECT * FROM (
            SELECT DISTINCT ON (user_id) user_id, displayname, avatar_url,
                COALESCE(displayname ILIKE $4 OR user_id ILIKE '@' || $4, FALSE) AS prefix_match
            FROM room_memberships
            WHERE room_id = ANY($1) AND membership = 'join' AND user_id <> $2
              AND (user_id ILIKE $3 OR displayname ILIKE $3)
            ORDER BY user_id, stream_pos DESC
         ) found
         ORDER BY prefix_match DESC, user_id COLLATE \"C\"
         LIMIT $5",
    )
    .bind(&rooms)
    .bind(searcher.as_str())
    .bind(format!("%{escaped}%"))
    .bind(format!("{escaped}%"))
    .bind(limit)
    .fetch_all(db)
    .await
}

/// Publishes or hides the room in the public room directory.
pub async fn set_published(db: impl PgExecutor<'_>, room_id: &RoomId, published: bool) -> sqlx::Result<()> {
    sqlx::query("UPDATE rooms SET published = $2 WHERE room_id = $1")
        .bind(room_id.as_str())
        .bind(published)
        .execute(db)
        .await?;
    Ok(())
}
