//! The homeserver's configuration: a TOML file, with environment overrides for
//! the settings that deployments usually inject (`DATABASE_URL`, `REDIS_URL`).

use std::{
    fmt,
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    str::FromStr,
};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

/// Everything the server reads at start.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The `server_name` part of every user id, room alias and signing key.
    pub server_name: String,
    /// Where `homeserver serve` listens.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// The URL clients use to reach this server (for `/.well-known/matrix/client`).
    #[serde(default)]
    pub public_baseurl: Option<String>,
    pub database: DatabaseConfig,
    #[serde(default)]
    pub redis: RedisConfig,
    /// Path of the ed25519 signing key (created by `generate-keys`).
    pub signing_key_path: PathBuf,
    #[serde(default)]
    pub registration: RegistrationConfig,
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Request rates per user and per client address (see `rate_limit/`).
    #[serde(default)]
    pub rate_limits: RateLimitsConfig,
    /// Contacts served at `/.well-known/matrix/support`.
    #[serde(default)]
    pub support: SupportConfig,
    #[serde(default)]
    pub media: MediaConfig,
    #[serde(default)]
    pub metrics: MetricsConfig,
    #[serde(default)]
    pub push: PushConfig,
    #[serde(default)]
    pub presence: PresenceConfig,
    /// The TI-Messenger rules (see `tim/`).
    #[serde(default)]
    pub tim: TimConfig,
    /// Insured persons' login through the insurer's identity provider.
    #[serde(default)]
    pub oidc: OidcConfig,
    /// Application services (the KIM bridge) registered with this server.
    #[serde(default)]
    pub appservices: AppservicesConfig,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `postgres://user@host/db` of database 0, which also holds the shard
    /// map.
    pub url: String,
    /// Further physical databases (1, 2, …) that logical shards are spread
    /// over. Add new ones at the end only: a database's place in this list
    /// is its place in every sync token, and each database remembers it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shards: Vec<String>,
    /// Connections per database and worker.
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
}

/// Redis carries what workers share but need not keep: the notifier's
/// wake-ups and typing. Without it the server is one process and keeps
/// both in memory; with it any number of workers serve one database.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://[user:password@]host:port[/db]`; unset for a single worker.
    /// With `cluster`, seed nodes of the cluster separated by commas (the
    /// client discovers the rest; more than one seed lets a worker
    /// reconnect while one node is down; percent-encode commas in
    /// passwords).
    pub url: Option<String>,
    /// Redis Cluster (Redis 7 or later) rather than one server:
    /// notifications use sharded pub/sub (`SPUBLISH`/`SSUBSCRIBE`), so each
    /// travels only within the shard that owns its channel.
    #[serde(default)]
    pub cluster: bool,
    /// Prefix of every key and channel, so that deployments can share a
    /// Redis; all workers of one deployment must use the same. Defaults to
    /// the server name.
    #[serde(default)]
    pub prefix: Option<String>,
}

/// Who may create accounts through `POST /register`.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RegistrationConfig {
    /// Open registration (no token). Off by default: TI-M accounts come from
    /// the insurer's identity provider or its admins.
    #[serde(default)]
    pub enabled: bool,
    /// When set, `POST /register` accepts `m.login.registration_token` with a
    /// token from the `registration_tokens` table.
    #[serde(default)]
    pub require_token: bool,
    /// Shared secret for the admin registration API
    /// (`/_synapse/admin/v1/register`), used by tests and provisioning.
    #[serde(default)]
    pub shared_secret: Option<String>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest request body accepted, in bytes (413 `M_TOO_LARGE` above).
    #[serde(default = "default_max_request_bytes")]
    pub max_request_bytes: usize,
    /// Longest `/sync` long-poll a client may ask for, in milliseconds.
    #[serde(default = "default_max_sync_timeout_ms")]
    pub max_sync_timeout_ms: u64,
    /// Deepest nesting of arrays and objects in a request body (400
    /// `M_BAD_JSON` deeper). Matrix content nests a handful of levels.
    #[serde(default = "default_max_json_depth")]
    pub max_json_depth: usize,
    /// Most messages (recipient devices) in one `sendToDevice` (413
    /// `M_TOO_LARGE` above); a room key share costs one per member device.
    #[serde(default = "default_max_to_device_messages")]
    pub max_to_device_messages: usize,
    /// Most users in one `/keys/query`.
    #[serde(default = "default_max_keys_query_users")]
    pub max_keys_query_users: usize,
    /// Most devices in one `/keys/claim`.
    #[serde(default = "default_max_keys_claim_devices")]
    pub max_keys_claim_devices: usize,
    /// Most one-time and fallback keys in one `/keys/upload`.
    #[serde(default = "default_max_uploaded_one_time_keys")]
    pub max_uploaded_one_time_keys: usize,
    /// Most entries (types, senders, rooms, each list counted) in one filter
    /// (400 `M_BAD_JSON` above): every event a sync reads is matched
    /// against them.
    #[serde(default = "default_max_filter_entries")]
    pub max_filter_entries: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_request_bytes: default_max_request_bytes(),
            max_sync_timeout_ms: default_max_sync_timeout_ms(),
            max_json_depth: default_max_json_depth(),
            max_to_device_messages: default_max_to_device_messages(),
            max_keys_query_users: default_max_keys_query_users(),
            max_keys_claim_devices: default_max_keys_claim_devices(),
            max_uploaded_one_time_keys: default_max_uploaded_one_time_keys(),
            max_filter_entries: default_max_filter_entries(),
        }
    }
}

