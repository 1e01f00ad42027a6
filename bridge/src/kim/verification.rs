//! What the Clientmodul says about a received mail: whether it could decrypt it
//! (`X-KIM-DecryptionResult`), whether the signature holds (`X-KIM-IntegrityCheckResult`),
//! and which errors happened (`X-KIM-Fehlermeldung`), with texts for the room
//! (gemSpec_CM_KOMLE, Tab_Fehlercodes_KOMLE-Clientmodule).

use serde::{Deserialize, Serialize};

/// `X-KIM-DecryptionResult`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DecryptionResult {
    /// `00`: decrypted.
    Ok,
    /// `01`: the key is not available.
    KeyUnavailable,
    /// `02`: the encrypted mail has a wrong format.
    WrongFormat,
    /// `03`: the Konnektor was not available.
    KonnektorUnavailable,
    /// `X…` vendor-specific or any other value, kept as sent.
    Other(String),
    /// The header is missing: the mail did not pass a Clientmodul's decryption.
    Missing,
}

/// `X-KIM-IntegrityCheckResult`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum IntegrityResult {
    /// `01`: signature valid.
    Valid,
    /// `02`: integrity violated.
    Violated,
    /// `03`: no signature.
    NoSignature,
    /// `04`: signature in a bad format.
    BadFormat,
    /// `05`: certificate path invalid.
    CertificatePathInvalid,
    /// `06`: other error.
    OtherError,
    /// `07`: signature valid, but the certificate status is unknown.
    CertificateStatusUnknown,
    /// `08`: headers differ between the outer and the inner message.
    HeadersDiffer,
    /// `09`: the signed recipient addresses do not match.
    RecipientsMismatch,
    /// Any other value, kept as sent.
    Other(String),
    /// The header is missing: the signature was not checked by a Clientmodul.
    Missing,
}

/// One `X-KIM-Fehlermeldung` code with its meaning.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientmodulError {
    /// The code as sent, e.g. `4004`.
    pub code: String,
}

/// The Clientmodul's verdict on one received mail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verification {
    pub decryption: DecryptionResult,
    pub integrity: IntegrityResult,
    pub errors: Vec<ClientmodulError>,
}

impl DecryptionResult {
    /// Reads the header value (`None` when the header is missing).
    pub fn from_header(value: Option<&str>) -> Self {
        match value.map(str::trim) {
            None | Some("") => Self::Missing,
            Some("00") => Self::Ok,
            Some("01") => Self::KeyUnavailable,
            Some("02") => Self::WrongFormat,
            Some("03") => Self::KonnektorUnavailable,
            Some(other) => Self::Other(other.to_owned()),
        }
    }

    /// English one-liner.
    pub fn describe(&self) -> String {
        match self {
            Self::Ok => "decrypted".into(),
            Self::KeyUnavailable => "not decrypted: key not available".into(),
            Self::WrongFormat => "not decrypted: wrong format".into(),
            Self::KonnektorUnavailable => "not decrypted: Konnektor unavailable".into(),
            Self::Other(code) => format!("decryption result {code}"),
            Self::Missing => "no decryption result from the Clientmodul".into(),
        }
    }
}

impl IntegrityResult {
    /// Reads the header value (`None` when the header is missing).
    pub fn from_header(value: Option<&str>) -> Self {
        match value.map(str::trim) {
            None | Some("") => Self::Missing,
            Some("01") => Self::Valid,
            Some("02") => Self::Violated,
            Some("03") => Self::NoSignature,
            Some("04") => Self::BadFormat,
            Some("05") => Self::CertificatePathInvalid,
            Some("06") => Self::OtherError,
            Some("07") => Self::CertificateStatusUnknown,
            Some("08") => Self::HeadersDiffer,
            Some("09") => Self::RecipientsMismatch,
            Some(other) => Self::Other(other.to_owned()),
        }
    }

