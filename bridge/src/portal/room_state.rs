//! Reading a room's state as a bridge user in it (a ghost, or the bot).

use anyhow::Context as _;
use ruma::{
    RoomId, UserId,
    api::client::state::get_state_event_for_key,
    events::{StateEventType, room::member::RoomMemberEventContent},
};

use crate::bridge::Bridge;

/// One state event's content, `None` when the room has none.
pub async fn content<T: serde::de::DeserializeOwned>(
    bridge: &Bridge,
    room_id: &RoomId,
    as_user: &UserId,
    event_type: StateEventType,
    state_key: &str,
) -> anyhow::Result<Option<T>> {
    let request = get_state_event_for_key::v3::Request::new(
        room_id.to_owned(),
        event_type,
        state_key.to_owned(),
    );
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

/// The name `user` goes by in the room: its member display name, else its
/// user id.
pub async fn display_name(
    bridge: &Bridge,
    room_id: &RoomId,
    as_user: &UserId,
    user: &UserId,
) -> anyhow::Result<String> {
    let member = content::<RoomMemberEventContent>(
        bridge,
        room_id,
        as_user,
        StateEventType::RoomMember,
        user.as_str(),
    )
    .await?;
    Ok(member
        .and_then(|member| member.displayname)
        .filter(|name| !name.trim().is_empty())
        .unwrap_or_else(|| user.to_string()))
}

/// Requests as the bot carry no `user_id`.
pub fn as_bridge_user<'a>(bridge: &Bridge, user: &'a UserId) -> Option<&'a UserId> {
    (user != bridge.bot).then_some(user)
}
