//! Invite permissions, the heart of TI-M: the invitee's permission config
//! (global account data) decides who may invite them, and their homeserver
//! (this one, for local invitees) enforces it before the invite exists.
//!
//! The account data is checked against gematik's JSON schemas themselves
//! (`schemas/`, compiled in) rather than mirrored in serde types: the
//! schemas accept properties they do not name, constrain only some nested
//! values (`userExceptions` keys start with `@`, values are objects) and
//! leave `groupExceptions` items unconstrained, which a `deny_unknown_fields`
//! struct would get wrong in both directions. Validating against the files
//! keeps us exactly as strict as gematik, and a new schema version is a
//! file swap.

use std::{collections::BTreeMap, sync::LazyLock};

use jsonschema::Validator;
use ruma::UserId;
use serde::{Deserialize, de::IgnoredAny};
use serde_json::Value as JsonValue;

use super::{accounts::AccountKind, federation_list};
use crate::{
    appservice,
    http::{ApiError, ApiResult, Session},
    server::Homeserver,
    storage::{account_data, users},
};

/// The account data types of a permission config (A_25044, A_26389).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PermissionConfigType {
    /// `de.gematik.tim.account.permissionconfig.epa.v1`: insured persons.
    Epa,
    /// `de.gematik.tim.account.permissionconfig.pro.v1`: professionals (our
    /// staff accounts).
    Pro,
    /// `de.gematik.tim.account.permissionconfig.v1`: before the split; still
    /// read when the current type is absent.
    Legacy,
}

static EPA_SCHEMA: LazyLock<Validator> = LazyLock::new(|| compile(include_str!("schemas/permissionConfig_ePA_V1.json")));
static PRO_SCHEMA: LazyLock<Validator> = LazyLock::new(|| compile(include_str!("schemas/permissionConfig_Pro_V1.json")));

/// A schema shipped in the binary; the unit tests compile both, so this
/// cannot fail at run time.
fn compile(schema: &str) -> Validator {
    let schema: JsonValue = serde_json::from_str(schema).expect("the permission config schemas are JSON");
    jsonschema::validator_for(&schema).expect("the permission config schemas are valid JSON schemas")
}

impl PermissionConfigType {
    const ALL: [Self; 3] = [Self::Epa, Self::Pro, Self::Legacy];

    pub fn event_type(self) -> &'static str {
        match self {
            Self::Epa => "de.gematik.tim.account.permissionconfig.epa.v1",
            Self::Pro => "de.gematik.tim.account.permissionconfig.pro.v1",
            Self::Legacy => "de.gematik.tim.account.permissionconfig.v1",
        }
    }

    /// The permission config type of an account data type, if it is one.
    pub fn of_event_type(event_type: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.event_type() == event_type)
    }

    /// The type an account of `kind` stores its config under.
    fn for_account(kind: AccountKind) -> Self {
        match kind {
            AccountKind::Insured => Self::Epa,
            AccountKind::Staff => Self::Pro,
        }
    }

    /// A_26390: the content must satisfy gematik's schema for the type (the
    /// legacy type predates the split; the Pro schema, a superset of the
    /// ePA one, judges it). The error names the first violation.
    pub fn validate(self, content: &JsonValue) -> Result<(), String> {
        let schema = match self {
            Self::Epa => &*EPA_SCHEMA,
            Self::Pro | Self::Legacy => &*PRO_SCHEMA,
        };
        schema.validate(content).map_err(|err| format!("{} does not match gematik's schema: {err}", self.event_type()))
    }
}

