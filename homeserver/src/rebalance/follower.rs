//! Every worker follows the shard map: it polls database 0's map epoch
//! every second, loads a newer map, and records the epoch it uses
//! (`shard_map_readers`), which a move waits for before it deletes a
//! shard's old rows. A token from a worker that switched first makes a
//! worker load the map at once (`SyncToken::follow_map`).

use std::time::{Duration, Instant};

use anyhow::ensure;
use sqlx::PgPool;
use tokio::{sync::watch, task::JoinHandle};

use crate::{
    auth::tokens::random_string,
    server::Homeserver,
    storage::{self, shard_map},
};

const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// A worker that has not reported for this long is taken for stopped.
const READER_SILENCE_MS: i64 = 15_000;
/// How often a worker reports the epoch it uses when nothing changes.
const REPORT_INTERVAL: Duration = Duration::from_secs(5);

pub struct MapFollower {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl MapFollower {
    pub fn start(server: &Homeserver) -> Self {
        let (stop, mut stopped) = watch::channel(false);
        let db = server.db.clone();
        let worker_id = random_string(16);
        let task = tokio::spawn(async move {
            let mut reported: Option<(u64, Instant)> = None;
            loop {
                let followed = async {
                    let newest = shard_map::current_epoch(db.global()).await?;
                    db.follow_map(newest).await?;
                    let epoch = db.map_epoch();
                    if reported.is_none_or(|(seen, at)| seen != epoch || at.elapsed() >= REPORT_INTERVAL) {
                        report(db.global(), &worker_id, epoch).await?;
                        reported = Some((epoch, Instant::now()));
                    }
                    anyhow::Ok(())
                }
                .await;
                if let Err(err) = followed {
                    tracing::warn!(error = %err, "following the shard map failed; retrying");
                }
                tokio::select! {
                    _ = stopped.wait_for(|stop| *stop) => break,
                    () = tokio::time::sleep(POLL_INTERVAL) => {}
                }
            }
            let _ = sqlx::query("DELETE FROM shard_map_readers WHERE worker_id = $1").bind(&worker_id).execute(db.global()).await;
        });
        Self { stop, task }
    }

    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

async fn report(directory: &PgPool, worker_id: &str, epoch: u64) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO shard_map_readers (worker_id, epoch, seen_ts) VALUES ($1, $2, $3)
         ON CONFLICT (worker_id) DO UPDATE SET epoch = EXCLUDED.epoch, seen_ts = EXCLUDED.seen_ts",
    )
    .bind(worker_id)
    .bind(epoch as i64)
    .bind(storage::now_ms())
    .execute(directory)
    .await?;
    Ok(())
}

/// Waits until no worker heard from lately uses a map older than `epoch`,
/// then one more poll interval for reads they resolved just before.
pub async fn wait_until_followed(directory: &PgPool, epoch: u64, patience: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + patience;
    loop {
        let behind: i64 = sqlx::query_scalar("SELECT count(*) FROM shard_map_readers WHERE epoch < $1 AND seen_ts > $2")
            .bind(epoch as i64)
            .bind(storage::now_ms() - READER_SILENCE_MS)
            .fetch_one(directory)
            .await?;
        if behind == 0 {
            tokio::time::sleep(POLL_INTERVAL).await;
            return Ok(());
        }
        ensure!(Instant::now() < deadline, "{behind} worker(s) still use a map older than epoch {epoch}; the source keeps its copy of the shard (fenced)");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
