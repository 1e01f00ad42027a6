//! The homeserver side of the Application Service API (see ARCHITECTURE.md,
//! "Application services"): registrations (`registration.rs`), namespaces
//! and exclusive claims (`namespaces.rs`), `as_token` sessions with
//! masquerading (`auth.rs`), what interests an appservice (`interest.rs`),
//! forming transactions from a database's stream (`transactions.rs`), their
//! ordered, retried delivery under a lease (`delivery.rs`), user and alias
//! queries (`queries.rs`) and the HTTP calls to the appservice
//! (`client.rs`).

pub mod auth;
pub mod client;
pub mod delivery;
pub mod interest;
pub mod namespaces;
pub mod queries;
pub mod registration;
pub mod transactions;

use std::{collections::HashMap, path::PathBuf, sync::Arc};

use ruma::ServerName;
use sha2::{Digest as _, Sha256};

pub use self::{client::AppserviceClient, registration::Appservice};

/// The registered appservices of this deployment (every worker loads the
/// same files) and the HTTP client that calls them.
pub struct Appservices {
    all: Vec<Arc<Appservice>>,
    /// By the SHA-256 of the `as_token`: the lookup compares digests, not
    /// secrets.
    by_token: HashMap<[u8; 32], Arc<Appservice>>,
    pub client: AppserviceClient,
}

impl Appservices {
    /// Reads and checks the registration files (see `registration::load`).
    pub fn load(paths: &[PathBuf], server_name: &ServerName) -> anyhow::Result<Self> {
        let all: Vec<Arc<Appservice>> = registration::load(paths, server_name)?.into_iter().map(Arc::new).collect();
        let by_token = all.iter().map(|appservice| (token_digest(&appservice.as_token), appservice.clone())).collect();
        Ok(Self { all, by_token, client: AppserviceClient::new()? })
    }

    /// The appservice whose `as_token` this is.
    pub fn by_token(&self, token: &str) -> Option<&Arc<Appservice>> {
        if self.all.is_empty() {
            return None;
        }
        self.by_token.get(&token_digest(token))
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Appservice>> {
        self.all.iter()
    }

    /// The first appservice (in configuration order) with a URL whose
    /// namespace `covers` an id: the one to ask about it when it is unknown.
    pub fn responsible_for(&self, covers: impl Fn(&Appservice) -> bool) -> Option<&Arc<Appservice>> {
        self.all.iter().find(|appservice| appservice.url.is_some() && covers(appservice))
    }
}

fn token_digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}
