//! The push tasks of one worker process: one per database under the push
//! lease (`storage::lease`), so of several workers exactly one evaluates
//! and delivers a database's pushes, and another takes over from the
//! stored cursor and queue when it dies.

use tokio::sync::{Notify, watch};

use super::{processor::Processor, sender::Sender};
use crate::{
    server::Homeserver,
    storage::lease::{Lease, LeasedTasks},
};

/// The advisory lock key of the push lease ("push" in ASCII).
const LEASE: Lease = Lease { key: 0x7075_7368, name: "push" };

/// Tells this worker's push processors and appservice deliveries that
/// events were committed, so they look at once instead of at their next
/// poll.
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

    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.0.subscribe()
    }
}

/// The running push tasks of this worker. A notification in flight when
/// they stop stays queued: it is sent again after the restart (at least
/// once, never lost).
pub struct PushWorker(LeasedTasks);

impl PushWorker {
    /// Starts one task per database.
    pub fn start(server: &Homeserver) -> Self {
        let server = server.clone();
        Self(LeasedTasks::start(&server.db.clone(), LEASE, move |_, pool| {
            let server = server.clone();
            async move {
                let queued = Notify::new();
                let processor = Processor::new(&server, &pool, &queued);
                let sender = Sender::new(&server, &pool, &queued)?;
                tokio::select! {
                    result = processor.run(server.push_wakeup.subscribe()) => result,
                    result = sender.run() => result,
                }
            }
        }))
    }

    pub async fn stop(self) {
        self.0.stop().await;
    }
}
