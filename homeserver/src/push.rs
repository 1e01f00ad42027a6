//! Push rules: each user's ruleset (server defaults plus their own rules).
//! Evaluation and the push sender join this module with the push issue.

use ruma::{UserId, events::push_rules::PushRulesEventContent, push::Ruleset};
use serde_json::Value as JsonValue;
use sqlx::PgExecutor;

use crate::{http::ApiResult, storage::account_data};

/// The user's ruleset. The stored one has its server-default rules brought
/// up to the current defaults (keeping the user's `enabled` and `actions`
/// for them); a user who never changed a rule has the defaults.
pub async fn ruleset(db: impl PgExecutor<'_>, user_id: &UserId) -> ApiResult<Ruleset> {
    let defaults = Ruleset::server_default(user_id);
    let Some(stored) = account_data::push_rules(db, user_id).await? else {
        return Ok(defaults);
    };
    let mut ruleset: Ruleset = serde_json::from_value(stored)?;
    ruleset.update_with_server_default(defaults);
    Ok(ruleset)
}

/// The `m.push_rules` account data content for a ruleset.
pub fn account_data_content(ruleset: Ruleset) -> ApiResult<JsonValue> {
    Ok(serde_json::to_value(PushRulesEventContent::new(ruleset))?)
}
