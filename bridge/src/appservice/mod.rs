//! The bridge's HTTP server: the Application Service API the homeserver
//! calls (transactions, user and alias queries, ping) and `/health`.

mod auth;
mod error;
mod health;
mod queries;
mod transactions;

use axum::{
    Router,
    routing::{get, post, put},
};

use crate::bridge::Bridge;

pub fn router(bridge: Bridge) -> Router {
    Router::new()
        .route(
            "/_matrix/app/v1/transactions/{txn_id}",
            put(transactions::put_transaction),
        )
        .route("/_matrix/app/v1/users/{user_id}", get(queries::query_user))
        .route("/_matrix/app/v1/rooms/{alias}", get(queries::query_alias))
        .route("/_matrix/app/v1/ping", post(queries::ping))
        .route("/health", get(health::health))
        .with_state(bridge)
}
