//! Server-side key backups: versions, keys at the three levels of
//! `/room_keys/keys`, and the rules clients rely on (keys go only into the
//! current version, the better key of a session wins, `count` and `etag`
//! follow every change, concurrent uploads all land); and the account data
//! that secret storage and cross-signing keep their secrets in.

mod common;

use common::{
    TestServer,
    api::{Api, Reply, enc},
    password_of,
};
use serde_json::{Value, json};

const VERSION: &str = "/_matrix/client/v3/room_keys/version";
const KEYS: &str = "/_matrix/client/v3/room_keys/keys";
const MEGOLM_BACKUP_V1: &str = "m.megolm_backup.v1.curve25519-aes-sha2";
const ROOM_A: &str = "!roomA:localhost";
const ROOM_B: &str = "!roomB:localhost";

fn auth_data(public_key: &str) -> Value {
    json!({ "public_key": public_key, "signatures": { "@alice:localhost": { "ed25519:DEVICE": "c2lnbmF0dXJl" } } })
}

/// `POST /room_keys/version`; returns the new version.
async fn create_version(api: &Api, public_key: &str) -> String {
    let reply = api.post(VERSION, json!({ "algorithm": MEGOLM_BACKUP_V1, "auth_data": auth_data(public_key) })).await;
    reply.ok();
    reply.str("version")
}

/// A key as a client uploads it. `tag` goes into the ciphertext so a test
/// can tell which upload the server kept.
fn key(first_message_index: u64, forwarded_count: u64, is_verified: bool, tag: &str) -> Value {
    json!({
        "first_message_index": first_message_index,
        "forwarded_count": forwarded_count,
        "is_verified": is_verified,
        "session_data": { "ephemeral": "ZXBoZW1lcmFs", "ciphertext": tag, "mac": "bWFj" },
    })
}

fn all_keys(version: &str) -> String {
    format!("{KEYS}?version={version}")
}

fn room_keys(room_id: &str, version: &str) -> String {
    format!("{KEYS}/{}?version={version}", enc(room_id))
}

fn session_key(room_id: &str, session_id: &str, version: &str) -> String {
    format!("{KEYS}/{}/{}?version={version}", enc(room_id), enc(session_id))
}

/// The `(count, etag)` of an answer to a write of keys or to `GET
/// /room_keys/version…`.
#[track_caller]
fn count_and_etag(reply: &Reply) -> (u64, String) {
    let body = reply.ok();
    (body["count"].as_u64().unwrap_or_else(|| panic!("no count in {reply}")), reply.str("etag"))
}

/// The ciphertext (the upload's tag) of the key stored for a session.
async fn stored_tag(api: &Api, room_id: &str, session_id: &str, version: &str) -> String {
    let reply = api.get(&session_key(room_id, session_id, version)).await;
    reply.ok()["session_data"]["ciphertext"].as_str().unwrap_or_else(|| panic!("no ciphertext in {reply}")).to_owned()
}

