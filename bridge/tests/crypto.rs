//! End-to-end encryption in the bridge (`kim_bridge::crypto`):
//!
//! - `store_suite`: the PostgreSQL crypto store against matrix-sdk-crypto's
//!   own store test suite (`cryptostore_integration_tests!`).
//! - the bridge's devices against a real homeserver started in-process (the
//!   homeserver's test harness) with the bridge registered as an appservice:
//!   a matrix-sdk member and a ghost exchange encrypted messages both ways,
//!   before and after the bridge's crypto is reopened from PostgreSQL.
//!
//! Running: `cargo nextest run -p kim-bridge --test crypto`, with
//! PostgreSQL at `HOMESERVER_TEST_DATABASE_URL` (see the harness).

// The homeserver's own harness; not rustfmt's to format from here (the
// homeserver keeps its own line width).
#[path = "../../homeserver/tests/common/mod.rs"]
#[rustfmt::skip]
mod common;

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    Json, Router,
    extract::{Path, State},
    http::StatusCode,
    routing::put,
};
use common::{
    TestServer,
    api::{enc, new_txn_id},
    database::TestDatabase,
    matrix::sync_until,
};
use kim_bridge::{
    crypto::{BridgeCrypto, BridgeDevice, RoomEncryption, TransactionExtras},
    matrix::client::HomeserverClient,
};
use matrix_sdk::{
    Client,
    ruma::{
        OwnedRoomId, OwnedUserId, RoomId, api::client::room::create_room, assign,
        events::room::message::RoomMessageEventContent,
    },
};
use ruma::{
    api::client::message::send_message_event,
    events::{
        AnyMessageLikeEventContent, AnyTimelineEvent,
        room::{encryption::RoomEncryptionEventContent, history_visibility::HistoryVisibility},
    },
    serde::Raw,
};
use serde_json::{Value, json};
use sqlx::PgPool;

const SOON: Duration = Duration::from_secs(30);
const AS_TOKEN: &str = "kim-crypto-as-token";
const HS_TOKEN: &str = "kim-crypto-hs-token";
const GHOST: &str = "@kim_praxis:localhost";
/// The bridge config's store key in these tests.
const STORE_KEY: [u8; 32] = [7; 32];

/// The bridge's tables, as the bridge's own migrator applies them.
async fn migrate(pool: &PgPool) {
    sqlx::migrate!("../migrations/bridge")
        .run(pool)
        .await
        .expect("bridge migrations");
}

// The suite's expansion tests SDK features (`experimental-*`) this crate
// does not have.
#[allow(unexpected_cfgs)]
mod store_suite {
    //! `cryptostore_integration_tests!` on [`PgCryptoStore`]. The suite
    //! names its stores; each name is one bridge user's store in a schema
    //! of this test process's own (in a shared database; schemas of killed
    //! runs are swept after an hour), so the tests run in parallel.

    use std::{sync::Arc, time::Duration};

    use kim_bridge::crypto::store::{self, PgCryptoStore};
    use ruma::{OwnedDeviceId, UserId};
    use sqlx::{
        AssertSqlSafe, Connection as _, PgConnection, PgPool,
        postgres::{PgConnectOptions, PgPoolOptions},
    };
    use tokio::sync::OnceCell;

    const DATABASE: &str = "kim_bridge_crypto_store_tests";
    const SCHEMA_PREFIX: &str = "suite_";
    const STALE_AFTER: Duration = Duration::from_secs(60 * 60);

    /// This process's schema, created and migrated once.
    static SCHEMA: OnceCell<(PgConnectOptions, String)> = OnceCell::const_new();

