//! Encrypted rooms: whether a room is encrypted and how (its state, read as
//! a bridge user in it), and who its members are, for encrypting what the
//! bridge posts and for deciding which bridge device decrypts.

use anyhow::Context as _;
use ruma::{
    OwnedUserId, RoomId, UserId,
    api::client::{membership::joined_members, state::get_state_event_for_key},
    events::{
        StateEventType,
        room::{
            encryption::RoomEncryptionEventContent,
            history_visibility::{HistoryVisibility, RoomHistoryVisibilityEventContent},
        },
    },
};

use crate::{bridge::Bridge, crypto::RoomEncryption};

/// The room's encryption settings, `None` in an unencrypted room. `as_user`
/// is a bridge user in the room (the bot when it is the bot).
pub async fn settings(
    bridge: &Bridge,
    room_id: &RoomId,
    as_user: &UserId,
) -> anyhow::Result<Option<RoomEncryption>> {
    let Some(encryption) = state::<RoomEncryptionEventContent>(
        bridge,
        room_id,
        as_user,
        StateEventType::RoomEncryption,
    )
    .await?
    else {
        return Ok(None);
    };
    let history_visibility = state::<RoomHistoryVisibilityEventContent>(
        bridge,
        room_id,
        as_user,
        StateEventType::RoomHistoryVisibility,
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
            as_bridge_user(bridge, as_user),
            None,
        )
        .await
        .context("listing the room's members")?;
    Ok(response.joined.into_keys().collect())
}

/// One state event's content (empty state key), `None` when the room has
/// none.
async fn state<T: serde::de::DeserializeOwned>(
    bridge: &Bridge,
    room_id: &RoomId,
    as_user: &UserId,
    event_type: StateEventType,
) -> anyhow::Result<Option<T>> {
    let request =
        get_state_event_for_key::v3::Request::new(room_id.to_owned(), event_type, String::new());
    match bridge
        .homeserver
        .send_as(request, as_bridge_user(bridge, as_user), None)
        .await
    {
        Ok(response) => Ok(Some(
            serde_json::from_str(response.event_or_content.get())
                .context("the room state's content")?,
        )),
        Err(err) if err.error_kind() == Some(&ruma::api::error::ErrorKind::NotFound) => Ok(None),
        Err(err) => Err(err).context("reading the room state"),
    }
}

/// Requests as the bot carry no `user_id`.
fn as_bridge_user<'a>(bridge: &Bridge, user: &'a UserId) -> Option<&'a UserId> {
    (user != bridge.bot).then_some(user)
}
