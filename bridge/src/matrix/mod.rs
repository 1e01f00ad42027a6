//! The bridge's side of Matrix: calls to the homeserver as the bridge bot or
//! as a ghost (appservice identity assertion).

pub mod account_kind;
pub mod client;
