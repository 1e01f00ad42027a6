//! Takes users offline whose activity stopped: per database, one worker
//! (the holder of the database's lease) sweeps the activity sets of the
//! logical shards the database holds. At start and now and then after, it
//! also adopts the database's present users that have no activity on
//! record (lost with a crashed worker, a flushed Redis or a restarted
//! single process) as active now, so the sweep takes them offline unless
//! they come back within `offline_after`; nobody flickers offline.

use std::time::{Duration, Instant};

use ruma::{OwnedUserId, UserId};
use sqlx::PgPool;

use crate::{
    server::Homeserver,
    storage::{
        lease::{Lease, LeasedTasks},
        presence::{self, StatusMsg},
        shard_map::LOGICAL_SHARDS,
    },
};

const LEASE: Lease = Lease { key: 0x7072_6573, name: "presence" };
/// How often the activity sets are swept: a user goes offline between
/// `offline_after` and this much later.
const SWEEP_INTERVAL: Duration = Duration::from_secs(5);
/// Users taken from one logical shard's set per sweep.
const SWEEP_BATCH: usize = 1000;
/// How often the database's present users are checked for activity.
const RECONCILE_INTERVAL: Duration = Duration::from_secs(300);
/// Rows read per reconciliation query.
const RECONCILE_PAGE: i64 = 1000;

/// The running presence sweepers of this worker.
pub struct PresenceSweeper(LeasedTasks);

impl PresenceSweeper {
    /// Starts one task per database.
    pub fn start(server: &Homeserver) -> Self {
        let server = server.clone();
        Self(LeasedTasks::start(&server.db.clone(), LEASE, move |index, pool| {
            let server = server.clone();
            async move {
                // The first adoption right away: after a restart of a single
                // process, its in-memory activity is empty.
                let mut reconciled: Option<Instant> = None;
                loop {
                    sweep(&server, index, &pool).await?;
                    if reconciled.is_none_or(|at| at.elapsed() >= RECONCILE_INTERVAL) {
                        reconcile(&server, &pool).await?;
                        reconciled = Some(Instant::now());
                    }
                    tokio::time::sleep(SWEEP_INTERVAL).await;
                }
            }
        }))
    }

    pub async fn stop(self) {
        self.0.stop().await;
    }
}

/// Takes offline the inactive users of the logical shards on database `index`.
async fn sweep(server: &Homeserver, index: usize, pool: &PgPool) -> anyhow::Result<()> {
    for logical in (0..LOGICAL_SHARDS).filter(|logical| server.db.database_of_logical(*logical) == index) {
        loop {
            let Some(expired) = server.activity.take_expired(logical, SWEEP_BATCH).await else { return Ok(()) };
            take_offline(server, pool, &expired).await?;
            if expired.len() < SWEEP_BATCH {
                break;
            }
        }
    }
    Ok(())
}

/// Gives every user the database holds as present, and who has no activity
/// on record, activity now.
async fn reconcile(server: &Homeserver, pool: &PgPool) -> anyhow::Result<()> {
    let mut after = String::new();
    loop {
        let page = presence::present(pool, &after, RECONCILE_PAGE).await?;
        let Some(last) = page.last() else { return Ok(()) };
        after.clone_from(last);
        let users: Vec<OwnedUserId> = page.into_iter().filter_map(|user| OwnedUserId::try_from(user).ok()).collect();
        if !server.activity.adopt(&users).await {
            // Redis is away; the next round tries again.
            return Ok(());
        }
    }
}

async fn take_offline(server: &Homeserver, pool: &PgPool, users: &[OwnedUserId]) -> anyhow::Result<()> {
    for user_id in users {
        if set_offline(pool, user_id).await? {
            tracing::debug!(user_id = %user_id, "inactive user went offline");
            super::notify_audience(server, user_id).await.map_err(|err| anyhow::anyhow!("waking the audience: {}", err.errcode()))?;
        }
    }
    Ok(())
}

async fn set_offline(pool: &PgPool, user_id: &UserId) -> sqlx::Result<bool> {
    let mut tx = pool.begin().await?;
    let changed = presence::set(&mut tx, user_id, "offline", StatusMsg::Keep).await?;
    tx.commit().await?;
    Ok(changed)
}
