//! Namespaces: which user ids, aliases and room ids an application service
//! claims, and the exclusive claims everyone else must respect.

use regex::Regex;
use ruma::api::error::ErrorKind;

use super::{Appservice, Appservices};
use crate::http::{ApiError, ApiResult};

/// One namespace entry: a regex (anchored) and whether the claim is
/// exclusive.
pub struct Namespace {
    pub(super) regex: Regex,
    pub(super) exclusive: bool,
}

/// An appservice's namespaces.
pub struct Namespaces {
    pub users: Vec<Namespace>,
    pub aliases: Vec<Namespace>,
    pub rooms: Vec<Namespace>,
}

impl Namespaces {
    pub fn is_user(&self, user_id: &str) -> bool {
        matches(&self.users, user_id, false)
    }
    pub fn is_alias(&self, alias: &str) -> bool {
        matches(&self.aliases, alias, false)
    }
    pub fn is_room(&self, room_id: &str) -> bool {
        matches(&self.rooms, room_id, false)
    }
    pub fn claims_user(&self, user_id: &str) -> bool {
        matches(&self.users, user_id, true)
    }
    pub fn claims_alias(&self, alias: &str) -> bool {
        matches(&self.aliases, alias, true)
    }
}

fn matches(namespaces: &[Namespace], id: &str, exclusive_only: bool) -> bool {
    namespaces.iter().any(|namespace| (namespace.exclusive || !exclusive_only) && namespace.regex.is_match(id))
}

/// 400 `M_EXCLUSIVE`: someone other than the appservice that claims an id
/// exclusively tried to take it.
fn exclusive(what: &str) -> ApiError {
    ApiError::new(http::StatusCode::BAD_REQUEST, ErrorKind::Exclusive, format!("This {what} is reserved by an application service"))
}

impl Appservices {
    /// Refuses a user id inside an exclusive namespace of an appservice
    /// other than `caller` (the appservice making the request, if any).
    pub fn ensure_user_unclaimed(&self, user_id: &str, caller: Option<&Appservice>) -> ApiResult<()> {
        self.ensure_unclaimed(caller, "user ID", |appservice| appservice.namespaces.claims_user(user_id) || appservice.sender == user_id)
    }

    /// Refuses an alias inside another appservice's exclusive namespace.
    pub fn ensure_alias_unclaimed(&self, alias: &str, caller: Option<&Appservice>) -> ApiResult<()> {
        self.ensure_unclaimed(caller, "room alias", |appservice| appservice.namespaces.claims_alias(alias))
    }

    fn ensure_unclaimed(&self, caller: Option<&Appservice>, what: &str, claims: impl Fn(&Appservice) -> bool) -> ApiResult<()> {
        let claimed_by_other = self.iter().any(|appservice| claims(appservice) && caller.is_none_or(|caller| caller.id != appservice.id));
        if claimed_by_other { Err(exclusive(what)) } else { Ok(()) }
    }
}
