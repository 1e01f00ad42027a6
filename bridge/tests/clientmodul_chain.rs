//! The whole KIM chain with real S/MIME: homeserver → bridge → test
//! Clientmodul (signs, encrypts) → Postfix → Dovecot → test Clientmodul
//! (decrypts, verifies) → bridge → room. Two mailboxes, the insurer's
//! (the bridge's) and a practice's, each with its own keys; the practice
//! writes through the same Clientmodul as a practice system would.

mod support;

use std::time::Duration;

use kim_bridge::kim::address::KimAddress;
use kim_bridge::kim::incoming;
use kim_bridge::kim::pop3::{Pop3Auth, Pop3Session};
use kim_bridge::kim::smtp::{Envelope, SendOutcome, SmtpSender};
use kim_bridge::kim::tls::Security;
use kim_bridge::smime::{self, IntegrityCheck};
use serde_json::{Value, json};
use support::clientmodul::{TestClientmodul, tamper_ciphertext, tamper_outer_header};
use support::common::api::{Api, enc};
use support::mail_server::mail_server;
use support::{Deployment, events_with, eventually};

const WITHIN: Duration = Duration::from_secs(60);

async fn one_event(api: &Api, room_id: &str, sender: &str, text: &str) -> Value {
    eventually(WITHIN, text, || async {
        events_with(api, room_id, sender, text).await.pop()
    })
    .await
}

/// A practice's client mail.
fn practice_mail(practice: &KimAddress, insurer: &KimAddress, extra: &str, text: &str) -> Vec<u8> {
    format!(
        "From: {practice}\r\nTo: {insurer}\r\nSubject: Befund\r\n\
         Date: Mon, 23 Nov 2026 10:00:00 +0100\r\nMessage-ID: <{}@{}>\r\n{extra}\
         X-KIM-Dienstkennung: KIM-Mail;Default;V1.0\r\nMIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n{text}\r\n",
        uuid::Uuid::new_v4(),
        practice.domain()
    )
    .into_bytes()
}