#[tokio::test]
async fn versions_are_created_read_updated_and_deleted() {
    let server = TestServer::start().await;
    let alice = server.api_as(&server.register_user("alice").await.access_token);

    alice.get(VERSION).await.assert_error(404, "M_NOT_FOUND");

    let first = create_version(&alice, "key1").await;
    let latest = alice.get(VERSION).await;
    let body = latest.ok();
    assert_eq!((body["algorithm"].as_str(), &body["auth_data"], body["version"].as_str()), (Some(MEGOLM_BACKUP_V1), &auth_data("key1"), Some(first.as_str())), "{latest}");
    assert_eq!(count_and_etag(&latest).0, 0);
    assert_eq!(alice.get(&format!("{VERSION}/{first}")).await.ok(), body, "the version by number is the latest one");

    // Only auth_data may change, and the body's version must match the path.
    let path = format!("{VERSION}/{first}");
    alice.put(&path, json!({ "algorithm": MEGOLM_BACKUP_V1, "auth_data": auth_data("key1-resigned"), "version": first })).await.ok();
    assert_eq!(alice.get(&path).await.ok()["auth_data"], auth_data("key1-resigned"));
    alice.put(&path, json!({ "algorithm": "org.example.other", "auth_data": {} })).await.assert_error(400, "M_INVALID_PARAM");
    alice.put(&path, json!({ "algorithm": MEGOLM_BACKUP_V1, "auth_data": auth_data("x"), "version": "999" })).await.assert_error(400, "M_INVALID_PARAM");
    alice.put(&format!("{VERSION}/999"), json!({ "algorithm": MEGOLM_BACKUP_V1, "auth_data": auth_data("x") })).await.assert_error(404, "M_NOT_FOUND");
    assert_eq!(alice.get(&path).await.ok()["auth_data"], auth_data("key1-resigned"), "refused updates change nothing");

    // The spec defines one algorithm; others are refused.
    alice.post(VERSION, json!({ "algorithm": "org.example.other", "auth_data": {} })).await.assert_error(400, "M_INVALID_PARAM");
    alice.post(VERSION, json!({ "algorithm": MEGOLM_BACKUP_V1, "auth_data": "not an object" })).await.assert_error(400, "M_BAD_JSON");

    let second = create_version(&alice, "key2").await;
    assert!(second.parse::<u64>().unwrap() > first.parse::<u64>().unwrap(), "{second} after {first}");
    assert_eq!(alice.get(VERSION).await.str("version"), second, "the newest version is the current one");

    alice.delete(&format!("{VERSION}/{second}"), json!({})).await.ok();
    alice.get(&format!("{VERSION}/{second}")).await.assert_error(404, "M_NOT_FOUND");
    alice.delete(&format!("{VERSION}/{second}"), json!({})).await.ok();
    assert_eq!(alice.get(VERSION).await.str("version"), first, "with the newest deleted, the older live version is current");
    alice.delete(&format!("{VERSION}/999"), json!({})).await.assert_error(404, "M_NOT_FOUND");
    alice.get(&format!("{VERSION}/not-a-version")).await.assert_error(404, "M_NOT_FOUND");

    let third = create_version(&alice, "key3").await;
    assert!(third.parse::<u64>().unwrap() > second.parse::<u64>().unwrap(), "a deleted version's number is not reused: {third} after {second}");
}

#[tokio::test]
async fn keys_are_stored_read_and_deleted_at_all_three_levels() {
    let server = TestServer::start().await;
    let alice = server.api_as(&server.register_user("alice").await.access_token);
    let version = create_version(&alice, "key").await;

    let upload = json!({ "rooms": {
        ROOM_A: { "sessions": { "a1": key(0, 0, true, "a1"), "a2": key(1, 0, false, "a2") } },
        ROOM_B: { "sessions": { "b1": key(2, 1, false, "b1") } },
    }});
    let (count, etag_all) = count_and_etag(&alice.put(&all_keys(&version), upload).await);
    assert_eq!(count, 3);
    let (count, etag_room) = count_and_etag(&alice.put(&room_keys(ROOM_B, &version), json!({ "sessions": { "b2": key(0, 0, false, "b2") } })).await);
    assert_eq!(count, 4);
    let (count, etag_session) = count_and_etag(&alice.put(&session_key(ROOM_A, "a3", &version), key(5, 0, false, "a3")).await);
    assert_eq!(count, 5);
    assert!(etag_all != etag_room && etag_room != etag_session && etag_all != etag_session, "every upload changes the etag");
    assert_eq!(count_and_etag(&alice.get(VERSION).await), (5, etag_session.clone()), "the version reports the last write's count and etag");

    let all = alice.get(&all_keys(&version)).await;
    let rooms = &all.ok()["rooms"];
    let sessions_of = |room: &str| -> Vec<String> { rooms[room]["sessions"].as_object().map(|s| s.keys().cloned().collect()).unwrap_or_default() };
    assert_eq!((sessions_of(ROOM_A), sessions_of(ROOM_B)), (vec!["a1".to_owned(), "a2".to_owned(), "a3".to_owned()], vec!["b1".to_owned(), "b2".to_owned()]), "{all}");
    assert_eq!(rooms[ROOM_B]["sessions"]["b1"], key(2, 1, false, "b1"), "a key comes back as uploaded");

    let room = alice.get(&room_keys(ROOM_A, &version)).await;
    assert_eq!(room.ok()["sessions"].as_object().map(|s| s.len()), Some(3), "{room}");
    assert_eq!(alice.get(&room_keys("!empty:localhost", &version)).await.ok(), &json!({ "sessions": {} }));
    assert_eq!(alice.get(&session_key(ROOM_A, "a3", &version)).await.ok(), &key(5, 0, false, "a3"));
    alice.get(&session_key(ROOM_A, "nope", &version)).await.assert_error(404, "M_NOT_FOUND");

    let (count, etag) = count_and_etag(&alice.delete(&session_key(ROOM_A, "a1", &version), json!({})).await);
    assert_eq!(count, 4);
    assert_ne!(etag, etag_session);
    alice.get(&session_key(ROOM_A, "a1", &version)).await.assert_error(404, "M_NOT_FOUND");
    assert_eq!(count_and_etag(&alice.delete(&session_key(ROOM_A, "a1", &version), json!({})).await), (4, etag.clone()), "deleting nothing changes nothing");

    let (count, etag_room_deleted) = count_and_etag(&alice.delete(&room_keys(ROOM_B, &version), json!({})).await);
    assert_eq!(count, 2);
    assert_ne!(etag_room_deleted, etag);
    assert_eq!(alice.get(&room_keys(ROOM_B, &version)).await.ok(), &json!({ "sessions": {} }));

    let (count, etag_all_deleted) = count_and_etag(&alice.delete(&all_keys(&version), json!({})).await);
    assert_eq!(count, 0);
    assert_ne!(etag_all_deleted, etag_room_deleted);
    assert_eq!(alice.get(&all_keys(&version)).await.ok(), &json!({ "rooms": {} }));
    assert_eq!(count_and_etag(&alice.get(VERSION).await), (0, etag_all_deleted), "the version itself stays");
}

