//! Fuzz targets of the homeserver and the KIM bridge (see `scripts/fuzz`).
//! The bodies are plain functions, so that the normal test suite runs them
//! over the corpus too (see `corpus.rs`).

pub mod bridge_targets;
pub mod homeserver_targets;
