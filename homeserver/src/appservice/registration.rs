//! Registration files: the spec's YAML that tells the server an application
//! service's tokens, URL and namespaces, read and checked at start so a
//! mistake stops the server with a message naming the file rather than
//! surfacing later as refused requests.

use std::{collections::HashSet, path::Path};

use anyhow::{Context as _, bail, ensure};
use regex::Regex;
use ruma::{OwnedUserId, ServerName, UserId};
use serde::Deserialize;

use super::namespaces::{Namespace, Namespaces};

/// One registration file as written (spec: "Registration"), with the
/// unstable keys bridges write for MSC2409 and MSC3202.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RegistrationFile {
    id: String,
    /// Required, but may be `null` (an appservice that only acts, never
    /// receives).
    #[serde(deserialize_with = "Option::deserialize")]
    url: Option<String>,
    as_token: String,
    hs_token: String,
    sender_localpart: String,
    #[serde(default)]
    namespaces: NamespacesFile,
    /// Whether masqueraded users are rate-limited (default: yes).
    #[serde(default)]
    rate_limited: Option<bool>,
    /// MSC2409: typing, receipts and to-device messages in transactions.
    #[serde(default, alias = "de.sorunome.msc2409.push_ephemeral", alias = "push_ephemeral")]
    receive_ephemeral: bool,
    /// MSC3202: device masquerading, device lists and key counts.
    #[serde(default, rename = "org.matrix.msc3202", alias = "device_masquerading")]
    msc3202: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct NamespacesFile {
    #[serde(default)]
    users: Vec<NamespaceFile>,
    #[serde(default)]
    aliases: Vec<NamespaceFile>,
    #[serde(default)]
    rooms: Vec<NamespaceFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NamespaceFile {
    exclusive: bool,
    regex: String,
}

/// A registered application service, checked and with its regexes compiled.
pub struct Appservice {
    pub id: String,
    /// Base URL transactions, pings and queries go to; `None`: none are sent.
    pub url: Option<url::Url>,
    pub(super) as_token: String,
    /// What the server authenticates itself with towards the appservice.
    pub hs_token: String,
    /// The appservice's own user (`@<sender_localpart>:<server>`).
    pub sender: OwnedUserId,
    pub namespaces: Namespaces,
    pub rate_limited: bool,
    pub receive_ephemeral: bool,
    pub msc3202: bool,
}

impl Appservice {
    /// Whether the user is the appservice's: its sender or in its users
    /// namespace.
    pub fn is_user(&self, user_id: &str) -> bool {
        self.sender.as_str() == user_id || self.namespaces.is_user(user_id)
    }
}

/// Tokens stay out of logs.
impl std::fmt::Debug for Appservice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Appservice").field("id", &self.id).field("sender", &self.sender).finish_non_exhaustive()
    }
}

/// Reads and checks the registration files: each must parse, name an
/// http(s) URL or `null`, non-empty tokens, a valid sender and valid
/// regexes; ids and tokens must be unique across all of them.
pub fn load(paths: &[impl AsRef<Path>], server_name: &ServerName) -> anyhow::Result<Vec<Appservice>> {
    let mut appservices: Vec<Appservice> = Vec::new();
    let mut tokens = HashSet::new();
    for path in paths {
        let path = path.as_ref();
        let appservice = read(path, server_name).with_context(|| format!("appservice registration {}", path.display()))?;
        ensure!(
            appservices.iter().all(|other| other.id != appservice.id),
            "appservice registration {}: id {:?} is used by another registration",
            path.display(),
            appservice.id
        );
        for token in [&appservice.as_token, &appservice.hs_token] {
            ensure!(tokens.insert(token.clone()), "appservice registration {}: a token is used twice", path.display());
        }
        appservices.push(appservice);
    }
    Ok(appservices)
}

fn read(path: &Path, server_name: &ServerName) -> anyhow::Result<Appservice> {
    let text = std::fs::read_to_string(path).context("reading the file")?;
    let file: RegistrationFile = serde_yaml_ng::from_str(&text).context("parsing the YAML")?;
    parse(file, server_name)
}

