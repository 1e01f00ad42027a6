//! The running homeserver: shared state of one worker and its HTTP server.

use std::{ops::Deref, sync::Arc};

use ruma::{OwnedServerName, ServerName, signatures::Ed25519KeyPair};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{
    appservice::{Appservices, delivery::AppserviceWorker},
    auth::oidc::RelyingParty,
    config::Config,
    media::MediaRepo,
    metrics::Metrics,
    presence::{activity::Activity, sweeper::PresenceSweeper},
    push::{PushWorker, Wakeup},
    rate_limit::RateLimiter,
    redis_link::RedisLink,
    signing_key,
    storage::{Db, users},
    sync::{notifier::Notifier, relay::Relay, typing::Typing},
    tim::{federation_list::{FederationListRefresher, FederationLists}, retention::RetentionWorker},
};

/// Cheap-to-clone handle on everything a request handler needs.
#[derive(Clone)]
pub struct Homeserver(Arc<Inner>);

pub struct Inner {
    pub config: Config,
    pub db: Db,
    pub signing_key: Ed25519KeyPair,
    pub notifier: Notifier,
    pub typing: Typing,
    /// Users' last activity, which decides when they go offline.
    pub activity: Activity,
    pub rate_limiter: RateLimiter,
    /// The link to the Redis the workers share; `None` for a single process.
    pub redis: Option<Arc<RedisLink>>,
    pub media: MediaRepo,
    /// Wakes this worker's push processors after events are committed.
    pub push_wakeup: Wakeup,
    /// This worker's Prometheus metrics, served at `/metrics`.
    pub metrics: Metrics,
    /// The client of the insurer's identity providers (insured persons' login).
    pub oidc: RelyingParty,
    /// The registered application services (the KIM bridge).
    pub appservices: Appservices,
    /// The TI-M federation list: which remote domains may be invited.
    pub federation_list: FederationLists,
    /// Cancelled when `serve` is told to stop: long-polls answer at once
    /// rather than hold the shutdown for their whole timeout.
    pub stopping: CancellationToken,
    server_name: OwnedServerName,
}

impl Deref for Homeserver {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl Inner {
    pub fn server_name(&self) -> &ServerName {
        &self.server_name
    }

    /// Waits for `notified` until `deadline` or until the server stops;
    /// true only when notified. The wait of every long-poll (`/sync`,
    /// sliding sync).
    pub async fn long_poll(&self, deadline: tokio::time::Instant, notified: impl std::future::Future<Output = ()>) -> bool {
        tokio::select! {
            woken = tokio::time::timeout_at(deadline, notified) => woken.is_ok(),
            () = self.stopping.cancelled() => false,
        }
    }
}

impl Homeserver {
    /// Connects to the database, applies migrations and loads the key.
    pub async fn start(config: Config) -> anyhow::Result<Self> {
        let db = Db::open(&config.database).await?;
        let signing_key = signing_key::load(&config.signing_key_path)?;
        let server_name = ServerName::parse(&config.server_name)?;
        let media = MediaRepo::open(&config.media, db.clone(), server_name.clone())?;
        let metrics = Metrics::new(&db);
        let redis = RedisLink::new(&config.redis, config.redis_prefix())?.map(Arc::new);
        let offline_after = std::time::Duration::from_secs(config.presence.offline_after_secs);
        let (notifier, typing, activity) = match &redis {
            Some(link) => (Notifier::shared(), Typing::in_redis(link.clone()), Activity::in_redis(link.clone(), offline_after)),
            None => (Notifier::local(), Typing::in_memory(), Activity::in_memory(offline_after)),
        };
        let rate_limiter = RateLimiter::new(config.rate_limits.clone(), redis.clone(), metrics.rate_limits.clone());
        let appservices = Appservices::load(&config.appservices.registration_files, &server_name)?;
        for appservice in appservices.iter() {
            // The sender acts from the first request on; it has no password.
            users::create(db.user_shard(&appservice.sender), &appservice.sender, None, false, None).await?;
        }
        let federation_list = FederationLists::new(&config.tim.federation_list, metrics.tim.federation_list.clone())?;
        if let Err(err) = federation_list.load_stored(&db).await {
            tracing::warn!(error = %format!("{err:#}"), "the stored federation list does not verify; waiting for a refresh");
        }
        Ok(Self(Arc::new(Inner {
            config,
            db,
            signing_key,
            notifier,
            typing,
            activity,
            rate_limiter,
            redis,
            media,
            push_wakeup: Wakeup::default(),
            metrics,
            oidc: RelyingParty::new()?,
            appservices,
            federation_list,
            stopping: CancellationToken::new(),
            server_name,
        })))
    }

    /// Serves the Client-Server API on `listener` until `shutdown` resolves,
    /// then refuses new connections, answers waiting long-polls at once and
    /// finishes the requests in flight. The push, presence and appservice tasks
    /// and (with Redis) the notifier's relay run alongside and stop after
    /// the last request, the relay publishing what those requests queued.
    pub async fn serve(self, listener: TcpListener, shutdown: impl std::future::Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let push = PushWorker::start(&self);
        let appservices = self.appservices.iter().any(|appservice| appservice.url.is_some()).then(|| AppserviceWorker::start(&self));
        let relay = Relay::start(&self);
        let repair = crate::rooms::user_index::RepairTask::start(&self);
        let presence = PresenceSweeper::start(&self);
        let map_follower = crate::rebalance::follower::MapFollower::start(&self);
        let federation_list = FederationListRefresher::start(&self);
        let retention = self.config.tim.retention.enabled.then(|| RetentionWorker::start(&self));
        let stopping = self.stopping.clone();
        let shutdown = async move {
            shutdown.await;
            stopping.cancel();
        };
        let app = crate::http::router::build(self);
        let served = axum::serve(listener, app.into_make_service_with_connect_info::<std::net::SocketAddr>())
            .with_graceful_shutdown(shutdown)
            .await;
        if let Some(relay) = relay {
            relay.stop().await;
        }
        push.stop().await;
        if let Some(appservices) = appservices {
            appservices.stop().await;
        }
        repair.stop().await;
        presence.stop().await;
        map_follower.stop().await;
        if let Some(federation_list) = federation_list {
            federation_list.stop().await;
        }
        if let Some(retention) = retention {
            retention.stop().await;
        }
        served?;
        Ok(())
    }
}
