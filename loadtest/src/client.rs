//! A thin Matrix client over the Client-Server API: the requests the
//! scenarios make, each timed into [`Metrics`] under an endpoint name.
//!
//! Responses are parsed into small structs with only the fields the load
//! test reads (not ruma's full types): the load generator shares the
//! machine with the server, and parsing whole `/sync` bodies would take CPU
//! the server under test should have.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, bail};
use hmac::{Hmac, Mac as _};
use reqwest::Method;
use serde::{Deserialize, de::DeserializeOwned};
use serde_json::{Value as JsonValue, json};
use url::Url;

use crate::{metrics::Metrics, population::Account};

/// A client for one homeserver URL, shared by many simulated users.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base_url: Url,
    metrics: Arc<Metrics>,
}

/// The parts of a `/sync` response the scenarios look at.
#[derive(Debug, Deserialize)]
pub struct SyncResponse {
    pub next_batch: String,
    #[serde(default)]
    pub rooms: SyncRooms,
    #[serde(default)]
    pub to_device: Events,
}

#[derive(Debug, Default, Deserialize)]
pub struct SyncRooms {
    #[serde(default)]
    pub join: HashMap<String, JoinedRoom>,
}

#[derive(Debug, Default, Deserialize)]
pub struct JoinedRoom {
    #[serde(default)]
    pub timeline: Events,
}

#[derive(Debug, Default, Deserialize)]
pub struct Events {
    #[serde(default)]
    pub events: Vec<Event>,
}

#[derive(Debug, Deserialize)]
pub struct Event {
    #[serde(default)]
    pub sender: String,
    #[serde(default)]
    pub content: JsonValue,
}

/// Content field carrying the sender's clock (µs since the epoch) in every
/// message and to-device event the load test sends, so the receiver can
/// measure delivery. Sender and receiver run in this one process.
pub const SENT_AT: &str = "loadtest_sent_us";

impl Event {
    /// How long ago a load-test event was sent, if it is one.
    pub fn age(&self) -> Option<Duration> {
        let sent = self.content.get(SENT_AT)?.as_u64()?;
        Some(Duration::from_micros(now_us().saturating_sub(sent)))
    }
}

/// Microseconds since the Unix epoch.
pub fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

/// The filter of every initial sync: what a mobile client asks for first
/// (few timeline events per room), so initial syncs of staff accounts with
/// thousands of rooms stay comparable between servers.
pub const INITIAL_SYNC_FILTER: &str = r#"{"room":{"timeline":{"limit":5}}}"#;

impl Client {
    /// A client for `base_url`, which must be a loopback address: the load
    /// test never targets another machine.
    pub fn new(base_url: &str, metrics: Arc<Metrics>) -> anyhow::Result<Self> {
        let base_url = Url::parse(base_url).with_context(|| format!("homeserver URL {base_url}"))?;
        let loopback = match base_url.host() {
            Some(url::Host::Domain(name)) => name == "localhost",
            Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
            Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
            None => false,
        };
        if !loopback {
            bail!("{base_url} is not a loopback address; the load test only drives servers on this machine");
        }
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(usize::MAX)
            .connect_timeout(Duration::from_secs(10))
            .build()?;
        Ok(Self { http, base_url, metrics })
    }

    /// The server's URL for `path` (segments, percent-encoded) and `query`.
    fn url(&self, path: &[&str], query: &[(&str, &str)]) -> anyhow::Result<Url> {
        let mut url = self.base_url.clone();
        url.path_segments_mut().map_err(|()| anyhow::anyhow!("base URL cannot have a path"))?.pop_if_empty().extend(path);
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        Ok(url)
    }

    /// One timed request; non-2xx answers are errors of `endpoint`.
    async fn call<T: DeserializeOwned>(&self, endpoint: &'static str, method: Method, url: Url, token: Option<&str>, body: Option<&JsonValue>, timeout: Duration) -> anyhow::Result<T> {
        let mut request = self.http.request(method, url).timeout(timeout);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let started = Instant::now();
        let result = async {
            let response = request.send().await?;
            let status = response.status();
            let bytes = response.bytes().await?;
            if !status.is_success() {
                bail!("{endpoint}: HTTP {status}: {}", String::from_utf8_lossy(&bytes[..bytes.len().min(300)]));
            }
            serde_json::from_slice(&bytes).with_context(|| format!("{endpoint}: response body"))
        }
        .await;
        self.metrics.request(endpoint, started.elapsed(), result.is_ok());
        result
    }

    /// `POST /login` with a password; a new device each time.
    pub async fn login(&self, user_id: &str, password: &str) -> anyhow::Result<Account> {
        #[derive(Deserialize)]
        struct LoginResponse {
            user_id: String,
            device_id: String,
            access_token: String,
        }
        let body = json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": user_id }, "password": password, "initial_device_display_name": "loadtest" });
        let response: LoginResponse = self.call("login", Method::POST, self.url(&["_matrix", "client", "v3", "login"], &[])?, None, Some(&body), Duration::from_secs(120)).await?;
        Ok(Account { user_id: response.user_id, device_id: response.device_id, access_token: response.access_token })
    }

    /// `GET /sync`: initial (no `since`, with [`INITIAL_SYNC_FILTER`]) or
    /// a long poll of up to `timeout`.
    pub async fn sync(&self, token: &str, since: Option<&str>, timeout: Duration) -> anyhow::Result<SyncResponse> {
        let timeout_ms = timeout.as_millis().to_string();
        let mut query = vec![("timeout", timeout_ms.as_str())];
        let endpoint = match since {
            Some(since) => {
                query.push(("since", since));
                "sync (long-poll)"
            }
            None => {
                query.push(("filter", INITIAL_SYNC_FILTER));
                "sync (initial)"
            }
        };
        self.call(endpoint, Method::GET, self.url(&["_matrix", "client", "v3", "sync"], &query)?, Some(token), None, timeout + Duration::from_secs(120)).await
    }

