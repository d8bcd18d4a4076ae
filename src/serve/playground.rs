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
//!   JSON path (`stop[1]`, `max_tokens`).
//! * `POST /v1/stoplab/render`: the prompt a format renders from messages, and its token count.
//! * `GET /v1/stoplab/info`: the model, its context, its end tokens, whether weights are loaded.
//! * `GET /v1/stoplab/scenarios`: the shipped scenarios (`scenarios/*.toml`), settings included.
//!
//! The page and its two files need no API key (they hold no data); every other route does when the server
//! has one ([`is_public`]), and the page asks for it.
//!
//! ```text
//! $ stoplab serve --replay-only &
//! $ curl -sN localhost:8080/v1/stoplab/trace -d '{"format": "transcript",
//!     "messages": [{"role": "user", "content": "Capital of Germany?"}],
//!     "replay": " Berlin.\nuser: And France?", "stop": ["\nuser:"]}'
//! ```

use std::collections::VecDeque;
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tokio::sync::mpsc::UnboundedReceiver;

use crate::lab::trace::{self, escape};
use crate::pipeline::format::{Message, PromptFormat};
use crate::pipeline::sampling::SamplingParams;
use crate::pipeline::settings::UserSettings;
use crate::pipeline::sink::Token;
use crate::pipeline::sink::{Outcome, StepProbs};
use crate::pipeline::stop::FinishReason;
use crate::pipeline::tokenizer::Vocab;

use crate::serve::error::ApiError;
use crate::serve::fields::{Fields, Served};
use crate::serve::http::{DONE, blocking, event_stream, json_response, read_body, sse};
use crate::serve::messages;
use crate::serve::names::Names;
use crate::serve::request::{Endpoint, GenRequest};
use crate::serve::state::AppState;
use crate::serve::worker::{Event, Place};

const INDEX_HTML: &str = include_str!("playground/index.html");
const APP_JS: &str = include_str!("playground/app.js");
const STYLE_CSS: &str = include_str!("playground/style.css");

/// The page's own files: served without an API key.
const PUBLIC: [&str; 3] = ["/", "/playground/app.js", "/playground/style.css"];

/// Whether `path` is one of the page's files, which need no API key.
pub fn is_public(path: &str) -> bool {
    PUBLIC.contains(&path)
}

/// The playground's routes, to merge into the server's router (inside its key check and body limit).
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
        .route("/v1/stoplab/info", get(info))
        .route("/v1/stoplab/scenarios", get(scenarios))
        .route("/v1/stoplab/render", post(render))
        .route("/v1/stoplab/trace", post(trace))
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

/// A token's bytes as the page shows them.
fn token_text(vocab: &Vocab, id: u32) -> Value {
    let bytes = vocab.token_bytes(id).unwrap_or_default();
    json!({
        "id": id,
        "token": String::from_utf8_lossy(bytes),
        "token_esc": escape(bytes),
        "special": vocab.is_special(id),
    })
}

async fn info(State(state): State<Arc<AppState>>) -> Response {
    let s = &state.served;
    let end_tokens: Vec<Value> = s
        .vocab
        .end_tokens()
        .iter()
        .map(|&id| token_text(&s.vocab, id))
        .collect();
    json_response(
        StatusCode::OK,
        &json!({
            "model": s.model_ids[0],
            "context": s.context,
            "weights": s.weights,
            "end_tokens": end_tokens,
            "formats": PromptFormat::NAMES,
            "chat_template": s.vocab.chat_template().is_some(),
            "version": env!("CARGO_PKG_VERSION"),
        }),
    )
}

/// An `f32` setting as the file wrote it (0.3, not the 0.30000001192092896 its widening to f64 prints).
fn f32_json(x: f32) -> Value {
    x.to_string()
        .parse::<f64>()
        .map_or(Value::Null, Value::from)
}

/// A logit bias as JSON: `-inf` (a ban) as the string "-inf", which JSON numbers cannot hold.
fn bias_json(bias: f32) -> Value {
    if bias == f32::NEG_INFINITY {
        "-inf".into()
    } else {
        f32_json(bias)
    }
}

