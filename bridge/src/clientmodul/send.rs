//! The sending pipeline: a client mail becomes a KOM-LE mail (signed with
//! the mailbox's key, encrypted for every recipient the directory has a
//! certificate for and for the sender) and is relayed to the MTA.

use mail_parser::MessageParser;

use super::Shared;
use super::smtp_server::{Authenticated, Reply};
use crate::kim::address::KimAddress;
use crate::kim::smtp::{Envelope, SendOutcome, Stage};
use crate::smime::{self, EncodeOptions, SmimeError};

/// Encodes `mail` for `recipients` and relays it; the reply is what the
/// client gets after DATA.
pub(super) async fn send(
    shared: &Shared,
    auth: &Authenticated,
    recipients: &[KimAddress],
    mail: Vec<u8>,
) -> Reply {
    let sender = &auth.login.address;
    let from = MessageParser::default().parse_headers(&mail).and_then(|m| {
        m.from()
            .and_then(|f| f.first()?.address().map(str::to_owned))
    });
    if from.and_then(|f| KimAddress::parse(&f).ok()).as_ref() != Some(sender) {
        return Reply::new(550, "5.7.1", "From must be the authenticated mailbox");
    }
    let Some(mailbox) = shared.keystore.mailbox(sender) else {
        return Reply::new(451, "4.7.5", "signing impossible: no key for this mailbox");
    };
    let (encryptable, missing): (Vec<_>, Vec<_>) = recipients
        .iter()
        .map(|r| (r, shared.keystore.encryption_certificate(r)))
        .partition(|(_, cert)| cert.is_some());
    if encryptable.is_empty() {
        return Reply::new(
            451,
            "4.7.5",
            "the mail cannot be encrypted for any recipient",
        );
    }
    if !missing.is_empty() {
        let missing: Vec<&str> = missing.iter().map(|(r, _)| r.as_str()).collect();
        // KIM 1.5 reports these in an error mail (4004); this test
        // Clientmodul only logs them.
        tracing::warn!(
            ?missing,
            "no encryption certificate: not sent to these recipients"
        );
    }
    let to: Vec<KimAddress> = encryptable.iter().map(|(r, _)| (*r).clone()).collect();
    let certificates: Vec<_> = encryptable
        .into_iter()
        .filter_map(|(_, cert)| cert)
        .collect();
    let encoded = tokio::task::spawn_blocking(move || {
        smime::encode_kim_mail(
            &mail,
            &mailbox.signer,
            &certificates,
            &EncodeOptions::default(),
        )
    })
    .await;
    let outer = match encoded {
        Ok(Ok(outer)) => outer,
        Ok(Err(SmimeError::InvalidMail(reason))) => {
            return Reply::new(554, "5.6.0", format!("invalid client mail: {reason}"));
        }
        Ok(Err(error)) => {
            return Reply::new(
                451,
                "4.7.5",
                format!("signing or encryption failed: {error}"),
            );
        }
        Err(error) => return Reply::new(451, "4.3.0", format!("internal error: {error}")),
    };
    let relay = match auth.mta_sender(shared) {
        Ok(relay) => relay,
        Err(error) => return Reply::new(454, "4.7.0", format!("MTA not usable: {error}")),
    };
    let envelope = Envelope {
        from: sender.clone(),
        to,
    };
    match relay.send_raw(&envelope, &outer).await {
        Ok(SendOutcome::Accepted { .. }) => {
            Reply::new(250, "2.0.0", "signed, encrypted and relayed")
        }
        Ok(SendOutcome::TemporaryFailure { failure, .. }) => match failure.stage {
            Stage::Connect | Stage::Tls | Stage::Greeting => {
                Reply::new(454, "4.7.0", format!("MTA unreachable: {}", failure.detail))
            }
            _ => Reply::new(
                451,
                "4.4.0",
                format!("the MTA refused for now: {}", failure.detail),
            ),
        },
        Ok(SendOutcome::PermanentFailure { failure, .. }) => {
            Reply::new(554, "5.0.0", format!("the MTA refused: {}", failure.detail))
        }
        Err(error) => Reply::new(451, "4.3.0", format!("relaying failed: {error}")),
    }
}
