//! The TI-Messenger (TI-M ePA) rules, one test per rule, each named after
//! the gematik requirement it checks (see docs/TIM-RULES.md). They port the
//! direct HTTP checks of gematik's TI-Messenger-Testsuite (UC09X room
//! states, UC10X API checks, UC13X public rooms, UC03/UC05X invite rules,
//! UC06X directory) to raw requests, where the exact status and errcode
//! matter, and matrix-sdk clients where a client's view does.

mod common;

use common::{
    RegisteredUser, TestServer,
    api::{Api, Reply, enc, new_txn_id},
    user_id,
};
use matrix_sdk::ruma::{
    OwnedEventId, OwnedRoomId,
    events::{reaction::ReactionEventContent, relation::Annotation, room::message::RoomMessageEventContent},
};
use serde_json::{Value, json};

/// KVNRs with valid check digits.
const KVNR_IDA: &str = "A000000014";
const KVNR_INA: &str = "B000000028";

const EPA_CONFIG: &str = "de.gematik.tim.account.permissionconfig.epa.v1";
const PRO_CONFIG: &str = "de.gematik.tim.account.permissionconfig.pro.v1";
const LEGACY_CONFIG: &str = "de.gematik.tim.account.permissionconfig.v1";

/// `m.room.encryption` as createRoom's `initial_state` carries it.
fn encryption() -> Value {
    json!({ "type": "m.room.encryption", "state_key": "", "content": { "algorithm": "m.megolm.v1.aes-sha2" } })
}

async fn create_room(api: &Api, body: Value) -> Reply {
    api.post("/_matrix/client/v3/createRoom", body).await
}

async fn state(api: &Api, room_id: &str, event_type: &str) -> Reply {
    api.get(&format!("/_matrix/client/v3/rooms/{}/state/{event_type}/", enc(room_id))).await
}

async fn put_state(api: &Api, room_id: &str, event_type: &str, content: Value) -> Reply {
    api.put(&format!("/_matrix/client/v3/rooms/{}/state/{event_type}/", enc(room_id)), content).await
}

async fn send(api: &Api, room_id: &str, event_type: &str, content: Value) -> Reply {
    api.put(&format!("/_matrix/client/v3/rooms/{}/send/{event_type}/{}", enc(room_id), new_txn_id()), content).await
}

async fn invite(api: &Api, room_id: &str, user: &RegisteredUser) -> Reply {
    api.post(&format!("/_matrix/client/v3/rooms/{}/invite", enc(room_id)), json!({ "user_id": user.user_id })).await
}

async fn set_account_data(server: &TestServer, user: &RegisteredUser, data_type: &str, content: Value) -> Reply {
    server.api_as(&user.access_token).put(&format!("/_matrix/client/v3/user/{}/account_data/{data_type}", enc(&user.user_id)), content).await
}

// ------------------------------------------------------------- room rules

/// A_26202, A_26203, A_26248: rooms of version 9 or 10 only, 10 by default.
#[tokio::test]
async fn a_26202_a_26203_a_26248_room_versions_9_and_10_with_10_the_default() {
    let server = TestServer::start().await;
    let api = server.api_as(&server.register_user("alice").await.access_token);

    let room_id = api.create_room(json!({})).await;
    assert_eq!(state(&api, &room_id, "m.room.create").await.ok()["room_version"], "10");
    let room_id = api.create_room(json!({ "room_version": "9" })).await;
    assert_eq!(state(&api, &room_id, "m.room.create").await.ok()["room_version"], "9");
    for version in ["11", "1", "8"] {
        create_room(&api, json!({ "room_version": version })).await.assert_error(400, "M_UNSUPPORTED_ROOM_VERSION");
    }
}

