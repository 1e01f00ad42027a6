//! AuthEnvelopedData as KIM's profile wants it: AES-256-GCM content
//! encryption, RSAES-OAEP (SHA-256, MGF1-SHA-256) key transport for RSA
//! certificates, ECDH key agreement (X9.63 KDF with SHA-256, AES-256 key
//! wrap) for EC certificates such as brainpoolP256r1, every recipient by
//! issuerAndSerialNumber, and recipient-emails as unauthenticated attribute.

use openssl::cms::CMSOptions;
use openssl::hash::MessageDigest;
use openssl::md::Md;
use openssl::pkey::Id;
use openssl::rsa::Padding;
use openssl::symm::Cipher;

use super::RecipientCert;
use super::der;
use super::error::SmimeError;
use super::ffi;
use super::recipient_emails::{self, RecipientEmail};

/// Encrypts `content` (the signed wrap) for `recipients` and returns the
/// DER AuthEnvelopedData ContentInfo.
pub fn encrypt(content: &[u8], recipients: &[RecipientCert]) -> Result<Vec<u8>, SmimeError> {
    if recipients.is_empty() {
        return Err(SmimeError::InvalidMail("no recipients".into()));
    }
    let base = (CMSOptions::PARTIAL | CMSOptions::BINARY).bits();
    let mut cms = ffi::partial_enveloped_data(Cipher::aes_256_gcm(), base)?;
    for recipient in recipients {
        let id = recipient.cert.public_key()?.id();
        let mut ri = ffi::add_recipient(&mut cms, &recipient.cert, CMSOptions::KEY_PARAM.bits())?;
        let ctx = ri.pkey_ctx()?;
        match id {
            Id::RSA => {
                ctx.set_rsa_padding(Padding::PKCS1_OAEP)?;
                ctx.set_rsa_oaep_md(Md::sha256())?;
                ctx.set_rsa_mgf1_md(Md::sha256())?;
            }
            Id::EC => ffi::set_ecdh_kdf_md(ctx, MessageDigest::sha256())?,
            other => {
                return Err(SmimeError::InvalidMail(format!(
                    "certificate of {} has an unsupported key type {other:?}",
                    recipient.email
                )));
            }
        }
    }
    ffi::finalize(&mut cms, content, base)?;
    let entries = recipients
        .iter()
        .map(|r| RecipientEmail::new(&r.email, &r.cert))
        .collect::<Result<Vec<_>, _>>()?;
    // unauthAttrs is a SET OF Attribute; its content is our one Attribute.
    der::append_unauth_attrs(&cms.to_der()?, &recipient_emails::attribute_der(&entries))
}
