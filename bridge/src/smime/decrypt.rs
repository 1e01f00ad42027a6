//! Opens a KIM AuthEnvelopedData with one mailbox's key. OpenSSL 3.0 cannot
//! parse the recipient-emails unauthAttrs, so they are cut out first (they
//! are not covered by the GCM tag, so this changes nothing that is checked).

use openssl::cms::CmsContentInfo;
use openssl::pkey::{PKey, Private};
use openssl::x509::X509;

use super::der;
use super::error::SmimeError;
use super::recipient_emails::{self, RecipientEmail};

/// A decrypted AuthEnvelopedData.
#[derive(Debug)]
pub struct Decrypted {
    /// The plaintext (for KIM: the signed wrap).
    pub content: Vec<u8>,
    /// The unauthenticated recipient-emails attribute; empty when absent.
    pub recipient_emails: Vec<RecipientEmail>,
}

/// Decrypts a DER (or BER) AuthEnvelopedData ContentInfo for the mailbox
/// owning `key` and `cert`.
pub fn decrypt(
    der_bytes: &[u8],
    key: &PKey<Private>,
    cert: &X509,
) -> Result<Decrypted, SmimeError> {
    let envelope = der::split_envelope(der_bytes)?;
    let me = recipient_emails::rid_of(cert)?;
    if !envelope.recipient_ids.contains(&me) {
        return Err(SmimeError::KeyNotAvailable);
    }
    let recipient_emails = match envelope.unauth_attrs {
        Some(attributes) => recipient_emails::find_in_attributes(&attributes)?.unwrap_or_default(),
        None => Vec::new(),
    };
    let cms = CmsContentInfo::from_der(&envelope.cleaned)
        .map_err(|e| SmimeError::EncryptedFormat(e.to_string()))?;
    // We are a recipient, so a failure now means the wrapped key or the GCM
    // tag did not check out. Passing the certificate makes OpenSSL use only
    // the matching RecipientInfo.
    let content = cms.decrypt(key, cert).map_err(SmimeError::Manipulated)?;
    Ok(Decrypted {
        content,
        recipient_emails,
    })
}

/// The AuthEnvelopedData without its unauthAttrs: what OpenSSL 3.0 (and
/// its `openssl cms` command) can parse. The GCM tag does not cover them.
pub fn without_unauth_attrs(der_bytes: &[u8]) -> Result<Vec<u8>, SmimeError> {
    Ok(der::split_envelope(der_bytes)?.cleaned)
}
