//! The sync engine: tokens, the notifier that wakes waiting syncs (and its
//! relay to the other workers), and the builders of `/sync` responses.

pub mod engine;
pub mod filter;
pub mod notifier;
pub mod relay;
pub mod sliding;
pub mod token;
pub mod typing;
