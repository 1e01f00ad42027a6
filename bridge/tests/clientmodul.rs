//! The test KIM Clientmodul (`kim-bridge test-clientmodul`) in front of the
//! test mail server (`scripts/mailserver`): its SMTP and POP3 replies as
//! KIM.md lists them, and what it makes of mail both ways (KOM-LE mail at
//! the MTA that the recipient's keys open; decrypted mail with the
//! `X-KIM-*` results and trailer for the client; error mails).

mod support;

use std::sync::Arc;

use kim_bridge::kim::address::KimAddress;
use kim_bridge::kim::incoming::{self, MailKind};
use kim_bridge::kim::pop3::{Pop3Auth, Pop3Error, Pop3Session};
use kim_bridge::kim::smtp::{Envelope, SendOutcome, SmtpSender, Stage};
use kim_bridge::kim::tls::Security;
use kim_bridge::kim::verification::{DecryptionResult, IntegrityResult};
use kim_bridge::smime::{self, IntegrityCheck};
use support::clientmodul::{TestClientmodul, tamper_ciphertext, tamper_outer_header};
use support::mail_server::mail_server;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

fn client_mail(from: &KimAddress, to: &KimAddress, text: &str) -> Vec<u8> {
    format!(
        "From: {from}\r\nTo: {to}\r\nSubject: Befund\r\nDate: Mon, 23 Nov 2026 10:00:00 +0100\r\n\
         Message-ID: <{}@{}>\r\nX-KIM-Dienstkennung: KIM-Mail;Default;V1.0\r\n\
         MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Content-Transfer-Encoding: 8bit\r\n\r\n{text}\r\n",
        uuid::Uuid::new_v4(),
        from.domain()
    )
    .into_bytes()
}

async fn send(
    config: kim_bridge::kim::smtp::SmtpConfig,
    from: &KimAddress,
    to: &[&KimAddress],
    text: &str,
) -> SendOutcome {
    let mail = client_mail(from, to[0], text);
    let envelope = Envelope {
        from: from.clone(),
        to: to.iter().map(|a| (*a).clone()).collect(),
    };
    SmtpSender::new(config)
        .expect("SMTP config")
        .send_raw(&envelope, &mail)
        .await
        .expect("sending")
}

fn failure_reply(outcome: &SendOutcome) -> (Stage, u16, String) {
    match outcome {
        SendOutcome::TemporaryFailure { failure, .. }
        | SendOutcome::PermanentFailure { failure, .. } => {
            let reply = failure.reply.as_ref().expect("a reply");
            (
                failure.stage,
                reply.code,
                reply.enhanced.clone().unwrap_or_default(),
            )
        }
        SendOutcome::Accepted { .. } => panic!("accepted: {outcome:?}"),
    }
}

/// Every mail the Clientmodul hands `address` over POP3 (left there), with UIDLs.
async fn fetch(cm: &TestClientmodul, address: &KimAddress) -> Vec<(String, Vec<u8>)> {
    let mut session = Pop3Session::connect(&cm.pop3(address))
        .await
        .expect("POP3 login at the Clientmodul");
    let mut mails = Vec::new();
    for (number, uidl) in session.uidl().await.expect("UIDL") {
        mails.push((uidl, session.retr(number).await.expect("RETR")));
    }
    session.quit().await.expect("QUIT");
    mails
}

