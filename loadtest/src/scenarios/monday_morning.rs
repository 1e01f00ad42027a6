//! Monday morning: members log in with their password (a new device each)
//! at a given rate or as fast as `concurrency` allows, and each does an
//! initial sync right after, as an app opened after the weekend does.

use std::{sync::Arc, time::Instant};

use futures::StreamExt as _;

use super::RunContext;
use crate::population::{self, Member};

pub async fn run(ctx: Arc<RunContext>) -> anyhow::Result<()> {
    ctx.measure();
    let started = Instant::now();
    let completed = storm(&ctx, |ctx, index, member| async move {
        let client = ctx.client(index);
        let session = client.login(&member.account.user_id, population::PASSWORD).await?;
        client.sync(&session.access_token, None, std::time::Duration::ZERO).await?;
        anyhow::Ok(())
    })
    .await;
    ctx.figure("logins_completed", completed as f64);
    ctx.figure("logins_per_second", completed as f64 / started.elapsed().as_secs_f64().max(1e-9));
    Ok(())
}

/// Runs `login` for each member at the configured rate, at most
/// `concurrency` at once, until all are done or the run stops; returns
/// how many succeeded.
pub async fn storm<F, Fut>(ctx: &Arc<RunContext>, login: F) -> usize
where
    F: Fn(Arc<RunContext>, usize, Member) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let interval = ctx.start_interval();
    let members = ctx.population.members.clone();
    let starts = futures::stream::iter(members.into_iter().enumerate()).then(|(index, member)| async move {
        if let Some(pause) = interval {
            tokio::time::sleep(pause).await;
        }
        (index, member)
    });
    let mut logins = std::pin::pin!(starts.take_until(ctx.stop.cancelled()).map(|(index, member)| login(ctx.clone(), index, member)).buffer_unordered(ctx.options.concurrency.max(1)));
    let mut completed = 0;
    while let Some(result) = logins.next().await {
        match result {
            Ok(()) => completed += 1,
            Err(err) => tracing::debug!("login: {err:#}"),
        }
    }
    completed
}
