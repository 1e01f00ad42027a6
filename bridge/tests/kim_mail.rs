//! The KIM mail side of the bridge against a real mail server (Postfix + Dovecot on
//! loopback, `scripts/mailserver`, standing where the Clientmodul sits): client mails sent
//! with `SmtpSender`, fetched with `Pop3Session`, parsed with `kim::incoming::parse`; and
//! gematik's sample mails.

mod support;

use std::path::Path;
use std::process::Command;

use kim_bridge::kim::incoming::{self, MailKind};
use kim_bridge::kim::outgoing::{Attachment, ClientMail, SenderSystem};
use kim_bridge::kim::pop3::{Pop3Auth, Pop3Error, Pop3Session};
use kim_bridge::kim::smtp::{SendOutcome, SmtpSender, Stage};
use kim_bridge::kim::tls::{ConnectError, Security};
use kim_bridge::kim::verification::{DecryptionResult, IntegrityResult};
use support::mail_server::mail_server;

fn sender_system() -> SenderSystem {
    SenderSystem {
        sendersystem: "TI-M KIM-Bridge;0.1.0".into(),
        support: "support@insurer.kim.telematik-test".into(),
        middleware: "kim-bridge;0.1.0".into(),
        ti_user_agent: "TIM-KIM-Bridge/0.1.0".into(),
        max_decoded_size: 15 * 1024 * 1024,
    }
}

fn accepted(outcome: &SendOutcome) {
    assert!(
        matches!(outcome, SendOutcome::Accepted { .. }),
        "{outcome:?}"
    );
}

/// A client mail with everything that must survive the trip: non-ASCII text and subject, an
/// attachment with a non-ASCII RFC 2231 filename, threading headers.
fn rich_mail(
    from: &kim_bridge::kim::address::KimAddress,
    to: &kim_bridge::kim::address::KimAddress,
) -> ClientMail {
    let mut mail = ClientMail::new(
        from.clone(),
        vec![to.clone()],
        "Rückfrage zur Überweisung".into(),
        "Guten Tag,\nbitte senden Sie uns den Befund.\n.\nEine Zeile mit Punkt am Anfang.\nGrüße"
            .into(),
    );
    mail.in_reply_to =
        Some("5b1c6a52-0d1e-4c8f-9a57-1f0e8c1d2e3f@practice.kim.telematik-test".into());
    mail.references = vec![mail.in_reply_to.clone().unwrap()];
    mail.attachments.push(Attachment {
        filename: "Befund Müller – Röntgen 2024.pdf".into(),
        content_type: "application/pdf".into(),
        data: (0..=255u8).cycle().take(70_000).collect(),
    });
    mail
}