#[tokio::test(flavor = "multi_thread")]
async fn a_mail_goes_out_as_kom_le_and_comes_back_decrypted_and_verified() {
    let server = mail_server();
    let insurer = server.new_mailbox("insurer");
    let practice = server.new_mailbox("practice");
    let cm = TestClientmodul::start(&[&insurer, &practice], &[], false).await;

    let outcome = send(
        cm.smtp(&insurer),
        &insurer,
        &[&practice],
        "Grüße aus der Kasse.",
    )
    .await;
    assert!(
        matches!(outcome, SendOutcome::Accepted { .. }),
        "{outcome:?}"
    );

    // At the MTA: a KOM-LE mail that the practice's own keys open.
    let at_mta = server.wait_for_mails(&practice, 1).await;
    let (mta_uidl, outer) = &at_mta[0];
    let headers = mail_parser::MessageParser::default()
        .parse_headers(outer.as_slice())
        .expect("headers");
    assert_eq!(headers.subject(), Some("KOM-LE-Nachricht"));
    let key = &cm.mailboxes[&practice].encryption;
    let decoded =
        smime::decode_kim_mail(outer, key, std::slice::from_ref(&cm.ca.cert)).expect("decodes");
    assert_eq!(decoded.integrity, IntegrityCheck::ValidStatusUnknown);
    assert_eq!(decoded.integrity.code(), "07");
    assert!(String::from_utf8_lossy(&decoded.mail).contains("Grüße aus der Kasse."));
    let named: Vec<&str> = decoded
        .recipient_emails
        .iter()
        .map(|e| e.email.as_str())
        .collect();
    assert!(named.contains(&practice.as_str()) && named.contains(&insurer.as_str()));

    // Through the Clientmodul's POP3: the client mail with results and trailer,
    // under the MTA's UIDL.
    let delivered = fetch(&cm, &practice).await;
    assert_eq!(delivered.len(), 1);
    let (uidl, mail) = &delivered[0];
    assert_eq!(uidl, mta_uidl, "the MTA's UIDL, stable across restarts");
    let parsed = incoming::parse(mail).expect("a mail");
    assert_eq!(parsed.verification.decryption, DecryptionResult::Ok);
    assert_eq!(
        parsed.verification.integrity,
        IntegrityResult::CertificateStatusUnknown
    );
    assert_eq!(parsed.text, "Grüße aus der Kasse.");
    assert_eq!(
        parsed.trailer.as_deref(),
        Some("Die Nachricht wurde entschlüsselt.\nDie Signatur wurde erfolgreich geprüft.")
    );
    assert_eq!(parsed.kind, MailKind::Chat);
    assert_eq!(parsed.from.map(|f| f.address), Some(insurer.to_string()));

    // TOP n 0: the headers of the same client mail.
    let mut session = Pop3Session::connect(&cm.pop3(&practice))
        .await
        .expect("login");
    let top = session.top(1, 0).await.expect("TOP");
    let top = String::from_utf8_lossy(&top);
    assert!(top.contains("X-KIM-DecryptionResult: 00"), "{top}");
    assert!(!top.contains("Grüße"), "{top}");
    drop(session);

    // After a restart the Clientmodul lists the same UIDL.
    let mut cm = cm;
    cm.running.take().expect("running").stop().await;
    let restarted = TestClientmodul::restart(cm).await;
    assert_eq!(fetch(&restarted, &practice).await[0].0, *mta_uidl);
}

#[tokio::test(flavor = "multi_thread")]
async fn smtp_replies_follow_kim() {
    let server = mail_server();
    let insurer = server.new_mailbox("insurer");
    let practice = server.new_mailbox("practice");
    let uncertified = server.new_mailbox("practice");
    let cm = TestClientmodul::start(&[&insurer], &[&practice], false).await;

    // Malformed username: 501 5.5.4.
    let config = cm.smtp_as(insurer.as_str(), &server.password);
    let outcome = send(config, &insurer, &[&practice], "x").await;
    assert_eq!(failure_reply(&outcome), (Stage::Auth, 501, "5.5.4".into()));

    // Bad password: 535 5.7.8.
    let config = cm.smtp_as(&cm.smtp_username(&insurer), "wrong");
    let outcome = send(config, &insurer, &[&practice], "x").await;
    assert_eq!(failure_reply(&outcome), (Stage::Auth, 535, "5.7.8".into()));

    // The MTA in the username does not answer: 454 4.7.0.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let config = cm.smtp_as(
        &format!("{insurer}#127.0.0.1:{closed}#1#KIM#1"),
        &server.password,
    );
    let outcome = send(config, &insurer, &[&practice], "x").await;
    assert!(matches!(outcome, SendOutcome::TemporaryFailure { .. }));
    assert_eq!(failure_reply(&outcome), (Stage::Auth, 454, "4.7.0".into()));

    // No recipient has a certificate: 451 after DATA.
    let outcome = send(cm.smtp(&insurer), &insurer, &[&uncertified], "x").await;
    assert_eq!(failure_reply(&outcome).0, Stage::Data);
    assert_eq!(failure_reply(&outcome).1, 451);

    // The sender's certificate is gone from the directory: 553 at MAIL FROM.
    std::fs::remove_file(cm.config.directory.join(format!("{insurer}.pem"))).expect("remove");
    let outcome = send(cm.smtp(&insurer), &insurer, &[&practice], "x").await;
    assert_eq!(failure_reply(&outcome).0, Stage::MailFrom);
    assert_eq!(failure_reply(&outcome).1, 553);
}

/// A raw TLS connection to the Clientmodul (its CA as the only root).
async fn raw_connection(
    cm: &TestClientmodul,
    port: u16,
) -> BufReader<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from(
            cm.ca.cert.to_der().expect("der"),
        ))
        .expect("root");
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .expect("TLS with the Clientmodul's certificate");
    BufReader::new(tls)
}