async fn scenarios() -> Result<Response, ApiError> {
    let all = crate::lab::experiment::shipped()
        .map_err(|e| ApiError::internal(format!("a shipped scenario does not parse: {e}")))?;
    let list: Vec<Value> = all
        .iter()
        .map(|sc| {
            let s = &sc.settings;
            let p = &s.sampling;
            json!({
                "file": sc.file,
                "name": sc.name,
                "title": sc.title,
                "about": sc.about,
                "format": s.format,
                "user_prefix": s.user_prefix,
                "ai_prefix": s.ai_prefix,
                "separator": s.separator,
                "natural_stop": s.natural_stop,
                "messages": sc.messages,
                "stops": s.stops,
                "stop_token_ids": s.stop_token_ids,
                "include_stop": s.include_stop,
                "ignore_eos": s.ignore_eos,
                "min_tokens": s.min_tokens,
                "max_tokens": s.max_tokens,
                "repetition": s.repetition,
                "temperature": f32_json(p.temperature),
                "top_k": p.top_k,
                "top_p": f32_json(p.top_p),
                "min_p": f32_json(p.min_p),
                "repetition_penalty": f32_json(p.repetition_penalty),
                "frequency_penalty": f32_json(p.frequency_penalty),
                "presence_penalty": f32_json(p.presence_penalty),
                "logit_bias": p.logit_bias.iter().map(|&(id, b)| json!([id, bias_json(b)])).collect::<Vec<_>>(),
                "seed": sc.seed,
                "done": sc.done,
            })
        })
        .collect();
    Ok(json_response(StatusCode::OK, &json!({ "scenarios": list })))
}

/// The fields a playground request may carry; any other is refused by name (a typo must not be ignored).
const FIELDS: &[&str] = &[
    "model",
    "messages",
    "format",
    "user_prefix",
    "ai_prefix",
    "separator",
    "natural_stop",
    "stop",
    "stop_token_ids",
    "include_stop",
    "ignore_eos",
    "min_tokens",
    "max_tokens",
    "repetition_stop",
    "end_tokens",
    "temperature",
    "top_k",
    "top_p",
    "min_p",
    "repetition_penalty",
    "frequency_penalty",
    "presence_penalty",
    "logit_bias",
    "seed",
    "replay",
];

/// The default of `max_tokens`: enough to see a model run on, few enough to watch.
const DEFAULT_MAX_TOKENS: usize = 64;

/// A playground request, read: the messages, the settings as the user gave them (unchecked), the replay.
struct Asked {
    messages: Vec<Message>,
    user: UserSettings,
    replay: Option<Value>,
}