    fn admin_url() -> String {
        std::env::var("HOMESERVER_TEST_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
    }

    async fn schema() -> &'static (PgConnectOptions, String) {
        SCHEMA
            .get_or_init(|| async {
                let admin: PgConnectOptions = admin_url().parse().expect("admin URL");
                let mut conn = PgConnection::connect_with(&admin)
                    .await
                    .expect("reaching PostgreSQL");
                let exists: bool = sqlx::query_scalar(
                    "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)",
                )
                .bind(DATABASE)
                .fetch_one(&mut conn)
                .await
                .expect("listing databases");
                if !exists {
                    // Another test process may create it at the same moment.
                    let _ = sqlx::raw_sql(AssertSqlSafe(format!("CREATE DATABASE {DATABASE}")))
                        .execute(&mut conn)
                        .await;
                }
                let database = admin.clone().database(DATABASE);
                let mut conn = PgConnection::connect_with(&database)
                    .await
                    .expect("reaching the suite's database");
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .expect("clock")
                    .as_secs();
                let stale: Vec<String> = sqlx::query_scalar(
                    "SELECT nspname FROM pg_namespace WHERE starts_with(nspname, $1)",
                )
                .bind(SCHEMA_PREFIX)
                .fetch_all(&mut conn)
                .await
                .expect("listing schemas");
                for name in stale {
                    let created = name[SCHEMA_PREFIX.len()..]
                        .split('_')
                        .next()
                        .and_then(|secs| secs.parse::<u64>().ok());
                    if created.is_some_and(|created| created + STALE_AFTER.as_secs() < now) {
                        let _ = sqlx::raw_sql(AssertSqlSafe(format!(
                            "DROP SCHEMA IF EXISTS {name} CASCADE"
                        )))
                        .execute(&mut conn)
                        .await;
                    }
                }
                let schema = format!(
                    "{SCHEMA_PREFIX}{now}_{}_{}",
                    std::process::id(),
                    rand::random::<u32>()
                );
                sqlx::raw_sql(AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
                    .execute(&mut conn)
                    .await
                    .expect("creating the schema");
                let options = database.options([("search_path", schema.as_str())]);
                let pool = PgPoolOptions::new()
                    .max_connections(1)
                    .connect_with(options.clone())
                    .await
                    .expect("connecting");
                super::migrate(&pool).await;
                pool.close().await;
                (options, schema)
            })
            .await
    }

    /// The suite's entry point: the store called `name`, emptied first when
    /// `clear_data`. Every store is encrypted (the passphrase is the
    /// bridge's store key, not per store).
    async fn get_store(name: &str, _passphrase: Option<&str>, clear_data: bool) -> PgCryptoStore {
        let (options, _) = schema().await;
        // A pool per store: each test runs on a runtime of its own.
        let pool: PgPool = PgPoolOptions::new()
            .max_connections(4)
            .connect_lazy_with(options.clone());
        let user_id = UserId::parse(format!("@{name}:store.test")).expect("a user id");
        let device_id = OwnedDeviceId::from("STORE");
        if clear_data {
            PgCryptoStore::delete(&pool, &user_id, &device_id)
                .await
                .expect("clearing the store");
        }
        let cipher: Arc<_> = store::load_cipher(&pool, &super::STORE_KEY)
            .await
            .expect("the store cipher");
        PgCryptoStore::open(&pool, cipher, &user_id, &device_id)
            .await
            .expect("opening the store")
    }

    matrix_sdk_crypto::cryptostore_integration_tests!();
    matrix_sdk_crypto::cryptostore_integration_tests_time!();
}

/// What the bridge's appservice endpoint saw and whom it hands the E2EE
/// extras to.
#[derive(Clone, Default)]
struct Bridge {
    /// `None` while the bridge "restarts": transactions are refused (and
    /// retried by the homeserver).
    crypto: Arc<Mutex<Option<Arc<BridgeCrypto>>>>,
    events: Arc<Mutex<Vec<Value>>>,
    /// Transactions the bridge could not take (none may happen here).
    errors: Arc<Mutex<Vec<String>>>,
    /// Users named in the transactions' MSC3202 `device_lists.changed`.
    device_list_changes: Arc<Mutex<Vec<String>>>,
}

impl Bridge {
    async fn start(&self) -> String {
        let router = Router::new()
            .route("/_matrix/app/v1/transactions/{txn_id}", put(transaction))
            .with_state(self.clone());
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("binding");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        tokio::spawn(async move { axum::serve(listener, router).await });
        url
    }

    fn crypto(&self) -> Arc<BridgeCrypto> {
        self.crypto
            .lock()
            .expect("lock")
            .clone()
            .expect("the bridge's crypto is open")
    }