    /// English one-liner.
    pub fn describe(&self) -> String {
        match self {
            Self::Valid => "signature valid".into(),
            Self::Violated => "INTEGRITY VIOLATED: the mail was changed".into(),
            Self::NoSignature => "not signed".into(),
            Self::BadFormat => "signature in a bad format".into(),
            Self::CertificatePathInvalid => "signer certificate not trusted".into(),
            Self::OtherError => "signature check failed".into(),
            Self::CertificateStatusUnknown => {
                "signature valid, but the certificate status is unknown".into()
            }
            Self::HeadersDiffer => "headers differ from the signed ones".into(),
            Self::RecipientsMismatch => "recipients differ from the signed ones".into(),
            Self::Other(code) => format!("signature check result {code}"),
            Self::Missing => "signature not checked by the Clientmodul".into(),
        }
    }
}

impl ClientmodulError {
    /// Looks the code up in Tab_Fehlercodes_KOMLE-Clientmodule.
    pub fn from_code(code: &str) -> Self {
        Self {
            code: code.trim().to_owned(),
        }
    }

    /// German text of the specification, when the code is known.
    pub fn text_de(&self) -> Option<&'static str> {
        ERROR_TEXTS
            .iter()
            .find(|(c, _, _)| *c == self.code)
            .map(|(_, de, _)| *de)
    }

    /// English text, when the code is known.
    pub fn text_en(&self) -> Option<&'static str> {
        ERROR_TEXTS
            .iter()
            .find(|(c, _, _)| *c == self.code)
            .map(|(_, _, en)| *en)
    }

    /// `4004: message not encryptable for all recipients`.
    pub fn describe(&self) -> String {
        match self.text_en() {
            Some(text) => format!("{}: {text}", self.code),
            None => format!("Clientmodul error {}", self.code),
        }
    }
}

impl Verification {
    /// Builds the verdict from the header values.
    pub fn from_headers<'a>(
        decryption: Option<&str>,
        integrity: Option<&str>,
        errors: impl IntoIterator<Item = &'a str>,
    ) -> Self {
        Self {
            decryption: DecryptionResult::from_header(decryption),
            integrity: IntegrityResult::from_header(integrity),
            errors: errors
                .into_iter()
                .flat_map(|value| value.split([',', ';']))
                .filter(|code| !code.trim().is_empty())
                .map(ClientmodulError::from_code)
                .collect(),
        }
    }

    /// True only for a decrypted mail with a valid signature (`00` and `01`) and no error:
    /// anything else is shown with a warning.
    pub fn is_trustworthy(&self) -> bool {
        self.decryption == DecryptionResult::Ok
            && self.integrity == IntegrityResult::Valid
            && self.errors.is_empty()
    }

    /// The Clientmodul could not open a received mail (decryption failed) or
    /// its signature layer is broken: its error mail then stands for the
    /// sender's mail, not for a report about one of ours.
    pub fn failed_to_open(&self) -> bool {
        !matches!(
            self.decryption,
            DecryptionResult::Ok | DecryptionResult::Missing
        ) || matches!(
            self.integrity,
            IntegrityResult::Violated | IntegrityResult::BadFormat | IntegrityResult::OtherError
        )
    }

    /// One line for the room, e.g. `decrypted, signature valid` or
    /// `⚠ decrypted, INTEGRITY VIOLATED: the mail was changed`.
    pub fn status_line(&self) -> String {
        let mut parts = vec![self.decryption.describe(), self.integrity.describe()];
        parts.extend(self.errors.iter().map(ClientmodulError::describe));
        let line = parts.join(", ");
        if self.is_trustworthy() {
            line
        } else {
            format!("⚠ {line}")
        }
    }
}

