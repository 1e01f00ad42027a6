//! The TI-Messenger federation list: the TI-M domains and which of them
//! belong to health insurers, signed by the VZD (gematik's directory).
//! Every remote domain this server deals with must be on it; while there is
//! no Server-Server API that means the Client-Server side: invites of
//! remote users (`/invite`, `createRoom`'s `invite`).
//!
//! The list comes from the VZD (`GET …/FederationList/federationList.jws
//! ?version=N` with the provider's OAuth token; 204 when our version is
//! current) or, for offline setups, from a file the operator replaces. It is
//! verified (`verify`: the `x5c` chain up to the configured TI CA, ES256 or
//! brainpoolP256r1), checked against gematik's schema, stored in database 0
//! (`tim_federation_list`, so every worker and a restart start from the last
//! good list) and held in memory. Every worker refreshes it on a schedule
//! and when a domain is missing (at most once a minute); a worker finds a
//! list another one fetched in the database first. A list not confirmed
//! for 72 h is no longer trusted: remote invites are refused until a
//! refresh succeeds.

mod verify;

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
    time::{Duration, UNIX_EPOCH},
};

use anyhow::Context as _;
use jsonschema::Validator;
use serde::Deserialize;
use tokio::task::JoinHandle;

pub use self::verify::{TrustAnchors, VerifyError};
use super::accounts::AccountKind;
use crate::{
    config::FederationListConfig,
    http::{ApiError, ApiResult},
    metrics::tim::FederationListMetrics,
    server::Homeserver,
    storage::{self, Db, federation_list as stored},
};

/// How often a missing domain may trigger a refresh.
const MISS_REFRESH_PAUSE_MS: i64 = 60_000;
/// How long a fetch from the VZD may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(20);

static SCHEMA: std::sync::LazyLock<Validator> = std::sync::LazyLock::new(|| {
    let schema = serde_json::from_str(include_str!("schemas/FederationList.json")).expect("the federation list schema is JSON");
    jsonschema::validator_for(&schema).expect("the federation list schema is a valid JSON schema")
});