    /// The `m.room.encrypted` events of `room_id` delivered so far.
    fn encrypted_events(&self, room_id: &RoomId) -> Vec<Raw<AnyTimelineEvent>> {
        self.events
            .lock()
            .expect("lock")
            .iter()
            .filter(|event| {
                event["type"] == "m.room.encrypted" && event["room_id"] == room_id.as_str()
            })
            .map(|event| Raw::new(event).expect("JSON").cast_unchecked())
            .collect()
    }
}

/// The bridge's transaction endpoint: E2EE extras first, then the events;
/// 200 only when both are taken.
async fn transaction(
    State(bridge): State<Bridge>,
    Path(_txn_id): Path<String>,
    Json(body): Json<Value>,
) -> StatusCode {
    let crypto = bridge.crypto.lock().expect("lock").clone();
    let Some(crypto) = crypto else {
        return StatusCode::SERVICE_UNAVAILABLE;
    };
    let taken = match serde_json::from_value::<TransactionExtras>(body.clone()) {
        Ok(extras) => crypto
            .receive_transaction_extras(extras)
            .await
            .map_err(|err| err.to_string()),
        Err(err) => Err(format!("unreadable E2EE extras: {err}")),
    };
    if let Err(err) = taken {
        bridge.errors.lock().expect("lock").push(err);
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    let changed = body["org.matrix.msc3202.device_lists"]["changed"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    bridge.device_list_changes.lock().expect("lock").extend(
        changed
            .iter()
            .filter_map(|user| user.as_str().map(str::to_owned)),
    );
    let events = body["events"].as_array().cloned().unwrap_or_default();
    bridge.events.lock().expect("lock").extend(events);
    StatusCode::OK
}

fn registration(url: &str) -> String {
    format!(
        "id: kim
url: \"{url}\"
as_token: {AS_TOKEN}
hs_token: {HS_TOKEN}
sender_localpart: kimbot
rate_limited: false
de.sorunome.msc2409.push_ephemeral: true
org.matrix.msc3202: true
namespaces:
  users:
    - exclusive: true
      regex: '@kim_.*:localhost'
"
    )
}

/// Waits until the ghost's device decrypts a message with `body` in
/// `room_id`.
async fn ghost_reads(bridge: &Bridge, ghost: &BridgeDevice, room_id: &RoomId, body: &str) {
    let deadline = Instant::now() + SOON;
    loop {
        for event in bridge.encrypted_events(room_id) {
            if let Ok(decrypted) = ghost.decrypt(room_id, &event).await {
                let decrypted: Value = serde_json::from_str(decrypted.json().get()).expect("JSON");
                if decrypted["content"]["body"] == body {
                    assert_eq!(decrypted["type"], "m.room.message");
                    return;
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "the ghost did not decrypt {body:?} within {SOON:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The ghost encrypts `body` and sends it into `room_id`.
async fn ghost_writes(
    client: &HomeserverClient,
    ghost: &BridgeDevice,
    room_id: &RoomId,
    members: &[OwnedUserId],
    body: &str,
) {
    let room = RoomEncryption {
        encryption: RoomEncryptionEventContent::with_recommended_defaults(),
        history_visibility: HistoryVisibility::Shared,
    };
    let content: Raw<AnyMessageLikeEventContent> =
        Raw::new(&json!({ "msgtype": "m.text", "body": body }))
            .expect("JSON")
            .cast_unchecked();
    let encrypted = ghost
        .encrypt(room_id, members, &room, "m.room.message", &content)
        .await
        .expect("encrypting");
    let request = send_message_event::v3::Request::new_raw(
        room_id.to_owned(),
        new_txn_id().into(),
        "m.room.encrypted".into(),
        encrypted.cast_unchecked(),
    );
    client
        .send_as(request, Some(ghost.user_id()), None)
        .await
        .expect("sending as the ghost");
}

/// Syncs Alice until she decrypted a message with `body`.
async fn alice_reads(alice: &Client, room_id: &RoomId, body: &str) {
    sync_until(alice, SOON, &format!("decrypted {body:?}"), |response| {
        response.rooms.joined.get(room_id).is_some_and(|room| {
            room.timeline
                .events
                .iter()
                .filter(|event| event.encryption_info().is_some())
                .any(|event| {
                    let event: Value =
                        serde_json::from_str(event.raw().json().get()).expect("JSON");
                    event["content"]["body"] == body
                })
        })
    })
    .await;
}

/// A homeserver with the bridge registered as an appservice, the bridge's
/// crypto on a database of its own, a ghost with its device, and Alice's
/// encrypted room with the ghost joined.
struct Scene {
    server: TestServer,
    bridge: Bridge,
    pool: PgPool,
    client: HomeserverClient,
    alice: Client,
    room: matrix_sdk::Room,
    room_id: OwnedRoomId,
    ghost_id: OwnedUserId,
    ghost: Arc<BridgeDevice>,
    members: Vec<OwnedUserId>,
    _database: TestDatabase,
    _dir: tempfile::TempDir,
}

impl Scene {
    async fn new() -> Self {
        let bridge = Bridge::default();
        let url = bridge.start().await;
        let dir = tempfile::tempdir().expect("tempdir");
        let registration_file = dir.path().join("kim.yaml");
        std::fs::write(&registration_file, registration(&url)).expect("writing the registration");
        let server = TestServer::start_with(|config| {
            config.appservices.registration_files = vec![registration_file]
        })
        .await;

        let database = TestDatabase::create().await;
        let pool = PgPool::connect(database.url())
            .await
            .expect("the bridge's database");
        migrate(&pool).await;
        let client =
            HomeserverClient::new(&server.base_url(), AS_TOKEN).expect("homeserver client");
        let crypto = BridgeCrypto::new(pool.clone(), client.clone(), &STORE_KEY)
            .await
            .expect("opening the crypto");
        *bridge.crypto.lock().expect("lock") = Some(Arc::new(crypto));

        // The ghost exists and has its device (created through MSC4190).
        let registered = server
            .api_as(AS_TOKEN)
            .post("/_matrix/client/v3/register", json!({ "type": "m.login.application_service", "username": "kim_praxis", "inhibit_login": true }))
            .await;
        assert_eq!(registered.ok()["user_id"], GHOST);
        let ghost_id: OwnedUserId = GHOST.try_into().expect("user id");
        let ghost = bridge
            .crypto()
            .device(&ghost_id)
            .await
            .expect("the ghost's device");

        // Alice's encrypted room with the ghost.
        let alice = server.matrix_client("alice").await;
        common::matrix::sync_now(&alice).await;
        let encryption = serde_json::from_value(json!({ "type": "m.room.encryption", "state_key": "", "content": { "algorithm": "m.megolm.v1.aes-sha2" } }))
            .expect("state event");
        let request = assign!(create_room::v3::Request::new(), { invite: vec![ghost_id.clone()], initial_state: vec![encryption] });
        let room = alice.create_room(request).await.expect("createRoom");
        let room_id: OwnedRoomId = room.room_id().to_owned();
        let join = format!(
            "/_matrix/client/v3/rooms/{}/join?user_id={}",
            enc(room_id.as_str()),
            enc(GHOST)
        );
        server.api_as(AS_TOKEN).post(&join, json!({})).await.ok();
        sync_until(&alice, SOON, "the ghost's join", |response| {
            response.rooms.joined.get(&room_id).is_some_and(|room| {
                room.timeline.events.iter().any(|event| {
                    let event: Value =
                        serde_json::from_str(event.raw().json().get()).expect("JSON");
                    event["type"] == "m.room.member" && event["state_key"] == GHOST
                })
            })
        })
        .await;
        let members = vec![
            alice.user_id().expect("logged in").to_owned(),
            ghost_id.clone(),
        ];
        Self {
            server,
            bridge,
            pool,
            client,
            alice,
            room,
            room_id,
            ghost_id,
            ghost,
            members,
            _database: database,
            _dir: dir,
        }
    }

    /// The ghost encrypts `body` and sends it into the room.
    async fn ghost_writes(&self, body: &str) {
        ghost_writes(
            &self.client,
            &self.ghost,
            &self.room_id,
            &self.members,
            body,
        )
        .await;
    }

    /// Every transaction the bridge got was taken.
    fn assert_no_failed_transactions(&self) {
        let errors = self.bridge.errors.lock().expect("lock").clone();
        assert!(
            errors.is_empty(),
            "the bridge failed transactions: {errors:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_ghost_talks_with_a_member_in_an_encrypted_room_across_a_bridge_restart() {
    let mut scene = Scene::new().await;
    let (device_id, identity_key) = (
        scene.ghost.device_id().to_owned(),
        scene.ghost.identity_key(),
    );

    // Member → ghost, ghost → member.
    scene
        .room
        .send(RoomMessageEventContent::text_plain("Bitte um Befund"))
        .await
        .expect("sending");
    ghost_reads(
        &scene.bridge,
        &scene.ghost,
        &scene.room_id,
        "Bitte um Befund",
    )
    .await;
    scene.ghost_writes("Befund folgt").await;
    alice_reads(&scene.alice, &scene.room_id, "Befund folgt").await;

    // The bridge restarts: everything it knew comes back from PostgreSQL.
    scene.bridge.crypto.lock().expect("lock").take();
    let reopened = BridgeCrypto::new(scene.pool.clone(), scene.client.clone(), &STORE_KEY)
        .await
        .expect("reopening the crypto");
    *scene.bridge.crypto.lock().expect("lock") = Some(Arc::new(reopened));
    scene.ghost = scene
        .bridge
        .crypto()
        .device(&scene.ghost_id)
        .await
        .expect("the ghost's device again");
    assert_eq!(
        (scene.ghost.device_id(), scene.ghost.identity_key()),
        (&*device_id, identity_key),
        "the same device and identity"
    );

    scene
        .room
        .send(RoomMessageEventContent::text_plain("Nach dem Neustart"))
        .await
        .expect("sending");
    ghost_reads(
        &scene.bridge,
        &scene.ghost,
        &scene.room_id,
        "Nach dem Neustart",
    )
    .await;
    scene.ghost_writes("Auch nach dem Neustart").await;
    alice_reads(&scene.alice, &scene.room_id, "Auch nach dem Neustart").await;

    // No second device, and what was stored is ciphertext.
    let devices = scene
        .server
        .api_as(AS_TOKEN)
        .get(&format!(
            "/_matrix/client/v3/devices?user_id={}",
            enc(GHOST)
        ))
        .await;
    let listed: Vec<&str> = devices.ok()["devices"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|device| device["device_id"].as_str())
        .collect();
    assert_eq!(listed, [device_id.as_str()], "{devices}");
    let account: Vec<u8> = sqlx::query_scalar("SELECT value FROM crypto_values JOIN crypto_stores USING (store_id) WHERE user_id = $1 AND name = 'account'")
        .bind(GHOST)
        .fetch_one(&scene.pool)
        .await
        .expect("the stored account");
    let account = String::from_utf8_lossy(&account);
    assert!(
        account.contains("ciphertext") && !account.contains("pickle"),
        "the account is stored encrypted: {account}"
    );
    scene.assert_no_failed_transactions();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_members_new_device_gets_the_ghosts_room_key_after_a_device_list_change() {
    let scene = Scene::new().await;
    // The ghost has encrypted once: it tracks Alice's devices.
    scene.ghost_writes("Erste Antwort").await;
    alice_reads(&scene.alice, &scene.room_id, "Erste Antwort").await;

    // Alice logs in on a phone (its keys uploaded by the first sync). The
    // homeserver tells the bridge (MSC3202 device_lists.changed), so the
    // ghost queries Alice's devices again and shares the room key with the
    // phone, too.
    let phone = scene
        .server
        .matrix_login("alice", &common::password_of("alice"))
        .await;
    common::matrix::sync_now(&phone).await;
    let alice_id = scene.members[0].as_str();
    let deadline = Instant::now() + SOON;
    while !scene
        .bridge
        .device_list_changes
        .lock()
        .expect("lock")
        .iter()
        .any(|user| user == alice_id)
    {
        assert!(
            Instant::now() < deadline,
            "no device list change of Alice reached the bridge"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The change may arrive before the phone's keys were uploaded: the ghost
    // writes until the phone reads one.
    for attempt in 1.. {
        let body = format!("Für alle Geräte {attempt}");
        scene.ghost_writes(&body).await;
        if decrypts_within(&phone, &scene.room_id, &body, Duration::from_secs(3)).await {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Alice's phone never got the ghost's room key"
        );
    }
    scene.assert_no_failed_transactions();
}

/// Whether `client` decrypts a message with `body` within `within`.
async fn decrypts_within(client: &Client, room_id: &RoomId, body: &str, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        let response = common::matrix::sync_once(client, Duration::from_millis(500)).await;
        if response.rooms.joined.get(room_id).is_some_and(|room| {
            room.timeline
                .events
                .iter()
                .filter(|event| event.encryption_info().is_some())
                .any(|event| {
                    let event: Value =
                        serde_json::from_str(event.raw().json().get()).expect("JSON");
                    event["content"]["body"] == body
                })
        }) {
            return true;
        }
    }
    false
}
