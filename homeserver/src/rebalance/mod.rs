//! Moving a logical shard to another database while the server runs
//! (`homeserver move-shard`), so an operator can add a database and move
//! shards onto it. See ARCHITECTURE.md "Sharding" for why it is correct.
//!
//! 1. **Bulk copy**, live: the shard's events up to the source's head go to
//!    the target, with their positions. Nobody reads them there yet.
//! 2. **Fence**: triggers on the source refuse every write to the shard
//!    (SQLSTATE HS001: the client gets a 503 and retries).
//! 3. **Catch up**: once the source's push processor has evaluated the
//!    shard's last events, every other row of the shard and the events
//!    since the bulk copy (and redactions) are copied in one transaction.
//! 4. **Verify**: row counts and checksums of every table agree.
//! 5. **Switch**: the map in database 0 points the shard at the target
//!    under a new epoch; workers follow within a second (`follower.rs`).
//! 6. **Clean up**: once every running worker uses the new map, the
//!    shard's rows are deleted from the source; its fence stays.
//!
//! A failure before the switch lifts the fence again and leaves the map
//! as it was; running the command again starts over.

pub mod copy;
pub mod fence;
pub mod follower;
pub mod tables;

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use sqlx::{AssertSqlSafe, PgConnection, PgPool};

use self::tables::{COUNTERS, EVENTS, SHARDED_TABLES};
use crate::{
    server::Homeserver,
    storage::{
        self,
        shard_map::{self, LOGICAL_SHARDS},
        stream,
    },
};

/// How long the move waits for a push processor or for workers to follow.
const PATIENCE: Duration = Duration::from_secs(60);

/// What a move did, for the operator.
#[derive(Debug)]
pub struct MoveReport {
    pub logical: usize,
    pub from: usize,
    pub to: usize,
    /// The map epoch the switch made.
    pub epoch: u64,
    /// Rows copied, all tables.
    pub rows: u64,
    /// How long writes to the shard were refused.
    pub frozen: Duration,
}

/// Moves logical shard `logical` to database `to` (see the module docs).
pub async fn move_shard(server: &Homeserver, logical: usize, to: usize) -> anyhow::Result<MoveReport> {
    let db = &server.db;
    let consumers = StreamConsumers {
        appservices: server.appservices.iter().filter(|appservice| appservice.url.is_some()).map(|appservice| appservice.id.clone()).collect(),
    };
    ensure!(logical < LOGICAL_SHARDS, "logical shards are numbered 0 to {}", LOGICAL_SHARDS - 1);
    ensure!(to < db.shard_count(), "database {to} is not configured ({} databases)", db.shard_count());
    let from = db.database_of_logical(logical);
    ensure!(from != to, "logical shard {logical} is already on database {to}");
    let (source, target) = (&db.shard(from).pool, &db.shard(to).pool);
    tracing::info!(logical, from, to, "moving a logical shard");

    let bulk_upto = stream::current(source).await?;
    let mut rows = bulk_copy(&consumers, source, target, logical, bulk_upto).await?;
    tracing::info!(logical, rows, "copied the shard's events; fencing the source");

    fence_source(source, logical).await?;
    let frozen_at = Instant::now();
    let switched = async {
        rows += catch_up(&consumers, source, target, logical, bulk_upto).await?;
        verify(source, target, logical).await?;
        shard_map::switch(db.global(), logical, from, to).await
    }
    .await;
    let epoch = match switched {
        Ok(epoch) => epoch,
        Err(err) => {
            tracing::error!(logical, error = %err, "the move failed before the switch; lifting the fence");
            let mut conn = source.acquire().await?;
            let mut tx = sqlx::Connection::begin(&mut *conn).await?;
            fence::set(&mut tx, logical, false).await?;
            tx.commit().await?;
            return Err(err);
        }
    };
    let frozen = frozen_at.elapsed();
    db.follow_map(epoch).await?;
    tracing::info!(logical, epoch, frozen_ms = frozen.as_millis() as u64, "switched the map; waiting for every worker to follow");

    follower::wait_until_followed(db.global(), epoch, PATIENCE).await?;
    delete_shard_rows(source, logical).await?;
    tracing::info!(logical, from, to, rows, "moved; the source's copy is deleted");
    Ok(MoveReport { logical, from, to, epoch, rows, frozen })
}