/// A_25426, A_28596: rooms of type `de.gematik.tim.roomtype.default.v1`
/// are created, `…default.v2` ones refused.
#[tokio::test]
async fn a_28596_room_type_v2_is_refused_and_v1_accepted() {
    let server = TestServer::start().await;
    let api = server.api_as(&server.register_user("alice").await.access_token);

    let room_id = api.create_room(json!({ "creation_content": { "type": "de.gematik.tim.roomtype.default.v1" } })).await;
    assert_eq!(state(&api, &room_id, "m.room.create").await.ok()["type"], "de.gematik.tim.roomtype.default.v1");
    create_room(&api, json!({ "creation_content": { "type": "de.gematik.tim.roomtype.default.v2" } })).await.assert_error(403, "M_FORBIDDEN");
}

/// A_25368-01: createRoom invites at most one user.
#[tokio::test]
async fn a_25368_01_create_room_invites_at_most_one_user() {
    let server = TestServer::start().await;
    let api = server.api_as(&server.register_user("alice").await.access_token);
    let (bob, carol) = (server.register_user("bob").await, server.register_user("carol").await);

    create_room(&api, json!({ "invite": [bob.user_id, carol.user_id] })).await.assert_error(403, "M_FORBIDDEN");
    let room_id = api.create_room(json!({ "invite": [bob.user_id] })).await;
    invite(&api, &room_id, &carol).await.ok();
}

/// A_25481: history is visible from a member's invite on unless the
/// creator chose otherwise.
#[tokio::test]
async fn a_25481_history_visibility_defaults_to_invited() {
    let server = TestServer::start().await;
    let api = server.api_as(&server.register_user("alice").await.access_token);

    let room_id = api.create_room(json!({})).await;
    assert_eq!(state(&api, &room_id, "m.room.history_visibility").await.ok()["history_visibility"], "invited");
    let chosen = json!({ "type": "m.room.history_visibility", "state_key": "", "content": { "history_visibility": "shared" } });
    let room_id = api.create_room(json!({ "initial_state": [chosen] })).await;
    assert_eq!(state(&api, &room_id, "m.room.history_visibility").await.ok()["history_visibility"], "shared");
}

/// A_26015-02, A_25325-01: insured persons cannot create public rooms
/// (published, `public_chat`, or public or knock join rules), staff can.
#[tokio::test]
async fn a_26015_02_insured_persons_cannot_create_public_rooms() {
    let server = TestServer::start().await;
    let ida = server.api_as(&server.register_insured("ida", KVNR_IDA).await.access_token);
    let alice = server.api_as(&server.register_user("alice").await.access_token);

    let join_rule = |rule: &str| json!({ "type": "m.room.join_rules", "state_key": "", "content": { "join_rule": rule } });
    let world_readable = json!({ "type": "m.room.history_visibility", "state_key": "", "content": { "history_visibility": "world_readable" } });
    for public in [
        json!({ "visibility": "public", "initial_state": [encryption()] }),
        json!({ "preset": "public_chat", "initial_state": [encryption()] }),
        json!({ "initial_state": [encryption(), join_rule("public")] }),
        json!({ "initial_state": [encryption(), join_rule("knock")] }),
        json!({ "initial_state": [encryption(), world_readable] }),
    ] {
        create_room(&ida, public.clone()).await.assert_error(403, "M_FORBIDDEN");
        create_room(&alice, public).await.ok();
    }
    create_room(&ida, json!({ "preset": "private_chat", "initial_state": [encryption()] })).await.ok();
}

/// A_26015-02, A_25324-01: insured persons cannot create unencrypted rooms.
#[tokio::test]
async fn a_26015_02_insured_persons_cannot_create_unencrypted_rooms() {
    let server = TestServer::start().await;
    let ida = server.api_as(&server.register_insured("ida", KVNR_IDA).await.access_token);

    create_room(&ida, json!({ "name": "unencrypted" })).await.assert_error(403, "M_FORBIDDEN");
    let room_id = ida.create_room(json!({ "name": "encrypted", "initial_state": [encryption()] })).await;
    assert_eq!(state(&ida, &room_id, "m.room.encryption").await.ok()["algorithm"], "m.megolm.v1.aes-sha2");
}

