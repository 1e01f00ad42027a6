//! Wakes waiting `/sync` requests when something they may care about was
//! committed.
//!
//! Each long-polling sync registers interest in its user; a writer, after
//! commit, notifies the users its write concerns. Only those users' syncs
//! wake and re-read their streams, so a write costs O(members) wake-ups, not
//! O(waiting syncs). With Redis the same notifications also go to the other
//! workers: they are queued in an outbox here, and the relay
//! ([`super::relay`]) publishes them and wakes this worker's syncs for what
//! the others publish (see ARCHITECTURE.md, "Redis"). The local wake-up is
//! the same code path with or without Redis.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
};

use ruma::{OwnedUserId, UserId};
use tokio::sync::Notify;

/// Users queued for publishing beyond which the outbox stops remembering
/// who and publishes "wake everyone" instead (only while Redis is away for
/// long under load; bounds the memory an outage can take).
const MAX_QUEUED_USERS: usize = 100_000;

/// Per-user wake-up channels of the syncs waiting on this worker, and what
/// the other workers still have to hear about.
#[derive(Default)]
pub struct Notifier {
    waiting: Mutex<HashMap<OwnedUserId, Arc<Notify>>>,
    /// `None` without Redis: a single process has no one to tell.
    outbox: Option<Outbox>,
}

/// Notifications for the other workers, coalesced until the relay
/// publishes them: under load one message carries many commits' users.
#[derive(Default)]
struct Outbox {
    queued: Mutex<Queued>,
    ready: Notify,
}

#[derive(Default)]
struct Queued {
    users: HashSet<OwnedUserId>,
    /// Too many users queued: tell every worker to wake all its syncs.
    everyone: bool,
}

/// What the relay publishes next.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Batch {
    pub users: Vec<OwnedUserId>,
    pub everyone: bool,
}

impl Batch {
    pub(super) fn is_empty(&self) -> bool {
        self.users.is_empty() && !self.everyone
    }
}

/// A registered interest; dropping it unregisters when it was the last one.
pub struct Subscription<'a> {
    notifier: &'a Notifier,
    user_id: OwnedUserId,
    notify: Arc<Notify>,
}

impl Notifier {
    /// A notifier of a single process.
    pub fn local() -> Self {
        Self::default()
    }

    /// A notifier whose notifications also go to the other workers through
    /// the relay.
    pub fn shared() -> Self {
        Self { outbox: Some(Outbox::default()), ..Self::default() }
    }

    /// Registers interest in `user_id`. Subscribe *before* reading the
    /// streams: a write committed in between still wakes the subscription.
    pub fn subscribe(&self, user_id: &UserId) -> Subscription<'_> {
        let mut waiting = self.waiting.lock().expect("notifier lock poisoned");
        let notify = waiting.entry(user_id.to_owned()).or_default().clone();
        Subscription { notifier: self, user_id: user_id.to_owned(), notify }
    }

    /// Wakes every sync waiting for one of `users`, here and (with Redis)
    /// on every other worker.
    pub fn notify_users<'u>(&self, users: impl IntoIterator<Item = &'u OwnedUserId>) {
        let waiting = self.waiting.lock().expect("notifier lock poisoned");
        let Some(outbox) = &self.outbox else {
            wake(&waiting, users.into_iter().map(|user| &**user));
            return;
        };
        let mut queued = outbox.queued.lock().expect("outbox lock poisoned");
        for user in users {
            if let Some(notify) = waiting.get(user) {
                notify.notify_waiters();
            }
            if !queued.everyone {
                queued.users.insert(user.clone());
            }
        }
        if queued.users.len() > MAX_QUEUED_USERS {
            queued.users = HashSet::new();
            queued.everyone = true;
        }
        drop(queued);
        outbox.ready.notify_one();
    }

    /// Wakes this worker's syncs waiting for one of `users` (what another
    /// worker published).
    pub(super) fn wake_local<'u>(&self, users: impl IntoIterator<Item = &'u UserId>) {
        wake(&self.waiting.lock().expect("notifier lock poisoned"), users);
    }

    /// Wakes every sync waiting on this worker: they re-read their streams,
    /// which is always safe and finds whatever a lost notification was
    /// about.
    pub(super) fn wake_all_local(&self) {
        for notify in self.waiting.lock().expect("notifier lock poisoned").values() {
            notify.notify_waiters();
        }
    }

    /// Number of users with waiting syncs on this worker (for metrics).
    pub fn waiting_users(&self) -> usize {
        self.waiting.lock().expect("notifier lock poisoned").len()
    }

    /// Takes up to `max_users` queued users (or the "everyone" flag) for
    /// publishing; empty when nothing is queued or without Redis.
    pub(super) fn take_queued(&self, max_users: usize) -> Batch {
        let Some(outbox) = &self.outbox else { return Batch::default() };
        let mut queued = outbox.queued.lock().expect("outbox lock poisoned");
        if queued.everyone {
            queued.everyone = false;
            return Batch { users: Vec::new(), everyone: true };
        }
        let users: Vec<OwnedUserId> = queued.users.iter().take(max_users).cloned().collect();
        for user in &users {
            queued.users.remove(user);
        }
        Batch { users, everyone: false }
    }

    /// Puts back a batch whose publishing failed, to go out after the
    /// reconnect.
    pub(super) fn requeue(&self, batch: Batch) {
        let Some(outbox) = &self.outbox else { return };
        let mut queued = outbox.queued.lock().expect("outbox lock poisoned");
        queued.everyone |= batch.everyone;
        if !queued.everyone {
            queued.users.extend(batch.users);
        }
    }

    /// Resolves when something was queued since the last call (at once if
    /// it was before); never without Redis.
    pub(super) async fn queued(&self) {
        match &self.outbox {
            Some(outbox) => outbox.ready.notified().await,
            None => std::future::pending().await,
        }
    }
}

