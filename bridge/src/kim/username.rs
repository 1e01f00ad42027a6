//! The Clientmodul's usernames: the mailbox address plus the Konnektor context the
//! Clientmodul needs for signing and decrypting, separated by `#` (gemSpec_CM_KOMLE).
//!
//! - SMTP: `address#mta-host:port#MandantId#ClientsystemId#WorkplaceId[#KonnektorId]`
//! - POP3: `address#mta-host:port#MandantId#ClientsystemId#WorkplaceId#UserId#KonnektorId`,
//!   optional positions filled with `*`.

use serde::{Deserialize, Serialize};

use super::address::KimAddress;

/// The Konnektor context of one KIM mailbox, as configured by the operator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailboxContext {
    /// The mailbox (also the `From` and `MAIL FROM` of every sent mail).
    pub address: KimAddress,
    /// The KIM provider's mail server the Clientmodul talks to, `host:port` (SMTP side, e.g. `:465`).
    pub smtp_mta: String,
    /// The KIM provider's mail server for fetching, `host:port` (e.g. `:995`).
    pub pop3_mta: String,
    /// Konnektor context: Mandant.
    pub mandant_id: String,
    /// Konnektor context: client system (Clientsystem).
    pub clientsystem_id: String,
    /// Konnektor context: workplace (Arbeitsplatz).
    pub workplace_id: String,
    /// Konnektor context: user (only in the POP3 username; needed for an HBA, else `*`).
    #[serde(default)]
    pub user_id: Option<String>,
    /// Which Konnektor, when the Clientmodul serves several.
    #[serde(default)]
    pub konnektor_id: Option<String>,
}

/// Why a username cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "KIM username field {field} must be non-empty and may not contain '#', '*' alone, spaces or control characters"
)]
pub struct UsernameError {
    /// Which field is malformed.
    pub field: &'static str,
}

impl MailboxContext {
    /// The SMTP AUTH username: `address#mta#Mandant#Clientsystem#Workplace[#Konnektor]`.
    pub fn smtp_username(&self) -> Result<String, UsernameError> {
        let mut fields = vec![
            self.address.as_str().to_owned(),
            field("smtp_mta", &self.smtp_mta)?,
            field("mandant_id", &self.mandant_id)?,
            field("clientsystem_id", &self.clientsystem_id)?,
            field("workplace_id", &self.workplace_id)?,
        ];
        if let Some(konnektor) = &self.konnektor_id {
            fields.push(field("konnektor_id", konnektor)?);
        }
        Ok(fields.join("#"))
    }

    /// The POP3 username: `address#mta#Mandant#Clientsystem#Workplace#User#Konnektor`, `*` for
    /// an absent optional field.
    pub fn pop3_username(&self) -> Result<String, UsernameError> {
        let optional = |name, value: &Option<String>| match value {
            Some(value) => field(name, value),
            None => Ok("*".to_owned()),
        };
        Ok([
            self.address.as_str().to_owned(),
            field("pop3_mta", &self.pop3_mta)?,
            field("mandant_id", &self.mandant_id)?,
            field("clientsystem_id", &self.clientsystem_id)?,
            field("workplace_id", &self.workplace_id)?,
            optional("user_id", &self.user_id)?,
            optional("konnektor_id", &self.konnektor_id)?,
        ]
        .join("#"))
    }
}

/// A username as the Clientmodul reads it (our test Clientmodul, `crate::clientmodul`): the
/// mailbox, the provider's MTA to talk to for it, and the Konnektor context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientmodulLogin {
    pub address: KimAddress,
    /// The MTA host from `mta-host:port`.
    pub mta_host: String,
    /// The MTA port from `mta-host:port`.
    pub mta_port: u16,
    pub mandant_id: String,
    pub clientsystem_id: String,
    pub workplace_id: String,
    /// POP3 only; `None` for `*`.
    pub user_id: Option<String>,
    /// `None` when absent (SMTP) or `*` (POP3).
    pub konnektor_id: Option<String>,
}

