//! Push rules: `/pushrules/` and `/pushrules/global/{kind}/{ruleId}` with
//! its `enabled` and `actions`. A user's rules are one ruleset: the
//! server-default rules plus their own. It is stored whole, and every
//! change is also written as `m.push_rules` account data so the user's
//! other devices see it through /sync.

use axum::Router;
use ruma::{
    UserId,
    api::{
        client::push::{
            PushRule, delete_pushrule, get_pushrule, get_pushrule_actions, get_pushrule_enabled, get_pushrules_all,
            get_pushrules_global_scope, set_pushrule, set_pushrule_actions, set_pushrule_enabled,
        },
        error::ErrorKind,
    },
    events::{StaticEventContent, push_rules::PushRulesEventContent},
    push::{AnyPushRule, InsertPushRuleError, RemovePushRuleError, RuleKind, Ruleset},
};
use super::account_data::SettingsWriter;
use crate::{
    http::{ApiError, ApiResult, Args, RouterExt},
    push::{account_data_content, ruleset},
    server::Homeserver,
    storage::account_data,
};

pub fn routes(router: Router<Homeserver>) -> Router<Homeserver> {
    router
        .endpoint(get_all)
        .endpoint(get_global)
        .endpoint(get_rule)
        .endpoint(set_rule)
        .endpoint(delete_rule)
        .endpoint(get_enabled)
        .endpoint(set_enabled)
        .endpoint(get_actions)
        .endpoint(set_actions)
}

/// Applies `change` to the user's ruleset under their settings lock, then
/// stores the result and publishes it as account data.
async fn modify(server: &Homeserver, user_id: &UserId, change: impl FnOnce(&mut Ruleset) -> ApiResult<()>) -> ApiResult<()> {
    let mut writer = SettingsWriter::open(server, user_id).await?;
    let mut rules = ruleset(writer.conn(), user_id).await?;
    change(&mut rules)?;
    account_data::set_push_rules(writer.conn(), user_id, &serde_json::to_value(&rules)?).await?;
    writer.set(None, PushRulesEventContent::TYPE, &account_data_content(rules)?).await?;
    writer.commit().await
}

fn rule_not_found() -> ApiError {
    ApiError::not_found("Unknown push rule")
}

/// One rule of the caller's ruleset; 404 if there is none of that kind and id.
async fn find_rule(server: &Homeserver, user_id: &UserId, kind: RuleKind, rule_id: &str) -> ApiResult<AnyPushRule> {
    let rules = ruleset(server.db.user_shard(user_id), user_id).await?;
    rules.get(kind, rule_id).map(|rule| rule.to_owned()).ok_or_else(rule_not_found)
}

async fn get_all(server: Homeserver, args: Args<get_pushrules_all::v3::Request>) -> ApiResult<get_pushrules_all::v3::Response> {
    let user_id = &args.session()?.user_id;
    Ok(get_pushrules_all::v3::Response::new(ruleset(server.db.user_shard(user_id), user_id).await?))
}

async fn get_global(server: Homeserver, args: Args<get_pushrules_global_scope::v3::Request>) -> ApiResult<get_pushrules_global_scope::v3::Response> {
    let user_id = &args.session()?.user_id;
    Ok(get_pushrules_global_scope::v3::Response::new(ruleset(server.db.user_shard(user_id), user_id).await?))
}

async fn get_rule(server: Homeserver, args: Args<get_pushrule::v3::Request>) -> ApiResult<get_pushrule::v3::Response> {
    let user_id = &args.session()?.user_id;
    let rule = find_rule(&server, user_id, args.body.kind.clone(), &args.body.rule_id).await?;
    Ok(get_pushrule::v3::Response::new(PushRule::from(rule)))
}

/// Creates or replaces a user rule, placed by `before`/`after` when given.
async fn set_rule(server: Homeserver, args: Args<set_pushrule::v3::Request>) -> ApiResult<set_pushrule::v3::Response> {
    let user_id = &args.session()?.user_id;
    let request = &args.body;
    modify(&server, user_id, |rules| {
        rules.insert(request.rule.clone(), request.after.as_deref(), request.before.as_deref()).map_err(insert_error)
    })
    .await?;
    Ok(set_pushrule::v3::Response::new())
}

/// The spec's example answer for an unknown `before`/`after` rule is 400
/// `M_UNKNOWN`; a reserved or malformed rule id or placement is a bad
/// parameter.
fn insert_error(err: InsertPushRuleError) -> ApiError {
    match err {
        InsertPushRuleError::UnknownRuleId => ApiError::new(http::StatusCode::BAD_REQUEST, ErrorKind::Unknown, err.to_string()),
        _ => ApiError::invalid_param(err.to_string()),
    }
}

/// Deletes a user rule; server-default rules can only be disabled.
async fn delete_rule(server: Homeserver, args: Args<delete_pushrule::v3::Request>) -> ApiResult<delete_pushrule::v3::Response> {
    let user_id = &args.session()?.user_id;
    let request = &args.body;
    modify(&server, user_id, |rules| {
        rules.remove(request.kind.clone(), &request.rule_id).map_err(|err| match err {
            RemovePushRuleError::NotFound => rule_not_found(),
            _ => ApiError::invalid_param(err.to_string()),
        })
    })
    .await?;
    Ok(delete_pushrule::v3::Response::new())
}

async fn get_enabled(server: Homeserver, args: Args<get_pushrule_enabled::v3::Request>) -> ApiResult<get_pushrule_enabled::v3::Response> {
    let user_id = &args.session()?.user_id;
    let rule = find_rule(&server, user_id, args.body.kind.clone(), &args.body.rule_id).await?;
    Ok(get_pushrule_enabled::v3::Response::new(rule.enabled()))
}

async fn set_enabled(server: Homeserver, args: Args<set_pushrule_enabled::v3::Request>) -> ApiResult<set_pushrule_enabled::v3::Response> {
    let user_id = &args.session()?.user_id;
    let request = &args.body;
    modify(&server, user_id, |rules| {
        rules.set_enabled(request.kind.clone(), &request.rule_id, request.enabled).map_err(|_| rule_not_found())
    })
    .await?;
    Ok(set_pushrule_enabled::v3::Response::new())
}

async fn get_actions(server: Homeserver, args: Args<get_pushrule_actions::v3::Request>) -> ApiResult<get_pushrule_actions::v3::Response> {
    let user_id = &args.session()?.user_id;
    let rule = find_rule(&server, user_id, args.body.kind.clone(), &args.body.rule_id).await?;
    Ok(get_pushrule_actions::v3::Response::new(rule.actions().to_vec()))
}

async fn set_actions(server: Homeserver, args: Args<set_pushrule_actions::v3::Request>) -> ApiResult<set_pushrule_actions::v3::Response> {
    let user_id = &args.session()?.user_id;
    let request = &args.body;
    modify(&server, user_id, |rules| {
        rules.set_actions(request.kind.clone(), &request.rule_id, request.actions.clone()).map_err(|_| rule_not_found())
    })
    .await?;
    Ok(set_pushrule_actions::v3::Response::new())
}
