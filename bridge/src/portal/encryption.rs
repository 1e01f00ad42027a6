//! Encrypted rooms: whether a room is encrypted and how (its state, read as
//! a bridge user in it), and who its members are, for encrypting what the
//! bridge posts and for deciding which bridge device decrypts.

use anyhow::Context as _;
use ruma::{
    OwnedUserId, RoomId, UserId,
    api::client::membership::joined_members,
    events::{
        StateEventType,
        room::{
            encryption::RoomEncryptionEventContent,
            history_visibility::{HistoryVisibility, RoomHistoryVisibilityEventContent},
        },
    },
};

use super::room_state;
use crate::{bridge::Bridge, crypto::RoomEncryption};

/// The room's encryption settings, `None` in an unencrypted room. `as_user`
/// is a bridge user in the room (the bot when it is the bot).
pub async fn settings(
    bridge: &Bridge,
    room_id: &RoomId,
    as_user: &UserId,
) -> anyhow::Result<Option<RoomEncryption>> {
    let Some(encryption) = room_state::content::<RoomEncryptionEventContent>(
        bridge,
        room_id,
        as_user,
        StateEventType::RoomEncryption,
        "",
    )
    .await?
    else {
        return Ok(None);
    };
    let history_visibility = room_state::content::<RoomHistoryVisibilityEventContent>(
        bridge,
        room_id,
        as_user,
        StateEventType::RoomHistoryVisibility,
        "",
    )
    .await?
    .map_or(HistoryVisibility::Shared, |content| {
        content.history_visibility
    });
    Ok(Some(RoomEncryption {
        encryption,
        history_visibility,
    }))
}

/// The room's joined members: whose devices get the room key.
pub async fn joined_members(
    bridge: &Bridge,
    room_id: &RoomId,
    as_user: &UserId,
) -> anyhow::Result<Vec<OwnedUserId>> {
    let response = bridge
        .homeserver
        .send_as(
            joined_members::v3::Request::new(room_id.to_owned()),
            room_state::as_bridge_user(bridge, as_user),
            None,
        )
        .await
        .context("listing the room's members")?;
    Ok(response.joined.into_keys().collect())
}
