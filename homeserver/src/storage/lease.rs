//! Leases: background work of which exactly one worker process does each
//! database's share (push processing, appservice delivery).
//!
//! Every worker starts one task per database. A task works only while it
//! holds that database's lease, a session-level `pg_try_advisory_lock` on a
//! connection of its own: when the holder dies its connection closes, the
//! lock is freed, and another worker's task takes over from what the work
//! stored in the database.

use std::{future::Future, time::Duration};

use anyhow::Context as _;
use sqlx::{Connection as _, PgConnection, PgPool};
use tokio::{sync::watch, task::JoinHandle};

use super::{Db, Shard};

/// How often a task without the lease tries to take it.
const LEASE_RETRY: Duration = Duration::from_secs(5);
/// How often the lease holder checks that its lock connection is alive.
const LEASE_CHECK: Duration = Duration::from_secs(5);
/// How long to pause after a failure before starting over.
const ERROR_PAUSE: Duration = Duration::from_secs(2);
/// How long a stop may wait for the tasks (a transaction to finish).
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// A kind of leased work: its advisory lock key and its name in logs.
#[derive(Clone, Copy, Debug)]
pub struct Lease {
    pub key: i64,
    pub name: &'static str,
}

impl Lease {
    /// Runs `work` once while holding this lease of `pool`'s database, for
    /// periodic work that needs no standing holder (the retention job);
    /// `None` when someone else holds it. Released by closing the lock's
    /// connection, also when `work` fails.
    pub async fn run_once<T>(self, pool: &PgPool, work: impl Future<Output = anyhow::Result<T>>) -> anyhow::Result<Option<T>> {
        let mut connection = PgConnection::connect_with(&pool.connect_options()).await.context("opening the lease connection")?;
        let taken: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)").bind(self.key).fetch_one(&mut connection).await?;
        let result = if taken { work.await.map(Some) } else { Ok(None) };
        connection.close().await?;
        result
    }
}

/// The running tasks of one kind of leased work in this worker; dropping
/// the handle stops them too.
pub struct LeasedTasks {
    lease: Lease,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl LeasedTasks {
    /// Starts one task per database; while it holds the database's lease it
    /// runs `work(shard index, pool)`, which returns only on failure.
    pub fn start<W, Fut>(db: &Db, lease: Lease, work: W) -> Self
    where
        W: Fn(usize, PgPool) -> Fut + Clone + Send + 'static,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let (stop, stopped) = watch::channel(false);
        let tasks = db
            .shards()
            .map(|Shard { index, pool }| tokio::spawn(run(lease, *index, pool.clone(), stopped.clone(), work.clone())))
            .collect();
        Self { lease, stop, tasks }
    }

    /// Stops the tasks and waits for them. Work in flight is abandoned and
    /// done again by the next holder: whatever it stores must make that
    /// harmless.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            if tokio::time::timeout(STOP_TIMEOUT, task).await.is_err() {
                tracing::warn!(lease = self.lease.name, "a leased task did not stop in time");
            }
        }
    }
}

/// Resolves when the worker stops (or its handle is dropped).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

/// One database's task: take the lease, work while holding it, start over
/// after a failure, until the worker stops.
async fn run<W, Fut>(lease: Lease, index: usize, pool: PgPool, mut stop: watch::Receiver<bool>, work: W)
where
    W: Fn(usize, PgPool) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    loop {
        let pause = tokio::select! {
            () = stopped(&mut stop) => return,
            result = lead(lease, &pool, work(index, pool.clone())) => match result {
                Ok(()) => LEASE_RETRY,
                Err(err) => {
                    tracing::warn!(lease = lease.name, database = index, error = %format!("{err:#}"), "leased work failed; starting over");
                    ERROR_PAUSE
                }
            },
        };
        tokio::select! {
            () = stopped(&mut stop) => return,
            () = tokio::time::sleep(pause) => {}
        }
    }
}

/// Takes the lease if it is free and works while holding it. Returns `Ok`
/// when another worker holds it; runs until an error otherwise.
async fn lead(lease: Lease, pool: &PgPool, work: impl Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
    let mut connection = PgConnection::connect_with(&pool.connect_options()).await.context("opening the lease connection")?;
    let taken: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)").bind(lease.key).fetch_one(&mut connection).await?;
    if !taken {
        // Closed politely: idle workers ask every few seconds.
        connection.close().await?;
        return Ok(());
    }
    tracing::info!(lease = lease.name, "holding the lease of a database");
    tokio::select! {
        result = watch_lease(&mut connection) => result,
        result = work => result,
    }
}

/// Fails when the lease connection breaks: the lock is gone with it.
async fn watch_lease(connection: &mut PgConnection) -> anyhow::Result<()> {
    loop {
        tokio::time::sleep(LEASE_CHECK).await;
        connection.ping().await.context("the lease connection was lost")?;
    }
}
