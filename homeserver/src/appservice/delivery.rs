//! Delivery of transactions: for every appservice with a URL, each
//! database's events are formed into transactions and sent in stream order
//! by the one worker that holds the database's appservice lease
//! (`storage::lease`).
//!
//! The database is the source of truth: a formed transaction is stored in
//! the same database transaction that moves the appservice's cursor past
//! what it carries (the to-device messages it carries leave their queue in
//! that transaction too), and deleted only after the appservice answered 2xx.
//! Until then it is retried with exponential backoff (1 s doubling, capped
//! at 5 minutes), never dropped, by whichever worker holds the lease, after
//! restarts too, with the same transaction id and body. One transaction is
//! in flight per appservice and database; what happens meanwhile waits in
//! the stream and goes out in the next one. Order holds per database; rooms
//! of different databases are not ordered against each other.

use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::watch;

use super::{Appservice, transactions};
use crate::{
    server::Homeserver,
    storage::{
        appservice_txns,
        lease::{Lease, LeasedTasks},
        to_device,
    },
};

/// The advisory lock key of the appservice lease ("apps" in ASCII).
const LEASE: Lease = Lease { key: 0x6170_7073, name: "appservice" };
/// How often to look for news without being woken: receipts and to-device
/// messages wake nobody, and commits of other workers only with Redis.
const POLL: Duration = Duration::from_millis(500);
const FIRST_RETRY: Duration = Duration::from_secs(1);
const MAX_RETRY: Duration = Duration::from_secs(5 * 60);

/// The running delivery tasks of this worker.
pub struct AppserviceWorker(LeasedTasks);

impl AppserviceWorker {
    /// Starts one task per database, each delivering to every appservice
    /// with a URL while it holds the database's lease.
    pub fn start(server: &Homeserver) -> Self {
        let server = server.clone();
        Self(LeasedTasks::start(&server.db.clone(), LEASE, move |index, pool| {
            let server = server.clone();
            async move {
                let deliveries = server.appservices.iter().filter(|appservice| appservice.url.is_some()).map(|appservice| deliver(&server, appservice, index, &pool));
                futures::future::try_join_all(deliveries).await.map(drop)
            }
        }))
    }

    /// Stops delivering; a transaction in flight stays stored and is sent
    /// again (same id) by the next holder of the lease.
    pub async fn stop(self) {
        self.0.stop().await;
    }
}

/// Feeds one appservice from one database until a database error.
async fn deliver(server: &Homeserver, appservice: &Appservice, index: usize, db: &PgPool) -> anyhow::Result<()> {
    let id = appservice.id.as_str();
    appservice_txns::ensure_cursor(db, id).await?;
    let mut committed = server.push_wakeup.subscribe();
    loop {
        if let Some((upto, body)) = appservice_txns::oldest(db, id).await? {
            send_until_accepted(server, appservice, &format!("{index}.{upto}"), &body).await;
            appservice_txns::remove(db, id, upto).await?;
            continue;
        }
        // Mark the commits seen so far before reading: one that lands
        // meanwhile still wakes the wait below.
        committed.borrow_and_update();
        let from = appservice_txns::cursor(db, id).await?;
        match transactions::form(server, appservice, db, from).await? {
            Some(formed) => {
                let mut tx = db.begin().await?;
                anyhow::ensure!(appservice_txns::advance_cursor(&mut tx, id, from, formed.upto).await?, "another worker moved the appservice cursor");
                if let Some(body) = &formed.body {
                    appservice_txns::enqueue(&mut tx, id, formed.upto, body).await?;
                    to_device::delete_delivered(&mut *tx, &formed.to_device_recipients, from, formed.upto).await?;
                }
                tx.commit().await?;
            }
            None => wait(&mut committed).await,
        }
    }
}

async fn wait(committed: &mut watch::Receiver<u64>) {
    tokio::select! {
        Ok(()) = committed.changed() => {}
        () = tokio::time::sleep(POLL) => {}
    }
}

/// Sends one transaction until the appservice accepts it.
async fn send_until_accepted(server: &Homeserver, appservice: &Appservice, txn_id: &str, body: &serde_json::Value) {
    let mut failures: u32 = 0;
    loop {
        match server.appservices.client.send_transaction(appservice, txn_id, body).await {
            Ok(()) => return,
            Err(err) => {
                let delay = backoff(failures);
                tracing::warn!(appservice = %appservice.id, txn_id, error = %err, ?delay, "appservice transaction failed; retrying");
                tokio::time::sleep(delay).await;
                failures = failures.saturating_add(1);
            }
        }
    }
}

/// The wait after the `failures`-th failed attempt (0 = the first).
fn backoff(failures: u32) -> Duration {
    FIRST_RETRY.saturating_mul(1 << failures.min(16)).min(MAX_RETRY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_five_minutes() {
        assert_eq!(backoff(0), Duration::from_secs(1));
        assert_eq!(backoff(2), Duration::from_secs(4));
        assert_eq!(backoff(9), MAX_RETRY);
        assert_eq!(backoff(u32::MAX), MAX_RETRY);
    }
}
