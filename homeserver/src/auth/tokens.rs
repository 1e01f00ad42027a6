//! Access and login tokens.
//!
//! A token is `<kind>_<base64url(localpart)>_<32 random chars>`: it names its
//! user so the lookup goes straight to that user's shard, and only its
//! SHA-256 is stored, so a database leak yields no usable token.

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use rand::{Rng, distr::Alphanumeric};
use ruma::{OwnedUserId, ServerName, UserId};
use sha2::{Digest, Sha256};

/// What a token is for; the prefix keeps one kind from passing as another.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenKind {
    Access,
    Login,
}

impl TokenKind {
    fn prefix(self) -> &'static str {
        match self {
            Self::Access => "mat_",
            Self::Login => "mlt_",
        }
    }
}

/// A fresh random string of `len` alphanumeric characters.
pub fn random_string(len: usize) -> String {
    rand::rng().sample_iter(&Alphanumeric).take(len).map(char::from).collect()
}

/// A new token of `kind` for `user_id`.
pub fn new_token(kind: TokenKind, user_id: &UserId) -> String {
    format!("{}{}_{}", kind.prefix(), URL_SAFE_NO_PAD.encode(user_id.localpart()), random_string(32))
}

/// The user a token of `kind` claims to belong to (to be confirmed by the
/// lookup of its hash).
pub fn user_of_token(kind: TokenKind, token: &str, server_name: &ServerName) -> Option<OwnedUserId> {
    let rest = token.strip_prefix(kind.prefix())?;
    let (encoded, _) = rest.rsplit_once('_')?;
    let localpart = String::from_utf8(URL_SAFE_NO_PAD.decode(encoded).ok()?).ok()?;
    UserId::parse_with_server_name(localpart, server_name).ok()
}

/// What is stored for a token.
pub fn hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_names_its_user() {
        let server = ruma::server_name!("example.org");
        let user = ruma::user_id!("@alice_smith:example.org");
        let token = new_token(TokenKind::Access, user);
        assert_eq!(user_of_token(TokenKind::Access, &token, server).as_deref(), Some(user));
        assert_eq!(user_of_token(TokenKind::Login, &token, server), None);
        assert_eq!(user_of_token(TokenKind::Access, "mat_garbage", server), None);
        assert_eq!(user_of_token(TokenKind::Access, "syt_x_y", server), None);
        assert_ne!(hash(&token), hash(&new_token(TokenKind::Access, user)));
    }
}
