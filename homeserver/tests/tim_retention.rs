//! TI-M retention (`tim::retention`): rows are backdated in the test
//! database and the job is run with an explicit clock, as the background
//! task and `homeserver retention run` do.

mod common;

use common::{TestServer, api::{Api, enc}};
use homeserver::{
    storage::now_ms,
    tim::retention::{self, Rule},
};
use serde_json::{Value, json};
use sqlx::Connection as _;

const DAY_MS: i64 = 24 * 3_600_000;
const KVNR_IDA: &str = "A000000014";
const KVNR_INA: &str = "B000000028";

async fn server() -> TestServer {
    // The job runs only when a test runs it.
    TestServer::start_with(|config| config.tim.retention.enabled = false).await
}

async fn invite(api: &Api, room_id: &str, user_id: &str) {
    api.post(&format!("/_matrix/client/v3/rooms/{}/invite", enc(room_id)), json!({ "user_id": user_id })).await.ok();
}

/// Moves every event of the room `days` into the past.
async fn backdate_events(server: &TestServer, room_id: &str, days: i64) {
    let hs = server.server();
    let room = ruma::RoomId::parse(room_id).unwrap();
    sqlx::query("UPDATE events SET origin_server_ts = origin_server_ts - $2 WHERE room_id = $1")
        .bind(room_id)
        .bind(days * DAY_MS)
        .execute(hs.db.room_shard(&room))
        .await
        .unwrap();
}

async fn event_count(server: &TestServer, room_id: &str) -> i64 {
    let room = ruma::RoomId::parse(room_id).unwrap();
    sqlx::query_scalar("SELECT count(*) FROM events WHERE room_id = $1").bind(room_id).fetch_one(server.server().db.room_shard(&room)).await.unwrap()
}

async fn room_exists(server: &TestServer, room_id: &str) -> bool {
    let room = ruma::RoomId::parse(room_id).unwrap();
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM rooms WHERE room_id = $1)").bind(room_id).fetch_one(server.server().db.room_shard(&room)).await.unwrap()
}

/// Runs the job over every database at `now`; returns the rooms it acted on.
async fn run(server: &TestServer, dry_run: bool, now: i64) -> Vec<(String, Rule)> {
    let reports = retention::run_all(server.server(), dry_run, now).await.unwrap();
    reports.into_iter().flat_map(|report| report.expect("no worker holds the lease").rooms).map(|(room, rule)| (room.to_string(), rule)).collect()
}

fn section<'a>(sync: &'a Value, section: &str, room_id: &str) -> Option<&'a Value> {
    sync["rooms"][section].get(room_id)
}

