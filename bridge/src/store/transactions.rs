//! `appservice_txns` and `incoming_events`: what the homeserver pushed,
//! taken in durably before we answer, and worked off in order afterwards.

use serde_json::Value as JsonValue;
use sqlx::{PgExecutor, PgPool, Postgres, Transaction};

/// The kinds of queued work (the `kind` column).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// One room event.
    Timeline,
    /// To-device messages, device lists and key counts of one transaction.
    Crypto,
}

impl EventKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Timeline => "timeline",
            Self::Crypto => "crypto",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        match text {
            "timeline" => Some(Self::Timeline),
            "crypto" => Some(Self::Crypto),
            _ => None,
        }
    }
}

/// One queued piece of work.
#[derive(Debug)]
pub struct QueuedEvent {
    pub id: i64,
    pub txn_id: String,
    pub kind: EventKind,
    pub body: JsonValue,
}

/// Records `txn_id`; false when it was taken in before (the caller then
/// does nothing and answers 200).
pub async fn record(tx: &mut Transaction<'_, Postgres>, txn_id: &str) -> sqlx::Result<bool> {
    let inserted =
        sqlx::query("INSERT INTO appservice_txns (txn_id) VALUES ($1) ON CONFLICT DO NOTHING")
            .bind(txn_id)
            .execute(&mut **tx)
            .await?;
    Ok(inserted.rows_affected() == 1)
}

pub async fn queue(
    tx: &mut Transaction<'_, Postgres>,
    txn_id: &str,
    kind: EventKind,
    body: &JsonValue,
) -> sqlx::Result<()> {
    sqlx::query("INSERT INTO incoming_events (txn_id, kind, body) VALUES ($1, $2, $3)")
        .bind(txn_id)
        .bind(kind.as_str())
        .bind(body)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// The oldest queued work of `kind`, up to `limit` items.
pub async fn next(pool: &PgPool, kind: EventKind, limit: i64) -> sqlx::Result<Vec<QueuedEvent>> {
    let rows: Vec<(i64, String, String, JsonValue)> = sqlx::query_as(
        "SELECT id, txn_id, kind, body FROM incoming_events WHERE kind = $1 ORDER BY id LIMIT $2",
    )
    .bind(kind.as_str())
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(id, txn_id, kind, body)| {
            Some(QueuedEvent {
                id,
                txn_id,
                kind: EventKind::parse(&kind)?,
                body,
            })
        })
        .collect())
}

/// Done with one item.
pub async fn remove(db: impl PgExecutor<'_>, id: i64) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM incoming_events WHERE id = $1")
        .bind(id)
        .execute(db)
        .await?;
    Ok(())
}

pub async fn pending(pool: &PgPool) -> sqlx::Result<i64> {
    sqlx::query_scalar("SELECT count(*) FROM incoming_events")
        .fetch_one(pool)
        .await
}
