//! The bulk path for our server: rows written straight into its tables with
//! PostgreSQL `COPY`, each on the database the homeserver's shard map gives
//! its user or room (`storage::Db`, the server's own code), so one, two or
//! more databases are seeded alike.
//!
//! The tables and columns written are listed in [`TABLES`]; they follow
//! `migrations/*.sql` and the integration test (`tests/seed_and_chat.rs`)
//! fails when a migration adds a column COPY cannot leave out. The server
//! must not run while seeding: positions are taken from a counter per
//! database and written back into `stream_head` (and `push_cursor`, so the
//! push processor does not replay the seeded history) at the end.

use std::{
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicI64, Ordering},
    },
};

use anyhow::Context as _;
use futures::{StreamExt as _, TryStreamExt as _};
use homeserver::{
    auth::tokens::{self, TokenKind},
    storage::{Db, now_ms},
};
use ruma::{RoomId, UserId};
use sqlx::PgPool;

use super::{
    copy_rows::{CopyRows, Field},
    room_events::{EventSigner, ROOM_VERSION},
};
use crate::{
    population::{self, Account, Member, PopulationWriter, Shape},
    progress,
};

/// Members generated per batch: large enough that COPY overhead is small,
/// small enough that two batches in flight stay a few MiB.
const BATCH: usize = 2_000;
/// The device every seeded account has.
const DEVICE_ID: &str = "LOADTEST";

/// Tables the seeder fills, with the columns it writes, in this order.
const TABLES: [(&str, &str); 8] = [
    ("users", "user_id, password_hash, is_admin, displayname, avatar_url, deactivated, created_ts, kvnr"),
    ("devices", "user_id, device_id, display_name, last_seen_ts, last_seen_ip, created_ts"),
    ("access_tokens", "token_hash, user_id, device_id, created_ts"),
    ("rooms", "room_id, room_version, creator, last_event_id, depth, last_stream_pos, published, created_ts"),
    ("events", "room_id, event_id, stream_pos, depth, event_type, state_key, sender, origin_server_ts, pdu, unsigned_data, redacted_by, txn_device_id, txn_id"),
    ("room_state", "room_id, event_type, state_key, event_id, stream_pos"),
    ("room_memberships", "room_id, user_id, membership, event_id, stream_pos, displayname, avatar_url, index_pending, changed_ts"),
    ("user_rooms", "user_id, room_id, membership, event_id, stream_pos, forgotten, room_pos, membership_ts"),
];

/// The rows of one batch for one database, one buffer per entry of [`TABLES`].
type DatabaseRows = [CopyRows; TABLES.len()];
const USERS: usize = 0;
const DEVICES: usize = 1;
const ACCESS_TOKENS: usize = 2;
const ROOMS: usize = 3;
const EVENTS: usize = 4;
const ROOM_STATE: usize = 5;
const ROOM_MEMBERSHIPS: usize = 6;
const USER_ROOMS: usize = 7;

/// What the batches share: where ids live, how to sign, the next stream
/// position of every database.
struct Seeder {
    db: Db,
    signer: EventSigner,
    password_hash: String,
    shape: Shape,
    next_pos: Vec<AtomicI64>,
    ts: i64,
}

/// Seeds `shape` into the databases of the homeserver config at
/// `config_path` and writes the population file.
pub async fn seed(config_path: &Path, shape: Shape, population_path: &Path) -> anyhow::Result<()> {
    let config = homeserver::Config::load(config_path)?;
    let key = homeserver::signing_key::load(&config.signing_key_path)?;
    // Db::open migrates every database and writes the shard map, as the
    // server's first start would.
    let db = Db::open(&config.database).await?;
    let mut next_pos = Vec::new();
    for shard in db.shards() {
        let head: i64 = sqlx::query_scalar("SELECT pos FROM stream_head").fetch_one(&shard.pool).await?;
        let users: i64 = sqlx::query_scalar("SELECT count(*) FROM users").fetch_one(&shard.pool).await?;
        anyhow::ensure!(users == 0, "database {} already has {users} users: seed into empty databases", shard.index);
        next_pos.push(AtomicI64::new(head + 1));
    }
    let password_hash = homeserver::auth::password::hash(population::PASSWORD.to_owned()).await?;
    let seeder = Arc::new(Seeder { signer: EventSigner::new(config.server_name.clone(), key)?, db, password_hash, shape, next_pos, ts: now_ms() });

    let mut population = PopulationWriter::create(population_path)?;
    let staff = seeder.staff_rows(&mut population)?;
    seeder.copy(&staff).await?;

    let bar = progress::bar(shape.members as u64, "members");
    let batches = (0..shape.members).step_by(BATCH).map(|start| start..(start + BATCH).min(shape.members));
    let mut generated = futures::stream::iter(batches)
        .map(|range| {
            let seeder = seeder.clone();
            tokio::task::spawn_blocking(move || seeder.member_rows(range))
        })
        .buffered(2);
    while let Some(batch) = generated.next().await {
        let (rows, members) = batch??;
        seeder.copy(&rows).await?;
        for member in &members {
            population.member(member)?;
        }
        bar.inc(members.len() as u64);
    }
    bar.finish();
    population.finish()?;
    seeder.finish().await
}

