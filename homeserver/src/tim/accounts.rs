//! Account kinds of TI-M ePA: every local account is either an insured
//! person's, identified by the KVNR (Krankenversichertennummer), or the
//! insurer's own: staff and functional accounts. The kind decides which
//! rules apply: insured persons may not invite each other (A_25705), open
//! rooms to the public or leave them unencrypted (A_26015-02), or browse the
//! public room list (A_28587); other users may block them as a group
//! (A_25704).
//!
//! Where kinds come from:
//! - Insured accounts are made when a person first logs in through the
//!   insurer's identity provider, with the KVNR the IdP vouches for:
//!   [`create_insured`] is the only way an account gets a KVNR.
//! - Every other way in (`POST /register`, the shared-secret admin API, the
//!   staff admin API, `homeserver create-user`) makes staff accounts. None
//!   of them has an IdP to vouch for a KVNR, so "insured" cannot be their
//!   default, and there is no setting for it.
//!
//! The kind is not stored on its own: an account is insured exactly when
//! `users.kvnr` is set (migration 0008), so no row can be an insured person
//! without a KVNR. The database cannot keep KVNRs unique (users are sharded
//! by user id), so the IdP login that will create insured accounts must
//! derive the user id from the KVNR to keep one account per person.

use ruma::{OwnedUserId, api::error::ErrorKind};
use serde::Serialize;

use super::permissions::PermissionConfigType;
use crate::{
    client_api::account::new_user_id,
    http::{ApiError, ApiResult},
    server::Homeserver,
    storage::{account_data, users},
};

/// Whose an account is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AccountKind {
    /// An insured person (Versicherter) of the insurer.
    Insured,
    /// The insurer's staff or a functional account (Org-User).
    Staff,
}

impl AccountKind {
    /// The kind of an account with this stored KVNR (or none).
    pub fn of_kvnr(kvnr: Option<&str>) -> Self {
        if kvnr.is_some() { Self::Insured } else { Self::Staff }
    }

    pub fn is_insured(self) -> bool {
        self == Self::Insured
    }
}

/// The unchangeable part of a KVNR: a capital letter and nine digits, the
/// last a check digit (the letter as its two-digit alphabet position, then
/// the first eight digits, weighted 1, 2, 1, 2, …, cross sums of the
/// products added up, modulo 10).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Kvnr(String);

impl Kvnr {
    /// A well-formed KVNR with a matching check digit; 400 `M_INVALID_PARAM`
    /// otherwise.
    pub fn parse(text: &str) -> ApiResult<Self> {
        let invalid = || ApiError::invalid_param(format!("{text:?} is not a valid KVNR"));
        let bytes = text.as_bytes();
        let [letter @ b'A'..=b'Z', digits @ ..] = bytes else { return Err(invalid()) };
        if digits.len() != 9 || !digits.iter().all(u8::is_ascii_digit) {
            return Err(invalid());
        }
        let position = letter - b'A' + 1;
        let weighted = [position / 10, position % 10].into_iter().chain(digits[..8].iter().map(|d| d - b'0'));
        let sum: u32 = weighted
            .zip([1, 2].into_iter().cycle())
            .map(|(digit, weight)| {
                let product = u32::from(digit) * weight;
                product / 10 + product % 10
            })
            .sum();
        if sum % 10 != u32::from(digits[8] - b'0') {
            return Err(invalid());
        }
        Ok(Self(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Creates an insured person's account: no password (they log in through
/// the insurer's IdP), the KVNR, the display name from the IdP, and the
/// configured default permission config (A_25043), all in one transaction
/// so the account never exists without its permission config.
pub async fn create_insured(server: &Homeserver, localpart: &str, kvnr: &Kvnr, displayname: Option<&str>) -> ApiResult<OwnedUserId> {
    let user_id = new_user_id(server, localpart)?;
    let mut tx = server.db.user_shard(&user_id).begin().await?;
    if !users::create(&mut *tx, &user_id, None, false, Some(kvnr.as_str())).await? {
        return Err(ApiError::new(http::StatusCode::BAD_REQUEST, ErrorKind::UserInUse, "User ID already taken"));
    }
    if let Some(name) = displayname {
        users::set_displayname(&mut *tx, &user_id, Some(name)).await?;
    }
    let config = &server.config.tim.default_insured_permission_config;
    account_data::set(&mut tx, &user_id, None, PermissionConfigType::Epa.event_type(), config).await?;
    tx.commit().await?;
    tracing::info!(%user_id, "insured account created");
    Ok(user_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kvnr_needs_letter_nine_digits_and_the_check_digit() {
        // gematik's test KVNR and one computed by hand.
        assert!(Kvnr::parse("X110411675").is_ok());
        assert!(Kvnr::parse("A123456780").is_ok());
        for wrong in ["X110411674", "x110411675", "X11041167", "X1104116755", "1110411675", "X11041167A", "", "Ä110411675"] {
            assert_eq!(Kvnr::parse(wrong).unwrap_err().errcode(), "M_INVALID_PARAM", "{wrong:?}");
        }
    }

    #[test]
    fn an_account_is_insured_exactly_when_it_has_a_kvnr() {
        assert_eq!(AccountKind::of_kvnr(Some("X110411675")), AccountKind::Insured);
        assert_eq!(AccountKind::of_kvnr(None), AccountKind::Staff);
    }
}
