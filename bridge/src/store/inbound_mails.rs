//! `inbound_mails`: every mail of the mailbox by POP3 UIDL and how far it
//! got (fetched → posted → deleted), so a crash at any point neither loses
//! nor duplicates a mail.

use ruma::{OwnedRoomId, RoomId};
use sqlx::{PgExecutor, PgPool};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MailState {
    /// Recorded before RETR; not in the room yet.
    Fetched,
    /// Its events are in the room; DELE is still to do.
    Posted,
    Deleted,
    /// Nothing to post it to; left on the server.
    Ignored,
}

impl MailState {
    fn as_str(self) -> &'static str {
        match self {
            Self::Fetched => "fetched",
            Self::Posted => "posted",
            Self::Deleted => "deleted",
            Self::Ignored => "ignored",
        }
    }

    fn parse(text: &str) -> Self {
        match text {
            "fetched" => Self::Fetched,
            "posted" => Self::Posted,
            "deleted" => Self::Deleted,
            _ => Self::Ignored,
        }
    }
}

/// Records a UIDL seen in the listing (state `fetched` when new) and
/// returns its state.
pub async fn record(pool: &PgPool, uidl: &str) -> sqlx::Result<MailState> {
    sqlx::query(
        "INSERT INTO inbound_mails (uidl, state) VALUES ($1, 'fetched') ON CONFLICT DO NOTHING",
    )
    .bind(uidl)
    .execute(pool)
    .await?;
    let state: String = sqlx::query_scalar("SELECT state FROM inbound_mails WHERE uidl = $1")
        .bind(uidl)
        .fetch_one(pool)
        .await?;
    Ok(MailState::parse(&state))
}

/// Fixes the room a mail goes to the first time it is decided and returns
/// the fixed one: a retry after a crash posts into the same room even if
/// portals changed meanwhile.
pub async fn fix_room(pool: &PgPool, uidl: &str, room_id: &RoomId) -> sqlx::Result<OwnedRoomId> {
    let room: String = sqlx::query_scalar(
        "UPDATE inbound_mails SET room_id = COALESCE(room_id, $2), updated_at = now()
         WHERE uidl = $1 RETURNING room_id",
    )
    .bind(uidl)
    .bind(room_id.as_str())
    .fetch_one(pool)
    .await?;
    Ok(RoomId::parse(room).unwrap_or_else(|_| room_id.to_owned()))
}

pub async fn set_state(
    db: impl PgExecutor<'_>,
    uidl: &str,
    state: MailState,
    message_id: Option<&str>,
    event_id: Option<&str>,
    note: Option<&str>,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE inbound_mails SET state = $2, message_id = COALESCE($3, message_id),
         event_id = COALESCE($4, event_id), note = COALESCE($5, note), updated_at = now()
         WHERE uidl = $1",
    )
    .bind(uidl)
    .bind(state.as_str())
    .bind(message_id)
    .bind(event_id)
    .bind(note)
    .execute(db)
    .await?;
    Ok(())
}

/// Count of mails per state (for health and `!kim status`).
pub async fn counts(pool: &PgPool) -> sqlx::Result<Vec<(String, i64)>> {
    sqlx::query_as("SELECT state, count(*) FROM inbound_mails GROUP BY state ORDER BY state")
        .fetch_all(pool)
        .await
}