    /// `PUT /rooms/{room}/send/m.room.message/{txn}` with a text message
    /// stamped with the send time.
    pub async fn send_message(&self, token: &str, room_id: &str, txn_id: &str) -> anyhow::Result<()> {
        let body = json!({ "msgtype": "m.text", "body": format!("Guten Tag, loadtest {txn_id}"), SENT_AT: now_us() });
        let _: JsonValue = self.call("send message", Method::PUT, self.url(&["_matrix", "client", "v3", "rooms", room_id, "send", "m.room.message", txn_id], &[])?, Some(token), Some(&body), Duration::from_secs(60)).await?;
        Ok(())
    }

    /// `POST /keys/upload`.
    pub async fn upload_keys(&self, token: &str, body: &JsonValue) -> anyhow::Result<()> {
        let _: JsonValue = self.call("keys/upload", Method::POST, self.url(&["_matrix", "client", "v3", "keys", "upload"], &[])?, Some(token), Some(body), Duration::from_secs(60)).await?;
        Ok(())
    }

    /// `POST /keys/query` for the devices of `user_id`.
    pub async fn query_keys(&self, token: &str, user_id: &str) -> anyhow::Result<()> {
        let body = json!({ "device_keys": { user_id: [] } });
        let _: JsonValue = self.call("keys/query", Method::POST, self.url(&["_matrix", "client", "v3", "keys", "query"], &[])?, Some(token), Some(&body), Duration::from_secs(60)).await?;
        Ok(())
    }

    /// `POST /keys/claim` of one one-time key of a device.
    pub async fn claim_key(&self, token: &str, user_id: &str, device_id: &str) -> anyhow::Result<()> {
        let body = json!({ "one_time_keys": { user_id: { device_id: "signed_curve25519" } } });
        let _: JsonValue = self.call("keys/claim", Method::POST, self.url(&["_matrix", "client", "v3", "keys", "claim"], &[])?, Some(token), Some(&body), Duration::from_secs(60)).await?;
        Ok(())
    }

    /// `PUT /sendToDevice/m.room.encrypted/{txn}` to one device, stamped
    /// with the send time.
    pub async fn send_to_device(&self, token: &str, txn_id: &str, user_id: &str, device_id: &str, content: JsonValue) -> anyhow::Result<()> {
        let mut content = content;
        content[SENT_AT] = now_us().into();
        let body = json!({ "messages": { user_id: { device_id: content } } });
        let _: JsonValue = self.call("sendToDevice", Method::PUT, self.url(&["_matrix", "client", "v3", "sendToDevice", "m.room.encrypted", txn_id], &[])?, Some(token), Some(&body), Duration::from_secs(60)).await?;
        Ok(())
    }

    /// Registers an account with the shared-secret admin API (Synapse's
    /// `/_synapse/admin/v1/register`, which our server implements too).
    pub async fn register_with_shared_secret(&self, shared_secret: &str, localpart: &str, password: &str) -> anyhow::Result<Account> {
        #[derive(Deserialize)]
        struct Nonce {
            nonce: String,
        }
        #[derive(Deserialize)]
        struct Registered {
            user_id: String,
            device_id: String,
            access_token: String,
        }
        let path = ["_synapse", "admin", "v1", "register"];
        let Nonce { nonce } = self.call("admin register (nonce)", Method::GET, self.url(&path, &[])?, None, None, Duration::from_secs(30)).await?;
        let mut mac = Hmac::<sha1::Sha1>::new_from_slice(shared_secret.as_bytes())?;
        for (i, part) in [nonce.as_str(), localpart, password, "notadmin"].iter().enumerate() {
            if i > 0 {
                mac.update(b"\0");
            }
            mac.update(part.as_bytes());
        }
        let body = json!({ "nonce": nonce, "username": localpart, "password": password, "admin": false, "mac": hex::encode(mac.finalize().into_bytes()) });
        let registered: Registered = self.call("admin register", Method::POST, self.url(&path, &[])?, None, Some(&body), Duration::from_secs(120)).await?;
        Ok(Account { user_id: registered.user_id, device_id: registered.device_id, access_token: registered.access_token })
    }

    /// `POST /createRoom`: a private direct chat with one invitee.
    pub async fn create_direct_room(&self, token: &str, invitee: &str) -> anyhow::Result<String> {
        #[derive(Deserialize)]
        struct Created {
            room_id: String,
        }
        let body = json!({ "preset": "private_chat", "is_direct": true, "invite": [invitee] });
        let created: Created = self.call("createRoom", Method::POST, self.url(&["_matrix", "client", "v3", "createRoom"], &[])?, Some(token), Some(&body), Duration::from_secs(60)).await?;
        Ok(created.room_id)
    }

    /// `POST /join/{room}`.
    pub async fn join(&self, token: &str, room_id: &str) -> anyhow::Result<()> {
        let _: JsonValue = self.call("join", Method::POST, self.url(&["_matrix", "client", "v3", "join", room_id], &[])?, Some(token), Some(&json!({})), Duration::from_secs(60)).await?;
        Ok(())
    }

    /// Whether the server answers `/versions` (for waiting on a start).
    pub async fn is_up(&self) -> bool {
        let url = self.base_url.join("_matrix/client/versions").ok();
        match url {
            Some(url) => self.http.get(url).timeout(Duration::from_secs(2)).send().await.is_ok_and(|r| r.status().is_success()),
            None => false,
        }
    }
}
