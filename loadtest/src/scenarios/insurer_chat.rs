//! Insurer chat: members write into their rooms at a fixed total rate,
//! each staff account answers every member message it receives, and
//! everybody long-polls `/sync`. Delivery latency is measured from just
//! before the `PUT /send` to the event appearing in the recipient's `/sync`.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::{RunContext, sync_loop};

/// How long deliveries may still arrive after the last send.
const DRAIN: Duration = Duration::from_secs(10);

pub async fn run(ctx: Arc<RunContext>) -> anyhow::Result<()> {
    let members = ctx.population.members.clone();
    let staff_indexes = ctx.population.serving_staff();
    let sent = Arc::new(AtomicU64::new(0));
    let ready = Arc::new(AtomicU64::new(0));
    let syncs_stop = CancellationToken::new();
    let mut tasks = JoinSet::new();

    for (slot, &staff_index) in staff_indexes.iter().enumerate() {
        let (ctx, sent, ready, syncs_stop) = (ctx.clone(), sent.clone(), ready.clone(), syncs_stop.clone());
        let account = ctx.population.staff[staff_index].clone();
        tasks.spawn(async move {
            let client = ctx.client(slot).clone();
            let mut first = true;
            sync_loop(&client, &account, &syncs_stop, |response| {
                if std::mem::take(&mut first) {
                    ready.fetch_add(1, Ordering::Relaxed);
                }
                for (room_id, room) in &response.rooms.join {
                    for event in room.timeline.events.iter().filter(|e| e.sender != account.user_id) {
                        let Some(age) = event.age() else { continue };
                        ctx.metrics.delivery("message member→staff", age);
                        if ctx.stop.is_cancelled() {
                            continue;
                        }
                        // The staff account answers.
                        let (client, token, room_id, sent) = (client.clone(), account.access_token.clone(), room_id.clone(), sent.clone());
                        let txn = format!("r{}", sent.fetch_add(1, Ordering::Relaxed));
                        tokio::spawn(async move { client.send_message(&token, &room_id, &txn).await });
                    }
                }
            })
            .await;
        });
    }
    for (index, member) in members.iter().enumerate() {
        let (ctx, ready, syncs_stop, member) = (ctx.clone(), ready.clone(), syncs_stop.clone(), member.clone());
        tasks.spawn(async move {
            let mut first = true;
            sync_loop(ctx.client(index), &member.account, &syncs_stop, |response| {
                if std::mem::take(&mut first) {
                    ready.fetch_add(1, Ordering::Relaxed);
                }
                for room in response.rooms.join.values() {
                    for event in room.timeline.events.iter().filter(|e| e.sender != member.account.user_id) {
                        if let Some(age) = event.age() {
                            ctx.metrics.delivery("message staff→member", age);
                        }
                    }
                }
            })
            .await;
        });
    }

    // Messages start once every client has its initial sync behind it.
    let clients = (members.len() + staff_indexes.len()) as u64;
    let setup = Instant::now();
    while ready.load(Ordering::Relaxed) < clients && !ctx.stop.is_cancelled() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    ctx.figure("setup_seconds", setup.elapsed().as_secs_f64());
    ctx.measure();
    let sending_since = ctx.seconds_since_start();

    let mut ticks = tokio::time::interval(ctx.start_interval().unwrap_or(Duration::from_millis(1)));
    let mut next_member = 0;
    while !ctx.stop.is_cancelled() {
        tokio::select! {
            _ = ctx.stop.cancelled() => break,
            _ = ticks.tick() => {}
        }
        let (index, member) = (next_member, members[next_member].clone());
        next_member = (next_member + 1) % members.len();
        let client = ctx.client(index).clone();
        let txn = format!("m{}", sent.fetch_add(1, Ordering::Relaxed));
        tokio::spawn(async move { client.send_message(&member.account.access_token, &member.room_id, &txn).await });
    }
    let sending_seconds = ctx.seconds_since_start() - sending_since;

    let drain_until = Instant::now() + DRAIN;
    while ctx.metrics.totals().deliveries < sent.load(Ordering::Relaxed) && Instant::now() < drain_until {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    syncs_stop.cancel();
    while tasks.join_next().await.is_some() {}

    let sent = sent.load(Ordering::Relaxed) as f64;
    let delivered = ctx.metrics.totals().deliveries as f64;
    ctx.figure("messages_sent", sent);
    ctx.figure("messages_delivered", delivered);
    ctx.figure("messages_undelivered", (sent - delivered).max(0.0));
    ctx.figure("messages_per_second", sent / sending_seconds.max(1e-9));
    ctx.figure("clients", clients as f64);
    Ok(())
}
