//! Retention (TI-M ePA, `shared/TI-MESSENGER.md` "Retention"): room content
//! is deleted after a period without activity (default six months); rooms
//! where only the creator ever joined and nothing but state was sent are
//! purged after a threshold; local users are removed from rooms that
//! contain only insured persons after a grace period.
//!
//! A room is judged on its own database: every worker runs the job for
//! every database, but a run holds the database's retention lease (an
//! advisory lock) and is skipped when another worker finished one within
//! the interval (`tim_retention_runs`). Acting on a room takes two steps:
//!
//! 1. its local members (joined, invited, knocking) leave, each through the
//!    room's writer with [`REASON`], so their next sync shows the room left
//!    (the users' indexes are kept by the writer, crash-safe as any leave);
//! 2. holding the room's lock in a writer transaction, unless something but
//!    those leaves happened since the room was judged, its events, state,
//!    memberships, receipts, push actions and queued pushes and the room
//!    itself are deleted; then its aliases (on their own databases) and the
//!    former local members' account data for the room.
//!
//! A room whose members are all insured has no local members after step 1
//! either, so its content goes too: nobody on this server can read it any
//! more, and without federation nobody elsewhere gets it from us. A run
//! that stopped between the steps is finished by the next (the room's
//! newest event is then one of the job's leaves). Left rooms stay in the
//! users' indexes: sync keeps reporting them as left, with an empty
//! timeline. Media are not touched: the server cannot tell which media an
//! encrypted room used.

use std::{collections::HashMap, time::{Duration, Instant}};

use ruma::{OwnedRoomId, OwnedUserId, RoomId, UserId};
use tokio::task::JoinHandle;

use super::{accounts::AccountKind, federation_list::Standing};
use crate::{
    http::ApiResult,
    rooms::{RoomWriter, membership::{MembershipRequest, change_membership}},
    server::Homeserver,
    storage::{self, Shard, lease::Lease, memberships, retention as queries, users},
};

/// The retention lease of a database (advisory lock key "reten").
pub const LEASE: Lease = Lease { key: 0x0072_6574_656e, name: "retention" };
/// The reason of the leaves the job writes; also how an interrupted run is
/// recognised.
pub const REASON: &str = "Removed by the server's retention policy (TI-Messenger)";
/// How often a worker looks whether a run is due.
const CHECK_INTERVAL: Duration = Duration::from_secs(60);

const DAY_MS: i64 = 24 * 3_600_000;

/// Why a room is acted on (the metric's label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rule {
    /// No event for `inactive_room_days`.
    Inactive,
    /// Only the creator ever joined, only state events, older than
    /// `orphaned_room_days`.
    Orphaned,
    /// Every joined or invited member is insured, for
    /// `insured_only_grace_hours` since the members last changed.
    InsuredOnly,
    /// A purge an earlier run began (its leaves are written).
    Interrupted,
}

impl Rule {
    fn label(self) -> &'static str {
        match self {
            Self::Inactive => "inactive",
            Self::Orphaned => "orphaned",
            Self::InsuredOnly => "insured_only",
            Self::Interrupted => "interrupted",
        }
    }
}

/// What a run over one database did (or, dry, would do).
#[derive(Debug, Default)]
pub struct RunReport {
    pub database: usize,
    /// Rooms acted on, with the rule that applied.
    pub rooms: Vec<(OwnedRoomId, Rule)>,
    pub members_removed: u64,
    pub events_deleted: u64,
    /// Rooms left alone because something happened while the job acted.
    pub skipped: Vec<OwnedRoomId>,
}

/// Runs the job once over every database (the CLI's `retention run`),
/// waiting for no lease: a database whose lease a worker holds is skipped.
pub async fn run_all(server: &Homeserver, dry_run: bool, now_ms: i64) -> anyhow::Result<Vec<Option<RunReport>>> {
    let mut reports = Vec::new();
    for shard in server.db.shards() {
        reports.push(LEASE.run_once(&shard.pool, run_database(server, shard, dry_run, now_ms)).await?);
    }
    Ok(reports)
}