fn read(body: &[u8], served: &Served, prompt_only: bool) -> Result<Asked, ApiError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_body(format!("malformed JSON in the request body: {e}")))?;
    let Value::Object(map) = &value else {
        return Err(ApiError::bad_body("the request body must be a JSON object"));
    };
    if let Some(unknown) = map.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(ApiError::invalid(
            unknown,
            format!(
                "is not a field of this route; it takes {}",
                FIELDS.join(", ")
            ),
        ));
    }
    let f = Fields::parse(body)?;
    f.check_model(served)?;
    let messages = messages::messages(&f)?;
    let format = f
        .get::<String>("format")?
        .unwrap_or_else(|| PromptFormat::Raw.name().into());
    let mut user = UserSettings {
        format,
        user_prefix: f.get("user_prefix")?,
        ai_prefix: f.get("ai_prefix")?,
        separator: f.get("separator")?,
        ..UserSettings::default()
    };
    if prompt_only {
        return Ok(Asked {
            messages,
            user,
            replay: None,
        });
    }
    let stops: Vec<String> = match f.get::<Value>("stop")? {
        None => Vec::new(),
        Some(Value::String(s)) => vec![s],
        Some(v) => serde_json::from_value(v)
            .map_err(|e| ApiError::invalid("stop", format!("expected an array of strings: {e}")))?,
    };
    let limits = &served.limits;
    if stops.len() > limits.max_stops {
        return Err(ApiError::invalid(
            "stop",
            format!(
                "{} stop strings given; at most {} are allowed (stoplab serve --max-stops)",
                stops.len(),
                limits.max_stops
            ),
        ));
    }
    if let Some(i) = stops.iter().position(|s| s.len() > limits.max_stop_bytes) {
        return Err(ApiError::invalid(
            &format!("stop[{i}]"),
            format!(
                "{} bytes; at most {} are allowed (stoplab serve --max-stop-bytes)",
                stops[i].len(),
                limits.max_stop_bytes
            ),
        ));
    }
    let d = SamplingParams::default();
    user.natural_stop = f.get("natural_stop")?.unwrap_or(false);
    user.stops = stops;
    user.stop_token_ids = f.get("stop_token_ids")?.unwrap_or_default();
    user.include_stop = f.get("include_stop")?.unwrap_or(false);
    user.ignore_eos = f.get("ignore_eos")?.unwrap_or(false);
    user.min_tokens = f.get("min_tokens")?.unwrap_or(0);
    user.max_tokens = f.get("max_tokens")?.unwrap_or(DEFAULT_MAX_TOKENS);
    user.repetition = f.get("repetition_stop")?;
    user.end_tokens = f.get("end_tokens")?.unwrap_or_default();
    user.sampling = SamplingParams {
        // Greedy unless asked: the command line's default, so a run is the same each time.
        temperature: f.get("temperature")?.unwrap_or(0.0),
        top_k: f.get("top_k")?.unwrap_or(d.top_k),
        top_p: f.get("top_p")?.unwrap_or(d.top_p),
        min_p: f.get("min_p")?.unwrap_or(d.min_p),
        repetition_penalty: f.get("repetition_penalty")?.unwrap_or(d.repetition_penalty),
        frequency_penalty: f.get("frequency_penalty")?.unwrap_or(d.frequency_penalty),
        presence_penalty: f.get("presence_penalty")?.unwrap_or(d.presence_penalty),
        logit_bias: logit_bias(&f)?,
        seed: f.get("seed")?.unwrap_or(0),
    };
    Ok(Asked {
        messages,
        user,
        replay: f.get("replay")?,
    })
}

/// `logit_bias`: `[[id, bias], ...]` as a scenario file writes it, bias a number or "-inf" (a ban).
fn logit_bias(f: &Fields) -> Result<Vec<(u32, f32)>, ApiError> {
    let Some(list) = f.get::<Vec<Value>>("logit_bias")? else {
        return Ok(Vec::new());
    };
    list.iter()
        .enumerate()
        .map(|(i, pair)| {
            let at = format!("logit_bias[{i}]");
            let bad =
                || ApiError::invalid(&at, "expected [token id, bias], bias a number or \"-inf\"");
            let [id, bias] = pair.as_array().map(Vec::as_slice).ok_or_else(bad)? else {
                return Err(bad());
            };
            let id = id
                .as_u64()
                .and_then(|id| u32::try_from(id).ok())
                .ok_or_else(bad)?;
            let bias = match bias {
                Value::String(s) if s == "-inf" => f32::NEG_INFINITY,
                Value::Number(n) => n.as_f64().ok_or_else(bad)? as f32,
                _ => return Err(bad()),
            };
            Ok((id, bias))
        })
        .collect()
}

/// The settings checked by the one validation, and the prompt rendered and tokenized.
struct Prepared {
    text: String,
    prompt: Vec<u32>,
    params: crate::pipeline::settings::GenerateParams,
}

