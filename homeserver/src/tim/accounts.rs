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
//! without a KVNR.
//!
//! One account per person: users are sharded by user id, so no database
//! can keep `users.kvnr` unique. `insured_kvnrs` in database 0 maps each
//! KVNR to its one user id (migration 0009); [`create_insured`] claims the
//! KVNR there before it writes the account on the user's shard, and
//! [`insured_account`] (the IdP login) looks the KVNR up there first. A
//! crash between the two leaves a claim without an account, which the
//! person's next login completes under the claimed user id.

use ruma::{OwnedUserId, api::error::ErrorKind};
use serde::Serialize;

use super::permissions::PermissionConfigType;
use crate::{
    auth::tokens,
    client_api::account::new_user_id,
    http::{ApiError, ApiResult},
    server::Homeserver,
    storage::{account_data, insured_kvnrs, users},
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

/// The account of the insured person with `kvnr` (the IdP vouched for
/// it), created at their first login with a random user id and the IdP's
/// display name.
pub async fn insured_account(server: &Homeserver, kvnr: &Kvnr, displayname: Option<&str>) -> ApiResult<OwnedUserId> {
    let global = server.db.global();
    let localpart = match insured_kvnrs::owner(global, kvnr.as_str()).await? {
        Some(user_id) if users::exists(server.db.user_shard(&user_id), &user_id).await? => return Ok(user_id),
        // A creation that did not finish (or is under way): finish it.
        Some(user_id) => user_id.localpart().to_owned(),
        None => tokens::random_string(12).to_lowercase(),
    };
    match create_insured(server, &localpart, kvnr, displayname).await {
        // A concurrent first login of the same person claimed the KVNR for
        // another user id: make sure that account exists (creating it again
        // is a no-op), then use it.
        Err(err) => match insured_kvnrs::owner(global, kvnr.as_str()).await? {
            Some(owner) if owner.localpart() != localpart => create_insured(server, owner.localpart(), kvnr, displayname).await,
            _ => Err(err),
        },
        created => created,
    }
}

/// Creates an insured person's account: no password (they log in through
/// the insurer's IdP), the KVNR, the display name from the IdP, and the
/// configured default permission config (A_25043), all in one transaction
/// so the account never exists without its permission config. The KVNR is
/// claimed first (`M_USER_IN_USE` when another account holds it); creating
/// an account that exists with this KVNR already is a no-op.
pub async fn create_insured(server: &Homeserver, localpart: &str, kvnr: &Kvnr, displayname: Option<&str>) -> ApiResult<OwnedUserId> {
    let user_id = new_user_id(server, localpart)?;
    let in_use = |message| ApiError::new(http::StatusCode::BAD_REQUEST, ErrorKind::UserInUse, message);
    let global = server.db.global();
    if insured_kvnrs::claim(global, kvnr.as_str(), &user_id).await?.as_ref() != Some(&user_id) {
        return Err(in_use("This KVNR has an account already"));
    }
    let shard = server.db.user_shard(&user_id);
    let mut tx = shard.begin().await?;
    if !users::create(&mut *tx, &user_id, None, false, Some(kvnr.as_str())).await? {
        drop(tx);
        if users::kvnr(shard, &user_id).await?.as_deref() == Some(kvnr.as_str()) {
            return Ok(user_id);
        }
        insured_kvnrs::release(global, kvnr.as_str(), &user_id).await?;
        return Err(in_use("User ID already taken"));
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
