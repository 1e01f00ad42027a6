//! The router: every endpoint family registers itself; what matches no
//! route is answered in the Matrix error format.

use axum::{Router, middleware, response::IntoResponse};
use tower_http::{
    catch_panic::CatchPanicLayer,
    cors::{Any, CorsLayer},
    trace::TraceLayer,
};

use super::{error::ApiError, security_headers};
use crate::{client_api, metrics, server::Homeserver};

pub fn build(server: Homeserver) -> Router {
    let router = client_api::routes(Router::new());
    let router = metrics::http::routes(router, &server.config.metrics);
    router
        .fallback(|| async { ApiError::unrecognized() })
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        .layer(CatchPanicLayer::custom(|_| {
            tracing::error!("request handler panicked");
            ApiError::Internal(anyhow::anyhow!("handler panicked")).into_response()
        }))
        // Outside the panic catcher, so panics are counted as the 500s they become.
        .layer(middleware::from_fn_with_state(server.metrics.http.clone(), metrics::http::track))
        .layer(TraceLayer::new_for_http())
        // Web clients (Element Web) call from another origin.
        .layer(CorsLayer::new().allow_origin(Any).allow_methods(Any).allow_headers(Any))
        // Outermost, so CORS preflights and caught panics carry them too.
        .layer(middleware::from_fn(security_headers::add))
        .with_state(server)
}
