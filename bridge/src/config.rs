//! The bridge's TOML config: where the homeserver is, how it reaches us,
//! our database, the insurer's KIM mailbox and how the bridge behaves.
//!
//! `kim-bridge generate-config` writes [`example`], a commented file with a
//! fresh crypto store key that an operator edits; `generate-registration`
//! fills in the tokens.

use std::{collections::BTreeMap, net::SocketAddr, path::Path, time::Duration};

use anyhow::{Context as _, ensure};
use base64::{Engine as _, engine::general_purpose::STANDARD as BASE64};
use rand::RngCore as _;
use ruma::{OwnedRoomId, OwnedServerName, OwnedUserId, UserId};
use serde::Deserialize;

use crate::{
    crypto::StoreKey,
    kim::{address::KimAddress, outgoing::SenderSystem, pop3::Pop3Config, smtp::SmtpConfig},
};

/// The whole config file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub homeserver: HomeserverConfig,
    pub appservice: AppserviceConfig,
    pub database: DatabaseConfig,
    pub mailbox: MailboxConfig,
    #[serde(default)]
    pub bridge: BridgeConfig,
    #[serde(default)]
    pub management: ManagementConfig,
    pub crypto: CryptoConfig,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HomeserverConfig {
    /// Client-Server API base URL, e.g. `http://127.0.0.1:8008`.
    pub url: String,
    /// The homeserver's server name (the part after `:` in user ids).
    pub server_name: OwnedServerName,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppserviceConfig {
    /// The registration's `id`.
    pub id: String,
    /// Where the bridge's HTTP server listens (transactions, queries, health).
    pub listen: SocketAddr,
    /// The URL the homeserver calls us at (the registration's `url`).
    pub url: String,
    /// Our token towards the homeserver; written by `generate-registration`.
    #[serde(default)]
    pub as_token: String,
    /// The homeserver's token towards us; written by `generate-registration`.
    #[serde(default)]
    pub hs_token: String,
    /// Localpart of the bridge bot (the registration's `sender_localpart`).
    #[serde(default = "default_bot_localpart")]
    pub bot_localpart: String,
    /// Ghost localparts are this prefix plus the encoded KIM address; the
    /// registration claims `@<prefix>.*` and `#<prefix>.*` exclusively.
    #[serde(default = "default_ghost_prefix")]
    pub ghost_prefix: String,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// The bridge's own PostgreSQL database (not the homeserver's).
    pub url: String,
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
}

/// The insurer's KIM mailbox at its Clientmodul: every mail the bridge sends
/// is from this address, every mail it receives is fetched from it.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MailboxConfig {
    pub address: KimAddress,
    /// The Clientmodul's SMTP side (sending).
    pub smtp: SmtpConfig,
    /// The Clientmodul's POP3 side (receiving).
    pub pop3: Pop3Config,
    /// How the bridge names itself in every mail (mandatory KIM headers).
    pub sender_system: SenderSystem,
    /// Names shown for KIM addresses (lowercase address → display name);
    /// others are shown as their address.
    #[serde(default)]
    pub display_names: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BridgeConfig {
    /// How often the mailbox is polled (seconds).
    #[serde(default = "default_poll_interval")]
    pub poll_interval_secs: u64,
    /// Leave fetched mail on the server (no DELE); the UIDL record keeps it
    /// from being posted twice.
    #[serde(default)]
    pub keep_on_server: bool,
    /// Where mail from an address without a portal opens one. Without it
    /// such mail stays on the server and is logged.
    #[serde(default)]
    pub triage_room: Option<OwnedRoomId>,
    /// How many times a temporary SMTP failure is retried before the
    /// message is shown as failed.
    #[serde(default = "default_max_send_attempts")]
    pub max_send_attempts: u32,
}

/// End-to-end encryption: the devices of the bot and the ghosts.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CryptoConfig {
    /// 32 bytes, base64: encrypts the devices' secrets in the bridge
    /// database (the crypto store). Losing it loses every device; changing
    /// it makes the store unreadable.
    pub store_key: String,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManagementConfig {
    /// The prefix of management commands (`!kim invite …`).
    #[serde(default = "default_command_prefix")]
    pub command_prefix: String,
    /// Users who may use management commands besides staff accounts
    /// (e.g. an operator's admin account); staff always may.
    #[serde(default)]
    pub extra_admins: Vec<OwnedUserId>,
}

impl Default for BridgeConfig {
    fn default() -> Self {
        Self {
            poll_interval_secs: default_poll_interval(),
            keep_on_server: false,
            triage_room: None,
            max_send_attempts: default_max_send_attempts(),
        }
    }
}

impl Default for ManagementConfig {
    fn default() -> Self {
        Self {
            command_prefix: default_command_prefix(),
            extra_admins: Vec::new(),
        }
    }
}

fn default_bot_localpart() -> String {
    "kimbot".to_owned()
}
fn default_ghost_prefix() -> String {
    "kim_".to_owned()
}
fn default_max_connections() -> u32 {
    8
}
fn default_poll_interval() -> u64 {
    30
}
fn default_max_send_attempts() -> u32 {
    8
}
fn default_command_prefix() -> String {
    "!kim".to_owned()
}

impl Config {
    /// Reads and checks the file; the tokens must be set (run
    /// `generate-registration` first).
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let config = Self::read(path)?;
        ensure!(
            !config.appservice.as_token.is_empty() && !config.appservice.hs_token.is_empty(),
            "{}: appservice.as_token and hs_token are empty; run `kim-bridge generate-registration` first",
            path.display()
        );
        Ok(config)
    }

    /// Reads and checks the file, tokens may still be empty.
    pub fn read(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the config {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("config {}", path.display()))
    }

    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let config: Self = toml::from_str(text)?;
        config.check()?;
        Ok(config)
    }

    fn check(&self) -> anyhow::Result<()> {
        let prefix = &self.appservice.ghost_prefix;
        ensure!(
            !prefix.is_empty()
                && prefix
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c)),
            "appservice.ghost_prefix {prefix:?} must be a non-empty lowercase localpart prefix"
        );
        ensure!(
            !self.appservice.bot_localpart.starts_with(prefix.as_str()),
            "appservice.bot_localpart must not start with the ghost prefix"
        );
        UserId::parse_with_server_name(
            self.appservice.bot_localpart.as_str(),
            &self.homeserver.server_name,
        )
        .context("appservice.bot_localpart is not a valid localpart")?;
        url::Url::parse(&self.homeserver.url).context("homeserver.url")?;
        url::Url::parse(&self.appservice.url).context("appservice.url")?;
        ensure!(
            self.bridge.poll_interval_secs > 0,
            "bridge.poll_interval_secs must be positive"
        );
        self.store_key()?;
        Ok(())
    }

    /// The crypto store key, decoded.
    pub fn store_key(&self) -> anyhow::Result<StoreKey> {
        let bytes = BASE64
            .decode(self.crypto.store_key.trim())
            .context("crypto.store_key is not base64")?;
        StoreKey::try_from(bytes.as_slice())
            .ok()
            .context("crypto.store_key must be 32 bytes (base64)")
    }

    /// The bridge bot's user id.
    pub fn bot_user_id(&self) -> OwnedUserId {
        UserId::parse_with_server_name(
            self.appservice.bot_localpart.as_str(),
            &self.homeserver.server_name,
        )
        .expect("checked when loading")
    }

    pub fn poll_interval(&self) -> Duration {
        Duration::from_secs(self.bridge.poll_interval_secs)
    }

    /// The name a KIM address is shown with.
    pub fn display_name(&self, address: &KimAddress) -> String {
        self.mailbox
            .display_names
            .get(address.as_str())
            .cloned()
            .unwrap_or_else(|| address.to_string())
    }
}

