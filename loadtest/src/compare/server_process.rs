//! A server under test started by `compare`: its processes (killed when
//! dropped), URLs and registration secret.

use std::{path::Path, process::Stdio, sync::Arc, time::Duration};

use anyhow::{Context as _, bail};
use tokio::process::{Child, Command};

use crate::{client::Client, metrics::Metrics};

/// The shared secret of the admin registration API on both servers.
pub const SHARED_SECRET: &str = "loadtest-shared-secret";

pub struct ServerProcesses {
    children: Vec<Child>,
    pub urls: Vec<String>,
}

impl ServerProcesses {
    pub fn new() -> Self {
        Self { children: Vec::new(), urls: Vec::new() }
    }

    /// Starts `command` with its output in `log`, serving `url`.
    pub fn spawn(&mut self, mut command: Command, log: &Path, url: String) -> anyhow::Result<()> {
        let file = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        command.stdout(Stdio::from(file.try_clone()?)).stderr(Stdio::from(file)).kill_on_drop(true);
        self.children.push(command.spawn().context("starting the server")?);
        self.urls.push(url);
        Ok(())
    }

    pub fn pids(&self) -> Vec<u32> {
        self.children.iter().filter_map(Child::id).collect()
    }

    /// Waits until every URL answers `/versions`, or fails after `limit`.
    pub async fn wait_until_up(&mut self, limit: Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + limit;
        for url in &self.urls {
            let client = Client::new(url, Arc::new(Metrics::default()))?;
            while !client.is_up().await {
                if let Some(child) = self.children.iter_mut().find_map(|c| c.try_wait().ok().flatten().map(|status| (c.id(), status))) {
                    bail!("the server exited during start ({:?}); see its log", child.1);
                }
                if tokio::time::Instant::now() > deadline {
                    bail!("{url} did not come up within {limit:?}");
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
        Ok(())
    }

    /// Stops every process and waits for it.
    pub async fn stop(mut self) {
        for child in &mut self.children {
            let _ = child.kill().await;
        }
    }
}

/// Runs a command to completion, failing with its output.
pub async fn run_to_end(command: &mut Command, what: &str) -> anyhow::Result<()> {
    let output = command.output().await.with_context(|| format!("running {what}"))?;
    if !output.status.success() {
        bail!("{what} failed: {}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    }
    Ok(())
}