/// Rate limits, shared by all workers through Redis (per worker while
/// Redis is away). Each is a rate with a burst: `burst` requests may come
/// at once, then one more every `1 / per_second` seconds.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitsConfig {
    /// Off: no request is ever refused for its rate.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Per user: writes into rooms (messages, state, redactions, room
    /// creation, invites, joins, leaves).
    #[serde(default = "default_room_writes_limit")]
    pub room_writes: RateLimit,
    /// Per user: the other endpoints the spec marks rate-limited (receipts,
    /// typing, key backups, profile changes, media, …).
    #[serde(default = "default_requests_limit")]
    pub requests: RateLimit,
    /// Per client address: rate-limited endpoints called without a token
    /// (login, registration, username checks).
    #[serde(default = "default_anonymous_limit")]
    pub anonymous: RateLimit,
    /// Per account: wrong passwords (at login and in user-interactive
    /// auth). Beyond it the account's password logins are refused until the
    /// limit recovers, whichever address they come from.
    #[serde(default = "default_failed_logins_limit")]
    pub failed_logins: RateLimit,
    /// Reverse proxies (the TCP peer) whose `X-Forwarded-For` names the
    /// client's address; from anyone else the header is ignored, since
    /// anyone can set it.
    #[serde(default = "default_trusted_proxies")]
    pub trusted_proxies: Vec<IpRange>,
}

/// A rate and a burst.
#[derive(Clone, Copy, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    pub per_second: f64,
    pub burst: u32,
}

impl Default for RateLimitsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            room_writes: default_room_writes_limit(),
            requests: default_requests_limit(),
            anonymous: default_anonymous_limit(),
            failed_logins: default_failed_logins_limit(),
            trusted_proxies: default_trusted_proxies(),
        }
    }
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SupportConfig {
    #[serde(default)]
    pub admin_email: Option<String>,
    #[serde(default)]
    pub admin_matrix_id: Option<String>,
    #[serde(default)]
    pub support_page: Option<String>,
}

/// The media repository: uploads, downloads, thumbnails.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MediaConfig {
    /// Directory of the filesystem content store (relative paths are
    /// relative to the config file).
    #[serde(default = "default_media_store_path")]
    pub store_path: PathBuf,
    /// Largest upload accepted, in bytes (413 `M_TOO_LARGE` above);
    /// advertised to clients as `m.upload.size`. Separate from
    /// `limits.max_request_bytes`, which bounds JSON bodies.
    #[serde(default = "default_max_upload_bytes")]
    pub max_upload_bytes: u64,
    /// The thumbnails the server makes. A request is answered with the
    /// smallest offered size at least as large, so the number of
    /// thumbnails per upload stays bounded whatever clients ask for.
    #[serde(default = "default_thumbnail_sizes")]
    pub thumbnail_sizes: Vec<ThumbnailSize>,
    /// How many ids from `POST /_matrix/media/v1/create` a user may hold
    /// without content at once (429 `M_LIMIT_EXCEEDED` above).
    #[serde(default = "default_max_pending_uploads")]
    pub max_pending_uploads: u32,
    /// How long such an id stays reserved without content, in seconds.
    #[serde(default = "default_unused_upload_expiry_secs")]
    pub unused_upload_expiry_secs: u64,
}

