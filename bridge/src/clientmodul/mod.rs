//! A **test** KIM Clientmodul (`kim-bridge test-clientmodul`): what sits
//! between a client system (our bridge) and the KIM provider's mail server,
//! so the bridge's tests run the whole chain with real S/MIME. Real
//! deployments use a certified Clientmodul whose keys live on the SMC-B (or
//! an HSM) behind a Konnektor; this one holds software keys in files and
//! must never carry real mail.
//!
//! - [`smtp_server`]: SMTP towards the client system (TLS, AUTH with the `#`
//!   username checked against the MTA, KIM's reply codes), then [`send`]:
//!   sign and encrypt (`crate::smime`), relay to the MTA with the bridge's
//!   own SMTP client.
//! - [`pop3_server`]: POP3 towards the client system, each session backed by
//!   one at the MTA (the bridge's POP3 client); [`receive`] decrypts and
//!   verifies on `RETR`/`TOP` and adds the `X-KIM-*` results and trailers,
//!   or hands out an error mail. UIDLs are the MTA's, so they survive restarts.
//! - [`keystore`]: the software keys, the certificate directory, the trust anchors.
//!
//! The servers are hand-written: no Rust crate offers an SMTP or POP3
//! server with KIM's username format, reply codes and per-mail crypto.

pub mod config;
pub mod keystore;
mod pop3_server;
pub mod receive;
mod send;
mod smtp_server;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use self::config::ClientmodulConfig;
use self::keystore::Keystore;
use crate::kim::tls::Endpoint;
use crate::kim::username::ClientmodulLogin;

/// How long a client may stay silent, and the TLS handshake may take.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(300);
/// Connections served at once (per protocol); more wait for a slot.
const MAX_CONNECTIONS: usize = 64;

/// What both servers share.
struct Shared {
    config: ClientmodulConfig,
    keystore: Keystore,
}

impl Shared {
    /// The MTA a username names, reached as configured.
    fn mta(&self, login: &ClientmodulLogin) -> Endpoint {
        Endpoint {
            host: login.mta_host.clone(),
            port: login.mta_port,
            security: self.config.mta.security,
            trust: self.config.mta.trust.clone(),
            tls_server_name: None,
            connect_timeout_secs: 10,
            io_timeout_secs: 60,
        }
    }
}

/// The Clientmodul running in this process (the binary, or a test).
pub struct RunningClientmodul {
    pub smtp_address: SocketAddr,
    pub pop3_address: SocketAddr,
    tasks: JoinSet<()>,
}

impl RunningClientmodul {
    /// Loads the keys, binds both listeners and starts serving.
    pub async fn start(config: ClientmodulConfig) -> anyhow::Result<Self> {
        let acceptor = tls_acceptor(&config)?;
        let keystore = Keystore::load(&config)?;
        let smtp = TcpListener::bind(config.smtp_listen)
            .await
            .with_context(|| format!("binding {}", config.smtp_listen))?;
        let pop3 = TcpListener::bind(config.pop3_listen)
            .await
            .with_context(|| format!("binding {}", config.pop3_listen))?;
        let shared = Arc::new(Shared { config, keystore });
        let mut tasks = JoinSet::new();
        let (smtp_address, pop3_address) = (smtp.local_addr()?, pop3.local_addr()?);
        tasks.spawn(accept(
            smtp,
            acceptor.clone(),
            shared.clone(),
            Protocol::Smtp,
        ));
        tasks.spawn(accept(pop3, acceptor, shared, Protocol::Pop3));
        tracing::info!(%smtp_address, %pop3_address, "test KIM Clientmodul running");
        Ok(Self {
            smtp_address,
            pop3_address,
            tasks,
        })
    }

    /// Stops serving (connections in progress are cut).
    pub async fn stop(mut self) {
        self.tasks.shutdown().await;
    }
}

/// Runs until the process is stopped.
pub async fn run(config: ClientmodulConfig) -> anyhow::Result<()> {
    let running = RunningClientmodul::start(config).await?;
    tokio::signal::ctrl_c().await?;
    running.stop().await;
    Ok(())
}

#[derive(Clone, Copy)]
enum Protocol {
    Smtp,
    Pop3,
}

async fn accept(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    shared: Arc<Shared>,
    protocol: Protocol,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut connections = JoinSet::new();
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let (tcp, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (acceptor, shared) = (acceptor.clone(), shared.clone());
        connections.spawn(async move {
            let _slot = slot;
            let tls = match tokio::time::timeout(CLIENT_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(error)) => return tracing::debug!(%peer, %error, "TLS handshake failed"),
                Err(_) => return tracing::debug!(%peer, "TLS handshake timed out"),
            };
            match protocol {
                Protocol::Smtp => smtp_server::serve(&shared, tls).await,
                Protocol::Pop3 => pop3_server::serve(&shared, tls).await,
            }
        });
        // Reap finished connections so the set does not grow.
        while connections.try_join_next().is_some() {}
    }
}

/// The username and password of a SASL PLAIN token (RFC 4616:
/// base64 of `authzid NUL authcid NUL password`).
fn sasl_plain(token: &str) -> Option<(String, String)> {
    let plain = BASE64.decode(token.trim()).ok()?;
    let mut fields = plain.split(|&b| b == 0);
    let (_authzid, user, password) = (fields.next()?, fields.next()?, fields.next()?);
    if fields.next().is_some() {
        return None;
    }
    Some((
        String::from_utf8(user.to_vec()).ok()?,
        String::from_utf8(password.to_vec()).ok()?,
    ))
}

/// rustls with the Clientmodul's own certificate (implicit TLS on both ports).
fn tls_acceptor(config: &ClientmodulConfig) -> anyhow::Result<TlsAcceptor> {
    let certificates = CertificateDer::pem_file_iter(&config.tls_certificate)
        .and_then(|certificates| certificates.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("reading {}", config.tls_certificate.display()))?;
    let key = PrivateKeyDer::from_pem_file(&config.tls_key)
        .with_context(|| format!("reading {}", config.tls_key.display()))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certificates, key)
        .context("the Clientmodul's TLS certificate and key")?;
    Ok(TlsAcceptor::from(Arc::new(server)))
}
