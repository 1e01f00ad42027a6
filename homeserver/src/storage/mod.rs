//! PostgreSQL access: the database handle, the shard accessors and one
//! module per table family.
//!
//! Every query goes through the accessor for its scope (`user_shard`,
//! `room_shard`, `alias_shard`, `media_shard`), which the shard map
//! (`shard_map.rs`, ARCHITECTURE.md "Sharding") resolves to one of the
//! physical databases. With one database the code path is the same.

pub mod account_data;
pub mod aliases;
pub mod appservice_txns;
pub mod device_keys;
pub mod directory;
pub mod events;
pub mod federation_list;
pub mod insured_kvnrs;
pub mod key_backup;
pub mod lease;
pub mod media;
pub mod memberships;
pub mod oidc_sessions;
pub mod presence;
pub mod push_actions;
pub mod push_queue;
pub mod pushers;
pub mod receipts;
pub mod retention;
pub mod shard_map;
pub mod sliding_sync;
pub mod stream;
pub mod to_device;
pub mod uiaa;
pub mod users;

use std::{
    sync::{Arc, RwLock},
    time::Duration,
};

use anyhow::Context as _;
use ruma::{OwnedRoomId, RoomAliasId, RoomId, UserId};
use sqlx::{PgPool, postgres::PgPoolOptions};

use self::shard_map::ShardMap;
use crate::config::DatabaseConfig;

/// The migrations compiled into the binary, applied to every database by
/// `homeserver migrate` and at start.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// One physical database of the deployment.
#[derive(Debug)]
pub struct Shard {
    /// Its place in the configured list and in sync tokens.
    pub index: usize,
    pub pool: PgPool,
}

/// Handle to the homeserver's databases: the physical databases and the
/// shard map that places every id on one of them.
#[derive(Clone, Debug)]
pub struct Db(Arc<DbInner>);

#[derive(Debug)]
struct DbInner {
    shards: Vec<Shard>,
    /// Where each logical shard is; replaced whole when a move switches it
    /// (`follow_map`).
    map: RwLock<Arc<ShardMap>>,
}

impl Db {
    /// Connects to every configured database, applies pending migrations to
    /// each, checks that each is where the list says, and loads the shard
    /// map (creating it on a deployment's first start).
    pub async fn open(config: &DatabaseConfig) -> anyhow::Result<Self> {
        let mut shards = Vec::new();
        for (index, url) in config.urls().enumerate() {
            let pool = PgPoolOptions::new()
                .max_connections(config.max_connections)
                .acquire_timeout(Duration::from_secs(10))
                .connect(url)
                .await
                .with_context(|| format!("connecting to PostgreSQL database {index}"))?;
            MIGRATOR.run(&pool).await.with_context(|| format!("applying migrations to database {index}"))?;
            shard_map::claim_identity(&pool, index, &redacted_url(url)).await?;
            shards.push(Shard { index, pool });
        }
        let map = shard_map::load_or_init(&shards[0].pool, shards.len()).await?;
        Ok(Self(Arc::new(DbInner { shards, map: RwLock::new(Arc::new(map)) })))
    }

