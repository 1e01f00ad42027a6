//! The push processor of one database: tails the events stream from the
//! stored cursor, evaluates every event's push rules for its recipients
//! and, in the transaction that moves the cursor, stores their push actions
//! (the notification counts of `/sync`) and queues a notification for each
//! of their http pushers. A crash before commit repeats the batch; after
//! commit, the queue has it: an acknowledged event is never skipped.

use std::{
    collections::{BTreeSet, HashMap},
    time::Duration,
};

use ruma::{
    EventId, OwnedEventId, OwnedRoomId, OwnedUserId, RoomId, UserId,
    push::{HighlightTweakValue, Tweak},
};
use serde_json::Value as JsonValue;
use sqlx::PgPool;
use tokio::sync::{Notify, watch};

use super::evaluate::{Evaluator, Outcome};
use crate::{
    server::Homeserver,
    storage::{
        events::{self, StoredEvent},
        push_actions::{self, PushAction},
        push_queue::{self, QueuedPush},
        pushers, stream,
    },
};

/// Events evaluated per transaction.
const BATCH: usize = 100;
/// How often to look for events committed by other workers without being
/// told. This worker's own commits wake the processor at once, and with
/// Redis so do the other workers' (the relay); the poll covers a worker
/// cut off from Redis.
const POLL: Duration = Duration::from_millis(500);

/// The processor of one database, run by the lease holder.
pub struct Processor<'a> {
    server: &'a Homeserver,
    db: &'a PgPool,
    /// Wakes the sender when notifications were queued.
    queued: &'a Notify,
}

/// What one batch writes, in one transaction.
#[derive(Default)]
struct Batch {
    actions: Vec<PushAction>,
    pushes: Vec<QueuedPush>,
    /// Local users who left a room: their actions there are cleared.
    left: Vec<(OwnedRoomId, OwnedUserId)>,
    /// Users whose counts changed, to wake after commit.
    recipients: BTreeSet<OwnedUserId>,
    /// `(app_id, pushkey)` of each recipient's http pushers.
    pushers: HashMap<OwnedUserId, Vec<(String, String)>>,
}

impl<'a> Processor<'a> {
    pub fn new(server: &'a Homeserver, db: &'a PgPool, queued: &'a Notify) -> Self {
        Self { server, db, queued }
    }

    /// Evaluates batches until an error; waits for commits when caught up.
    pub async fn run(&self, mut committed: watch::Receiver<u64>) -> anyhow::Result<()> {
        loop {
            // Mark the commits seen so far before reading: one that lands
            // during the batch still wakes the wait below.
            committed.borrow_and_update();
            if self.process_batch().await? < BATCH {
                tokio::select! {
                    Ok(()) = committed.changed() => {}
                    () = tokio::time::sleep(POLL) => {}
                }
            }
        }
    }

    /// Evaluates the events after the cursor; returns how many there were.
    async fn process_batch(&self) -> anyhow::Result<usize> {
        let from = push_queue::cursor(self.db).await?;
        let events = events::stream_after(self.db, from, i64::try_from(BATCH)?).await?;
        let Some(to) = events.last().map(|event| event.stream_pos) else { return Ok(0) };

        let mut batch = Batch::default();
        let mut evaluator = Evaluator::new(self.server);
        for event in &events {
            let room_id = event.pdu.get("room_id").and_then(JsonValue::as_str).and_then(|id| OwnedRoomId::try_from(id).ok());
            let (Some(room_id), Ok(event_id)) = (room_id, OwnedEventId::try_from(event.event_id.as_str())) else {
                tracing::warn!(event_id = %event.event_id, "not evaluating push rules for a malformed event");
                continue;
            };
            self.note_leave(&mut batch, &room_id, event);
            for outcome in evaluator.evaluate(&room_id, event).await? {
                self.add(&mut batch, &room_id, &event_id, event, outcome).await?;
            }
        }
        self.commit(from, to, batch).await?;
        Ok(events.len())
    }