impl Default for MediaConfig {
    fn default() -> Self {
        Self {
            store_path: default_media_store_path(),
            max_upload_bytes: default_max_upload_bytes(),
            thumbnail_sizes: default_thumbnail_sizes(),
            max_pending_uploads: default_max_pending_uploads(),
            unused_upload_expiry_secs: default_unused_upload_expiry_secs(),
        }
    }
}

/// One offered thumbnail: a bounding box and how the image is fitted in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ThumbnailSize {
    pub width: u32,
    pub height: u32,
    pub method: ThumbnailMethod,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ThumbnailMethod {
    /// Fill the box exactly, cutting off what sticks out.
    Crop,
    /// Fit inside the box, keeping the aspect ratio.
    Scale,
}

impl ThumbnailMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Crop => "crop",
            Self::Scale => "scale",
        }
    }
}

/// Push notifications to Push Gateways.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PushConfig {
    /// Base URLs of the push gateways pushers may use (e.g. the messenger
    /// vendor's `https://push.example.org`). Empty allows any http(s)
    /// gateway; production deployments should list theirs, or users can
    /// make the server POST to any address it reaches.
    #[serde(default)]
    pub allowed_gateways: Vec<String>,
}

/// Presence (see `presence/`).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PresenceConfig {
    /// A user who neither syncs nor sets presence for this long goes
    /// offline. Longer than clients' long-poll timeout (30 s is usual), so a
    /// connected client never flickers.
    #[serde(default = "default_offline_after_secs")]
    pub offline_after_secs: u64,
}

impl Default for PresenceConfig {
    fn default() -> Self {
        Self { offline_after_secs: default_offline_after_secs() }
    }
}

fn default_offline_after_secs() -> u64 {
    90
}

/// Application services: the registration files (the spec's YAML) of the
/// bridges allowed to act for the users, aliases and rooms of their
/// namespaces. Read and checked at start (see `appservice/registration.rs`).
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AppservicesConfig {
    /// Paths of registration files, relative to the config file.
    #[serde(default)]
    pub registration_files: Vec<PathBuf>,
}

/// TI-Messenger (TI-M ePA) settings of the insurer's homeserver.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TimConfig {
    /// The permission config (`de.gematik.tim.account.permissionconfig.epa.v1`)
    /// a new insured person's account starts with, and the one that applies
    /// to an insured person who never stored one (A_25043). Must satisfy
    /// gematik's ePA schema; checked at start.
    #[serde(default = "default_insured_permission_config")]
    pub default_insured_permission_config: serde_json::Value,
    /// Where the signed federation list comes from (`tim/federation_list.rs`).
    #[serde(default)]
    pub federation_list: FederationListConfig,
    /// What the retention job deletes, and when (`tim/retention.rs`).
    #[serde(default)]
    pub retention: RetentionConfig,
}

impl Default for TimConfig {
    fn default() -> Self {
        Self {
            default_insured_permission_config: default_insured_permission_config(),
            federation_list: FederationListConfig::default(),
            retention: RetentionConfig::default(),
        }
    }
}

/// The TI-Messenger federation list: from the VZD (`url`, with the
/// provider's OAuth token) or from a file the operator replaces (offline
/// setups). Without either, no remote domain is federated: invites of
/// remote users are refused.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FederationListConfig {
    /// `https://…/tim-provider-services/FederationList/federationList.jws`;
    /// `?version=N` is added.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The provider's OAuth access token for the VZD (sent as Bearer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_token: Option<String>,
    /// A `federationList.jws` on disk, instead of `url`; it counts as
    /// refreshed when it was last modified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
    /// PEM file with the TI CA certificate(s) the signer's `x5c` chain must
    /// lead to. Required with `url` or `file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trust_anchor: Option<PathBuf>,
    /// How often every worker asks the VZD for a newer list.
    #[serde(default = "default_federation_refresh_secs")]
    pub refresh_interval_secs: u64,
    /// A list not confirmed for this long is not trusted (TI-M: 72 h).
    #[serde(default = "default_federation_max_age_hours")]
    pub max_age_hours: u64,
}

impl Default for FederationListConfig {
    fn default() -> Self {
        Self {
            url: None,
            access_token: None,
            file: None,
            trust_anchor: None,
            refresh_interval_secs: default_federation_refresh_secs(),
            max_age_hours: default_federation_max_age_hours(),
        }
    }
}