async fn send_and_fetch(smtp_security: Security, pop3_security: Security, auth: Pop3Auth) {
    let server = mail_server();
    let insurer = server.new_mailbox("insurer");
    let practice = server.new_mailbox("practice");
    let mail = rich_mail(&insurer, &practice);

    let sender = SmtpSender::new(server.smtp(&insurer, smtp_security)).unwrap();
    let outcome = sender.send(&mail, &sender_system()).await.unwrap();
    accepted(&outcome);
    let SendOutcome::Accepted { reply, recipients } = outcome else {
        unreachable!()
    };
    assert_eq!(reply.code, 250);
    assert_eq!(reply.enhanced.as_deref(), Some("2.0.0"));
    assert_eq!(recipients.len(), 1);
    assert!(recipients[0].accepted(), "{recipients:?}");

    // Wait for delivery, then read it the way the bridge does: UIDL, TOP, RETR, DELE, QUIT.
    server.wait_for_mails(&practice, 1).await;
    let config = server.pop3(&practice, pop3_security, auth);
    let mut session = Pop3Session::connect(&config).await.unwrap();
    let listing = session.uidl().await.unwrap();
    assert_eq!(listing.len(), 1, "{listing:?}");
    let (number, uid) = listing[0].clone();
    assert!(!uid.is_empty());

    let headers = session.top(number, 0).await.unwrap();
    let headers = String::from_utf8(headers).unwrap();
    assert!(
        headers.contains("X-KIM-Dienstkennung: KIM-Mail;Default;V1.0"),
        "{headers}"
    );
    assert!(
        !headers.contains("application/pdf"),
        "TOP n 0 returned the body"
    );

    let raw = session.retr(number).await.unwrap();
    let parsed = incoming::parse(&raw).unwrap();
    assert_eq!(parsed.message_id.as_deref(), Some(mail.message_id.as_str()));
    assert_eq!(
        parsed.from.as_ref().unwrap().kim_address(),
        Some(insurer.clone())
    );
    assert_eq!(parsed.to.len(), 1);
    assert_eq!(parsed.to[0].kim_address(), Some(practice.clone()));
    assert_eq!(parsed.subject, mail.subject);
    assert_eq!(
        parsed.text, mail.text,
        "dot-stuffing must be undone on both sides"
    );
    assert_eq!(parsed.in_reply_to, mail.in_reply_to);
    assert_eq!(parsed.references, mail.references);
    assert_eq!(parsed.kind, MailKind::Chat);
    let dienstkennung = parsed.dienstkennung.as_ref().unwrap();
    assert_eq!(
        (
            dienstkennung.anwendung.as_str(),
            dienstkennung.typ.as_str(),
            dienstkennung.version.as_str()
        ),
        ("KIM-Mail", "Default", "V1.0")
    );
    assert_eq!(parsed.attachments.len(), 1);
    assert_eq!(parsed.attachments[0].filename, mail.attachments[0].filename);
    assert_eq!(parsed.attachments[0].content_type, "application/pdf");
    assert_eq!(parsed.attachments[0].data, mail.attachments[0].data);
    assert!(parsed.date.is_some());
    // No Clientmodul in between: nothing was verified, and the bridge must say so.
    assert_eq!(parsed.verification.decryption, DecryptionResult::Missing);
    assert!(!parsed.verification.is_trustworthy());
    for header in [
        "X-KIM-Sendersystem: TI-M KIM-Bridge;0.1.0",
        "X-KIM-Middleware: kim-bridge;0.1.0",
    ] {
        assert!(headers.contains(header), "{header} missing in {headers}");
    }

    session.dele(number).await.unwrap();
    session.quit().await.unwrap();
    let mut session = Pop3Session::connect(&config).await.unwrap();
    assert!(
        session.uidl().await.unwrap().is_empty(),
        "QUIT must commit DELE"
    );
    session.quit().await.unwrap();
}

#[tokio::test]
async fn client_mail_round_trips_over_starttls_and_pop3s() {
    send_and_fetch(
        Security::StartTls,
        Security::ImplicitTls,
        Pop3Auth::UserPass,
    )
    .await;
}

#[tokio::test]
async fn client_mail_round_trips_over_smtps_and_pop3_stls_with_sasl_plain() {
    send_and_fetch(
        Security::ImplicitTls,
        Security::StartTls,
        Pop3Auth::SaslPlain,
    )
    .await;
}

#[tokio::test]
async fn wrong_password_is_a_permanent_535() {
    let server = mail_server();
    let insurer = server.new_mailbox("insurer");
    let practice = server.new_mailbox("practice");
    let mut config = server.smtp(&insurer, Security::StartTls);
    config.password = "wrong".into();
    let outcome = SmtpSender::new(config)
        .unwrap()
        .send(&rich_mail(&insurer, &practice), &sender_system())
        .await
        .unwrap();
    let SendOutcome::PermanentFailure {
        failure,
        recipients,
    } = outcome
    else {
        panic!("{outcome:?}")
    };
    assert_eq!(failure.stage, Stage::Auth);
    let reply = failure.reply.unwrap();
    assert_eq!(reply.code, 535);
    assert_eq!(reply.enhanced.as_deref(), Some("5.7.8"));
    assert!(recipients.is_empty());

    let mut pop3 = server.pop3(&insurer, Security::ImplicitTls, Pop3Auth::UserPass);
    pop3.password = "wrong".into();
    let error = Pop3Session::connect(&pop3)
        .await
        .expect_err("login must fail");
    assert!(matches!(error, Pop3Error::Auth(_)), "{error}");
}

