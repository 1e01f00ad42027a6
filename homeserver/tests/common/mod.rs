//! The integration-test harness: a real homeserver on a loopback port, on a
//! database of its own, driven over HTTP by raw requests ([`api`]) or by
//! matrix-sdk clients ([`matrix`]).
//!
//! Every test starts its own [`TestServer`]; nothing is shared between tests,
//! so they run in parallel (nextest runs each in its own process).
//!
//! Running: `cargo nextest run -p homeserver --test rooms` (or `scripts/test`).
//! Environment:
//! - `HOMESERVER_TEST_DATABASE_URL`: admin URL of a PostgreSQL that may
//!   create databases (default `postgres://postgres@127.0.0.1:5432/postgres`).
//! - `HOMESERVER_TEST_KEEP_DB=1`: keep each test's database for a look
//!   afterwards (its name is printed at the start of the test).
//! - `HOMESERVER_TEST_SHARDS=N`: every test server spreads its data over N
//!   physical databases (default 1).
//! - `HOMESERVER_TEST_WORKERS=2`: every test server is two workers sharing
//!   the databases through Redis; raw requests alternate between them and
//!   matrix-sdk clients are spread over them (default 1). Tests that set up
//!   Redis themselves get one worker per `start`, as they ask.
//! - `HOMESERVER_TEST_REDIS_URL`: the Redis the multi-worker tests share
//!   (default `redis://127.0.0.1:6379`; each test uses a prefix of its own
//!   and never flushes it). Tests that kill Redis start private
//!   `redis-server` processes instead.
//! - `RUST_LOG`: server and client logs, printed with a failing test.

// Each test file compiles this module on its own and uses a part of it.
#![allow(dead_code)]

pub mod api;
pub mod database;
pub mod matrix;
pub mod nginx;
pub mod oidc_provider;
pub mod redis;

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, Once},
    time::{Duration, Instant},
};

use hmac::{Hmac, Mac as _};
use homeserver::{Config, Homeserver, config::RateLimit};
use serde_json::{Value, json};
use sha1::Sha1;
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};

use self::{api::Api, database::TestDatabase};

/// Server name of every test server (user ids are `@name:localhost`).
pub const SERVER_NAME: &str = "localhost";
/// Secret of the admin registration API on every test server.
const SHARED_SECRET: &str = "integration-test-shared-secret";
/// How long a graceful stop may take before the test fails.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

/// The password [`TestServer::matrix_client`] and friends give `name`.
pub fn password_of(name: &str) -> String {
    format!("{name}-correct-horse-battery")
}

/// `@name:localhost`.
pub fn user_id(name: &str) -> String {
    format!("@{name}:{SERVER_NAME}")
}

/// A homeserver serving on `127.0.0.1:<port>` until dropped.
pub struct TestServer {
    config: Config,
    addr: SocketAddr,
    server: Homeserver,
    running: Option<Running>,
    api: Api,
    /// The second worker of `HOMESERVER_TEST_WORKERS=2`.
    peer: Option<Box<TestServer>>,
    /// Which worker the next matrix-sdk client talks to.
    next_client: std::sync::atomic::AtomicUsize,
    /// Dropped after the server is stopped (field order); shared with the
    /// other workers of the same deployment ([`TestServer::start_worker`]).
    _key_dir: Arc<KeyDir>,
    _databases: Arc<Vec<TestDatabase>>,
}

/// The serving task and the switch that stops it.
struct Running {
    shutdown: oneshot::Sender<()>,
    task: JoinHandle<anyhow::Result<()>>,
}

/// A user created through the admin API, with the session that created it.
#[derive(Clone, Debug)]
pub struct RegisteredUser {
    pub name: String,
    pub user_id: String,
    pub password: String,
    pub access_token: String,
    pub device_id: String,
}

impl TestServer {
    /// A server with the test defaults: open registration (`m.login.dummy`)
    /// and the shared-secret admin API.
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// A server whose config `configure` adjusts after the test defaults.
    pub async fn start_with(configure: impl FnOnce(&mut Config)) -> Self {
        Self::start_deployment(env_count("HOMESERVER_TEST_SHARDS"), env_count("HOMESERVER_TEST_WORKERS"), configure).await
    }

    /// One worker process whatever `HOMESERVER_TEST_WORKERS` says, for
    /// tests of a process's own state (its metrics).
    pub async fn start_one_worker() -> Self {
        Self::start_deployment(env_count("HOMESERVER_TEST_SHARDS"), 1, |_| {}).await
    }