/// One run over one database, at `now_ms` (a parameter so tests can move
/// the clock). The caller holds the database's lease.
pub async fn run_database(server: &Homeserver, shard: &Shard, dry_run: bool, now_ms: i64) -> anyhow::Result<RunReport> {
    let started = Instant::now();
    let policy = &server.config.tim.retention;
    let days = |days: u64| i64::try_from(days).unwrap_or(i64::MAX).saturating_mul(DAY_MS);
    let mut report = RunReport { database: shard.index, ..RunReport::default() };
    // Each room with its position when judged and the first rule that
    // applies.
    let mut judged: Vec<(String, i64, Rule)> = Vec::new();
    let mut add = |rooms: Vec<(String, i64)>, rule: Rule| {
        for (room, position) in rooms {
            if !judged.iter().any(|(known, ..)| *known == room) {
                judged.push((room, position, rule));
            }
        }
    };
    add(queries::interrupted_purges(&shard.pool, REASON).await?, Rule::Interrupted);
    add(queries::inactive_rooms(&shard.pool, now_ms.saturating_sub(days(policy.inactive_room_days))).await?, Rule::Inactive);
    add(queries::orphaned_rooms(&shard.pool, now_ms.saturating_sub(days(policy.orphaned_room_days))).await?, Rule::Orphaned);
    let grace_ms = i64::try_from(policy.insured_only_grace_hours).unwrap_or(i64::MAX).saturating_mul(3_600_000);
    add(insured_only_rooms(server, shard, now_ms.saturating_sub(grace_ms)).await?, Rule::InsuredOnly);

    for (room, judged_at, rule) in judged {
        let Ok(room_id) = OwnedRoomId::try_from(room) else { continue };
        if dry_run {
            tracing::info!(%room_id, rule = rule.label(), dry_run, "retention would purge the room");
            report.rooms.push((room_id, rule));
            continue;
        }
        match purge_room(server, &room_id, judged_at).await {
            Ok(Some((removed, events))) => {
                tracing::info!(%room_id, rule = rule.label(), members_removed = removed, events_deleted = events, "retention purged the room");
                server.metrics.tim.retention.purged(rule.label(), events);
                server.metrics.tim.retention.removed_members(removed);
                report.members_removed += removed;
                report.events_deleted += events;
                report.rooms.push((room_id, rule));
            }
            Ok(None) => {
                tracing::info!(%room_id, rule = rule.label(), "room changed while retention acted; left for the next run");
                report.skipped.push(room_id);
            }
            Err(err) => {
                tracing::warn!(%room_id, rule = rule.label(), error = ?err, "retention could not purge the room; left for the next run");
                report.skipped.push(room_id);
            }
        }
    }
    if !dry_run {
        queries::record_run(&shard.pool, storage::now_ms()).await?;
    }
    server.metrics.tim.retention.ran(started.elapsed().as_secs_f64());
    tracing::info!(
        database = shard.index,
        rooms = report.rooms.len(),
        members_removed = report.members_removed,
        events_deleted = report.events_deleted,
        skipped = report.skipped.len(),
        dry_run,
        duration_ms = started.elapsed().as_millis() as u64,
        "retention run finished"
    );
    Ok(report)
}

/// Rooms whose joined and invited members are all insured persons (local
/// ones with a KVNR, remote ones on an `isInsurance` domain of a current
/// federation list) and whose members have not changed since `before_ts`.
async fn insured_only_rooms(server: &Homeserver, shard: &Shard, before_ts: i64) -> anyhow::Result<Vec<(String, i64)>> {
    // The list's age is judged by the real clock, whatever `before_ts` says.
    let now = storage::now_ms();
    let mut kinds: HashMap<String, bool> = HashMap::new();
    let mut rooms = Vec::new();
    for (room, position, members) in queries::rooms_with_members(&shard.pool).await? {
        let mut all_insured = !members.is_empty();
        for member in &members {
            if !all_insured {
                break;
            }
            let insured = match kinds.get(member) {
                Some(insured) => *insured,
                None => {
                    let insured = is_insured(server, member, now).await?;
                    kinds.insert(member.clone(), insured);
                    insured
                }
            };
            all_insured &= insured;
        }
        if all_insured && queries::last_membership_change(&shard.pool, &room).await?.is_some_and(|changed| changed < before_ts) {
            rooms.push((room, position));
        }
    }
    Ok(rooms)
}