/// Tab_Fehlercodes_KOMLE-Clientmodule (gemSpec_CM_KOMLE): code, German, English.
const ERROR_TEXTS: &[(&str, &str, &str)] = &[
    (
        "4001",
        "Empfänger entfernt, wegen falscher KIM-Version",
        "recipient removed because of an incompatible KIM version",
    ),
    (
        "4002",
        "Anhang konnte nicht zum KOM-LE-Attachment-Service übertragen werden",
        "attachment could not be uploaded to the KIM attachment service",
    ),
    (
        "4003",
        "keine eindeutige Telematik-ID mit Verschlüsselungszertifikat gefunden",
        "no unique Telematik-ID with an encryption certificate found",
    ),
    (
        "4004",
        "Nachricht nicht für alle Empfänger verschlüsselbar",
        "message not encryptable for all recipients",
    ),
    (
        "4005",
        "Für einen Empfänger existieren mehrere Verschlüsselungszertifikate mit unterschiedlichen Telematik-IDs",
        "a recipient has encryption certificates with different Telematik-IDs",
    ),
    (
        "4006",
        "Anhang konnte nicht vom KOM-LE-Attachment-Service geladen werden",
        "attachment could not be downloaded from the KIM attachment service",
    ),
    (
        "4007",
        "beim Entschlüsseln eines Anhangs ist ein Fehler aufgetreten",
        "an attachment could not be decrypted",
    ),
    (
        "4008",
        "Das verwendete Client-Modul unterstützt die in der Mail verwendete Version nicht",
        "the Clientmodul does not support the KIM version of the mail",
    ),
    (
        "4009",
        "Die KIM-Nachricht konnte auf Grund eines nicht verfügbaren Schlüssels nicht entschlüsselt werden",
        "the message could not be decrypted: key not available",
    ),
    (
        "4010",
        "Die KIM-Nachricht konnte aufgrund des falschen Formats nicht entschlüsselt werden",
        "the message could not be decrypted: wrong format",
    ),
    (
        "4011",
        "Der Konnektor steht für die Entschlüsselung nicht zur Verfügung",
        "the Konnektor is not available for decryption",
    ),
    (
        "4012",
        "Die Prüfsumme des Anhangs stimmt nicht mit der dem Anhang beigefügten Prüfsumme überein",
        "the attachment's checksum does not match: it may not be the original",
    ),
    (
        "4013",
        "Anhang konnte wegen zu häufigen Zugriffs nicht heruntergeladen werden",
        "attachment download refused by the attachment service (too many requests)",
    ),
    (
        "4014",
        "Die Nachricht wurde nach dem Verschlüsseln manipuliert",
        "the message was manipulated after encryption",
    ),
    (
        "4015",
        "Die Nachricht wurde manipuliert, um einem anderen Nutzer das Entschlüsseln zu ermöglichen",
        "the message was manipulated to let another user decrypt it",
    ),
    (
        "4016",
        "Bei der Aktualisierung der PKCS#12-Datei ist ein Fehler aufgetreten",
        "updating the PKCS#12 file failed",
    ),
    (
        "4017",
        "Die KIM-Version des Client-Moduls ist kleiner als die im Verzeichnisdienst hinterlegte Version",
        "the Clientmodul's KIM version is older than the one in the directory",
    ),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_decrypted_and_validly_signed_mail_is_trustworthy() {
        assert!(Verification::from_headers(Some("00"), Some("01"), []).is_trustworthy());
        let violated = Verification::from_headers(Some("00"), Some("02"), []);
        assert!(!violated.is_trustworthy());
        assert_eq!(
            violated.status_line(),
            "⚠ decrypted, INTEGRITY VIOLATED: the mail was changed"
        );
        assert!(!Verification::from_headers(None, None, []).is_trustworthy());
        assert!(!Verification::from_headers(Some("00"), Some("07"), []).is_trustworthy());
        assert!(!Verification::from_headers(Some("00"), Some("01"), ["4014"]).is_trustworthy());
    }

    #[test]
    fn error_codes_get_texts() {
        let v = Verification::from_headers(Some("01"), Some("03"), ["4009", "X123"]);
        assert_eq!(v.decryption, DecryptionResult::KeyUnavailable);
        assert_eq!(v.errors[0].text_de().unwrap(), ERROR_TEXTS[8].1);
        assert_eq!(
            v.errors[0].describe(),
            "4009: the message could not be decrypted: key not available"
        );
        assert_eq!(v.errors[1].describe(), "Clientmodul error X123");
    }
}
