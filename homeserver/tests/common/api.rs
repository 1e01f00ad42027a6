//! Raw HTTP against the test server, for what a Matrix client library hides:
//! exact status codes and error codes, malformed bodies, UIA round trips.

use std::{
    fmt,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
};

use reqwest::{Method, StatusCode};
use serde_json::Value;

/// An HTTP client for one deployment, optionally acting as one user. With
/// several workers it spreads requests over them in turn, as a load
/// balancer without sticky sessions would.
#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    base_urls: Arc<Vec<String>>,
    next: Arc<AtomicUsize>,
    token: Option<String>,
}

/// What the server answered, kept whole so a failed assertion can show it.
pub struct Reply {
    pub method: Method,
    pub path: String,
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    /// The body as JSON; `Value::Null` when it is not JSON.
    pub body: Value,
    pub text: String,
}

impl Api {
    pub fn new(base_urls: Vec<String>) -> Self {
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .expect("building the HTTP client");
        Self { http, base_urls: Arc::new(base_urls), next: Arc::default(), token: None }
    }

    /// The same client, sending `token` as `Authorization: Bearer`.
    pub fn with_token(&self, token: impl Into<String>) -> Self {
        Self { token: Some(token.into()), ..self.clone() }
    }

    /// The same client without a token.
    pub fn anonymous(&self) -> Self {
        Self { token: None, ..self.clone() }
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.send(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Reply {
        self.send(Method::POST, path, Some(body.to_string().into_bytes())).await
    }

    pub async fn put(&self, path: &str, body: Value) -> Reply {
        self.send(Method::PUT, path, Some(body.to_string().into_bytes())).await
    }

    pub async fn delete(&self, path: &str, body: Value) -> Reply {
        self.send(Method::DELETE, path, Some(body.to_string().into_bytes())).await
    }

    /// Sends `body` as it is, labelled `application/json` whatever it holds.
    pub async fn send(&self, method: Method, path: &str, body: Option<Vec<u8>>) -> Reply {
        let base_url = &self.base_urls[self.next.fetch_add(1, Ordering::Relaxed) % self.base_urls.len()];
        let mut request = self.http.request(method.clone(), format!("{base_url}{path}"));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.header(reqwest::header::CONTENT_TYPE, "application/json").body(body);
        }
        let response = request.send().await.unwrap_or_else(|err| panic!("{method} {path}: {err}"));
        let (status, headers) = (response.status(), response.headers().clone());
        let text = response.text().await.unwrap_or_else(|err| panic!("{method} {path}: reading the body: {err}"));
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply { method, path: path.to_owned(), status, headers, body, text }
    }
}

/// Shortcuts for the calls most tests make on the way to what they test.
impl Api {
    /// `POST /createRoom`; returns the room id.
    pub async fn create_room(&self, body: Value) -> String {
        self.post("/_matrix/client/v3/createRoom", body).await.str("room_id")
    }

    /// `POST /rooms/{room_id}/join`.
    pub async fn join(&self, room_id: &str) -> Reply {
        self.post(&format!("/_matrix/client/v3/rooms/{}/join", enc(room_id)), serde_json::json!({})).await
    }

    /// `PUT /rooms/{room_id}/send/m.room.message/{txn}` with a text message.
    pub async fn send_text(&self, room_id: &str, body: &str) -> Reply {
        let path = format!("/_matrix/client/v3/rooms/{}/send/m.room.message/{}", enc(room_id), new_txn_id());
        self.put(&path, serde_json::json!({ "msgtype": "m.text", "body": body })).await
    }

    /// `GET /sync`, from `since` when given, long-polling up to `timeout_ms`.
    pub async fn sync(&self, since: Option<&str>, timeout_ms: u64) -> Reply {
        let since = since.map(|token| format!("&since={}", query(token))).unwrap_or_default();
        self.get(&format!("/_matrix/client/v3/sync?timeout={timeout_ms}{since}")).await
    }

