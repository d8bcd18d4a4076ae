//! The HTTP plumbing every route shares, written once: reading a body within the limits, running CPU work
//! off the async runtime, JSON and server-sent-event responses, an [`ApiError`] as a response, and the
//! two layers in front of every route (a declared body too large, the API key).

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde_json::Value;

use crate::serve::config::Limits;
use crate::serve::error::ApiError;

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut res = json_response(self.status, &self.body());
        if let Some(s) = self.retry_after {
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        res
    }
}

pub fn json_response(status: StatusCode, value: &Value) -> Response {
    let body = serde_json::to_vec(value).expect("JSON values serialise");
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// Reads a request's JSON body: 415 when it is declared as something else, 413 past the limit, 408 when it
/// does not arrive within the read timeout.
pub async fn read_body(limits: &Limits, req: Request) -> Result<Bytes, ApiError> {
    check_json(req.headers())?;
    let limit = limits.max_body_bytes;
    let read = async {
        let mut stream = req.into_body().into_data_stream();
        let mut buf = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| {
                ApiError::bad_body(format!("the request body could not be read: {e}"))
            })?;
            if buf.len() + chunk.len() > limit {
                return Err(ApiError::too_large(limit));
            }
            buf.extend_from_slice(&chunk);
        }
        Ok(Bytes::from(buf))
    };
    tokio::time::timeout(limits.read_timeout, read)
        .await
        .map_err(|_| ApiError::timeout(limits.read_timeout))?
}

/// A body declared as anything but JSON (`application/json`, or a `+json` type) is a 415, as llama.cpp's
/// server answers: curl's `-d` alone sends a form (`application/x-www-form-urlencoded`). A body with no
/// declared type is read as JSON.
fn check_json(headers: &axum::http::HeaderMap) -> Result<(), ApiError> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Ok(());
    };
    let declared = value.to_str().unwrap_or("(not text)");
    let essence = declared
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    if essence == "application/json" || essence.ends_with("+json") {
        return Ok(());
    }
    Err(ApiError::unsupported_media_type(declared))
}

/// Runs CPU work (JSON, chat templates, tokenizing) off the runtime's threads, so a large body cannot
/// stall the other connections.
pub async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|_| Err(ApiError::internal("reading the request panicked")))
}

/// A server-sent-events response with this body (the OpenAI streams and the playground's trace stream).
pub fn event_stream(body: Body) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// One server-sent event carrying `value` as JSON.
pub fn sse(value: &Value) -> Bytes {
    let mut out = b"data: ".to_vec();
    serde_json::to_writer(&mut out, value).expect("JSON values serialise");
    out.extend_from_slice(b"\n\n");
    out.into()
}

/// The event that ends every stream, as OpenAI's does.
pub const DONE: Bytes = Bytes::from_static(b"data: [DONE]\n\n");

/// A declared `Content-Length` beyond the limit (`max_body_bytes`, the state) is answered 413 from the
/// header, before any of the body is read (the connection is then closed rather than drained).
pub async fn refuse_large(State(limit): State<usize>, req: Request, next: Next) -> Response {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u128>().ok());
    if declared.is_some_and(|n| n > limit as u128) {
        let mut res = ApiError::too_large(limit).into_response();
        res.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        return res;
    }
    next.run(req).await
}

/// Who may call which route.
#[derive(Debug, Clone)]
pub struct Auth {
    /// When set, a route needs `Authorization: Bearer KEY` unless it is `public`.
    pub key: Option<Arc<str>>,
    pub public: fn(&str) -> bool,
}

/// `Authorization: Bearer KEY` on every route but the public ones, when the server has a key.
pub async fn authorize(State(auth): State<Auth>, req: Request, next: Next) -> Response {
    if let Some(key) = &auth.key
        && !(auth.public)(req.uri().path())
    {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        match given {
            None => {
                return ApiError::unauthorized(
                    "missing API key: send `Authorization: Bearer KEY` (the server was started with --api-key)",
                )
                .into_response();
            }
            Some(k) if !constant_time_eq(k.trim().as_bytes(), key.as_bytes()) => {
                return ApiError::unauthorized("incorrect API key").into_response();
            }
            Some(_) => {}
        }
    }
    next.run(req).await
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
