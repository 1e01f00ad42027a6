//! The `loadtest_*` databases of the side-by-side runs: created fresh for
//! each target, dropped afterwards.

use anyhow::Context as _;
use sqlx::{AssertSqlSafe, Connection as _, PgConnection};

/// Every database the load test creates starts with this (and it drops no
/// other).
pub const PREFIX: &str = "loadtest_";

/// Drops (if present) and creates `name`; `c_collation` for Synapse, which
/// refuses databases with another collation.
pub async fn recreate(admin_url: &str, name: &str, c_collation: bool) -> anyhow::Result<String> {
    anyhow::ensure!(name.starts_with(PREFIX) && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'), "database name {name} must be loadtest_[a-z0-9_]*");
    let mut admin = PgConnection::connect(admin_url).await.with_context(|| format!("connecting to {admin_url}"))?;
    sqlx::raw_sql(AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))).execute(&mut admin).await?;
    let options = if c_collation { " ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0" } else { "" };
    sqlx::raw_sql(AssertSqlSafe(format!("CREATE DATABASE {name}{options}"))).execute(&mut admin).await.with_context(|| format!("creating database {name}"))?;
    let mut url = url::Url::parse(admin_url)?;
    url.set_path(name);
    Ok(url.into())
}

/// Drops `name`.
pub async fn drop(admin_url: &str, name: &str) -> anyhow::Result<()> {
    anyhow::ensure!(name.starts_with(PREFIX), "refusing to drop {name}");
    let mut admin = PgConnection::connect(admin_url).await?;
    sqlx::raw_sql(AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))).execute(&mut admin).await?;
    Ok(())
}
