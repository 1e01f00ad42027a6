//! `kim-bridge` as a library: the application service and its parts, so
//! tests run the bridge in-process.

pub mod appservice;
pub mod bridge;
pub mod clientmodul;
pub mod config;
pub mod crypto;
pub mod dispatch;
pub mod inbound;
pub mod kim;
pub mod matrix;
pub mod outbound;
pub mod portal;
pub mod registration;
pub mod smime;
pub mod status;
pub mod store;
