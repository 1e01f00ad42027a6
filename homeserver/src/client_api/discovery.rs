//! What a client asks before logging in: supported versions, well-known
//! discovery, support contacts, capabilities.

use std::collections::BTreeMap;

use axum::Router;
use ruma::{
    OwnedUserId,
    api::client::{
        discovery::{
            discover_homeserver::{self, HomeserverInfo},
            discover_support::{self, Contact, ContactRole},
            get_capabilities::{
                self,
                v3::{Capabilities, ChangePasswordCapability, RoomVersionStability, RoomVersionsCapability},
            },
            get_supported_versions,
        },
        thirdparty::get_protocols,
    },
};

use crate::{
    http::{ApiResult, Args, RouterExt},
    server::Homeserver,
    tim::room_rules::{DEFAULT_ROOM_VERSION, ROOM_VERSIONS},
};

/// Spec versions we implement; TI-M requires v1.11 or later.
const VERSIONS: &[&str] = &["v1.11", "v1.12", "v1.13"];

pub fn routes(router: Router<Homeserver>) -> Router<Homeserver> {
    router
        .endpoint(versions)
        .endpoint(well_known_client)
        .endpoint(well_known_support)
        .endpoint(capabilities)
        .endpoint(third_party_protocols)
}

async fn versions(_: Homeserver, _: Args<get_supported_versions::Request>) -> ApiResult<get_supported_versions::Response> {
    let mut response = get_supported_versions::Response::new(VERSIONS.iter().map(|v| (*v).to_owned()).collect());
    response.unstable_features = BTreeMap::from([
        ("org.matrix.msc3916.stable".to_owned(), true),
        // Simplified sliding sync (MSC4186), which Element X requires.
        ("org.matrix.simplified_msc3575".to_owned(), true),
        // TI-M A_25395-03: threads (MSC3440) are not offered; said outright
        // so clients hide their thread views.
        ("org.matrix.msc3440.stable".to_owned(), false),
    ]);
    Ok(response)
}

async fn well_known_client(server: Homeserver, _: Args<discover_homeserver::Request>) -> ApiResult<discover_homeserver::Response> {
    Ok(discover_homeserver::Response::new(HomeserverInfo::new(server.config.client_base_url())))
}

async fn well_known_support(server: Homeserver, _: Args<discover_support::Request>) -> ApiResult<discover_support::Response> {
    let support = &server.config.support;
    let mut contact = Contact::with_email_address(ContactRole::Admin, support.admin_email.clone().unwrap_or_else(|| format!("admin@{}", server.server_name())));
    contact.matrix_id = support.admin_matrix_id.as_deref().and_then(|id| OwnedUserId::try_from(id).ok());
    let mut response = discover_support::Response::with_contacts(vec![contact]);
    response.support_page = support.support_page.clone();
    Ok(response)
}

async fn capabilities(_: Homeserver, _: Args<get_capabilities::v3::Request>) -> ApiResult<get_capabilities::v3::Response> {
    let mut capabilities = Capabilities::new();
    capabilities.change_password = ChangePasswordCapability::new(true);
    capabilities.room_versions = RoomVersionsCapability::new(
        DEFAULT_ROOM_VERSION,
        ROOM_VERSIONS.iter().map(|v| (v.clone(), RoomVersionStability::Stable)).collect(),
    );
    Ok(get_capabilities::v3::Response::new(capabilities))
}

/// No third-party networks are bridged through the directory (the KIM
/// bridge works through room invites), so the list is empty.
async fn third_party_protocols(_: Homeserver, args: Args<get_protocols::v3::Request>) -> ApiResult<get_protocols::v3::Response> {
    args.session()?;
    Ok(get_protocols::v3::Response::new(Default::default()))
}
