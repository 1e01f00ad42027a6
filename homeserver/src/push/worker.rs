//! The push tasks of one worker process and their lifecycle.
//!
//! Every worker starts one task per database. A task works only while it
//! holds that database's lease, a session-level `pg_try_advisory_lock` on a
//! connection of its own: of several workers exactly one evaluates and
//! delivers a database's pushes; when it dies its connection closes, the
//! lock is freed, and another worker's task takes over from the stored
//! cursor and queue.

use std::time::Duration;

use anyhow::Context as _;
use sqlx::{Connection as _, PgConnection, PgPool};
use tokio::{
    sync::{Notify, watch},
    task::JoinHandle,
};

use super::{processor::Processor, sender::Sender};
use crate::server::Homeserver;

/// The advisory lock key of the push lease ("push" in ASCII).
const LEASE_KEY: i64 = 0x7075_7368;
/// How often a task without the lease tries to take it.
const LEASE_RETRY: Duration = Duration::from_secs(5);
/// How often the lease holder checks that its lock connection is alive.
const LEASE_CHECK: Duration = Duration::from_secs(5);
/// How long to pause after a database failure before starting over.
const ERROR_PAUSE: Duration = Duration::from_secs(2);
/// How long a stop may wait for the tasks (a batch transaction to finish).
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// Tells this worker's push processors that events were committed, so they
/// evaluate them at once instead of at their next poll.
#[derive(Debug)]
pub struct Wakeup(watch::Sender<u64>);

impl Default for Wakeup {
    fn default() -> Self {
        Self(watch::channel(0).0)
    }
}

impl Wakeup {
    /// Called after every commit of room events.
    pub fn events_committed(&self) {
        self.0.send_modify(|generation| *generation = generation.wrapping_add(1));
    }

    fn subscribe(&self) -> watch::Receiver<u64> {
        self.0.subscribe()
    }
}

/// The running push tasks of this worker; dropping it stops them too.
pub struct PushWorker {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl PushWorker {
    /// Starts one task per database.
    pub fn start(server: &Homeserver) -> Self {
        let (stop, stopped) = watch::channel(false);
        let tasks = server
            .db
            .shards()
            .map(|shard| tokio::spawn(run(server.clone(), shard.pool.clone(), stopped.clone())))
            .collect();
        Self { stop, tasks }
    }

    /// Stops the tasks and waits for them. A notification in flight is
    /// abandoned and stays queued: it is sent again after the restart (at
    /// least once, never lost).
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            if tokio::time::timeout(STOP_TIMEOUT, task).await.is_err() {
                tracing::warn!("a push task did not stop in time");
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
async fn run(server: Homeserver, pool: PgPool, mut stop: watch::Receiver<bool>) {
    loop {
        let pause = tokio::select! {
            () = stopped(&mut stop) => return,
            result = lead(&server, &pool) => match result {
                Ok(()) => LEASE_RETRY,
                Err(err) => {
                    tracing::warn!(error = %format!("{err:#}"), "push processing failed; starting over");
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

/// Takes the lease if it is free and processes while holding it. Returns
/// `Ok` when another worker holds it; runs until an error otherwise.
async fn lead(server: &Homeserver, pool: &PgPool) -> anyhow::Result<()> {
    let mut lease = PgConnection::connect_with(&pool.connect_options()).await.context("opening the lease connection")?;
    let taken: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)").bind(LEASE_KEY).fetch_one(&mut lease).await?;
    if !taken {
        // Closed politely: idle workers ask every few seconds.
        lease.close().await?;
        return Ok(());
    }
    tracing::info!("holding the push lease of a database");
    let queued = Notify::new();
    let processor = Processor::new(server, pool, &queued);
    let sender = Sender::new(server, pool, &queued)?;
    tokio::select! {
        result = watch_lease(&mut lease) => result,
        result = processor.run(server.push_wakeup.subscribe()) => result,
        result = sender.run() => result,
    }
}

/// Fails when the lease connection breaks: the lock is gone with it.
async fn watch_lease(lease: &mut PgConnection) -> anyhow::Result<()> {
    loop {
        tokio::time::sleep(LEASE_CHECK).await;
        lease.ping().await.context("the push lease connection was lost")?;
    }
}
