//! Administration: the insurer's staff accounts (TI-M, see
//! `tim::accounts`), made, listed and deactivated from the operator's
//! command line or through `/_tim/admin/v1/staff` by a server admin, and
//! the shared-secret registration API (`/_synapse/admin/v1/register`, the
//! protocol Synapse's tools speak, so provisioning scripts and the load
//! test's seeder work against either server; it makes staff accounts too).

use axum::{
    Json, Router,
    extract::{Path, State},
    routing::{get, post},
};
use hmac::{Hmac, Mac};
use ruma::{OwnedUserId, UserId};
use serde::Deserialize;
use sha1::Sha1;

use super::{account::{create_account, deactivate_account, new_user_id}, session::open_session};
use crate::{
    auth::tokens,
    http::{ApiError, ApiResult, auth::ServerAdmin},
    server::Homeserver,
    storage::{self, users::StaffAccount},
    tim::accounts::AccountKind,
};

const REGISTER_PATH: &str = "/_synapse/admin/v1/register";
const STAFF_PATH: &str = "/_tim/admin/v1/staff";
const DEACTIVATE_STAFF_PATH: &str = "/_tim/admin/v1/staff/{user_id}/deactivate";
/// How long a registration nonce stays valid.
const NONCE_LIFETIME_MS: i64 = 60_000;

pub fn routes(router: axum::Router<Homeserver>) -> Router<Homeserver> {
    router
        .route(REGISTER_PATH, get(register_nonce).post(register_with_secret))
        .route(STAFF_PATH, get(list_staff_accounts).post(create_staff_account))
        .route(DEACTIVATE_STAFF_PATH, post(deactivate_staff_account))
}

/// Creates a staff account with a password (CLI `create-user`, the admin
/// APIs).
pub async fn create_user(server: &Homeserver, localpart: &str, password: &str, is_admin: bool, displayname: Option<&str>) -> ApiResult<OwnedUserId> {
    let user_id = new_user_id(server, localpart)?;
    create_account(server, &user_id, password, is_admin).await?;
    if let Some(name) = displayname {
        storage::users::set_displayname(server.db.user_shard(&user_id), &user_id, Some(name)).await?;
    }
    Ok(user_id)
}

/// Every staff account, deactivated ones included, by user id: one query
/// per database.
pub async fn staff_accounts(server: &Homeserver) -> ApiResult<Vec<StaffAccount>> {
    let mut accounts = Vec::new();
    for shard in server.db.shards() {
        accounts.extend(storage::users::staff_accounts(&shard.pool).await?);
    }
    accounts.sort_by(|a, b| a.user_id.cmp(&b.user_id));
    Ok(accounts)
}

/// Deactivates an active staff account (leaves its rooms, ends its
/// sessions); 404 for anything else: insured persons' accounts are not
/// the staff API's to end.
pub async fn deactivate_staff(server: &Homeserver, user_id: &UserId) -> ApiResult<()> {
    let local = user_id.server_name() == server.server_name();
    let kind = if local { storage::users::account_kind(server.db.user_shard(user_id), user_id).await? } else { None };
    if kind != Some(AccountKind::Staff) {
        return Err(ApiError::not_found(format!("No active staff account {user_id}")));
    }
    deactivate_account(server, user_id).await
}

#[derive(Deserialize)]
struct NewStaffAccount {
    username: String,
    password: String,
    #[serde(default)]
    admin: bool,
    #[serde(default)]
    displayname: Option<String>,
}

async fn create_staff_account(State(server): State<Homeserver>, _: ServerAdmin, body: axum::body::Bytes) -> ApiResult<Json<serde_json::Value>> {
    let request: NewStaffAccount = serde_json::from_slice(&body).map_err(|err| ApiError::bad_json(err.to_string()))?;
    let user_id = create_user(&server, &request.username, &request.password, request.admin, request.displayname.as_deref()).await?;
    Ok(Json(serde_json::json!({ "user_id": user_id })))
}

async fn list_staff_accounts(State(server): State<Homeserver>, _: ServerAdmin) -> ApiResult<Json<serde_json::Value>> {
    Ok(Json(serde_json::json!({ "accounts": staff_accounts(&server).await? })))
}

async fn deactivate_staff_account(State(server): State<Homeserver>, _: ServerAdmin, Path(user_id): Path<String>) -> ApiResult<Json<serde_json::Value>> {
    let user_id = UserId::parse(&user_id).map_err(|_| ApiError::invalid_param(format!("{user_id:?} is not a user id")))?;
    deactivate_staff(&server, &user_id).await?;
    Ok(Json(serde_json::json!({})))
}

fn shared_secret(server: &Homeserver) -> ApiResult<&str> {
    server.config.registration.shared_secret.as_deref().ok_or_else(|| ApiError::new(
        http::StatusCode::BAD_REQUEST,
        ruma::api::error::ErrorKind::Unknown,
        "Shared secret registration is not enabled",
    ))
}

async fn register_nonce(State(server): State<Homeserver>) -> ApiResult<Json<serde_json::Value>> {
    shared_secret(&server)?;
    let nonce = tokens::random_string(32);
    sqlx::query("INSERT INTO admin_register_nonces (nonce, created_ts) VALUES ($1, $2)")
        .bind(&nonce)
        .bind(storage::now_ms())
        .execute(server.db.global())
        .await?;
    Ok(Json(serde_json::json!({ "nonce": nonce })))
}

#[derive(Deserialize)]
struct SecretRegistration {
    nonce: String,
    username: String,
    password: String,
    #[serde(default)]
    admin: bool,
    mac: String,
    #[serde(default)]
    displayname: Option<String>,
}

async fn register_with_secret(State(server): State<Homeserver>, body: axum::body::Bytes) -> ApiResult<Json<serde_json::Value>> {
    let secret = shared_secret(&server)?;
    let request: SecretRegistration = serde_json::from_slice(&body).map_err(|err| ApiError::bad_json(err.to_string()))?;

    let fresh: Option<i64> = sqlx::query_scalar("DELETE FROM admin_register_nonces WHERE nonce = $1 RETURNING created_ts")
        .bind(&request.nonce)
        .fetch_optional(server.db.global())
        .await?;
    if fresh.is_none_or(|created| storage::now_ms() - created >= NONCE_LIFETIME_MS) {
        return Err(ApiError::forbidden("Unrecognised nonce"));
    }

    let mut mac = Hmac::<Sha1>::new_from_slice(secret.as_bytes()).map_err(|err| ApiError::Internal(err.into()))?;
    let admin_flag: &[u8] = if request.admin { b"admin" } else { b"notadmin" };
    for (i, part) in [request.nonce.as_bytes(), request.username.as_bytes(), request.password.as_bytes(), admin_flag].into_iter().enumerate() {
        if i > 0 {
            mac.update(b"\0");
        }
        mac.update(part);
    }
    let given = hex::decode(&request.mac).map_err(|_| ApiError::forbidden("HMAC incorrect"))?;
    mac.verify_slice(&given).map_err(|_| ApiError::forbidden("HMAC incorrect"))?;

    let user_id = create_user(&server, &request.username, &request.password, request.admin, request.displayname.as_deref()).await?;
    let (access_token, device_id) = open_session(&server, &user_id, None, None).await?;
    Ok(Json(serde_json::json!({
        "user_id": user_id,
        "access_token": access_token,
        "device_id": device_id,
        "home_server": server.server_name(),
    })))
}