    fn map(&self) -> Arc<ShardMap> {
        Arc::clone(&self.0.map.read().unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    fn shard_of(&self, id: &str) -> &Shard {
        &self.0.shards[self.map().database(shard_map::logical_shard(id))]
    }

    /// The database holding logical shard `logical` now.
    pub fn database_of_logical(&self, logical: usize) -> usize {
        self.map().database(logical)
    }

    /// Database `index` of the configured list.
    pub fn shard(&self, index: usize) -> &Shard {
        &self.0.shards[index]
    }

    /// The epoch of the map this worker uses; sync tokens carry it.
    pub fn map_epoch(&self) -> u64 {
        self.map().epoch
    }

    /// The database that held `id`'s rows under map `epoch`: the one whose
    /// position in a token of that epoch counts them. Rows keep their
    /// positions when a shard moves, so that position stays valid.
    pub fn database_at(&self, epoch: u64, id: &str) -> usize {
        self.map().database_at(epoch, shard_map::logical_shard(id))
    }

    /// Loads the map again when database 0 has a newer epoch than `seen`
    /// (a token from a worker that switched first, or the follower's poll).
    /// Returns whether the map changed.
    pub async fn follow_map(&self, seen: u64) -> anyhow::Result<bool> {
        if seen <= self.map_epoch() {
            return Ok(false);
        }
        let map = shard_map::load_or_init(self.global(), self.0.shards.len()).await?;
        let mut current = self.0.map.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        if map.epoch <= current.epoch {
            return Ok(false);
        }
        tracing::info!(epoch = map.epoch, "switched to a new shard map");
        *current = Arc::new(map);
        Ok(true)
    }

    /// The database holding rows of `user_id`.
    pub fn user_shard(&self, user_id: &UserId) -> &PgPool {
        &self.shard_of(user_id.as_str()).pool
    }

    /// The index of the database holding rows of `user_id`: its place in a
    /// sync token.
    pub fn user_shard_index(&self, user_id: &UserId) -> usize {
        self.shard_of(user_id.as_str()).index
    }

    /// The database holding rows of `room_id`.
    pub fn room_shard(&self, room_id: &RoomId) -> &PgPool {
        &self.shard_of(room_id.as_str()).pool
    }

    /// The index of the database holding rows of `room_id`.
    pub fn room_shard_index(&self, room_id: &RoomId) -> usize {
        self.shard_of(room_id.as_str()).index
    }

    /// `rooms` grouped by the database that holds them, for queries over
    /// many rooms at once (one query per database, not per room).
    pub fn rooms_by_shard(&self, rooms: &[OwnedRoomId]) -> Vec<(&Shard, Vec<OwnedRoomId>)> {
        self.group_by_shard(rooms, |room| room.as_str())
    }

    /// `items` grouped by the database that holds them now.
    pub fn group_by_shard<T: Clone>(&self, items: &[T], id: impl Fn(&T) -> &str) -> Vec<(&Shard, Vec<T>)> {
        let mut groups: Vec<Vec<T>> = vec![Vec::new(); self.0.shards.len()];
        for item in items {
            groups[self.shard_of(id(item)).index].push(item.clone());
        }
        self.0.shards.iter().zip(groups).filter(|(_, items)| !items.is_empty()).collect()
    }

    /// The database holding the alias.
    pub fn alias_shard(&self, alias: &RoomAliasId) -> &PgPool {
        &self.shard_of(alias.as_str()).pool
    }

    /// The database holding the media id's metadata (`media`,
    /// `media_thumbnails`). Media is scoped by its id, not by uploader or
    /// room: it outlives accounts and is shared into any number of rooms.
    pub fn media_shard(&self, media_id: &str) -> &PgPool {
        &self.shard_of(media_id).pool
    }

    /// The index of the database holding the media id's metadata.
    pub fn media_shard_index(&self, media_id: &str) -> usize {
        self.shard_of(media_id).index
    }

    /// Database 0, for the rows that belong to no user or room (the shard
    /// map, registration tokens, anonymous UIAA sessions, OIDC logins in
    /// progress) or that must be one table for all (the KVNR map).
    pub fn global(&self) -> &PgPool {
        &self.0.shards[0].pool
    }

    /// Every database, in token order, for stream positions and
    /// maintenance.
    pub fn shards(&self) -> impl Iterator<Item = &Shard> {
        self.0.shards.iter()
    }

    /// How many physical databases there are: the length of a token's
    /// position vector.
    pub fn shard_count(&self) -> usize {
        self.0.shards.len()
    }
}

/// `url` without its password, for error messages.
fn redacted_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.into()
        }
        _ => url.to_owned(),
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
