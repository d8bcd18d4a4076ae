//! The server's router: every route, and the two layers in front of them all.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::middleware::from_fn_with_state;
use axum::response::Response;
use axum::routing::get;
use serde_json::json;

use crate::serve::error::ApiError;
use crate::serve::http::{Auth, authorize, json_response, refuse_large};
use crate::serve::state::AppState;
use crate::serve::{openai, playground, tokenize};

/// Every route, behind the two layers: a declared body too large is refused, and with `api_key` every
/// route but `/health` and the playground's page needs the key.
pub fn router(state: Arc<AppState>, api_key: Option<String>) -> Router {
    let limit = state.served.limits.max_body_bytes;
    let auth = Auth {
        key: api_key.map(Into::into),
        public: |path| path == "/health" || playground::is_public(path),
    };
    Router::new()
        .merge(openai::router())
        .route("/health", get(health))
        .merge(tokenize::router())
        // The playground: its page at `/`, its trace stream and helpers under /v1/stoplab/.
        .merge(playground::router())
        .fallback(|| async {
            ApiError::not_found(
                "no such route; stoplab serves /v1/completions, /v1/chat/completions, /v1/models, /health, \
                 /tokenize and /detokenize",
                "unknown_route",
            )
        })
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        .layer(from_fn_with_state(auth, authorize))
        .layer(from_fn_with_state(limit, refuse_large))
        .with_state(state)
}

async fn health(State(state): State<Arc<AppState>>) -> Response {
    let q = &state.queue;
    let st = &q.stats;
    json_response(
        StatusCode::OK,
        &json!({
            "status": "ok",
            "model": state.served.model_ids[0],
            "running": st.running.load(Ordering::SeqCst),
            "busy": q.taken(),
            "queue_capacity": q.waiting_capacity(),
            "completed": st.completed.load(Ordering::SeqCst),
            "cancelled": st.cancelled.load(Ordering::SeqCst),
            "failed": st.failed.load(Ordering::SeqCst),
            "speculation": {
                "default": state.served.speculation.is_some(),
                "steps": st.spec_steps.load(Ordering::SeqCst),
                "drafted_tokens": st.drafted.load(Ordering::SeqCst),
                "accepted_tokens": st.accepted.load(Ordering::SeqCst),
            },
        }),
    )
}