fn default_federation_refresh_secs() -> u64 {
    3600
}

fn default_federation_max_age_hours() -> u64 {
    72
}

/// `[tim.retention]`: the retention job (one worker per database at a
/// time, under a lease). Periods in days (hours for the grace period).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    /// Run the job in `serve` (the CLI `retention run` works either way).
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// How often each database is scanned.
    #[serde(default = "default_retention_interval_minutes")]
    pub interval_minutes: u64,
    /// A room whose newest event is older than this is purged (TI-M: six
    /// months).
    #[serde(default = "default_inactive_room_days")]
    pub inactive_room_days: u64,
    /// A room where only its creator ever joined and nothing but state was
    /// sent is purged when older than this.
    #[serde(default = "default_orphaned_room_days")]
    pub orphaned_room_days: u64,
    /// Local users leave a room whose members are all insured persons once
    /// it has been so (no membership change) for this long.
    #[serde(default = "default_insured_only_grace_hours")]
    pub insured_only_grace_hours: u64,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            interval_minutes: default_retention_interval_minutes(),
            inactive_room_days: default_inactive_room_days(),
            orphaned_room_days: default_orphaned_room_days(),
            insured_only_grace_hours: default_insured_only_grace_hours(),
        }
    }
}

fn default_retention_interval_minutes() -> u64 {
    60
}

/// Six months.
fn default_inactive_room_days() -> u64 {
    183
}

/// Six weeks, as famedly's synapse-invite-checker purges state-only rooms.
fn default_orphaned_room_days() -> u64 {
    42
}

/// One week, famedly's default for insured-only rooms.
fn default_insured_only_grace_hours() -> u64 {
    168
}

/// Everyone may invite a new insured person until they choose otherwise
/// (gematik's clients and the reference servers start from "allow all").
fn default_insured_permission_config() -> serde_json::Value {
    serde_json::json!({ "defaultSetting": "allow all" })
}

/// Insured persons log in through the insurer's OpenID Connect identity
/// provider (`auth/oidc.rs`, `client_api/sso.rs`); `/login` offers
/// `m.login.sso` with these providers.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OidcConfig {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub providers: Vec<OidcProviderConfig>,
    /// Prefixes a client's `redirectUrl` must start with (e.g.
    /// `https://app.insurer.example/`, `de.insurer.tim:/`). Empty admits
    /// any absolute URL: the login token then goes wherever the client that
    /// started the login asked, in the browser that started it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_redirect_urls: Vec<String>,
}

/// One identity provider, registered there as a confidential client with
/// the redirect URI `<public_baseurl>/_synapse/client/oidc/callback`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OidcProviderConfig {
    /// The `idp_id` clients name in `/login/sso/redirect/{idpId}`.
    pub id: String,
    /// What clients show on the login button.
    pub name: String,
    /// Its issuer URL; the rest comes from
    /// `<issuer>/.well-known/openid-configuration`.
    pub issuer: String,
    pub client_id: String,
    pub client_secret: String,
    /// Scopes asked for (`openid` is always asked for).
    #[serde(default = "default_oidc_scopes")]
    pub scopes: Vec<String>,
    /// The id_token claim that carries the KVNR.
    #[serde(default = "default_kvnr_claim")]
    pub kvnr_claim: String,
    /// The id_token claim that carries the display name of a new account.
    #[serde(default = "default_display_name_claim")]
    pub display_name_claim: String,
}

/// The scopes of gematik's sectoral IdPs for an insured person's KVNR and
/// name (gemSpec_IDP_Sek).
fn default_oidc_scopes() -> Vec<String> {
    ["openid", "urn:telematik:versicherter", "urn:telematik:display_name"].map(String::from).to_vec()
}
fn default_kvnr_claim() -> String {
    "urn:telematik:claims:id".to_owned()
}
fn default_display_name_claim() -> String {
    "urn:telematik:claims:display_name".to_owned()
}

/// The Prometheus endpoint `GET /metrics` on the main listener.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Serve `/metrics` at all (404 `M_UNRECOGNIZED` when off).
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Peers (the TCP connection's address, never a forwarded header, which
    /// anyone can set) that may scrape. Metrics reveal traffic patterns, so
    /// the default is loopback only; everyone else gets a 404 as if the
    /// endpoint did not exist.
    #[serde(default = "default_metrics_allowed_ips")]
    pub allowed_ips: Vec<IpRange>,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self { enabled: true, allowed_ips: default_metrics_allowed_ips() }
    }
}

