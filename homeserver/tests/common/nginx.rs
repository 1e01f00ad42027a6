//! A private nginx (Debian's package) in front of a deployment's workers:
//! the load balancer of the multi-worker tests, round robin without sticky
//! sessions, configured as an operator would for long-polling syncs.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use super::redis::free_port;

/// Where Debian installs it (`nginx-light`, from `scripts/services`).
const NGINX: &str = "/usr/sbin/nginx";
const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether nginx is installed.
pub fn installed() -> bool {
    Command::new(NGINX).arg("-v").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|status| status.success())
}

/// One nginx process on a free loopback port; killed when dropped.
pub struct PrivateNginx {
    port: u16,
    dir: PathBuf,
    child: Child,
}

impl PrivateNginx {
    /// Balances over `upstreams` (`127.0.0.1:port` each).
    pub async fn start(upstreams: &[String]) -> Self {
        let port = free_port(|_| true);
        let dir = std::env::temp_dir().join(format!("hs-test-nginx-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("creating the nginx directory");
        let servers: String = upstreams.iter().map(|upstream| format!("        server {upstream};\n")).collect();
        let dir_text = dir.display();
        // One process in the foreground; temp paths inside the test's
        // directory, so nothing needs root or touches /var.
        let config = format!(
            r#"daemon off;
master_process off;
worker_processes 1;
pid {dir_text}/nginx.pid;
error_log {dir_text}/error.log warn;
events {{ worker_connections 512; }}
http {{
    access_log off;
    client_body_temp_path {dir_text}/body;
    proxy_temp_path {dir_text}/proxy;
    fastcgi_temp_path {dir_text}/fastcgi;
    uwsgi_temp_path {dir_text}/uwsgi;
    scgi_temp_path {dir_text}/scgi;
    upstream homeserver {{
{servers}        keepalive 16;
    }}
    server {{
        listen 127.0.0.1:{port};
        client_max_body_size 50m;
        location / {{
            proxy_pass http://homeserver;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $remote_addr;
            # Long-polling syncs answer after their timeout (30 s by default).
            proxy_read_timeout 120s;
            proxy_buffering off;
        }}
    }}
}}
"#
        );
        let config_path = dir.join("nginx.conf");
        std::fs::write(&config_path, config).expect("writing nginx.conf");
        let child = Command::new(NGINX)
            .arg("-p")
            .arg(&dir)
            .arg("-c")
            .arg(&config_path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting nginx");
        let nginx = Self { port, dir, child };
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            assert!(Instant::now() < deadline, "nginx did not start; see {}", nginx.dir.join("error.log").display());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        nginx
    }

    /// `http://127.0.0.1:<port>`: what clients are given as the homeserver.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for PrivateNginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
