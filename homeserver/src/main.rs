//! `homeserver`: the command line of the TI-Messenger homeserver.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use homeserver::{
    Config, Homeserver,
    client_api::admin,
    signing_key,
    storage::{Db, shard_map::LOGICAL_SHARDS},
};

#[derive(Parser)]
#[command(version, about = "TI-Messenger homeserver (Matrix Client-Server API on PostgreSQL)")]
struct Cli {
    /// The TOML config file.
    #[arg(long, global = true, env = "HOMESERVER_CONFIG", default_value = "homeserver.toml")]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the Client-Server API (applies migrations first).
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Write a development config and a signing key beside it.
    GenerateConfig {
        #[arg(long, default_value = "localhost")]
        server_name: String,
        #[arg(long, env = "DATABASE_URL", default_value = "postgres://postgres@127.0.0.1:5432/homeserver")]
        database_url: String,
        /// Where to write the config.
        #[arg(long, default_value = "homeserver.toml")]
        output: PathBuf,
    },
    /// Create the signing key named in the config, if it does not exist.
    GenerateKeys,
    /// Create a staff account (TI-M: the insurer's staff and functional
    /// accounts; insured persons' accounts come from the IdP login).
    CreateUser {
        localpart: String,
        #[arg(long)]
        password: String,
        /// Make the account a server admin.
        #[arg(long)]
        admin: bool,
    },
    /// List the staff accounts, deactivated ones included.
    ListStaff,
    /// Deactivate a staff account: it leaves its rooms and its sessions end.
    DeactivateStaff {
        /// The full user id (`@name:server`).
        user_id: String,
    },
    /// Create a registration token for `POST /register`.
    AddRegistrationToken {
        token: String,
        /// How many registrations it allows (unlimited when absent).
        #[arg(long)]
        uses: Option<i32>,
    },
    /// Show which database holds each logical shard.
    ShardMap,
    /// Move logical shards to another database while the server runs (for
    /// a database just added to `[database] shards`): copy, fence, catch
    /// up, verify, switch the map, delete the old copy. One at a time.
    MoveShard {
        /// Logical shards (0 to 255), as `shard-map` lists them.
        #[arg(required = true)]
        logical: Vec<usize>,
        /// The database's index: 0 for `[database] url`, 1 for the first
        /// of `shards`, …
        #[arg(long)]
        to: usize,
    },
    /// TI-M retention (`[tim.retention]`): purge inactive and orphaned
    /// rooms, take local users out of insured-only rooms.
    Retention {
        #[command(subcommand)]
        command: RetentionCommand,
    },
}

