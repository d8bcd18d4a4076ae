//! The response of both generation endpoints, whole or as stream chunks: the envelope they share (id,
//! object, model, usage, `finish_reason` and vLLM's `stop_reason`), with each endpoint's own parts written
//! by its file ([`completions`]' `text` and log probabilities, [`chat`]'s message, deltas and log
//! probabilities).

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::pipeline::format::{ToolReply, parse_tool_calls};
use crate::pipeline::sink::Outcome;
use crate::pipeline::stop::FinishReason;
use crate::pipeline::tokenizer::Vocab;
use crate::serve::openai::chat::{self, Delta};
use crate::serve::openai::completions;
use crate::serve::openai::logprobs::{Logprobs, TokenLogprob};
use crate::serve::request::Endpoint;

/// OpenAI's `system_fingerprint`: the program and version that answered (a client may log it to tell
/// configurations apart).
pub const FINGERPRINT: &str = concat!("stoplab-", env!("CARGO_PKG_VERSION"));

/// What every response and chunk of one request shares.
pub struct Reply {
    pub endpoint: Endpoint,
    pub id: String,
    pub created: u64,
    pub model: String,
    pub prompt_tokens: usize,
    pub echo: Option<String>,
    pub top_probs: Option<usize>,
    pub tools: Vec<Value>,
    pub parallel_tool_calls: bool,
    /// `return_token_ids`: choices and chunks list the ids their text carries.
    pub return_token_ids: bool,
    pub vocab: Arc<Vocab>,
}

impl Reply {
    fn object(&self, chunk: bool) -> &'static str {
        match (self.endpoint, chunk) {
            (Endpoint::Completions, _) => "text_completion",
            (Endpoint::Chat, false) => "chat.completion",
            (Endpoint::Chat, true) => "chat.completion.chunk",
        }
    }

    /// Log probabilities in the endpoint's shape (text offsets capped at `cap`, the choice's final length,
    /// when known).
    pub fn logprobs(&self, entries: &[TokenLogprob], cap: Option<usize>) -> Value {
        match self.endpoint {
            Endpoint::Completions => completions::logprobs_json(entries, &self.vocab, cap),
            Endpoint::Chat => chat::logprobs_json(entries, &self.vocab),
        }
    }

    pub fn usage(&self, completion: usize) -> Value {
        json!({
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": self.prompt_tokens + completion,
        })
    }

    /// A reply read for function calls, when tools were offered.
    pub fn calls(&self, choice: usize, text: &str) -> Option<ToolReply> {
        if self.tools.is_empty() {
            return None;
        }
        let mut reply = parse_tool_calls(text, &self.tools, &format!("{}_{choice}", self.id))?;
        if !self.parallel_tool_calls {
            reply.calls.truncate(1);
        }
        Some(reply)
    }

    pub fn finish_reason(finish: &FinishReason, calls: bool) -> &'static str {
        if calls { "tool_calls" } else { finish.openai() }
    }

    /// The whole (not streamed) response.
    pub fn response(&self, choices: Vec<(Outcome, Logprobs)>) -> Value {
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
                        choice["message"] = chat::message(&outcome.text, calls.as_ref())
                    }
                }
                let carried = outcome.carried_ids().len();
                choice["logprobs"] = match self.top_probs {
                    Some(_) => {
                        self.logprobs(&lp.take_until(carried), Some(outcome.text.chars().count()))
                    }
                    None => Value::Null,
                };
                if self.return_token_ids {
                    choice["token_ids"] = outcome.carried_ids().into();
                    choice["withheld_token_ids"] = outcome.withheld_ids().into();
                }
                choice["finish_reason"] =
                    Self::finish_reason(&outcome.finish, calls.is_some()).into();
                choice["stop_reason"] = outcome.finish.stop_reason();
                choice
            })
            .collect();
        json!({
            "id": self.id,
            "object": self.object(false),
            "created": self.created,
            "model": self.model,
            "system_fingerprint": FINGERPRINT,
            "choices": list,
            "usage": self.usage(completion),
        })
    }

    /// One SSE chunk of choice `index`: a delta, the ids its text carries (with `return_token_ids`) and
    /// their logprobs, and (at the end) the finish.
    pub fn chunk(
        &self,
        index: usize,
        delta: Delta<'_>,
        carried: Option<(&[u32], Option<Value>)>,
        finish: Option<(&'static str, Value)>,
    ) -> Value {
        let (ids, logprobs) = carried.unwrap_or((&[], None));
        let mut choice = json!({"index": index});
        match self.endpoint {
            Endpoint::Completions => {
                choice["text"] = match delta {
                    Delta::Text(t) => t,
                    _ => "",
                }
                .into();
            }
            Endpoint::Chat => choice["delta"] = chat::delta(&delta),
        }
        choice["logprobs"] = logprobs.unwrap_or(Value::Null);
        if self.return_token_ids {
            choice["token_ids"] = ids.into();
        }
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

    /// A chunk of these choices.
    pub fn wrap(&self, choices: Value) -> Value {
        json!({
            "id": self.id,
            "object": self.object(true),
            "created": self.created,
            "model": self.model,
            "system_fingerprint": FINGERPRINT,
            "choices": choices,
        })
    }
}

/// Seconds since the epoch: a response's `created`.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
