//! The sync engine: tokens, the notifier that wakes waiting syncs, and the
//! builders of `/sync` responses.

pub mod engine;
pub mod filter;
pub mod notifier;
pub mod token;
pub mod typing;
