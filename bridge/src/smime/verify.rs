//! Checks a KIM SignedData: the signature (with the certificate carried in
//! the message), then the signer's certificate path against trust anchors.
//! A bad signature is an error; a path that does not validate is a result
//! (`X-KIM-IntegrityCheckResult: 05`), because the content is still intact.

use openssl::cms::{CMSOptions, CmsContentInfo};
use openssl::stack::Stack;
use openssl::x509::store::X509StoreBuilder;
use openssl::x509::{X509, X509StoreContext};

use super::der;
use super::error::SmimeError;
use super::ffi;
use super::recipient_emails::{self, RecipientEmail};

/// The content of a SignedData whose signature verified.
#[derive(Debug)]
pub struct VerifiedContent {
    /// The signed bytes (the rfc822 wrap).
    pub content: Vec<u8>,
    /// The signer's certificate, from the message.
    pub signer: X509,
    /// The signed recipient-emails attribute; empty when absent.
    pub recipient_emails: Vec<RecipientEmail>,
    /// Whether the signer's certificate chains to one of the trust anchors.
    pub cert_path_valid: bool,
}

/// Verifies a DER SignedData. `trust` holds the CA certificates accepted
/// as anchors (for KIM: the TSL's CAs).
pub fn verify(signed_data_der: &[u8], trust: &[X509]) -> Result<VerifiedContent, SmimeError> {
    let mut cms = CmsContentInfo::from_der(signed_data_der).map_err(SmimeError::signed_format)?;
    ffi::single_signer(&cms).map_err(SmimeError::SignedFormat)?;
    let mut content = Vec::new();
    // The path is checked below, separately, so a valid signature by an
    // untrusted certificate is told apart from a broken signature.
    let flags = CMSOptions::NO_SIGNER_CERT_VERIFY | CMSOptions::BINARY;
    cms.verify(None, None, None, Some(&mut content), flags)
        .map_err(SmimeError::SignatureInvalid)?;
    let si = ffi::single_signer(&cms).map_err(SmimeError::SignedFormat)?;
    let signer = si
        .signer_cert()
        .ok_or_else(|| SmimeError::signed_format("signer certificate not in the message"))?;
    let recipient_emails = match si.signed_attribute(&*recipient_emails::oid()?) {
        Some(attribute) => {
            let attribute = der::read_one(&attribute, der::TAG_SEQUENCE).map_err(as_signed)?;
            recipient_emails::parse_attribute(&attribute)
                .map_err(as_signed)?
                .unwrap_or_default()
        }
        None => Vec::new(),
    };
    let cert_path_valid = cert_path_valid(&signer, trust)?;
    Ok(VerifiedContent {
        content,
        signer,
        recipient_emails,
        cert_path_valid,
    })
}

/// Whether `cert` chains to `trust` at the current time.
fn cert_path_valid(cert: &X509, trust: &[X509]) -> Result<bool, SmimeError> {
    let mut store = X509StoreBuilder::new()?;
    for anchor in trust {
        store.add_cert(anchor.clone())?;
    }
    let store = store.build();
    let chain = Stack::new()?;
    let mut context = X509StoreContext::new()?;
    Ok(context.init(&store, cert, &chain, |c| c.verify_cert())?)
}

/// Structure errors inside signed attributes belong to the signature layer.
fn as_signed(error: SmimeError) -> SmimeError {
    match error {
        SmimeError::EncryptedFormat(reason) => SmimeError::SignedFormat(reason),
        other => other,
    }
}
