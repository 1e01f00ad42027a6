//! Ghosts: registering the Matrix user of a KIM address (with
//! `m.login.application_service`) and giving it its display name.

use anyhow::Context as _;
use ruma::api::{
    client::{
        account::register::{self, LoginType, RegistrationKind},
        profile::set_display_name,
    },
    error::ErrorKind,
};

use crate::kim::address::KimAddress;
use crate::{bridge::Bridge, store};

/// Registers the ghost of `address` unless the bridge did before; an id the
/// homeserver already has counts as registered.
pub async fn ensure_registered(bridge: &Bridge, address: &KimAddress) -> anyhow::Result<()> {
    let ghost = bridge.ghost_of(address);
    if store::ghosts::is_registered(&bridge.db, &ghost).await? {
        return Ok(());
    }
    let mut request = register::v3::Request::new();
    request.username = Some(ghost.localpart().to_owned());
    request.kind = RegistrationKind::User;
    request.inhibit_login = true;
    request.login_type = Some(LoginType::ApplicationService);
    match bridge.homeserver.send(request).await {
        Ok(_) => {}
        Err(err) if err.error_kind() == Some(&ErrorKind::UserInUse) => {}
        Err(err) => return Err(err).context("registering the ghost"),
    }
    let displayname = bridge.config.display_name(address);
    // The per-field profile endpoint replaces this one only from spec v1.16;
    // the client speaks v1.11 paths.
    #[allow(deprecated)]
    let request = set_display_name::v3::Request::new(ghost.clone(), Some(displayname.clone()));
    bridge
        .homeserver
        .send_as(request, Some(&ghost), None)
        .await
        .context("setting the ghost's display name")?;
    store::ghosts::insert(&bridge.db, &ghost, address, &displayname).await?;
    tracing::info!(%ghost, "ghost registered");
    Ok(())
}
