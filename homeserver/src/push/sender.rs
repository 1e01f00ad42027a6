//! Delivers queued notifications to push gateways (Push Gateway API,
//! `POST /_matrix/push/v1/notify`), one request per pusher.
//!
//! TI-M allows a push to carry the room id and the event id only: the
//! request has those, the badge count and the device (app id, pushkey, the
//! pusher's data without its URL, tweaks) — never the sender, the content
//! or the room's name. That is the spec's `event_id_only` format, which is
//! the only one this server sends; the app fetches the event itself.
//!
//! Network errors, timeouts, 429 and 5xx answers are retried with
//! exponential backoff, at most `MAX_ATTEMPTS` times. A pushkey the gateway
//! lists as `rejected` has its pusher deleted, as the spec says. Nothing is
//! removed from the queue before one of these ends, so a crash means the
//! notification is sent again, never that it is lost.

use std::time::Duration;

use anyhow::Context as _;
use futures::{StreamExt as _, TryStreamExt as _};
use ruma::{
    OwnedEventId, OwnedRoomId, OwnedUserId, SecondsSinceUnixEpoch, UInt, UserId,
    api::{
        IncomingResponse as _, OutgoingRequest as _,
        push_gateway::send_event_notification::v1::{self as notify, Device, Notification, NotificationCounts, NotificationPriority},
    },
    push::HttpPusherData,
};
use sqlx::PgPool;
use tokio::sync::Notify;

use crate::{
    server::Homeserver,
    storage::{
        self, push_actions,
        push_queue::{self, QueuedPush},
        pushers::{self, PusherRow},
    },
};

/// The path every push gateway URL ends in.
const NOTIFY_PATH: &str = "/_matrix/push/v1/notify";
/// Notifications read from the queue at a time.
const BATCH: usize = 64;
/// Requests in flight at once, so one slow gateway does not hold up others.
const CONCURRENCY: usize = 16;
/// Longest wait between looks at the queue when nothing is due; new
/// notifications wake the sender at once.
const IDLE_POLL: Duration = Duration::from_secs(30);
const GATEWAY_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Backoff after the first failure; it doubles with each further one.
const FIRST_RETRY: Duration = Duration::from_secs(1);
const MAX_RETRY: Duration = Duration::from_secs(10 * 60);
/// Deliveries tried before a notification is given up (about 40 minutes of
/// backoff: a push that late is of no use to anyone).
const MAX_ATTEMPTS: i32 = 12;

/// The base URL to send Push Gateway API requests to, if `url` is an
/// http(s) URL whose path ends in `/_matrix/push/v1/notify` (and has no
/// query or fragment).
///
/// With a non-empty `allowed` list (the operator's `push.allowed_gateways`)
/// only those gateways qualify: without it any user could make the server
/// POST to any address it can reach.
pub fn gateway_base_url<'u>(url: &'u str, allowed: &[String]) -> Option<&'u str> {
    let parsed = url::Url::parse(url).ok()?;
    let valid = matches!(parsed.scheme(), "http" | "https") && parsed.host().is_some() && parsed.query().is_none() && parsed.fragment().is_none();
    let base = valid.then(|| url.strip_suffix(NOTIFY_PATH)).flatten()?;
    (allowed.is_empty() || allowed.iter().any(|gateway| gateway.trim_end_matches('/') == base)).then_some(base)
}

/// How a delivery ended.
enum Delivery {
    Accepted,
    /// The gateway refuses this pushkey for good.
    Rejected,
    Failed { reason: String, retry: bool },
}

/// The sender of one database's queue, run by the lease holder.
pub struct Sender<'a> {
    server: &'a Homeserver,
    db: &'a PgPool,
    /// Notified when the processor queued notifications.
    queued: &'a Notify,
    http: reqwest::Client,
}

impl<'a> Sender<'a> {
    pub fn new(server: &'a Homeserver, db: &'a PgPool, queued: &'a Notify) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(GATEWAY_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            // A gateway answers; it does not send the server elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .context("building the push gateway client")?;
        Ok(Self { server, db, queued, http })
    }