/// Whether a member is an insured person; remote users only while the
/// federation list is current (an unknown answer never removes anyone).
async fn is_insured(server: &Homeserver, member: &str, now_ms: i64) -> anyhow::Result<bool> {
    let Ok(user_id) = OwnedUserId::try_from(member) else { return Ok(false) };
    if user_id.server_name() == server.server_name() {
        let kind = users::account_kind(server.db.user_shard(&user_id), &user_id).await?;
        return Ok(kind == Some(AccountKind::Insured));
    }
    Ok(server.federation_list.standing(user_id.server_name().as_str(), now_ms) == Standing::Federated { is_insurance: true })
}

/// Step 1 and 2 of the module doc for a room judged at its position
/// `judged_at`. `None` when the room changed since (it stays; members who
/// left stay left).
async fn purge_room(server: &Homeserver, room_id: &RoomId, judged_at: i64) -> ApiResult<Option<(u64, u64)>> {
    let room_db = server.db.room_shard(room_id);
    // Checked before anyone is removed, and again under the room's lock.
    if queries::events_since(room_db, room_id.as_str(), judged_at, REASON).await? > 0 {
        return Ok(None);
    }
    let mut removed = 0;
    for member in memberships::members_with(room_db, room_id, &["join", "invite", "knock"]).await? {
        if member.server_name() != server.server_name() {
            continue;
        }
        leave(server, room_id, &member).await?;
        removed += 1;
    }

    let mut writer = match RoomWriter::open(server, room_id).await {
        Ok(writer) => writer,
        // Gone already (another run, or a purge after this run's read).
        Err(crate::http::ApiError::Matrix { status, .. }) if status == http::StatusCode::NOT_FOUND => return Ok(Some((removed, 0))),
        Err(err) => return Err(err),
    };
    if queries::events_since(writer.conn(), room_id.as_str(), judged_at, REASON).await? > 0 {
        return Ok(None);
    }
    let former_members = queries::all_members(writer.conn(), room_id.as_str()).await?;
    let events = queries::delete_room(writer.conn(), room_id.as_str()).await?;
    writer.commit().await?;

    for shard in server.db.shards() {
        queries::delete_aliases(&shard.pool, room_id.as_str()).await?;
    }
    for member in former_members.iter().filter_map(|member| OwnedUserId::try_from(member.as_str()).ok()) {
        if member.server_name() == server.server_name() {
            queries::delete_room_account_data(server.db.user_shard(&member), member.as_str(), room_id.as_str()).await?;
        }
    }
    Ok(Some((removed, events)))
}

/// The member leaves (or declines the invite) with the job's reason.
async fn leave(server: &Homeserver, room_id: &RoomId, member: &UserId) -> ApiResult<()> {
    let request = MembershipRequest { sender: member, target: member, membership: "leave", reason: Some(REASON), is_direct: false };
    change_membership(server, room_id, request).await?;
    Ok(())
}

/// Every worker's retention loop: one task per database, running the job
/// when it is due and nobody else runs it.
pub struct RetentionWorker {
    tasks: Vec<JoinHandle<()>>,
}

impl RetentionWorker {
    pub fn start(server: &Homeserver) -> Self {
        let tasks = (0..server.db.shard_count())
            .map(|index| {
                let server = server.clone();
                tokio::spawn(async move {
                    loop {
                        if let Err(err) = run_when_due(&server, index).await {
                            tracing::warn!(database = index, error = %format!("{err:#}"), "retention run failed");
                        }
                        tokio::time::sleep(CHECK_INTERVAL).await;
                    }
                })
            })
            .collect();
        Self { tasks }
    }

    /// Stops the loops; a run in flight is abandoned (its open transaction
    /// rolls back; the next run finishes what it began).
    pub async fn stop(self) {
        for task in self.tasks {
            task.abort();
            let _ = task.await;
        }
    }
}

/// Runs over database `index` under its lease when the last run finished
/// an interval ago or longer.
async fn run_when_due(server: &Homeserver, index: usize) -> anyhow::Result<()> {
    let shard = server.db.shard(index);
    let interval_ms = i64::try_from(server.config.tim.retention.interval_minutes.saturating_mul(60_000)).unwrap_or(i64::MAX);
    LEASE
        .run_once(&shard.pool, async {
            // Read under the lease, so two workers never both find it due.
            if queries::last_run(&shard.pool).await?.is_some_and(|finished| storage::now_ms().saturating_sub(finished) < interval_ms) {
                return Ok(());
            }
            run_database(server, shard, false, storage::now_ms()).await.map(drop)
        })
        .await?;
    Ok(())
}
