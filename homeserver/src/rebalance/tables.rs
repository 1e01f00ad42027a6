//! Which table's rows belong to which logical shard: what a move copies,
//! fences, verifies and deletes. `tests/shard_move.rs` checks that every
//! table of the schema is listed here or in [`UNSHARDED_TABLES`], so a new
//! table cannot be forgotten by moves.

/// A table whose every row belongs to the logical shard of one column.
#[derive(Clone, Copy, Debug)]
pub struct ShardedTable {
    pub name: &'static str,
    /// The room id, user id, alias or media id the row belongs to.
    pub key: &'static str,
    /// Written only by the database's own push tasks, which drain a
    /// shard's events before it is copied: not fenced, so they can.
    pub push_state: bool,
}

const fn table(name: &'static str, key: &'static str) -> ShardedTable {
    ShardedTable { name, key, push_state: false }
}

const fn push_table(name: &'static str) -> ShardedTable {
    ShardedTable { name, key: "room_id", push_state: true }
}

/// The events table, copied in two steps (most rows before the fence).
pub const EVENTS: &str = "events";

pub const SHARDED_TABLES: &[ShardedTable] = &[
    // Room-scoped.
    table("rooms", "room_id"),
    table(EVENTS, "room_id"),
    table("room_state", "room_id"),
    table("room_memberships", "room_id"),
    table("receipts", "room_id"),
    push_table("event_push_actions"),
    push_table("push_queue"),
    // Alias-scoped.
    table("room_aliases", "alias"),
    // Media-scoped.
    table("media", "media_id"),
    table("media_thumbnails", "media_id"),
    // User-scoped.
    table("users", "user_id"),
    table("devices", "user_id"),
    table("access_tokens", "user_id"),
    table("login_tokens", "user_id"),
    table("account_data", "user_id"),
    table("filters", "user_id"),
    table("push_rules", "user_id"),
    table("user_rooms", "user_id"),
    table("presence", "user_id"),
    table("uiaa_sessions", "user_id"),
    table("device_keys", "user_id"),
    table("one_time_keys", "user_id"),
    table("fallback_keys", "user_id"),
    table("cross_signing_keys", "user_id"),
    table("user_signatures", "signer_user_id"),
    table("device_list_updates", "user_id"),
    table("to_device_messages", "user_id"),
    table("to_device_txns", "user_id"),
    table("key_backup_versions", "user_id"),
    table("key_backup_sessions", "user_id"),
    table("pushers", "user_id"),
    table("sliding_sync_positions", "user_id"),
    table("sliding_sync_rooms", "user_id"),
];

/// Tables that stay where they are: each database's own bookkeeping, and
/// the rows of database 0 that belong to no room or user.
pub const UNSHARDED_TABLES: &[&str] = &[
    "_sqlx_migrations",
    "stream_head",
    "push_cursor",
    "appservice_streams",
    "appservice_txns",
    "shard_identity",
    "shard_fences",
    "shard_map",
    "shard_moves",
    "shard_map_readers",
    "registration_tokens",
    "admin_register_nonces",
    "oidc_sessions",
    "insured_kvnrs",
    "tim_federation_list",
    "tim_retention_runs",
];

/// Identity columns and serials of moved tables: the target's counters
/// must pass the copied values, or it would hand them out again.
pub const COUNTERS: &[(&str, &str)] = &[("sliding_sync_positions", "position"), ("filters", "filter_id")];