    /// A server on at least `shards` physical databases.
    pub async fn start_sharded(shards: usize, configure: impl FnOnce(&mut Config)) -> Self {
        Self::start_deployment(shards.max(env_count("HOMESERVER_TEST_SHARDS")), env_count("HOMESERVER_TEST_WORKERS"), configure).await
    }

    async fn start_deployment(shards: usize, workers: usize, configure: impl FnOnce(&mut Config)) -> Self {
        init_logging();
        let mut databases = Vec::new();
        for _ in 0..shards {
            databases.push(TestDatabase::create().await);
        }
        let key_dir = KeyDir::create();
        let key_path = key_dir.0.join("signing.key");
        homeserver::signing_key::generate(&key_path).expect("writing the signing key");

        let listener = TcpListener::bind(("127.0.0.1", 0)).await.expect("binding a loopback port");
        let addr = listener.local_addr().expect("listener address");
        let base_url = format!("http://{addr}");

        let mut config = Config::development(SERVER_NAME, databases[0].url(), key_path);
        config.database.shards = databases[1..].iter().map(|db| db.url().to_owned()).collect();
        config.listen = addr;
        config.public_baseurl = Some(base_url);
        config.database.max_connections = 5;
        config.registration.enabled = true;
        config.registration.shared_secret = Some(SHARED_SECRET.to_owned());
        config.media.store_path = key_dir.0.join("media");
        // Tests register and send fast from one address; limits that never
        // bite, but are still checked on every request.
        let generous = RateLimit { per_second: 10_000.0, burst: 100_000 };
        (config.rate_limits.room_writes, config.rate_limits.requests, config.rate_limits.anonymous, config.rate_limits.failed_logins) = (generous, generous, generous, generous);
        configure(&mut config);
        let second_worker = workers > 1 && config.redis.url.is_none();
        if second_worker {
            redis::use_shared(&mut config);
        }
        let mut server = Self::launch(config, listener, Arc::new(key_dir), Arc::new(databases)).await;
        if second_worker {
            let peer = server.start_worker(|_| {}).await;
            for worker in [&server, &peer] {
                redis::wait_until_connected(worker.server(), true, Duration::from_secs(10)).await;
            }
            server.api = Api::new(vec![server.base_url(), peer.base_url()]);
            server.peer = Some(Box::new(peer));
        }
        server
    }

