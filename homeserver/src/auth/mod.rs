//! Credentials: password hashing, token issuing, user-interactive auth,
//! and the OpenID Connect relying party of insured persons' login.

pub mod oidc;
pub mod password;
pub mod tokens;
pub mod uiaa;