/// The commented example `generate-config` writes, with a fresh random
/// crypto store key.
pub fn example() -> String {
    let mut key = StoreKey::default();
    rand::rng().fill_bytes(&mut key);
    EXAMPLE.replace(STORE_KEY_PLACEHOLDER, &BASE64.encode(key))
}

/// Replaced by a random key in [`example`].
const STORE_KEY_PLACEHOLDER: &str = "@STORE_KEY@";

const EXAMPLE: &str = r#"# KIM bridge configuration. After editing, run
#   kim-bridge generate-registration -c config.toml -r kim-registration.yaml
# which fills in the tokens below and writes the homeserver's registration file.

[homeserver]
# The homeserver's Client-Server API, as the bridge reaches it.
url = "http://127.0.0.1:8008"
# The server name in user ids (@user:server_name).
server_name = "example.org"

[appservice]
# The registration id (must be unique among the homeserver's appservices).
id = "kim"
# Where the bridge listens for the homeserver's transactions and queries,
# and serves GET /health.
listen = "127.0.0.1:29340"
# How the homeserver reaches that listener.
url = "http://127.0.0.1:29340"
# Written by generate-registration; keep them secret.
as_token = ""
hs_token = ""
# The bridge bot (management rooms: !kim help).
bot_localpart = "kimbot"
# Ghosts of KIM addresses are @kim_<encoded address>:server_name.
ghost_prefix = "kim_"

[database]
# The bridge's own PostgreSQL database (migrated at start).
url = "postgres://kim_bridge@127.0.0.1:5432/kim_bridge"
max_connections = 8

