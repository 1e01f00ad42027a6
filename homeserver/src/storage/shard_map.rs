//! The shard map: 256 logical shards, each on one physical database.
//!
//! A room id, user id, alias or media id hashes to a logical shard; the map
//! in database 0 (`shard_map`) says which physical database holds it. The
//! first start of a deployment splits the logical shards evenly over the
//! configured databases; `shard_identity` pins each database to its place
//! in the configured list, which is also its place in every sync token, so
//! the list may only grow at its end.

use anyhow::{Context as _, bail};
use sha2::{Digest as _, Sha256};
use sqlx::PgPool;

/// Logical shards: enough to spread over many more databases than anyone
/// runs, few enough that the map is one small table.
pub const LOGICAL_SHARDS: usize = 256;

/// The logical shard of an id: the first two bytes of its SHA-256. A
/// cryptographic hash so that nobody can choose ids that crowd one shard,
/// and stable across versions and platforms, unlike `std`'s hasher.
pub fn logical_shard(id: &str) -> usize {
    let digest = Sha256::digest(id.as_bytes());
    usize::from(u16::from_be_bytes([digest[0], digest[1]])) % LOGICAL_SHARDS
}

/// Records `index` in a database that has no identity yet, and fails if it
/// has another: a reordered list would send every id to the wrong rows.
pub async fn claim_identity(pool: &PgPool, index: usize, url_for_errors: &str) -> anyhow::Result<()> {
    let index = i32::try_from(index).context("too many databases")?;
    sqlx::query("INSERT INTO shard_identity (database_index) VALUES ($1) ON CONFLICT (singleton) DO NOTHING")
        .bind(index)
        .execute(pool)
        .await?;
    let stored: i32 = sqlx::query_scalar("SELECT database_index FROM shard_identity").fetch_one(pool).await?;
    if stored != index {
        bail!("database {url_for_errors} is database {stored} of its deployment, but the config lists it as database {index}; databases may only be added at the end of the list");
    }
    Ok(())
}

/// The map of one moment: where every logical shard is, and where each
/// was before the moves that made it so. A sync token names the map epoch
/// it was issued under, so a worker can tell in which database's position
/// space the token counts a moved room's or user's rows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardMap {
    /// Incremented by every completed move; 0 for a map never changed.
    pub epoch: u64,
    /// Logical shard -> physical database.
    current: Vec<usize>,
    /// The completed moves, oldest first: (epoch it made, logical shard,
    /// database it left).
    moves: Vec<(u64, usize, usize)>,
}

impl ShardMap {
    /// The database holding logical shard `logical` now.
    pub fn database(&self, logical: usize) -> usize {
        self.current[logical]
    }

    /// The database that held logical shard `logical` under map `epoch`:
    /// the source of the first move after `epoch`, else where it is now.
    pub fn database_at(&self, epoch: u64, logical: usize) -> usize {
        self.moves.iter().find(|(made, shard, _)| *made > epoch && *shard == logical).map_or(self.current[logical], |(_, _, from)| *from)
    }
}

