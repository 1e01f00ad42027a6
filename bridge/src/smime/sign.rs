//! SignedData as KIM's profile wants it: one signer by issuerAndSerialNumber,
//! only the signer certificate, RSASSA-PSS SHA-256 with a 32-byte salt, and
//! the signed attributes contentType, signingTime, messageDigest (OpenSSL
//! adds these three), signingCertificateV2 (`CMS_CADES`),
//! CMSAlgorithmProtection and recipient-emails (added here).

use openssl::cms::CMSOptions;
use openssl::hash::MessageDigest;
use openssl::md::Md;
use openssl::rsa::Padding;
use openssl::sign::RsaPssSaltlen;

use super::SignerIdentity;
use super::der::{self, TAG_SEQUENCE};
use super::error::SmimeError;
use super::ffi;
use super::recipient_emails::{self, RecipientEmail};

/// `CMSAlgorithmProtection` (RFC 6211) for SHA-256 with RSASSA-PSS
/// (SHA-256, MGF1-SHA-256, salt 32): the same AlgorithmIdentifiers OpenSSL
/// writes into the SignerInfo, so the two agree byte for byte.
fn algorithm_protection_attribute() -> Vec<u8> {
    const OID_CMS_ALGORITHM_PROTECTION: &[u8] = &[
        0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x34,
    ];
    const SHA256: &[u8] = &[
        0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00,
    ];
    const OID_RSASSA_PSS: &[u8] = &[
        0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0a,
    ];
    const OID_MGF1: &[u8] = &[
        0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x08,
    ];
    let pss_params = [
        der::tlv(0xa0, SHA256),
        der::tlv(0xa1, &der::tlv(TAG_SEQUENCE, &[OID_MGF1, SHA256].concat())),
        der::tlv(0xa2, &der::tlv(der::TAG_INTEGER, &[32])),
    ]
    .concat();
    let pss = [OID_RSASSA_PSS.to_vec(), der::tlv(TAG_SEQUENCE, &pss_params)].concat();
    // signatureAlgorithm is [1] IMPLICIT AlgorithmIdentifier.
    let protection = der::tlv(
        TAG_SEQUENCE,
        &[SHA256.to_vec(), der::tlv(0xa1, &pss)].concat(),
    );
    let values = der::tlv(der::TAG_SET, &protection);
    der::tlv(
        TAG_SEQUENCE,
        &[OID_CMS_ALGORITHM_PROTECTION.to_vec(), values].concat(),
    )
}

/// Signs `content` (the rfc822 wrap) and returns the DER SignedData.
pub fn sign(
    content: &[u8],
    signer: &SignerIdentity,
    recipients: &[RecipientEmail],
) -> Result<Vec<u8>, SmimeError> {
    if signer.key.rsa().is_err() {
        return Err(SmimeError::InvalidMail(
            "KIM signatures need an RSA key (RSASSA-PSS)".into(),
        ));
    }
    let base = (CMSOptions::PARTIAL | CMSOptions::BINARY).bits();
    let mut cms = ffi::partial_signed_data(base)?;
    {
        let flags = base | (CMSOptions::KEY_PARAM | CMSOptions::NOSMIMECAP).bits() | ffi::CMS_CADES;
        let mut si = ffi::add_signer(
            &mut cms,
            &signer.cert,
            &signer.key,
            MessageDigest::sha256(),
            flags,
        )?;
        let ctx = si.pkey_ctx()?;
        ctx.set_rsa_padding(Padding::PKCS1_PSS)?;
        ctx.set_rsa_pss_saltlen(RsaPssSaltlen::custom(32))?;
        ctx.set_rsa_mgf1_md(Md::sha256())?;
        si.add_signed_attribute(&algorithm_protection_attribute())?;
        si.add_signed_attribute(&recipient_emails::attribute_der(recipients))?;
    }
    ffi::finalize(&mut cms, content, base)?;
    Ok(cms.to_der()?)
}
