//! The running bridge: its config, database, homeserver client and status,
//! shared by the HTTP server and the workers, and how they are started and
//! stopped.

use std::{net::SocketAddr, sync::Arc};

use anyhow::Context as _;
use ruma::{OwnedUserId, UserId};
use sqlx::PgPool;
use tokio::{sync::Notify, task::JoinSet};

use crate::{
    appservice, config::Config, crypto::BridgeCrypto, dispatch, inbound, kim::address::KimAddress,
    kim::smtp::SmtpSender, matrix::client::HomeserverClient, outbound, portal::ghost_id,
    status::Status, store,
};

/// What every part of the bridge shares; cheap to clone.
#[derive(Clone)]
pub struct Bridge {
    pub config: Arc<Config>,
    pub db: PgPool,
    pub homeserver: HomeserverClient,
    /// The devices of the bot and the ghosts in encrypted rooms.
    pub crypto: Arc<BridgeCrypto>,
    pub status: Arc<Status>,
    pub bot: OwnedUserId,
    dispatcher: Arc<Notify>,
    outbound: Arc<Notify>,
}

impl Bridge {
    /// Connects to the database (migrating it), prepares the client and
    /// unlocks the crypto store.
    pub async fn connect(config: Config) -> anyhow::Result<Self> {
        let db = store::connect(&config.database).await?;
        let homeserver =
            HomeserverClient::new(&config.homeserver.url, &config.appservice.as_token)?;
        let crypto = BridgeCrypto::new(db.clone(), homeserver.clone(), &config.store_key()?)
            .await
            .context("opening the crypto store (is crypto.store_key the one it was made with?)")?;
        Ok(Self {
            crypto: Arc::new(crypto),
            bot: config.bot_user_id(),
            config: Arc::new(config),
            db,
            homeserver,
            status: Arc::default(),
            dispatcher: Arc::default(),
            outbound: Arc::default(),
        })
    }

    /// The KIM address a user of ours stands for, if it is a ghost.
    pub fn address_of_ghost(&self, user_id: &UserId) -> Option<KimAddress> {
        ghost_id::address_of_ghost(
            &self.config.appservice.ghost_prefix,
            user_id,
            &self.config.homeserver.server_name,
        )
    }

    pub fn ghost_of(&self, address: &KimAddress) -> OwnedUserId {
        ghost_id::ghost_user_id(
            &self.config.appservice.ghost_prefix,
            address,
            &self.config.homeserver.server_name,
        )
    }

    /// New transactions were taken in.
    pub fn wake_dispatcher(&self) {
        self.dispatcher.notify_one();
    }

    pub async fn dispatcher_woken(&self) {
        self.dispatcher.notified().await;
    }

    /// New mail was queued.
    pub fn wake_outbound(&self) {
        self.outbound.notify_one();
    }

    pub async fn outbound_woken(&self) {
        self.outbound.notified().await;
    }
}

/// A bridge running in this process (the binary, or a test).
pub struct RunningBridge {
    pub bridge: Bridge,
    pub address: SocketAddr,
    tasks: JoinSet<()>,
}

impl RunningBridge {
    /// Binds the listener and starts the server and the workers.
    pub async fn start(config: Config) -> anyhow::Result<Self> {
        let bridge = Bridge::connect(config).await?;
        let listener = tokio::net::TcpListener::bind(bridge.config.appservice.listen)
            .await
            .with_context(|| format!("binding {}", bridge.config.appservice.listen))?;
        let address = listener.local_addr()?;
        let mut tasks = JoinSet::new();
        let router = appservice::router(bridge.clone());
        tasks.spawn(async move {
            if let Err(error) = axum::serve(listener, router).await {
                tracing::error!(%error, "the appservice server stopped");
            }
        });
        let smtp = SmtpSender::new(bridge.config.mailbox.smtp.clone())
            .context("the SMTP configuration")?;
        tasks.spawn(dispatch::run(bridge.clone()));
        tasks.spawn(outbound::worker::run(bridge.clone(), smtp));
        tasks.spawn(inbound::run(bridge.clone()));
        tracing::info!(%address, "KIM bridge running");
        Ok(Self {
            bridge,
            address,
            tasks,
        })
    }

    /// Stops everything at once, as a crash would: what was committed
    /// stays, what was in flight is redone after the next start.
    pub async fn stop(mut self) {
        self.tasks.shutdown().await;
    }

    /// Runs until a task ends (it should not) or Ctrl-C.
    pub async fn wait(mut self) {
        tokio::select! {
            _ = self.tasks.join_next() => tracing::error!("a bridge task ended"),
            _ = tokio::signal::ctrl_c() => tracing::info!("stopping"),
        }
        self.tasks.shutdown().await;
    }
}

/// `kim-bridge run`.
pub async fn run(config: Config) -> anyhow::Result<()> {
    RunningBridge::start(config).await?.wait().await;
    Ok(())
}
