//! Idle members: K clients each hold a long-polling `/sync` open while
//! nothing happens, as most of an insurer's online members do. Measures
//! what an idle connection costs the server: memory (RSS growth over the
//! baseline, per connection) and CPU while idle.

use std::{sync::Arc, time::Duration};

use tokio::task::JoinSet;

use super::{RunContext, SERVER, sync_loop};

/// Settling time after the last client connected, before memory is read.
const SETTLE: Duration = Duration::from_secs(5);

pub async fn run(ctx: Arc<RunContext>) -> anyhow::Result<()> {
    ctx.measure();
    // A baseline sample needs the sampler's first tick.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let baseline = ctx.sampler.latest_pss_mib(SERVER);
    let mut tasks = JoinSet::new();
    let ramp = ctx.start_interval();
    for (index, member) in ctx.population.members.clone().into_iter().enumerate() {
        if ctx.stop.is_cancelled() {
            break;
        }
        let ctx = ctx.clone();
        tasks.spawn(async move { sync_loop(ctx.client(index), &member.account, &ctx.stop, |_| {}).await });
        if let Some(pause) = ramp {
            tokio::time::sleep(pause).await;
        }
    }
    let connected = tasks.len();
    tokio::select! {
        _ = ctx.stop.cancelled() => {}
        _ = tokio::time::sleep(SETTLE) => {}
    }
    let idle_from = ctx.seconds_since_start();
    ctx.figure("idle_connections", connected as f64);
    if let (Some(before), Some(after)) = (baseline, ctx.sampler.latest_pss_mib(SERVER)) {
        ctx.figure("server_pss_baseline_mib", before);
        ctx.figure("server_pss_idle_mib", after);
        ctx.figure("server_kib_per_idle_sync", (after - before) * 1024.0 / connected.max(1) as f64);
    }
    ctx.stop.cancelled().await;
    if let Some(cpu) = ctx.sampler.mean_cpu_between(SERVER, idle_from, ctx.seconds_since_start()) {
        ctx.figure("server_cpu_percent_idle", cpu);
    }
    while tasks.join_next().await.is_some() {}
    Ok(())
}
