//! A generation streamed as server-sent events: one chunk per release of whole tokens (their text, ids and
//! log probabilities), the choices one after another, each ending with its `finish_reason`; then the usage
//! when asked, and `data: [DONE]`. An error after the response began is an error event, then the end.
//! [`Chunker`] makes the chunks; the playground's trace uses it too, to show the wire beside its rows.

use std::collections::VecDeque;

use axum::body::{Body, Bytes};
use axum::response::Response;
use serde_json::{Value, json};
use tokio::sync::mpsc::UnboundedReceiver;

use crate::pipeline::sink::{Outcome, StepProbs, Token};
use crate::pipeline::stop::FinishReason;
use crate::serve::delivery::Event;
use crate::serve::error::ApiError;
use crate::serve::http::{DONE, event_stream, sse};
use crate::serve::openai::chat::Delta;
use crate::serve::openai::logprobs::Logprobs;
use crate::serve::openai::reasoning::Split;
use crate::serve::openai::reply::Reply;
use crate::serve::openai::tool_gate::ToolGate;
use crate::serve::request::Endpoint;
use crate::serve::worker::Place;

/// Streams a queued request's events as `reply`'s chunks. Waits for the first event before answering, so
/// errors found when the generation starts (a ban on every token, say) still get their status rather than
/// a 200 and an error event.
pub async fn respond(
    reply: Reply,
    mut rx: UnboundedReceiver<Event>,
    place: Place,
    include_usage: bool,
    choices: usize,
) -> Result<Response, ApiError> {
    let first = match rx.recv().await {
        Some(Event::Done { result: Err(e), .. }) => return Err(e.into()),
        Some(Event::ShuttingDown) => return Err(ApiError::shutting_down()),
        None => return Err(ApiError::internal("the model worker stopped")),
        Some(ev) => ev,
    };
    let sse_state = SseState {
        chunks: Chunker::new(reply, include_usage, choices),
        rx,
        first: Some(first),
        frames: VecDeque::new(),
        done: false,
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
    /// Chat with reasoning markers: where the released text goes (`reasoning_content` or `content`).
    split: Option<Split>,
    /// The reasoning the finishing token released (it goes out with the finish).
    tail_reasoning: String,
    /// The choice's ids so far; how many the engine has carried with released text; how many went out.
    ids: Vec<u32>,
    carried: usize,
    sent: usize,
    /// The text the finishing token released, which goes out with the finish (no tools offered).
    tail: String,
}

/// A streaming response in progress. It owns the event receiver and the queue place: when the client goes
/// away the body is dropped, both with it, and the worker stops at the next token.
struct SseState {
    chunks: Chunker,
    rx: UnboundedReceiver<Event>,
    first: Option<Event>,
    frames: VecDeque<Bytes>,
    done: bool,
    /// The request's place in the queue, given back when the stream ends or its client goes away.
    _place: Place,
}

/// The chunks of one streamed response, made from the worker's events in order: what the generation routes
/// send, and what the playground's wire view shows ([`Chunker::take`] hands out those made so far).
pub struct Chunker {
    reply: Reply,
    include_usage: bool,
    /// Choices asked for, and finished so far.
    choices: usize,
    finished: usize,
    completion_tokens: usize,
    current: Option<ChoiceStream>,
    out: VecDeque<Value>,
}

impl Chunker {
    pub fn new(reply: Reply, include_usage: bool, choices: usize) -> Self {
        Self {
            reply,
            include_usage,
            choices,
            finished: 0,
            completion_tokens: 0,
            current: None,
            out: VecDeque::new(),
        }
    }

    /// The chunks made since the last call, in order.
    pub fn take(&mut self) -> impl Iterator<Item = Value> + '_ {
        self.out.drain(..)
    }

    /// Whether every choice has finished (its last chunk, and the usage when asked, are made).
    pub fn is_done(&self) -> bool {
        self.finished == self.choices
    }

    /// The choice `index`'s state, starting it (role and echo chunks) on its first event.
    fn choice(&mut self, index: usize) -> &mut ChoiceStream {
        if self.current.as_ref().is_none_or(|c| c.index != index) {
            let r = &self.reply;
            if r.endpoint == Endpoint::Chat {
                self.out.push_back(r.chunk(index, Delta::Role, None, None));
            }
            // A scored prompt's echo goes out with its log probabilities ([`SseState::prompt`]).
            if let Some(echo) = r
                .echo
                .as_deref()
                .filter(|e| !e.is_empty() && !r.scores_prompt())
            {
                let mut chunk = r.chunk(index, Delta::Text(echo), None, None);
                if r.return_token_ids {
                    chunk["choices"][0]["prompt_token_ids"] = r.prompt.clone().into();
                }
                self.out.push_back(chunk);
            }
            self.current = Some(ChoiceStream {
                index,
                logprobs: r.choice_logprobs(),
                gate: (!r.tools.is_empty()).then(ToolGate::default),
                split: r.reasoning.clone().filter(|_| r.endpoint == Endpoint::Chat),
                ..ChoiceStream::default()
            });
        }
        self.current.as_mut().expect("set above")
    }

    /// A scored prompt: one chunk with the echoed prompt (if echoed) and its log probabilities, before the
    /// choice's first token.
    pub fn prompt(&mut self, choice: usize, probs: &[StepProbs]) {
        self.choice(choice);
        let r = &self.reply;
        let echo = r.echo.as_deref().unwrap_or("");
        let mut chunk = r.chunk(choice, Delta::Text(echo), None, None);
        r.prompt_fields(&mut chunk["choices"][0], probs, None);
        self.out.push_back(chunk);
    }

    /// A chunk goes out for each release of whole tokens (the engine's `spelled`), carrying their ids (and
    /// logprobs); ids carried with no text (a token that spells nothing) go out in a chunk of their own
    /// when asked for. While the tool gate holds text that may be a call, its ids wait with it.
    pub fn token(&mut self, choice: usize, s: &Token) {
        let top = self.reply.top_probs;
        let mut c = std::mem::take(self.choice(choice));
        if let Some(top) = top {
            c.logprobs.push(s, top);
        }
        c.ids.push(s.id);
        c.carried = c.carried.max(s.carried.end);
        // The reasoning is split off first: the gate and the content see the answer.
        let (reasoning, answer) = match &mut c.split {
            Some(split) => split.push(&s.spelled),
            None => (String::new(), s.spelled.clone()),
        };
        let text = match &mut c.gate {
            Some(g) => g.push(&answer),
            None => answer,
        };
        if s.finish.is_some() && c.gate.is_none() {
            // The last release goes out with the finish, in one chunk with its tokens.
            c.tail = text;
            c.tail_reasoning = reasoning;
            self.current = Some(c);
            return;
        }
        let gate_holds = c.gate.as_ref().is_some_and(|g| !g.held.is_empty());
        let wants_ids = self.reply.return_token_ids || top.is_some();
        if !text.is_empty()
            || !reasoning.is_empty()
            || (wants_ids && c.carried > c.sent && !gate_holds)
        {
            let end = if gate_holds { c.sent } else { c.carried };
            let lp = top.map(|_| self.reply.logprobs(&c.logprobs.take_until(end), None));
            let mut chunk = self.reply.chunk(
                choice,
                Delta::Text(&text),
                Some((&c.ids[c.sent..end], lp)),
                None,
            );
            with_reasoning(&mut chunk, &reasoning, text.is_empty());
            c.sent = end;
            self.out.push_back(chunk);
        }
        self.current = Some(c);
    }

    pub fn finish(&mut self, index: usize, o: &Outcome) {
        let chars = self.reply.echo_chars() + o.text.chars().count();
        let c = self.choice(index);
        let mut c = std::mem::take(c);
        // The last chunk carries every carried id not yet sent; the withheld ones are named apart.
        let carried = o.carried_ids().len();
        let lp = self.reply.top_probs.map(|_| {
            self.reply
                .logprobs(&c.logprobs.take_until(carried), Some(chars))
        });
        let ids = &o.tokens[c.sent.min(carried)..carried];
        // What the split still held back was not a marker: it goes out now.
        let mut reasoning = std::mem::take(&mut c.tail_reasoning);
        if let Some(split) = &mut c.split {
            let (r, rest) = split.finish();
            reasoning.push_str(&r);
            match &mut c.gate {
                Some(g) => {
                    g.push(&rest);
                }
                None => c.tail.push_str(&rest),
            }
        }
        let answer = match &self.reply.reasoning {
            Some(split) if self.reply.endpoint == Endpoint::Chat => split.clone().whole(&o.text).1,
            _ => o.text.clone(),
        };
        let calls = self.reply.calls(index, &answer);
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
            self.out.push_back(chunk);
        }
        let held = if c.tail.is_empty() {
            held
        } else {
            c.tail.clone()
        };
        let delta = match (&calls, held.is_empty()) {
            (Some(calls), _) => Delta::Calls(calls),
            (None, false) => Delta::Text(&held),
            (None, true) => Delta::Nothing,
        };
        let no_text = matches!(delta, Delta::Nothing);
        let mut chunk = self.reply.chunk(index, delta, Some((ids, lp)), finish);
        with_reasoning(&mut chunk, &reasoning, no_text);
        if self.reply.return_token_ids {
            chunk["choices"][0]["withheld_token_ids"] = o.withheld_ids().into();
        }
        self.out.push_back(chunk);
        self.current = None;
        self.completion_tokens += o.tokens.len();
        self.finished += 1;
        if self.is_done() && self.include_usage {
            let mut usage = self.reply.wrap(json!([]));
            usage["usage"] = self.reply.usage(self.completion_tokens);
            self.out.push_back(usage);
        }
    }
}

