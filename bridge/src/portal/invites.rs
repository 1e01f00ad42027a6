//! Membership of ghosts and the bot: a staff member inviting a ghost opens
//! (or extends) a portal; anyone else's invitation is refused with a
//! notice, because only staff may bring a KIM address into a room (a member
//! must never make the insurer's mailbox mail someone of their choosing).

use anyhow::Context as _;
use ruma::{
    RoomId, UserId,
    api::client::membership::{invite_user, join_room_by_id, leave_room},
    events::room::member::MembershipState,
};

use super::{ghosts, notices};
use crate::kim::address::KimAddress;
use crate::{
    bridge::Bridge,
    matrix::account_kind::{self, AccountKind},
    store,
};

/// Whether `user` may bring KIM addresses into rooms and use the bot's
/// commands: staff accounts and the configured extra admins.
pub async fn is_staff(bridge: &Bridge, user: &UserId) -> anyhow::Result<bool> {
    if bridge
        .config
        .management
        .extra_admins
        .iter()
        .any(|admin| admin == user)
    {
        return Ok(true);
    }
    if user.server_name() != bridge.config.homeserver.server_name {
        return Ok(false);
    }
    match bridge
        .homeserver
        .send(account_kind::Request::new(user.to_owned()))
        .await
    {
        Ok(response) => Ok(response.kind == AccountKind::Staff),
        Err(err) if err.error_kind() == Some(&ruma::api::error::ErrorKind::NotFound) => Ok(false),
        Err(err) => Err(err).context("asking the homeserver for the account kind"),
    }
}

/// A ghost's membership changed in a room.
pub async fn ghost_membership(
    bridge: &Bridge,
    room_id: &RoomId,
    ghost: &UserId,
    address: &KimAddress,
    sender: &UserId,
    membership: &MembershipState,
) -> anyhow::Result<()> {
    match membership {
        MembershipState::Invite => {
            // Our own invitations (`!kim invite`) were handled when made.
            if sender == bridge.bot || bridge.address_of_ghost(sender).is_some() {
                return Ok(());
            }
            if is_staff(bridge, sender).await? {
                open(bridge, room_id, address, sender).await
            } else {
                refuse(bridge, room_id, ghost, sender).await
            }
        }
        MembershipState::Leave | MembershipState::Ban => {
            store::portals::remove_address(&bridge.db, room_id, address).await?;
            Ok(())
        }
        _ => Ok(()),
    }
}

/// The ghost joins and its address becomes part of the room's portal.
pub async fn open(
    bridge: &Bridge,
    room_id: &RoomId,
    address: &KimAddress,
    added_by: &UserId,
) -> anyhow::Result<()> {
    ghosts::ensure_registered(bridge, address).await?;
    let ghost = bridge.ghost_of(address);
    // Its device and keys exist before it joins: members' clients query
    // the keys of a user when they see the join, and a query answered
    // before the device existed would leave the ghost without room keys.
    // Every room: one may turn on encryption later.
    bridge
        .crypto
        .device(&ghost)
        .await
        .context("the ghost's device")?;
    bridge
        .homeserver
        .send_as(
            join_room_by_id::v3::Request::new(room_id.to_owned()),
            Some(&ghost),
            None,
        )
        .await
        .context("the ghost joining")?;
    if store::portals::add_address(&bridge.db, room_id, address, added_by).await? {
        tracing::info!(%room_id, %ghost, %added_by, "KIM address added to a portal");
    }
    Ok(())
}

/// Invites the ghost of `address` into a room the bridge can act in (as its
/// bot or a ghost already there) on a staff member's command, then opens.
pub async fn invite(
    bridge: &Bridge,
    room_id: &RoomId,
    inviter: &UserId,
    address: &KimAddress,
    added_by: &UserId,
) -> anyhow::Result<()> {
    ghosts::ensure_registered(bridge, address).await?;
    let ghost = bridge.ghost_of(address);
    let as_user = (inviter != bridge.bot).then_some(inviter);
    let request = invite_user::v3::Request::new(
        room_id.to_owned(),
        invite_user::v3::InvitationRecipient::UserId(invite_user::v3::InviteUserId::new(
            ghost.clone(),
        )),
    );
    match bridge.homeserver.send_as(request, as_user, None).await {
        Ok(_) => {}
        // Already invited or joined: joining settles it.
        Err(err) if err.error_kind() == Some(&ruma::api::error::ErrorKind::Forbidden) => {}
        Err(err) => return Err(err).context("inviting the ghost"),
    }
    open(bridge, room_id, address, added_by).await
}

/// Someone who is not staff invited a ghost: it joins to say why it does
/// not stay, and leaves.
async fn refuse(
    bridge: &Bridge,
    room_id: &RoomId,
    ghost: &UserId,
    inviter: &UserId,
) -> anyhow::Result<()> {
    tracing::info!(%room_id, %ghost, %inviter, "refused a KIM invitation from a non-staff account");
    bridge
        .homeserver
        .send_as(
            join_room_by_id::v3::Request::new(room_id.to_owned()),
            Some(ghost),
            None,
        )
        .await
        .context("the ghost joining to refuse")?;
    notices::notice(
        bridge,
        room_id,
        ghost,
        &format!("kim-refused-{}", ghost.localpart()),
        None,
        "Nur Mitarbeitende der Versicherung können KIM-Adressen in einen Raum einladen. \
         (Only the insurer's staff may add KIM addresses to a room.)",
    )
    .await?;
    bridge
        .homeserver
        .send_as(
            leave_room::v3::Request::new(room_id.to_owned()),
            Some(ghost),
            None,
        )
        .await
        .context("the ghost leaving")?;
    Ok(())
}

/// The bot was invited. Staff may bring it into any room (to use `!kim`
/// commands there); a direct chat becomes their management room. Others'
/// invitations are declined.
pub async fn bot_invited(
    bridge: &Bridge,
    room_id: &RoomId,
    inviter: &UserId,
    is_direct: bool,
) -> anyhow::Result<()> {
    if !is_staff(bridge, inviter).await? {
        bridge
            .homeserver
            .send(leave_room::v3::Request::new(room_id.to_owned()))
            .await
            .context("the bot declining")?;
        return Ok(());
    }
    // Device before join, as for ghosts in `open`.
    bridge
        .crypto
        .device(&bridge.bot)
        .await
        .context("the bot's device")?;
    bridge
        .homeserver
        .send(join_room_by_id::v3::Request::new(room_id.to_owned()))
        .await
        .context("the bot joining")?;
    if is_direct {
        store::management_rooms::insert(&bridge.db, room_id, inviter).await?;
        tracing::info!(%room_id, %inviter, "management room");
    }
    Ok(())
}
