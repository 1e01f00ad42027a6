//! Synapse as a target: installed from PyPI into a virtualenv under the
//! work directory (once), on its own database (`loadtest_synapse`, C
//! collation as Synapse demands) of the same PostgreSQL, rate limits lifted
//! so that it is measured, not throttled.

use std::path::Path;

use anyhow::Context as _;
use tokio::process::Command;

use super::{
    databases,
    our_server::SERVER_NAME,
    server_process::{SHARED_SECRET, ServerProcesses, run_to_end},
};

pub const DATABASE: &str = "loadtest_synapse";

/// Makes sure `<work_dir>/synapse-venv` has Synapse; returns its python.
pub async fn install(work_dir: &Path) -> anyhow::Result<std::path::PathBuf> {
    let venv = work_dir.join("synapse-venv");
    let python = venv.join("bin/python");
    let installed = Command::new(&python).args(["-c", "import synapse"]).output().await.is_ok_and(|o| o.status.success());
    if !installed {
        tracing::info!("installing matrix-synapse into {}", venv.display());
        run_to_end(Command::new("python3").arg("-m").arg("venv").arg(&venv), "python3 -m venv").await?;
        run_to_end(Command::new(&python).args(["-m", "pip", "install", "--quiet", "matrix-synapse[postgres]"]), "pip install matrix-synapse").await?;
    }
    Ok(python)
}

/// Creates its database, writes its config and keys, starts it on `port`.
pub async fn start(python: &Path, dir: &Path, admin_url: &str, port: u16) -> anyhow::Result<ServerProcesses> {
    databases::recreate(admin_url, DATABASE, true).await?;
    let admin = url::Url::parse(admin_url)?;
    std::fs::create_dir_all(dir)?;
    let dir = std::fs::canonicalize(dir)?;
    let d = dir.display();
    std::fs::write(dir.join("log.yaml"), LOG_CONFIG)?;
    let unlimited = "{per_second: 100000, burst_count: 100000}";
    let config = format!(
        r#"server_name: "{SERVER_NAME}"
pid_file: "{d}/homeserver.pid"
listeners:
  - port: {port}
    bind_addresses: ["127.0.0.1"]
    type: http
    tls: false
    x_forwarded: false
    resources:
      - names: [client]
        compress: false
database:
  name: psycopg2
  args:
    user: "{user}"
    dbname: "{DATABASE}"
    host: "{host}"
    port: {pg_port}
    cp_min: 5
    cp_max: 20
log_config: "{d}/log.yaml"
media_store_path: "{d}/media"
signing_key_path: "{d}/signing.key"
registration_shared_secret: "{SHARED_SECRET}"
macaroon_secret_key: "loadtest-macaroon-secret"
form_secret: "loadtest-form-secret"
report_stats: false
trusted_key_servers: []
suppress_key_server_warning: true
rc_message: {unlimited}
rc_registration: {unlimited}
rc_login: {{address: {unlimited}, account: {unlimited}, failed_attempts: {unlimited}}}
rc_joins: {{local: {unlimited}, remote: {unlimited}}}
rc_invites: {{per_room: {unlimited}, per_user: {unlimited}, per_issuer: {unlimited}}}
rc_key_requests: {unlimited}
rc_presence: {{per_user: {unlimited}}}
rc_room_creation: {unlimited}
rc_joins_per_room: {unlimited}
rc_profile: {unlimited}
rc_user_directory: {unlimited}
"#,
        user = admin.username(),
        host = admin.host_str().unwrap_or("127.0.0.1"),
        pg_port = admin.port().unwrap_or(5432),
    );
    let config_path = dir.join("homeserver.yaml");
    std::fs::write(&config_path, config).context("writing the Synapse config")?;
    run_to_end(Command::new(python).args(["-m", "synapse.app.homeserver", "--generate-keys", "-c"]).arg(&config_path), "synapse --generate-keys").await?;

    let mut processes = ServerProcesses::new();
    let mut command = Command::new(python);
    command.args(["-m", "synapse.app.homeserver", "-c"]).arg(&config_path);
    processes.spawn(command, &dir.join("synapse.log"), format!("http://127.0.0.1:{port}"))?;
    // The first start creates Synapse's schema.
    processes.wait_until_up(std::time::Duration::from_secs(180)).await?;
    Ok(processes)
}

const LOG_CONFIG: &str = "version: 1
formatters:
  precise:
    format: '%(asctime)s - %(name)s - %(levelname)s - %(message)s'
handlers:
  console:
    class: logging.StreamHandler
    formatter: precise
root:
  level: WARNING
  handlers: [console]
disable_existing_loggers: false
";