/// A_26015-02, A_28271: an insured person's room cannot be opened later:
/// no public or knock join rule, no world-readable history, no listing in
/// the directory (the testsuite's UC13X "roomAccess public").
#[tokio::test]
async fn a_26015_02_a_28271_insured_persons_cannot_open_rooms_later() {
    let server = TestServer::start().await;
    let ida = server.api_as(&server.register_insured("ida", KVNR_IDA).await.access_token);
    let room_id = ida.create_room(json!({ "initial_state": [encryption()] })).await;

    for rule in ["public", "knock"] {
        put_state(&ida, &room_id, "m.room.join_rules", json!({ "join_rule": rule })).await.assert_error(403, "M_FORBIDDEN");
    }
    put_state(&ida, &room_id, "m.room.history_visibility", json!({ "history_visibility": "world_readable" })).await.assert_error(403, "M_FORBIDDEN");
    let listing = format!("/_matrix/client/v3/directory/list/room/{}", enc(&room_id));
    ida.put(&listing, json!({ "visibility": "public" })).await.assert_error(403, "M_FORBIDDEN");
    put_state(&ida, &room_id, "m.room.join_rules", json!({ "join_rule": "invite" })).await.ok();
    ida.put(&listing, json!({ "visibility": "private" })).await.ok();

    // Staff may (the kind decides).
    let alice = server.api_as(&server.register_user("alice").await.access_token);
    let room_id = alice.create_room(json!({})).await;
    put_state(&alice, &room_id, "m.room.join_rules", json!({ "join_rule": "public" })).await.ok();
    alice.put(&format!("/_matrix/client/v3/directory/list/room/{}", enc(&room_id)), json!({ "visibility": "public" })).await.ok();
}

/// A_28587: insured persons cannot read the public room list (GET or POST);
/// nobody can without a token (A_26518).
#[tokio::test]
async fn a_28587_insured_persons_cannot_query_public_rooms() {
    let server = TestServer::start().await;
    let ida = server.api_as(&server.register_insured("ida", KVNR_IDA).await.access_token);
    let alice = server.api_as(&server.register_user("alice").await.access_token);

    server.api().get("/_matrix/client/v3/publicRooms").await.assert_error(401, "M_MISSING_TOKEN");
    ida.get("/_matrix/client/v3/publicRooms").await.assert_error(403, "M_FORBIDDEN");
    ida.post("/_matrix/client/v3/publicRooms", json!({})).await.assert_error(403, "M_FORBIDDEN");
    alice.get("/_matrix/client/v3/publicRooms").await.ok();
    alice.post("/_matrix/client/v3/publicRooms", json!({})).await.ok();
}

/// A_26338-02: `de.gematik.tim.room.name`/`…topic` carry the same values
/// as `m.room.name`/`m.room.topic`, whichever the client sets.
#[tokio::test]
async fn a_26338_02_tim_room_name_and_topic_follow_the_matrix_ones() {
    let server = TestServer::start().await;
    let api = server.api_as(&server.register_user("alice").await.access_token);

    let room_id = api.create_room(json!({ "name": "Tea", "topic": "Darjeeling" })).await;
    assert_eq!(state(&api, &room_id, "de.gematik.tim.room.name").await.ok()["name"], "Tea");
    assert_eq!(state(&api, &room_id, "de.gematik.tim.room.topic").await.ok()["topic"], "Darjeeling");

    put_state(&api, &room_id, "m.room.name", json!({ "name": "Coffee" })).await.ok();
    assert_eq!(state(&api, &room_id, "de.gematik.tim.room.name").await.ok()["name"], "Coffee");
    put_state(&api, &room_id, "de.gematik.tim.room.topic", json!({ "topic": "Arabica" })).await.ok();
    assert_eq!(state(&api, &room_id, "m.room.topic").await.ok()["topic"], "Arabica");

    let custom = json!({ "type": "de.gematik.tim.room.name", "state_key": "", "content": { "name": "Cocoa" } });
    let room_id = api.create_room(json!({ "initial_state": [custom] })).await;
    assert_eq!(state(&api, &room_id, "m.room.name").await.ok()["name"], "Cocoa");
}