/// Adds a chat chunk's `reasoning_content` (when it has some); a chunk that carries reasoning and no
/// answer text has no `content`.
fn with_reasoning(chunk: &mut Value, reasoning: &str, no_content: bool) {
    if reasoning.is_empty() {
        return;
    }
    let delta = &mut chunk["choices"][0]["delta"];
    if let Some(d) = delta.as_object_mut() {
        if no_content {
            d.remove("content");
        }
        d.insert("reasoning_content".into(), reasoning.into());
    }
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
                Some(Event::Prompt { choice, probs }) => self.chunks.prompt(choice, &probs),
                Some(Event::Token { choice, token }) => self.chunks.token(choice, &token),
                Some(Event::Step { .. }) => {}
                Some(Event::Done { result: Ok(o), .. }) if o.finish == FinishReason::Cancelled => {
                    self.end_with_error(ApiError::shutting_down());
                }
                Some(Event::Done {
                    choice,
                    result: Ok(o),
                }) => self.chunks.finish(choice, &o),
                Some(Event::Done { result: Err(e), .. }) => self.end_with_error(e.into()),
                Some(Event::ShuttingDown) => self.end_with_error(ApiError::shutting_down()),
                None => self.end_with_error(ApiError::internal("the model worker stopped")),
            }
            if !self.done {
                let made: Vec<Bytes> = self.chunks.take().map(|c| sse(&c)).collect();
                self.frames.extend(made);
                if self.chunks.is_done() {
                    self.frames.push_back(DONE);
                    self.done = true;
                }
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
