//! A real OpenID Connect provider for the insured-login tests: panva's
//! `oidc-provider` on Node.js, configured by `tests/oidc-provider/provider.mjs`
//! (a client for the homeserver, the gematik KVNR and display name claims,
//! PAR, a login form a test can post). Its packages are installed with
//! `npm ci` on first use (Node.js 20.19+ and npm: `apt-get install nodejs
//! npm`, which `scripts/services` does).
//!
//! [`Browser`] plays the person's browser: it keeps cookies and is walked
//! through the redirects one by one, so a test can see every hop.

use std::{path::{Path, PathBuf}, process::Stdio, time::Duration};

use homeserver::config::OidcProviderConfig;
use tokio::{
    io::{AsyncBufReadExt as _, BufReader},
    process::{Child, Command},
};
use url::Url;

/// The `idp_id` of the provider in the homeserver's config.
pub const IDP_ID: &str = "insurer";
const CLIENT_ID: &str = "homeserver";
const CLIENT_SECRET: &str = "homeserver-client-secret";

/// The running provider; the Node.js process ends when this is dropped.
pub struct OidcProvider {
    issuer: String,
    _node: Child,
}

impl OidcProvider {
    pub async fn start() -> Self {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oidc-provider");
        install(&dir);
        let mut node = Command::new("node")
            .arg("provider.mjs")
            .current_dir(&dir)
            .env("OIDC_CLIENT_ID", CLIENT_ID)
            .env("OIDC_CLIENT_SECRET", CLIENT_SECRET)
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("starting node (apt-get install nodejs npm)");
        let mut lines = BufReader::new(node.stdout.take().expect("piped stdout")).lines();
        let issuer = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = lines.next_line().await.expect("reading the provider's output") {
                if let Some(issuer) = line.strip_prefix("listening ") {
                    return issuer.to_owned();
                }
            }
            panic!("the OIDC provider exited before listening");
        })
        .await
        .expect("the OIDC provider did not start within 30 s");
        // Keep reading, so the provider never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Self { issuer, _node: node }
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The homeserver's `[[oidc.providers]]` entry for this provider (the
    /// default scopes and claim names: gematik's).
    pub fn config(&self) -> OidcProviderConfig {
        toml::from_str(&format!(
            "id = {IDP_ID:?}\nname = \"Insurer IdP\"\nissuer = {:?}\nclient_id = {CLIENT_ID:?}\nclient_secret = {CLIENT_SECRET:?}",
            self.issuer
        ))
        .expect("a provider config")
    }
}

/// `npm ci` into `dir/node_modules` unless it is there. Tests run in
/// parallel processes, so each installs into a directory of its own and
/// moves the result into place; the first to arrive wins, the others'
/// rename fails and they use the winner's.
fn install(dir: &Path) {
    if dir.join("node_modules").exists() {
        return;
    }
    let staging: PathBuf = dir.join(format!(".install-{}", std::process::id()));
    std::fs::create_dir_all(&staging).expect("creating the npm staging directory");
    for file in ["package.json", "package-lock.json"] {
        std::fs::copy(dir.join(file), staging.join(file)).expect("copying the npm manifest");
    }
    let status = std::process::Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
        .current_dir(&staging)
        .status()
        .expect("running npm (apt-get install nodejs npm)");
    assert!(status.success(), "npm ci in {} failed", staging.display());
    let _ = std::fs::rename(staging.join("node_modules"), dir.join("node_modules"));
    let _ = std::fs::remove_dir_all(&staging);
}

/// A browser: keeps cookies, follows no redirects on its own.
pub struct Browser(reqwest::Client);

impl Browser {
    pub fn new() -> Self {
        let client = reqwest::Client::builder().cookie_store(true).redirect(reqwest::redirect::Policy::none()).build().expect("an HTTP client");
        Self(client)
    }

    /// GET `url`; the status and, for redirects, where to.
    pub async fn get(&self, url: &Url) -> (u16, Option<Url>) {
        let response = self.0.get(url.clone()).send().await.unwrap_or_else(|err| panic!("GET {url}: {err}"));
        location(url, response).await
    }

    /// GET `url`, which must redirect; where to.
    pub async fn redirect(&self, url: &Url) -> Url {
        match self.get(url).await {
            (_, Some(next)) => next,
            (status, None) => panic!("GET {url}: {status}, not a redirect"),
        }
    }

    /// Logs in at the provider's login page `interaction` as the person
    /// with `kvnr` and `name`; returns where the provider sends the browser.
    pub async fn log_in_at_idp(&self, interaction: &Url, kvnr: &str, name: &str) -> Url {
        let form = url::form_urlencoded::Serializer::new(String::new()).append_pair("kvnr", kvnr).append_pair("name", name).finish();
        let url = Url::parse(&format!("{interaction}/login")).expect("the login form's URL");
        let response = self
            .0
            .post(url.clone())
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form)
            .send()
            .await
            .unwrap_or_else(|err| panic!("POST {url}: {err}"));
        match location(&url, response).await {
            (_, Some(next)) => next,
            (status, None) => panic!("POST {url}: {status}, not a redirect"),
        }
    }
}

/// The status and the redirect target (relative ones resolved against
/// `url`); the body of anything but a redirect is printed for the failure.
async fn location(url: &Url, response: reqwest::Response) -> (u16, Option<Url>) {
    let status = response.status().as_u16();
    let next = response.headers().get("location").and_then(|value| value.to_str().ok()).map(|to| url.join(to).expect("a redirect URL"));
    if next.is_none() {
        eprintln!("{url}: {status} {}", response.text().await.unwrap_or_default());
    }
    (status, next)
}
