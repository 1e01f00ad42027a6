//! `/sync` and the filters it uses (`/user/{userId}/filter`).

use std::time::Duration;

use axum::Router;
use ruma::{
    api::client::{
        filter::{FilterDefinition, create_filter, get_filter},
        sync::sync_events::{self, v3::Filter},
    },
    presence::PresenceState,
};

use crate::{
    http::{ApiError, ApiResult, Args, RouterExt, raw_json},
    e2ee,
    server::Homeserver,
    storage::{account_data, presence::StatusMsg},
    sync::{engine, filter, token::{StreamRange, SyncToken}},
};

pub fn routes(router: Router<Homeserver>) -> Router<Homeserver> {
    router.endpoint(sync).endpoint(create).endpoint(get)
}

async fn sync(server: Homeserver, args: Args<sync_events::v3::Request>) -> ApiResult<sync_events::v3::Response> {
    let session = args.session()?;
    let request = &args.body;
    let mut since = request.since.as_deref().map(str::parse::<SyncToken>).transpose()?;
    if let Some(since) = &since {
        since.follow_map(&server.db).await?;
    }
    let definition = match &request.filter {
        None => FilterDefinition::default(),
        Some(Filter::FilterDefinition(definition)) => definition.clone(),
        Some(Filter::FilterId(id)) => filter::resolve(&server, &session.user_id, id).await?,
        Some(_) => FilterDefinition::default(),
    };
    filter::check_size(&definition, server.config.limits.max_filter_entries)?;
    if request.set_presence != PresenceState::Offline {
        crate::presence::set(&server, &session.user_id, &request.set_presence, StatusMsg::Keep).await?;
    }

    let max_wait = Duration::from_millis(server.config.limits.max_sync_timeout_ms);
    let deadline = tokio::time::Instant::now() + request.timeout.unwrap_or_default().min(max_wait);
    let subscription = server.notifier.subscribe(&session.user_id);
    loop {
        // Registered before reading, so a commit in between still wakes us.
        let notified = subscription.notified();
        let upto = SyncToken::current(&server).await?;
        let sync_request = engine::SyncRequest {
            session,
            since: since.as_ref(),
            filter: &definition,
            full_state: request.full_state,
            state_after: request.use_state_after,
        };
        let response = respond(&server, &sync_request, upto.clone()).await?;
        let done = since.is_none() || request.full_state || !is_empty(&response) || tokio::time::Instant::now() >= deadline;
        if done {
            return Ok(response);
        }
        // Nothing new for this user up to `upto`: wait from there.
        since = Some(upto);
        let waiting = server.metrics.sync.start_waiting();
        let woken = server.long_poll(deadline, notified).await;
        waiting.end(woken);
        if !woken {
            let upto = SyncToken::current(&server).await?;
            let sync_request = engine::SyncRequest { session, since: since.as_ref(), filter: &definition, full_state: false, state_after: request.use_state_after };
            return respond(&server, &sync_request, upto).await;
        }
    }
}

/// The room and account part from the sync engine plus the device's
/// encryption updates; the token records how far to-device delivery got.
async fn respond(server: &Homeserver, request: &engine::SyncRequest<'_>, mut upto: SyncToken) -> ApiResult<sync_events::v3::Response> {
    let to_device_since = request.since.map(|since| since.to_device_pos(&server.db, &request.session.user_id));
    let e2ee = e2ee::sync_updates(server, request.session, StreamRange { since: request.since, upto: &upto }, to_device_since).await?;
    upto.to_device = Some(e2ee.to_device_upto);
    let mut response = engine::build(server, request, &upto).await?;
    response.to_device.events = e2ee.to_device.iter().map(raw_json).collect();
    response.device_lists.changed = e2ee.changed;
    response.device_lists.left = e2ee.left;
    response.device_one_time_keys_count = e2ee.one_time_keys_count.into_iter().map(|(algorithm, count)| (algorithm.into(), count)).collect();
    response.device_unused_fallback_key_types = Some(e2ee.unused_fallback_key_types.into_iter().map(Into::into).collect());
    Ok(response)
}

/// Whether a response carries nothing new (a long-poll keeps waiting then).
fn is_empty(response: &sync_events::v3::Response) -> bool {
    engine::is_empty(response) && response.to_device.is_empty() && response.device_lists.is_empty()
}

async fn create(server: Homeserver, args: Args<create_filter::v3::Request>) -> ApiResult<create_filter::v3::Response> {
    let session = args.session()?;
    if args.body.user_id != session.user_id {
        return Err(ApiError::forbidden("You may only create filters for yourself"));
    }
    filter::check_size(&args.body.filter, server.config.limits.max_filter_entries)?;
    let json = serde_json::to_value(&args.body.filter)?;
    let id = account_data::add_filter(server.db.user_shard(&session.user_id), &session.user_id, &json).await?;
    Ok(create_filter::v3::Response::new(id.to_string()))
}

async fn get(server: Homeserver, args: Args<get_filter::v3::Request>) -> ApiResult<get_filter::v3::Response> {
    let session = args.session()?;
    if args.body.user_id != session.user_id {
        return Err(ApiError::forbidden("You may only read your own filters"));
    }
    let definition = filter::resolve(&server, &session.user_id, &args.body.filter_id).await?;
    Ok(get_filter::v3::Response::new(definition))
}
