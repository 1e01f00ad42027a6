//! KIM addresses as the bridge keeps them: checked against KIM's grammar
//! and lowercased (KIM addresses are case-insensitive), so one practice is
//! one ghost and one key in every table.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Deserializer};

/// A checked, lowercased KIM address (`local@domain`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KimAddress(String);

#[derive(Debug, thiserror::Error)]
#[error("{0:?} is not a KIM address (local part [A-Za-z0-9._-]{{1,64}}, domain [a-z0-9.-])")]
pub struct InvalidAddress(String);

impl KimAddress {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn domain(&self) -> &str {
        self.0.rsplit_once('@').map_or("", |(_, domain)| domain)
    }
}

impl FromStr for KimAddress {
    type Err = InvalidAddress;

    fn from_str(text: &str) -> Result<Self, InvalidAddress> {
        let lower = text.trim().to_ascii_lowercase();
        let valid = lower.split_once('@').is_some_and(|(local, domain)| {
            (1..=64).contains(&local.len())
                && local
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && domain
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || ".-".contains(c))
        });
        if valid {
            Ok(Self(lower))
        } else {
            Err(InvalidAddress(text.to_owned()))
        }
    }
}

impl fmt::Display for KimAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for KimAddress {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_checked_and_lowercased() {
        let address: KimAddress = "Erik.Mustermann@HRST.kim.telematik".parse().expect("valid");
        assert_eq!(address.as_str(), "erik.mustermann@hrst.kim.telematik");
        assert_eq!(address.domain(), "hrst.kim.telematik");
        for bad in [
            "",
            "no-at",
            "@kim.telematik",
            "a b@x.kim.telematik",
            "a@nodot",
            "a+b@x.kim.telematik",
            "a@x..kim.telematik.",
        ] {
            assert!(bad.parse::<KimAddress>().is_err(), "{bad:?}");
        }
    }
}