#[tokio::test]
async fn the_better_key_of_a_session_is_kept() {
    let server = TestServer::start().await;
    let alice = server.api_as(&server.register_user("alice").await.access_token);
    let version = create_version(&alice, "key").await;
    let path = session_key(ROOM_A, "session", &version);

    // (first_message_index, forwarded_count, is_verified, tag) uploaded in
    // turn, and the tag the server keeps after each.
    let steps = [
        ((5, 0, false, "first"), "first"),
        ((3, 2, false, "lower index"), "lower index"),
        ((4, 0, false, "higher index, fewer forwards"), "lower index"),
        ((3, 1, false, "same index, fewer forwards"), "same index, fewer forwards"),
        ((3, 1, false, "tie"), "same index, fewer forwards"),
        ((9, 9, true, "verified"), "verified"),
        ((0, 0, false, "unverified, index 0"), "verified"),
        ((8, 9, true, "verified, lower index"), "verified, lower index"),
    ];
    let mut last_etag = String::new();
    for ((index, forwards, verified, tag), kept) in steps {
        let (count, etag) = count_and_etag(&alice.put(&path, key(index, forwards, verified, tag)).await);
        assert_eq!(count, 1, "one session, however often it is uploaded");
        assert_eq!(stored_tag(&alice, ROOM_A, "session", &version).await, kept, "after uploading {tag:?}");
        assert_eq!(etag != last_etag, tag == kept, "the etag changes exactly when the stored key does (upload {tag:?})");
        last_etag = etag;
    }

    // The rule applies within a bulk upload too.
    let bulk = json!({ "rooms": { ROOM_A: { "sessions": { "session": key(8, 8, true, "bulk better") } } } });
    alice.put(&all_keys(&version), bulk).await.ok();
    assert_eq!(stored_tag(&alice, ROOM_A, "session", &version).await, "bulk better");
}

#[tokio::test]
async fn keys_go_only_into_the_current_version() {
    let server = TestServer::start().await;
    let alice = server.api_as(&server.register_user("alice").await.access_token);

    alice.put(&session_key(ROOM_A, "s", "1"), key(0, 0, false, "x")).await.assert_error(404, "M_NOT_FOUND");

    let old = create_version(&alice, "old").await;
    alice.put(&session_key(ROOM_A, "old", &old), key(0, 0, false, "old")).await.ok();
    let current = create_version(&alice, "current").await;

    let uploads = [
        (all_keys(&old), json!({ "rooms": { ROOM_A: { "sessions": { "s": key(0, 0, false, "x") } } } })),
        (room_keys(ROOM_A, &old), json!({ "sessions": { "s": key(0, 0, false, "x") } })),
        (session_key(ROOM_A, "s", &old), key(0, 0, false, "x")),
        (session_key(ROOM_A, "s", "not-a-version"), key(0, 0, false, "x")),
        (session_key(ROOM_A, "s", "999"), key(0, 0, false, "x")),
    ];
    for (path, body) in uploads {
        let reply = alice.put(&path, body).await;
        reply.assert_error(403, "M_WRONG_ROOM_KEYS_VERSION");
        assert_eq!(reply.str("current_version"), current, "{reply}");
    }
    assert_eq!(count_and_etag(&alice.get(&format!("{VERSION}/{old}")).await).0, 1, "refused uploads store nothing");
    assert_eq!(alice.get(&session_key(ROOM_A, "old", &old)).await.ok(), &key(0, 0, false, "old"), "older versions stay readable");

    alice.delete(&format!("{VERSION}/{current}"), json!({})).await.ok();
    let reply = alice.put(&session_key(ROOM_A, "s", &current), key(0, 0, false, "x")).await;
    reply.assert_error(403, "M_WRONG_ROOM_KEYS_VERSION");
    assert_eq!(reply.str("current_version"), old, "the older version is current again");
    alice.get(&all_keys(&current)).await.assert_error(404, "M_NOT_FOUND");
    alice.get(&session_key(ROOM_A, "s", &current)).await.assert_error(404, "M_NOT_FOUND");
    alice.delete(&all_keys(&current), json!({})).await.assert_error(404, "M_NOT_FOUND");
    alice.get(&all_keys("999")).await.assert_error(404, "M_NOT_FOUND");
}

