//! One throwaway PostgreSQL database per test.
//!
//! Every [`TestDatabase`] is created through the admin URL
//! (`HOMESERVER_TEST_DATABASE_URL`) under a name that starts with
//! `hs_test_<unix seconds>_`, and dropped again when the value is dropped,
//! also when the test panics. A test process that is killed (a nextest
//! timeout, Ctrl-C) cannot clean up, so every new database first sweeps
//! `hs_test_` databases older than [`STALE_AFTER`]: parallel runs never
//! touch each other's live databases, and leftovers do not pile up.
//!
//! Set `HOMESERVER_TEST_KEEP_DB=1` to keep the databases for a post-mortem
//! (they are swept by a later run once stale).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::{Rng as _, distr::Alphanumeric};
use sqlx::{AssertSqlSafe, Connection as _, PgConnection};

/// Where the tests reach PostgreSQL as a user that may create databases.
const DEFAULT_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
/// Prefix of every database the tests create (and the only ones they drop).
const PREFIX: &str = "hs_test_";
/// Age after which a test database is assumed abandoned.
const STALE_AFTER: Duration = Duration::from_secs(60 * 60);

/// A database that exists for the lifetime of this value.
pub struct TestDatabase {
    name: String,
    admin_url: String,
    url: String,
}

impl TestDatabase {
    /// Creates a fresh, empty database with a unique name.
    pub async fn create() -> Self {
        let admin_url = std::env::var("HOMESERVER_TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_ADMIN_URL.to_owned());
        let suffix: String = rand::rng().sample_iter(&Alphanumeric).take(10).map(|c| char::from(c).to_ascii_lowercase()).collect();
        let name = format!("{PREFIX}{}_{}_{suffix}", unix_seconds(), std::process::id());

        let mut admin = PgConnection::connect(&admin_url)
            .await
            .unwrap_or_else(|err| panic!("cannot reach PostgreSQL at {admin_url} (set HOMESERVER_TEST_DATABASE_URL): {err}"));
        sweep_stale(&mut admin).await;
        sqlx::raw_sql(AssertSqlSafe(format!("CREATE DATABASE {}", quote_ident(&name))))
            .execute(&mut admin)
            .await
            .unwrap_or_else(|err| panic!("creating database {name}: {err}"));
        let _ = admin.close().await;

        let mut url = url::Url::parse(&admin_url).expect("HOMESERVER_TEST_DATABASE_URL is a URL");
        url.set_path(&name);
        eprintln!("test database: {name}");
        Self { name, admin_url, url: url.into() }
    }

    /// The URL the homeserver connects with.
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for TestDatabase {
    /// Drops the database, closing whatever connections are still open. Runs
    /// on its own thread and runtime: `Drop` cannot await, and the test's
    /// runtime may be the one that is shutting down.
    fn drop(&mut self) {
        if std::env::var_os("HOMESERVER_TEST_KEEP_DB").is_some() {
            eprintln!("keeping test database {}", self.name);
            return;
        }
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        let dropped = std::thread::spawn(move || {
            // Quiet: under parallel load a forced drop may exceed sqlx's
            // slow-statement threshold, which is no news for the test.
            let _quiet = tracing::subscriber::set_default(tracing::subscriber::NoSubscriber::default());
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            runtime.block_on(async {
                let mut admin = PgConnection::connect(&admin_url).await?;
                drop_database(&mut admin, &name).await?;
                admin.close().await
            })?;
            anyhow::Ok(())
        })
        .join();
        match dropped {
            Ok(Ok(())) => {}
            Ok(Err(err)) => eprintln!("could not drop test database {}: {err:#}", self.name),
            Err(_) => eprintln!("could not drop test database {}: the cleanup thread panicked", self.name),
        }
    }
}

async fn drop_database(admin: &mut PgConnection, name: &str) -> sqlx::Result<()> {
    sqlx::raw_sql(AssertSqlSafe(format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", quote_ident(name)))).execute(admin).await?;
    Ok(())
}

/// `name` as a PostgreSQL identifier (DDL takes no bind parameters).
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Drops test databases left behind by killed test processes. Errors are
/// ignored: another process may be sweeping the same database right now.
async fn sweep_stale(admin: &mut PgConnection) {
    let Ok(names) = sqlx::query_scalar::<_, String>("SELECT datname FROM pg_database WHERE starts_with(datname, $1)")
        .bind(PREFIX)
        .fetch_all(&mut *admin)
        .await
    else {
        return;
    };
    let cutoff = unix_seconds().saturating_sub(STALE_AFTER.as_secs());
    for name in names {
        let created = name.strip_prefix(PREFIX).and_then(|rest| rest.split('_').next()).and_then(|secs| secs.parse::<u64>().ok());
        if created.is_some_and(|created| created < cutoff) {
            let _ = drop_database(admin, &name).await;
        }
    }
}

fn unix_seconds() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970").as_secs()
}
