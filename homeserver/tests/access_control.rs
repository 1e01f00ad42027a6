//! Who may do what: one table of endpoints × callers, each cell the exact
//! status and errcode. The callers are everyone who must be refused
//! (anonymous, another user, a non-member, a kicked or banned member, a
//! deactivated account, a logged-out token, an appservice acting outside
//! its namespace) and, as a control that each probe is well-formed, a
//! member or owner for whom it succeeds.

mod common;

use std::fmt::Write as _;

use common::{
    TestServer,
    api::{Api, Reply, enc, new_txn_id, password_auth},
    password_of,
};
use reqwest::Method;
use serde_json::{Value, json};

const AS_TOKEN: &str = "access-control-as-token";

/// An appservice owning `@bridge_…` users; it has no URL (nothing is sent
/// to it).
const REGISTRATION: &str = "id: bridge
url: null
as_token: access-control-as-token
hs_token: access-control-hs-token
sender_localpart: bridgebot
rate_limited: false
namespaces:
  users:
    - exclusive: true
      regex: '@bridge_.*:localhost'
";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Caller {
    Anonymous,
    /// Eve, acting on Alice's account (profile, account data, devices, …).
    WrongUser,
    /// Eve, on Alice's room, which she never joined.
    NonMember,
    /// Carol, who joined and was kicked.
    Kicked,
    /// Dave, who joined and was banned.
    Banned,
    /// Frank's token after he deactivated his account.
    Deactivated,
    /// Grace's token after she logged out.
    LoggedOut,
    /// The appservice's token with `?user_id=@alice:localhost`.
    OutsideNamespace,
    /// Bob, a joined member: the control.
    Member,
    /// Alice herself, for the probes on her account: the control.
    Owner,
    /// Eve, who is not a server admin, on the admin API.
    NotAdmin,
}

/// Every probe is refused to these callers, whatever it is.
const EVERY_PROBE: [(Caller, u16, &str); 4] = [
    (Caller::Anonymous, 401, "M_MISSING_TOKEN"),
    (Caller::Deactivated, 401, "M_UNKNOWN_TOKEN"),
    (Caller::LoggedOut, 401, "M_UNKNOWN_TOKEN"),
    (Caller::OutsideNamespace, 403, "M_FORBIDDEN"),
];