#[tokio::test]
async fn deleting_a_version_drops_its_keys() {
    let server = TestServer::start().await;
    let alice = server.api_as(&server.register_user("alice").await.access_token);
    let version = create_version(&alice, "key").await;
    alice.put(&room_keys(ROOM_A, &version), json!({ "sessions": { "s1": key(0, 0, true, "s1"), "s2": key(0, 0, true, "s2") } })).await.ok();

    alice.delete(&format!("{VERSION}/{version}"), json!({})).await.ok();
    alice.get(&format!("{VERSION}/{version}")).await.assert_error(404, "M_NOT_FOUND");
    alice.get(VERSION).await.assert_error(404, "M_NOT_FOUND");
    alice.get(&room_keys(ROOM_A, &version)).await.assert_error(404, "M_NOT_FOUND");

    let next = create_version(&alice, "key").await;
    assert!(next.parse::<u64>().unwrap() > version.parse::<u64>().unwrap(), "{next} after {version}");
    assert_eq!(count_and_etag(&alice.get(VERSION).await).0, 0, "a new version starts empty");
}

#[tokio::test]
async fn backups_belong_to_their_user() {
    let server = TestServer::start().await;
    let alice = server.api_as(&server.register_user("alice").await.access_token);
    let bob = server.api_as(&server.register_user("bob").await.access_token);
    let version = create_version(&alice, "alice").await;
    alice.put(&session_key(ROOM_A, "s", &version), key(0, 0, true, "alice's")).await.ok();

    bob.get(VERSION).await.assert_error(404, "M_NOT_FOUND");
    bob.get(&format!("{VERSION}/{version}")).await.assert_error(404, "M_NOT_FOUND");
    bob.get(&session_key(ROOM_A, "s", &version)).await.assert_error(404, "M_NOT_FOUND");
    bob.delete(&format!("{VERSION}/{version}"), json!({})).await.assert_error(404, "M_NOT_FOUND");
    server.api().get(VERSION).await.assert_error(401, "M_MISSING_TOKEN");
    assert_eq!(stored_tag(&alice, ROOM_A, "s", &version).await, "alice's");
}

#[tokio::test]
async fn malformed_keys_are_refused_whole() {
    let server = TestServer::start().await;
    let alice = server.api_as(&server.register_user("alice").await.access_token);
    let version = create_version(&alice, "key").await;

    let with = |field: &str, value: Value| {
        let mut key = key(0, 0, true, "x");
        key[field] = value;
        key
    };
    let mut missing_field = key(0, 0, true, "x");
    missing_field.as_object_mut().unwrap().remove("is_verified");
    let bad_keys = [missing_field, with("first_message_index", json!(-1)), with("is_verified", json!("yes")), with("session_data", json!("text")), json!("not an object")];
    for bad in bad_keys {
        let upload = json!({ "sessions": { "good": key(0, 0, true, "good"), "bad": bad } });
        alice.put(&room_keys(ROOM_A, &version), upload).await.assert_error(400, "M_BAD_JSON");
    }
    let long_id = "x".repeat(300);
    alice.put(&session_key(ROOM_A, &long_id, &version), key(0, 0, true, "x")).await.assert_error(400, "M_INVALID_PARAM");
    alice.put(KEYS, json!({ "rooms": {} })).await.assert_error(400, "M_INVALID_PARAM");
    assert_eq!(alice.get(&all_keys(&version)).await.ok(), &json!({ "rooms": {} }), "nothing of a refused upload is stored");
}