/// An address range in a config allowlist: `10.0.0.0/8`, `::1/128`, or a
/// single address (`192.0.2.7`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub struct IpRange(ipnet::IpNet);

impl IpRange {
    /// Whether `addr` is in the range. IPv4 peers of a dual-stack listener
    /// arrive as `::ffff:a.b.c.d` and are matched as the IPv4 address.
    pub fn contains(&self, addr: IpAddr) -> bool {
        self.0.contains(&addr.to_canonical())
    }
}

impl FromStr for IpRange {
    type Err = anyhow::Error;

    fn from_str(text: &str) -> anyhow::Result<Self> {
        let net = match text.parse::<ipnet::IpNet>() {
            Ok(net) => net,
            Err(_) => text.parse::<IpAddr>().map(ipnet::IpNet::from).with_context(|| format!("{text:?} is neither an address nor a CIDR range"))?,
        };
        Ok(Self(net))
    }
}

impl TryFrom<String> for IpRange {
    type Error = anyhow::Error;

    fn try_from(text: String) -> anyhow::Result<Self> {
        text.parse()
    }
}

impl From<IpRange> for String {
    fn from(range: IpRange) -> Self {
        range.to_string()
    }
}

impl fmt::Display for IpRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Largest thumbnail edge accepted in the config: thumbnails are previews,
/// and every offered size costs a decode per upload.
const MAX_THUMBNAIL_EDGE: u32 = 4096;

fn default_listen() -> SocketAddr {
    ([127, 0, 0, 1], 8008).into()
}
impl OidcConfig {
    /// Provider ids are what MSC2858 allows (they are path segments), each
    /// used once; issuers and redirect prefixes are URLs.
    fn validate(&self) -> anyhow::Result<()> {
        let id_char = |c: char| c.is_ascii_alphanumeric() || "_.~-".contains(c);
        for (i, provider) in self.providers.iter().enumerate() {
            if provider.id.is_empty() || provider.id.len() > 255 || !provider.id.chars().all(id_char) {
                anyhow::bail!("oidc.providers: id {:?} must be 1-255 of A-Z a-z 0-9 _ . ~ -", provider.id);
            }
            if self.providers[..i].iter().any(|earlier| earlier.id == provider.id) {
                anyhow::bail!("oidc.providers: id {:?} is used twice", provider.id);
            }
            url::Url::parse(&provider.issuer).with_context(|| format!("oidc.providers {:?}: issuer", provider.id))?;
        }
        for prefix in &self.allowed_redirect_urls {
            url::Url::parse(prefix).with_context(|| format!("oidc.allowed_redirect_urls: {prefix:?}"))?;
        }
        Ok(())
    }

    pub fn provider(&self, id: &str) -> Option<&OidcProviderConfig> {
        self.providers.iter().find(|provider| provider.id == id)
    }
}

impl DatabaseConfig {
    /// Every database's URL, in token order.
    pub fn urls(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.url.as_str()).chain(self.shards.iter().map(String::as_str))
    }
}