/// A_28358: events older than 24 hours cannot be redacted.
#[tokio::test]
async fn a_28358_events_older_than_24_hours_cannot_be_redacted() {
    let server = TestServer::start().await;
    let api = server.api_as(&server.register_user("alice").await.access_token);
    let room_id = api.create_room(json!({})).await;
    let redact = |event_id: String| {
        let api = api.clone();
        let path = format!("/_matrix/client/v3/rooms/{}/redact/{}/{}", enc(&room_id), enc(&event_id), new_txn_id());
        async move { api.put(&path, json!({ "reason": "typo" })).await }
    };

    let fresh = api.send_text(&room_id, "just now").await.str("event_id");
    redact(fresh).await.ok();

    let old = api.send_text(&room_id, "the day before yesterday").await.str("event_id");
    let two_days_ago = homeserver::storage::now_ms() - 2 * 24 * 60 * 60 * 1000;
    let room: OwnedRoomId = room_id.parse().expect("a room id");
    sqlx::query(
        "UPDATE events SET origin_server_ts = $3, pdu = jsonb_set(pdu, '{origin_server_ts}', to_jsonb($3::BIGINT))
         WHERE room_id = $1 AND event_id = $2",
    )
    .bind(room.as_str())
    .bind(&old)
    .bind(two_days_ago)
    .execute(server.server().db.room_shard(&room))
    .await
    .expect("back-dating the event");
    redact(old).await.assert_error(403, "M_FORBIDDEN");
}

/// A_26228-01: a reaction's key is exactly one emoji, else 400 `M_BAD_JSON`.
#[tokio::test]
async fn a_26228_01_reactions_are_exactly_one_emoji() {
    let server = TestServer::start().await;
    let client = server.matrix_client("alice").await;
    let api = server.api_as(&client.access_token().expect("logged in"));
    let room = client.create_room(Default::default()).await.expect("createRoom");
    let message = room.send(RoomMessageEventContent::text_plain("react to me")).await.expect("sending").response.event_id;

    for key in ["👍", "👍🏽", "❤️", "🏳️‍🌈"] {
        room.send(ReactionEventContent::new(Annotation::new(message.clone(), key.to_owned()))).await.unwrap_or_else(|err| panic!("reaction {key:?}: {err}"));
    }
    for key in ["+1", "👍👍", "👍 ", ""] {
        let reaction = json!({ "m.relates_to": { "rel_type": "m.annotation", "event_id": message, "key": key } });
        send(&api, room.room_id().as_str(), "m.reaction", reaction).await.assert_error(400, "M_BAD_JSON");
    }
}