[mailbox]
# The insurer's KIM address; every mail is sent from it and fetched for it.
address = "versicherung@kasse.kim.telematik"


# Names shown for KIM addresses (otherwise the address itself).
[mailbox.display_names]
"praxis.mueller@praxis.kim.telematik" = "Praxis Dr. Müller"

# Sending: SMTP to the insurer's KIM Clientmodul. TLS is required unless the
# Clientmodul runs on this host (security = "plain_loopback_only"); a
# self-signed Clientmodul certificate is pinned.
[mailbox.smtp]
host = "clientmodul.kasse.internal"
port = 465
security = "implicit_tls"        # or "start_tls" (port 587), "plain_loopback_only"
trust = { pinned_certificate = "/etc/kim-bridge/clientmodul.pem" }   # or { ca_file = "…" }
# The Clientmodul's '#'-encoded username: address#mta-host:port#MandantId#ClientsystemId#WorkplaceId[#KonnektorId]
username = "versicherung@kasse.kim.telematik#mail.kim.telematik:465#1#KIM-Bridge#1"
password = ""

# Receiving: POP3 at the Clientmodul, polled every poll_interval_secs.
[mailbox.pop3]
host = "clientmodul.kasse.internal"
port = 995
security = "implicit_tls"
trust = { pinned_certificate = "/etc/kim-bridge/clientmodul.pem" }
# address#mta-host:port#MandantId#ClientsystemId#WorkplaceId#UserId#KonnektorId ('*' for empty)
username = "versicherung@kasse.kim.telematik#mail.kim.telematik:995#1#KIM-Bridge#1#*#*"
password = ""

# The KIM headers every mail carries.
[mailbox.sender_system]
sendersystem = "TI-M KIM-Bridge;0.1.0"       # X-KIM-Sendersystem
support = "support@kasse.kim.telematik"      # X-KIM-Support
middleware = "kim-bridge;0.1.0"              # X-KIM-Middleware
ti_user_agent = "TI-M-KIM-Bridge/0.1.0"      # X-TI-User-Agent

[bridge]
# Seconds between POP3 polls.
poll_interval_secs = 30
# true: never DELE fetched mail (it stays on the Clientmodul's server; the
# bridge remembers each UIDL and posts every mail once).
keep_on_server = false
# Room where mail from addresses without a portal opens one; staff watch it.
# triage_room = "!triage:example.org"
# Attempts for temporary SMTP failures (exponential backoff) before a
# message is shown as failed.
max_send_attempts = 8

[management]
# Prefix of the commands in a direct chat with the bot.
command_prefix = "!kim"
# Users besides staff accounts who may use the commands.
extra_admins = []

[crypto]
# 32 random bytes (base64) that encrypt the bridge devices' keys in the
# database; generate-config wrote a fresh one. Keep it secret and keep it:
# without it the bot and the ghosts lose their devices (encrypted rooms
# must then share keys with new ones).
store_key = "@STORE_KEY@"
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_parses_with_defaults_filled_in() {
        let config = Config::parse(&example()).expect("the example is valid");
        assert_ne!(config.store_key().expect("a key"), example_key(&example()));
        assert_eq!(config.bot_user_id(), "@kimbot:example.org");
        assert_eq!(config.appservice.ghost_prefix, "kim_");
        assert_eq!(config.poll_interval(), Duration::from_secs(30));
        let praxis: KimAddress = "Praxis.Mueller@praxis.kim.telematik"
            .parse()
            .expect("valid");
        assert_eq!(config.display_name(&praxis), "Praxis Dr. Müller");
        let other: KimAddress = "a@b.kim.telematik".parse().expect("valid");
        assert_eq!(config.display_name(&other), "a@b.kim.telematik");
    }

    #[test]
    fn a_ghost_prefix_that_is_no_localpart_is_refused() {
        let bad = example().replace("ghost_prefix = \"kim_\"", "ghost_prefix = \"KIM \"");
        assert!(Config::parse(&bad).is_err());
        let clash = example().replace("bot_localpart = \"kimbot\"", "bot_localpart = \"kim_bot\"");
        assert!(Config::parse(&clash).is_err());
    }

    fn example_key(text: &str) -> StoreKey {
        Config::parse(text)
            .expect("valid")
            .store_key()
            .expect("a key")
    }

    #[test]
    fn a_store_key_of_the_wrong_length_is_refused() {
        let example = example();
        let key = Config::parse(&example).expect("valid").crypto.store_key;
        let short = example.replace(&key, &BASE64.encode([7u8; 16]));
        assert!(Config::parse(&short).is_err());
        assert!(Config::parse(&example.replace(&key, "not base64!")).is_err());
    }
}