    /// Long-polls `/sync` from `since`, following `next_batch`, until `done`
    /// accepts an answer, for at most `within`; returns every answer, the
    /// accepted one last. An early answer with nothing in it is allowed by
    /// the spec, so it is simply followed by the next poll.
    pub async fn sync_until(&self, since: &str, within: std::time::Duration, mut done: impl FnMut(&Reply) -> bool) -> Vec<Reply> {
        let deadline = std::time::Instant::now() + within;
        let mut since = since.to_owned();
        let mut replies = Vec::new();
        loop {
            let remaining = deadline.saturating_duration_since(std::time::Instant::now());
            assert!(!remaining.is_zero(), "/sync: nothing accepted within {within:?}; answers: {}", replies.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"));
            let timeout_ms = remaining.min(std::time::Duration::from_secs(2)).as_millis() as u64;
            let reply = self.sync(Some(&since), timeout_ms).await;
            since = reply.str("next_batch");
            let accepted = done(&reply);
            replies.push(reply);
            if accepted {
                return replies;
            }
        }
    }

    /// `GET /rooms/{room_id}/messages` with the given query (`dir=b&limit=10`, …).
    pub async fn messages(&self, room_id: &str, params: &str) -> Reply {
        self.get(&format!("/_matrix/client/v3/rooms/{}/messages?{params}", enc(room_id))).await
    }
}

/// A transaction id no other request of this test process uses.
pub fn new_txn_id() -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    format!("txn{}", NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
}

/// The timeline events of `room_id` in a raw `/sync` body, joined or left.
pub fn sync_timeline(body: &Value, room_id: &str) -> Vec<Value> {
    ["join", "leave"]
        .iter()
        .filter_map(|section| body["rooms"][section][room_id]["timeline"]["events"].as_array())
        .flatten()
        .cloned()
        .collect()
}

impl Reply {
    /// Asserts a 2xx answer and returns its JSON body.
    #[track_caller]
    pub fn ok(&self) -> &Value {
        assert!(self.status.is_success(), "expected success, got {self}");
        &self.body
    }

    /// Asserts a Matrix error with this status and `errcode`.
    #[track_caller]
    pub fn assert_error(&self, status: u16, errcode: &str) {
        assert_eq!(
            (self.status.as_u16(), self.errcode()),
            (status, Some(errcode)),
            "expected {status} {errcode}, got {self}"
        );
    }

    /// Asserts the first answer of user-interactive auth (401 with a flow
    /// offering `stage` and a session) and returns the session.
    #[track_caller]
    pub fn uia_session(&self, stage: &str) -> String {
        assert_eq!(self.status, StatusCode::UNAUTHORIZED, "expected a UIA challenge, got {self}");
        let offered = self.body["flows"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|flow| flow["stages"].as_array().is_some_and(|stages| stages.iter().any(|s| s == stage)));
        assert!(offered, "no flow offers {stage}: {self}");
        self.str("session")
    }

    /// A response header as text; `None` when absent.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }

    pub fn errcode(&self) -> Option<&str> {
        self.body.get("errcode").and_then(Value::as_str)
    }

    /// A string field of the body (`"access_token"`, `"room_id"`, …).
    #[track_caller]
    pub fn str(&self, field: &str) -> String {
        match self.body.get(field).and_then(Value::as_str) {
            Some(value) => value.to_owned(),
            None => panic!("no string field {field:?} in {self}"),
        }
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOWN: usize = 2000;
        let text = match self.text.char_indices().nth(SHOWN) {
            Some((cut, _)) => format!("{}… ({} bytes)", &self.text[..cut], self.text.len()),
            None => self.text.clone(),
        };
        write!(f, "{} {} → {} {text}", self.method, self.path, self.status)
    }
}

/// Percent-encodes one path segment (room ids, user ids, event ids, aliases).
pub fn enc(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => out.push(byte as char),
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

/// Percent-encodes a query parameter value (sync tokens, inline filters).
pub fn query(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

/// The `m.login.password` stage of user-interactive auth for `user`.
pub fn password_auth(user: &str, password: &str, session: &str) -> Value {
    serde_json::json!({
        "type": "m.login.password",
        "identifier": { "type": "m.id.user", "user": user },
        "password": password,
        "session": session,
    })
}