    /// Delivers due notifications until a database error; sleeps until the
    /// next one is due or new ones are queued.
    pub async fn run(&self) -> anyhow::Result<()> {
        loop {
            let due = push_queue::due(self.db, storage::now_ms(), i64::try_from(BATCH)?).await?;
            let full = due.len() == BATCH;
            futures::stream::iter(due).map(Ok).try_for_each_concurrent(CONCURRENCY, |push| self.deliver(push)).await?;
            if full {
                continue;
            }
            let wait = match push_queue::next_due(self.db).await? {
                Some(due_at) => Duration::from_millis(u64::try_from(due_at - storage::now_ms()).unwrap_or(0)).min(IDLE_POLL),
                None => IDLE_POLL,
            };
            tokio::select! {
                () = self.queued.notified() => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Tries one notification and records the outcome in the queue.
    async fn deliver(&self, push: QueuedPush) -> anyhow::Result<()> {
        let Ok(user_id) = OwnedUserId::try_from(push.user_id.as_str()) else {
            return Ok(push_queue::remove(self.db, &push).await?);
        };
        let user_db = self.server.db.user_shard(&user_id);
        // The pusher may have been deleted (or made an email pusher) since.
        let pusher = pushers::get(user_db, &user_id, &push.app_id, &push.pushkey).await?;
        let Some(pusher) = pusher.filter(|pusher| pusher.kind == pushers::KIND_HTTP) else {
            return Ok(push_queue::remove(self.db, &push).await?);
        };
        let badge = badge(self.server, &user_id).await?;
        match self.post(&push, &pusher, badge).await {
            Delivery::Accepted => push_queue::remove(self.db, &push).await?,
            Delivery::Rejected => {
                tracing::info!(%user_id, app_id = %push.app_id, "the push gateway rejected a pushkey; deleting the pusher");
                pushers::delete(user_db, &user_id, &push.app_id, &push.pushkey).await?;
                push_queue::remove(self.db, &push).await?;
            }
            Delivery::Failed { reason, retry: true } if push.attempts + 1 < MAX_ATTEMPTS => {
                let delay = backoff(push.attempts);
                tracing::debug!(%user_id, app_id = %push.app_id, %reason, ?delay, "push delivery failed; retrying");
                let next = storage::now_ms().saturating_add(i64::try_from(delay.as_millis()).unwrap_or(i64::MAX));
                push_queue::retry_at(self.db, &push, next).await?;
            }
            Delivery::Failed { reason, .. } => {
                tracing::warn!(%user_id, app_id = %push.app_id, %reason, attempts = push.attempts + 1, "giving up a push notification");
                push_queue::remove(self.db, &push).await?;
            }
        }
        Ok(())
    }

    /// One request to the pusher's gateway.
    async fn post(&self, push: &QueuedPush, pusher: &PusherRow, badge: UInt) -> Delivery {
        let request = match notify_request(push, pusher, badge, &self.server.config.push.allowed_gateways) {
            Ok(request) => request,
            Err(err) => return Delivery::Failed { reason: format!("{err:#}"), retry: false },
        };
        let response = match self.http.execute(request).await {
            Ok(response) => response,
            Err(err) => return Delivery::Failed { reason: err.to_string(), retry: true },
        };
        let status = response.status();
        if !status.is_success() {
            let retry = status == http::StatusCode::TOO_MANY_REQUESTS || status.is_server_error();
            return Delivery::Failed { reason: format!("the gateway answered {status}"), retry };
        }
        // A 2xx without a readable body still accepted the notification.
        let rejected = match response.bytes().await {
            Ok(body) => http::Response::builder()
                .status(status)
                .body(body)
                .ok()
                .and_then(|response| notify::Response::try_from_http_response(response).ok())
                .map(|response| response.rejected)
                .unwrap_or_default(),
            Err(_) => Vec::new(),
        };
        if rejected.contains(&pusher.pushkey) { Delivery::Rejected } else { Delivery::Accepted }
    }
}

/// The notify request for one pusher: ids, counts and the device only.
fn notify_request(push: &QueuedPush, pusher: &PusherRow, badge: UInt, allowed: &[String]) -> anyhow::Result<reqwest::Request> {
    let data: HttpPusherData = serde_json::from_value(pusher.data.clone()).context("the pusher's data")?;
    let base_url = gateway_base_url(&data.url, allowed).context("the pusher's URL is not an allowed push gateway URL")?.to_owned();
    let mut device = Device::new(pusher.app_id.clone(), pusher.pushkey.clone());
    device.pushkey_ts = UInt::try_from(pusher.pushkey_ts / 1000).ok().map(SecondsSinceUnixEpoch);
    device.tweaks = serde_json::from_value(push.tweaks.clone()).context("the queued tweaks")?;
    // The gateway gets the pusher's data without the URL it was sent to.
    device.data = data.into();

    let mut notification = Notification::new(vec![device]);
    notification.event_id = Some(OwnedEventId::try_from(push.event_id.as_str())?);
    notification.room_id = Some(OwnedRoomId::try_from(push.room_id.as_str())?);
    notification.counts = NotificationCounts::new(badge, UInt::MIN);
    notification.prio = if push.high_priority { NotificationPriority::High } else { NotificationPriority::Low };
    let request = notify::Request::new(notification).try_into_http_request::<Vec<u8>>(&base_url, (), ())?;
    Ok(reqwest::Request::try_from(request)?)
}

/// The user's unread notifications across their rooms: the app's badge.
async fn badge(server: &Homeserver, user_id: &UserId) -> anyhow::Result<UInt> {
    let mut total: u64 = 0;
    for shard in server.db.shards() {
        for room in push_actions::rooms_with_notifications(&shard.pool, user_id).await? {
            let Ok(room_id) = OwnedRoomId::try_from(room) else { continue };
            // Actions exist only for events after the user joined, so
            // without a receipt every one of them is unread.
            let counts = super::unread_notifications(server.db.room_shard(&room_id), &room_id, user_id, i64::MIN).await?;
            total = total.saturating_add(counts.notification_count.map_or(0, u64::from));
        }
    }
    Ok(UInt::new_saturating(total))
}

/// The wait after the `failures`-th failed delivery (0 = the first).
fn backoff(failures: i32) -> Duration {
    let doublings = u32::try_from(failures).unwrap_or(0).min(16);
    FIRST_RETRY.saturating_mul(1 << doublings).min(MAX_RETRY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_urls_must_end_in_the_notify_path() {
        assert_eq!(gateway_base_url("https://push.example.org/_matrix/push/v1/notify", &[]), Some("https://push.example.org"));
        assert_eq!(gateway_base_url("http://127.0.0.1:8080/prefix/_matrix/push/v1/notify", &[]), Some("http://127.0.0.1:8080/prefix"));
        let allowed = ["https://push.example.org/".to_owned()];
        assert_eq!(gateway_base_url("https://push.example.org/_matrix/push/v1/notify", &allowed), Some("https://push.example.org"));
        assert_eq!(gateway_base_url("http://10.0.0.1/_matrix/push/v1/notify", &allowed), None, "only allowed gateways");
        for invalid in [
            "https://push.example.org/_matrix/push/v1/notify?x=1",
            "https://push.example.org/_matrix/push/v1/notify#x",
            "https://push.example.org/notify",
            "ftp://push.example.org/_matrix/push/v1/notify",
            "/_matrix/push/v1/notify",
            "not a url",
        ] {
            assert_eq!(gateway_base_url(invalid, &[]), None, "{invalid}");
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        assert_eq!(backoff(0), Duration::from_secs(1));
        assert_eq!(backoff(1), Duration::from_secs(2));
        assert_eq!(backoff(3), Duration::from_secs(8));
        assert_eq!(backoff(MAX_ATTEMPTS), MAX_RETRY);
        assert_eq!(backoff(-1), Duration::from_secs(1));
    }
}