impl Seeder {
    fn empty_rows(&self) -> Vec<DatabaseRows> {
        (0..self.db.shard_count()).map(|_| Default::default()).collect()
    }

    fn take_positions(&self, database: usize, count: i64) -> i64 {
        self.next_pos[database].fetch_add(count, Ordering::Relaxed)
    }

    /// An account's user, device and token rows; returns the account.
    fn account_rows(&self, rows: &mut [DatabaseRows], localpart: &str, kvnr: Option<&str>) -> anyhow::Result<Account> {
        let user_id = UserId::parse(format!("@{localpart}:{}", self.signer.server_name))?;
        let token = tokens::new_token(TokenKind::Access, &user_id);
        let rows = &mut rows[self.db.user_shard_index(&user_id)];
        let kvnr = kvnr.map_or(Field::Null, Field::Text);
        rows[USERS].push(&[Field::Text(user_id.as_str()), Field::Text(&self.password_hash), Field::Bool(false), Field::Text(localpart), Field::Null, Field::Bool(false), Field::Int(self.ts), kvnr]);
        rows[DEVICES].push(&[Field::Text(user_id.as_str()), Field::Text(DEVICE_ID), Field::Text("loadtest"), Field::Null, Field::Null, Field::Int(self.ts)]);
        rows[ACCESS_TOKENS].push(&[Field::Bytes(&tokens::hash(&token)), Field::Text(user_id.as_str()), Field::Text(DEVICE_ID), Field::Int(self.ts)]);
        Ok(Account { user_id: user_id.to_string(), device_id: DEVICE_ID.to_owned(), access_token: token })
    }

    fn staff_rows(&self, population: &mut PopulationWriter) -> anyhow::Result<Vec<DatabaseRows>> {
        let mut rows = self.empty_rows();
        for index in 0..self.shape.staff_count() {
            population.staff(&self.account_rows(&mut rows, &population::staff_localpart(index), None)?)?;
        }
        Ok(rows)
    }

    /// Members with their accounts and rooms (CPU-bound: two signatures and
    /// hashes per event), for a blocking thread.
    fn member_rows(&self, range: std::ops::Range<usize>) -> anyhow::Result<(Vec<DatabaseRows>, Vec<Member>)> {
        let mut rows = self.empty_rows();
        let mut members = Vec::with_capacity(range.len());
        for index in range {
            // A KVNR marks an insured person's account (tim/accounts.rs).
            let kvnr = format!("L{index:09}");
            let account = self.account_rows(&mut rows, &population::member_localpart(index), Some(&kvnr))?;
            let staff = self.shape.staff_of(index);
            let staff_id = format!("@{}:{}", population::staff_localpart(staff), self.signer.server_name);
            let room_id = format!("!loadtest{index}:{}", self.signer.server_name);
            self.room_rows(&mut rows, &room_id, &staff_id, &account.user_id)?;
            members.push(Member { account, room_id, staff });
        }
        Ok((rows, members))
    }

