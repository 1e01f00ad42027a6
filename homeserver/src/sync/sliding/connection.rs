//! A sliding sync connection: the `pos` a client continues from and what the
//! responses up to it sent.
//!
//! `pos` is `<position>_<sync token>`. The sync token says which stream
//! positions the client has seen (the same vector token as `/sync`, so any
//! worker can continue from it); the position names the connection state
//! stored in PostgreSQL: which rooms the connection was sent, up to where,
//! and with which `required_state` and `timeline_limit`. A response that
//! sends no room and tells no new list size keeps the position and only
//! moves the token, so an idle long-poll writes nothing.
//!
//! Lost responses: a client that did not get a response repeats its request
//! with the old `pos`. Room rows carry the position of the response that
//! wrote them; reading takes only rows at or before the client's position,
//! and every write first drops the rows after its base. So the rows a
//! client is judged by are always ones it received; at worst, a room whose
//! row was overwritten by a lost response is sent again from scratch
//! (`initial`), which is safe.

use std::collections::{BTreeMap, HashMap};

use http::StatusCode;
use ruma::api::error::ErrorKind;

use super::super::token::SyncToken;
use crate::{
    http::{ApiError, ApiResult, Session},
    server::Homeserver,
    storage::sliding_sync::{self, ConnectionKey, SentRoom},
};

/// Longest `conn_id` accepted: it is part of every row's key. MSC4186 asks
/// clients for at most 16 characters; some slack for clients that exceed
/// it, and a bound for those that abuse it.
const MAX_CONN_ID_LEN: usize = 64;

/// A parsed `pos`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pos {
    /// The stored connection state the client has (0: none).
    pub position: i64,
    /// The stream positions the client has seen.
    pub token: SyncToken,
}

impl Pos {
    /// Parses a `pos`; anything this server did not hand out (or no longer
    /// knows) is `M_UNKNOWN_POS`, which tells clients to start over.
    pub fn parse(text: &str) -> ApiResult<Self> {
        let (position, token) = text.split_once('_').ok_or_else(unknown_pos)?;
        let position = position.parse::<i64>().ok().filter(|p| *p >= 0).ok_or_else(unknown_pos)?;
        let token = token.parse::<SyncToken>().map_err(|_| unknown_pos())?;
        Ok(Self { position, token })
    }
}

impl std::fmt::Display for Pos {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}_{}", self.position, self.token)
    }
}

/// 400 `M_UNKNOWN_POS`: the connection must restart without a `pos`.
pub fn unknown_pos() -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, ErrorKind::UnknownPos, "Unknown or expired sliding sync position")
}

/// One request's view of its connection.
pub struct Connection<'a> {
    key: ConnectionKey<'a>,
    /// Where the client continues from; `None` (re)starts the connection.
    pos: Option<Pos>,
    /// What the responses up to `pos` sent, by room id.
    sent: HashMap<String, SentRoom>,
    /// The list sizes the response at `pos` told.
    list_counts: BTreeMap<String, u64>,
}

impl<'a> Connection<'a> {
    /// Loads the connection state `pos` names; checks that the client
    /// cannot have seen more than `current` (a token from another server or
    /// a restored database).
    pub async fn open(server: &Homeserver, session: &'a Session, conn_id: &'a str, pos: Option<Pos>, current: &SyncToken) -> ApiResult<Self> {
        if conn_id.len() > MAX_CONN_ID_LEN {
            return Err(ApiError::invalid_param(format!("conn_id is longer than {MAX_CONN_ID_LEN} bytes")));
        }
        let key = ConnectionKey { user_id: &session.user_id, device_id: &session.device_id, conn_id };
        let mut connection = Self { key, pos: None, sent: HashMap::new(), list_counts: BTreeMap::new() };
        let Some(pos) = pos else { return Ok(connection) };
        if pos.token.positions.len() != current.positions.len() || pos.token.positions.iter().zip(&current.positions).any(|(seen, now)| seen > now) {
            return Err(unknown_pos());
        }
        if pos.position > 0 {
            let db = server.db.user_shard(&session.user_id);
            let counts = sliding_sync::list_counts(db, key, pos.position).await?.ok_or_else(unknown_pos)?;
            connection.list_counts = serde_json::from_value(counts).unwrap_or_default();
            connection.sent = sliding_sync::sent_rooms(db, key, pos.position).await?.into_iter().map(|room| (room.room_id.clone(), room)).collect();
        }
        connection.pos = Some(pos);
        Ok(connection)
    }

    /// The client's token, `None` on a new connection.
    pub fn since(&self) -> Option<&SyncToken> {
        self.pos.as_ref().map(|pos| &pos.token)
    }

    /// What the connection was last sent of `room_id`.
    pub fn sent(&self, room_id: &str) -> Option<&SentRoom> {
        self.sent.get(room_id)
    }

    /// Whether `counts` differ from what the client was last told.
    pub fn counts_changed(&self, counts: &BTreeMap<String, u64>) -> bool {
        &self.list_counts != counts
    }

    /// The `pos` of a response up to `upto` that sent `rooms` and told
    /// `list_counts`: a new position when it changed the connection state,
    /// else the client's own.
    pub async fn next_pos(&self, server: &Homeserver, upto: &SyncToken, list_counts: &BTreeMap<String, u64>, rooms: &[SentRoom]) -> ApiResult<String> {
        let base = self.pos.as_ref().map_or(0, |pos| pos.position);
        let position = if rooms.is_empty() && !self.counts_changed(list_counts) {
            base
        } else {
            let counts = serde_json::to_value(list_counts)?;
            let mut tx = server.db.user_shard(self.key.user_id).begin().await?;
            let position = sliding_sync::record(&mut tx, self.key, base, &counts, rooms).await?;
            tx.commit().await?;
            position
        };
        let token = SyncToken { to_device: None, ..upto.clone() };
        Ok(Pos { position, token }.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pos_round_trip() {
        let pos = Pos { position: 12, token: SyncToken { positions: vec![345], typing: 3, to_device: None, map_epoch: 0 } };
        assert_eq!(pos.to_string(), "12_s345_t3");
        assert_eq!(Pos::parse("12_s345_t3").unwrap(), pos);
    }

    #[test]
    fn garbage_is_an_unknown_pos() {
        for text in ["", "garbage", "12", "_s1_t1", "-1_s1_t1", "x_s1_t1", "1_s1", "1_sx_t1"] {
            assert_eq!(Pos::parse(text).unwrap_err().errcode(), "M_UNKNOWN_POS", "{text}");
        }
    }
}