    /// Another worker of this deployment: the same database, signing key,
    /// media store and config (Redis included), on a port of its own, as a
    /// load balancer would spread them. `configure` adjusts its config.
    pub async fn start_worker(&self, configure: impl FnOnce(&mut Config)) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.expect("binding a loopback port");
        let addr = listener.local_addr().expect("listener address");
        let mut config = self.config.clone();
        config.listen = addr;
        config.public_baseurl = Some(format!("http://{addr}"));
        configure(&mut config);
        Self::launch(config, listener, self._key_dir.clone(), self._databases.clone()).await
    }

    async fn launch(config: Config, listener: TcpListener, key_dir: Arc<KeyDir>, databases: Arc<Vec<TestDatabase>>) -> Self {
        let addr = config.listen;
        let base_url = format!("http://{addr}");
        let server = Homeserver::start(config.clone()).await.expect("starting the homeserver");
        let running = serve(server.clone(), listener);
        Self {
            config,
            addr,
            server,
            running: Some(running),
            api: Api::new(vec![base_url]),
            peer: None,
            next_client: Default::default(),
            _key_dir: key_dir,
            _databases: databases,
        }
    }

    /// This worker and the second one, if any.
    fn workers(&self) -> impl Iterator<Item = &TestServer> {
        std::iter::once(self).chain(self.peer.as_deref())
    }

    /// `http://127.0.0.1:<port>`, without a trailing slash.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The base URL of every worker (one, or two with
    /// `HOMESERVER_TEST_WORKERS=2`), for tests that choose who answers.
    pub fn worker_urls(&self) -> Vec<String> {
        self.workers().map(TestServer::base_url).collect()
    }

    /// The running server's handle (database, notifier, config).
    pub fn server(&self) -> &Homeserver {
        &self.server
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Raw HTTP, without a token.
    pub fn api(&self) -> Api {
        self.api.clone()
    }

    /// Raw HTTP as the holder of `token`.
    pub fn api_as(&self, token: &str) -> Api {
        self.api.with_token(token)
    }

    /// Stops the server gracefully (requests in flight finish) and starts it
    /// again on the same database, signing key and port, as an operator's
    /// restart would: tokens, sessions and clients stay valid.
    pub async fn restart(&mut self) {
        self.stop().await;
        let listener = bind_again(self.addr).await;
        self.server = Homeserver::start(self.config.clone()).await.expect("restarting the homeserver");
        self.running = Some(serve(self.server.clone(), listener));
        if let Some(peer) = &mut self.peer {
            Box::pin(peer.restart()).await;
        }
    }

    /// Stops serving, waiting for the requests in flight (on every worker).
    pub async fn stop(&mut self) {
        if let Some(peer) = &mut self.peer {
            Box::pin(peer.stop()).await;
        }
        let Some(Running { shutdown, task }) = self.running.take() else { return };
        let _ = shutdown.send(());
        match tokio::time::timeout(SHUTDOWN_TIMEOUT, task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(err))) => panic!("the server failed while serving: {err:#}"),
            Ok(Err(join_error)) => panic!("the serving task failed: {join_error}"),
            Err(_) => panic!("the server did not stop within {SHUTDOWN_TIMEOUT:?}"),
        }
    }

    /// Creates an account through the shared-secret admin API
    /// (`/_synapse/admin/v1/register`) with the password [`password_of`].
    pub async fn register_user(&self, name: &str) -> RegisteredUser {
        self.register_user_with_password(name, &password_of(name)).await
    }

    pub async fn register_user_with_password(&self, name: &str, password: &str) -> RegisteredUser {
        self.register_through_admin_api(name, password, false).await
    }

    /// Creates a server admin through the admin API (a staff account).
    pub async fn register_admin(&self, name: &str) -> RegisteredUser {
        self.register_through_admin_api(name, &password_of(name), true).await
    }

    async fn register_through_admin_api(&self, name: &str, password: &str, admin: bool) -> RegisteredUser {
        let nonce = self.api.get("/_synapse/admin/v1/register").await.str("nonce");
        let mut mac = Hmac::<Sha1>::new_from_slice(SHARED_SECRET.as_bytes()).expect("HMAC takes any key length");
        let admin_flag = if admin { "admin" } else { "notadmin" };
        for (i, part) in [nonce.as_str(), name, password, admin_flag].into_iter().enumerate() {
            if i > 0 {
                mac.update(b"\0");
            }
            mac.update(part.as_bytes());
        }
        let reply = self
            .api
            .post(
                "/_synapse/admin/v1/register",
                json!({
                    "nonce": nonce,
                    "username": name,
                    "password": password,
                    "admin": admin,
                    "mac": hex::encode(mac.finalize().into_bytes()),
                }),
            )
            .await;
        reply.ok();
        RegisteredUser {
            name: name.to_owned(),
            user_id: reply.str("user_id"),
            password: password.to_owned(),
            access_token: reply.str("access_token"),
            device_id: reply.str("device_id"),
        }
    }

    /// Creates an insured person's account (TI-M) with `kvnr` and logs it
    /// in the way the insurer's IdP login will: a login token, then
    /// `m.login.token`. Such accounts have no password.
    pub async fn register_insured(&self, name: &str, kvnr: &str) -> RegisteredUser {
        use homeserver::{auth::tokens, storage::users, tim::accounts};
        let kvnr = accounts::Kvnr::parse(kvnr).expect("a valid KVNR");
        let user_id = accounts::create_insured(&self.server, name, &kvnr, None).await.expect("creating the insured account");
        let token = tokens::new_token(tokens::TokenKind::Login, &user_id);
        let expires = homeserver::storage::now_ms() + 60_000;
        users::add_login_token(self.server.db.user_shard(&user_id), &tokens::hash(&token), &user_id, expires).await.expect("storing the login token");
        let reply = self.api.post("/_matrix/client/v3/login", json!({ "type": "m.login.token", "token": token })).await;
        reply.ok();
        RegisteredUser {
            name: name.to_owned(),
            user_id: reply.str("user_id"),
            password: String::new(),
            access_token: reply.str("access_token"),
            device_id: reply.str("device_id"),
        }
    }

    /// Registers Alice, and Bob who joins a room Alice created and invited
    /// him to; returns both and the room id.
    pub async fn two_users_in_a_room(&self) -> (RegisteredUser, RegisteredUser, String) {
        let alice = self.register_user("alice").await;
        let (bob, room_id) = self.bob_joins_a_room_of(&alice).await;
        (alice, bob, room_id)
    }

    /// Registers Bob and has him join a new room of `alice`'s.
    pub async fn bob_joins_a_room_of(&self, alice: &RegisteredUser) -> (RegisteredUser, String) {
        let bob = self.register_user("bob").await;
        let room_id = self.api_as(&alice.access_token).create_room(json!({ "invite": [bob.user_id] })).await;
        self.api_as(&bob.access_token).join(&room_id).await.ok();
        (bob, room_id)
    }

    /// `POST /login` with a password; returns the whole answer.
    pub async fn login(&self, name: &str, password: &str) -> api::Reply {
        self.api
            .post(
                "/_matrix/client/v3/login",
                json!({
                    "type": "m.login.password",
                    "identifier": { "type": "m.id.user", "user": name },
                    "password": password,
                }),
            )
            .await
    }

    /// Logs in as a new device; returns its access token (panics unless the
    /// login succeeds).
    pub async fn new_session(&self, name: &str, password: &str) -> String {
        let reply = self.login(name, password).await;
        reply.ok();
        reply.str("access_token")
    }

    /// Registers `name` and logs in with matrix-sdk (a device of its own).
    pub async fn matrix_client(&self, name: &str) -> matrix_sdk::Client {
        self.register_user(name).await;
        self.matrix_login(name, &password_of(name)).await
    }

    /// A matrix-sdk client logged in to an existing account.
    pub async fn matrix_login(&self, name: &str, password: &str) -> matrix_sdk::Client {
        let workers: Vec<&TestServer> = self.workers().collect();
        let worker = workers[self.next_client.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % workers.len()];
        let client = matrix::client(&worker.base_url()).await;
        client
            .matrix_auth()
            .login_username(name, password)
            .initial_device_display_name(&format!("{name}'s test client"))
            .send()
            .await
            .unwrap_or_else(|err| panic!("matrix-sdk login of {name}: {err}"));
        client
    }

    /// How many users have a `/sync` long-polling on this server (all its
    /// workers) right now.
    pub fn waiting_syncs(&self) -> usize {
        self.workers().map(|worker| worker.server.notifier.waiting_users()).sum()
    }

    /// Waits (up to `within`) until at least one `/sync` is long-polling, so
    /// that what a test does next has to wake it rather than be found by it.
    /// Returns whether one was seen; a server that answers `/sync` without
    /// waiting simply never shows one. The signal is the notifier's
    /// subscription, which a sync takes just before its first read: "about
    /// to wait or waiting".
    pub async fn wait_for_waiting_sync(&self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if self.waiting_syncs() > 0 {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        false
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(Running { shutdown, task }) = self.running.take() {
            let _ = shutdown.send(());
            task.abort();
        }
    }
}

