//! Sync tokens: a vector of stream positions, one per database stream plus
//! the ephemeral typing version. Any worker can continue from any token.
//!
//! Text form: `s<pos>[.<pos>…]_t<typing>`. A pagination token for
//! `/messages` has the same form; only the room's database position is used.

use std::{fmt, str::FromStr};

use crate::http::ApiError;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncToken {
    /// Stream head of each database, in shard-map order.
    pub positions: Vec<i64>,
    /// Version of the typing state.
    pub typing: u64,
}

impl SyncToken {
    /// The position of the (single, for now) database stream.
    pub fn pos(&self) -> i64 {
        self.positions.first().copied().unwrap_or(0)
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
        write!(f, "_t{}", self.typing)
    }
}

impl FromStr for SyncToken {
    type Err = ApiError;

    fn from_str(text: &str) -> Result<Self, ApiError> {
        let invalid = || ApiError::invalid_param(format!("Invalid stream token {text:?}"));
        let (streams, typing) = text.strip_prefix('s').and_then(|rest| rest.split_once("_t")).ok_or_else(invalid)?;
        let positions = streams
            .split('.')
            .map(|pos| pos.parse::<i64>().ok().filter(|p| *p >= 0))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(invalid)?;
        Ok(Self { positions, typing: typing.parse().map_err(|_| invalid())? })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let token = SyncToken { positions: vec![42, 7], typing: 3 };
        assert_eq!(token.to_string(), "s42.7_t3");
        assert_eq!("s42.7_t3".parse::<SyncToken>().unwrap(), token);
    }

    #[test]
    fn garbage_is_rejected() {
        for text in ["", "s", "s1", "x1_t1", "s-1_t0", "s1_tx", "s1._t1"] {
            assert!(text.parse::<SyncToken>().is_err(), "{text}");
        }
    }
}