/// Step 1: the shard's events up to `upto`, into a target cleared of any
/// rows of the shard an interrupted move left.
async fn bulk_copy(consumers: &StreamConsumers, source: &PgPool, target: &PgPool, logical: usize, upto: i64) -> anyhow::Result<u64> {
    // The target may hold the shard fenced from an earlier move away.
    let mut tx = target.begin().await?;
    fence::set(&mut tx, logical, false).await?;
    tx.commit().await?;

    let claimed = consumers.claim_positions(target, logical, upto).await?;
    let mut tx = target.begin().await?;
    fence::bypass(&mut tx).await?;
    clear_shard(&mut tx, logical).await?;
    let events = tables::SHARDED_TABLES.iter().find(|t| t.name == EVENTS).context("events table")?;
    let rows = copy::copy(source, EVENTS, &format!("{} AND stream_pos <= {upto}", copy::shard_rows(events, logical)), &mut tx, EVENTS).await?;
    skip_push_evaluation(&mut tx, logical, claimed).await?;
    tx.commit().await?;
    Ok(rows)
}

/// Step 2: locks every fenced table at once, waiting for the writers in
/// flight, but gives up (and retries) well before PostgreSQL's deadlock
/// detector would pick a client's transaction to abort.
async fn fence_source(source: &PgPool, logical: usize) -> anyhow::Result<()> {
    let tables: Vec<&str> = SHARDED_TABLES.iter().filter(|t| !t.push_state).map(|t| t.name).collect();
    let lock = format!("LOCK TABLE {} IN SHARE ROW EXCLUSIVE MODE", tables.join(", "));
    let mut attempt = 0;
    loop {
        let mut tx = source.begin().await?;
        sqlx::query("SET LOCAL lock_timeout = '200ms'").execute(&mut *tx).await?;
        let fenced = async {
            sqlx::query(AssertSqlSafe(lock.as_str())).execute(&mut *tx).await?;
            fence::set(&mut tx, logical, true).await?;
            tx.commit().await
        }
        .await;
        match fenced {
            Ok(()) => return Ok(()),
            Err(err) if attempt < 50 => {
                attempt += 1;
                tracing::debug!(attempt, error = %err, "fencing the shard failed; retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(err) => return Err(err).context("fencing the shard on its source database"),
        }
    }
}

/// Step 3: everything the bulk copy did not take, in one transaction.
async fn catch_up(consumers: &StreamConsumers, source: &PgPool, target: &PgPool, logical: usize, bulk_upto: i64) -> anyhow::Result<u64> {
    let fenced_head = stream::current(source).await?;
    // The shard's push actions and queued pushes are written by the
    // source's processor, and its appservice transactions formed there;
    // the target's consumers must never see these rows as new.
    consumers.wait(source, None, fenced_head).await?;
    let claimed = consumers.claim_positions(target, logical, fenced_head).await?;
    let mut tx = target.begin().await?;
    fence::bypass(&mut tx).await?;
    let mut rows = 0;
    for table in SHARDED_TABLES.iter().filter(|t| t.name != EVENTS) {
        rows += copy::copy(source, table.name, &copy::shard_rows(table, logical), &mut tx, table.name).await?;
    }
    // Events after the bulk copy, and any redacted since (a redaction
    // rewrites its target in place).
    let events = SHARDED_TABLES.iter().find(|t| t.name == EVENTS).context("events table")?;
    sqlx::query("CREATE TEMPORARY TABLE moved_events (LIKE events) ON COMMIT DROP").execute(&mut *tx).await?;
    let condition = format!("{} AND (stream_pos > {bulk_upto} OR redacted_by IS NOT NULL)", copy::shard_rows(events, logical));
    rows += copy::copy(source, EVENTS, &condition, &mut tx, "moved_events").await?;
    sqlx::query("DELETE FROM events e USING moved_events m WHERE e.event_id = m.event_id").execute(&mut *tx).await?;
    sqlx::query("INSERT INTO events SELECT * FROM moved_events").execute(&mut *tx).await?;
    for (table, column) in COUNTERS {
        sqlx::query(AssertSqlSafe(format!("SELECT setval(pg_get_serial_sequence('{table}', '{column}'), GREATEST((SELECT MAX({column}) FROM {table}), 1))")))
            .execute(&mut *tx)
            .await?;
    }
    skip_push_evaluation(&mut tx, logical, claimed).await?;
    tx.commit().await?;
    Ok(rows)
}

/// Step 4: the same rows on both sides, table by table.
async fn verify(source: &PgPool, target: &PgPool, logical: usize) -> anyhow::Result<()> {
    for table in SHARDED_TABLES {
        let (here, there) = (copy::fingerprint(source, table, logical).await?, copy::fingerprint(target, table, logical).await?);
        if here != there {
            bail!("verification failed for {}: {} rows on the source, {} on the target (or their contents differ)", table.name, here.0, there.0);
        }
    }
    Ok(())
}

/// Step 6: the source's rows of the shard, now unread.
async fn delete_shard_rows(source: &PgPool, logical: usize) -> anyhow::Result<()> {
    let mut tx = source.begin().await?;
    fence::bypass(&mut tx).await?;
    clear_shard(&mut tx, logical).await?;
    tx.commit().await?;
    Ok(())
}

async fn clear_shard(conn: &mut PgConnection, logical: usize) -> sqlx::Result<()> {
    for table in SHARDED_TABLES {
        sqlx::query(AssertSqlSafe(format!("DELETE FROM {} WHERE {}", table.name, copy::shard_rows(table, logical)))).execute(&mut *conn).await?;
    }
    Ok(())
}

/// What reads a database's stream from a cursor: the push processor and
/// the appservices' transaction formers (those with a URL; the others
/// form nothing). Each must have passed a shard's rows on the source
/// before they are copied, and the target's own rows before copied rows
/// appear beneath its cursor.
struct StreamConsumers {
    appservices: Vec<String>,
}

impl StreamConsumers {
    /// Makes the target's head at least `upto`, so that its own later
    /// writes come after every copied row, and waits until its consumers
    /// have passed its own rows up to there; returns that position.
    async fn claim_positions(&self, target: &PgPool, logical: usize, upto: i64) -> anyhow::Result<i64> {
        let head: i64 = sqlx::query_scalar("UPDATE stream_head SET pos = GREATEST(pos, $1) RETURNING pos").bind(upto).fetch_one(target).await?;
        self.wait(target, Some(logical), head).await?;
        Ok(head)
    }

    /// Waits until every consumer of `db` has passed `upto` (but the events
    /// of logical shard `except`, which the push processor must not see).
    async fn wait(&self, db: &PgPool, except: Option<usize>, upto: i64) -> anyhow::Result<()> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let mut conn = db.acquire().await?;
            let cursor = storage::push_queue::cursor(&mut *conn).await?;
            let behind: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM appservice_streams WHERE appservice_id = ANY($1) AND pos < $2)")
                .bind(&self.appservices)
                .bind(upto)
                .fetch_one(&mut *conn)
                .await?;
            if !behind && !has_unevaluated_events(&mut conn, except, cursor, upto).await? {
                return Ok(());
            }
            ensure!(Instant::now() < deadline, "the push processor or an appservice has not passed position {upto} within {PATIENCE:?}; is a homeserver running?");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Copied events sit at or below `claimed`, which the target's push
/// processor has passed for its own events: moving its cursor there keeps
/// it from evaluating (and notifying) them a second time. The cursor row
/// is locked last, so the processor waits only for the commit.
async fn skip_push_evaluation(tx: &mut PgConnection, logical: usize, claimed: i64) -> anyhow::Result<()> {
    let cursor: i64 = sqlx::query_scalar("SELECT pos FROM push_cursor FOR UPDATE").fetch_one(&mut *tx).await?;
    ensure!(!has_unevaluated_events(tx, Some(logical), cursor, claimed).await?, "the target's push processor fell behind; try again");
    sqlx::query("UPDATE push_cursor SET pos = GREATEST(pos, $1)").bind(claimed).execute(&mut *tx).await?;
    Ok(())
}

/// Whether events in `(cursor, upto]` (but those of logical shard
/// `except`) await the push processor.
async fn has_unevaluated_events(conn: &mut PgConnection, except: Option<usize>, cursor: i64, upto: i64) -> sqlx::Result<bool> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM events WHERE stream_pos > $1 AND stream_pos <= $2 AND logical_shard(room_id) IS DISTINCT FROM $3)")
        .bind(cursor)
        .bind(upto)
        .bind(except.map(|logical| logical as i32))
        .fetch_one(conn)
        .await
}