fn serve(server: Homeserver, listener: TcpListener) -> Running {
    let (shutdown, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(server.serve(listener, async {
        let _ = stopped.await;
    }));
    Running { shutdown, task }
}

/// A count from the environment (`HOMESERVER_TEST_SHARDS`, …); 1 when unset.
fn env_count(name: &str) -> usize {
    std::env::var(name).ok().and_then(|value| value.parse().ok()).filter(|n| *n >= 1).unwrap_or(1)
}

/// Binds `addr` again after a stop. The old socket is closed by then; retry
/// briefly in case the kernel has not released it yet.
async fn bind_again(addr: SocketAddr) -> TcpListener {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match TcpListener::bind(addr).await {
            Ok(listener) => return listener,
            Err(err) if Instant::now() < deadline => {
                tracing::debug!(%addr, %err, "port not free yet");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(err) => panic!("binding {addr} again after the restart: {err}"),
        }
    }
}

/// A private directory for the signing key and the media store, removed on
/// drop.
struct KeyDir(PathBuf);

impl KeyDir {
    fn create() -> Self {
        let name = format!("hs-test-{}-{}", std::process::id(), homeserver::auth::tokens::random_string(10));
        let dir = std::env::temp_dir().join(name);
        std::fs::create_dir_all(&dir).expect("creating the key directory");
        Self(dir)
    }
}

impl Drop for KeyDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Default log filter: the server's own logs and warnings of everything
/// else. matrix-sdk's request errors are left out: they reach the test as
/// `Err` values anyway, and missing optional endpoints (E2EE keys, …) would
/// bury the server's lines.
const DEFAULT_LOG_FILTER: &str = "warn,homeserver=info,matrix_sdk::http_client=off,matrix_sdk::encryption=error,matrix_sdk_crypto=error";

/// Server and client logs in the test's output (shown for failing tests).
/// `RUST_LOG` overrides the default filter.
fn init_logging() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG_FILTER));
        let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
    });
}

/// The `m.room.message` bodies among raw client events, in order.
pub fn message_bodies<'a>(events: impl IntoIterator<Item = &'a Value>) -> Vec<String> {
    events
        .into_iter()
        .filter(|event| event["type"] == "m.room.message")
        .filter_map(|event| event["content"]["body"].as_str().map(str::to_owned))
        .collect()
}
