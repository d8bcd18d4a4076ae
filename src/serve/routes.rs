//! The HTTP routes: bodies in, OpenAI-shaped JSON or server-sent events out.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::from_fn_with_state;
use axum::response::Response;
use axum::routing::{get, post};
use serde_json::{Value, json};
use tokio::sync::mpsc::UnboundedReceiver;

use crate::pipeline::format::{ToolReply, parse_tool_calls};
use crate::pipeline::sink::Outcome;
use crate::pipeline::stop::FinishReason;
use crate::pipeline::tokenizer::Vocab;

use crate::pipeline::sink::Token;
use crate::serve::error::ApiError;
use crate::serve::fields::{Fields, Served};
use crate::serve::http::{
    Auth, DONE, authorize, blocking, event_stream, json_response, read_body, refuse_large, sse,
};
use crate::serve::openai::{self, chat, completions};
use crate::serve::playground;
use crate::serve::request::{Endpoint, GenRequest};
use crate::serve::state::AppState;
use crate::serve::worker::{Event, Place};

/// Every route, behind the two layers: a declared body too large is refused, and with `api_key` every
/// route but `/health` and the playground's page needs the key.
pub fn router(state: Arc<AppState>, api_key: Option<String>) -> Router {
    let limit = state.served.limits.max_body_bytes;
    let auth = Auth {
        key: api_key.map(Into::into),
        public: |path| path == "/health" || playground::is_public(path),
    };
    Router::new()
        .route("/v1/completions", post(completions))
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/models", get(models))
        .route("/health", get(health))
        .route("/tokenize", post(tokenize))
        .route("/detokenize", post(detokenize))
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

async fn completions(
    State(state): State<Arc<AppState>>,
    req: Request,
) -> Result<Response, ApiError> {
    generate(state, req, Endpoint::Completions).await
}

async fn chat_completions(
    State(state): State<Arc<AppState>>,
    req: Request,
) -> Result<Response, ApiError> {
    generate(state, req, Endpoint::Chat).await
}

/// One token's log probability and its alternatives, from the raw-logit softmax (`trace`'s p(end) is from
/// the same distribution). A replayed token was written with certainty: log probability 0, and it is its
/// own only alternative.
#[derive(Debug, Clone)]
struct TokenLogprob {
    id: u32,
    bytes: Vec<u8>,
    logprob: f32,
    top: Vec<(u32, f32)>,
    /// Characters of the choice's text before this token's first byte.
    offset: usize,
}

/// A log probability as JSON can carry it (vLLM's floor for a probability of 0).
fn ln(p: f32) -> f32 {
    if p > 0.0 {
        p.ln().max(-9999.0)
    } else {
        -9999.0
    }
}

/// Per choice: the text offsets logprobs need, and the entries not yet sent.
#[derive(Debug, Default)]
struct Logprobs {
    released_chars: usize,
    held_chars: usize,
    pending: Vec<TokenLogprob>,
}

impl Logprobs {
    fn push(&mut self, step: &Token, top: usize) {
        let (logprob, alternatives) = match &step.probs {
            Some(p) => (
                ln(p.chosen),
                p.top.iter().take(top).map(|&(id, q)| (id, ln(q))).collect(),
            ),
            None => (
                0.0,
                if top > 0 {
                    vec![(step.id, 0.0)]
                } else {
                    Vec::new()
                },
            ),
        };
        self.pending.push(TokenLogprob {
            id: step.id,
            bytes: step.bytes.clone(),
            logprob,
            top: alternatives,
            offset: self.released_chars + self.held_chars,
        });
        self.released_chars += step.text.chars().count();
        self.held_chars = String::from_utf8_lossy(&step.held).chars().count();
    }

    /// The pending entries in the route's shape (capped at the choice's final length, when known).
    fn take(&mut self, endpoint: Endpoint, vocab: &Vocab, cap: Option<usize>) -> Value {
        let entries = std::mem::take(&mut self.pending);
        let text = |id: u32, bytes: Option<&[u8]>| {
            let b = bytes.or_else(|| vocab.token_bytes(id)).unwrap_or_default();
            String::from_utf8_lossy(b).into_owned()
        };
        match endpoint {
            Endpoint::Completions => json!({
                "tokens": entries.iter().map(|e| text(e.id, Some(&e.bytes))).collect::<Vec<_>>(),
                "token_logprobs": entries.iter().map(|e| e.logprob).collect::<Vec<_>>(),
                "top_logprobs": entries.iter().map(|e| {
                    let mut m = serde_json::Map::new();
                    for &(id, lp) in &e.top {
                        m.entry(text(id, None)).or_insert(lp.into());
                    }
                    Value::Object(m)
                }).collect::<Vec<_>>(),
                "text_offset": entries.iter().map(|e| cap.map_or(e.offset, |c| e.offset.min(c))).collect::<Vec<_>>(),
            }),
            Endpoint::Chat => {
                let entry = |bytes: &[u8], lp: f32| json!({"token": String::from_utf8_lossy(bytes), "logprob": lp, "bytes": bytes});
                json!({"content": entries.iter().map(|e| {
                    let mut v = entry(&e.bytes, e.logprob);
                    v["top_logprobs"] = e.top.iter().map(|&(id, lp)| {
                        entry(vocab.token_bytes(id).unwrap_or_default(), lp)
                    }).collect::<Vec<_>>().into();
                    v
                }).collect::<Vec<_>>()})
            }
        }
    }
}

/// Where a chat reply's text may go while tools are offered: it streams as content until it could be a
/// function call. A reply that begins (after whitespace) with `{`, `[` or a ``` fence is held whole, and so
/// is everything from a `<tool_call>` tag on; at the end the whole reply is read for calls
/// ([`parse_tool_calls`]) and what was held goes out as calls or as text. The streamed content thus equals
/// the unstreamed `content`.
#[derive(Debug, Default)]
struct ToolGate {
    /// Undecided (only whitespace so far), streaming content, or holding everything.
    state: GateState,
    held: String,
    /// The content streamed so far.
    sent: String,
}

#[derive(Debug, Default, PartialEq)]
enum GateState {
    #[default]
    Undecided,
    Content,
    Holding,
}

const TOOL_OPEN: &str = "<tool_call>";

impl ToolGate {
    /// Takes released text; returns what may be streamed as content now.
    fn push(&mut self, text: &str) -> String {
        let out = self.release(text);
        self.sent.push_str(&out);
        out
    }

    fn release(&mut self, text: &str) -> String {
        self.held.push_str(text);
        if self.state == GateState::Undecided {
            let t = self.held.trim_start();
            if t.is_empty() {
                return String::new();
            }
            self.state = if t.starts_with(['{', '[', '`']) {
                GateState::Holding
            } else {
                GateState::Content
            };
        }
        if self.state != GateState::Content {
            return String::new();
        }
        if let Some(at) = self.held.find(TOOL_OPEN) {
            let out = self.held[..at].to_string();
            self.held.drain(..at);
            self.state = GateState::Holding;
            return out;
        }
        // Keep back a tail that may be the beginning of the tag.
        let keep = (1..TOOL_OPEN.len())
            .rev()
            .find(|&k| self.held.ends_with(&TOOL_OPEN[..k]))
            .unwrap_or(0);
        let out = self.held[..self.held.len() - keep].to_string();
        self.held.drain(..self.held.len() - keep);
        out
    }
}

/// What every response and chunk of one request shares.
struct Reply {
    endpoint: Endpoint,
    id: String,
    created: u64,
    model: String,
    prompt_tokens: usize,
    echo: Option<String>,
    top_probs: Option<usize>,
    tools: Vec<Value>,
    parallel_tool_calls: bool,
    vocab: Arc<Vocab>,
}

/// What a chunk's choice carries besides its index.
enum Delta<'a> {
    /// Chat's first chunk of a choice: the role.
    Role,
    Text(&'a str),
    Calls(&'a ToolReply),
    Nothing,
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

    /// A reply read for function calls, when tools were offered.
    fn calls(&self, choice: usize, text: &str) -> Option<ToolReply> {
        if self.tools.is_empty() {
            return None;
        }
        let mut reply = parse_tool_calls(text, &self.tools, &format!("{}_{choice}", self.id))?;
        if !self.parallel_tool_calls {
            reply.calls.truncate(1);
        }
        Some(reply)
    }

    fn finish_reason(finish: &FinishReason, calls: bool) -> &'static str {
        if calls { "tool_calls" } else { finish.openai() }
    }

    fn response(&self, choices: Vec<(Outcome, Logprobs)>) -> Value {
        let mut completion = 0;
        let list: Vec<Value> = choices
            .into_iter()
            .enumerate()
            .map(|(i, (outcome, mut lp))| {
                completion += outcome.tokens.len();
                let mut choice = json!({"index": i});
                let calls = self.calls(i, &outcome.text);
                match self.endpoint {
                    Endpoint::Completions => {
                        let echo = self.echo.as_deref().unwrap_or("");
                        choice["text"] = format!("{echo}{}", outcome.text).into();
                    }
                    Endpoint::Chat => {
                        choice["message"] = match &calls {
                            Some(c) => json!({
                                "role": "assistant",
                                "content": c.content,
                                "tool_calls": c.calls.iter().map(|c| c.to_openai()).collect::<Vec<_>>(),
                            }),
                            None => json!({"role": "assistant", "content": outcome.text}),
                        };
                    }
                }
                choice["logprobs"] = match self.top_probs {
                    Some(_) => lp.take(self.endpoint, &self.vocab, Some(outcome.text.chars().count())),
                    None => Value::Null,
                };
                choice["finish_reason"] = Self::finish_reason(&outcome.finish, calls.is_some()).into();
                choice["stop_reason"] = outcome.finish.stop_reason();
                choice
            })
            .collect();
        json!({
            "id": self.id,
            "object": self.object(false),
            "created": self.created,
            "model": self.model,
            "choices": list,
            "usage": self.usage(completion),
        })
    }

    /// One SSE chunk of choice `index`: a delta, its logprobs, and (at the end) the finish.
    fn chunk(
        &self,
        index: usize,
        delta: Delta<'_>,
        logprobs: Option<Value>,
        finish: Option<(&'static str, Value)>,
    ) -> Value {
        let mut choice = json!({"index": index});
        match self.endpoint {
            Endpoint::Completions => {
                choice["text"] = match delta {
                    Delta::Text(t) => t,
                    _ => "",
                }
                .into();
            }
            Endpoint::Chat => {
                choice["delta"] = match delta {
                    Delta::Role => json!({"role": "assistant", "content": ""}),
                    Delta::Text(t) => json!({"content": t}),
                    Delta::Calls(c) => {
                        json!({"tool_calls": c.calls.iter().enumerate().map(|(i, call)| {
                        let mut v = call.to_openai();
                        v["index"] = i.into();
                        v
                    }).collect::<Vec<_>>()})
                    }
                    Delta::Nothing => json!({}),
                };
            }
        }
        choice["logprobs"] = logprobs.unwrap_or(Value::Null);
        let (reason, stop) =
            finish.unwrap_or((Value::Null.as_str().unwrap_or_default(), Value::Null));
        choice["finish_reason"] = if reason.is_empty() {
            Value::Null
        } else {
            reason.into()
        };
        choice["stop_reason"] = stop;
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
    req: Request,
    endpoint: Endpoint,
) -> Result<Response, ApiError> {
    let b = read_body(&state.served.limits, req).await?;
    let st = state.clone();
    let request: GenRequest =
        blocking(move || openai::generation(&b, endpoint, &st.served)).await?;
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
        echo: request.echo.clone(),
        top_probs: request.top_probs,
        tools: request.tools.clone(),
        parallel_tool_calls: request.parallel_tool_calls,
        vocab: state.served.vocab.clone(),
    };
    let stream = request.stream;
    let include_usage = request.include_usage;
    let choices = request.n;
    let (mut rx, place) = state.queue.submit(request)?;

    if !stream {
        let _place = place;
        let top = reply.top_probs.unwrap_or(0);
        let mut done: Vec<(Outcome, Logprobs)> = Vec::with_capacity(choices);
        let mut lp = Logprobs::default();
        loop {
            match rx.recv().await {
                Some(Event::Token { token, .. }) => {
                    if reply.top_probs.is_some() {
                        lp.push(&token, top);
                    }
                }
                Some(Event::Done { result: Ok(o), .. }) if o.finish == FinishReason::Cancelled => {
                    return Err(ApiError::shutting_down());
                }
                Some(Event::Done { result: Ok(o), .. }) => {
                    done.push((o, std::mem::take(&mut lp)));
                    if done.len() == choices {
                        return Ok(json_response(StatusCode::OK, &reply.response(done)));
                    }
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
    let sse_state = SseState {
        reply,
        rx,
        first: Some(first),
        frames: VecDeque::new(),
        done: false,
        include_usage,
        choices,
        finished: 0,
        completion_tokens: 0,
        current: None,
        _place: place,
    };
    let body = futures_util::stream::unfold(sse_state, |mut st| async move {
        let frame = st.next_frame().await?;
        Some((Ok::<_, std::convert::Infallible>(frame), st))
    });
    Ok(event_stream(Body::from_stream(body)))
}

/// The choice being streamed (choices run one after another).
#[derive(Debug, Default)]
struct ChoiceStream {
    index: usize,
    logprobs: Logprobs,
    gate: Option<ToolGate>,
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
    /// Choices asked for, and finished so far.
    choices: usize,
    finished: usize,
    completion_tokens: usize,
    current: Option<ChoiceStream>,
    /// The request's place in the queue, given back when the stream ends or its client goes away.
    _place: Place,
}

impl SseState {
    /// The choice `index`'s state, starting it (role and echo chunks) on its first event.
    fn choice(&mut self, index: usize) -> &mut ChoiceStream {
        if self.current.as_ref().is_none_or(|c| c.index != index) {
            let r = &self.reply;
            if r.endpoint == Endpoint::Chat {
                self.frames
                    .push_back(sse(&r.chunk(index, Delta::Role, None, None)));
            }
            if let Some(echo) = r.echo.as_deref().filter(|e| !e.is_empty()) {
                self.frames
                    .push_back(sse(&r.chunk(index, Delta::Text(echo), None, None)));
            }
            self.current = Some(ChoiceStream {
                index,
                logprobs: Logprobs::default(),
                gate: (!r.tools.is_empty()).then(ToolGate::default),
            });
        }
        self.current.as_mut().expect("set above")
    }

    fn token(&mut self, choice: usize, s: &Token) {
        let top = self.reply.top_probs;
        let mut c = std::mem::take(self.choice(choice));
        if let Some(top) = top {
            c.logprobs.push(s, top);
        }
        let text = match &mut c.gate {
            Some(g) => g.push(&s.text),
            None => s.text.clone(),
        };
        if !text.is_empty() {
            let lp = top.map(|_| {
                c.logprobs
                    .take(self.reply.endpoint, &self.reply.vocab, None)
            });
            let chunk = self.reply.chunk(choice, Delta::Text(&text), lp, None);
            self.frames.push_back(sse(&chunk));
        }
        self.current = Some(c);
    }

    fn finish(&mut self, index: usize, o: &Outcome) {
        let chars = o.text.chars().count();
        let c = self.choice(index);
        let mut c = std::mem::take(c);
        let lp = self.reply.top_probs.map(|_| {
            c.logprobs
                .take(self.reply.endpoint, &self.reply.vocab, Some(chars))
        });
        let calls = self.reply.calls(index, &o.text);
        let finish = Some((
            Reply::finish_reason(&o.finish, calls.is_some()),
            o.finish.stop_reason(),
        ));
        let (held, sent) = c.gate.map(|g| (g.held, g.sent)).unwrap_or_default();
        // Content before the calls that was held (a reply that began like a call) goes out first.
        if let Some(rest) = calls
            .as_ref()
            .and_then(|c| c.content.as_deref())
            .and_then(|content| content.strip_prefix(sent.as_str()))
            .filter(|rest| !rest.is_empty())
        {
            let chunk = self.reply.chunk(index, Delta::Text(rest), None, None);
            self.frames.push_back(sse(&chunk));
        }
        let chunk = match (&calls, held.is_empty()) {
            (Some(calls), _) => self.reply.chunk(index, Delta::Calls(calls), lp, finish),
            (None, false) => self.reply.chunk(index, Delta::Text(&held), lp, finish),
            (None, true) => self.reply.chunk(index, Delta::Nothing, lp, finish),
        };
        self.frames.push_back(sse(&chunk));
        self.current = None;
        self.completion_tokens += o.tokens.len();
        self.finished += 1;
        if self.finished == self.choices {
            if self.include_usage {
                let mut usage = self.reply.wrap(json!([]));
                usage["usage"] = self.reply.usage(self.completion_tokens);
                self.frames.push_back(sse(&usage));
            }
            self.frames.push_back(DONE);
            self.done = true;
        }
    }

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
                Some(Event::Token { choice, token }) => self.token(choice, &token),
                Some(Event::Done { result: Ok(o), .. }) if o.finish == FinishReason::Cancelled => {
                    self.end_with_error(ApiError::shutting_down());
                }
                Some(Event::Done {
                    choice,
                    result: Ok(o),
                }) => self.finish(choice, &o),
                Some(Event::Done { result: Err(e), .. }) => self.end_with_error(e.into()),
                Some(Event::ShuttingDown) => self.end_with_error(ApiError::shutting_down()),
                None => self.end_with_error(ApiError::internal("the model worker stopped")),
            }
        }
    }

    /// An error after the response began: an error event (as vLLM sends), then the end of the stream.
    fn end_with_error(&mut self, e: ApiError) {
        self.frames.push_back(sse(&e.body()));
        self.frames.push_back(DONE);
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

/// Text or a conversation to token ids, in two servers' shapes:
/// * llama.cpp's: `{"content", "parse_special" (default true), "with_pieces"}` → `{"tokens": [ids]}`, or with
///   `with_pieces` `{"tokens": [{"id", "piece"}]}`, the piece a string, or its bytes where it is not UTF-8;
/// * vLLM's: `{"prompt"}` or `{"messages", "tools", "add_generation_prompt" (default true),
///   "continue_final_message"}`, with `return_token_strs` → `{"count", "max_model_len", "tokens",
///   "token_strs"}` (the vocabulary's pieces, or null).
///
/// `add_special` / `add_special_tokens` change nothing: the ids are the text's, with no BOS (a generation
/// from a text prompt adds the BOS where the model asks for one).
async fn tokenize(State(state): State<Arc<AppState>>, req: Request) -> Result<Response, ApiError> {
    let b = read_body(&state.served.limits, req).await?;
    let st = state.clone();
    let body = blocking(move || tokenize_body(&b, &st.served)).await?;
    Ok(json_response(StatusCode::OK, &body))
}

fn tokenize_body(b: &[u8], served: &Served) -> Result<Value, ApiError> {
    let f = Fields::parse(b)?;
    f.check_model(served)?;
    let vocab = &served.vocab;
    let parse_special = f.get::<bool>("parse_special")?.unwrap_or(true);
    if let Some(content) = f.get::<String>("content")? {
        let ids = vocab.encode(&content, parse_special)?;
        if !f.get::<bool>("with_pieces")?.unwrap_or(false) {
            return Ok(json!({ "tokens": ids }));
        }
        let tokens: Vec<Value> = ids
            .iter()
            .map(|&id| {
                let bytes = vocab.token_bytes(id).unwrap_or_default();
                let piece = match std::str::from_utf8(bytes) {
                    Ok(s) => json!(s),
                    Err(_) => json!(bytes),
                };
                json!({"id": id, "piece": piece})
            })
            .collect();
        return Ok(json!({ "tokens": tokens }));
    }
    let endpoint = if f.get::<Value>("messages")?.is_some() {
        Endpoint::Chat
    } else {
        Endpoint::Completions
    };
    let (ids, _) = match endpoint {
        Endpoint::Chat => chat::prompt(&f, served, &chat::tools(&f)?, parse_special, false)?,
        Endpoint::Completions => completions::prompt(&f, vocab, parse_special, false)?,
    };
    let token_strs = f
        .get::<bool>("return_token_strs")?
        .unwrap_or(false)
        .then(|| {
            ids.iter()
                .map(|&id| vocab.piece(id).unwrap_or_default().to_string())
                .collect::<Vec<_>>()
        });
    Ok(json!({
        "count": ids.len(),
        "max_model_len": served.context,
        "tokens": ids,
        "token_strs": token_strs,
    }))
}

/// `{"tokens": [ids]}` to text.
async fn detokenize(
    State(state): State<Arc<AppState>>,
    req: Request,
) -> Result<Response, ApiError> {
    let b = read_body(&state.served.limits, req).await?;
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
