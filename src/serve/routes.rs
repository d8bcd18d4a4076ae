//! The HTTP routes: bodies in, OpenAI-shaped JSON or server-sent events out.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{Next, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tokio::sync::mpsc::UnboundedReceiver;

use crate::generate::{FinishReason, Outcome};

use super::openai::ApiError;
use super::request::{self, Endpoint, Fields, Served};
use super::worker::{Event, Place, Queue};

pub struct AppState {
    pub served: Served,
    pub queue: Queue,
    pub api_key: Option<String>,
    pub started: u64,
    pub next_id: AtomicU64,
}

pub fn router(state: Arc<AppState>) -> Router {
    let limit = state.served.limits.max_body_bytes;
    Router::new()
        .route("/v1/completions", post(completions))
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/models", get(models))
        .route("/health", get(health))
        .route("/tokenize", post(tokenize))
        .route("/detokenize", post(detokenize))
        // The playground: its page at `/`, its trace stream and helpers under /v1/stoplab/.
        .merge(super::playground::router())
        .fallback(|| async {
            ApiError::not_found(
                "no such route; stoplab serves /v1/completions, /v1/chat/completions, /v1/models, /health, \
                 /tokenize and /detokenize",
                "unknown_route",
            )
        })
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        .layer(DefaultBodyLimit::max(limit))
        .layer(from_fn_with_state(state.clone(), authorize))
        .with_state(state)
}

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

fn json_response(status: StatusCode, value: &Value) -> Response {
    let body = serde_json::to_vec(value).expect("JSON values serialise");
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// `Authorization: Bearer KEY` on every route but `/health`, when the server has a key.
async fn authorize(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    if let Some(key) = &state.api_key
        && req.uri().path() != "/health"
        && !super::playground::is_public(req.uri().path())
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

/// The body, or 413 past the limit.
fn body(state: &AppState, body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::too_large(state.served.limits.max_body_bytes)
        } else {
            ApiError::bad_body(format!("the request body could not be read: {r}"))
        }
    })
}

async fn completions(
    State(state): State<Arc<AppState>>,
    b: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    generate(state, b, Endpoint::Completions).await
}

async fn chat_completions(
    State(state): State<Arc<AppState>>,
    b: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    generate(state, b, Endpoint::Chat).await
}

/// What every response and chunk of one request shares.
struct Reply {
    endpoint: Endpoint,
    id: String,
    created: u64,
    model: String,
    prompt_tokens: usize,
}

