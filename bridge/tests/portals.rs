//! The bridge as an application service against a real homeserver: its
//! transaction endpoint, portals opened by staff inviting ghosts, refusals
//! for everyone else, and the bot's management commands.

mod support;

use std::time::Duration;

use kim_bridge::{bridge::Bridge, store};
use serde_json::{Value, json};
use support::{
    Deployment, SOON,
    common::{
        api::{Api, enc},
        database::TestDatabase,
    },
    eventually, newest_events,
};

const PRAXIS: &str = "praxis.mueller@praxis.kim.telematik";

/// The room's members with membership `join`.
async fn joined(api: &Api, room_id: &str) -> Vec<String> {
    let reply = api
        .get(&format!(
            "/_matrix/client/v3/rooms/{}/joined_members",
            enc(room_id)
        ))
        .await;
    reply.ok()["joined"]
        .as_object()
        .map(|joined| joined.keys().cloned().collect())
        .unwrap_or_default()
}

/// Waits for an `m.notice` from `sender` whose body contains `text`.
async fn notice_from(api: &Api, room_id: &str, sender: &str, text: &str) -> Value {
    eventually(
        SOON,
        &format!("a notice from {sender} with {text:?}"),
        || async {
            newest_events(api, room_id).await.into_iter().find(|event| {
                event["sender"] == sender
                    && event["content"]["msgtype"] == "m.notice"
                    && event["content"]["body"]
                        .as_str()
                        .is_some_and(|body| body.contains(text))
            })
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn transactions_need_the_hs_token_and_are_taken_in_once() {
    let db = TestDatabase::create().await;
    let mut config =
        kim_bridge::config::Config::parse(&kim_bridge::config::example()).expect("example");
    config.database.url = db.url().to_owned();
    config.appservice.hs_token = "the-hs-token".to_owned();
    config.appservice.as_token = "the-as-token".to_owned();
    // The appservice server alone: no dispatcher works the queue off.
    let bridge = Bridge::connect(config).await.expect("connecting");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binding");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    tokio::spawn(
        axum::serve(listener, kim_bridge::appservice::router(bridge.clone())).into_future(),
    );

    let http = reqwest::Client::new();
    let event = json!({
        "type": "m.room.message", "event_id": "$one", "room_id": "!room:example.org", "sender": "@alice:example.org",
        "origin_server_ts": 1, "content": { "msgtype": "m.text", "body": "Hallo" }
    });
    let body = json!({ "events": [event] });
    let put = |token: Option<&str>, txn: &str| {
        let request = http
            .put(format!("{url}/_matrix/app/v1/transactions/{txn}"))
            .json(&body);
        match token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
        .send()
    };
    assert_eq!(put(None, "1").await.expect("answer").status(), 401);
    assert_eq!(
        put(Some("the-as-token"), "1")
            .await
            .expect("answer")
            .status(),
        403
    );
    for _ in 0..2 {
        assert_eq!(
            put(Some("the-hs-token"), "1")
                .await
                .expect("answer")
                .status(),
            200
        );
    }
    assert_eq!(
        put(Some("the-hs-token"), "2")
            .await
            .expect("answer")
            .status(),
        200
    );
    let queued: Vec<(String, Value)> =
        sqlx::query_as("SELECT txn_id, body FROM incoming_events ORDER BY id")
            .fetch_all(&bridge.db)
            .await
            .expect("query");
    assert_eq!(
        queued
            .iter()
            .map(|(txn, _)| txn.as_str())
            .collect::<Vec<_>>(),
        ["1", "2"],
        "a repeated transaction is not queued again"
    );
    assert_eq!(queued[0].1["content"]["body"], "Hallo");

    // The legacy query-parameter token works as well; a ping is answered.
    let ping = http
        .post(format!(
            "{url}/_matrix/app/v1/ping?access_token=the-hs-token"
        ))
        .json(&json!({}))
        .send()
        .await
        .expect("answer");
    assert_eq!(ping.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_staff_member_opens_a_portal_by_inviting_a_ghost() {
    let deployment = Deployment::start(|_| {}).await;
    let server = &deployment.homeserver;
    let alice = server.register_user("alice").await;
    let alice_api = server.api_as(&alice.access_token);
    let ghost = deployment.ghost(PRAXIS);
    assert_eq!(
        ghost,
        "@kim_praxis.mueller=40praxis.kim.telematik:localhost"
    );

    // The ghost does not exist yet: the homeserver asks the bridge, which registers it.
    let room_id = alice_api.create_room(json!({ "invite": [ghost] })).await;
    eventually(SOON, "the ghost joined", || async {
        joined(&alice_api, &room_id)
            .await
            .contains(&ghost)
            .then_some(())
    })
    .await;
    let room = ruma::RoomId::parse(&room_id).expect("room id");
    let addresses = eventually(SOON, "the portal", || async {
        let addresses = store::portals::addresses(&deployment.bridge().db, &room)
            .await
            .expect("query");
        (!addresses.is_empty()).then_some(addresses)
    })
    .await;
    assert_eq!(
        addresses.iter().map(|a| a.as_str()).collect::<Vec<_>>(),
        [PRAXIS]
    );
    let profile = alice_api
        .get(&format!(
            "/_matrix/client/v3/profile/{}/displayname",
            enc(&ghost)
        ))
        .await;
    assert_eq!(
        profile.ok()["displayname"],
        "Praxis Dr. Müller",
        "the display name from the config"
    );

    // The ghost kicked: the address leaves the portal.
    alice_api
        .post(
            &format!("/_matrix/client/v3/rooms/{}/kick", enc(&room_id)),
            json!({ "user_id": ghost }),
        )
        .await
        .ok();
    eventually(SOON, "the address removed", || async {
        store::portals::addresses(&deployment.bridge().db, &room)
            .await
            .expect("query")
            .is_empty()
            .then_some(())
    })
    .await;

    let health: Value = reqwest::get(format!("{}/health", deployment.bridge_url()))
        .await
        .expect("health")
        .json()
        .await
        .expect("JSON");
    assert_eq!(health["healthy"], true, "{health}");
    assert_eq!(health["database"], "ok");
    assert_eq!(health["outbound_queue"], 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_insured_persons_invitation_of_a_ghost_is_refused() {
    let deployment = Deployment::start(|_| {}).await;
    let server = &deployment.homeserver;
    let ida = server.register_insured("ida", "A000000014").await;
    let ida_api = server.api_as(&ida.access_token);
    let ghost = deployment.ghost(PRAXIS);

    // Insured persons' rooms are encrypted (TI-M): the refusal notice is
    // encrypted with the ghost's device.
    let encryption = json!({ "type": "m.room.encryption", "state_key": "", "content": { "algorithm": "m.megolm.v1.aes-sha2" } });
    let room_id = ida_api
        .create_room(json!({ "invite": [ghost], "initial_state": [encryption] }))
        .await;
    eventually(SOON, "the ghost's encrypted notice", || async {
        let events = ida_api.messages(&room_id, "dir=b&limit=30").await.ok()["chunk"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        events
            .iter()
            .any(|event| event["sender"] == ghost.as_str() && event["type"] == "m.room.encrypted")
            .then_some(())
    })
    .await;
    eventually(SOON, "the ghost left", || async {
        (!joined(&ida_api, &room_id).await.contains(&ghost)).then_some(())
    })
    .await;
    let room = ruma::RoomId::parse(&room_id).expect("room id");
    assert!(
        store::portals::addresses(&deployment.bridge().db, &room)
            .await
            .expect("query")
            .is_empty(),
        "no portal"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn staff_manage_the_bridge_with_commands() {
    let deployment = Deployment::start(|_| {}).await;
    let server = &deployment.homeserver;
    let alice = server.register_user("alice").await;
    let alice_api = server.api_as(&alice.access_token);
    let bot = "@kimbot:localhost";

    // A direct chat with the bot is the management room.
    let dm = alice_api
        .create_room(json!({ "invite": [bot], "is_direct": true }))
        .await;
    eventually(SOON, "the bot joined", || async {
        joined(&alice_api, &dm)
            .await
            .contains(&bot.to_owned())
            .then_some(())
    })
    .await;
    alice_api.send_text(&dm, "!kim help").await.ok();
    let help = notice_from(&alice_api, &dm, bot, "!kim invite").await;
    assert!(
        help["content"]["m.relates_to"]["m.in_reply_to"]["event_id"].is_string(),
        "the answer replies to the command"
    );

    // In a room with the bot, `!kim invite` brings a practice in.
    let room_id = alice_api.create_room(json!({ "invite": [bot] })).await;
    eventually(SOON, "the bot joined the room", || async {
        joined(&alice_api, &room_id)
            .await
            .contains(&bot.to_owned())
            .then_some(())
    })
    .await;
    alice_api
        .send_text(&room_id, &format!("!kim invite {}", PRAXIS.to_uppercase()))
        .await
        .ok();
    let ghost = deployment.ghost(PRAXIS);
    eventually(SOON, "the ghost joined", || async {
        joined(&alice_api, &room_id)
            .await
            .contains(&ghost)
            .then_some(())
    })
    .await;

    alice_api.send_text(&dm, "!kim status").await.ok();
    let status = notice_from(&alice_api, &dm, bot, "Portale: 1").await;
    let body = status["content"]["body"].as_str().expect("a body");
    assert!(body.contains(PRAXIS) && body.contains(&room_id), "{body}");

    // Someone who is not staff gets no say.
    let ida = server.register_insured("ida", "A000000014").await;
    let ida_api = server.api_as(&ida.access_token);
    alice_api
        .post(
            &format!("/_matrix/client/v3/rooms/{}/invite", enc(&room_id)),
            json!({ "user_id": ida.user_id }),
        )
        .await
        .ok();
    ida_api.join(&room_id).await.ok();
    ida_api
        .send_text(&room_id, "!kim invite andere.praxis@praxis.kim.telematik")
        .await
        .ok();
    notice_from(&ida_api, &room_id, &ghost, "Only the insurer's staff").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let other = deployment.ghost("andere.praxis@praxis.kim.telematik");
    assert!(!joined(&alice_api, &room_id).await.contains(&other));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_message_redacted_before_its_mail_left_is_withdrawn() {
    // No Clientmodul listens: the mail stays queued, retried.
    let deployment = Deployment::start(|_| {}).await;
    let server = &deployment.homeserver;
    let alice = server.register_user("alice").await;
    let alice_api = server.api_as(&alice.access_token);
    let ghost = deployment.ghost(PRAXIS);
    let room_id = alice_api.create_room(json!({ "invite": [ghost] })).await;
    let room = ruma::RoomId::parse(&room_id).expect("room id");
    eventually(SOON, "the portal", || async {
        (!store::portals::addresses(&deployment.bridge().db, &room)
            .await
            .expect("query")
            .is_empty())
        .then_some(())
    })
    .await;

    let sent = alice_api
        .send_text(&room_id, "An die falsche Praxis.")
        .await
        .str("event_id");
    let event_id = ruma::EventId::parse(&sent).expect("event id");
    let state = || async {
        store::messages::by_event_id(&deployment.bridge().db, &event_id)
            .await
            .expect("query")
            .map(|message| message.state)
    };
    eventually(SOON, "the mail queued", || async {
        (state().await == Some(store::messages::MessageState::Queued)).then_some(())
    })
    .await;
    alice_api
        .put(
            &format!(
                "/_matrix/client/v3/rooms/{}/redact/{}/withdraw-1",
                enc(&room_id),
                enc(&sent)
            ),
            json!({ "reason": "falscher Raum" }),
        )
        .await
        .ok();
    eventually(SOON, "the mail withdrawn", || async {
        (state().await == Some(store::messages::MessageState::Withdrawn)).then_some(())
    })
    .await;
    assert_eq!(
        store::outbound_queue::len(&deployment.bridge().db)
            .await
            .expect("query"),
        0,
        "nothing left to send"
    );
}