fn default_max_connections() -> u32 {
    20
}
fn default_max_request_bytes() -> usize {
    1024 * 1024
}
fn default_max_sync_timeout_ms() -> u64 {
    60_000
}
fn default_max_json_depth() -> usize {
    64
}
fn default_max_to_device_messages() -> usize {
    10_000
}
fn default_max_keys_query_users() -> usize {
    1_000
}
fn default_max_keys_claim_devices() -> usize {
    10_000
}
fn default_max_uploaded_one_time_keys() -> usize {
    1_000
}
fn default_max_filter_entries() -> usize {
    1_000
}
fn default_true() -> bool {
    true
}
/// A person chatting: a burst of 20, then two a second.
fn default_room_writes_limit() -> RateLimit {
    RateLimit { per_second: 2.0, burst: 20 }
}
/// A client starting up (receipts, key backup uploads) stays well below.
fn default_requests_limit() -> RateLimit {
    RateLimit { per_second: 10.0, burst: 100 }
}
/// Room for a household behind one address, not for password guessing.
fn default_anonymous_limit() -> RateLimit {
    RateLimit { per_second: 0.5, burst: 20 }
}
/// Five wrong passwords, then one more try a minute.
fn default_failed_logins_limit() -> RateLimit {
    RateLimit { per_second: 1.0 / 60.0, burst: 5 }
}
fn default_trusted_proxies() -> Vec<IpRange> {
    ["127.0.0.0/8", "::1/128"].iter().map(|range| range.parse().expect("valid ranges")).collect()
}
fn default_media_store_path() -> PathBuf {
    PathBuf::from("media_store")
}
fn default_max_upload_bytes() -> u64 {
    50 * 1024 * 1024
}
/// The sizes Synapse offers, which clients are tuned to ask for.
fn default_thumbnail_sizes() -> Vec<ThumbnailSize> {
    use ThumbnailMethod::{Crop, Scale};
    [(32, 32, Crop), (96, 96, Crop), (320, 240, Scale), (640, 480, Scale), (800, 600, Scale)]
        .into_iter()
        .map(|(width, height, method)| ThumbnailSize { width, height, method })
        .collect()
}
fn default_max_pending_uploads() -> u32 {
    5
}
fn default_unused_upload_expiry_secs() -> u64 {
    24 * 60 * 60
}
/// Loopback: a Prometheus (or agent) on the worker's own host.
fn default_metrics_allowed_ips() -> Vec<IpRange> {
    let loopback_v4 = ipnet::IpNet::new_assert(IpAddr::from([127, 0, 0, 0]), 8);
    let loopback_v6 = ipnet::IpNet::from(IpAddr::from(std::net::Ipv6Addr::LOCALHOST));
    vec![IpRange(loopback_v4), IpRange(loopback_v6)]
}

