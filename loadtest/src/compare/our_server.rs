//! Our homeserver as a target: a config for N databases (loadtest_<name>_<i>)
//! and W workers on consecutive ports sharing Redis, started from the
//! `homeserver` binary built beside `loadtest`.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use tokio::process::Command;

use super::{
    databases,
    server_process::{SHARED_SECRET, ServerProcesses, run_to_end},
};

/// The server name of every side-by-side run.
pub const SERVER_NAME: &str = "loadtest.localhost";

/// How one target of ours is laid out.
pub struct Layout<'a> {
    pub name: &'a str,
    pub workers: usize,
    pub databases: usize,
    pub first_port: u16,
}

/// Creates the databases and writes the config and signing key; returns the
/// config's path.
pub async fn prepare(binary: &Path, dir: &Path, layout: &Layout<'_>, admin_url: &str, redis_url: &str) -> anyhow::Result<PathBuf> {
    let mut urls = Vec::new();
    for index in 0..layout.databases {
        urls.push(databases::recreate(admin_url, &format!("{}{}_{index}", databases::PREFIX, layout.name), false).await?);
    }
    let shards: Vec<String> = urls[1..].iter().map(|u| format!("{u:?}")).collect();
    let redis = if layout.workers > 1 { format!("[redis]\nurl = {redis_url:?}\nprefix = \"loadtest-{}\"\n", layout.name) } else { String::new() };
    let config = format!(
        "server_name = {SERVER_NAME:?}\nlisten = \"127.0.0.1:{}\"\nsigning_key_path = \"signing.key\"\n\n[database]\nurl = {:?}\nshards = [{}]\n\n{redis}\n[registration]\nshared_secret = {SHARED_SECRET:?}\n\n[media]\nstore_path = \"media\"\n\n# Lifted, as Synapse's are: a run measures capacity, not the limits.\n[rate_limits]\nenabled = false\n",
        layout.first_port,
        urls[0],
        shards.join(", ")
    );
    std::fs::create_dir_all(dir)?;
    let config_path = dir.join("homeserver.toml");
    std::fs::write(&config_path, config).with_context(|| format!("writing {}", config_path.display()))?;
    run_to_end(Command::new(binary).arg("--config").arg(&config_path).arg("generate-keys"), "homeserver generate-keys").await?;
    run_to_end(Command::new(binary).arg("--config").arg(&config_path).arg("migrate"), "homeserver migrate").await?;
    Ok(config_path)
}

/// Starts the workers of `layout` with the config at `config_path`.
pub async fn start(binary: &Path, config_path: &Path, layout: &Layout<'_>) -> anyhow::Result<ServerProcesses> {
    let mut processes = ServerProcesses::new();
    let dir = config_path.parent().context("config has a directory")?;
    for worker in 0..layout.workers {
        let port = layout.first_port + worker as u16;
        let mut command = Command::new(binary);
        command.arg("--config").arg(config_path).arg("serve").env("HOMESERVER_LISTEN", format!("127.0.0.1:{port}")).env("RUST_LOG", "warn");
        processes.spawn(command, &dir.join(format!("worker-{worker}.log")), format!("http://127.0.0.1:{port}"))?;
    }
    processes.wait_until_up(std::time::Duration::from_secs(60)).await?;
    Ok(processes)
}

/// Drops the layout's databases.
pub async fn drop_databases(layout: &Layout<'_>, admin_url: &str) -> anyhow::Result<()> {
    for index in 0..layout.databases {
        databases::drop(admin_url, &format!("{}{}_{index}", databases::PREFIX, layout.name)).await?;
    }
    Ok(())
}
