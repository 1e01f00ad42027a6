//! `kim-bridge` as a library: the parts of the bridge that tests and tools
//! use without running the application service.

pub mod crypto;
pub mod kim;
pub mod matrix;
pub mod smime;
