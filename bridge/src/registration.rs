//! The homeserver's registration file for the bridge (spec
//! "Application Service Registration"), and the tokens in our config that
//! must match it.

use std::path::Path;

use anyhow::Context as _;
use rand::{Rng as _, distr::Alphanumeric};
use serde::Serialize;

use crate::config::Config;

/// The YAML the homeserver reads from `[appservices] registration_files`.
#[derive(Debug, Serialize)]
pub struct Registration {
    pub id: String,
    pub url: String,
    pub as_token: String,
    pub hs_token: String,
    pub sender_localpart: String,
    pub namespaces: Namespaces,
    /// Ghosts post as practices; a practice's reply must not be throttled.
    pub rate_limited: bool,
    /// MSC2409: receipts and to-device messages in transactions (the
    /// bridge's devices need the to-device messages for room keys).
    pub receive_ephemeral: bool,
    /// MSC3202: acting as a ghost's device, device lists and key counts.
    #[serde(rename = "org.matrix.msc3202")]
    pub msc3202: bool,
}

#[derive(Debug, Serialize)]
pub struct Namespaces {
    pub users: Vec<Namespace>,
    pub aliases: Vec<Namespace>,
    pub rooms: Vec<Namespace>,
}

#[derive(Debug, Serialize)]
pub struct Namespace {
    pub exclusive: bool,
    pub regex: String,
}

impl Registration {
    /// The registration for `config` (its tokens as they are).
    pub fn for_config(config: &Config) -> Self {
        let server = regex::escape(config.homeserver.server_name.as_str());
        let prefix = regex::escape(&config.appservice.ghost_prefix);
        Self {
            id: config.appservice.id.clone(),
            url: config.appservice.url.clone(),
            as_token: config.appservice.as_token.clone(),
            hs_token: config.appservice.hs_token.clone(),
            sender_localpart: config.appservice.bot_localpart.clone(),
            namespaces: Namespaces {
                users: vec![Namespace {
                    exclusive: true,
                    regex: format!("@{prefix}.*:{server}"),
                }],
                aliases: vec![Namespace {
                    exclusive: true,
                    regex: format!("#{prefix}.*:{server}"),
                }],
                rooms: Vec::new(),
            },
            rate_limited: false,
            receive_ephemeral: true,
            msc3202: true,
        }
    }

    pub fn to_yaml(&self) -> anyhow::Result<String> {
        Ok(serde_yaml_ng::to_string(self)?)
    }
}

/// Gives the config at `config_path` fresh random tokens (its comments and
/// layout kept) and writes the matching registration to
/// `registration_path`. Both files are written, so they never disagree.
pub fn generate(config_path: &Path, registration_path: &Path) -> anyhow::Result<Registration> {
    let text = std::fs::read_to_string(config_path)
        .with_context(|| format!("reading {}", config_path.display()))?;
    let mut document: toml_edit::DocumentMut = text
        .parse()
        .with_context(|| format!("parsing {}", config_path.display()))?;
    let appservice = document["appservice"]
        .as_table_mut()
        .context("the config has no [appservice] table")?;
    appservice["as_token"] = toml_edit::value(random_token());
    appservice["hs_token"] = toml_edit::value(random_token());
    let updated = document.to_string();
    let config =
        Config::parse(&updated).with_context(|| format!("config {}", config_path.display()))?;
    let registration = Registration::for_config(&config);
    write_private(registration_path, &registration.to_yaml()?)?;
    write_private(config_path, &updated)?;
    Ok(registration)
}

/// 64 random alphanumeric characters (about 380 bits).
fn random_token() -> String {
    rand::rng()
        .sample_iter(Alphanumeric)
        .take(64)
        .map(char::from)
        .collect()
}

/// Writes a file that holds tokens: readable by its owner only.
fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::{io::Write as _, os::unix::fs::OpenOptionsExt as _};
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::example;

    #[test]
    fn generate_writes_matching_tokens_into_both_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config_path = dir.path().join("config.toml");
        let registration_path = dir.path().join("registration.yaml");
        std::fs::write(&config_path, example()).expect("writing");

        let registration = generate(&config_path, &registration_path).expect("generating");
        let config = Config::load(&config_path).expect("the config now has tokens");
        assert_eq!(config.appservice.as_token, registration.as_token);
        assert_eq!(config.appservice.hs_token, registration.hs_token);
        assert_ne!(registration.as_token, registration.hs_token);
        assert!(
            std::fs::read_to_string(&config_path)
                .expect("reading")
                .contains("# The registration id"),
            "comments are kept"
        );

        let yaml: serde_yaml_ng::Value =
            serde_yaml_ng::from_str(&std::fs::read_to_string(&registration_path).expect("reading"))
                .expect("YAML");
        assert_eq!(yaml["sender_localpart"].as_str(), Some("kimbot"));
        assert_eq!(yaml["rate_limited"].as_bool(), Some(false));
        assert_eq!(yaml["receive_ephemeral"].as_bool(), Some(true));
        assert_eq!(yaml["org.matrix.msc3202"].as_bool(), Some(true));
        let users = &yaml["namespaces"]["users"][0];
        assert_eq!(users["regex"].as_str(), Some("@kim_.*:example\\.org"));
        assert_eq!(users["exclusive"].as_bool(), Some(true));
        assert_eq!(
            yaml["namespaces"]["aliases"][0]["regex"].as_str(),
            Some("#kim_.*:example\\.org")
        );
    }
}