#[tokio::test]
async fn an_inactive_room_is_purged_and_its_members_see_it_left() {
    let server = server().await;
    let (alice, bob, old_room) = server.two_users_in_a_room().await;
    let (alice, bob) = (server.api_as(&alice.access_token), server.api_as(&bob.access_token));
    alice.send_text(&old_room, "from last year").await.ok();
    let active_room = alice.create_room(json!({})).await;
    invite(&alice, &active_room, &common::user_id("bob")).await;
    bob.join(&active_room).await.ok();
    alice.send_text(&active_room, "today").await.ok();
    let since = bob.sync(None, 0).await.str("next_batch");

    backdate_events(&server, &old_room, 200).await;
    let events_before = event_count(&server, &old_room).await;

    // Dry run: the room is named, nothing changes.
    assert_eq!(run(&server, true, now_ms()).await, vec![(old_room.clone(), Rule::Inactive)]);
    assert_eq!(event_count(&server, &old_room).await, events_before);
    let quiet = bob.sync(Some(&since), 0).await;
    assert!(section(&quiet.body, "leave", &old_room).is_none(), "{quiet}");

    assert_eq!(run(&server, false, now_ms()).await, vec![(old_room.clone(), Rule::Inactive)]);
    assert_eq!(event_count(&server, &old_room).await, 0);
    assert!(!room_exists(&server, &old_room).await);
    assert!(room_exists(&server, &active_room).await);

    // Bob's next sync reports the room left; a fresh sync does not list
    // it as joined; the active room is untouched.
    let next = bob.sync(Some(&since), 0).await;
    assert!(section(&next.body, "leave", &old_room).is_some(), "{next}");
    let fresh = bob.sync(None, 0).await;
    assert!(section(&fresh.body, "join", &old_room).is_none(), "{fresh}");
    let timeline = common::api::sync_timeline(&fresh.body, &active_room);
    assert!(timeline.iter().any(|event| event["content"]["body"] == "today"), "{fresh}");
    // The room is gone for writes too.
    let refused = alice.send_text(&old_room, "anyone?").await;
    assert!(refused.status.is_client_error(), "{refused}");

    let metrics = server.server().metrics.render().unwrap();
    assert!(metrics.contains(r#"tim_retention_rooms_purged_total{reason="inactive"} 1"#), "{metrics}");
    // The room's events and the two leaves the job wrote first.
    assert!(metrics.contains(&format!("tim_retention_events_deleted_total {}", events_before + 2)), "{metrics}");
    assert!(metrics.contains("tim_retention_run_duration_seconds_count"), "{metrics}");
    // A second run finds nothing.
    assert!(run(&server, false, now_ms()).await.is_empty());
}

#[tokio::test]
async fn an_orphaned_room_is_purged_after_the_threshold() {
    let server = server().await;
    let alice = server.api_as(&server.register_user("alice").await.access_token);
    let orphan = alice.create_room(json!({ "name": "nobody came" })).await;
    let with_message = alice.create_room(json!({})).await;
    alice.send_text(&with_message, "a note to myself").await.ok();
    let hs = server.server();
    for room_id in [&orphan, &with_message] {
        let room = ruma::RoomId::parse(room_id.as_str()).unwrap();
        sqlx::query("UPDATE rooms SET created_ts = created_ts - $2 WHERE room_id = $1")
            .bind(room_id.as_str())
            .bind(50 * DAY_MS)
            .execute(hs.db.room_shard(&room))
            .await
            .unwrap();
    }
    // Younger than 42 days: nothing yet.
    assert!(run(&server, false, now_ms() - 10 * DAY_MS).await.is_empty());
    assert_eq!(run(&server, false, now_ms()).await, vec![(orphan.clone(), Rule::Orphaned)]);
    assert!(!room_exists(&server, &orphan).await);
    assert!(room_exists(&server, &with_message).await, "a room with a message is not orphaned");
}

#[tokio::test]
async fn local_users_leave_insured_only_rooms_after_the_grace_period() {
    let server = server().await;
    let staff_user = server.register_user("sabine").await;
    let staff = server.api_as(&staff_user.access_token);
    let ida_user = server.register_insured("ida", KVNR_IDA).await;
    let ina_user = server.register_insured("ina", KVNR_INA).await;
    let (ida, ina) = (server.api_as(&ida_user.access_token), server.api_as(&ina_user.access_token));

    // Staff brings two insured persons together, then leaves them alone.
    let room_id = staff.create_room(json!({ "invite": [ida_user.user_id] })).await;
    invite(&staff, &room_id, &ina_user.user_id).await;
    ida.join(&room_id).await.ok();
    ina.join(&room_id).await.ok();
    ida.send_text(&room_id, "hello").await.ok();
    // A room with staff in it stays whatever happens.
    let mixed = staff.create_room(json!({ "invite": [ida_user.user_id] })).await;
    ida.join(&mixed).await.ok();
    staff.post(&format!("/_matrix/client/v3/rooms/{}/leave", enc(&room_id)), json!({})).await.ok();
    let since = ida.sync(None, 0).await.str("next_batch");

    // Within the grace period (a week by default) nothing happens.
    assert!(run(&server, false, now_ms() + 6 * DAY_MS).await.is_empty());
    assert!(section(&ida.sync(Some(&since), 0).await.body, "leave", &room_id).is_none());

    assert_eq!(run(&server, false, now_ms() + 8 * DAY_MS).await, vec![(room_id.clone(), Rule::InsuredOnly)]);
    for api in [&ida, &ina] {
        let next = api.sync(Some(&since), 0).await;
        let left = section(&next.body, "leave", &room_id);
        assert!(left.is_some(), "{next}");
    }
    assert!(!room_exists(&server, &room_id).await);
    assert!(room_exists(&server, &mixed).await);
    let joined = ida.get("/_matrix/client/v3/joined_rooms").await;
    assert_eq!(joined.ok()["joined_rooms"], json!([mixed]));
    let metrics = server.server().metrics.render().unwrap();
    assert!(metrics.contains("tim_retention_members_removed_total 2"), "{metrics}");
}

#[tokio::test]
async fn a_run_holds_the_lease_of_its_database() {
    let server = server().await;
    let (alice, _bob, room_id) = server.two_users_in_a_room().await;
    server.api_as(&alice.access_token).send_text(&room_id, "old").await.ok();
    backdate_events(&server, &room_id, 200).await;
    // Another worker's run holds the lease of the room's database: this
    // run skips that database.
    let hs = server.server();
    let room = ruma::RoomId::parse(room_id.as_str()).unwrap();
    let mut holder = sqlx::PgConnection::connect_with(&hs.db.room_shard(&room).connect_options()).await.unwrap();
    let key = retention::LEASE.key;
    let taken: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)").bind(key).fetch_one(&mut holder).await.unwrap();
    assert!(taken);
    let reports = retention::run_all(hs, false, now_ms()).await.unwrap();
    assert!(reports[hs.db.room_shard_index(&room)].is_none());
    assert!(room_exists(&server, &room_id).await);
    holder.close().await.unwrap();
    assert_eq!(run(&server, false, now_ms()).await, vec![(room_id.clone(), Rule::Inactive)]);
}
