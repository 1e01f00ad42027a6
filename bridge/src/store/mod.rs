//! The bridge's own PostgreSQL database: one file per table family, plain
//! SQL with binds. Migrations are `migrations/bridge/`, applied at start.

pub mod ghosts;
pub mod inbound_mails;
pub mod management_rooms;
pub mod messages;
pub mod outbound_queue;
pub mod portals;
pub mod transactions;

use anyhow::Context as _;
use sqlx::{PgPool, postgres::PgPoolOptions};

use crate::config::DatabaseConfig;

/// The bridge's migrations, compiled into the binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/bridge");

/// Connects and brings the schema up to date.
pub async fn connect(config: &DatabaseConfig) -> anyhow::Result<PgPool> {
    let pool = PgPoolOptions::new()
        .max_connections(config.max_connections)
        .connect(&config.url)
        .await
        .context("connecting to the bridge database")?;
    MIGRATOR
        .run(&pool)
        .await
        .context("migrating the bridge database")?;
    Ok(pool)
}
