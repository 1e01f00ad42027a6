//! Rows of one logical shard from one database to another, with `COPY` in
//! binary form (every database has the same schema), preserving every
//! column: stream positions too, which is what keeps tokens valid.

use futures::TryStreamExt as _;
use sqlx::{AssertSqlSafe, PgConnection, PgPool};

use super::tables::ShardedTable;

/// `WHERE` of a logical shard's rows of `table`.
pub fn shard_rows(table: &ShardedTable, logical: usize) -> String {
    format!("logical_shard({}) = {logical}", table.key)
}

/// Streams `SELECT * FROM table WHERE condition` from `source` into
/// `into` (a table of the target's transaction `target`); returns the
/// number of rows.
pub async fn copy(source: &PgPool, table: &str, condition: &str, target: &mut PgConnection, into: &str) -> anyhow::Result<u64> {
    let mut reader = source.acquire().await?;
    let mut rows = reader.copy_out_raw(&format!("COPY (SELECT * FROM {table} WHERE {condition}) TO STDOUT (FORMAT binary)")).await?;
    let mut writer = target.copy_in_raw(&format!("COPY {into} FROM STDIN (FORMAT binary)")).await?;
    while let Some(chunk) = rows.try_next().await? {
        writer.send(chunk).await?;
    }
    Ok(writer.finish().await?)
}

/// Count and an order-independent checksum of a shard's rows of `table`,
/// to compare source and target.
pub async fn fingerprint(conn: &PgPool, table: &ShardedTable, logical: usize) -> sqlx::Result<(i64, i64)> {
    let name = table.name;
    sqlx::query_as(AssertSqlSafe(format!("SELECT count(*), COALESCE(sum(hashtext(t::text)::bigint), 0)::bigint FROM {name} t WHERE {}", shard_rows(table, logical))))
        .fetch_one(conn)
        .await
}
