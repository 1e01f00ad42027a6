//! PostgreSQL access: the database handle, the shard accessors and one
//! module per table family.
//!
//! Every query goes through the accessor for its scope (`user_shard`,
//! `room_shard`, `alias_shard`, `media_shard`). Today all of them return the
//! one pool; the shard map (see ARCHITECTURE.md) makes them return different
//! databases without touching the call sites.

pub mod account_data;
pub mod aliases;
pub mod device_keys;
pub mod directory;
pub mod events;
pub mod key_backup;
pub mod media;
pub mod memberships;
pub mod presence;
pub mod push_actions;
pub mod push_queue;
pub mod pushers;
pub mod receipts;
pub mod sliding_sync;
pub mod stream;
pub mod to_device;
pub mod uiaa;
pub mod users;

use std::time::Duration;

use anyhow::Context as _;
use ruma::{RoomAliasId, RoomId, UserId};
use sqlx::{PgPool, postgres::PgPoolOptions};

use crate::config::DatabaseConfig;

/// The migrations compiled into the binary, applied by `homeserver migrate`
/// and at start.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// Handle to the homeserver's databases.
#[derive(Clone, Debug)]
pub struct Db {
    pool: PgPool,
}

impl Db {
    pub async fn connect(config: &DatabaseConfig) -> anyhow::Result<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(config.max_connections)
            .acquire_timeout(Duration::from_secs(10))
            .connect(&config.url)
            .await
            .with_context(|| "connecting to PostgreSQL".to_string())?;
        Ok(Self { pool })
    }

    /// Applies pending migrations to every database.
    pub async fn migrate(&self) -> anyhow::Result<()> {
        MIGRATOR.run(&self.pool).await.context("applying migrations")?;
        Ok(())
    }

    /// The database holding rows of `user_id`.
    pub fn user_shard(&self, _user_id: &UserId) -> &PgPool {
        &self.pool
    }

    /// The database holding rows of `room_id`.
    pub fn room_shard(&self, _room_id: &RoomId) -> &PgPool {
        &self.pool
    }

    /// `rooms` grouped by the database that holds them, for queries over
    /// many rooms at once (one query per database, not per room).
    pub fn rooms_by_shard<'a>(&self, rooms: &'a [ruma::OwnedRoomId]) -> Vec<(&PgPool, &'a [ruma::OwnedRoomId])> {
        if rooms.is_empty() { Vec::new() } else { vec![(&self.pool, rooms)] }
    }

    /// The database holding the alias.
    pub fn alias_shard(&self, _alias: &RoomAliasId) -> &PgPool {
        &self.pool
    }

    /// The database holding the media id's metadata (`media`,
    /// `media_thumbnails`). Media is scoped by its id, not by uploader or
    /// room: it outlives accounts and is shared into any number of rooms.
    pub fn media_shard(&self, _media_id: &str) -> &PgPool {
        &self.pool
    }

    /// A database for rows that belong to no user or room yet (registration
    /// tokens, anonymous UIAA sessions).
    pub fn any_shard(&self) -> &PgPool {
        &self.pool
    }

    /// Every database, for stream positions and maintenance.
    pub fn shards(&self) -> impl Iterator<Item = &PgPool> {
        std::iter::once(&self.pool)
    }
}

/// A room with a range of stream positions `(after, upto]`, for queries
/// that ask many rooms about ranges of their own.
#[derive(Clone, Debug)]
pub struct RoomRange {
    pub room_id: ruma::OwnedRoomId,
    pub after: i64,
    pub upto: i64,
}

/// `ranges` as the parallel arrays a query `UNNEST`s.
fn unzip_ranges(ranges: &[RoomRange]) -> (Vec<&str>, Vec<i64>, Vec<i64>) {
    let rooms = ranges.iter().map(|r| r.room_id.as_str()).collect();
    let afters = ranges.iter().map(|r| r.after).collect();
    let uptos = ranges.iter().map(|r| r.upto).collect();
    (rooms, afters, uptos)
}

/// Milliseconds since the Unix epoch, as stored in `*_ts` columns.
pub fn now_ms() -> i64 {
    ruma::MilliSecondsSinceUnixEpoch::now().get().into()
}

/// Whether a database error is a unique-constraint violation (a client
/// conflict such as a taken user id, not a server failure).
pub fn is_unique_violation(err: &sqlx::Error) -> bool {
    err.as_database_error().is_some_and(|db| db.is_unique_violation())
}

/// `term` with the wildcards of SQL `LIKE` escaped, to build patterns from
/// what a user typed.
pub fn escape_like(term: &str) -> String {
    term.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_")
}

#[cfg(test)]
mod tests {
    #[test]
    fn like_wildcards_are_escaped() {
        assert_eq!(super::escape_like("50%_off\\"), "50\\%\\_off\\\\");
        assert_eq!(super::escape_like("alice"), "alice");
    }
}
