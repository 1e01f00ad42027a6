//! Several physical databases: ids spread over all of them by the shard
//! map, users and rooms on different databases chat as on one, a crash
//! between a room's commit and its members' indexes is repaired, and a
//! database list in the wrong order is refused.

mod common;

use common::{TestServer, api::sync_timeline, message_bodies};
use homeserver::Homeserver;
use ruma::{RoomId, UserId};
use serde_json::json;

/// Counts the rows of `table` in every database, in token order.
async fn rows_per_database(server: &TestServer, table: &str) -> Vec<i64> {
    let mut counts = Vec::new();
    for shard in server.server().db.shards() {
        let query = format!("SELECT COUNT(*) FROM {table}");
        counts.push(sqlx::query_scalar(sqlx::AssertSqlSafe(query)).fetch_one(&shard.pool).await.expect("counting"));
    }
    counts
}

#[tokio::test(flavor = "multi_thread")]
async fn users_and_rooms_spread_over_every_database_and_chat_across_them() {
    let server = TestServer::start_sharded(2, |_| {}).await;
    let db = &server.server().db;
    // Twelve users and their rooms: with 256 logical shards split evenly,
    // all on one database would be a 1 in 2000 chance.
    let mut users = Vec::new();
    for n in 0..12 {
        users.push(server.register_user(&format!("user{n}")).await);
    }
    for user in &users {
        server.api_as(&user.access_token).create_room(json!({})).await;
    }
    let per_database = rows_per_database(&server, "users").await;
    assert!(per_database.iter().all(|count| *count > 0), "users per database: {per_database:?}");
    let per_database = rows_per_database(&server, "rooms").await;
    assert!(per_database.iter().all(|count| *count > 0), "rooms per database: {per_database:?}");

    // A room on one database, a member on the other.
    let shard_of_user = |user: &common::RegisteredUser| db.user_shard_index(&UserId::parse(user.user_id.as_str()).expect("user id"));
    let alice = &users[0];
    let bob = users.iter().find(|user| shard_of_user(user) != shard_of_user(alice)).expect("users on both databases");
    let alice_api = server.api_as(&alice.access_token);
    let room_id = loop {
        let room_id = alice_api.create_room(json!({ "invite": [bob.user_id] })).await;
        if db.room_shard_index(&RoomId::parse(room_id.as_str()).expect("room id")) != shard_of_user(bob) {
            break room_id;
        }
    };
    let bob_api = server.api_as(&bob.access_token);
    let invited = bob_api.sync(None, 0).await;
    assert!(invited.ok()["rooms"]["invite"][&room_id].is_object(), "the invite reaches Bob's database: {invited}");
    bob_api.join(&room_id).await.ok();
    let since = bob_api.sync(None, 0).await.str("next_batch");
    alice_api.send_text(&room_id, "across databases").await.ok();
    let replies = bob_api.sync_until(&since, std::time::Duration::from_secs(10), |reply| !sync_timeline(reply.ok(), &room_id).is_empty()).await;
    let timeline = sync_timeline(replies.last().expect("a reply").ok(), &room_id);
    assert_eq!(message_bodies(&timeline), ["across databases"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_membership_left_half_done_by_a_crash_is_repaired() {
    let server = TestServer::start_sharded(2, |_| {}).await;
    let (alice, bob) = (server.register_user("alice").await, server.register_user("bob").await);
    let room_id = server.api_as(&alice.access_token).create_room(json!({ "invite": [bob.user_id] })).await;
    let (room, bob_id) = (RoomId::parse(room_id.as_str()).expect("room id"), UserId::parse(bob.user_id.as_str()).expect("user id"));
    let db = &server.server().db;

    // What a writer that died after the room's commit leaves behind: the
    // member event and the outbox flag, but no entry in Bob's index.
    sqlx::query("DELETE FROM user_rooms WHERE user_id = $1 AND room_id = $2").bind(bob.user_id.as_str()).bind(room_id.as_str()).execute(db.user_shard(&bob_id)).await.expect("deleting");
    sqlx::query("UPDATE room_memberships SET index_pending = TRUE, changed_ts = 0 WHERE room_id = $1 AND user_id = $2")
        .bind(room_id.as_str())
        .bind(bob.user_id.as_str())
        .execute(db.room_shard(&room))
        .await
        .expect("flagging");
    let bob_api = server.api_as(&bob.access_token);
    assert!(bob_api.sync(None, 0).await.ok()["rooms"]["invite"][&room_id].is_null(), "the half-done invite is not listed");

    let repaired = homeserver::rooms::user_index::repair_pending(server.server()).await.expect("repairing");
    assert_eq!(repaired, 1);
    assert!(bob_api.sync(None, 0).await.ok()["rooms"]["invite"][&room_id].is_object(), "the repaired invite is listed");
    assert_eq!(homeserver::rooms::user_index::repair_pending(server.server()).await.expect("repairing"), 0, "nothing left to repair");
}

#[tokio::test(flavor = "multi_thread")]
async fn databases_listed_in_another_order_are_refused() {
    let mut server = TestServer::start_sharded(2, |_| {}).await;
    server.stop().await;
    let mut config = server.config().clone();
    let last = config.database.shards.len() - 1;
    std::mem::swap(&mut config.database.url, &mut config.database.shards[last]);
    let err = Homeserver::start(config).await.err().expect("a reordered list must not start");
    assert!(format!("{err:#}").contains("may only be added at the end"), "{err:#}");
}