#[derive(Subcommand)]
enum RetentionCommand {
    /// One run over every database now (a database a worker is running it
    /// on is skipped).
    Run {
        /// Only list the rooms the rules apply to; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn,tower_http=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if std::env::var("LOG_FORMAT").as_deref() == Ok("json") {
        builder.json().init();
    } else {
        builder.init();
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    init_logging();
    let cli = Cli::parse();
    match cli.command {
        Command::GenerateConfig { server_name, database_url, output } => generate_config(&server_name, &database_url, &output),
        Command::GenerateKeys => {
            let config = Config::load(&cli.config)?;
            ensure_signing_key(&config.signing_key_path)
        }
        Command::Migrate => {
            let config = Config::load(&cli.config)?;
            Db::open(&config.database).await?;
            tracing::info!("migrations applied");
            Ok(())
        }
        Command::Serve => serve(Config::load(&cli.config)?).await,
        Command::CreateUser { localpart, password, admin: is_admin } => {
            let server = Homeserver::start(Config::load(&cli.config)?).await?;
            let user_id = admin::create_user(&server, &localpart, &password, is_admin, None).await.map_err(|err| anyhow::anyhow!("{err:?}"))?;
            println!("{user_id}");
            Ok(())
        }
        Command::ListStaff => {
            let server = Homeserver::start(Config::load(&cli.config)?).await?;
            for account in admin::staff_accounts(&server).await.map_err(|err| anyhow::anyhow!("{err:?}"))? {
                let state = if account.deactivated { "deactivated" } else { "active" };
                let role = if account.is_admin { " admin" } else { "" };
                println!("{}\t{state}{role}\t{}", account.user_id, account.displayname.unwrap_or_default());
            }
            Ok(())
        }
        Command::DeactivateStaff { user_id } => {
            let server = Homeserver::start(Config::load(&cli.config)?).await?;
            let user_id = ruma::UserId::parse(&user_id).with_context(|| format!("{user_id:?} is not a user id"))?;
            admin::deactivate_staff(&server, &user_id).await.map_err(|err| anyhow::anyhow!("{err:?}"))?;
            println!("{user_id} deactivated");
            Ok(())
        }
        Command::AddRegistrationToken { token, uses } => {
            let server = Homeserver::start(Config::load(&cli.config)?).await?;
            homeserver::storage::uiaa::add_registration_token(server.db.global(), &token, uses).await?;
            Ok(())
        }
        Command::ShardMap => {
            let db = Db::open(&Config::load(&cli.config)?.database).await?;
            println!("map epoch {}", db.map_epoch());
            for database in 0..db.shard_count() {
                let logical: Vec<String> = (0..LOGICAL_SHARDS).filter(|l| db.database_of_logical(*l) == database).map(|l| l.to_string()).collect();
                println!("database {database}: {} logical shards: {}", logical.len(), logical.join(" "));
            }
            Ok(())
        }
        Command::MoveShard { logical, to } => {
            let server = Homeserver::start(Config::load(&cli.config)?).await?;
            for logical in logical {
                let moved = homeserver::rebalance::move_shard(&server, logical, to).await?;
                println!(
                    "logical shard {} moved from database {} to {}: {} rows, writes paused {} ms, map epoch {}",
                    moved.logical,
                    moved.from,
                    moved.to,
                    moved.rows,
                    moved.frozen.as_millis(),
                    moved.epoch
                );
            }
            Ok(())
        }
        Command::Retention { command: RetentionCommand::Run { dry_run } } => {
            let server = Homeserver::start(Config::load(&cli.config)?).await?;
            let reports = homeserver::tim::retention::run_all(&server, dry_run, homeserver::storage::now_ms()).await?;
            for (database, report) in reports.iter().enumerate() {
                let Some(report) = report else {
                    println!("database {database}: a worker is running retention now; skipped");
                    continue;
                };
                let verb = if dry_run { "would purge" } else { "purged" };
                println!(
                    "database {database}: {verb} {} rooms, {} members removed, {} events deleted, {} skipped",
                    report.rooms.len(),
                    report.members_removed,
                    report.events_deleted,
                    report.skipped.len()
                );
                for (room_id, rule) in &report.rooms {
                    println!("  {room_id}\t{rule:?}");
                }
            }
            Ok(())
        }
    }
}

fn generate_config(server_name: &str, database_url: &str, output: &Path) -> anyhow::Result<()> {
    if output.exists() {
        anyhow::bail!("{} exists; not overwriting it", output.display());
    }
    let key_name = format!("{server_name}.signing.key");
    let key_path = output.with_file_name(&key_name);
    let config = Config::development(server_name, database_url, key_name.into());
    if let Some(dir) = output.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(output, toml::to_string_pretty(&config)?).with_context(|| format!("writing {}", output.display()))?;
    ensure_signing_key(&key_path)?;
    println!("wrote {} and {}", output.display(), key_path.display());
    Ok(())
}

fn ensure_signing_key(path: &Path) -> anyhow::Result<()> {
    if path.exists() {
        signing_key::load(path)?;
        return Ok(());
    }
    signing_key::generate(path)
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let listen = config.listen;
    let server = Homeserver::start(config).await?;
    let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("binding {listen}"))?;
    tracing::info!(%listen, server_name = %server.server_name(), "serving the Client-Server API");
    server.serve(listener, shutdown_signal()).await
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        if let Ok(mut signal) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            signal.recv().await;
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! { () = ctrl_c => {}, () = terminate => {} }
    tracing::info!("shutting down: finishing requests in flight");
}