/// Two devices of one user uploading at once: every key lands, and every
/// answer counts exactly the keys stored by then (the uploads take turns).
#[tokio::test(flavor = "multi_thread")]
async fn concurrent_uploads_all_land_and_are_counted() {
    const UPLOADS: usize = 20;
    let server = TestServer::start().await;
    let alice = server.register_user("alice").await;
    let devices = [
        server.api_as(&alice.access_token),
        server.api_as(&server.login("alice", &password_of("alice")).await.str("access_token")),
    ];
    let version = create_version(&devices[0], "key").await;

    let uploads = (0..UPLOADS).map(|i| {
        let device = devices[i % devices.len()].clone();
        let version = version.clone();
        tokio::spawn(async move {
            let room = if i % 2 == 0 { ROOM_A } else { ROOM_B };
            let reply = if i % 3 == 0 {
                device.put(&room_keys(room, &version), json!({ "sessions": { format!("s{i}"): key(0, 0, true, "x") } })).await
            } else {
                device.put(&session_key(room, &format!("s{i}"), &version), key(0, 0, true, "x")).await
            };
            count_and_etag(&reply)
        })
    });
    let mut answers = Vec::new();
    for upload in uploads.collect::<Vec<_>>() {
        answers.push(upload.await.expect("upload task"));
    }

    let mut counts: Vec<u64> = answers.iter().map(|(count, _)| *count).collect();
    counts.sort_unstable();
    assert_eq!(counts, (1..=UPLOADS as u64).collect::<Vec<_>>(), "each upload saw the ones before it");
    let mut etags: Vec<&String> = answers.iter().map(|(_, etag)| etag).collect();
    etags.sort_unstable();
    etags.dedup();
    assert_eq!(etags.len(), UPLOADS, "every upload made its own etag");

    assert_eq!(count_and_etag(&devices[1].get(VERSION).await).0, UPLOADS as u64);
    let all = devices[1].get(&all_keys(&version)).await;
    let stored: usize = all.ok()["rooms"].as_object().unwrap().values().map(|room| room["sessions"].as_object().unwrap().len()).sum();
    assert_eq!(stored, UPLOADS, "{all}");
}

/// Secret storage (SSSS), cross-signing and the backup key keep their
/// secrets in global account data; all of it must round-trip as sent and
/// reach the user's other devices through `/sync`.
#[tokio::test]
async fn secret_storage_account_data_round_trips() {
    let server = TestServer::start().await;
    let alice = server.register_user("alice").await;
    let api = server.api_as(&alice.access_token);
    let encrypted = json!({ "encrypted": { "keyid": { "iv": "aXY=", "ciphertext": "Y2lwaGVy", "mac": "bWFj" } } });
    let entries = [
        ("m.secret_storage.default_key", json!({ "key": "keyid" })),
        (
            "m.secret_storage.key.keyid",
            json!({
                "algorithm": "m.secret_storage.v1.aes-hmac-sha2",
                "name": "Recovery key",
                "iv": "aXY=",
                "mac": "bWFj",
                "passphrase": { "algorithm": "m.pbkdf2", "salt": "c2FsdA", "iterations": 500000 },
            }),
        ),
        ("m.cross_signing.master", encrypted.clone()),
        ("m.cross_signing.self_signing", encrypted.clone()),
        ("m.cross_signing.user_signing", encrypted.clone()),
        ("m.megolm_backup.v1", encrypted.clone()),
    ];
    for (data_type, content) in &entries {
        let path = format!("/_matrix/client/v3/user/{}/account_data/{data_type}", enc(&alice.user_id));
        api.put(&path, content.clone()).await.ok();
        assert_eq!(api.get(&path).await.ok(), content, "{data_type}");
    }

    let other_device = server.api_as(&server.login("alice", &password_of("alice")).await.str("access_token"));
    let sync = other_device.sync(None, 0).await;
    let synced = sync.ok()["account_data"]["events"].as_array().cloned().unwrap_or_default();
    for (data_type, content) in &entries {
        let event = synced.iter().find(|event| event["type"] == *data_type).unwrap_or_else(|| panic!("{data_type} not in {sync}"));
        assert_eq!(&event["content"], content, "{data_type}");
    }
}