/// One entry of the list (api-vzd `src/schema/FederationList.json`).
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FederationDomain {
    pub domain: String,
    #[serde(rename = "telematikID")]
    pub telematik_id: String,
    /// A health insurer's domain: its users are insured persons (TI-M ePA).
    #[serde(default)]
    pub is_insurance: bool,
    /// The insurer's IK numbers (Institutionskennzeichen).
    #[serde(default)]
    pub ik: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Payload {
    #[serde(default)]
    version: i64,
    #[serde(default)]
    domain_list: Vec<FederationDomain>,
}

/// A verified federation list.
#[derive(Debug)]
pub struct FederationList {
    pub version: i64,
    domains: HashMap<String, FederationDomain>,
}

impl FederationList {
    /// The payload of a verified JWS, if it satisfies gematik's schema.
    pub fn parse(payload: &[u8]) -> anyhow::Result<Self> {
        let json: serde_json::Value = serde_json::from_slice(payload).context("the payload is not JSON")?;
        SCHEMA.validate(&json).map_err(|err| anyhow::anyhow!("the payload does not match the FederationList schema: {err}"))?;
        let payload: Payload = serde_json::from_value(json)?;
        let domains = payload.domain_list.into_iter().map(|entry| (entry.domain.to_ascii_lowercase(), entry)).collect();
        Ok(Self { version: payload.version, domains })
    }

    /// The entry of a domain (server names compare case-insensitively).
    pub fn domain(&self, domain: &str) -> Option<&FederationDomain> {
        self.domains.get(&domain.to_ascii_lowercase())
    }

    /// `findByIk` of gematik's TiMessengerInformation API: the insurer's
    /// domain with this IK number.
    pub fn find_by_ik(&self, ik: &str) -> Option<&FederationDomain> {
        self.domains.values().find(|entry| entry.ik.iter().any(|listed| listed == ik))
    }

    /// The domains of an organisation (by its telematik id).
    pub fn find_by_telematik_id<'a>(&'a self, telematik_id: &'a str) -> impl Iterator<Item = &'a FederationDomain> {
        self.domains.values().filter(move |entry| entry.telematik_id == telematik_id)
    }
}

/// The list in use and when it was last confirmed current.
#[derive(Debug)]
pub struct LoadedList {
    pub list: Arc<FederationList>,
    /// The last successful refresh (a 204 counts), ms since the epoch; for
    /// a file, when it was last replaced.
    pub refreshed_ms: i64,
}

/// What the list says about a remote domain at a given time.
#[derive(Debug, PartialEq, Eq)]
pub enum Standing {
    Federated { is_insurance: bool },
    NotListed,
    /// No verified list yet.
    NoList,
    /// The list is older than the configured maximum (72 h by default).
    Stale,
}

/// Where the list comes from.
enum Source {
    Vzd { url: String, access_token: Option<String>, http: reqwest::Client },
    File(PathBuf),
}

/// The worker's copy of the list, and how to refresh it.
pub struct FederationLists {
    source: Option<Source>,
    anchors: Option<TrustAnchors>,
    max_age_ms: i64,
    refresh_interval: Duration,
    current: RwLock<Option<Arc<LoadedList>>>,
    /// Serializes refreshes; holds when the last refresh on a miss began.
    refreshing: tokio::sync::Mutex<i64>,
    metrics: FederationListMetrics,
}

impl FederationLists {
    pub fn new(config: &FederationListConfig, metrics: FederationListMetrics) -> anyhow::Result<Self> {
        let source = match (&config.url, &config.file) {
            (Some(_), Some(_)) => anyhow::bail!("tim.federation_list: set url or file, not both"),
            (Some(url), None) => {
                let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).timeout(FETCH_TIMEOUT).build()?;
                Some(Source::Vzd { url: url.clone(), access_token: config.access_token.clone(), http })
            }
            (None, Some(path)) => Some(Source::File(path.clone())),
            (None, None) => None,
        };
        let anchors = match &config.trust_anchor {
            Some(path) => Some(TrustAnchors::load(path)?),
            None if source.is_some() => anyhow::bail!("tim.federation_list: a source needs trust_anchor (the TI CA certificate)"),
            None => None,
        };
        Ok(Self {
            source,
            anchors,
            max_age_ms: i64::try_from(config.max_age_hours.saturating_mul(3_600_000)).unwrap_or(i64::MAX),
            refresh_interval: Duration::from_secs(config.refresh_interval_secs.max(1)),
            current: RwLock::new(None),
            refreshing: tokio::sync::Mutex::new(i64::MIN),
            metrics,
        })
    }

    /// The list in memory, if any.
    pub fn current(&self) -> Option<Arc<LoadedList>> {
        self.current.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    fn replace(&self, loaded: LoadedList) {
        self.metrics.loaded(loaded.list.version, loaded.refreshed_ms);
        *self.current.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Arc::new(loaded));
    }

    /// What the list in memory says about `domain` at `now_ms` (the clock
    /// is a parameter so the 72 h rule can be tested).
    pub fn standing(&self, domain: &str, now_ms: i64) -> Standing {
        let Some(loaded) = self.current() else { return Standing::NoList };
        if now_ms.saturating_sub(loaded.refreshed_ms) > self.max_age_ms {
            return Standing::Stale;
        }
        match loaded.list.domain(domain) {
            Some(entry) => Standing::Federated { is_insurance: entry.is_insurance },
            None => Standing::NotListed,
        }
    }

    /// Whether `domain` is a TI-M domain now.
    pub fn is_federated(&self, domain: &str) -> bool {
        matches!(self.standing(domain, storage::now_ms()), Standing::Federated { .. })
    }

    /// Whether `domain` is a health insurer's (`isInsurance`) now; unknown
    /// domains are not.
    pub fn is_insurance(&self, domain: &str) -> bool {
        self.standing(domain, storage::now_ms()) == Standing::Federated { is_insurance: true }
    }

    /// [`standing`](Self::standing), refreshing first when the domain is
    /// missing or the list stale (at most once a minute per worker).
    pub async fn standing_refreshed(&self, db: &Db, domain: &str) -> Standing {
        let standing = self.standing(domain, storage::now_ms());
        if matches!(standing, Standing::Federated { .. }) || self.source.is_none() {
            return standing;
        }
        {
            let mut last = self.refreshing.lock().await;
            let now = storage::now_ms();
            if now.saturating_sub(*last) >= MISS_REFRESH_PAUSE_MS {
                *last = now;
                if let Err(err) = self.refresh_locked(db, true).await {
                    tracing::warn!(error = %format!("{err:#}"), "refreshing the federation list on a miss failed");
                }
            }
        }
        self.standing(domain, storage::now_ms())
    }

    /// Loads the last good list from the database (at start: no network).
    pub async fn load_stored(&self, db: &Db) -> anyhow::Result<()> {
        let Some(anchors) = &self.anchors else { return Ok(()) };
        if let Some(row) = stored::load(db.global()).await? {
            let list = FederationList::parse(&verify::verify(&row.jws, anchors)?)?;
            self.replace(LoadedList { list: Arc::new(list), refreshed_ms: row.refreshed_ts });
        }
        Ok(())
    }

    /// Brings the list up to date: a newer one another worker stored, else
    /// (when due, or `force`) one from the source.
    pub async fn refresh(&self, db: &Db, force: bool) -> anyhow::Result<()> {
        let _serialized = self.refreshing.lock().await;
        self.refresh_locked(db, force).await
    }

    async fn refresh_locked(&self, db: &Db, force: bool) -> anyhow::Result<()> {
        let (Some(source), Some(anchors)) = (&self.source, &self.anchors) else { return Ok(()) };
        let result = match source {
            Source::Vzd { url, access_token, http } => self.refresh_from_vzd(db, anchors, url, access_token.as_deref(), http, force).await,
            Source::File(path) => self.refresh_from_file(anchors, path),
        };
        self.metrics.refreshed(result.is_ok());
        result
    }

    async fn refresh_from_vzd(
        &self,
        db: &Db,
        anchors: &TrustAnchors,
        url: &str,
        access_token: Option<&str>,
        http: &reqwest::Client,
        force: bool,
    ) -> anyhow::Result<()> {
        let held = self.current();
        if let Some(row) = stored::load(db.global()).await?
            && held.as_ref().is_none_or(|held| row.refreshed_ts > held.refreshed_ms)
        {
            let list = FederationList::parse(&verify::verify(&row.jws, anchors)?)?;
            self.replace(LoadedList { list: Arc::new(list), refreshed_ms: row.refreshed_ts });
        }
        let held = self.current();
        let interval_ms = i64::try_from(self.refresh_interval.as_millis()).unwrap_or(i64::MAX);
        if !force && held.as_ref().is_some_and(|held| storage::now_ms().saturating_sub(held.refreshed_ms) < interval_ms) {
            return Ok(());
        }

        let mut url = url::Url::parse(url).context("tim.federation_list.url")?;
        if let Some(held) = &held {
            url.query_pairs_mut().append_pair("version", &held.list.version.to_string());
        }
        let mut request = http.get(url);
        if let Some(token) = access_token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.context("fetching the federation list")?;
        let now = storage::now_ms();
        match response.status() {
            reqwest::StatusCode::NO_CONTENT => {
                let held = held.context("the VZD answered 204 to a request without a version")?;
                stored::confirm(db.global(), held.list.version, now).await?;
                self.replace(LoadedList { list: held.list.clone(), refreshed_ms: now });
                tracing::debug!(version = held.list.version, "federation list unchanged");
            }
            reqwest::StatusCode::OK => {
                let jws = response.text().await.context("reading the federation list")?;
                let list = FederationList::parse(&verify::verify(&jws, anchors)?)?;
                if let Some(held) = held.as_ref().filter(|held| list.version < held.list.version) {
                    anyhow::bail!("the VZD sent version {} older than the held {}", list.version, held.list.version);
                }
                stored::store(db.global(), list.version, &jws, now).await?;
                tracing::info!(version = list.version, domains = list.domains.len(), "federation list updated");
                self.replace(LoadedList { list: Arc::new(list), refreshed_ms: now });
            }
            status => anyhow::bail!("the VZD answered {status} to the federation list request"),
        }
        Ok(())
    }

    /// A file is as current as its last replacement (its modification time).
    fn refresh_from_file(&self, anchors: &TrustAnchors, path: &Path) -> anyhow::Result<()> {
        let modified = std::fs::metadata(path).and_then(|meta| meta.modified()).with_context(|| format!("reading {}", path.display()))?;
        let refreshed_ms = modified.duration_since(UNIX_EPOCH).map(|age| i64::try_from(age.as_millis()).unwrap_or(i64::MAX)).unwrap_or(0);
        if self.current().is_some_and(|held| held.refreshed_ms == refreshed_ms) {
            return Ok(());
        }
        let jws = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let list = FederationList::parse(&verify::verify(&jws, anchors)?)?;
        tracing::info!(version = list.version, domains = list.domains.len(), file = %path.display(), "federation list loaded");
        self.replace(LoadedList { list: Arc::new(list), refreshed_ms });
        Ok(())
    }
}

