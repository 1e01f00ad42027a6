//! KIM addresses: `local@domain` with the directory's rules, compared case-insensitively.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Domains a KIM address may have: production and the gematik test environment
/// (which the loopback test mail server also serves, so the rule is never relaxed).
const KIM_DOMAIN_SUFFIXES: [&str; 2] = [".kim.telematik", ".kim.telematik-test"];

/// A validated KIM address, lower-cased (KIM addresses are case-insensitive).
///
/// Local part `[A-Za-z0-9._-]{1,64}`, domain `[a-z0-9.-]` ending in `.kim.telematik`
/// or `.kim.telematik-test`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct KimAddress(String);

/// Why a string is not a KIM address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("a KIM address needs exactly one '@'")]
    NotOneAt,
    #[error("the local part of a KIM address must be 1 to 64 of A-Z a-z 0-9 . _ -")]
    BadLocalPart,
    #[error(
        "the domain of a KIM address may only hold a-z 0-9 . - and must end in .kim.telematik or .kim.telematik-test"
    )]
    BadDomain,
}

impl KimAddress {
    /// Validates and lower-cases `address`.
    pub fn parse(address: &str) -> Result<Self, AddressError> {
        let address = address.trim();
        let (local, domain) = address.split_once('@').ok_or(AddressError::NotOneAt)?;
        if domain.contains('@') {
            return Err(AddressError::NotOneAt);
        }
        let local_ok = (1..=64).contains(&local.len())
            && local
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if !local_ok {
            return Err(AddressError::BadLocalPart);
        }
        let domain = domain.to_ascii_lowercase();
        let domain_ok = domain.len() <= 253
            && domain
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-'))
            && !domain.split('.').any(str::is_empty)
            && KIM_DOMAIN_SUFFIXES
                .iter()
                .any(|suffix| domain.len() > suffix.len() && domain.ends_with(suffix));
        if !domain_ok {
            return Err(AddressError::BadDomain);
        }
        Ok(Self(format!("{}@{domain}", local.to_ascii_lowercase())))
    }

    /// The whole address, lower-case.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The part before the `@`.
    pub fn local_part(&self) -> &str {
        self.0.split_once('@').map_or("", |(local, _)| local)
    }

    /// The part after the `@`.
    pub fn domain(&self) -> &str {
        self.0.split_once('@').map_or("", |(_, domain)| domain)
    }
}

impl FromStr for KimAddress {
    type Err = AddressError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<String> for KimAddress {
    type Error = AddressError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<KimAddress> for String {
    fn from(address: KimAddress) -> Self {
        address.0
    }
}

impl fmt::Display for KimAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for KimAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KimAddress({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_case_and_accepts_both_environments() {
        let a = KimAddress::parse("Erik.Mustermann@HRST.kim.telematik").unwrap();
        assert_eq!(a.as_str(), "erik.mustermann@hrst.kim.telematik");
        assert_eq!(a.local_part(), "erik.mustermann");
        assert_eq!(a.domain(), "hrst.kim.telematik");
        assert!(KimAddress::parse("praxis_1-a@practice.kim.telematik-test").is_ok());
    }

    #[test]
    fn rejects_what_the_directory_would_not_hold() {
        assert_eq!(
            KimAddress::parse("a@example.org"),
            Err(AddressError::BadDomain)
        );
        assert_eq!(
            KimAddress::parse("a@kim.telematik"),
            Err(AddressError::BadDomain)
        );
        assert_eq!(
            KimAddress::parse("a@x..kim.telematik"),
            Err(AddressError::BadDomain)
        );
        assert_eq!(
            KimAddress::parse("a@b_c.kim.telematik"),
            Err(AddressError::BadDomain)
        );
        assert_eq!(
            KimAddress::parse("a+b@x.kim.telematik"),
            Err(AddressError::BadLocalPart)
        );
        assert_eq!(
            KimAddress::parse("@x.kim.telematik"),
            Err(AddressError::BadLocalPart)
        );
        let long = format!("{}@x.kim.telematik", "a".repeat(65));
        assert_eq!(KimAddress::parse(&long), Err(AddressError::BadLocalPart));
        assert_eq!(
            KimAddress::parse("a@b@x.kim.telematik"),
            Err(AddressError::NotOneAt)
        );
        assert_eq!(KimAddress::parse("no-at"), Err(AddressError::NotOneAt));
    }

    #[test]
    fn serde_validates() {
        let a: KimAddress = serde_json::from_str("\"A@x.kim.telematik\"").unwrap();
        assert_eq!(a.as_str(), "a@x.kim.telematik");
        assert!(serde_json::from_str::<KimAddress>("\"a@example.org\"").is_err());
    }
}
