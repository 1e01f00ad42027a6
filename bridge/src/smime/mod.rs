//! gematik's KIM S/MIME profile (gemSMIME_KOMLE; KIM.md, "The S/MIME
//! profile"): what a Clientmodul does to a client mail before it leaves and
//! after it arrives. The bridge itself talks plain mail to a real
//! Clientmodul; this module is for our test Clientmodul and for checking
//! what real ones produce.
//!
//! Sending: client mail → [`wrap::rfc822_wrap`] → [`sign::sign`] (SignedData)
//! → [`wrap::signed_wrap`] → [`encrypt::encrypt`] (AuthEnvelopedData) →
//! [`mail::build_outer`]. Receiving runs the same steps backwards.

pub mod decrypt;
mod der;
pub mod encrypt;
mod error;
mod ffi;
pub mod mail;
pub mod recipient_emails;
pub mod sign;
pub mod verify;
pub mod wrap;

use openssl::pkey::{PKey, Private};
use openssl::x509::X509;

pub use error::SmimeError;
pub use mail::EncodeOptions;
pub use recipient_emails::RecipientEmail;

/// The sending mailbox: its signature key and certificate (C.HCI.OSIG) and
/// its encryption certificate (C.HCI.ENC), since the sender is always a
/// recipient too.
pub struct SignerIdentity {
    /// The mailbox address.
    pub email: String,
    /// The signature certificate.
    pub cert: X509,
    /// The signature key (RSA).
    pub key: PKey<Private>,
    /// The sender's own encryption certificate.
    pub encryption_cert: X509,
}

/// A recipient's address and encryption certificate (from the directory).
#[derive(Clone)]
pub struct RecipientCert {
    /// The mailbox address.
    pub email: String,
    /// The encryption certificate (RSA or brainpoolP256r1).
    pub cert: X509,
}

/// A receiving mailbox: its address, encryption certificate and key.
pub struct MailboxKey {
    /// The mailbox address.
    pub email: String,
    /// The encryption certificate.
    pub cert: X509,
    /// The matching private key.
    pub key: PKey<Private>,
}

/// `X-KIM-IntegrityCheckResult` of a mail whose signature verified. There
/// is no `01`: without an OCSP check the certificate status is unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntegrityCheck {
    /// `07`: signature and certificate path good, revocation not checked.
    ValidStatusUnknown,
    /// `05`: signature good, but the signer's certificate does not chain to
    /// the trust anchors (or has expired).
    CertPathInvalid,
    /// `08`: outer and inner From/To/Cc/Message-ID differ.
    HeadersDiffer,
    /// `09`: the signed recipient-emails do not name this mailbox.
    RecipientEmailsMismatch,
}

impl IntegrityCheck {
    /// The header value.
    pub fn code(self) -> &'static str {
        match self {
            Self::ValidStatusUnknown => "07",
            Self::CertPathInvalid => "05",
            Self::HeadersDiffer => "08",
            Self::RecipientEmailsMismatch => "09",
        }
    }
}

/// A received KIM mail, decrypted and its signature verified.
#[derive(Debug)]
pub struct DecodedMail {
    /// The client mail as the sender wrote it (inside the rfc822 wrap).
    pub mail: Vec<u8>,
    /// The signer's certificate.
    pub signer: X509,
    /// What to show next to the message; anything but `07` is a warning.
    pub integrity: IntegrityCheck,
    /// The signed recipient-emails.
    pub recipient_emails: Vec<RecipientEmail>,
}

/// Signs and encrypts `plain_mail` for `recipients` and the sender, and
/// returns the outer mail to hand to the mail server.
pub fn encode_kim_mail(
    plain_mail: &[u8],
    sender: &SignerIdentity,
    recipients: &[RecipientCert],
    options: &EncodeOptions,
) -> Result<Vec<u8>, SmimeError> {
    let mut everyone = recipients.to_vec();
    if !everyone
        .iter()
        .any(|r| r.email.eq_ignore_ascii_case(&sender.email))
    {
        everyone.push(RecipientCert {
            email: sender.email.clone(),
            cert: sender.encryption_cert.clone(),
        });
    }
    let entries = everyone
        .iter()
        .map(|r| RecipientEmail::new(&r.email, &r.cert))
        .collect::<Result<Vec<_>, _>>()?;
    let signed = sign::sign(&wrap::rfc822_wrap(plain_mail), sender, &entries)?;
    let encrypted = encrypt::encrypt(&wrap::signed_wrap(&signed), &everyone)?;
    mail::build_outer(plain_mail, &encrypted, options)
}

/// Decrypts a received KIM mail with `mailbox`'s key and verifies its
/// signature; `trust` holds the accepted CA certificates.
pub fn decode_kim_mail(
    mail: &[u8],
    mailbox: &MailboxKey,
    trust: &[X509],
) -> Result<DecodedMail, SmimeError> {
    let outer = mail::parse_outer(mail)?;
    let decrypted = decrypt::decrypt(&outer.encrypted_der, &mailbox.key, &mailbox.cert)?;
    let verified = verify::verify(&wrap::signed_unwrap(&decrypted.content)?, trust)?;
    let inner = wrap::rfc822_unwrap(&verified.content)?;
    let inner_headers = wrap::parse_headers(inner)
        .ok_or_else(|| SmimeError::signed_format("signed mail has no header"))?;
    let names_me = verified
        .recipient_emails
        .iter()
        .any(|e| e.email.eq_ignore_ascii_case(&mailbox.email) && e.names(&mailbox.cert));
    let integrity = if !names_me {
        IntegrityCheck::RecipientEmailsMismatch
    } else if !mail::same_addressing(&outer.headers, &inner_headers) {
        IntegrityCheck::HeadersDiffer
    } else if !verified.cert_path_valid {
        IntegrityCheck::CertPathInvalid
    } else {
        IntegrityCheck::ValidStatusUnknown
    };
    Ok(DecodedMail {
        mail: inner.to_vec(),
        signer: verified.signer,
        integrity,
        recipient_emails: verified.recipient_emails,
    })
}