/// Why a received username does not follow the `#` format (SMTP `501 5.5.4`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed KIM username: {0}")]
pub struct MalformedUsername(pub &'static str);

impl ClientmodulLogin {
    /// Reads an SMTP username: `address#mta-host:port#Mandant#Clientsystem#Workplace[#Konnektor]`.
    pub fn parse_smtp(username: &str) -> Result<Self, MalformedUsername> {
        let fields: Vec<&str> = username.split('#').collect();
        if !(5..=6).contains(&fields.len()) {
            return Err(MalformedUsername(
                "an SMTP username has 5 or 6 '#'-separated fields",
            ));
        }
        let mut login = Self::parse_common(&fields)?;
        login.konnektor_id = fields
            .get(5)
            .map(|k| required("konnektor_id", k))
            .transpose()?;
        Ok(login)
    }

    /// Reads a POP3 username: `address#mta-host:port#Mandant#Clientsystem#Workplace#User#Konnektor`
    /// with `*` for an absent user or Konnektor.
    pub fn parse_pop3(username: &str) -> Result<Self, MalformedUsername> {
        let fields: Vec<&str> = username.split('#').collect();
        if fields.len() != 7 {
            return Err(MalformedUsername(
                "a POP3 username has 7 '#'-separated fields",
            ));
        }
        let optional = |name, value: &str| match value {
            "*" => Ok(None),
            value => required(name, value).map(Some),
        };
        let mut login = Self::parse_common(&fields)?;
        login.user_id = optional("user_id", fields[5])?;
        login.konnektor_id = optional("konnektor_id", fields[6])?;
        Ok(login)
    }

    fn parse_common(fields: &[&str]) -> Result<Self, MalformedUsername> {
        let address =
            KimAddress::parse(fields[0]).map_err(|_| MalformedUsername("not a KIM address"))?;
        let (host, port) = fields[1]
            .rsplit_once(':')
            .ok_or(MalformedUsername("the MTA must be host:port"))?;
        let port = port
            .parse()
            .map_err(|_| MalformedUsername("the MTA port is not a number"))?;
        Ok(Self {
            address,
            mta_host: required("mta host", host)?,
            mta_port: port,
            mandant_id: required("mandant_id", fields[2])?,
            clientsystem_id: required("clientsystem_id", fields[3])?,
            workplace_id: required("workplace_id", fields[4])?,
            user_id: None,
            konnektor_id: None,
        })
    }
}

fn required(name: &'static str, value: &str) -> Result<String, MalformedUsername> {
    field(name, value).map_err(|e| MalformedUsername(e.field))
}

fn field(name: &'static str, value: &str) -> Result<String, UsernameError> {
    let ok = !value.is_empty()
        && value != "*"
        && value
            .chars()
            .all(|c| c != '#' && !c.is_whitespace() && !c.is_control());
    if ok {
        Ok(value.to_owned())
    } else {
        Err(UsernameError { field: name })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context() -> MailboxContext {
        MailboxContext {
            address: KimAddress::parse("erik.mustermann@hrst.kim.telematik").unwrap(),
            smtp_mta: "hrst.kim.telematik:465".into(),
            pop3_mta: "hrst.kim.telematik:995".into(),
            mandant_id: "1".into(),
            clientsystem_id: "KIM".into(),
            workplace_id: "7".into(),
            user_id: None,
            konnektor_id: None,
        }
    }

    #[test]
    fn matches_the_examples_of_the_spec() {
        let mut c = context();
        assert_eq!(
            c.smtp_username().unwrap(),
            "erik.mustermann@hrst.kim.telematik#hrst.kim.telematik:465#1#KIM#7"
        );
        c.clientsystem_id = "KOM_LE".into();
        c.konnektor_id = Some("Konn_1".into());
        assert_eq!(
            c.pop3_username().unwrap(),
            "erik.mustermann@hrst.kim.telematik#hrst.kim.telematik:995#1#KOM_LE#7#*#Konn_1"
        );
        assert_eq!(
            c.smtp_username().unwrap(),
            "erik.mustermann@hrst.kim.telematik#hrst.kim.telematik:465#1#KOM_LE#7#Konn_1"
        );
    }

    #[test]
    fn the_clientmodul_reads_what_the_bridge_writes() {
        let mut c = context();
        c.konnektor_id = Some("Konn_1".into());
        let smtp = ClientmodulLogin::parse_smtp(&c.smtp_username().unwrap()).unwrap();
        assert_eq!(smtp.address, c.address);
        assert_eq!(
            (smtp.mta_host.as_str(), smtp.mta_port),
            ("hrst.kim.telematik", 465)
        );
        assert_eq!(smtp.konnektor_id.as_deref(), Some("Konn_1"));
        let pop3 = ClientmodulLogin::parse_pop3(&c.pop3_username().unwrap()).unwrap();
        assert_eq!((pop3.mta_port, pop3.user_id), (995, None));
        for malformed in [
            "erik.mustermann@hrst.kim.telematik",
            "erik.mustermann@hrst.kim.telematik#hrst.kim.telematik#1#KIM#7",
            "erik.mustermann@example.org#h:465#1#KIM#7",
            "erik.mustermann@hrst.kim.telematik#h:465#1##7",
            "erik.mustermann@hrst.kim.telematik#h:465#1#KIM#7#K#extra",
        ] {
            assert!(
                ClientmodulLogin::parse_smtp(malformed).is_err(),
                "{malformed}"
            );
        }
        assert!(ClientmodulLogin::parse_pop3("a@b.kim.telematik#h:995#1#KIM#7#*").is_err());
    }

    #[test]
    fn refuses_fields_that_would_shift_positions() {
        let mut c = context();
        c.workplace_id = "7#8".into();
        assert_eq!(
            c.smtp_username(),
            Err(UsernameError {
                field: "workplace_id"
            })
        );
        c.workplace_id = String::new();
        assert!(c.pop3_username().is_err());
        c.workplace_id = "7".into();
        c.user_id = Some("*".into());
        assert_eq!(c.pop3_username(), Err(UsernameError { field: "user_id" }));
    }
}
