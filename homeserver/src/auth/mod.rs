//! Credentials: password hashing, token issuing, user-interactive auth.

pub mod password;
pub mod tokens;
pub mod uiaa;
