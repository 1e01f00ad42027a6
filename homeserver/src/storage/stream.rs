//! The stream head: one position per database that every /sync-visible
//! write advances inside its own transaction.
//!
//! `UPDATE ... RETURNING` row-locks the head until the writer commits, so
//! positions become visible strictly in order: a reader that sees position
//! P has seen every row with a position <= P. The price is that writes to
//! one database serialize for the last few statements of their
//! transaction; sharding spreads them over databases.

use sqlx::PgConnection;

/// Takes the next position. Call it as late as possible in the transaction:
/// the head stays locked until commit.
pub async fn advance(conn: &mut PgConnection) -> sqlx::Result<i64> {
    sqlx::query_scalar("UPDATE stream_head SET pos = pos + 1 RETURNING pos").fetch_one(conn).await
}

/// The newest committed position.
pub async fn current(db: impl sqlx::PgExecutor<'_>) -> sqlx::Result<i64> {
    sqlx::query_scalar("SELECT pos FROM stream_head").fetch_one(db).await
}

/// The newest committed position of every database, in shard-map order
/// (the positions of a sync token).
pub async fn heads(db: &super::Db) -> sqlx::Result<Vec<i64>> {
    let mut heads = Vec::new();
    for shard in db.shards() {
        heads.push(current(&shard.pool).await?);
    }
    Ok(heads)
}