#[tokio::test]
async fn unknown_recipient_domain_comes_back_as_a_dsn_for_the_original() {
    let server = mail_server();
    let insurer = server.new_mailbox("insurer");
    let practice = server.new_mailbox("practice");
    let nowhere =
        kim_bridge::kim::address::KimAddress::parse("somebody@nonexistent.kim.telematik-test")
            .unwrap();
    let mut mail = rich_mail(&insurer, &practice);
    mail.to.push(nowhere.clone());
    let outcome = SmtpSender::new(server.smtp(&insurer, Security::StartTls))
        .unwrap()
        .send(&mail, &sender_system())
        .await
        .unwrap();
    // As with KIM 1.5 every RCPT is accepted; the failure comes back by mail.
    accepted(&outcome);
    assert!(outcome.recipients().iter().all(|r| r.accepted()));

    // NOTIFY=SUCCESS,FAILURE: one failure report for the unknown domain and one success
    // report for the practice.
    let mails = server.wait_for_mails(&insurer, 2).await;
    let reports: Vec<_> = mails
        .iter()
        .map(|(_, raw)| incoming::parse(raw).unwrap())
        .map(|mail| match mail.kind {
            MailKind::DeliveryStatus(report) => report,
            other => panic!("not a DSN: {other:?}\n{}", mail.text),
        })
        .collect();
    for report in &reports {
        assert_eq!(
            report.original_message_id.as_deref(),
            Some(mail.message_id.as_str())
        );
    }
    let failure = reports
        .iter()
        .find(|r| r.is_failure())
        .expect("a failure report");
    assert_eq!(failure.recipients.len(), 1, "{failure:?}");
    assert_eq!(failure.recipients[0].recipient, nowhere.as_str());
    assert_eq!(failure.recipients[0].action, "failed");
    assert_eq!(failure.recipients[0].status, "5.1.2");
    assert!(
        failure.recipients[0]
            .diagnostic
            .as_deref()
            .unwrap_or_default()
            .contains("does not exist")
    );
    let success = reports
        .iter()
        .find(|r| !r.is_failure())
        .expect("a success report");
    assert_eq!(success.recipients[0].recipient, practice.as_str());
    assert_eq!(success.recipients[0].status, "2.0.0");
}

/// A certificate that is not the server's.
fn other_certificate(dir: &Path) -> std::path::PathBuf {
    let cert = dir.join("other.pem");
    let status = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
        ])
        .arg("-addext")
        .arg("subjectAltName=DNS:localhost,IP:127.0.0.1")
        .arg("-keyout")
        .arg(dir.join("other.key"))
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("run openssl");
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    cert
}

#[tokio::test]
async fn a_different_certificate_than_the_pinned_one_is_refused() {
    let server = mail_server();
    let insurer = server.new_mailbox("insurer");
    let practice = server.new_mailbox("practice");
    let dir = tempfile::tempdir().unwrap();
    let other = other_certificate(dir.path());

    for security in [Security::StartTls, Security::ImplicitTls] {
        let config = server.smtp_pinned(&insurer, security, other.clone());
        let outcome = SmtpSender::new(config)
            .unwrap()
            .send(&rich_mail(&insurer, &practice), &sender_system())
            .await
            .unwrap();
        let SendOutcome::TemporaryFailure { failure, .. } = outcome else {
            panic!("{security:?}: {outcome:?}")
        };
        assert_eq!(failure.stage, Stage::Tls);
        assert!(failure.detail.contains("pinned"), "{}", failure.detail);
    }
    for security in [Security::StartTls, Security::ImplicitTls] {
        let config = server.pop3_pinned(&practice, security, Pop3Auth::UserPass, other.clone());
        let error = Pop3Session::connect(&config)
            .await
            .expect_err("must refuse");
        assert!(
            matches!(error, Pop3Error::Connect(ConnectError::Tls(..))),
            "{error}"
        );
    }
    // Nothing got through.
    let mut session =
        Pop3Session::connect(&server.pop3(&practice, Security::ImplicitTls, Pop3Auth::UserPass))
            .await
            .unwrap();
    assert!(session.uidl().await.unwrap().is_empty());
    session.quit().await.unwrap();
}

