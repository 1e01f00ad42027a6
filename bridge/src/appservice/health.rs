//! `GET /health`: whether the bridge can do its work — its database and the
//! homeserver answer — with the last SMTP send and POP3 poll and the queue
//! lengths. 503 when the database or the homeserver is unreachable.

use axum::{Json, extract::State};
use http::StatusCode;
use ruma::api::client::account::whoami;
use serde_json::{Value as JsonValue, json};

use crate::{
    bridge::Bridge,
    store::{inbound_mails, outbound_queue, transactions},
};

pub async fn health(State(bridge): State<Bridge>) -> (StatusCode, Json<JsonValue>) {
    let database = async {
        Ok::<_, sqlx::Error>((
            outbound_queue::len(&bridge.db).await?,
            transactions::pending(&bridge.db).await?,
            inbound_mails::counts(&bridge.db).await?,
        ))
    }
    .await;
    let homeserver = bridge.homeserver.send(whoami::v3::Request::new()).await;
    let activity = bridge.status.snapshot();
    let healthy = database.is_ok() && homeserver.is_ok();
    let (outbound, incoming, inbound) = match &database {
        Ok((outbound, incoming, inbound)) => (
            json!(outbound),
            json!(incoming),
            json!(
                inbound
                    .iter()
                    .cloned()
                    .collect::<std::collections::BTreeMap<_, _>>()
            ),
        ),
        Err(_) => (JsonValue::Null, JsonValue::Null, JsonValue::Null),
    };
    let body = json!({
        "healthy": healthy,
        "database": database.as_ref().map(|_| "ok").unwrap_or_else(|_| "unreachable"),
        "homeserver": match &homeserver {
            Ok(_) => "ok".to_owned(),
            Err(err) => err.to_string(),
        },
        "last_smtp_send": activity.last_smtp_send,
        "last_smtp_error": activity.last_smtp_error,
        "last_pop3_poll": activity.last_pop3_poll,
        "last_pop3_error": activity.last_pop3_error,
        "outbound_queue": outbound,
        "incoming_events": incoming,
        "inbound_mails": inbound,
    });
    let status = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body))
}
