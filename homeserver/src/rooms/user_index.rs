//! Carries local users' membership changes from the room's database into
//! their `user_rooms` index on the user's database.
//!
//! The two may be different databases, so no transaction covers both. The
//! write order makes that safe: the room's transaction commits the member
//! event with the change flagged `index_pending` (the outbox); then the
//! writer upserts `user_rooms` in the user's database and clears the flag.
//! A crash in between leaves the flag set, and [`RepairTask`] finishes the
//! copy. The upsert keeps the newer of two memberships (by the member
//! event's position in the room), so replaying an entry is harmless. Until
//! then the user's `/sync` does not list the room yet, but the room's own
//! authorization (which reads `room_memberships`) already holds: a client
//! never sees a half-joined state that it acted on.

use std::time::Duration;

use tokio::{sync::watch, task::JoinHandle};

use crate::{
    http::ApiResult,
    server::Homeserver,
    storage::{memberships::{self, IndexEntry}, now_ms, stream},
};

/// A flag older than this belongs to a writer that failed or died; younger
/// ones are left to their writer.
const REPAIR_AFTER: Duration = Duration::from_secs(10);
/// How often every worker looks for such entries.
const REPAIR_INTERVAL: Duration = Duration::from_secs(30);
/// Entries per database and round.
const REPAIR_BATCH: i64 = 500;

/// Copies one committed membership into the user's index and clears its
/// outbox flag.
pub async fn apply(server: &Homeserver, entry: &IndexEntry) -> ApiResult<()> {
    let user_id = ruma::UserId::parse(entry.user_id.as_str()).map_err(|err| crate::http::ApiError::Internal(err.into()))?;
    let mut tx = server.db.user_shard(&user_id).begin().await?;
    let pos = stream::advance(&mut tx).await?;
    memberships::set_user_room(&mut tx, entry, pos).await?;
    tx.commit().await?;
    let room_id = ruma::RoomId::parse(entry.room_id.as_str()).map_err(|err| crate::http::ApiError::Internal(err.into()))?;
    memberships::index_done(server.db.room_shard(&room_id), entry).await?;
    Ok(())
}

/// One round over every database: finishes the entries whose writer did
/// not. Returns how many it repaired.
pub async fn repair_pending(server: &Homeserver) -> ApiResult<usize> {
    let mut repaired = 0;
    let older_than = now_ms() - i64::try_from(REPAIR_AFTER.as_millis()).unwrap_or(i64::MAX);
    for shard in server.db.shards() {
        for entry in memberships::index_pending(&shard.pool, older_than, REPAIR_BATCH).await? {
            apply(server, &entry).await?;
            server.notifier.notify_users(ruma::UserId::parse(entry.user_id.as_str()).ok().iter());
            repaired += 1;
        }
    }
    Ok(repaired)
}

/// The repair loop of one worker. Every worker runs it: entries are
/// idempotent, so no lease is needed, and the query is an index scan of an
/// almost always empty partial index.
pub struct RepairTask {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl RepairTask {
    pub fn start(server: &Homeserver) -> Self {
        let (stop, mut stopped) = watch::channel(false);
        let server = server.clone();
        let task = tokio::spawn(async move {
            loop {
                match repair_pending(&server).await {
                    Ok(0) => {}
                    Ok(repaired) => tracing::warn!(repaired, "finished membership changes that a writer left half-done"),
                    Err(err) => tracing::warn!(errcode = %err.errcode(), "membership index repair failed; retrying later"),
                }
                tokio::select! {
                    _ = stopped.wait_for(|stop| *stop) => return,
                    () = tokio::time::sleep(REPAIR_INTERVAL) => {}
                }
            }
        });
        Self { stop, task }
    }

    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}