#[tokio::test]
async fn dele_takes_effect_only_at_quit() {
    let server = mail_server();
    let insurer = server.new_mailbox("insurer");
    let practice = server.new_mailbox("practice");
    // The practice writes (a real SMTP client: swaks, as a practice system would).
    let output = Command::new("swaks")
        .args([
            "--server",
            &format!("127.0.0.1:{}", server.smtps_port),
            "--tls-on-connect",
        ])
        .args([
            "--auth",
            "LOGIN",
            "--auth-user",
            &server.context(&practice).smtp_username().unwrap(),
        ])
        .args(["--auth-password", &server.password])
        .args(["--from", practice.as_str(), "--to", insurer.as_str()])
        .args(["--header", "X-KIM-Dienstkennung: KIM-Mail;Default;V1.0"])
        .args(["--header", "X-KIM-DecryptionResult: 00"])
        .args(["--header", "X-KIM-IntegrityCheckResult: 02"])
        .args(["--header", "Subject: Antwort"])
        .args([
            "--body",
            "Befund anbei.\n\n-----------------\nDie Nachricht wurde entschlüsselt.\n",
        ])
        .output()
        .expect("run swaks");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
    let uid = server.wait_for_mails(&insurer, 1).await[0].0.clone();

    let config = server.pop3(&insurer, Security::ImplicitTls, Pop3Auth::UserPass);
    let mut session = Pop3Session::connect(&config).await.unwrap();
    let raw = session.retr(1).await.unwrap();
    let parsed = incoming::parse(&raw).unwrap();
    assert_eq!(parsed.text, "Befund anbei.");
    assert_eq!(
        parsed.trailer.as_deref(),
        Some("Die Nachricht wurde entschlüsselt.")
    );
    assert_eq!(parsed.verification.integrity, IntegrityResult::Violated);
    assert!(!parsed.verification.is_trustworthy());
    session.dele(1).await.unwrap();
    drop(session); // crash before QUIT

    let mut session = Pop3Session::connect(&config).await.unwrap();
    assert_eq!(
        session.uidl().await.unwrap(),
        vec![(1, uid)],
        "DELE without QUIT must keep the mail"
    );
    session.dele(1).await.unwrap();
    session.quit().await.unwrap();

    let mut session = Pop3Session::connect(&config).await.unwrap();
    assert!(session.uidl().await.unwrap().is_empty());
    session.quit().await.unwrap();
}

fn sample(name: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/kim-samples")
            .join(name),
    )
    .unwrap()
}

#[test]
fn gematik_sample_as_delivered_by_the_clientmodul() {
    let mail = incoming::parse(&sample("2_4_Client-Mail_finalisiert.txt")).unwrap();
    assert_eq!(
        mail.message_id.as_deref(),
        Some("c37a9fe5-a4b2-222d-35ba-6358fa26e48b@gematik.kim.telematik-test")
    );
    assert_eq!(mail.subject, "KIM 1.5 Testnachricht");
    assert_eq!(mail.kind, MailKind::Chat);
    assert_eq!(
        mail.from.as_ref().unwrap().address,
        "user.test15@gematik.kim.telematik-test"
    );
    assert_eq!(mail.text, "Text der Testnachricht");
    let trailer = mail.trailer.as_deref().unwrap();
    assert!(
        trailer.starts_with("Die Nachricht wurde entschl"),
        "{trailer}"
    );
    assert!(
        trailer.contains("Die Signatur wurde erfolgreich"),
        "{trailer}"
    );
    assert!(mail.verification.is_trustworthy());
    assert_eq!(
        mail.verification.status_line(),
        "decrypted, signature valid"
    );
    assert_eq!(mail.attachments.len(), 1);
    assert_eq!(mail.attachments[0].filename, "1mb.test");
}

#[test]
fn gematik_samples_of_the_sender_side_parse() {
    for name in [
        "1_1_Client-Mail_empfangen.txt",
        "1_2_Client-Mail_prozessiert.txt",
        "2_2_KOM-LE-Mail_prozessiert.txt",
        "2_3_Client-Mail_heruntergeladen.txt",
    ] {
        let mail = incoming::parse(&sample(name)).unwrap();
        assert_eq!(mail.subject, "KIM 1.5 Testnachricht", "{name}");
        assert_eq!(mail.kind, MailKind::Chat, "{name}");
        assert!(mail.trailer.is_none(), "{name}");
        assert!(
            !mail.verification.is_trustworthy(),
            "{name}: no Clientmodul verdict"
        );
    }
    // The encrypted KOM-LE mail itself: not decrypted, so not trustworthy, but still parsed.
    let outer = incoming::parse(&sample("2_1_KOM-LE-Mail_empfangen.txt")).unwrap();
    assert_eq!(outer.subject, "KOM-LE-Nachricht");
    assert_eq!(outer.verification.decryption, DecryptionResult::Missing);
}