fn wake<'u>(waiting: &HashMap<OwnedUserId, Arc<Notify>>, users: impl IntoIterator<Item = &'u UserId>) {
    for user in users {
        if let Some(notify) = waiting.get(user) {
            notify.notify_waiters();
        }
    }
}

impl Subscription<'_> {
    /// A future that completes on the next notification for this user. Call
    /// it before reading the streams and await it after.
    pub fn notified(&self) -> std::pin::Pin<Box<tokio::sync::futures::Notified<'_>>> {
        let mut notified = Box::pin(self.notify.notified());
        notified.as_mut().enable();
        notified
    }
}

impl Drop for Subscription<'_> {
    fn drop(&mut self) {
        let mut waiting = self.notifier.waiting.lock().expect("notifier lock poisoned");
        // Two references: ours and the map's. Anything more is another sync.
        if Arc::strong_count(&self.notify) <= 2 {
            waiting.remove(&self.user_id);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_notification_between_subscribe_and_wait_is_not_lost() {
        let notifier = Notifier::local();
        let alice = ruma::owned_user_id!("@alice:example.org");
        let subscription = notifier.subscribe(&alice);
        let notified = subscription.notified();
        notifier.notify_users([&alice]);
        tokio::time::timeout(Duration::from_secs(1), notified).await.expect("woken");
    }

    #[tokio::test]
    async fn others_are_not_woken_and_entries_are_cleaned_up() {
        let notifier = Notifier::local();
        let alice = ruma::owned_user_id!("@alice:example.org");
        let bob = ruma::owned_user_id!("@bob:example.org");
        {
            let subscription = notifier.subscribe(&alice);
            let notified = subscription.notified();
            notifier.notify_users([&bob]);
            assert!(tokio::time::timeout(Duration::from_millis(50), notified).await.is_err());
            assert_eq!(notifier.waiting_users(), 1);
        }
        assert_eq!(notifier.waiting_users(), 0);
    }

    #[tokio::test]
    async fn a_shared_notifier_wakes_locally_and_queues_for_the_others() {
        let notifier = Notifier::shared();
        let alice = ruma::owned_user_id!("@alice:example.org");
        let bob = ruma::owned_user_id!("@bob:example.org");
        let subscription = notifier.subscribe(&alice);
        let notified = subscription.notified();
        notifier.notify_users([&alice, &bob]);
        notifier.notify_users([&bob]);
        tokio::time::timeout(Duration::from_secs(1), notified).await.expect("woken locally");
        tokio::time::timeout(Duration::from_secs(1), notifier.queued()).await.expect("the relay is told");

        let first = notifier.take_queued(1);
        assert_eq!(first.users.len(), 1, "at most the batch size");
        let second = notifier.take_queued(10);
        assert_eq!(second.users.len(), 1, "users are queued once");
        assert!(notifier.take_queued(10).is_empty());

        notifier.requeue(second);
        assert_eq!(notifier.take_queued(10).users.len(), 1, "a failed batch goes out again");
    }

    #[test]
    fn an_overfull_outbox_turns_into_wake_everyone() {
        let notifier = Notifier::shared();
        let users: Vec<OwnedUserId> = (0..=MAX_QUEUED_USERS).map(|i| OwnedUserId::try_from(format!("@u{i}:example.org")).unwrap()).collect();
        notifier.notify_users(&users);
        assert_eq!(notifier.take_queued(10), Batch { users: Vec::new(), everyone: true });
        assert!(notifier.take_queued(10).is_empty());
    }

    #[tokio::test]
    async fn wake_all_reaches_every_waiting_sync() {
        let notifier = Notifier::local();
        let alice = ruma::owned_user_id!("@alice:example.org");
        let subscription = notifier.subscribe(&alice);
        let notified = subscription.notified();
        notifier.wake_all_local();
        tokio::time::timeout(Duration::from_secs(1), notified).await.expect("woken");
    }
}
