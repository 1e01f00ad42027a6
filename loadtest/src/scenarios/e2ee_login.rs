//! E2EE at login: what a real client does after logging in before it can
//! write to its staff contact encrypted: upload its device keys with one-time
//! and fallback keys, sync, query the staff account's devices, claim a
//! one-time key and send an Olm-encrypted to-device message (the room key).
//! The staff devices have uploaded their keys first and long-poll `/sync`;
//! to-device delivery latency is measured there.
//!
//! The key material is random (the server stores and serves keys, it does
//! not verify device self-signatures), shaped and sized like vodozemac's.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use rand::Rng as _;
use serde_json::{Value as JsonValue, json};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::{RunContext, monday_morning::storm, sync_loop};
use crate::{client::Client, population};

/// One-time keys a fresh device uploads (Element's first batch).
const ONE_TIME_KEYS: usize = 50;

pub async fn run(ctx: Arc<RunContext>) -> anyhow::Result<()> {
    let staff_indexes = ctx.population.serving_staff();
    for (slot, &staff) in staff_indexes.iter().enumerate() {
        let account = &ctx.population.staff[staff];
        ctx.client(slot).upload_keys(&account.access_token, &device_keys(&account.user_id, &account.device_id)).await?;
    }

    let syncs_stop = CancellationToken::new();
    let mut staff_syncs = JoinSet::new();
    for (slot, &staff) in staff_indexes.iter().enumerate() {
        let (ctx, syncs_stop) = (ctx.clone(), syncs_stop.clone());
        let account = ctx.population.staff[staff].clone();
        staff_syncs.spawn(async move {
            sync_loop(ctx.client(slot), &account, &syncs_stop, |response| {
                for event in &response.to_device.events {
                    if let Some(age) = event.age() {
                        ctx.metrics.delivery("to-device member→staff", age);
                    }
                }
            })
            .await;
        });
    }

    ctx.measure();
    let sent = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let completed = storm(&ctx, |ctx, index, member| {
        let sent = sent.clone();
        async move {
            let client: &Client = ctx.client(index);
            let session = client.login(&member.account.user_id, population::PASSWORD).await?;
            client.upload_keys(&session.access_token, &device_keys(&session.user_id, &session.device_id)).await?;
            client.sync(&session.access_token, None, Duration::ZERO).await?;
            let staff = &ctx.population.staff[member.staff];
            client.query_keys(&session.access_token, &staff.user_id).await?;
            client.claim_key(&session.access_token, &staff.user_id, &staff.device_id).await?;
            let content = json!({
                "algorithm": "m.olm.v1.curve25519-aes-sha2",
                "sender_key": random_key(),
                "ciphertext": { random_key(): { "type": 0, "body": random_base64(900) } },
            });
            client.send_to_device(&session.access_token, &format!("k{index}"), &staff.user_id, &staff.device_id, content).await?;
            sent.fetch_add(1, Ordering::Relaxed);
            anyhow::Ok(())
        }
    })
    .await;
    let seconds = started.elapsed().as_secs_f64();

    let drain_until = Instant::now() + Duration::from_secs(10);
    while ctx.metrics.totals().deliveries < sent.load(Ordering::Relaxed) && Instant::now() < drain_until {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    syncs_stop.cancel();
    while staff_syncs.join_next().await.is_some() {}
    ctx.figure("logins_completed", completed as f64);
    ctx.figure("logins_per_second", completed as f64 / seconds.max(1e-9));
    ctx.figure("to_device_sent", sent.load(Ordering::Relaxed) as f64);
    Ok(())
}

/// A `keys/upload` body: device keys, one-time keys and a fallback key.
fn device_keys(user_id: &str, device_id: &str) -> JsonValue {
    let signed = |key: String| json!({ "key": key, "signatures": { user_id: { format!("ed25519:{device_id}"): random_base64(64) } } });
    let one_time: serde_json::Map<String, JsonValue> = (0..ONE_TIME_KEYS).map(|i| (format!("signed_curve25519:AAAAA{i}"), signed(random_key()))).collect();
    json!({
        "device_keys": {
            "user_id": user_id,
            "device_id": device_id,
            "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
            "keys": { format!("curve25519:{device_id}"): random_key(), format!("ed25519:{device_id}"): random_key() },
            "signatures": { user_id: { format!("ed25519:{device_id}"): random_base64(64) } },
        },
        "one_time_keys": one_time,
        "fallback_keys": { "signed_curve25519:AAAAFB": { "key": random_key(), "fallback": true, "signatures": { user_id: { format!("ed25519:{device_id}"): random_base64(64) } } } },
    })
}

/// A random 32-byte key in unpadded base64, like a curve25519 public key.
fn random_key() -> String {
    random_base64(32)
}

fn random_base64(bytes: usize) -> String {
    use base64::Engine as _;
    let data: Vec<u8> = (0..bytes).map(|_| rand::rng().random()).collect();
    base64::engine::general_purpose::STANDARD_NO_PAD.encode(data)
}