    /// A local user left (or was kicked or banned): what they had not read
    /// there no longer counts, including this batch's earlier events.
    fn note_leave(&self, batch: &mut Batch, room_id: &RoomId, event: &StoredEvent) {
        let pdu = &event.pdu;
        let is_leave = pdu.get("type").and_then(JsonValue::as_str) == Some("m.room.member")
            && matches!(pdu.pointer("/content/membership").and_then(JsonValue::as_str), Some("leave" | "ban"));
        let Some(user_id) = pdu.get("state_key").and_then(JsonValue::as_str).and_then(|key| OwnedUserId::try_from(key).ok()) else { return };
        if !is_leave || user_id.server_name() != self.server.server_name() {
            return;
        }
        batch.actions.retain(|action| action.room_id != room_id || action.user_id != user_id);
        batch.left.push((room_id.to_owned(), user_id));
    }

    /// Records one recipient's outcome: the action, and a notification per
    /// http pusher when the event notifies.
    async fn add(&self, batch: &mut Batch, room_id: &RoomId, event_id: &EventId, event: &StoredEvent, outcome: Outcome) -> anyhow::Result<()> {
        if outcome.notify {
            let high_priority = is_urgent(event, &outcome.tweaks);
            let tweaks = serde_json::to_value(&outcome.tweaks)?;
            for (app_id, pushkey) in self.http_pushers(batch, &outcome.user_id).await? {
                batch.pushes.push(QueuedPush {
                    room_id: room_id.to_string(),
                    event_id: event_id.to_string(),
                    user_id: outcome.user_id.to_string(),
                    app_id,
                    pushkey,
                    tweaks: tweaks.clone(),
                    high_priority,
                    attempts: 0,
                });
            }
        }
        batch.recipients.insert(outcome.user_id.clone());
        batch.actions.push(PushAction {
            room_id: room_id.to_owned(),
            user_id: outcome.user_id,
            event_pos: event.stream_pos,
            event_id: event_id.to_owned(),
            notify: outcome.notify,
            highlight: outcome.highlight,
        });
        Ok(())
    }

    /// The user's http pushers, read once per batch.
    async fn http_pushers(&self, batch: &mut Batch, user_id: &UserId) -> anyhow::Result<Vec<(String, String)>> {
        if let Some(known) = batch.pushers.get(user_id) {
            return Ok(known.clone());
        }
        let found: Vec<(String, String)> = pushers::list(self.server.db.user_shard(user_id), user_id)
            .await?
            .into_iter()
            .filter(|pusher| pusher.kind == pushers::KIND_HTTP)
            .map(|pusher| (pusher.app_id, pusher.pushkey))
            .collect();
        batch.pushers.insert(user_id.to_owned(), found.clone());
        Ok(found)
    }

    /// Moves the cursor and writes the batch in one transaction, then wakes
    /// the recipients' syncs and the sender.
    async fn commit(&self, from: i64, to: i64, batch: Batch) -> anyhow::Result<()> {
        let mut tx = self.db.begin().await?;
        anyhow::ensure!(push_queue::advance_cursor(&mut tx, from, to).await?, "another worker moved the push cursor");
        for (room_id, user_id) in &batch.left {
            push_actions::clear_room(&mut tx, room_id, user_id).await?;
        }
        if !batch.pushes.is_empty() {
            push_queue::enqueue(&mut tx, &batch.pushes).await?;
        }
        if !batch.actions.is_empty() {
            // Last: the stream head stays locked until commit.
            let stream_pos = stream::advance(&mut tx).await?;
            push_actions::insert(&mut tx, &batch.actions, stream_pos).await?;
        }
        tx.commit().await?;
        self.server.notifier.notify_users(batch.recipients.iter());
        if !batch.pushes.is_empty() {
            self.queued.notify_one();
        }
        Ok(())
    }
}

/// Whether a push should wake the device (`prio: high`): encrypted events,
/// whose importance the server cannot see, and anything that rings or
/// highlights. The rest may wait for the device's next wake-up.
fn is_urgent(event: &StoredEvent, tweaks: &[Tweak]) -> bool {
    event.pdu.get("type").and_then(JsonValue::as_str) == Some("m.room.encrypted")
        || tweaks.iter().any(|tweak| matches!(tweak, Tweak::Sound(_) | Tweak::Highlight(HighlightTweakValue::Yes)))
}