async fn lines_until(
    conn: &mut BufReader<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>,
    last: impl Fn(&str) -> bool,
) -> Vec<String> {
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        conn.read_line(&mut line).await.expect("a line");
        let line = line.trim_end().to_owned();
        let done = last(&line);
        lines.push(line);
        if done {
            return lines;
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn ehlo_and_capa_advertise_what_kim_needs() {
    let server = mail_server();
    let insurer = server.new_mailbox("insurer");
    let cm = TestClientmodul::start(&[&insurer], &[], false).await;

    let mut smtp =
        raw_connection(&cm, cm.running.as_ref().expect("runs").smtp_address.port()).await;
    lines_until(&mut smtp, |l| l.starts_with("220 ")).await;
    smtp.get_mut()
        .write_all(b"EHLO client\r\n")
        .await
        .expect("write");
    let ehlo = lines_until(&mut smtp, |l| l.starts_with("250 ")).await;
    let keywords: Vec<&str> = ehlo.iter().skip(1).map(|l| &l[4..]).collect();
    for wanted in ["AUTH PLAIN LOGIN", "8BITMIME", "ENHANCEDSTATUSCODES", "DSN"] {
        assert!(keywords.contains(&wanted), "{wanted} in {ehlo:?}");
    }
    assert!(keywords.iter().any(|k| k.starts_with("SIZE ")), "{ehlo:?}");
    smtp.get_mut()
        .write_all(b"MAIL FROM:<a@b.kim.telematik>\r\n")
        .await
        .expect("write");
    let refused = lines_until(&mut smtp, |_| true).await;
    assert!(refused[0].starts_with("530 5.7.0"), "{refused:?}");

    let mut pop3 =
        raw_connection(&cm, cm.running.as_ref().expect("runs").pop3_address.port()).await;
    lines_until(&mut pop3, |_| true).await;
    pop3.get_mut().write_all(b"CAPA\r\n").await.expect("write");
    let capa = lines_until(&mut pop3, |l| l == ".").await;
    for wanted in ["TOP", "USER", "SASL PLAIN", "UIDL"] {
        assert!(capa.iter().any(|l| l == wanted), "{wanted} in {capa:?}");
    }
    pop3.get_mut()
        .write_all(b"USER nobody\r\nPASS x\r\n")
        .await
        .expect("write");
    let refused = lines_until(&mut pop3, |l| l.starts_with("-ERR")).await;
    assert!(
        refused.last().expect("a line").contains("malformed"),
        "{refused:?}"
    );

    // A wrong password over SASL PLAIN is refused by the MTA behind.
    let mut config = cm.pop3(&insurer);
    config.password = "wrong".into();
    config.auth = Pop3Auth::SaslPlain;
    let error = Pop3Session::connect(&config).await.expect_err("refused");
    assert!(matches!(error, Pop3Error::Auth(_)), "{error:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn tampered_mail_gets_kim_result_codes() {
    let server = mail_server();
    let insurer = server.new_mailbox("insurer");
    let practice = server.new_mailbox("practice");
    let cm = TestClientmodul::start(&[&insurer, &practice], &[], true).await;
    let outcome = send(cm.smtp(&insurer), &insurer, &[&practice], "Original.").await;
    assert!(
        matches!(outcome, SendOutcome::Accepted { .. }),
        "{outcome:?}"
    );
    let original = server.wait_for_mails(&practice, 1).await.remove(0).1;

    // Placed at the MTA directly: the ciphertext with one byte flipped, and
    // the mail with its outer Message-ID changed.
    let direct = SmtpSender::new(server.smtp(&insurer, Security::ImplicitTls)).expect("SMTP");
    let envelope = Envelope {
        from: insurer.clone(),
        to: vec![practice.clone()],
    };
    for tampered in [tamper_ciphertext(&original), tamper_outer_header(&original)] {
        let outcome = direct
            .send_raw(&envelope, &tampered)
            .await
            .expect("sending");
        assert!(
            matches!(outcome, SendOutcome::Accepted { .. }),
            "{outcome:?}"
        );
    }
    server.wait_for_mails(&practice, 3).await;

    let delivered: Vec<_> = fetch(&cm, &practice)
        .await
        .into_iter()
        .map(|(_, mail)| incoming::parse(&mail).expect("a mail"))
        .collect();
    let good = delivered
        .iter()
        .filter(|m| m.verification.is_trustworthy())
        .count();
    assert_eq!(good, 1, "the untouched mail verifies as 00/01");
    let manipulated = delivered
        .iter()
        .find(|m| m.verification.decryption == DecryptionResult::WrongFormat)
        .expect("the flipped ciphertext");
    assert_eq!(
        manipulated
            .verification
            .errors
            .iter()
            .map(|e| e.code.as_str())
            .collect::<Vec<_>>(),
        ["4014"]
    );
    assert_eq!(
        manipulated.subject,
        "Die Nachricht konnte nicht entschlüsselt werden"
    );
    assert_eq!(
        manipulated.kind,
        MailKind::Chat,
        "shown as the sender's, with a warning"
    );
    assert!(
        manipulated.attachments.is_empty(),
        "the original is part of the error mail"
    );
    let changed = delivered
        .iter()
        .find(|m| m.verification.integrity == IntegrityResult::HeadersDiffer)
        .expect("the changed outer header");
    assert_eq!(changed.verification.decryption, DecryptionResult::Ok);
    assert_eq!(changed.text, "Original.");
}
