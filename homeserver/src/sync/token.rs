//! Sync tokens: a vector of stream positions, one per database stream, the
//! ephemeral typing version and the device's to-device position. Any worker
//! can continue from any token.
//!
//! Text form: `s<pos>[.<pos>…]_t<typing>[_d<to-device pos>][_m<map epoch>]`.
//! A pagination token for `/messages` has the same form; only the room's
//! database position is used.
//!
//! A room's or user's rows keep their positions when their logical shard
//! moves to another database (ARCHITECTURE.md "Sharding"), so a token
//! counts them at the database that held them under the token's map epoch,
//! wherever they are read from now.

use std::{collections::BTreeMap, fmt, str::FromStr};

use ruma::{RoomId, UserId};

use crate::{
    http::{ApiError, ApiResult},
    server::Homeserver,
    storage::{self, Db, Shard},
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
    /// The shard map the positions were read under.
    pub map_epoch: u64,
}

impl SyncToken {
    /// The current positions of every stream this worker serves: what a
    /// sync reads up to.
    pub async fn current(server: &Homeserver) -> ApiResult<Self> {
        // The epoch before the heads: a map switched in between leaves the
        // token counting a moved shard at its old database, whose position
        // for it stopped growing at the switch, which is still exact.
        let map_epoch = server.db.map_epoch();
        let positions = storage::stream::heads(&server.db).await?;
        Ok(Self { positions, typing: server.typing.version().await, to_device: None, map_epoch })
    }

    /// Makes this worker use a map at least as new as the token's, before
    /// it reads anything with the token.
    pub async fn follow_map(&self, db: &Db) -> ApiResult<()> {
        db.follow_map(self.map_epoch).await?;
        Ok(())
    }

    /// The position of database `shard`; 0 for a database added after the
    /// token was issued (it held nothing then).
    pub fn position(&self, shard: usize) -> i64 {
        self.positions.get(shard).copied().unwrap_or(0)
    }

    /// The position counting the rows of `id` (a room or user id).
    pub fn position_of(&self, db: &Db, id: &str) -> i64 {
        self.position(db.database_at(self.map_epoch, id))
    }

    /// A pagination token of a room: only the room's position means
    /// anything to `/messages`.
    pub fn for_room(db: &Db, room_id: &RoomId, pos: i64) -> Self {
        let map_epoch = db.map_epoch();
        let shard = db.database_at(map_epoch, room_id.as_str());
        let mut positions = vec![0; shard + 1];
        positions[shard] = pos;
        Self { positions, typing: 0, to_device: None, map_epoch }
    }

    /// Where to-device delivery continues from for a device of `user_id`.
    pub fn to_device_pos(&self, db: &Db, user_id: &UserId) -> i64 {
        self.to_device.unwrap_or_else(|| self.position_of(db, user_id.as_str()))
    }
}

/// The positions `(since, upto]` one response covers, per database.
#[derive(Clone, Copy, Debug)]
pub struct StreamRange<'a> {
    /// Exclusive lower bound; `None` for an initial sync.
    pub since: Option<&'a SyncToken>,
    pub upto: &'a SyncToken,
}

/// `(since, upto]`: the positions a response covers for some rows.
pub type Bounds = (Option<i64>, i64);

impl StreamRange<'_> {
    /// `(since, upto]` of the rows of `id` (a room or user id).
    pub fn of(&self, db: &Db, id: &str) -> Bounds {
        (self.since.map(|since| since.position_of(db, id)), self.upto.position_of(db, id))
    }

    /// `items` grouped by the database holding them and by their range,
    /// for one query per group: items of one database share a range unless
    /// some moved there since the token was issued.
    pub fn group_by_shard<'d, T: Clone>(&self, db: &'d Db, items: &[T], id: impl Fn(&T) -> &str) -> Vec<(&'d Shard, Bounds, Vec<T>)> {
        let mut groups: BTreeMap<(usize, Bounds), (&'d Shard, Vec<T>)> = BTreeMap::new();
        for (shard, items) in db.group_by_shard(items, &id) {
            for item in items {
                let bounds = self.of(db, id(&item));
                groups.entry((shard.index, bounds)).or_insert_with(|| (shard, Vec::new())).1.push(item);
            }
        }
        groups.into_iter().map(|((_, bounds), (shard, items))| (shard, bounds, items)).collect()
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
        if self.map_epoch > 0 {
            write!(f, "_m{}", self.map_epoch)?;
        }
        Ok(())
    }
}

impl FromStr for SyncToken {
    type Err = ApiError;

    fn from_str(text: &str) -> Result<Self, ApiError> {
        let invalid = || ApiError::invalid_param(format!("Invalid stream token {text:?}"));
        let (streams, rest) = text.strip_prefix('s').and_then(|rest| rest.split_once("_t")).ok_or_else(invalid)?;
        let (rest, map_epoch) = match rest.split_once("_m") {
            Some((rest, epoch)) => (rest, epoch.parse::<u64>().map_err(|_| invalid())?),
            None => (rest, 0),
        };
        let (typing, to_device) = match rest.split_once("_d") {
            Some((typing, pos)) => (typing, Some(pos.parse::<i64>().ok().filter(|p| *p >= 0).ok_or_else(invalid)?)),
            None => (rest, None),
        };
        let positions = streams
            .split('.')
            .map(|pos| pos.parse::<i64>().ok().filter(|p| *p >= 0))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(invalid)?;
        Ok(Self { positions, typing: typing.parse().map_err(|_| invalid())?, to_device, map_epoch })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let token = SyncToken { positions: vec![42, 7], typing: 3, to_device: None, map_epoch: 0 };
        assert_eq!(token.to_string(), "s42.7_t3");
        assert_eq!("s42.7_t3".parse::<SyncToken>().unwrap(), token);
        let token = SyncToken { positions: vec![42], typing: 0, to_device: Some(40), map_epoch: 0 };
        assert_eq!(token.to_string(), "s42_t0_d40");
        assert_eq!("s42_t0_d40".parse::<SyncToken>().unwrap(), token);
        let token = SyncToken { positions: vec![42, 9], typing: 1, to_device: Some(40), map_epoch: 3 };
        assert_eq!(token.to_string(), "s42.9_t1_d40_m3");
        assert_eq!("s42.9_t1_d40_m3".parse::<SyncToken>().unwrap(), token);
    }

    #[test]
    fn garbage_is_rejected() {
        for text in ["", "s", "s1", "x1_t1", "s-1_t0", "s1_tx", "s1._t1", "s1_t1_d", "s1_t1_dx", "s1_t1_m", "s1_t1_m-1"] {
            assert!(text.parse::<SyncToken>().is_err(), "{text}");
        }
    }
}
