//! Simplified sliding sync (MSC4186):
//! `POST /_matrix/client/unstable/org.matrix.simplified_msc3575/sync`.
//! The long-poll around `sync::sliding`, the way `/sync` waits.

use std::time::Duration;

use axum::Router;
use ruma::{api::client::sync::sync_events::v5, presence::PresenceState};

use crate::{
    http::{ApiResult, Args, RouterExt},
    server::Homeserver,
    storage::presence::StatusMsg,
    sync::{
        sliding::{self, Connection, Pos},
        token::SyncToken,
    },
};

pub fn routes(router: Router<Homeserver>) -> Router<Homeserver> {
    router.endpoint(sync)
}

/// Answers at once when the connection is new or there is news; otherwise
/// waits for a notification or the timeout and builds again from the same
/// position (nothing was sent in between).
async fn sync(server: Homeserver, args: Args<v5::Request>) -> ApiResult<v5::Response> {
    let session = args.session()?;
    let request = &args.body;
    if request.set_presence != PresenceState::Offline {
        crate::presence::set(&server, &session.user_id, &request.set_presence, StatusMsg::Keep).await?;
    }
    // Subscribed and listening before the first read, so a commit in
    // between still wakes the long-poll.
    let subscription = server.notifier.subscribe(&session.user_id);
    let mut notified = subscription.notified();
    let pos = request.pos.as_deref().map(Pos::parse).transpose()?;
    if let Some(pos) = &pos {
        pos.token.follow_map(&server.db).await?;
    }
    let mut upto = SyncToken::current(&server).await?;
    let conn_id = request.conn_id.as_deref().unwrap_or_default();
    let connection = Connection::open(&server, session, conn_id, pos, &upto).await?;

    let max_wait = Duration::from_millis(server.config.limits.max_sync_timeout_ms);
    let deadline = tokio::time::Instant::now() + request.timeout.unwrap_or_default().min(max_wait);
    loop {
        let update = sliding::update(&server, session, &connection, request, &upto).await?;
        let new_connection = connection.since().is_none();
        if new_connection || !update.is_empty() || tokio::time::Instant::now() >= deadline {
            return sliding::finish(&server, &connection, update, &upto).await;
        }
        let waiting = server.metrics.sync.start_waiting();
        let woken = server.long_poll(deadline, notified).await;
        waiting.end(woken);
        notified = subscription.notified();
        upto = SyncToken::current(&server).await?;
        if !woken {
            let update = sliding::update(&server, session, &connection, request, &upto).await?;
            return sliding::finish(&server, &connection, update, &upto).await;
        }
    }
}