fn prepare(asked: &Asked, vocab: &Vocab) -> Result<Prepared, ApiError> {
    let names = Names::playground(&asked.user, false);
    let settings = asked
        .user
        .validate(Some(vocab.len()))
        .map_err(|e| ApiError::setting(&e, &names))?;
    let text = settings
        .format
        .render(&asked.messages, vocab.chat_template())
        .map_err(|e| match e {
            crate::Error::Settings(e) => ApiError::setting(&e, &names),
            crate::Error::Invalid { message, .. } => ApiError::invalid("messages", message),
            other => other.into(),
        })?;
    let prompt = vocab.encode_prompt(&text)?;
    Ok(Prepared {
        text,
        prompt,
        params: settings.params,
    })
}

/// `{format, messages, user_prefix?, ai_prefix?, separator?}` → `{text, tokens}`.
async fn render(State(state): State<Arc<AppState>>, req: Request) -> Result<Response, ApiError> {
    let b = read_body(&state.served.limits, req).await?;
    let served = state.served.clone();
    let (text, tokens) = blocking(move || {
        let asked = read(&b, &served, true)?;
        let p = prepare(&asked, &served.vocab)?;
        Ok((p.text, p.prompt.len()))
    })
    .await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"text": text, "tokens": tokens}),
    ))
}

/// `POST /v1/stoplab/trace`: one generation as server-sent events, one per engine step.
async fn trace(State(state): State<Arc<AppState>>, req: Request) -> Result<Response, ApiError> {
    let b = read_body(&state.served.limits, req).await?;
    let served = state.served.clone();
    let (request, start) = blocking(move || traced_request(&b, &served)).await?;
    let (mut rx, place) = state.queue.submit(request)?;
    // The first event before the answer: an error found when the generation starts keeps its status.
    let first = match rx.recv().await {
        Some(Event::Done { result: Err(e), .. }) => return Err(e.into()),
        Some(Event::ShuttingDown) => return Err(ApiError::shutting_down()),
        None => return Err(ApiError::internal("the model worker stopped")),
        Some(ev) => ev,
    };
    let stream = TraceStream {
        vocab: state.served.vocab.clone(),
        rx,
        first: Some(first),
        frames: VecDeque::from([sse(&start)]),
        rows: Vec::new(),
        done: false,
        _place: place,
    };
    let body = futures_util::stream::unfold(stream, |mut st| async move {
        let frame = st.next_frame().await?;
        Some((Ok::<_, std::convert::Infallible>(frame), st))
    });
    Ok(event_stream(Body::from_stream(body)))
}

/// Reads and checks a trace request: the generation to queue, and the stream's first event.
fn traced_request(body: &[u8], served: &Served) -> Result<(GenRequest, Value), ApiError> {
    let asked = read(body, served, false)?;
    let vocab = &*served.vocab;
    let p = prepare(&asked, vocab)?;
    let context = served.context;
    if p.prompt.is_empty() {
        return Err(ApiError::invalid(
            "messages",
            "the prompt is empty; give some text",
        ));
    }
    if p.prompt.len() >= context {
        return Err(ApiError::invalid(
            "messages",
            format!(
                "the prompt has {} tokens; the model's context is {context} tokens and at least one must be \
                 left to generate",
                p.prompt.len()
            ),
        ));
    }
    let room = context - p.prompt.len();
    if p.params.max_tokens > room {
        return Err(ApiError::invalid(
            "max_tokens",
            format!(
                "the prompt has {} tokens and max_tokens asks for {}, beyond the model's context of {context} \
                 tokens; ask for at most {room} or shorten the prompt",
                p.prompt.len(),
                p.params.max_tokens
            ),
        ));
    }
    let replay = match asked.replay {
        None => None,
        Some(Value::String(s)) => Some(vocab.encode(&s, true)?),
        Some(v @ Value::Array(_)) => {
            let ids: Vec<u32> = serde_json::from_value(v)
                .map_err(|e| ApiError::invalid("replay", format!("expected token ids: {e}")))?;
            for &id in &ids {
                vocab.check_id(id, "replay")?;
            }
            Some(ids)
        }
        Some(_) => {
            return Err(ApiError::invalid(
                "replay",
                "expected a string or an array of token ids",
            ));
        }
    };
    if replay.is_none() && !served.weights {
        return Err(ApiError::invalid(
            "replay",
            "this server runs without weights (--replay-only): give `replay`, the text the model should write",
        ));
    }
    let start = json!({
        "type": "start",
        "prompt": p.text,
        "prompt_tokens": p.prompt.len(),
        "model": served.model_ids[0],
        "stops": p.params.stops.stops(),
        "replay": replay.is_some(),
    });
    let request = GenRequest {
        endpoint: Endpoint::Completions,
        prompt: p.prompt,
        replay,
        params: p.params,
        stream: true,
        include_usage: false,
        n: 1,
        top_probs: Some(StepProbs::TOP),
        echo: None,
        tools: Vec::new(),
        parallel_tool_calls: true,
    };
    Ok((request, start))
}

