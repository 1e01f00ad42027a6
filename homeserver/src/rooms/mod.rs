//! Rooms: event building, authorization and the single writer per room.

pub mod membership;
pub mod pdu;
pub mod user_index;
pub mod visibility;
pub mod writer;

pub use writer::{NewEvent, RoomWriter, TxnRef};