impl Config {
    /// Reads the file and applies the environment overrides.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config {}", path.display()))?;
        let mut config: Config =
            toml::from_str(&text).with_context(|| format!("parsing config {}", path.display()))?;
        config.apply_env(|name| std::env::var(name).ok());
        config.validate()?;
        // Relative paths in the file are relative to the file, not to
        // wherever the server was started.
        if let Some(dir) = path.parent() {
            let registrations = config.appservices.registration_files.iter_mut();
            let federation = &mut config.tim.federation_list;
            let federation = [&mut federation.file, &mut federation.trust_anchor].into_iter().flatten();
            for relative in [&mut config.signing_key_path, &mut config.media.store_path].into_iter().chain(registrations).chain(federation) {
                if relative.is_relative() {
                    *relative = dir.join(&*relative);
                }
            }
        }
        Ok(config)
    }

    /// `DATABASE_URL`, `REDIS_URL`, `HOMESERVER_LISTEN` win over the file.
    fn apply_env(&mut self, var: impl Fn(&str) -> Option<String>) {
        if let Some(url) = var("DATABASE_URL") {
            self.database.url = url;
        }
        if let Some(url) = var("REDIS_URL") {
            self.redis.url = Some(url);
        }
        if let Some(listen) = var("HOMESERVER_LISTEN").and_then(|l| l.parse().ok()) {
            self.listen = listen;
        }
    }

    fn validate(&self) -> anyhow::Result<()> {
        ruma::ServerName::parse(&self.server_name)
            .with_context(|| format!("server_name {:?} is not a valid server name", self.server_name))?;
        let prefix = self.redis_prefix();
        // Braces would make a Redis Cluster hash tag of the prefix (typing
        // keys rely on their own tag to share a slot).
        if prefix.is_empty() || prefix.contains(['{', '}']) || prefix.contains(char::is_whitespace) {
            anyhow::bail!("redis.prefix {prefix:?} must be non-empty, without braces or whitespace");
        }
        let edges = 1..=MAX_THUMBNAIL_EDGE;
        if let Some(size) = self.media.thumbnail_sizes.iter().find(|size| !edges.contains(&size.width) || !edges.contains(&size.height)) {
            anyhow::bail!("media.thumbnail_sizes: {}x{} is not within 1..={MAX_THUMBNAIL_EDGE} pixels", size.width, size.height);
        }
        let limits = &self.rate_limits;
        for (name, limit) in [("room_writes", limits.room_writes), ("requests", limits.requests), ("anonymous", limits.anonymous), ("failed_logins", limits.failed_logins)] {
            if !(limit.per_second.is_finite() && limit.per_second > 0.0 && limit.burst > 0) {
                anyhow::bail!("rate_limits.{name}: per_second must be a positive number and burst at least 1");
            }
        }
        crate::tim::permissions::PermissionConfigType::Epa
            .validate(&self.tim.default_insured_permission_config)
            .map_err(|err| anyhow::anyhow!("tim.default_insured_permission_config: {err}"))?;
        self.oidc.validate()?;
        Ok(())
    }

    /// A config for local development, as written by `generate-config`
    /// (the key path and the media store are written relative to the
    /// config file).
    pub fn development(server_name: &str, database_url: &str, signing_key_path: PathBuf) -> Self {
        Self {
            server_name: server_name.to_owned(),
            listen: default_listen(),
            public_baseurl: Some(format!("http://{}", default_listen())),
            database: DatabaseConfig { url: database_url.to_owned(), shards: Vec::new(), max_connections: default_max_connections() },
            redis: RedisConfig::default(),
            signing_key_path,
            registration: RegistrationConfig::default(),
            limits: LimitsConfig::default(),
            rate_limits: RateLimitsConfig::default(),
            support: SupportConfig {
                admin_email: Some(format!("admin@{server_name}")),
                ..SupportConfig::default()
            },
            media: MediaConfig::default(),
            metrics: MetricsConfig::default(),
            push: PushConfig::default(),
            presence: PresenceConfig::default(),
            tim: TimConfig::default(),
            oidc: OidcConfig::default(),
            appservices: AppservicesConfig::default(),
        }
    }

    /// The prefix of this deployment's Redis keys and channels.
    pub fn redis_prefix(&self) -> &str {
        self.redis.prefix.as_deref().unwrap_or(&self.server_name)
    }

    /// The base URL clients should use.
    pub fn client_base_url(&self) -> String {
        self.public_baseurl.clone().unwrap_or_else(|| format!("http://{}", self.listen))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_overrides_the_file() {
        let mut config = Config::development("example.org", "postgres://file/db", "k".into());
        config.apply_env(|name| match name {
            "DATABASE_URL" => Some("postgres://env/db".into()),
            "REDIS_URL" => Some("redis://127.0.0.1:6379".into()),
            _ => None,
        });
        assert_eq!(config.database.url, "postgres://env/db");
        assert_eq!(config.redis.url.as_deref(), Some("redis://127.0.0.1:6379"));
    }

    #[test]
    fn generated_config_round_trips_through_toml() {
        let config = Config::development("example.org", "postgres://localhost/hs", "signing.key".into());
        let text = toml::to_string_pretty(&config).unwrap();
        let parsed: Config = toml::from_str(&text).unwrap();
        assert_eq!(parsed.server_name, "example.org");
        assert_eq!(parsed.listen, default_listen());
        assert_eq!(parsed.metrics.allowed_ips, default_metrics_allowed_ips());
    }

    #[test]
    fn metrics_allowlist_takes_ranges_and_single_addresses() {
        let config: MetricsConfig = toml::from_str(r#"allowed_ips = ["10.1.0.0/16", "192.0.2.7", "::1"]"#).unwrap();
        let allowed = |addr: &str| config.allowed_ips.iter().any(|range| range.contains(addr.parse().unwrap()));
        assert!(allowed("10.1.200.3"));
        assert!(allowed("192.0.2.7"));
        assert!(allowed("::ffff:192.0.2.7"), "IPv4 peers of a dual-stack listener");
        assert!(allowed("::1"));
        assert!(!allowed("10.2.0.1"));
        assert!(!allowed("192.0.2.8"));
        assert!(config.enabled, "enabled by default");
        assert!(toml::from_str::<MetricsConfig>(r#"allowed_ips = ["localhost"]"#).is_err());
    }

    #[test]
    fn redis_defaults_to_one_server_prefixed_with_the_server_name() {
        let mut config = Config::development("example.org", "postgres://localhost/hs", "k".into());
        let redis: RedisConfig = toml::from_str(r#"url = "redis://127.0.0.1:6379""#).unwrap();
        assert!(!redis.cluster);
        config.redis = redis;
        assert_eq!(config.redis_prefix(), "example.org");
        config.validate().unwrap();
        config.redis.prefix = Some("tenant{1}".into());
        assert!(config.validate().is_err(), "a hash tag in the prefix");
    }

    #[test]
    fn metrics_default_to_loopback_only() {
        let config = MetricsConfig::default();
        let allowed = |addr: &str| config.allowed_ips.iter().any(|range| range.contains(addr.parse().unwrap()));
        assert!(allowed("127.0.0.1") && allowed("127.8.9.10") && allowed("::1"));
        assert!(!allowed("10.0.0.1") && !allowed("::2"));
    }
}