/// One request and what each caller gets for it, besides [`EVERY_PROBE`].
/// `{me}` in the path is the caller's user id, `{txn}` a fresh transaction
/// id. An errcode of `""` means success (2xx with any body).
struct Probe {
    method: Method,
    path: String,
    body: Option<Value>,
    expect: Vec<(Caller, u16, &'static str)>,
}

fn probe(method: Method, path: impl Into<String>, body: Option<Value>, expect: &[(Caller, u16, &'static str)]) -> Probe {
    Probe { method, path: path.into(), body, expect: expect.to_vec() }
}

const FORBIDDEN: (u16, &str) = (403, "M_FORBIDDEN");

/// The rows for a room write: refused to everyone not joined.
fn room_write(member: (u16, &'static str)) -> Vec<(Caller, u16, &'static str)> {
    vec![
        (Caller::NonMember, FORBIDDEN.0, FORBIDDEN.1),
        (Caller::Kicked, FORBIDDEN.0, FORBIDDEN.1),
        (Caller::Banned, FORBIDDEN.0, FORBIDDEN.1),
        (Caller::Member, member.0, member.1),
    ]
}

/// The people, room, event and media the probes are about.
struct World {
    server: TestServer,
    tokens: Vec<(Caller, Option<String>, String)>,
    room: String,
    event: String,
    /// A filter of Alice's.
    filter: String,
    media: String,
    alice: common::RegisteredUser,
    /// Someone who is no caller, for the invite probe.
    invitee: String,
    _registration_dir: tempfile::TempDir,
}

async fn world() -> World {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("registration.yaml");
    std::fs::write(&path, REGISTRATION).expect("writing the registration");
    let server = TestServer::start_with(|config| config.appservices.registration_files = vec![path]).await;

    let alice = server.register_user("alice").await;
    let alice_api = server.api_as(&alice.access_token);
    let mut users = Vec::new();
    for name in ["bob", "carol", "dave", "eve", "frank", "grace", "henry"] {
        users.push(server.register_user(name).await);
    }
    let [bob, carol, dave, eve, frank, grace, henry] = <[_; 7]>::try_from(users).expect("seven users");
    let members = [&bob, &carol, &dave, &frank];
    let room = alice_api.create_room(json!({})).await;
    for user in members {
        alice_api.post(&format!("/_matrix/client/v3/rooms/{}/invite", enc(&room)), json!({ "user_id": user.user_id })).await.ok();
        server.api_as(&user.access_token).join(&room).await.ok();
    }
    let event = alice_api.send_text(&room, "before the kick").await.str("event_id");
    for (action, user) in [("kick", &carol), ("ban", &dave)] {
        alice_api.post(&format!("/_matrix/client/v3/rooms/{}/{action}", enc(&room)), json!({ "user_id": user.user_id })).await.ok();
    }
    let frank_api = server.api_as(&frank.access_token);
    let session = frank_api.post("/_matrix/client/v3/account/deactivate", json!({})).await.uia_session("m.login.password");
    frank_api.post("/_matrix/client/v3/account/deactivate", json!({ "auth": password_auth(&frank.user_id, &password_of("frank"), &session) })).await.ok();
    server.api_as(&grace.access_token).post("/_matrix/client/v3/logout", json!({})).await.ok();
    let filter = alice_api.post(&format!("/_matrix/client/v3/user/{}/filter", enc(&alice.user_id)), json!({})).await.str("filter_id");
    let upload = alice_api.send(Method::POST, "/_matrix/media/v3/upload", Some(b"{}".to_vec())).await;
    let media = upload.str("content_uri").rsplit('/').next().expect("mxc://server/id").to_owned();

    let tokens = vec![
        (Caller::Anonymous, None, alice.user_id.clone()),
        (Caller::WrongUser, Some(eve.access_token.clone()), eve.user_id.clone()),
        (Caller::NonMember, Some(eve.access_token.clone()), eve.user_id.clone()),
        (Caller::NotAdmin, Some(eve.access_token.clone()), eve.user_id.clone()),
        (Caller::Kicked, Some(carol.access_token.clone()), carol.user_id.clone()),
        (Caller::Banned, Some(dave.access_token.clone()), dave.user_id.clone()),
        (Caller::Deactivated, Some(frank.access_token.clone()), frank.user_id.clone()),
        (Caller::LoggedOut, Some(grace.access_token.clone()), grace.user_id.clone()),
        // `send` adds `user_id=@alice:localhost`.
        (Caller::OutsideNamespace, Some(AS_TOKEN.to_owned()), alice.user_id.clone()),
        (Caller::Member, Some(bob.access_token.clone()), bob.user_id.clone()),
        (Caller::Owner, Some(alice.access_token.clone()), alice.user_id.clone()),
    ];
    World { server, tokens, room, event, filter, media, alice, invitee: henry.user_id, _registration_dir: dir }
}

fn probes(world: &World) -> Vec<Probe> {
    let room = format!("/_matrix/client/v3/rooms/{}", enc(&world.room));
    let event = enc(&world.event);
    let alice = enc(&world.alice.user_id);
    let user = format!("/_matrix/client/v3/user/{alice}");
    let device = format!("/_matrix/client/v3/devices/{}", enc(&world.alice.device_id));
    let wrong_user = |owner: (u16, &'static str)| vec![(Caller::WrongUser, FORBIDDEN.0, FORBIDDEN.1), (Caller::Owner, owner.0, owner.1)];
    let ok = (200, "");
    // What a former member may still read: the room as it was when they
    // left (history visibility `shared`).
    let room_read = |non_member: (u16, &'static str)| {
        vec![(Caller::NonMember, non_member.0, non_member.1), (Caller::Kicked, 200, ""), (Caller::Banned, 200, ""), (Caller::Member, 200, "")]
    };
    let not_admins = [(Caller::NotAdmin, FORBIDDEN.0, FORBIDDEN.1), (Caller::Member, FORBIDDEN.0, FORBIDDEN.1), (Caller::Owner, FORBIDDEN.0, FORBIDDEN.1)];
    let get = Method::GET;
    let (put, post, delete) = (Method::PUT, Method::POST, Method::DELETE);
    vec![
        // Rooms: writes.
        probe(put.clone(), format!("{room}/send/m.room.message/{{txn}}"), Some(json!({ "msgtype": "m.text", "body": "hi" })), &room_write(ok)),
        probe(put.clone(), format!("{room}/state/m.room.topic"), Some(json!({ "topic": "mine now" })), &room_write(FORBIDDEN)),
        probe(put.clone(), format!("{room}/redact/{event}/{{txn}}"), Some(json!({})), &room_write(FORBIDDEN)),
        probe(post.clone(), format!("{room}/invite"), Some(json!({ "user_id": world.invitee })), &room_write(ok)),
        probe(post.clone(), format!("{room}/kick"), Some(json!({ "user_id": world.alice.user_id })), &room_write(FORBIDDEN)),
        probe(post.clone(), format!("{room}/ban"), Some(json!({ "user_id": world.alice.user_id })), &room_write(FORBIDDEN)),
        probe(put.clone(), format!("{room}/typing/{{me}}"), Some(json!({ "typing": true, "timeout": 1000 })), &room_write(ok)),
        probe(post.clone(), format!("{room}/receipt/m.read/{event}"), Some(json!({})), &room_write(ok)),
        probe(post.clone(), format!("{room}/read_markers"), Some(json!({ "m.fully_read": world.event })), &room_write(ok)),
        probe(post.clone(), format!("{room}/join"), Some(json!({})), &room_write(ok)),
        // Rooms: reads.
        probe(get.clone(), format!("{room}/state"), None, &room_read(FORBIDDEN)),
        probe(get.clone(), format!("{room}/state/m.room.create"), None, &room_read(FORBIDDEN)),
        probe(get.clone(), format!("{room}/messages?dir=b"), None, &room_read(FORBIDDEN)),
        probe(get.clone(), format!("{room}/members"), None, &room_read(FORBIDDEN)),
        probe(get.clone(), format!("{room}/event/{event}"), None, &room_read((404, "M_NOT_FOUND"))),
        probe(get.clone(), format!("{room}/context/{event}"), None, &room_read((404, "M_NOT_FOUND"))),
        probe(get.clone(), format!("{room}/joined_members"), None, &room_write(ok)),
        // Another user's account.
        probe(put.clone(), format!("/_matrix/client/v3/profile/{alice}/displayname"), Some(json!({ "displayname": "Eve" })), &wrong_user(ok)),
        probe(put.clone(), format!("/_matrix/client/v3/profile/{alice}/avatar_url"), Some(json!({ "avatar_url": "mxc://localhost/x" })), &wrong_user(ok)),
        probe(put.clone(), format!("{user}/account_data/m.test"), Some(json!({ "x": 1 })), &wrong_user(ok)),
        probe(get.clone(), format!("{user}/account_data/m.test"), None, &wrong_user(ok)),
        probe(put.clone(), format!("{user}/rooms/{}/account_data/m.test", enc(&world.room)), Some(json!({ "x": 1 })), &wrong_user(ok)),
        probe(get.clone(), format!("{user}/rooms/{}/tags", enc(&world.room)), None, &wrong_user(ok)),
        probe(put.clone(), format!("{user}/rooms/{}/tags/u.work", enc(&world.room)), Some(json!({})), &wrong_user(ok)),
        probe(post.clone(), format!("{user}/filter"), Some(json!({})), &wrong_user(ok)),
        probe(get.clone(), format!("{user}/filter/{}", world.filter), None, &wrong_user(ok)),
        probe(put.clone(), format!("/_matrix/client/v3/presence/{alice}/status"), Some(json!({ "presence": "online" })), &wrong_user(ok)),
        probe(get.clone(), device.clone(), None, &[(Caller::WrongUser, 404, "M_NOT_FOUND"), (Caller::Owner, 200, "")]),
        probe(put.clone(), device.clone(), Some(json!({ "display_name": "Eve's now" })), &[(Caller::WrongUser, 404, "M_NOT_FOUND"), (Caller::Owner, 200, "")]),
        probe(delete.clone(), device, Some(json!({})), &[(Caller::WrongUser, 404, "M_NOT_FOUND")]),
        // The caller's own things: only a live token counts.
        probe(get.clone(), "/_matrix/client/v3/account/whoami", None, &[(Caller::Member, 200, "")]),
        probe(get.clone(), "/_matrix/client/v3/sync?timeout=0", None, &[(Caller::Member, 200, "")]),
        probe(get.clone(), "/_matrix/client/v3/devices", None, &[(Caller::Member, 200, "")]),
        probe(post.clone(), "/_matrix/client/v3/keys/query", Some(json!({ "device_keys": { world.alice.user_id.clone(): [] } })), &[(Caller::Member, 200, "")]),
        probe(post.clone(), "/_matrix/client/v3/keys/claim", Some(json!({ "one_time_keys": {} })), &[(Caller::Member, 200, "")]),
        probe(put.clone(), "/_matrix/client/v3/sendToDevice/m.test/{txn}", Some(json!({ "messages": {} })), &[(Caller::Member, 200, "")]),
        probe(get.clone(), "/_matrix/client/v3/room_keys/version", None, &[(Caller::Member, 404, "M_NOT_FOUND")]),
        probe(get.clone(), "/_matrix/client/v3/pushers", None, &[(Caller::Member, 200, "")]),
        probe(get.clone(), format!("/_matrix/client/v3/presence/{alice}/status"), None, &[(Caller::Member, 200, "")]),
        probe(get.clone(), format!("/_matrix/client/v3/profile/{alice}"), None, &[(Caller::Member, 200, "")]),
        probe(get.clone(), format!("/_matrix/client/v1/media/download/localhost/{}", world.media), None, &[(Caller::Member, 200, "")]),
        probe(post.clone(), "/_matrix/media/v3/upload", Some(json!({})), &[(Caller::Member, 200, "")]),
        // The admin API.
        probe(get.clone(), "/_tim/admin/v1/staff", None, &not_admins),
        probe(post.clone(), "/_tim/admin/v1/staff", Some(json!({ "username": "mallory", "password": "mallory's password" })), &not_admins),
        probe(post.clone(), format!("/_tim/admin/v1/staff/{alice}/deactivate"), Some(json!({})), &not_admins),
    ]
}

#[tokio::test]
async fn every_endpoint_refuses_everyone_it_must() {
    let world = world().await;
    let mut failures = String::new();
    let mut checked = 0;
    for probe in probes(&world) {
        for (caller, status, errcode) in EVERY_PROBE.iter().copied().chain(probe.expect.iter().copied()) {
            let reply = send(&world, &probe, caller).await;
            let matches = if errcode.is_empty() { reply.status.is_success() } else { (reply.status.as_u16(), reply.errcode()) == (status, Some(errcode)) };
            if !matches {
                let _ = writeln!(failures, "{caller:?}: expected {status} {errcode}, got {reply}");
            }
            checked += 1;
        }
    }
    assert!(failures.is_empty(), "{} of {checked} cells differ:\n{failures}", failures.lines().count());
}

async fn send(world: &World, probe: &Probe, caller: Caller) -> Reply {
    let (_, token, me) = world.tokens.iter().find(|(who, _, _)| *who == caller).expect("every caller has a token");
    let mut path = probe.path.replace("{me}", &enc(me)).replace("{txn}", &new_txn_id());
    if caller == Caller::OutsideNamespace {
        path.push(if path.contains('?') { '&' } else { '?' });
        path.push_str(&format!("user_id={}", enc(&world.alice.user_id)));
    }
    let api: Api = match token {
        Some(token) => world.server.api_as(token),
        None => world.server.api(),
    };
    api.send(probe.method.clone(), &path, probe.body.as_ref().map(|body| body.to_string().into_bytes())).await
}
