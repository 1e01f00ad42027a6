//! Sync tokens: a vector of stream positions, one per database stream, the
//! ephemeral typing version and the device's to-device position. Any worker
//! can continue from any token.
//!
//! Text form: `s<pos>[.<pos>…]_t<typing>[_d<to-device pos>]`. A pagination
//! token for `/messages` has the same form; only the room's database
//! position is used.

use std::{fmt, str::FromStr};

use crate::{
    http::{ApiError, ApiResult},
    server::Homeserver,
    storage,
};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncToken {
    /// Stream head of each database, in shard-map order.
    pub positions: Vec<i64>,
    /// Version of the typing state.
    pub typing: u64,
    /// To-device messages up to here were delivered; they may lag behind
    /// `positions` when a device has more than one response's worth queued.
    pub to_device: Option<i64>,
}

impl SyncToken {
    /// The current positions of every stream this worker serves: what a
    /// sync reads up to.
    pub async fn current(server: &Homeserver) -> ApiResult<Self> {
        let positions = storage::stream::heads(&server.db).await?;
        Ok(Self { positions, typing: server.typing.version().await, to_device: None })
    }

    /// The position of database `shard`; 0 for a database added after the
    /// token was issued (it held nothing then).
    pub fn position(&self, shard: usize) -> i64 {
        self.positions.get(shard).copied().unwrap_or(0)
    }

    /// A pagination token of a room on database `shard`: only that
    /// database's position means anything to `/messages`.
    pub fn for_room_at(shard: usize, pos: i64) -> Self {
        let mut positions = vec![0; shard + 1];
        positions[shard] = pos;
        Self { positions, typing: 0, to_device: None }
    }

    /// Where to-device delivery continues from, for a device whose user
    /// lives on database `user_shard`.
    pub fn to_device_pos(&self, user_shard: usize) -> i64 {
        self.to_device.unwrap_or_else(|| self.position(user_shard))
    }
}

/// The positions `(since, upto]` one response covers, per database.
#[derive(Clone, Copy, Debug)]
pub struct StreamRange<'a> {
    /// Exclusive lower bound; `None` for an initial sync.
    pub since: Option<&'a SyncToken>,
    pub upto: &'a SyncToken,
}

impl StreamRange<'_> {
    /// `(since, upto]` of database `shard`.
    pub fn of(&self, shard: usize) -> (Option<i64>, i64) {
        (self.since.map(|since| since.position(shard)), self.upto.position(shard))
    }
}

impl fmt::Display for SyncToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("s")?;
        for (i, pos) in self.positions.iter().enumerate() {
            if i > 0 {
                f.write_str(".")?;
            }
            write!(f, "{pos}")?;
        }
        write!(f, "_t{}", self.typing)?;
        if let Some(pos) = self.to_device {
            write!(f, "_d{pos}")?;
        }
        Ok(())
    }
}

impl FromStr for SyncToken {
    type Err = ApiError;

    fn from_str(text: &str) -> Result<Self, ApiError> {
        let invalid = || ApiError::invalid_param(format!("Invalid stream token {text:?}"));
        let (streams, rest) = text.strip_prefix('s').and_then(|rest| rest.split_once("_t")).ok_or_else(invalid)?;
        let (typing, to_device) = match rest.split_once("_d") {
            Some((typing, pos)) => (typing, Some(pos.parse::<i64>().ok().filter(|p| *p >= 0).ok_or_else(invalid)?)),
            None => (rest, None),
        };
        let positions = streams
            .split('.')
            .map(|pos| pos.parse::<i64>().ok().filter(|p| *p >= 0))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(invalid)?;
        Ok(Self { positions, typing: typing.parse().map_err(|_| invalid())?, to_device })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let token = SyncToken { positions: vec![42, 7], typing: 3, to_device: None };
        assert_eq!(token.to_string(), "s42.7_t3");
        assert_eq!("s42.7_t3".parse::<SyncToken>().unwrap(), token);
        let token = SyncToken { positions: vec![42], typing: 0, to_device: Some(40) };
        assert_eq!(token.to_string(), "s42_t0_d40");
        assert_eq!("s42_t0_d40".parse::<SyncToken>().unwrap(), token);
    }

    #[test]
    fn garbage_is_rejected() {
        for text in ["", "s", "s1", "x1_t1", "s-1_t0", "s1_tx", "s1._t1", "s1_t1_d", "s1_t1_dx"] {
            assert!(text.parse::<SyncToken>().is_err(), "{text}");
        }
    }
}
