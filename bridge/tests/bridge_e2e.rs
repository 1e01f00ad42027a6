//! End to end: a real homeserver, the bridge, and a real Postfix + Dovecot
//! standing where the KIM Clientmodul sits (`scripts/mailserver`; the test
//! reads its `KIM_TEST_*` variables). Matrix users write in a portal; the
//! practice's mailbox receives KIM mail; the practice's replies (placed with
//! `swaks`, a real SMTP client) come back into the room as its ghost.
//! One portal is unencrypted (raw HTTP clients), one is end-to-end
//! encrypted (a matrix-sdk client; the bridge decrypts and encrypts with
//! its ghost's device).

mod support;

use std::{process::Command, time::Duration};

use kim_bridge::{
    kim::{
        incoming,
        pop3::{Pop3Config, Pop3Session},
    },
    store,
};
use rand::{Rng as _, distr::Alphanumeric};
use serde_json::{Value, json};
use support::{
    Deployment,
    common::api::{Api, enc, new_txn_id},
    events_with, eventually, newest_events,
};

const WITHIN: Duration = Duration::from_secs(60);

fn env(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

fn smtp_port() -> String {
    env("KIM_TEST_SMTP_PORT", "2587")
}
fn pop3s_port() -> String {
    env("KIM_TEST_POP3S_PORT", "2995")
}
fn password() -> String {
    env("KIM_TEST_MAIL_PASSWORD", "kim-test-password")
}
fn certificate() -> String {
    std::env::var("KIM_TEST_MAIL_CERT")
        .expect("KIM_TEST_MAIL_CERT (run `eval \"$(scripts/mailserver env)\"`)")
}

fn unique(name: &str, domain: &str) -> String {
    let tag: String = rand::rng()
        .sample_iter(Alphanumeric)
        .take(8)
        .map(|c| char::from(c).to_ascii_lowercase())
        .collect();
    format!("{name}-{tag}@{domain}")
}

/// POP3S login of any test mailbox.
fn pop3(address: &str) -> Pop3Config {
    toml::from_str(&format!(
        "host = \"127.0.0.1\"\nport = {}\nsecurity = \"implicit_tls\"\ntrust = {{ pinned_certificate = \"{}\" }}\nusername = \"{address}\"\npassword = \"{}\"\n",
        pop3s_port(),
        certificate(),
        password()
    ))
    .expect("a POP3 config")
}

/// Every mail in a mailbox (left there).
async fn mails(address: &str) -> Vec<Vec<u8>> {
    let mut session = Pop3Session::connect(&pop3(address))
        .await
        .expect("POP3 login");
    let mut all = Vec::new();
    for (number, _) in session.uidl().await.expect("UIDL") {
        all.push(session.retr(number).await.expect("RETR"));
    }
    session.quit().await.expect("QUIT");
    all
}

/// A mail from `from` to `to`, placed with swaks over STARTTLS and AUTH.
fn swaks(from: &str, to: &str, headers: &[String], body: &str) {
    let mut command = Command::new("swaks");
    command.args([
        "--server",
        &format!("127.0.0.1:{}", smtp_port()),
        "--tls",
        "--auth",
        "PLAIN",
    ]);
    command.args([
        "--auth-user",
        from,
        "--auth-password",
        &password(),
        "--from",
        from,
        "--to",
        to,
        "--body",
        body,
    ]);
    for header in headers {
        command.args(["--header", header]);
    }
    let output = command.output().expect("running swaks");
    assert!(
        output.status.success(),
        "swaks failed: {}",
        String::from_utf8_lossy(&output.stdout)
    );
}

/// The bridge's config pointed at the test mail server as `insurer`.
fn mailbox_config(document: &mut toml_edit::DocumentMut, insurer: &str) {
    let cert = certificate();
    let mailbox = &mut document["mailbox"];
    mailbox["address"] = toml_edit::value(insurer);
    mailbox["smtp"]["host"] = toml_edit::value("127.0.0.1");
    mailbox["smtp"]["port"] = toml_edit::value(smtp_port().parse::<i64>().expect("a port"));
    mailbox["smtp"]["security"] = toml_edit::value("start_tls");
    mailbox["smtp"]["username"] = toml_edit::value(format!(
        "{insurer}#127.0.0.1:{}#1#KIM-Bridge#1",
        smtp_port()
    ));
    mailbox["smtp"]["password"] = toml_edit::value(password());
    mailbox["pop3"]["host"] = toml_edit::value("127.0.0.1");
    mailbox["pop3"]["security"] = toml_edit::value("implicit_tls");
    mailbox["pop3"]["port"] = toml_edit::value(pop3s_port().parse::<i64>().expect("a port"));
    mailbox["pop3"]["username"] = toml_edit::value(format!(
        "{insurer}#127.0.0.1:{}#1#KIM-Bridge#1#*#*",
        pop3s_port()
    ));
    mailbox["pop3"]["password"] = toml_edit::value(password());
    for protocol in ["smtp", "pop3"] {
        let mut trust = toml_edit::InlineTable::new();
        trust.insert("pinned_certificate", cert.as_str().into());
        mailbox[protocol]["trust"] = toml_edit::value(trust);
    }
}

async fn joined(api: &Api, room_id: &str, user: &str) -> bool {
    let reply = api
        .get(&format!(
            "/_matrix/client/v3/rooms/{}/joined_members",
            enc(room_id)
        ))
        .await;
    reply.ok()["joined"].get(user).is_some()
}

#[tokio::test(flavor = "multi_thread")]
async fn chats_reach_the_practice_as_kim_mail_and_replies_come_back() {
    let insurer = unique("versicherung", "insurer.kim.telematik-test");
    let practice = unique("praxis", "practice.kim.telematik-test");
    let mut deployment = Deployment::start(|document| mailbox_config(document, &insurer)).await;
    let server = &deployment.homeserver;
    let alice = server.register_user("alice").await;
    let alice_api = server.api_as(&alice.access_token);
    let bob = server.register_user("bob").await;
    let bob_api = server.api_as(&bob.access_token);
    let ghost = deployment.ghost(&practice);

    // Staff opens the portal: the member and the practice's ghost.
    let room_id = alice_api.create_room(json!({ "invite": [ghost] })).await;
    alice_api
        .post(
            &format!("/_matrix/client/v3/rooms/{}/invite", enc(&room_id)),
            json!({ "user_id": bob.user_id }),
        )
        .await
        .ok();
    bob_api.join(&room_id).await.ok();
    eventually(WITHIN, "the ghost joined", || async {
        joined(&alice_api, &room_id, &ghost).await.then_some(())
    })
    .await;

    // A message and a file become KIM mails in the practice's mailbox.
    let sent = bob_api
        .send_text(&room_id, "Bitte senden Sie den Befund.")
        .await
        .str("event_id");
    let upload = bob_api
        .send(
            reqwest::Method::POST,
            "/_matrix/media/v3/upload?filename=befund.txt",
            Some(b"Befundtext".to_vec()),
        )
        .await;
    let uri = upload.str("content_uri");
    let file = json!({ "msgtype": "m.file", "body": "befund.txt", "filename": "befund.txt", "url": uri, "info": { "mimetype": "text/plain" } });
    bob_api
        .put(
            &format!(
                "/_matrix/client/v3/rooms/{}/send/m.room.message/{}",
                enc(&room_id),
                new_txn_id()
            ),
            file,
        )
        .await
        .ok();
    let received = eventually(WITHIN, "two mails at the practice", || async {
        let all = mails(&practice).await;
        (all.len() >= 2).then_some(all)
    })
    .await;
    let parsed: Vec<_> = received
        .iter()
        .map(|raw| {
            (
                incoming::parse(raw).expect("a mail"),
                mail_parser::MessageParser::default()
                    .parse(raw.as_slice())
                    .expect("MIME"),
            )
        })
        .collect();
    let (text_mail, text_raw) = parsed
        .iter()
        .find(|(mail, _)| mail.text.contains("Befund."))
        .expect("the text mail");
    assert_eq!(
        text_mail.from.as_ref().map(|from| from.address.as_str()),
        Some(insurer.as_str())
    );
    assert_eq!(
        text_mail
            .to
            .iter()
            .map(|to| to.address.as_str())
            .collect::<Vec<_>>(),
        [practice.as_str()]
    );
    assert_eq!(
        text_raw.header_raw("X-KIM-Dienstkennung").map(str::trim),
        Some("KIM-Mail;Default;V1.0")
    );
    assert!(text_raw.header_raw("X-KIM-Sendersystem").is_some());
    let message_id = text_mail.message_id.clone().expect("a Message-ID");
    assert!(
        message_id.ends_with("@insurer.kim.telematik-test"),
        "{message_id}"
    );
    let (file_mail, _) = parsed
        .iter()
        .find(|(mail, _)| !mail.attachments.is_empty())
        .expect("the file mail");
    assert_eq!(file_mail.attachments[0].filename, "befund.txt");
    assert_eq!(file_mail.attachments[0].data, b"Befundtext");

    // The practice answers: the reply appears as its ghost, replying to the message.
    let good = [
        "X-KIM-DecryptionResult: 00".to_owned(),
        "X-KIM-IntegrityCheckResult: 01".to_owned(),
        "X-KIM-Dienstkennung: KIM-Mail;Default;V1.0".to_owned(),
    ];
    let mut headers = good.to_vec();
    headers.push(format!("In-Reply-To: <{message_id}>"));
    headers.push("Subject: Re: Befund".to_owned());
    swaks(&practice, &insurer, &headers, "Der Befund ist unterwegs.");
    let reply = eventually(WITHIN, "the practice's reply", || async {
        events_with(&alice_api, &room_id, &ghost, "Der Befund ist unterwegs")
            .await
            .pop()
    })
    .await;
    assert_eq!(
        reply["content"]["m.relates_to"]["m.in_reply_to"]["event_id"],
        sent.as_str(),
        "{reply}"
    );
    assert!(
        events_with(&alice_api, &room_id, &ghost, "Achtung")
            .await
            .is_empty(),
        "a good signature shows no warning"
    );

    // A mail whose integrity check failed carries a visible warning.
    let bad = [
        "X-KIM-DecryptionResult: 00".to_owned(),
        "X-KIM-IntegrityCheckResult: 02".to_owned(),
        "Subject: Nachtrag".to_owned(),
    ];
    swaks(&practice, &insurer, &bad, "Nachtrag zum Befund.");
    let tampered = eventually(WITHIN, "the tampered mail", || async {
        events_with(&alice_api, &room_id, &ghost, "Nachtrag zum Befund")
            .await
            .pop()
    })
    .await;
    let warning = eventually(WITHIN, "the warning", || async {
        events_with(&alice_api, &room_id, &ghost, "nicht vertrauenswürdig")
            .await
            .pop()
    })
    .await;
    assert_eq!(warning["content"]["msgtype"], "m.notice");
    assert_eq!(
        warning["content"]["m.relates_to"]["m.in_reply_to"]["event_id"],
        tampered["event_id"]
    );

    // An unknown recipient: Postfix bounces with a DSN; the message is marked failed.
    let nobody = unique("niemand", "nonexistent.kim.telematik-test");
    let nobody_ghost = deployment.ghost(&nobody);
    let other_room = alice_api
        .create_room(json!({ "invite": [nobody_ghost] }))
        .await;
    eventually(WITHIN, "the second ghost joined", || async {
        joined(&alice_api, &other_room, &nobody_ghost)
            .await
            .then_some(())
    })
    .await;
    let lost = alice_api
        .send_text(&other_room, "Kommt das an?")
        .await
        .str("event_id");
    let failure = eventually(WITHIN, "the failure notice", || async {
        events_with(&alice_api, &other_room, &nobody_ghost, "nicht zugestellt")
            .await
            .pop()
    })
    .await;
    assert_eq!(
        failure["content"]["m.relates_to"]["m.in_reply_to"]["event_id"],
        lost.as_str()
    );
    let lost_id = ruma::EventId::parse(&lost).expect("event id");
    let mapped = store::messages::by_event_id(&deployment.bridge().db, &lost_id)
        .await
        .expect("query")
        .expect("mapped");
    assert_eq!(mapped.state, store::messages::MessageState::Failed);

    // Stopped between RETR and the post: the mail appears once after the restart.
    deployment.stop_bridge().await;
    swaks(&practice, &insurer, &good, "Nach dem Neustart.");
    let (_, uidl) = eventually(WITHIN, "the mail in the insurer's mailbox", || {
        let config = deployment.config.mailbox.pop3.clone();
        async move {
            let mut session = Pop3Session::connect(&config).await.expect("POP3 login");
            let listing = session.uidl().await.expect("UIDL");
            session.quit().await.expect("QUIT");
            listing.into_iter().next()
        }
    })
    .await;
    // What the bridge does before it posts: record the UIDL, RETR.
    let pool = sqlx::PgPool::connect(&deployment.config.database.url)
        .await
        .expect("bridge database");
    store::inbound_mails::record(&pool, &uidl)
        .await
        .expect("recording");
    let mut session = Pop3Session::connect(&deployment.config.mailbox.pop3)
        .await
        .expect("POP3 login");
    let number = session
        .uidl()
        .await
        .expect("UIDL")
        .into_iter()
        .find(|(_, id)| *id == uidl)
        .expect("still there")
        .0;
    session.retr(number).await.expect("RETR");
    drop(session);
    deployment.start_bridge().await;
    eventually(WITHIN, "the mail after the restart", || async {
        (!events_with(&alice_api, &room_id, &ghost, "Nach dem Neustart")
            .await
            .is_empty())
        .then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        events_with(&alice_api, &room_id, &ghost, "Nach dem Neustart")
            .await
            .len(),
        1,
        "exactly once"
    );
    eventually(WITHIN, "the mailbox emptied", || async {
        mails(&insurer).await.is_empty().then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn edits_and_redactions_follow_the_mail_and_mails_name_their_author() {
    let insurer = unique("versicherung", "insurer.kim.telematik-test");
    let practice = unique("praxis", "practice.kim.telematik-test");
    let deployment = Deployment::start(|document| mailbox_config(document, &insurer)).await;
    let server = &deployment.homeserver;
    let alice = server.register_user("alice").await;
    let alice_api = server.api_as(&alice.access_token);
    alice_api
        .put(
            &format!(
                "/_matrix/client/v3/profile/{}/displayname",
                enc(&alice.user_id)
            ),
            json!({ "displayname": "Alice Sachbearbeiterin" }),
        )
        .await
        .ok();
    let ghost = deployment.ghost(&practice);
    let room_id = alice_api.create_room(json!({ "invite": [ghost] })).await;
    eventually(WITHIN, "the ghost joined", || async {
        joined(&alice_api, &room_id, &ghost).await.then_some(())
    })
    .await;

    // The mail names who wrote it; it leaves from the insurer's mailbox.
    let sent = alice_api
        .send_text(&room_id, "Termin am Montag.")
        .await
        .str("event_id");
    let original = eventually(WITHIN, "the mail", || async {
        mails(&practice).await.into_iter().find_map(|raw| {
            let mail = incoming::parse(&raw).expect("a mail");
            mail.text.contains("Termin am Montag").then_some(mail)
        })
    })
    .await;
    let from = original.from.clone().expect("From");
    assert_eq!(from.address, insurer);
    assert_eq!(from.name.as_deref(), Some("Alice Sachbearbeiterin"));
    let original_id = original.message_id.clone().expect("a Message-ID");

    // An edit becomes a correction answering the first mail.
    alice_api
        .put(
            &format!(
                "/_matrix/client/v3/rooms/{}/send/m.room.message/{}",
                enc(&room_id),
                new_txn_id()
            ),
            json!({
                "msgtype": "m.text",
                "body": "* Termin am Dienstag.",
                "m.new_content": { "msgtype": "m.text", "body": "Termin am Dienstag." },
                "m.relates_to": { "rel_type": "m.replace", "event_id": sent },
            }),
        )
        .await
        .ok();
    let correction = eventually(WITHIN, "the correction", || async {
        mails(&practice).await.into_iter().find_map(|raw| {
            let mail = incoming::parse(&raw).expect("a mail");
            mail.text.contains("Termin am Dienstag").then_some(mail)
        })
    })
    .await;
    assert!(
        correction.text.starts_with("Korrektur"),
        "{}",
        correction.text
    );
    assert!(!correction.text.contains('*'), "{}", correction.text);
    assert_eq!(
        correction.in_reply_to.as_deref(),
        Some(original_id.as_str())
    );

    // A redaction of a sent message: the practice is told it was withdrawn.
    alice_api
        .put(
            &format!(
                "/_matrix/client/v3/rooms/{}/redact/{}/{}",
                enc(&room_id),
                enc(&sent),
                new_txn_id()
            ),
            json!({}),
        )
        .await
        .ok();
    let retraction = eventually(WITHIN, "the retraction", || async {
        mails(&practice).await.into_iter().find_map(|raw| {
            let mail = incoming::parse(&raw).expect("a mail");
            mail.text.contains("zurückgezogen").then_some(mail)
        })
    })
    .await;
    assert_eq!(
        retraction.in_reply_to.as_deref(),
        Some(original_id.as_str())
    );
    assert_eq!(mails(&practice).await.len(), 3, "one mail each, no more");
}

#[tokio::test(flavor = "multi_thread")]
async fn mail_from_unknown_practices_lands_in_triage_and_absences_are_notices() {
    let insurer = unique("versicherung", "insurer.kim.telematik-test");
    let practice = unique("praxis", "practice.kim.telematik-test");
    let mut deployment = Deployment::start(|document| mailbox_config(document, &insurer)).await;
    let alice = deployment.homeserver.register_user("alice").await;
    let alice_api = deployment.homeserver.api_as(&alice.access_token);
    let bot = deployment.bridge().bot.to_string();
    let ghost = deployment.ghost(&practice);

    // Staff keep a triage room with the bot in it; the bridge is configured to use it.
    let triage = alice_api.create_room(json!({ "invite": [bot] })).await;
    eventually(WITHIN, "the bot joined the triage room", || async {
        joined(&alice_api, &triage, &bot).await.then_some(())
    })
    .await;
    deployment.stop_bridge().await;
    deployment.config.bridge.triage_room = Some(ruma::RoomId::parse(&triage).expect("room id"));
    deployment.start_bridge().await;

    // A practice nobody has written to: its mail opens the conversation there.
    let chat = [
        "X-KIM-DecryptionResult: 00".to_owned(),
        "X-KIM-IntegrityCheckResult: 01".to_owned(),
        "X-KIM-Dienstkennung: KIM-Mail;Default;V1.0".to_owned(),
        "Subject: Anfrage".to_owned(),
    ];
    swaks(
        &practice,
        &insurer,
        &chat,
        "Wir haben eine Frage zur Versicherten.",
    );
    let first = eventually(WITHIN, "the mail in the triage room", || async {
        events_with(&alice_api, &triage, &ghost, "eine Frage zur Versicherten")
            .await
            .pop()
    })
    .await;
    assert_eq!(first["content"]["msgtype"], "m.text");
    assert!(
        joined(&alice_api, &triage, &ghost).await,
        "the ghost was brought in"
    );

    // Its out-of-office reply is a notice in the same conversation.
    let absent = [
        "X-KIM-DecryptionResult: 00".to_owned(),
        "X-KIM-IntegrityCheckResult: 01".to_owned(),
        "X-KIM-Dienstkennung: KIM-Mail;Abwesend;V1.0".to_owned(),
        "Subject: Abwesend".to_owned(),
    ];
    swaks(
        &practice,
        &insurer,
        &absent,
        "Praxis geschlossen bis Montag.",
    );
    let notice = eventually(WITHIN, "the absence notice", || async {
        events_with(&alice_api, &triage, &ghost, "Praxis geschlossen bis Montag")
            .await
            .pop()
    })
    .await;
    assert_eq!(notice["content"]["msgtype"], "m.notice", "{notice}");
    assert!(
        notice["content"]["body"]
            .as_str()
            .is_some_and(|body| body.starts_with("Abwesenheitsnotiz")),
        "{notice}"
    );
}

/// The member's decrypted timeline events whose body contains `text`, once
/// one arrives.
async fn member_decrypts(
    client: &matrix_sdk::Client,
    room_id: &matrix_sdk::ruma::RoomId,
    text: &str,
) -> Value {
    let mut found = None;
    support::common::matrix::sync_until(
        client,
        WITHIN,
        &format!("decrypted {text:?}"),
        |response| {
            let Some(room) = response.rooms.joined.get(room_id) else {
                return false;
            };
            found = room
                .timeline
                .events
                .iter()
                .filter(|event| event.encryption_info().is_some())
                .map(|event| serde_json::from_str::<Value>(event.raw().json().get()).expect("JSON"))
                .find(|event| {
                    event["content"]["body"]
                        .as_str()
                        .is_some_and(|body| body.contains(text))
                });
            found.is_some()
        },
    )
    .await;
    found.expect("found")
}

#[tokio::test(flavor = "multi_thread")]
async fn an_encrypted_portal_is_bridged_both_ways() {
    let insurer = unique("versicherung", "insurer.kim.telematik-test");
    let practice = unique("praxis", "practice.kim.telematik-test");
    let deployment = Deployment::start(|document| mailbox_config(document, &insurer)).await;
    let server = &deployment.homeserver;
    let ghost = deployment.ghost(&practice);

    // A staff member with an E2EE client opens an encrypted portal.
    let alice = server.matrix_client("alice").await;
    support::common::matrix::sync_now(&alice).await;
    let encryption = serde_json::from_value(json!({ "type": "m.room.encryption", "state_key": "", "content": { "algorithm": "m.megolm.v1.aes-sha2" } }))
        .expect("state event");
    let mut request = matrix_sdk::ruma::api::client::room::create_room::v3::Request::new();
    request.invite = vec![ghost.as_str().try_into().expect("user id")];
    request.initial_state = vec![encryption];
    let room = alice.create_room(request).await.expect("createRoom");
    let room_id = room.room_id().to_owned();
    support::common::matrix::sync_until(&alice, WITHIN, "the ghost's join", |response| {
        response.rooms.joined.get(&room_id).is_some_and(|room| {
            room.timeline.events.iter().any(|event| {
                let event: Value = serde_json::from_str(event.raw().json().get()).expect("JSON");
                event["type"] == "m.room.member"
                    && event["state_key"] == ghost.as_str()
                    && event["content"]["membership"] == "join"
            })
        })
    })
    .await;

    // Her encrypted message reaches the practice as KIM mail in plaintext.
    let sent = room
        .send(
            matrix_sdk::ruma::events::room::message::RoomMessageEventContent::text_plain(
                "Verschlüsselt: bitte den Befund.",
            ),
        )
        .await
        .expect("sending encrypted")
        .response
        .event_id;
    let received = eventually(WITHIN, "the mail at the practice", || async {
        mails(&practice).await.into_iter().find_map(|raw| {
            let mail = incoming::parse(&raw).expect("a mail");
            mail.text.contains("bitte den Befund").then_some(mail)
        })
    })
    .await;
    let message_id = received.message_id.clone().expect("a Message-ID");

    // The practice's reply appears encrypted as the ghost, replying to her
    // message, and her client decrypts it.
    let headers = [
        "X-KIM-DecryptionResult: 00".to_owned(),
        "X-KIM-IntegrityCheckResult: 01".to_owned(),
        "X-KIM-Dienstkennung: KIM-Mail;Default;V1.0".to_owned(),
        format!("In-Reply-To: <{message_id}>"),
        "Subject: Re: Befund".to_owned(),
    ];
    swaks(
        &practice,
        &insurer,
        &headers,
        "Der verschlüsselte Befund kommt.",
    );
    let reply = member_decrypts(&alice, &room_id, "Der verschlüsselte Befund kommt").await;
    assert_eq!(reply["sender"], ghost.as_str(), "{reply}");
    assert_eq!(
        reply["content"]["m.relates_to"]["m.in_reply_to"]["event_id"],
        sent.as_str(),
        "{reply}"
    );
    let alice_api = server.api_as(alice.access_token().as_deref().expect("logged in"));
    let stored = newest_events(&alice_api, room_id.as_str()).await;
    assert!(
        stored
            .iter()
            .filter(|event| event["sender"] == ghost.as_str())
            .all(|event| event["type"] != "m.room.message"),
        "the ghost posts nothing in plaintext: {stored:?}"
    );
}