/// A_25395-03: threads are not offered: not advertised, and nothing may
/// relate to a thread.
#[tokio::test]
async fn a_25395_03_threads_are_not_offered() {
    let server = TestServer::start().await;
    let versions = server.api().get("/_matrix/client/versions").await;
    let features = versions.ok()["unstable_features"].as_object().cloned().unwrap_or_default();
    assert!(!features.iter().any(|(name, on)| name.contains("msc3440") && on == true), "thread support advertised: {versions}");

    let api = server.api_as(&server.register_user("alice").await.access_token);
    let room_id = api.create_room(json!({})).await;
    let root: OwnedEventId = api.send_text(&room_id, "root").await.str("event_id").parse().expect("an event id");
    let in_thread = json!({ "msgtype": "m.text", "body": "reply", "m.relates_to": { "rel_type": "m.thread", "event_id": root } });
    send(&api, &room_id, "m.room.message", in_thread).await.assert_error(400, "M_FORBIDDEN");
    let encrypted = json!({ "algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "x", "m.relates_to": { "rel_type": "m.thread", "event_id": root } });
    send(&api, &room_id, "m.room.encrypted", encrypted).await.assert_error(400, "M_FORBIDDEN");
}

// --------------------------------------------------------- invite rules

/// A_26390, A_25043: permission configs are checked against gematik's
/// schema when stored (400 `M_BAD_JSON`), other account data is not.
#[tokio::test]
async fn a_26390_permission_configs_must_match_the_schema() {
    let server = TestServer::start().await;
    let alice = server.register_user("alice").await;

    for config_type in [EPA_CONFIG, PRO_CONFIG, LEGACY_CONFIG] {
        for bad in [
            json!({}),
            json!({ "defaultSetting": "allow most" }),
            json!({ "defaultSetting": "block all", "userExceptions": { "bob:localhost": {} } }),
            json!({ "defaultSetting": "block all", "serverExceptions": { "localhost": "yes" } }),
        ] {
            set_account_data(&server, &alice, config_type, bad).await.assert_error(400, "M_BAD_JSON");
        }
        let good = json!({ "defaultSetting": "block all", "userExceptions": { "@bob:localhost": {} }, "serverExceptions": { "other.example": {} } });
        set_account_data(&server, &alice, config_type, good).await.ok();
    }
    let groups = json!({ "defaultSetting": "allow all", "groupExceptions": [{ "groupName": "isInsuredPerson" }] });
    set_account_data(&server, &alice, PRO_CONFIG, groups).await.ok();
    set_account_data(&server, &alice, "org.example.anything", json!({ "defaultSetting": 5 })).await.ok();
}

/// A_26021-01, A_25045-02: "block all" refuses everyone but the users and
/// servers listed as exceptions, at `/invite` and createRoom alike; the
/// legacy type applies when the current one is absent.
#[tokio::test]
async fn a_26021_01_block_all_admits_only_the_exceptions() {
    let server = TestServer::start().await;
    let alice = server.register_user("alice").await;
    let bob = server.register_user("bob").await;
    let alice_api = server.api_as(&alice.access_token);
    let room_id = alice_api.create_room(json!({})).await;

    set_account_data(&server, &bob, LEGACY_CONFIG, json!({ "defaultSetting": "block all" })).await.ok();
    invite(&alice_api, &room_id, &bob).await.assert_error(403, "M_FORBIDDEN");
    set_account_data(&server, &bob, PRO_CONFIG, json!({ "defaultSetting": "block all" })).await.ok();
    create_room(&alice_api, json!({ "invite": [bob.user_id] })).await.assert_error(403, "M_FORBIDDEN");

    set_account_data(&server, &bob, PRO_CONFIG, json!({ "defaultSetting": "block all", "userExceptions": { alice.user_id.clone(): {} } })).await.ok();
    invite(&alice_api, &room_id, &bob).await.ok();

    let carol = server.register_user("carol").await;
    set_account_data(&server, &carol, PRO_CONFIG, json!({ "defaultSetting": "block all", "serverExceptions": { "localhost": {} } })).await.ok();
    invite(&alice_api, &room_id, &carol).await.ok();
}

/// A_26021-01: "allow all" admits everyone but the listed exceptions.
#[tokio::test]
async fn a_26021_01_allow_all_refuses_only_the_exceptions() {
    let server = TestServer::start().await;
    let alice = server.register_user("alice").await;
    let bob = server.register_user("bob").await;
    let carol = server.register_user("carol").await;
    let config = json!({ "defaultSetting": "allow all", "userExceptions": { carol.user_id.clone(): {} } });
    set_account_data(&server, &bob, PRO_CONFIG, config).await.ok();

    let carol_api = server.api_as(&carol.access_token);
    let room_id = carol_api.create_room(json!({})).await;
    invite(&carol_api, &room_id, &bob).await.assert_error(403, "M_FORBIDDEN");
    server.api_as(&alice.access_token).create_room(json!({ "invite": [bob.user_id] })).await;
}

/// A_25704: staff can block (or admit) insured persons as a group with
/// `groupExceptions: [{"groupName": "isInsuredPerson"}]`.
#[tokio::test]
async fn a_25704_insured_persons_can_be_blocked_as_a_group() {
    let server = TestServer::start().await;
    let ida = server.register_insured("ida", KVNR_IDA).await;
    let alice = server.register_user("alice").await;
    let bob = server.register_user("bob").await;
    let ida_api = server.api_as(&ida.access_token);
    let room_id = ida_api.create_room(json!({ "initial_state": [encryption()] })).await;

    let no_insured = json!({ "defaultSetting": "allow all", "groupExceptions": [{ "groupName": "isInsuredPerson" }] });
    set_account_data(&server, &bob, PRO_CONFIG, no_insured).await.ok();
    invite(&ida_api, &room_id, &bob).await.assert_error(403, "M_FORBIDDEN");
    server.api_as(&alice.access_token).create_room(json!({ "invite": [bob.user_id] })).await;

    let only_insured = json!({ "defaultSetting": "block all", "groupExceptions": [{ "groupName": "isInsuredPerson" }] });
    set_account_data(&server, &bob, PRO_CONFIG, only_insured).await.ok();
    invite(&ida_api, &room_id, &bob).await.ok();
}

/// A_25705 (AF_10233): insured persons never invite each other, whatever
/// their permission configs say (UC03.09).
#[tokio::test]
async fn a_25705_insured_persons_cannot_invite_each_other() {
    let server = TestServer::start().await;
    let ida = server.register_insured("ida", KVNR_IDA).await;
    let ina = server.register_insured("ina", KVNR_INA).await;
    let ida_api = server.api_as(&ida.access_token);

    create_room(&ida_api, json!({ "invite": [ina.user_id], "initial_state": [encryption()] })).await.assert_error(403, "M_FORBIDDEN");
    set_account_data(&server, &ina, EPA_CONFIG, json!({ "defaultSetting": "block all", "userExceptions": { ida.user_id.clone(): {} } })).await.ok();
    let room_id = ida_api.create_room(json!({ "initial_state": [encryption()] })).await;
    invite(&ida_api, &room_id, &ina).await.assert_error(403, "M_FORBIDDEN");

    // Staff may invite them.
    let alice_api = server.api_as(&server.register_user("alice").await.access_token);
    alice_api.create_room(json!({ "invite": [ida.user_id] })).await;
}

/// A_25043: a new insured person's account starts with the configured
/// permission config, visible to their clients and enforced.
#[tokio::test]
async fn a_25043_new_insured_accounts_start_with_the_configured_permission_config() {
    let server = TestServer::start_with(|config| {
        config.tim.default_insured_permission_config = json!({ "defaultSetting": "block all", "serverExceptions": { "other.example": {} } });
    })
    .await;
    let ida = server.register_insured("ida", KVNR_IDA).await;
    let stored = server.api_as(&ida.access_token).get(&format!("/_matrix/client/v3/user/{}/account_data/{EPA_CONFIG}", enc(&ida.user_id))).await;
    assert_eq!(stored.ok()["defaultSetting"], "block all", "{stored}");

    let alice_api = server.api_as(&server.register_user("alice").await.access_token);
    create_room(&alice_api, json!({ "invite": [ida.user_id] })).await.assert_error(403, "M_FORBIDDEN");
}

// ------------------------------------------------------------ privacy

/// A_26289: profile lookups need a token (401) and a shared room (403).
#[tokio::test]
async fn a_26289_profile_lookups_need_a_token_and_a_shared_room() {
    let server = TestServer::start().await;
    let (alice, bob, _) = server.two_users_in_a_room().await;
    let carol = server.register_user("carol").await;

    for field in ["", "/displayname", "/avatar_url"] {
        let path = format!("/_matrix/client/v3/profile/{}{field}", enc(&alice.user_id));
        server.api().get(&path).await.assert_error(401, "M_MISSING_TOKEN");
        server.api_as(&carol.access_token).get(&path).await.assert_error(403, "M_FORBIDDEN");
        server.api_as(&bob.access_token).get(&path).await.ok();
        server.api_as(&alice.access_token).get(&path).await.ok();
    }
    // Unknown users look no different from strangers.
    let unknown = format!("/_matrix/client/v3/profile/{}", enc(&user_id("nobody")));
    server.api_as(&carol.access_token).get(&unknown).await.assert_error(403, "M_FORBIDDEN");
}

/// A_26375: the user directory only finds users who share a room with the
/// searcher (UC06X: insured persons do not find each other).
#[tokio::test]
async fn a_26375_user_directory_only_finds_users_sharing_a_room() {
    let server = TestServer::start().await;
    let (alice, _bob, _) = server.two_users_in_a_room().await;
    server.register_user("carol").await;
    let ida = server.register_insured("ida", KVNR_IDA).await;
    server.register_insured("ina", KVNR_INA).await;

    let search = |token: &str, term: &str| {
        let api = server.api_as(token);
        let term = term.to_owned();
        async move {
            let reply = api.post("/_matrix/client/v3/user_directory/search", json!({ "search_term": term })).await;
            reply.ok()["results"].as_array().cloned().unwrap_or_default().iter().filter_map(|user| user["user_id"].as_str().map(str::to_owned)).collect::<Vec<_>>()
        }
    };
    assert_eq!(search(&alice.access_token, "bob").await, [user_id("bob")]);
    assert!(search(&alice.access_token, "carol").await.is_empty());
    assert!(search(&ida.access_token, "ina").await.is_empty());
}

/// A_26265: `/.well-known/matrix/support` serves the configured contacts.
#[tokio::test]
async fn a_26265_support_contacts_come_from_the_config() {
    let server = TestServer::start_with(|config| {
        config.support.admin_email = Some("support@insurer.example".to_owned());
        config.support.admin_matrix_id = Some("@service-desk:localhost".to_owned());
        config.support.support_page = Some("https://insurer.example/messenger".to_owned());
    })
    .await;
    let reply = server.api().get("/.well-known/matrix/support").await;
    let body = reply.ok();
    assert_eq!(body["contacts"][0]["email_address"], "support@insurer.example", "{reply}");
    assert_eq!(body["contacts"][0]["matrix_id"], "@service-desk:localhost", "{reply}");
    assert_eq!(body["support_page"], "https://insurer.example/messenger", "{reply}");
    server.api().delete("/.well-known/matrix/support", json!({})).await.assert_error(405, "M_UNRECOGNIZED");
}

// ------------------------------------------------------- account kinds

/// Staff accounts are created, listed and deactivated by server admins
/// (`/_tim/admin/v1/staff`); insured persons' accounts are not staff.
#[tokio::test]
async fn staff_accounts_are_managed_by_server_admins() {
    let server = TestServer::start().await;
    let admin = server.api_as(&server.register_admin("root").await.access_token);
    let alice = server.register_user("alice").await;
    server.register_insured("ida", KVNR_IDA).await;
    let new_staff = json!({ "username": "service-desk", "password": "a long passphrase", "displayname": "Service Desk" });

    server.api().post("/_tim/admin/v1/staff", new_staff.clone()).await.assert_error(401, "M_MISSING_TOKEN");
    server.api_as(&alice.access_token).post("/_tim/admin/v1/staff", new_staff.clone()).await.assert_error(403, "M_FORBIDDEN");
    let created = admin.post("/_tim/admin/v1/staff", new_staff).await;
    assert_eq!(created.ok()["user_id"], user_id("service-desk"), "{created}");
    let desk_token = server.new_session("service-desk", "a long passphrase").await;

    let listed = admin.get("/_tim/admin/v1/staff").await;
    let names: Vec<&str> = listed.ok()["accounts"].as_array().into_iter().flatten().filter_map(|account| account["user_id"].as_str()).collect();
    assert_eq!(names, [user_id("alice"), user_id("root"), user_id("service-desk")], "{listed}");

    let deactivate = |user: &str| format!("/_tim/admin/v1/staff/{}/deactivate", enc(user));
    admin.post(&deactivate(&user_id("ida")), json!({})).await.assert_error(404, "M_NOT_FOUND");
    admin.post(&deactivate(&user_id("service-desk")), json!({})).await.ok();
    server.api_as(&desk_token).get("/_matrix/client/v3/account/whoami").await.assert_error(401, "M_UNKNOWN_TOKEN");
    let listed = admin.get("/_tim/admin/v1/staff").await;
    let desk = listed.ok()["accounts"].as_array().into_iter().flatten().find(|account| account["user_id"] == user_id("service-desk")).cloned();
    assert_eq!(desk.map(|account| account["deactivated"].clone()), Some(json!(true)), "{listed}");
}
