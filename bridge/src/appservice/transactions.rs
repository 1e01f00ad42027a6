//! `PUT /_matrix/app/v1/transactions/{txnId}`: the homeserver's pushed
//! events. The whole transaction is taken in in one database transaction
//! (its events queued, its id recorded) before we answer 200, so an
//! acknowledged event is never lost; a repeated id answers 200 and changes
//! nothing. The queued events are worked off by `dispatch`.
//!
//! The transaction's E2EE extras (MSC2409 to-device messages, MSC3202
//! device lists and key counts) go to the bridge's devices first, while the
//! transaction id is recorded but not yet committed: if that fails nothing
//! is committed and the error answer makes the homeserver send the whole
//! transaction again (the devices ignore what they already received). So a
//! room key is in the store before the events it decrypts are queued.

use axum::{
    Json,
    body::Bytes,
    extract::{Path, State},
};
use http::{HeaderMap, Method, Uri};
use ruma::api::{IncomingRequest as _, appservice::event::push_events};
use serde_json::{Value as JsonValue, json};

use super::{
    auth::check_hs_token,
    error::{ApiError, ApiResult},
};
use crate::{
    bridge::Bridge,
    crypto::TransactionExtras,
    store::transactions::{self, EventKind},
};

pub async fn put_transaction(
    State(bridge): State<Bridge>,
    Path(txn_id): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<JsonValue>> {
    check_hs_token(&bridge.config.appservice.hs_token, &headers, &uri)?;
    let mut request = http::Request::builder().method(Method::PUT).uri(uri);
    for (name, value) in &headers {
        request = request.header(name, value);
    }
    let extras: TransactionExtras =
        serde_json::from_slice(&body).map_err(|err| ApiError::bad_request(err.to_string()))?;
    let request = request
        .body(body)
        .map_err(|err| ApiError::bad_request(err.to_string()))?;
    let transaction = push_events::v1::Request::try_from_http_request(request, &[&txn_id])
        .map_err(|err| ApiError::bad_request(err.to_string()))?;

    let mut tx = bridge.db.begin().await?;
    if !transactions::record(&mut tx, transaction.txn_id.as_str()).await? {
        tracing::debug!(txn_id = %transaction.txn_id, "transaction seen before");
        return Ok(Json(json!({})));
    }
    if !extras.is_empty() {
        bridge
            .crypto
            .receive_transaction_extras(extras)
            .await
            .map_err(ApiError::internal)?;
    }
    for event in &transaction.events {
        let body: JsonValue = serde_json::from_str(event.json().get())
            .map_err(|err| ApiError::bad_request(err.to_string()))?;
        transactions::queue(
            &mut tx,
            transaction.txn_id.as_str(),
            EventKind::Timeline,
            &body,
        )
        .await?;
    }
    tx.commit().await?;
    tracing::debug!(txn_id = %transaction.txn_id, events = transaction.events.len(), "transaction taken in");
    bridge.wake_dispatcher();
    Ok(Json(json!({})))
}