/// The practice sends through the Clientmodul, as its practice system would.
async fn practice_sends(
    cm: &TestClientmodul,
    practice: &KimAddress,
    insurer: &KimAddress,
    mail: &[u8],
) {
    let envelope = Envelope {
        from: practice.clone(),
        to: vec![insurer.clone()],
    };
    let outcome = SmtpSender::new(cm.smtp(practice))
        .expect("SMTP")
        .send_raw(&envelope, mail)
        .await
        .expect("sending");
    assert!(
        matches!(outcome, SendOutcome::Accepted { .. }),
        "{outcome:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_chain_runs_through_the_clientmodul_with_real_smime() {
    let server = mail_server();
    let insurer = server.new_mailbox("insurer");
    let practice = server.new_mailbox("practice");
    let cm = TestClientmodul::start(&[&insurer, &practice], &[], true).await;
    let mut deployment = Deployment::start_behind(&cm, &insurer).await;
    let homeserver = &deployment.homeserver;
    let alice = homeserver.register_user("alice").await;
    let alice_api = homeserver.api_as(&alice.access_token);
    let ghost = deployment.ghost(practice.as_str());
    let room_id = alice_api.create_room(json!({ "invite": [ghost] })).await;
    eventually(WITHIN, "the ghost joined", || async {
        let joined = alice_api
            .get(&format!(
                "/_matrix/client/v3/rooms/{}/joined_members",
                enc(&room_id)
            ))
            .await;
        joined.ok()["joined"].get(&ghost).is_some().then_some(())
    })
    .await;

    // A room message reaches the practice's mailbox as KOM-LE mail that
    // the practice's keys decrypt and verify.
    let sent = alice_api
        .send_text(&room_id, "Bitte senden Sie den Befund.")
        .await
        .str("event_id");
    let outer = server.wait_for_mails(&practice, 1).await.remove(0).1;
    let outer_headers = mail_parser::MessageParser::default()
        .parse_headers(outer.as_slice())
        .expect("headers");
    assert_eq!(outer_headers.subject(), Some("KOM-LE-Nachricht"));
    let decoded = smime::decode_kim_mail(
        &outer,
        &cm.mailboxes[&practice].encryption,
        std::slice::from_ref(&cm.ca.cert),
    )
    .expect("the practice's keys open it");
    assert_eq!(decoded.integrity, IntegrityCheck::ValidStatusUnknown, "07");
    let inner = incoming::parse(&decoded.mail).expect("the client mail");
    assert_eq!(inner.text, "Bitte senden Sie den Befund.");
    assert_eq!(inner.from.map(|f| f.address), Some(insurer.to_string()));
    let message_id = inner.message_id.expect("a Message-ID");

    // The practice's reply appears as its ghost, replying to the message,
    // without a warning (00/01).
    let reply = practice_mail(
        &practice,
        &insurer,
        &format!("In-Reply-To: <{message_id}>\r\n"),
        "Der Befund ist unterwegs.",
    );
    practice_sends(&cm, &practice, &insurer, &reply).await;
    let posted = one_event(&alice_api, &room_id, &ghost, "Der Befund ist unterwegs").await;
    assert_eq!(
        posted["content"]["m.relates_to"]["m.in_reply_to"]["event_id"],
        sent.as_str(),
        "{posted}"
    );
    assert_eq!(
        posted["content"]["body"], "Der Befund ist unterwegs.",
        "the trailer is cut"
    );
    assert!(
        events_with(&alice_api, &room_id, &ghost, "Achtung")
            .await
            .is_empty(),
        "a verified mail shows no warning"
    );

    // Tampered on the way: the bridge is stopped, the practice sends two
    // mails, and at the MTA one gets a flipped ciphertext byte and the other
    // a changed outer header.
    deployment.stop_bridge().await;
    practice_sends(
        &cm,
        &practice,
        &insurer,
        &practice_mail(&practice, &insurer, "", "Erster Nachtrag."),
    )
    .await;
    practice_sends(
        &cm,
        &practice,
        &insurer,
        &practice_mail(&practice, &insurer, "", "Zweiter Nachtrag."),
    )
    .await;
    let at_mta = server.wait_for_mails(&insurer, 2).await;
    let mut session =
        Pop3Session::connect(&server.pop3(&insurer, Security::ImplicitTls, Pop3Auth::UserPass))
            .await
            .expect("POP3 at the MTA");
    for (number, _) in session.uidl().await.expect("UIDL") {
        session.dele(number).await.expect("DELE");
    }
    session.quit().await.expect("QUIT");
    let direct = SmtpSender::new(server.smtp(&practice, Security::ImplicitTls)).expect("SMTP");
    let envelope = Envelope {
        from: practice.clone(),
        to: vec![insurer.clone()],
    };
    for (index, (_, mail)) in at_mta.iter().enumerate() {
        let decoded = smime::decode_kim_mail(
            mail,
            &cm.mailboxes[&insurer].encryption,
            std::slice::from_ref(&cm.ca.cert),
        )
        .expect("the untampered mail");
        let first = String::from_utf8_lossy(&decoded.mail).contains("Erster Nachtrag");
        let tampered = if first {
            tamper_ciphertext(mail)
        } else {
            tamper_outer_header(mail)
        };
        let outcome = direct
            .send_raw(&envelope, &tampered)
            .await
            .expect("placing");
        assert!(
            matches!(outcome, SendOutcome::Accepted { .. }),
            "{index}: {outcome:?}"
        );
    }
    server.wait_for_mails(&insurer, 2).await;
    deployment.start_bridge().await;

    let undecryptable = one_event(
        &alice_api,
        &room_id,
        &ghost,
        "Die Nachricht konnte nicht entschlüsselt werden",
    )
    .await;
    let warning = one_event(&alice_api, &room_id, &ghost, "4014").await;
    assert_eq!(warning["content"]["msgtype"], "m.notice");
    assert!(
        warning["content"]["body"]
            .as_str()
            .is_some_and(|b| b.contains("nicht vertrauenswürdig") && b.contains("wrong format")),
        "{warning}"
    );
    assert_eq!(
        warning["content"]["m.relates_to"]["m.in_reply_to"]["event_id"],
        undecryptable["event_id"]
    );

    let changed = one_event(&alice_api, &room_id, &ghost, "Zweiter Nachtrag").await;
    let warning = one_event(&alice_api, &room_id, &ghost, "headers differ").await;
    assert_eq!(
        warning["content"]["m.relates_to"]["m.in_reply_to"]["event_id"],
        changed["event_id"]
    );
}
