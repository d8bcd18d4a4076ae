//! `POST /v1/stoplab/trace`: one generation as server-sent events, one per engine step: the start, a row
//! per token, the finish with `stoplab trace`'s explanation, then `data: [DONE]`. Each row and the finish
//! also carry `wire`: the chunks `/v1/completions` streams for the same tokens at that step (with
//! `logprobs: 1` and `return_token_ids`), made by the same [`Chunker`], so the page shows the wire beside
//! its token chips.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::response::Response;
use serde_json::{Value, json};
use tokio::sync::mpsc::UnboundedReceiver;

use crate::lab::trace::{self, escape};
use crate::pipeline::sink::{Outcome, StepReport, Token};
use crate::pipeline::stop::FinishReason;
use crate::pipeline::tokenizer::Vocab;
use crate::serve::delivery::Event;
use crate::serve::error::ApiError;
use crate::serve::http::{DONE, blocking, event_stream, read_body, sse};
use crate::serve::openai::reply::{Reply, now};
use crate::serve::openai::stream::Chunker;
use crate::serve::playground::info::token_text;
use crate::serve::playground::request::traced;
use crate::serve::request::Endpoint;
use crate::serve::state::AppState;
use crate::serve::worker::Place;

/// `POST /v1/stoplab/trace`: one generation as server-sent events, one per engine step.
pub async fn trace(State(state): State<Arc<AppState>>, req: Request) -> Result<Response, ApiError> {
    let b = read_body(&state.served.limits, req).await?;
    let served = state.served.clone();
    let (request, start) = blocking(move || traced(&b, &served)).await?;
    let n = state.next_id.fetch_add(1, Ordering::Relaxed);
    let wire = Reply {
        endpoint: Endpoint::Completions,
        id: format!("cmpl-{:x}-{n}", state.started),
        created: now(),
        model: state.served.model_ids[0].clone(),
        prompt_tokens: request.prompt.len(),
        echo: None,
        top_probs: Some(1),
        tools: Vec::new(),
        parallel_tool_calls: true,
        return_token_ids: true,
        prompt: request.prompt.clone(),
        prompt_logprobs: None,
        vocab: state.served.vocab.clone(),
        reasoning: None,
    };
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
        step_from: 1,
        wire: Chunker::new(wire, false, 1),
        done: false,
        _place: place,
    };
    let body = futures_util::stream::unfold(stream, |mut st| async move {
        let frame = st.next_frame().await?;
        Some((Ok::<_, std::convert::Infallible>(frame), st))
    });
    Ok(event_stream(Body::from_stream(body)))
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
    /// The first row of the next step.
    step_from: usize,
    /// The completions chunks of the same tokens.
    wire: Chunker,
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
                // The playground does not score its prompts.
                Some(Event::Prompt { .. }) => {}
                Some(Event::Step { report, .. }) => {
                    // The step's rows: those since the last step (the first token comes from the
                    // prompt's pass, before any step).
                    let first = self.step_from;
                    self.step_from = self.rows.len();
                    self.frames.push_back(sse(&step_event(
                        &report,
                        first,
                        self.rows.len() - first,
                    )));
                }
                Some(Event::Token { token, .. }) => {
                    let row = *token;
                    self.wire.token(0, &row);
                    let mut event = token_event(&row, &self.vocab);
                    event["wire"] = self.wire.take().collect::<Vec<_>>().into();
                    self.frames.push_back(sse(&event));
                    self.rows.push(row);
                }
                Some(Event::Done { result: Ok(o), .. }) if o.finish == FinishReason::Cancelled => {
                    self.end(error_event(&ApiError::shutting_down()));
                }
                Some(Event::Done { result: Ok(o), .. }) => {
                    let mut event = finish_event(&o, &self.rows);
                    self.wire.finish(0, &o);
                    event["wire"] = self.wire.take().collect::<Vec<_>>().into();
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

/// A step of several tokens: its rows (`first`, `rows` of them), what was drafted, how much of it was
/// accepted, the rejected rest and what was discarded after the token that ended the generation.
fn step_event(r: &StepReport, first: usize, rows: usize) -> Value {
    json!({
        "type": "step",
        "index": r.index,
        "first_row": first,
        "rows": rows,
        "drafted": r.drafted,
        "accepted": r.accepted,
        "rejected": r.rejected(),
        "discarded": r.discarded,
    })
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