/// The map from database 0, created as an even split over `databases` on
/// the first start. Every entry must name a configured database.
pub async fn load_or_init(directory: &PgPool, databases: usize) -> anyhow::Result<ShardMap> {
    let mut tx = directory.begin().await?;
    // One initializer at a time when several workers start together, and a
    // map and epoch read together while a move switches them.
    sqlx::query("LOCK TABLE shard_map IN EXCLUSIVE MODE").execute(&mut *tx).await?;
    let mut rows: Vec<(i32, i32)> = sqlx::query_as("SELECT logical_shard, database_index FROM shard_map ORDER BY logical_shard").fetch_all(&mut *tx).await?;
    if rows.is_empty() {
        rows = (0..LOGICAL_SHARDS).map(|logical| (logical, logical * databases / LOGICAL_SHARDS)).map(|(l, d)| (l as i32, d as i32)).collect();
        let (logical, physical): (Vec<i32>, Vec<i32>) = rows.iter().copied().unzip();
        sqlx::query("INSERT INTO shard_map (logical_shard, database_index) SELECT * FROM UNNEST($1::int[], $2::int[])")
            .bind(&logical)
            .bind(&physical)
            .execute(&mut *tx)
            .await?;
    }
    let epoch: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(epoch), 0) FROM shard_moves").fetch_one(&mut *tx).await?;
    let moves: Vec<(i64, i32, i32)> = sqlx::query_as("SELECT epoch, logical_shard, from_database FROM shard_moves ORDER BY epoch").fetch_all(&mut *tx).await?;
    tx.commit().await?;

    if rows.len() != LOGICAL_SHARDS {
        bail!("the shard map in database 0 has {} entries, not {LOGICAL_SHARDS}", rows.len());
    }
    let configured = |physical: i32| {
        usize::try_from(physical).ok().filter(|p| *p < databases).with_context(|| {
            format!("the shard map places shards on database {physical}, but only {databases} database(s) are configured")
        })
    };
    let current = rows.into_iter().map(|(_, physical)| configured(physical)).collect::<anyhow::Result<_>>()?;
    let moves = moves
        .into_iter()
        .map(|(epoch, logical, from)| Ok((epoch as u64, logical as usize, configured(from)?)))
        .collect::<anyhow::Result<_>>()?;
    Ok(ShardMap { epoch: epoch as u64, current, moves })
}

/// Points logical shard `logical` at database `to` under a new epoch;
/// returns the epoch. Refuses when the shard is no longer on `from`
/// (another move got there first).
pub async fn switch(directory: &PgPool, logical: usize, from: usize, to: usize) -> anyhow::Result<u64> {
    let mut tx = directory.begin().await?;
    sqlx::query("LOCK TABLE shard_map IN EXCLUSIVE MODE").execute(&mut *tx).await?;
    let (logical, from, to) = (logical as i32, from as i32, to as i32);
    let now: i32 = sqlx::query_scalar("SELECT database_index FROM shard_map WHERE logical_shard = $1").bind(logical).fetch_one(&mut *tx).await?;
    if now != from {
        bail!("logical shard {logical} moved to database {now} meanwhile");
    }
    let epoch: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(epoch), 0) + 1 FROM shard_moves").fetch_one(&mut *tx).await?;
    sqlx::query("UPDATE shard_map SET database_index = $2 WHERE logical_shard = $1").bind(logical).bind(to).execute(&mut *tx).await?;
    sqlx::query("INSERT INTO shard_moves (epoch, logical_shard, from_database, to_database, switched_ts) VALUES ($1, $2, $3, $4, $5)")
        .bind(epoch)
        .bind(logical)
        .bind(from)
        .bind(to)
        .bind(super::now_ms())
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(epoch as u64)
}

/// The newest map epoch in database 0: cheap enough to poll every second.
pub async fn current_epoch(directory: &PgPool) -> sqlx::Result<u64> {
    let epoch: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(epoch), 0) FROM shard_moves").fetch_one(directory).await?;
    Ok(epoch as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_spread_over_all_logical_shards() {
        let mut seen = vec![0usize; LOGICAL_SHARDS];
        for n in 0..100_000 {
            seen[logical_shard(&format!("!room{n}:example.org"))] += 1;
        }
        let (min, max) = (seen.iter().min().unwrap(), seen.iter().max().unwrap());
        // 390 expected per shard; a fair hash stays well within ±25 %.
        assert!(*min > 290 && *max < 490, "min {min}, max {max}");
    }

    #[test]
    fn a_token_epoch_finds_where_a_shard_was() {
        let map = ShardMap { epoch: 2, current: vec![1, 0, 1], moves: vec![(1, 0, 0), (2, 0, 2)] };
        assert_eq!(map.database_at(0, 0), 0);
        assert_eq!(map.database_at(1, 0), 2);
        assert_eq!(map.database_at(2, 0), 1);
        assert_eq!(map.database_at(0, 2), 1, "never moved");
    }

    #[test]
    fn logical_shard_is_stable() {
        // Rows were placed with these values: they must never change.
        assert_eq!(logical_shard("@alice:example.org"), logical_shard("@alice:example.org"));
        assert_eq!(logical_shard(""), 0xe3b0 % LOGICAL_SHARDS);
    }
}