    /// The room's rows on its database and both members' `user_rooms` on
    /// theirs.
    fn room_rows(&self, rows: &mut [DatabaseRows], room_id: &str, staff: &str, member: &str) -> anyhow::Result<()> {
        let events = self.signer.member_room(room_id, staff, member, self.ts)?;
        let room_db = self.db.room_shard_index(<&RoomId>::try_from(room_id)?);
        let first_pos = self.take_positions(room_db, events.len() as i64);
        let last = events.last().context("a room has events")?;
        let room_rows = &mut rows[room_db];
        room_rows[ROOMS].push(&[Field::Text(room_id), Field::Text(ROOM_VERSION.as_str()), Field::Text(staff), Field::Text(&last.event_id), Field::Int(last.depth), Field::Int(first_pos + events.len() as i64 - 1), Field::Bool(false), Field::Int(self.ts)]);

        let mut joins = Vec::new();
        for (offset, event) in events.iter().enumerate() {
            let pos = first_pos + offset as i64;
            let state_key = event.state_key.as_deref();
            let unsigned = event.unsigned.as_deref().map_or(Field::Null, Field::Text);
            room_rows[EVENTS].push(&[Field::Text(room_id), Field::Text(&event.event_id), Field::Int(pos), Field::Int(event.depth), Field::Text(event.kind), state_key.map_or(Field::Null, Field::Text), Field::Text(&event.sender), Field::Int(self.ts), Field::Text(&event.pdu), unsigned, Field::Null, Field::Null, Field::Null]);
        }
        // Current state: the last event per (type, state_key).
        for (offset, event) in events.iter().enumerate() {
            let Some(state_key) = event.state_key.as_deref() else { continue };
            if events[offset + 1..].iter().any(|later| later.kind == event.kind && later.state_key.as_deref() == Some(state_key)) {
                continue;
            }
            let pos = first_pos + offset as i64;
            room_rows[ROOM_STATE].push(&[Field::Text(room_id), Field::Text(event.kind), Field::Text(state_key), Field::Text(&event.event_id), Field::Int(pos)]);
            if let Some(membership) = event.membership {
                let displayname = state_key.trim_start_matches('@').split(':').next().unwrap_or_default();
                room_rows[ROOM_MEMBERSHIPS].push(&[Field::Text(room_id), Field::Text(state_key), Field::Text(membership), Field::Text(&event.event_id), Field::Int(pos), Field::Text(displayname), Field::Null, Field::Bool(false), Field::Int(self.ts)]);
                joins.push((state_key.to_owned(), event.event_id.clone(), pos, membership));
            }
        }
        for (user, event_id, room_pos, membership) in joins {
            let user_db = self.db.user_shard_index(<&UserId>::try_from(user.as_str())?);
            let pos = self.take_positions(user_db, 1);
            rows[user_db][USER_ROOMS].push(&[Field::Text(&user), Field::Text(room_id), Field::Text(membership), Field::Text(&event_id), Field::Int(pos), Field::Bool(false), Field::Int(room_pos), Field::Int(self.ts)]);
        }
        Ok(())
    }

    /// One COPY per non-empty table and database.
    async fn copy(&self, rows: &[DatabaseRows]) -> anyhow::Result<()> {
        let pools: Vec<&PgPool> = self.db.shards().map(|shard| &shard.pool).collect();
        futures::stream::iter(rows.iter().zip(pools).enumerate())
            .map(|(database, (tables, pool))| async move {
                let mut conn = pool.acquire().await?;
                for ((table, columns), table_rows) in TABLES.iter().zip(tables) {
                    if table_rows.is_empty() {
                        continue;
                    }
                    let statement = format!("COPY {table} ({columns}) FROM STDIN");
                    let mut copy = conn.copy_in_raw(&statement).await.with_context(|| format!("COPY {table} on database {database}"))?;
                    copy.send(table_rows.as_bytes()).await?;
                    copy.finish().await.with_context(|| format!("COPY {table} on database {database}"))?;
                }
                anyhow::Ok(())
            })
            .buffer_unordered(rows.len())
            .try_collect::<()>()
            .await
    }

    /// Moves every database's stream head (and push cursor) past the seeded
    /// positions, and refreshes the planner's statistics.
    async fn finish(&self) -> anyhow::Result<()> {
        for shard in self.db.shards() {
            let last = self.next_pos[shard.index].load(Ordering::Relaxed) - 1;
            sqlx::query("UPDATE stream_head SET pos = GREATEST(pos, $1)").bind(last).execute(&shard.pool).await?;
            sqlx::query("UPDATE push_cursor SET pos = GREATEST(pos, $1)").bind(last).execute(&shard.pool).await?;
            sqlx::query("ANALYZE").execute(&shard.pool).await?;
        }
        Ok(())
    }
}
