//! TI-Messenger homeserver: the Matrix Client-Server API on PostgreSQL.
//! See ARCHITECTURE.md for the map of this crate.

pub mod appservice;
pub mod auth;
pub mod client_api;
pub mod config;
pub mod e2ee;
pub mod http;
pub mod media;
pub mod metrics;
pub mod presence;
pub mod push;
pub mod rate_limit;
pub mod rebalance;
pub mod redis_link;
pub mod rooms;
pub mod server;
pub mod signing_key;
pub mod storage;
pub mod sync;
pub mod tim;

pub use config::Config;
pub use server::Homeserver;
