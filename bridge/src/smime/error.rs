//! One error type for encoding and decoding KIM mail, with the result codes
//! a Clientmodul would report for it (KIM.md, "What the Clientmodul adds").

use openssl::error::ErrorStack;

/// Why a KIM mail could not be built or read.
#[derive(Debug, thiserror::Error)]
pub enum SmimeError {
    /// The outer mail or its AuthEnvelopedData is malformed.
    #[error("malformed encrypted mail: {0}")]
    EncryptedFormat(String),
    /// None of the RecipientInfos is for this mailbox's certificate.
    #[error("the mail is not encrypted for this mailbox's certificate")]
    KeyNotAvailable,
    /// The content key or the GCM tag did not check out: the ciphertext was
    /// changed after encryption (or encrypted for another key).
    #[error("authenticated decryption failed: {0}")]
    Manipulated(ErrorStack),
    /// The decrypted content is not a signed-data wrap.
    #[error("the mail is not signed")]
    NotSigned,
    /// The signed wrap or its SignedData is malformed or not KIM's profile.
    #[error("malformed signed content: {0}")]
    SignedFormat(String),
    /// The signature or the message digest does not verify.
    #[error("signature does not verify: {0}")]
    SignatureInvalid(ErrorStack),
    /// The client mail to send is unusable (for example no Message-ID).
    #[error("invalid client mail: {0}")]
    InvalidMail(String),
    /// OpenSSL failed while building a message.
    #[error("OpenSSL: {0}")]
    OpenSsl(#[from] ErrorStack),
}

impl SmimeError {
    /// `X-KIM-DecryptionResult` for this failure: `01` key not available,
    /// `02` wrong format; `None` when decryption itself succeeded.
    pub fn decryption_result(&self) -> Option<&'static str> {
        match self {
            Self::KeyNotAvailable => Some("01"),
            Self::EncryptedFormat(_) | Self::Manipulated(_) => Some("02"),
            _ => None,
        }
    }

    /// `X-KIM-IntegrityCheckResult` for this failure: `02` integrity
    /// violated, `03` no signature, `04` bad format.
    pub fn integrity_check_result(&self) -> Option<&'static str> {
        match self {
            Self::SignatureInvalid(_) => Some("02"),
            Self::NotSigned => Some("03"),
            Self::SignedFormat(_) => Some("04"),
            _ => None,
        }
    }

    /// `X-KIM-Fehlermeldung` for this failure: 4014 "manipulated after
    /// encryption" is the one KIM.md names.
    pub fn fehlermeldung(&self) -> Option<u16> {
        matches!(self, Self::Manipulated(_)).then_some(4014)
    }

    /// An OpenSSL failure while checking the signature layer.
    pub(crate) fn signed_format(error: impl std::fmt::Display) -> Self {
        Self::SignedFormat(error.to_string())
    }
}
