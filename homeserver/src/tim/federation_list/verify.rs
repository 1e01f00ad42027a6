//! The signature of the federation list: a JWS in compact form whose header
//! carries the signer's certificate chain (`x5c`). The VZD signs with
//! brainpoolP256r1 (`alg` `BP256R1`, gematik's name) or P-256 (`ES256`); the
//! chain must lead to the TI's CA certificate the operator configured.
//!
//! Written against the `openssl` crate rather than a JOSE crate: none of the
//! maintained ones knows brainpool curves or validates an `x5c` chain, and
//! the JWS layer itself is three base64url parts and one ECDSA check.

use std::path::Path;

use anyhow::Context as _;
use base64::{
    Engine as _,
    engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD},
};
use openssl::{
    bn::BigNum,
    ec::EcKey,
    ecdsa::EcdsaSig,
    nid::Nid,
    pkey::Public,
    sha::sha256,
    stack::Stack,
    x509::{X509, X509StoreContext, store::{X509Store, X509StoreBuilder}},
};
use serde::Deserialize;

/// Why a list was refused; logged, never shown to clients.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("not a compact JWS: {0}")]
    Malformed(String),
    #[error("unsupported alg {0:?} (ES256 or BP256R1)")]
    Algorithm(String),
    #[error("the signer's certificate chain does not lead to the trust anchor: {0}")]
    Chain(String),
    #[error("the signer's key is not on the curve of {0}")]
    Curve(&'static str),
    #[error("the signature does not verify")]
    Signature,
    #[error("openssl: {0}")]
    OpenSsl(#[from] openssl::error::ErrorStack),
}

/// The CA certificates (PEM, one or more) a signer's chain must end in.
pub struct TrustAnchors(X509Store);

impl TrustAnchors {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let pem = std::fs::read(path).with_context(|| format!("reading the trust anchor {}", path.display()))?;
        Self::from_pem(&pem).with_context(|| format!("{} holds no usable PEM certificate", path.display()))
    }

    pub fn from_pem(pem: &[u8]) -> anyhow::Result<Self> {
        let certificates = X509::stack_from_pem(pem)?;
        anyhow::ensure!(!certificates.is_empty(), "no certificate");
        let mut store = X509StoreBuilder::new()?;
        for certificate in certificates {
            store.add_cert(certificate)?;
        }
        Ok(Self(store.build()))
    }
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    x5c: Vec<String>,
}

/// The signature algorithms gematik allows, with the curve of each.
fn curve_of(alg: &str) -> Option<(&'static str, Nid)> {
    match alg {
        "ES256" => Some(("ES256", Nid::X9_62_PRIME256V1)),
        "BP256R1" => Some(("BP256R1", Nid::BRAINPOOL_P256R1)),
        _ => None,
    }
}

/// Checks the chain and the signature of `jws` and returns its payload.
pub fn verify(jws: &str, anchors: &TrustAnchors) -> Result<Vec<u8>, VerifyError> {
    let mut parts = jws.trim().split('.');
    let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(VerifyError::Malformed("expected three parts".into()));
    };
    let decode = |part: &str, what: &str| URL_SAFE_NO_PAD.decode(part).map_err(|err| VerifyError::Malformed(format!("{what}: {err}")));
    let header: Header = serde_json::from_slice(&decode(header_b64, "header")?).map_err(|err| VerifyError::Malformed(format!("header: {err}")))?;
    let (alg, curve) = curve_of(&header.alg).ok_or_else(|| VerifyError::Algorithm(header.alg.clone()))?;

    let signer = signer_key(&header.x5c, anchors)?;
    if signer.group().curve_name() != Some(curve) {
        return Err(VerifyError::Curve(alg));
    }
    // JWS ECDSA signatures are r || s, 32 bytes each (RFC 7518 3.4).
    let signature = decode(signature_b64, "signature")?;
    if signature.len() != 64 {
        return Err(VerifyError::Signature);
    }
    let signature = EcdsaSig::from_private_components(BigNum::from_slice(&signature[..32])?, BigNum::from_slice(&signature[32..])?)?;
    let digest = sha256(format!("{header_b64}.{payload_b64}").as_bytes());
    if !signature.verify(&digest, &signer)? {
        return Err(VerifyError::Signature);
    }
    decode(payload_b64, "payload")
}

/// The public key of the chain's first certificate, once the chain (the
/// rest of `x5c` as intermediates) verifies up to a trust anchor.
fn signer_key(x5c: &[String], anchors: &TrustAnchors) -> Result<EcKey<Public>, VerifyError> {
    let mut certificates = x5c.iter().map(|der| {
        let der = STANDARD.decode(der).map_err(|err| VerifyError::Malformed(format!("x5c: {err}")))?;
        X509::from_der(&der).map_err(|err| VerifyError::Malformed(format!("x5c: {err}")))
    });
    let leaf = certificates.next().ok_or_else(|| VerifyError::Malformed("the header has no x5c".into()))??;
    let mut intermediates = Stack::new()?;
    for certificate in certificates {
        intermediates.push(certificate?)?;
    }
    let mut context = X509StoreContext::new()?;
    let verified = context.init(&anchors.0, &leaf, &intermediates, |context| {
        Ok(if context.verify_cert()? { None } else { Some(context.error().error_string().to_owned()) })
    })?;
    if let Some(reason) = verified {
        return Err(VerifyError::Chain(reason));
    }
    leaf.public_key()?.ec_key().map_err(|_| VerifyError::Curve("an EC signature"))
}