/// The invite rules that need the list (`TI-MESSENGER.md` "Federation
/// list": only listed domains, not with a list older than 72 h; A_25705:
/// insured persons do not invite insured persons, a remote one being a user
/// of an `isInsurance` domain). Invitees on this
/// server are always allowed here (their own rules are in `permissions`).
pub async fn check_remote_invitee(server: &Homeserver, inviter_kind: AccountKind, domain: &str) -> ApiResult<()> {
    if domain.eq_ignore_ascii_case(server.server_name().as_str()) {
        return Ok(());
    }
    let standing = server.federation_list.standing_refreshed(&server.db, domain).await;
    let refusal = match standing {
        Standing::Federated { is_insurance } if is_insurance && inviter_kind.is_insured() => "insured_to_insured",
        Standing::Federated { .. } => return Ok(()),
        Standing::NotListed => "not_listed",
        Standing::NoList => "no_list",
        Standing::Stale => "stale_list",
    };
    server.metrics.tim.federation_list.refused(refusal);
    Err(ApiError::forbidden(match standing {
        Standing::Federated { .. } => "Insured persons cannot invite each other".to_owned(),
        Standing::NotListed => format!("{domain} is not on the TI-Messenger federation list"),
        Standing::NoList => "No verified TI-Messenger federation list is available; invites to other servers are refused".to_owned(),
        Standing::Stale => {
            tracing::warn!(%domain, "remote invite refused: the federation list was not refreshed within its maximum age");
            "The TI-Messenger federation list is out of date; invites to other servers are suspended until it is refreshed".to_owned()
        }
    }))
}

/// Every worker's refresh loop: at start, then every `refresh_interval`.
pub struct FederationListRefresher {
    task: JoinHandle<()>,
}

impl FederationListRefresher {
    pub fn start(server: &Homeserver) -> Option<Self> {
        server.federation_list.source.as_ref()?;
        let server = server.clone();
        let task = tokio::spawn(async move {
            loop {
                if let Err(err) = server.federation_list.refresh(&server.db, false).await {
                    tracing::warn!(error = %format!("{err:#}"), "refreshing the federation list failed");
                }
                tokio::time::sleep(server.federation_list.refresh_interval).await;
            }
        });
        Some(Self { task })
    }

    /// Stops the loop, abandoning a fetch in flight (a hanging VZD must not
    /// hold up shutdown; the stored list is replaced in one statement).
    pub async fn stop(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}
