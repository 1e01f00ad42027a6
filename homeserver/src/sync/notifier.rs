//! Wakes waiting `/sync` requests when something they may care about was
//! committed.
//!
//! Each long-polling sync registers interest in its user; a writer, after
//! commit, notifies the users its write concerns. Only those users' syncs
//! wake and re-read their streams, so a write costs O(members) wake-ups, not
//! O(waiting syncs). Between worker processes the same notifications travel
//! over Redis (see ARCHITECTURE.md); this in-process part is what each
//! worker does with them.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use ruma::{OwnedUserId, UserId};
use tokio::sync::Notify;

/// Per-user wake-up channels of the syncs waiting on this worker.
#[derive(Default)]
pub struct Notifier {
    waiting: Mutex<HashMap<OwnedUserId, Arc<Notify>>>,
}

/// A registered interest; dropping it unregisters when it was the last one.
pub struct Subscription<'a> {
    notifier: &'a Notifier,
    user_id: OwnedUserId,
    notify: Arc<Notify>,
}

impl Notifier {
    /// Registers interest in `user_id`. Subscribe *before* reading the
    /// streams: a write committed in between still wakes the subscription.
    pub fn subscribe(&self, user_id: &UserId) -> Subscription<'_> {
        let mut waiting = self.waiting.lock().expect("notifier lock poisoned");
        let notify = waiting.entry(user_id.to_owned()).or_default().clone();
        Subscription { notifier: self, user_id: user_id.to_owned(), notify }
    }

    /// Wakes every sync waiting for one of `users`.
    pub fn notify_users<'u>(&self, users: impl IntoIterator<Item = &'u OwnedUserId>) {
        let waiting = self.waiting.lock().expect("notifier lock poisoned");
        for user in users {
            if let Some(notify) = waiting.get(user) {
                notify.notify_waiters();
            }
        }
    }

    /// Number of users with waiting syncs on this worker (for metrics).
    pub fn waiting_users(&self) -> usize {
        self.waiting.lock().expect("notifier lock poisoned").len()
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
        let notifier = Notifier::default();
        let alice = ruma::owned_user_id!("@alice:example.org");
        let subscription = notifier.subscribe(&alice);
        let notified = subscription.notified();
        notifier.notify_users([&alice]);
        tokio::time::timeout(Duration::from_secs(1), notified).await.expect("woken");
    }

    #[tokio::test]
    async fn others_are_not_woken_and_entries_are_cleaned_up() {
        let notifier = Notifier::default();
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
}
