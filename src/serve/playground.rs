//! The stop playground: a page, served at `GET /`, where you watch a model decide to stop.
//!
//! The page (`src/serve/playground/`: one HTML file, one script, one style sheet, compiled into the binary;
//! no build step, nothing fetched from elsewhere) calls the same HTTP API as any client. Where OpenAI's
//! shapes have no room for what it shows, it uses these routes:
//!
//! * `POST /v1/stoplab/trace`: one generation as server-sent events, one per engine step, the rows of
//!   `stoplab trace`: `{"type": "start", "prompt", "prompt_tokens", ...}`, then per token
//!   `{"type": "token", ...}` ([`trace::row_json`] plus the escaped and hex forms of its bytes and the top
//!   alternatives' text), then `{"type": "finish", ...}` with the explanation `trace` prints
//!   ([`trace::explain`]), then `data: [DONE]`. The body names the prompt format and every stop setting;
//!   they go through the one validation ([`UserSettings::validate`]) and a bad one is a 400 naming its
//!   JSON path (`stop[1]`, `max_tokens`). The prompt is checked against the context as the API checks it
//!   (the same [`Fitted`]): beyond it, a 400 with `code: "context_length_exceeded"`.
//! * `POST /v1/stoplab/render`: the prompt a format renders from messages, and its token count.
//! * `GET /v1/stoplab/info`: the model, its context, its end tokens, whether weights are loaded.
//! * `GET /v1/stoplab/scenarios`: the shipped scenarios (`scenarios/*.toml`), settings included.
//!
//! The page and its two files need no API key (they hold no data); every other route does when the server
//! has one ([`is_public`]), and the page asks for it.
//!
//! Files: this one (the routes, the page's files), `playground/request.rs` (a request read and checked;
//! `/render`), `playground/trace.rs` (the trace stream), `playground/info.rs` (`/info`, `/scenarios`).
//!
//! ```text
//! $ stoplab serve --replay-only &
//! $ curl -sN localhost:8080/v1/stoplab/trace -H 'Content-Type: application/json' -d '{"format": "transcript",
//!     "messages": [{"role": "user", "content": "Capital of Germany?"}],
//!     "replay": " Berlin.\nuser: And France?", "stop": ["\nuser:"]}'
//! ```
//!
//! [`trace::row_json`]: crate::lab::trace::row_json
//! [`trace::explain`]: crate::lab::trace::explain
//! [`UserSettings::validate`]: crate::pipeline::settings::UserSettings::validate
//! [`Fitted`]: crate::serve::request::Fitted

mod info;
mod request;
mod trace;

use std::sync::Arc;

use axum::Router;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::serve::state::AppState;

const INDEX_HTML: &str = include_str!("playground/index.html");
const APP_JS: &str = include_str!("playground/app.js");
const STYLE_CSS: &str = include_str!("playground/style.css");

/// The page's own files: served without an API key.
const PUBLIC: [&str; 3] = ["/", "/playground/app.js", "/playground/style.css"];

/// Whether `path` is one of the page's files, which need no API key.
pub fn is_public(path: &str) -> bool {
    PUBLIC.contains(&path)
}

/// The playground's routes, to merge into the server's router (behind its layers: the key, the body size).
pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route(
            "/",
            get(|| async { page("text/html; charset=utf-8", INDEX_HTML) }),
        )
        .route(
            "/playground/app.js",
            get(|| async { page("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route(
            "/playground/style.css",
            get(|| async { page("text/css; charset=utf-8", STYLE_CSS) }),
        )
        .route("/v1/stoplab/info", get(info::info))
        .route("/v1/stoplab/scenarios", get(info::scenarios))
        .route("/v1/stoplab/render", post(request::render))
        .route("/v1/stoplab/trace", post(trace::trace))
}

/// A file of the page. Nothing but this server is allowed as a source: the page works offline, and a
/// page that cannot load or send anything elsewhere cannot leak the API key typed into it.
fn page(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; \
                 base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
            ),
        ],
        body,
    )
        .into_response()
}
