//! Sends the queued mails to the Clientmodul, one at a time, oldest due
//! first. Temporary failures (4xx, network, TLS) are retried with
//! exponential backoff; permanent ones (5xx, too large) and exhausted
//! retries mark the message failed and show a notice in the room, as a
//! reply to the message.

use std::time::Duration;

use ruma::{EventId, RoomId, UserId};

use super::{
    mail::{self, BuildError},
    queue,
};
use crate::{
    bridge::Bridge,
    kim::smtp::{SendOutcome, SmtpError, SmtpSender},
    portal::notices,
    store::{self, messages::MessageState, outbound_queue::QueuedMail},
};

/// First retry delay; doubled per attempt up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(5);
const MAX_BACKOFF: Duration = Duration::from_secs(15 * 60);

pub async fn run(bridge: Bridge, sender: SmtpSender) {
    loop {
        match store::outbound_queue::next_due(&bridge.db).await {
            Ok(Some(queued)) => {
                if let Err(error) = send(&bridge, &sender, queued).await {
                    tracing::warn!(
                        error = format!("{error:#}"),
                        "outbound mail: recording the result failed"
                    );
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
            Ok(None) => {
                tokio::select! {
                    () = bridge.outbound_woken() => {}
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
            Err(error) => {
                tracing::warn!(%error, "outbound queue unreadable");
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        }
    }
}

async fn send(bridge: &Bridge, sender: &SmtpSender, queued: QueuedMail) -> anyhow::Result<()> {
    let mail = match mail::build(bridge, &queued).await {
        Ok(mail) => mail,
        Err(BuildError::Temporary(error)) => {
            return retry(bridge, &queued, &format!("{error:#}")).await;
        }
        Err(BuildError::Permanent(reason)) => return fail(bridge, &queued, &reason).await,
    };
    match sender
        .send(&mail, &bridge.config.mailbox.sender_system)
        .await
    {
        Ok(SendOutcome::Accepted { recipients, .. }) => {
            bridge.status.smtp_sent();
            let refused: Vec<String> = recipients
                .iter()
                .filter(|recipient| !recipient.accepted())
                .map(|recipient| format!("{}: {}", recipient.address, recipient.reply))
                .collect();
            // The queue row first, as `queue::withdraw` does: one lock order.
            let mut tx = bridge.db.begin().await?;
            let withdrawn_meanwhile =
                !store::outbound_queue::remove(&mut *tx, &queued.message_id).await?;
            store::messages::set_state(&mut *tx, &queued.message_id, MessageState::Sent, None)
                .await?;
            tx.commit().await?;
            tracing::info!(message_id = queued.message_id, "KIM mail sent");
            if withdrawn_meanwhile {
                retract_sent(bridge, &queued).await?;
            }
            if !refused.is_empty() {
                failure_notice(
                    bridge,
                    &queued,
                    &format!("nicht zugestellt an {}", refused.join("; ")),
                )
                .await?;
            }
            Ok(())
        }
        Ok(SendOutcome::TemporaryFailure { failure, .. }) => {
            bridge.status.smtp_failed(failure.detail.clone());
            retry(bridge, &queued, &failure.detail).await
        }
        Ok(SendOutcome::PermanentFailure { failure, .. }) => {
            bridge.status.smtp_failed(failure.detail.clone());
            fail(bridge, &queued, &failure.detail).await
        }
        Err(SmtpError::Render(error)) => fail(bridge, &queued, &error.to_string()).await,
        Err(error) => {
            // A configuration problem the operator fixes: keep the mail.
            bridge.status.smtp_failed(error.to_string());
            retry(bridge, &queued, &error.to_string()).await
        }
    }
}

/// The message was redacted while its mail was being sent: it went out
/// anyway, so the practice gets the retraction (mapped to a derived event
/// id, so a redone send queues it once).
async fn retract_sent(bridge: &Bridge, queued: &QueuedMail) -> anyhow::Result<()> {
    let (Ok(room_id), Ok(event_id), Ok(sender)) = (
        RoomId::parse(&queued.room_id),
        EventId::parse(&queued.event_id),
        UserId::parse(&queued.sender),
    ) else {
        return Ok(());
    };
    let Ok(retraction_id) = EventId::parse(format!("$kim-retraction-{}", queued.message_id)) else {
        return Ok(());
    };
    queue::send_retraction(bridge, &room_id, &retraction_id, &sender, &event_id).await
}

/// A temporary failure: later, or failed for good after the last attempt.
async fn retry(bridge: &Bridge, queued: &QueuedMail, reason: &str) -> anyhow::Result<()> {
    let attempts = u32::try_from(queued.attempts).unwrap_or(0) + 1;
    if attempts >= bridge.config.bridge.max_send_attempts {
        return fail(
            bridge,
            queued,
            &format!("{reason} (nach {attempts} Versuchen)"),
        )
        .await;
    }
    let delay = FIRST_BACKOFF
        .saturating_mul(1 << attempts.min(16))
        .min(MAX_BACKOFF);
    tracing::info!(
        message_id = queued.message_id,
        attempts,
        ?delay,
        "KIM mail: temporary failure, retrying"
    );
    store::outbound_queue::retry_later(&bridge.db, &queued.message_id, delay, reason).await?;
    Ok(())
}

/// Failed for good: the notice first (idempotent), then the record, so a
/// crash in between shows the notice once and fails the mail again.
async fn fail(bridge: &Bridge, queued: &QueuedMail, reason: &str) -> anyhow::Result<()> {
    tracing::info!(message_id = queued.message_id, "KIM mail failed");
    failure_notice(bridge, queued, reason).await?;
    let mut tx = bridge.db.begin().await?;
    store::outbound_queue::remove(&mut *tx, &queued.message_id).await?;
    store::messages::set_state(
        &mut *tx,
        &queued.message_id,
        MessageState::Failed,
        Some(reason),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

async fn failure_notice(bridge: &Bridge, queued: &QueuedMail, reason: &str) -> anyhow::Result<()> {
    let (Ok(room_id), Ok(event_id)) = (
        RoomId::parse(&queued.room_id),
        EventId::parse(&queued.event_id),
    ) else {
        return Ok(());
    };
    show_failure(bridge, &room_id, &event_id, &queued.message_id, reason).await
}

/// The visible failure of a sent message: an `m.notice` replying to it,
/// posted by one of the portal's ghosts.
pub async fn show_failure(
    bridge: &Bridge,
    room_id: &RoomId,
    event_id: &EventId,
    message_id: &str,
    reason: &str,
) -> anyhow::Result<()> {
    let addresses = store::portals::addresses(&bridge.db, room_id).await?;
    let Some(address) = addresses.first() else {
        tracing::warn!(%room_id, "a failed KIM mail's portal has no address left to report it");
        return Ok(());
    };
    let ghost = bridge.ghost_of(address);
    let text = format!("⚠ KIM-Nachricht nicht zugestellt: {reason}");
    let txn = format!("kim-failed-{message_id}-{}", short_hash(reason));
    notices::notice(bridge, room_id, &ghost, &txn, Some(event_id), &text).await?;
    Ok(())
}

/// A stable short tag of a text, so distinct failures of one message get
/// distinct transaction ids and a repeated one the same.
fn short_hash(text: &str) -> String {
    let hash = text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("{hash:016x}")
}
