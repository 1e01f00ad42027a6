//! A real homeserver (the homeserver's own test harness, in-process) with
//! the bridge registered through a registration file written by
//! `generate-registration`, and the bridge running in-process on a database
//! of its own.

#![allow(dead_code)]

#[rustfmt::skip]
#[path = "../../../homeserver/tests/common/mod.rs"]
pub mod common;
pub mod clientmodul;
pub mod mail_server;

use std::{path::PathBuf, time::Duration};

use common::{TestServer, database::TestDatabase};
use kim_bridge::{
    bridge::RunningBridge,
    config::{Config, example},
    registration,
};

pub const SOON: Duration = Duration::from_secs(30);

/// The homeserver, the bridge's database and config, and the bridge while
/// it runs.
pub struct Deployment {
    pub homeserver: TestServer,
    pub config: Config,
    pub bridge: Option<RunningBridge>,
    _bridge_db: TestDatabase,
    _dir: tempfile::TempDir,
}

impl Deployment {
    /// Homeserver and bridge, the bridge's config adjusted by `configure`
    /// (after the test defaults: `localhost`, a free port, its own database).
    pub async fn start(configure: impl FnOnce(&mut toml_edit::DocumentMut)) -> Self {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let bridge_db = TestDatabase::create().await;
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let mut document: toml_edit::DocumentMut = example().parse().expect("the example is TOML");
        document["homeserver"]["server_name"] = toml_edit::value("localhost");
        document["appservice"]["listen"] = toml_edit::value(format!("127.0.0.1:{port}"));
        document["appservice"]["url"] = toml_edit::value(format!("http://127.0.0.1:{port}"));
        document["database"]["url"] = toml_edit::value(bridge_db.url());
        document["bridge"]["poll_interval_secs"] = toml_edit::value(1);
        // No Clientmodul unless the test configures one: loopback, nothing listening.
        for protocol in ["smtp", "pop3"] {
            let endpoint = &mut document["mailbox"][protocol];
            endpoint["host"] = toml_edit::value("127.0.0.1");
            endpoint["port"] = toml_edit::value(i64::from(free_port()));
            endpoint["security"] = toml_edit::value("plain_loopback_only");
            if let Some(table) = endpoint.as_table_like_mut() {
                table.remove("trust");
            }
        }
        configure(&mut document);
        let config_path = dir.path().join("config.toml");
        let registration_path: PathBuf = dir.path().join("kim-registration.yaml");
        std::fs::write(&config_path, document.to_string()).expect("writing the config");
        registration::generate(&config_path, &registration_path).expect("generate-registration");

        let homeserver = TestServer::start_with(|config| {
            config.appservices.registration_files = vec![registration_path.clone()];
        })
        .await;
        let mut config = Config::load(&config_path).expect("the generated config loads");
        config.homeserver.url = homeserver.base_url();
        let bridge = RunningBridge::start(config.clone())
            .await
            .expect("starting the bridge");
        Self {
            homeserver,
            config,
            bridge: Some(bridge),
            _bridge_db: bridge_db,
            _dir: dir,
        }
    }

    /// Homeserver and bridge, the bridge's mailbox `address` behind the
    /// test Clientmodul (which holds its keys).
    pub async fn start_behind(
        clientmodul: &clientmodul::TestClientmodul,
        address: &kim_bridge::kim::address::KimAddress,
    ) -> Self {
        Self::start(|document| clientmodul.configure_bridge(document, address)).await
    }

    pub fn bridge(&self) -> &kim_bridge::bridge::Bridge {
        &self.bridge.as_ref().expect("the bridge runs").bridge
    }

    pub fn bridge_url(&self) -> String {
        format!(
            "http://{}",
            self.bridge.as_ref().expect("the bridge runs").address
        )
    }

    /// Stops the bridge as a crash would (tasks aborted).
    pub async fn stop_bridge(&mut self) {
        if let Some(bridge) = self.bridge.take() {
            bridge.stop().await;
        }
    }

    pub async fn start_bridge(&mut self) {
        assert!(self.bridge.is_none(), "the bridge runs already");
        self.bridge = Some(
            RunningBridge::start(self.config.clone())
                .await
                .expect("restarting the bridge"),
        );
    }

    /// The ghost of a KIM address.
    pub fn ghost(&self, address: &str) -> String {
        self.bridge()
            .ghost_of(&address.parse().expect("a KIM address"))
            .to_string()
    }
}

/// The newest events of `room_id`, newest first.
pub async fn newest_events(api: &common::api::Api, room_id: &str) -> Vec<serde_json::Value> {
    api.messages(room_id, "dir=b&limit=50").await.ok()["chunk"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// The newest events of `room_id` from `sender` whose body contains `text`.
pub async fn events_with(
    api: &common::api::Api,
    room_id: &str,
    sender: &str,
    text: &str,
) -> Vec<serde_json::Value> {
    newest_events(api, room_id)
        .await
        .into_iter()
        .filter(|event| {
            event["sender"] == sender
                && event["content"]["body"]
                    .as_str()
                    .is_some_and(|body| body.contains(text))
        })
        .collect()
}

/// Polls `check` until it returns `Some`, failing the test after `within`.
pub async fn eventually<T, F: std::future::Future<Output = Option<T>>>(
    within: Duration,
    what: &str,
    mut check: impl FnMut() -> F,
) -> T {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}