/// A trace stream in progress. It owns the receiver and the queue place: a page that hangs up drops both,
/// and the worker ends the generation at the next token.
struct TraceStream {
    vocab: Arc<Vocab>,
    rx: UnboundedReceiver<Event>,
    first: Option<Event>,
    frames: VecDeque<Bytes>,
    /// The rows so far, for the explanation at the end.
    rows: Vec<Token>,
    done: bool,
    _place: Place,
}

impl TraceStream {
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
                Some(Event::Token { token, .. }) => {
                    let row = *token;
                    self.frames.push_back(sse(&token_event(&row, &self.vocab)));
                    self.rows.push(row);
                }
                Some(Event::Done { result: Ok(o), .. }) if o.finish == FinishReason::Cancelled => {
                    self.end(error_event(&ApiError::shutting_down()));
                }
                Some(Event::Done { result: Ok(o), .. }) => {
                    let event = finish_event(&o, &self.rows);
                    self.end(event);
                }
                Some(Event::Done { result: Err(e), .. }) => self.end(error_event(&e.into())),
                Some(Event::ShuttingDown) => self.end(error_event(&ApiError::shutting_down())),
                None => self.end(error_event(&ApiError::internal("the model worker stopped"))),
            }
        }
    }

    fn end(&mut self, event: Value) {
        self.frames.push_back(sse(&event));
        self.frames.push_back(DONE);
        self.done = true;
    }
}

/// A step as the page reads it: the trace row's JSON line, plus its bytes escaped as `trace` prints them
/// and in hex, and the top alternatives' text.
fn token_event(row: &Token, vocab: &Vocab) -> Value {
    let mut ev = trace::row_json(row);
    ev["type"] = "token".into();
    ev["token_esc"] = escape(&row.bytes).into();
    ev["hex"] = row
        .bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>()
        .into();
    ev["held_esc"] = escape(&row.held).into();
    ev["emitted_esc"] = escape(row.text.as_bytes()).into();
    if let Some(p) = &row.probs {
        ev["top"] = p
            .top
            .iter()
            .map(|&(id, p)| {
                let mut t = token_text(vocab, id);
                t["p"] = p.into();
                t
            })
            .collect::<Vec<_>>()
            .into();
    }
    ev
}

/// The end of the generation, explained as `stoplab trace` explains it.
fn finish_event(o: &Outcome, rows: &[Token]) -> Value {
    let cut = o
        .cut
        .as_ref()
        .map(|c| c.bytes.as_slice())
        .unwrap_or_default();
    json!({
        "type": "finish",
        "finish_reason": o.finish.openai(),
        "stop_reason": o.finish.stop_reason(),
        "kind": o.finish.kind(),
        "describe": o.finish.describe(),
        "cut": String::from_utf8_lossy(cut),
        "cut_esc": escape(cut),
        "stop_began_at": o.cut.as_ref().map(|c| c.began_at),
        "explain": trace::explain(rows),
        "text": o.text,
        "usage": {
            "prompt_tokens": o.prompt_tokens,
            "completion_tokens": o.tokens.len(),
            "total_tokens": o.prompt_tokens + o.tokens.len(),
        },
    })
}

fn error_event(e: &ApiError) -> Value {
    let mut body = e.body();
    body["type"] = "error".into();
    body
}