/// A_26390: a client's write of a permission config is refused with 400
/// `M_BAD_JSON` unless it matches the schema. Other account data passes.
pub fn validate_account_data(event_type: &str, content: &JsonValue) -> ApiResult<()> {
    match PermissionConfigType::of_event_type(event_type) {
        Some(kind) => kind.validate(content).map_err(ApiError::bad_json),
        None => Ok(()),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
enum DefaultSetting {
    #[serde(rename = "allow all")]
    AllowAll,
    #[serde(rename = "block all")]
    BlockAll,
}

/// The parts of a permission config that decide an invite (A_25045-02).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PermissionConfig {
    default_setting: DefaultSetting,
    #[serde(default)]
    server_exceptions: BTreeMap<String, IgnoredAny>,
    #[serde(default)]
    user_exceptions: BTreeMap<String, IgnoredAny>,
    /// Items are loosely specified (see the module doc); only
    /// `{"groupName": "isInsuredPerson"}` means anything.
    #[serde(default)]
    group_exceptions: Vec<JsonValue>,
}

/// The one group of `groupExceptions` (A_25704, A_25705).
const INSURED_PERSONS_GROUP: &str = "isInsuredPerson";

impl PermissionConfig {
    /// A_26021-01: the default setting decides, unless the inviter is an
    /// exception (by user id, by server name, or as an insured person when
    /// the config names that group), which inverts it.
    fn allows(&self, inviter: &UserId, inviter_kind: AccountKind) -> bool {
        let excepted = self.user_exceptions.contains_key(inviter.as_str())
            || self.server_exceptions.contains_key(inviter.server_name().as_str())
            || (inviter_kind.is_insured() && self.group_exceptions.iter().any(|group| group["groupName"] == INSURED_PERSONS_GROUP));
        (self.default_setting == DefaultSetting::AllowAll) != excepted
    }
}

/// Whether `inviter` may invite `invitee` (createRoom's `invite` and
/// `/invite`); 403 `M_FORBIDDEN` when not. Remote invitees must be on a
/// domain of the federation list (and not an insurer's when the inviter is
/// insured); their permission config is their own server's to judge.
/// Unknown local invitees are 404.
pub async fn check_invite(server: &Homeserver, inviter: &Session, invitee: &UserId) -> ApiResult<()> {
    if invitee.server_name() != server.server_name() {
        return federation_list::check_remote_invitee(server, inviter.kind, invitee.server_name().as_str()).await;
    }
    let db = server.db.user_shard(invitee);
    // An appservice may create the invitee when asked (a bridge's ghost).
    let invitee_kind = appservice::queries::user(server, invitee, || async { Ok(users::account_kind(db, invitee).await?) })
        .await?
        .ok_or_else(|| ApiError::not_found(format!("Unknown user {invitee}")))?;
    // A_25705 (AF_10233): insured persons never invite each other, whatever
    // their permission configs say.
    if inviter.kind.is_insured() && invitee_kind.is_insured() {
        return Err(ApiError::forbidden("Insured persons cannot invite each other"));
    }
    let config = permission_config(server, invitee, invitee_kind).await?;
    if !config.allows(&inviter.user_id, inviter.kind) {
        return Err(ApiError::forbidden(format!("{invitee} does not accept invites from {}", inviter.user_id)));
    }
    Ok(())
}

/// The invitee's config: the type of their kind, else the legacy type,
/// else the default (the configured one for insured persons, "allow all"
/// for staff). A stored config that no longer parses (written before the
/// schema check) counts as absent, as the reference servers treat it.
async fn permission_config(server: &Homeserver, user_id: &UserId, kind: AccountKind) -> ApiResult<PermissionConfig> {
    let db = server.db.user_shard(user_id);
    for config_type in [PermissionConfigType::for_account(kind), PermissionConfigType::Legacy] {
        let stored = account_data::get(db, user_id, None, config_type.event_type()).await?;
        if let Some(config) = stored.and_then(|content| serde_json::from_value(content).ok()) {
            return Ok(config);
        }
    }
    let default = match kind {
        AccountKind::Insured => server.config.tim.default_insured_permission_config.clone(),
        AccountKind::Staff => serde_json::json!({ "defaultSetting": "allow all" }),
    };
    serde_json::from_value(default).map_err(|err| ApiError::Internal(anyhow::anyhow!("tim.default_insured_permission_config: {err}")))
}

#[cfg(test)]
mod tests {
    use ruma::user_id;
    use serde_json::json;

    use super::*;

    fn config(content: JsonValue) -> PermissionConfig {
        serde_json::from_value(content).unwrap()
    }

    #[test]
    fn schemas_accept_what_gematik_allows_and_nothing_else() {
        let good = json!({
            "defaultSetting": "block all",
            "serverExceptions": { "other.example": {} },
            "userExceptions": { "@a:other.example": {} },
        });
        for kind in PermissionConfigType::ALL {
            kind.validate(&good).unwrap();
            for bad in [
                json!({}),
                json!({ "defaultSetting": "allow some" }),
                json!({ "defaultSetting": "allow all", "userExceptions": { "a:other.example": {} } }),
                json!({ "defaultSetting": "allow all", "serverExceptions": { "other.example": true } }),
                json!([]),
            ] {
                assert!(kind.validate(&bad).is_err(), "{kind:?} accepted {bad}");
            }
        }
        let groups = json!({ "defaultSetting": "allow all", "groupExceptions": [{ "groupName": "isInsuredPerson" }] });
        PermissionConfigType::Pro.validate(&groups).unwrap();
        let repeated = json!({ "defaultSetting": "allow all", "groupExceptions": [{ "groupName": "isInsuredPerson" }, { "groupName": "isInsuredPerson" }] });
        assert!(PermissionConfigType::Pro.validate(&repeated).is_err(), "groupExceptions are unique items");
    }

    #[test]
    fn exceptions_invert_the_default() {
        let (staff, insured) = (AccountKind::Staff, AccountKind::Insured);
        let alice = user_id!("@alice:other.example");
        let bob = user_id!("@bob:third.example");

        let allow = config(json!({ "defaultSetting": "allow all", "userExceptions": { "@alice:other.example": {} } }));
        assert!(!allow.allows(alice, staff));
        assert!(allow.allows(bob, staff));

        let block = config(json!({ "defaultSetting": "block all", "serverExceptions": { "other.example": {} } }));
        assert!(block.allows(alice, staff));
        assert!(!block.allows(bob, staff));

        let no_insured = config(json!({ "defaultSetting": "allow all", "groupExceptions": [{ "groupName": "isInsuredPerson" }] }));
        assert!(!no_insured.allows(bob, insured));
        assert!(no_insured.allows(bob, staff));
    }
}
