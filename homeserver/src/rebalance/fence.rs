//! Fences: triggers that refuse writes to logical shards a database no
//! longer (or soon no longer) owns, generated from its `shard_fences` list.
//! The trigger's `WHEN` is evaluated in C, so writes to other shards pay
//! one hash of the key, and a database without fences has no triggers.

use sqlx::{AssertSqlSafe, PgConnection};

use super::tables::SHARDED_TABLES;

/// SQLSTATE of a write refused by a fence (`refuse_fenced_write`).
pub const FENCED: &str = "HS001";

/// Adds (`fenced`) or removes a logical shard from this database's fences
/// and regenerates the triggers, in the caller's transaction. Creating a
/// trigger waits for the table's writers in flight and holds new ones off
/// until commit: after commit, every write to the shard here fails.
pub async fn set(conn: &mut PgConnection, logical: usize, fenced: bool) -> sqlx::Result<()> {
    let logical = logical as i32;
    let changed = if fenced {
        sqlx::query("INSERT INTO shard_fences (logical_shard) VALUES ($1) ON CONFLICT DO NOTHING").bind(logical).execute(&mut *conn).await?
    } else {
        sqlx::query("DELETE FROM shard_fences WHERE logical_shard = $1").bind(logical).execute(&mut *conn).await?
    };
    if changed.rows_affected() == 0 {
        // The triggers were generated with the list in the same transaction.
        return Ok(());
    }
    let shards: Vec<i32> = sqlx::query_scalar("SELECT logical_shard FROM shard_fences ORDER BY logical_shard").fetch_all(&mut *conn).await?;
    let list = shards.iter().map(ToString::to_string).collect::<Vec<_>>().join(",");
    for table in SHARDED_TABLES.iter().filter(|table| !table.push_state) {
        let (name, key) = (table.name, table.key);
        sqlx::query(AssertSqlSafe(format!("DROP TRIGGER IF EXISTS shard_fence_write ON {name}"))).execute(&mut *conn).await?;
        sqlx::query(AssertSqlSafe(format!("DROP TRIGGER IF EXISTS shard_fence_delete ON {name}"))).execute(&mut *conn).await?;
        if shards.is_empty() {
            continue;
        }
        sqlx::query(AssertSqlSafe(format!(
            "CREATE TRIGGER shard_fence_write BEFORE INSERT OR UPDATE ON {name} FOR EACH ROW \
             WHEN (logical_shard(NEW.{key}) = ANY ('{{{list}}}'::int[])) EXECUTE FUNCTION refuse_fenced_write()"
        )))
        .execute(&mut *conn)
        .await?;
        sqlx::query(AssertSqlSafe(format!(
            "CREATE TRIGGER shard_fence_delete BEFORE DELETE ON {name} FOR EACH ROW \
             WHEN (logical_shard(OLD.{key}) = ANY ('{{{list}}}'::int[])) EXECUTE FUNCTION refuse_fenced_write()"
        )))
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Lets the move's own writes through the fences, for the rest of the
/// caller's transaction.
pub async fn bypass(conn: &mut PgConnection) -> sqlx::Result<()> {
    sqlx::query("SELECT set_config('homeserver.shard_move', 'on', true)").execute(conn).await?;
    Ok(())
}

/// Whether a database error is a fence's refusal.
pub fn is_fenced(err: &sqlx::Error) -> bool {
    err.as_database_error().and_then(|e| e.code()).is_some_and(|code| code == FENCED)
}
