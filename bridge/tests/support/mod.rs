//! Shared helpers of the bridge's integration tests (each test binary declares `mod support;`).

pub mod mail_server;
