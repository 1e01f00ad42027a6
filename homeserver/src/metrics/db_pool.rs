//! Connection pool usage per database, read from sqlx's pools at scrape
//! time: a gauge kept up to date on every checkout would cost more than the
//! rare read, and sqlx already counts.

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{MetricType, gauge::ConstGauge},
};

use crate::storage::Db;

/// Samples `db_pool_connections{shard,state}` and
/// `db_pool_max_connections{shard}` for every database in [`Db::shards`];
/// the shard label is the database's index there.
#[derive(Debug)]
pub(super) struct DbPoolCollector {
    db: Db,
}

impl DbPoolCollector {
    pub(super) fn new(db: Db) -> Self {
        Self { db }
    }
}

impl Collector for DbPoolCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        // Read once, so both families describe the same moment per pool.
        let pools: Vec<(String, PoolUsage)> = self.db.shards().map(|shard| (shard.index.to_string(), PoolUsage::of(&shard.pool))).collect();

        let mut connections = encoder.encode_descriptor(
            "db_pool_connections",
            "Open connections of the database pool, idle or in use.",
            None,
            MetricType::Gauge,
        )?;
        for (shard, usage) in &pools {
            for (state, count) in [("idle", usage.idle), ("in_use", usage.in_use)] {
                ConstGauge::new(count).encode(connections.encode_family(&[("shard", shard.as_str()), ("state", state)])?)?;
            }
        }

        let mut max = encoder.encode_descriptor("db_pool_max_connections", "Most connections the database pool opens.", None, MetricType::Gauge)?;
        for (shard, usage) in &pools {
            ConstGauge::new(usage.max).encode(max.encode_family(&[("shard", shard.as_str())])?)?;
        }
        Ok(())
    }
}

/// One pool's counts at one moment.
struct PoolUsage {
    idle: u32,
    in_use: u32,
    max: u32,
}

impl PoolUsage {
    fn of(pool: &sqlx::PgPool) -> Self {
        // `size` and `num_idle` are two reads; a connection returned in
        // between must not make `in_use` negative.
        let size = pool.size();
        let idle = u32::try_from(pool.num_idle()).unwrap_or(u32::MAX).min(size);
        Self { idle, in_use: size - idle, max: pool.options().get_max_connections() }
    }
}