fn parse(file: RegistrationFile, server_name: &ServerName) -> anyhow::Result<Appservice> {
    ensure!(!file.id.is_empty(), "id must not be empty");
    ensure!(!file.as_token.is_empty() && !file.hs_token.is_empty(), "as_token and hs_token must not be empty");
    let url = match file.url.as_deref() {
        None => None,
        Some(url) => {
            let parsed = url::Url::parse(url).with_context(|| format!("url {url:?} is not a URL"))?;
            ensure!(matches!(parsed.scheme(), "http" | "https") && parsed.host().is_some(), "url {url:?} must be an http(s) URL");
            Some(parsed)
        }
    };
    // The spec's localpart grammar for new users (ruma also accepts
    // historical ids, which no new user may get).
    let localpart = &file.sender_localpart;
    let grammar = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || "._=-/+".contains(c);
    let sender = Some(localpart)
        .filter(|localpart| !localpart.is_empty() && localpart.chars().all(grammar))
        .and_then(|localpart| UserId::parse_with_server_name(localpart.as_str(), server_name).ok())
        .with_context(|| format!("sender_localpart {localpart:?} is not a valid localpart"))?;
    let namespaces = Namespaces {
        users: compile("users", file.namespaces.users)?,
        aliases: compile("aliases", file.namespaces.aliases)?,
        rooms: compile("rooms", file.namespaces.rooms)?,
    };
    Ok(Appservice {
        id: file.id,
        url,
        as_token: file.as_token,
        hs_token: file.hs_token,
        sender,
        namespaces,
        rate_limited: file.rate_limited.unwrap_or(true),
        receive_ephemeral: file.receive_ephemeral,
        msc3202: file.msc3202,
    })
}

/// Compiles a namespace's regexes, anchored at both ends: `@kim_.*` claims
/// `@kim_x:server`, never `@alice:server` because it contains `kim_`.
fn compile(kind: &str, entries: Vec<NamespaceFile>) -> anyhow::Result<Vec<Namespace>> {
    entries
        .into_iter()
        .map(|entry| match Regex::new(&format!("^(?:{})$", entry.regex)) {
            Ok(regex) => Ok(Namespace { regex, exclusive: entry.exclusive }),
            Err(err) => bail!("namespaces.{kind}: regex {:?} is invalid: {err}", entry.regex),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_yaml(yaml: &str) -> anyhow::Result<Appservice> {
        parse(serde_yaml_ng::from_str(yaml)?, ruma::server_name!("example.org"))
    }

    const VALID: &str = "
id: kim
url: http://127.0.0.1:9000
as_token: as-secret
hs_token: hs-secret
sender_localpart: kimbot
rate_limited: false
de.sorunome.msc2409.push_ephemeral: true
org.matrix.msc3202: true
namespaces:
  users: [{ exclusive: true, regex: '@kim_.*:example\\.org' }]
  aliases: [{ exclusive: true, regex: '#kim_.*:example\\.org' }]
";

    #[test]
    fn a_registration_parses_with_the_unstable_keys() {
        let appservice = parse_yaml(VALID).expect("valid");
        assert_eq!(appservice.sender, "@kimbot:example.org");
        assert!(!appservice.rate_limited && appservice.receive_ephemeral && appservice.msc3202);
        assert!(appservice.namespaces.is_user("@kim_1:example.org"));
        assert!(!appservice.namespaces.is_user("@alice_kim_1:example.org"), "regexes are anchored");
        assert!(appservice.namespaces.is_alias("#kim_x:example.org"));
    }

    #[test]
    fn mistakes_are_refused_with_a_reason() {
        let null_url = VALID.replace("url: http://127.0.0.1:9000", "url: null");
        assert!(parse_yaml(&null_url).expect("null url").url.is_none());
        for (bad, why) in [
            (VALID.replace("url: http://127.0.0.1:9000\n", ""), "url is required"),
            (VALID.replace("http://127.0.0.1:9000", "ftp://x"), "http(s) only"),
            (VALID.replace("'@kim_.*:example\\.org'", "'@kim_(.*'"), "a bad regex"),
            (VALID.replace("kimbot", "kim bot"), "a bad localpart"),
            (VALID.replace("rate_limited", "rate_limitted"), "an unknown key"),
        ] {
            assert!(parse_yaml(&bad).is_err(), "{why}");
        }
    }

    #[test]
    fn ids_and_tokens_are_unique() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = dir.path().join("a.yaml");
        let second = dir.path().join("b.yaml");
        std::fs::write(&first, VALID).expect("write");
        std::fs::write(&second, VALID.replace("id: kim", "id: other")).expect("write");
        let err = load(&[&first, &second], ruma::server_name!("example.org")).expect_err("shared tokens");
        assert!(format!("{err:#}").contains("token"), "{err:#}");
    }
}
