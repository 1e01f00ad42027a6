//! `messages`: which Matrix event is which mail (by Message-ID, without
//! angle brackets), in which direction, and how its delivery went.

use ruma::{EventId, OwnedEventId, OwnedRoomId, RoomId};
use sqlx::{PgExecutor, PgPool};

/// Delivery state of a mapped message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MessageState {
    /// Outbound, waiting in the queue.
    Queued,
    /// Outbound, accepted by the Clientmodul's SMTP.
    Sent,
    /// Outbound, refused for good or reported undeliverable.
    Failed,
    /// Inbound, its events are in the room.
    Posted,
    /// Outbound, redacted in the room before its mail left: never sent.
    Withdrawn,
}

impl MessageState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Sent => "sent",
            Self::Failed => "failed",
            Self::Posted => "posted",
            Self::Withdrawn => "withdrawn",
        }
    }

    fn parse(text: &str) -> Self {
        match text {
            "queued" => Self::Queued,
            "sent" => Self::Sent,
            "failed" => Self::Failed,
            "withdrawn" => Self::Withdrawn,
            _ => Self::Posted,
        }
    }
}

#[derive(Debug)]
pub struct MappedMessage {
    pub message_id: String,
    pub room_id: OwnedRoomId,
    pub event_id: Option<OwnedEventId>,
    pub outbound: bool,
    pub state: MessageState,
    pub failure: Option<String>,
    /// In-Reply-To first, then older references.
    pub refs: Vec<String>,
}

type Row = (
    String,
    String,
    Option<String>,
    String,
    String,
    Option<String>,
    Vec<String>,
);

const COLUMNS: &str = "message_id, room_id, event_id, direction, state, failure, refs";

fn from_row(
    (message_id, room_id, event_id, direction, state, failure, refs): Row,
) -> Option<MappedMessage> {
    Some(MappedMessage {
        message_id,
        room_id: RoomId::parse(room_id).ok()?,
        event_id: event_id.and_then(|event_id| EventId::parse(event_id).ok()),
        outbound: direction == "outbound",
        state: MessageState::parse(&state),
        failure,
        refs,
    })
}

/// Maps an event to a mail; nothing happens when the Message-ID is mapped.
pub async fn insert(db: impl PgExecutor<'_>, message: &MappedMessage) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO messages (message_id, room_id, event_id, direction, state, failure, refs)
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
    )
    .bind(&message.message_id)
    .bind(message.room_id.as_str())
    .bind(message.event_id.as_ref().map(|event_id| event_id.as_str()))
    .bind(if message.outbound {
        "outbound"
    } else {
        "inbound"
    })
    .bind(message.state.as_str())
    .bind(&message.failure)
    .bind(&message.refs)
    .execute(db)
    .await?;
    Ok(())
}

pub async fn by_message_id(pool: &PgPool, message_id: &str) -> sqlx::Result<Option<MappedMessage>> {
    let row: Option<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM messages WHERE message_id = $1"
    )))
    .bind(message_id)
    .fetch_optional(pool)
    .await?;
    Ok(row.and_then(from_row))
}

pub async fn by_event_id(pool: &PgPool, event_id: &EventId) -> sqlx::Result<Option<MappedMessage>> {
    let row: Option<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM messages WHERE event_id = $1"
    )))
    .bind(event_id.as_str())
    .fetch_optional(pool)
    .await?;
    Ok(row.and_then(from_row))
}

/// Records how delivery went; `failure` is the text shown in the room.
pub async fn set_state(
    db: impl PgExecutor<'_>,
    message_id: &str,
    state: MessageState,
    failure: Option<&str>,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE messages SET state = $2, failure = $3, updated_at = now() WHERE message_id = $1",
    )
    .bind(message_id)
    .bind(state.as_str())
    .bind(failure)
    .execute(db)
    .await?;
    Ok(())
}

/// Outbound messages that failed, newest first (for `!kim status`).
pub async fn recent_failures(pool: &PgPool, limit: i64) -> sqlx::Result<Vec<MappedMessage>> {
    let rows: Vec<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM messages WHERE state = 'failed' ORDER BY updated_at DESC LIMIT $1"
    )))
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().filter_map(from_row).collect())
}
