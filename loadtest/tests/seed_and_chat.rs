//! Smoke test of the whole tool on a real PostgreSQL: COPY-seed a tiny
//! population into two databases (so the shard map decides where rows go),
//! start our server in-process on them, and run a short insurer chat with
//! the `loadtest` binary. Fails when the schema changes under the seeder.
//!
//! Needs PostgreSQL at `HOMESERVER_TEST_DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`, as the homeserver's
//! tests); its databases are named `loadtest_smoke_<pid>_<n>` and dropped.

use std::{path::Path, process::Command};

use homeserver::{Config, Homeserver};
use sqlx::{AssertSqlSafe, Connection as _, PgConnection};

const ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

fn admin_url() -> String {
    std::env::var("HOMESERVER_TEST_DATABASE_URL").unwrap_or_else(|_| ADMIN_URL.to_owned())
}

async fn sql(statement: String) {
    let mut admin = PgConnection::connect(&admin_url()).await.expect("PostgreSQL reachable (HOMESERVER_TEST_DATABASE_URL)");
    sqlx::raw_sql(AssertSqlSafe(statement)).execute(&mut admin).await.expect("admin statement");
}

fn loadtest(args: &[&str], dir: &Path) {
    let status = Command::new(env!("CARGO_BIN_EXE_loadtest")).args(args).current_dir(dir).status().expect("loadtest runs");
    assert!(status.success(), "loadtest {args:?} failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeded_population_chats() {
    let names: Vec<String> = (0..2).map(|n| format!("loadtest_smoke_{}_{n}", std::process::id())).collect();
    let mut urls = Vec::new();
    for name in &names {
        sql(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await;
        sql(format!("CREATE DATABASE {name}")).await;
        let mut url = url::Url::parse(&admin_url()).expect("admin URL");
        url.set_path(name);
        urls.push(String::from(url));
    }

    let dir = tempfile::tempdir().expect("temp dir");
    let key = dir.path().join("signing.key");
    homeserver::signing_key::generate(&key).expect("signing key");
    let mut config = Config::development("loadtest.localhost", &urls[0], key);
    config.database.shards = vec![urls[1].clone()];
    config.media.store_path = dir.path().join("media");
    // The chat sends faster than a person; the test checks the tool, not the limits.
    config.rate_limits.enabled = false;
    let config_path = dir.path().join("homeserver.toml");
    std::fs::write(&config_path, toml::to_string_pretty(&config).expect("config as TOML")).expect("write config");

    loadtest(&["seed", "copy", "--homeserver-config", "homeserver.toml", "--members", "40", "--members-per-staff", "10", "--population", "pop.tsv"], dir.path());

    let server = Homeserver::start(config).await.expect("server starts on the seeded databases");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    let (shutdown, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server.serve(listener, async move {
        let _ = stopped.await;
    }));

    let out = dir.path().join("report");
    let out_arg = out.to_str().expect("UTF-8 path");
    loadtest(&["run", "insurer-chat", "--url", &url, "--population", "pop.tsv", "--users", "8", "--rate", "10", "--duration-s", "4", "--out", out_arg], dir.path());

    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("report.json")).expect("report.json")).expect("report is JSON");
    let figure = |name: &str| report["figures"][name].as_f64().unwrap_or_default();
    assert!(figure("messages_sent") >= 10.0, "{report:#}");
    assert_eq!(figure("error_rate"), 0.0, "{report:#}");
    assert_eq!(figure("messages_undelivered"), 0.0, "{report:#}");
    assert!(out.join("report.html").exists() && out.join("report.md").exists());

    let _ = shutdown.send(());
    serving.await.expect("server task").expect("server stops cleanly");
    for name in &names {
        sql(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await;
    }
}
