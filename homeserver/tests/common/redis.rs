//! Redis for the multi-worker tests: the machine's shared Redis under a
//! prefix of the test's own (parallel tests never wake each other, and
//! nothing is ever flushed), or private `redis-server` processes that a
//! test may kill and restart.

use std::{
    net::TcpListener,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use homeserver::{Config, Homeserver};

/// The shared Redis when `HOMESERVER_TEST_REDIS_URL` is not set.
const DEFAULT_URL: &str = "redis://127.0.0.1:6379";
/// How long a private server may take to accept connections.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);

/// Points `config` at the shared Redis under a prefix no other test uses.
pub fn use_shared(config: &mut Config) {
    config.redis.url = Some(std::env::var("HOMESERVER_TEST_REDIS_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned()));
    config.redis.prefix = Some(unique_prefix());
}

/// A key and channel prefix of this test alone.
pub fn unique_prefix() -> String {
    format!("hs-test-{}-{}", std::process::id(), homeserver::auth::tokens::random_string(8))
}

/// `redis://` of a loopback port nobody listens on: a bound port is
/// released again, so connecting is refused.
pub fn unreachable_url() -> String {
    format!("redis://127.0.0.1:{}", free_port(|_| true))
}

/// Waits until `server`'s notifications travel through Redis (`true`) or it
/// falls back to polling the database (`false`); panics after `within`.
pub async fn wait_until_connected(server: &Homeserver, connected: bool, within: Duration) {
    let link = server.redis.as_ref().expect("a worker with Redis configured");
    let deadline = Instant::now() + within;
    while link.is_connected() != connected {
        assert!(Instant::now() < deadline, "the worker's Redis link is not {} after {within:?}", if connected { "up" } else { "down" });
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Whether `redis-server` (and `redis-cli`, for clusters) can be run here.
pub fn installed() -> bool {
    ["redis-server", "redis-cli"].iter().all(|tool| Command::new(tool).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success()))
}

/// A `redis-server` of this test alone, on a free loopback port, without
/// persistence (a restart loses everything, as a crashed cache would).
/// Killed when dropped.
pub struct PrivateRedis {
    port: u16,
    args: Vec<String>,
    dir: PathBuf,
    child: Option<Child>,
}

impl PrivateRedis {
    /// A single server.
    pub async fn start() -> Self {
        Self::spawn(free_port(|_| true), &[]).await
    }

    async fn spawn(port: u16, extra_args: &[&str]) -> Self {
        let dir = std::env::temp_dir().join(format!("hs-test-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("creating the Redis directory");
        let mut args: Vec<String> = ["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir"].map(str::to_owned).into();
        args.push(dir.display().to_string());
        args.extend(extra_args.iter().map(|arg| (*arg).to_owned()));
        let mut redis = Self { port, args, dir, child: None };
        redis.restart().await;
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server at once (SIGKILL: no goodbye to its clients beyond
    /// the closed connections).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and waits until it answers.
    pub async fn restart(&mut self) {
        self.kill();
        let child = Command::new("redis-server").args(&self.args).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("starting redis-server");
        self.child = Some(child);
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        while self.cli(&["PING"]).as_deref() != Some("PONG") {
            assert!(Instant::now() < deadline, "redis-server on port {} did not start", self.port);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Runs `redis-cli` against this server; its output, trimmed, when it
    /// succeeded.
    fn cli(&self, args: &[&str]) -> Option<String> {
        let output = Command::new("redis-cli").args(["-h", "127.0.0.1", "-p", &self.port.to_string()]).args(args).stderr(Stdio::null()).output().ok()?;
        output.status.success().then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A Redis Cluster of three private masters (no replicas).
pub struct PrivateCluster {
    nodes: Vec<PrivateRedis>,
}

impl PrivateCluster {
    pub async fn start() -> Self {
        let mut nodes = Vec::new();
        for _ in 0..3 {
            // The cluster bus listens on the port + 10000.
            let port = free_port(|port| port <= u16::MAX - 10_000 && TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok());
            nodes.push(PrivateRedis::spawn(port, &["--cluster-enabled", "yes", "--cluster-config-file", &format!("nodes-{port}.conf"), "--cluster-node-timeout", "5000"]).await);
        }
        let addresses: Vec<String> = nodes.iter().map(|node| format!("127.0.0.1:{}", node.port)).collect();
        let created = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addresses)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("running redis-cli --cluster create");
        assert!(created.success(), "creating the cluster failed");
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        while !nodes.iter().all(|node| node.cli(&["CLUSTER", "INFO"]).is_some_and(|info| info.contains("cluster_state:ok"))) {
            assert!(Instant::now() < deadline, "the cluster did not become ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Self { nodes }
    }

    /// Every node as a seed, comma-separated (`[redis] url` with `cluster`).
    pub fn url(&self) -> String {
        self.nodes.iter().map(PrivateRedis::url).collect::<Vec<_>>().join(",")
    }
}

/// A loopback port that is free now (and passes `also`).
pub fn free_port(also: impl Fn(u16) -> bool) -> u16 {
    loop {
        let port = TcpListener::bind(("127.0.0.1", 0)).and_then(|listener| listener.local_addr()).expect("binding a loopback port").port();
        if also(port) {
            return port;
        }
    }
}
