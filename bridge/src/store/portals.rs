//! `portals` and `portal_addresses`: which room carries the conversation
//! with which KIM addresses.

use ruma::{OwnedRoomId, RoomId, UserId};
use sqlx::PgPool;

use crate::kim::address::KimAddress;

/// A portal and its addresses.
#[derive(Debug)]
pub struct Portal {
    pub room_id: OwnedRoomId,
    pub addresses: Vec<KimAddress>,
}

/// Adds `address` to the room's portal, creating the portal with the first
/// address; false when the address was in it already.
pub async fn add_address(
    pool: &PgPool,
    room_id: &RoomId,
    address: &KimAddress,
    added_by: &UserId,
) -> sqlx::Result<bool> {
    let mut tx = pool.begin().await?;
    sqlx::query("INSERT INTO portals (room_id, created_by) VALUES ($1, $2) ON CONFLICT DO NOTHING")
        .bind(room_id.as_str())
        .bind(added_by.as_str())
        .execute(&mut *tx)
        .await?;
    let added = sqlx::query(
        "INSERT INTO portal_addresses (room_id, address, added_by) VALUES ($1, $2, $3)
         ON CONFLICT DO NOTHING",
    )
    .bind(room_id.as_str())
    .bind(address.as_str())
    .bind(added_by.as_str())
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(added.rows_affected() == 1)
}

/// Takes an address out of a portal (its ghost left or was kicked).
pub async fn remove_address(
    pool: &PgPool,
    room_id: &RoomId,
    address: &KimAddress,
) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM portal_addresses WHERE room_id = $1 AND address = $2")
        .bind(room_id.as_str())
        .bind(address.as_str())
        .execute(pool)
        .await?;
    Ok(())
}

/// The portal's addresses (empty: the room is no portal, or none is left).
pub async fn addresses(pool: &PgPool, room_id: &RoomId) -> sqlx::Result<Vec<KimAddress>> {
    let rows: Vec<String> = sqlx::query_scalar(
        "SELECT address FROM portal_addresses WHERE room_id = $1 ORDER BY address",
    )
    .bind(room_id.as_str())
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|address| address.parse().ok())
        .collect())
}

/// The room where `address` was added most recently: where a new mail of
/// that practice goes when it replies to nothing the bridge knows.
pub async fn latest_room_of(
    pool: &PgPool,
    address: &KimAddress,
) -> sqlx::Result<Option<OwnedRoomId>> {
    let room: Option<String> = sqlx::query_scalar(
        "SELECT room_id FROM portal_addresses WHERE address = $1 ORDER BY added_at DESC LIMIT 1",
    )
    .bind(address.as_str())
    .fetch_optional(pool)
    .await?;
    Ok(room.and_then(|room| RoomId::parse(room).ok()))
}

/// Every portal with at least one address.
pub async fn all(pool: &PgPool) -> sqlx::Result<Vec<Portal>> {
    let rows: Vec<(String, Vec<String>)> = sqlx::query_as(
        "SELECT room_id, array_agg(address ORDER BY address) FROM portal_addresses
         GROUP BY room_id ORDER BY room_id",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(room_id, addresses)| {
            Some(Portal {
                room_id: RoomId::parse(room_id).ok()?,
                addresses: addresses
                    .into_iter()
                    .filter_map(|a| a.parse().ok())
                    .collect(),
            })
        })
        .collect())
}