impl Reply {
    fn object(&self, chunk: bool) -> &'static str {
        match (self.endpoint, chunk) {
            (Endpoint::Completions, _) => "text_completion",
            (Endpoint::Chat, false) => "chat.completion",
            (Endpoint::Chat, true) => "chat.completion.chunk",
        }
    }

    fn usage(&self, completion: usize) -> Value {
        json!({
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": self.prompt_tokens + completion,
        })
    }

    fn response(&self, outcome: &Outcome) -> Value {
        let mut choice = json!({"index": 0});
        match self.endpoint {
            Endpoint::Completions => {
                choice["text"] = outcome.text.clone().into();
            }
            Endpoint::Chat => {
                choice["message"] = json!({"role": "assistant", "content": outcome.text});
            }
        }
        choice["logprobs"] = Value::Null;
        choice["finish_reason"] = outcome.finish.openai().into();
        choice["stop_reason"] = outcome.finish.stop_reason();
        json!({
            "id": self.id,
            "object": self.object(false),
            "created": self.created,
            "model": self.model,
            "choices": [choice],
            "usage": self.usage(outcome.tokens.len()),
        })
    }

    /// One SSE chunk: some text, or (with `finish`) the end of the choice.
    fn chunk(&self, text: Option<&str>, finish: Option<&FinishReason>) -> Value {
        let mut choice = json!({"index": 0});
        match self.endpoint {
            Endpoint::Completions => {
                choice["text"] = text.unwrap_or("").into();
            }
            Endpoint::Chat => {
                choice["delta"] = match text {
                    Some(t) => json!({"content": t}),
                    None => json!({}),
                };
            }
        }
        choice["logprobs"] = Value::Null;
        choice["finish_reason"] = finish.map(FinishReason::openai).into();
        choice["stop_reason"] = finish.map_or(Value::Null, FinishReason::stop_reason);
        self.wrap(json!([choice]))
    }

    fn wrap(&self, choices: Value) -> Value {
        json!({
            "id": self.id,
            "object": self.object(true),
            "created": self.created,
            "model": self.model,
            "choices": choices,
        })
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

async fn generate(
    state: Arc<AppState>,
    b: Result<Bytes, BytesRejection>,
    endpoint: Endpoint,
) -> Result<Response, ApiError> {
    let b = body(&state, b)?;
    let request = request::generation(&b, endpoint, &state.served)?;
    let n = state.next_id.fetch_add(1, Ordering::Relaxed);
    let reply = Reply {
        endpoint,
        id: match endpoint {
            Endpoint::Completions => format!("cmpl-{:x}-{n}", state.started),
            Endpoint::Chat => format!("chatcmpl-{:x}-{n}", state.started),
        },
        created: now(),
        model: state.served.model_ids[0].clone(),
        prompt_tokens: request.prompt.len(),
    };
    let stream = request.stream;
    let include_usage = request.include_usage;
    let (mut rx, place) = state.queue.submit(request)?;

    if !stream {
        let _place = place;
        loop {
            match rx.recv().await {
                Some(Event::Step(_)) => continue,
                Some(Event::Done { result: Ok(o), .. }) if o.finish == FinishReason::Cancelled => {
                    return Err(ApiError::shutting_down());
                }
                Some(Event::Done { result: Ok(o), .. }) => {
                    return Ok(json_response(StatusCode::OK, &reply.response(&o)));
                }
                Some(Event::Done { result: Err(e), .. }) => return Err(e.into()),
                Some(Event::ShuttingDown) => return Err(ApiError::shutting_down()),
                None => return Err(ApiError::internal("the model worker stopped")),
            }
        }
    }

    // Wait for the first event before answering, so errors found when the generation starts (a ban on every
    // token, say) still get their status rather than a 200 and an error event.
    let first = match rx.recv().await {
        Some(Event::Done { result: Err(e), .. }) => return Err(e.into()),
        Some(Event::ShuttingDown) => return Err(ApiError::shutting_down()),
        None => return Err(ApiError::internal("the model worker stopped")),
        Some(ev) => ev,
    };
    let mut frames = VecDeque::new();
    if endpoint == Endpoint::Chat {
        let mut start = reply.chunk(None, None);
        start["choices"][0]["delta"] = json!({"role": "assistant", "content": ""});
        frames.push_back(sse(&start));
    }
    let sse_state = SseState {
        reply,
        rx,
        first: Some(first),
        frames,
        done: false,
        include_usage,
        _place: place,
    };
    let body = futures_util::stream::unfold(sse_state, |mut st| async move {
        let frame = st.next_frame().await?;
        Some((Ok::<_, std::convert::Infallible>(frame), st))
    });
    Ok((
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(body),
    )
        .into_response())
}

fn sse(value: &Value) -> Bytes {
    let mut out = b"data: ".to_vec();
    serde_json::to_writer(&mut out, value).expect("JSON values serialise");
    out.extend_from_slice(b"\n\n");
    out.into()
}

/// A streaming response in progress. It owns the event receiver and the queue place: when the client goes
/// away the body is dropped, both with it, and the worker stops at the next token.
struct SseState {
    reply: Reply,
    rx: UnboundedReceiver<Event>,
    first: Option<Event>,
    frames: VecDeque<Bytes>,
    done: bool,
    include_usage: bool,
    /// The request's place in the queue, given back when the stream ends or its client goes away.
    _place: Place,
}

impl SseState {
    async fn next_frame(&mut self) -> Option<Bytes> {
        loop {
            if let Some(f) = self.frames.pop_front() {
                return Some(f);
            }
            if self.done {
                return None;
            }
            let event = match self.first.take() {
                Some(ev) => Some(ev),
                None => self.rx.recv().await,
            };
            match event {
                Some(Event::Step(s)) if s.text.is_empty() => {}
                Some(Event::Step(s)) => self
                    .frames
                    .push_back(sse(&self.reply.chunk(Some(&s.text), None))),
                Some(Event::Done { result: Ok(o), .. }) if o.finish == FinishReason::Cancelled => {
                    self.end_with_error(ApiError::shutting_down());
                }
                Some(Event::Done { result: Ok(o), .. }) => {
                    let chunk = self.reply.chunk(None, Some(&o.finish));
                    self.frames.push_back(sse(&chunk));
                    if self.include_usage {
                        let mut usage = self.reply.wrap(json!([]));
                        usage["usage"] = self.reply.usage(o.tokens.len());
                        self.frames.push_back(sse(&usage));
                    }
                    self.frames
                        .push_back(Bytes::from_static(b"data: [DONE]\n\n"));
                    self.done = true;
                }
                Some(Event::Done { result: Err(e), .. }) => self.end_with_error(e.into()),
                Some(Event::ShuttingDown) => self.end_with_error(ApiError::shutting_down()),
                None => self.end_with_error(ApiError::internal("the model worker stopped")),
            }
        }
    }

    /// An error after the response began: an error event (as vLLM sends), then the end of the stream.
    fn end_with_error(&mut self, e: ApiError) {
        self.frames.push_back(sse(&e.body()));
        self.frames
            .push_back(Bytes::from_static(b"data: [DONE]\n\n"));
        self.done = true;
    }
}

async fn models(State(state): State<Arc<AppState>>) -> Response {
    let s = &state.served;
    json_response(
        StatusCode::OK,
        &json!({
            "object": "list",
            "data": [{
                "id": s.model_ids[0],
                "object": "model",
                "created": state.started,
                "owned_by": "stoplab",
                "max_model_len": s.context,
            }],
        }),
    )
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
        }),
    )
}

/// `{"prompt": "..."}` or `{"messages": [...]}` (rendered with the chat template) to token ids.
async fn tokenize(
    State(state): State<Arc<AppState>>,
    b: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let b = body(&state, b)?;
    let f = Fields::parse(&b)?;
    f.check_model(&state.served)?;
    let endpoint = if f.get::<Value>("messages")?.is_some() {
        Endpoint::Chat
    } else {
        Endpoint::Completions
    };
    let ids = request::prompt_ids(&f, endpoint, &state.served.vocab)?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"tokens": ids, "count": ids.len(), "max_model_len": state.served.context}),
    ))
}

/// `{"tokens": [ids]}` to text.
async fn detokenize(
    State(state): State<Arc<AppState>>,
    b: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let b = body(&state, b)?;
    let f = Fields::parse(&b)?;
    f.check_model(&state.served)?;
    let ids: Vec<u32> = f
        .get("tokens")?
        .ok_or_else(|| ApiError::invalid("tokens", "is required"))?;
    let vocab = &state.served.vocab;
    for &id in &ids {
        vocab.check_id(id, "tokens")?;
    }
    let text = vocab.decode(&ids)?;
    Ok(json_response(StatusCode::OK, &json!({"prompt": text})))
}
