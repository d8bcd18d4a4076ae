//! The response of both generation endpoints, whole or as stream chunks: the envelope they share (id,
//! object, model, usage, `finish_reason` and vLLM's `stop_reason`), with each endpoint's own parts written
//! by its file ([`completions`]' `text` and log probabilities, [`chat`]'s message, deltas and log
//! probabilities).

use crate::serve::openai::reasoning::Split;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::pipeline::format::{ToolReply, parse_tool_calls};
use crate::pipeline::sink::{Outcome, StepProbs};
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
    /// The prompt's ids (listed with `return_token_ids` and scored prompts).
    pub prompt: Vec<u32>,
    /// vLLM's `prompt_logprobs`: alternatives per prompt token in that shape.
    pub prompt_logprobs: Option<usize>,
    pub vocab: Arc<Vocab>,
    /// Chat with reasoning markers: each choice's text split into `reasoning_content` and `content`.
    pub reasoning: Option<Split>,
}

/// A choice that finished, with what was gathered for it on the way.
pub struct Answered {
    pub outcome: Outcome,
    pub logprobs: Logprobs,
    /// The probabilities of the prompt's tokens after the first, when the prompt was scored.
    pub prompt: Vec<StepProbs>,
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

    /// Characters of the echoed prompt, which a choice's text offsets count from (0 without echo).
    pub fn echo_chars(&self) -> usize {
        self.echo.as_deref().map_or(0, |e| e.chars().count())
    }

    /// Where a choice's log probabilities start: after the echoed prompt.
    pub fn choice_logprobs(&self) -> Logprobs {
        Logprobs::after(self.echo_chars())
    }

    /// Whether the prompt's log probabilities come with each choice (echo with logprobs, or vLLM's
    /// `prompt_logprobs`): each choice then hears [`Event::Prompt`](crate::serve::delivery::Event) first.
    pub fn scores_prompt(&self) -> bool {
        self.echo_logprobs() || self.prompt_logprobs.is_some()
    }

    fn echo_logprobs(&self) -> bool {
        self.endpoint == Endpoint::Completions && self.echo.is_some() && self.top_probs.is_some()
    }

    /// A scored prompt's fields in a choice (or its first chunk): echo's log probabilities before the
    /// generated ones' (`logprobs`, joined to `generated` when given), and vLLM's `prompt_logprobs`.
    pub fn prompt_fields(
        &self,
        choice: &mut Value,
        probs: &[StepProbs],
        generated: Option<&Value>,
    ) {
        if self.echo_logprobs() {
            let top = self.top_probs.unwrap_or(0);
            let part = completions::prompt_logprobs_json(
                &self.prompt,
                probs,
                top,
                self.echo_chars(),
                &self.vocab,
            );
            choice["logprobs"] = match generated {
                Some(g) => completions::join_logprobs(part, g),
                None => part,
            };
        }
        if let Some(top) = self.prompt_logprobs {
            choice["prompt_logprobs"] =
                completions::vllm_prompt_logprobs(&self.prompt, probs, top, &self.vocab);
        }
        if self.return_token_ids && self.endpoint == Endpoint::Completions {
            choice["prompt_token_ids"] = self.prompt.clone().into();
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
    pub fn response(&self, choices: Vec<Answered>) -> Value {
        let mut completion = 0;
        let list: Vec<Value> = choices
            .into_iter()
            .enumerate()
            .map(|(i, a)| {
                let Answered {
                    outcome,
                    logprobs: mut lp,
                    prompt,
                } = a;
                completion += outcome.tokens.len();
                let mut choice = json!({"index": i});
                // The reasoning is read out first: calls and content are the answer's.
                let (reasoning, answer) = match (&self.reasoning, self.endpoint) {
                    (Some(split), Endpoint::Chat) => {
                        let (r, c) = split.clone().whole(&outcome.text);
                        (Some(r), c)
                    }
                    _ => (None, outcome.text.clone()),
                };
                let calls = self.calls(i, &answer);
                match self.endpoint {
                    Endpoint::Completions => {
                        let echo = self.echo.as_deref().unwrap_or("");
                        choice["text"] = format!("{echo}{}", outcome.text).into();
                    }
                    Endpoint::Chat => {
                        choice["message"] = chat::message(&answer, calls.as_ref());
                        if let Some(r) = reasoning {
                            choice["message"]["reasoning_content"] = r.into();
                        }
                    }
                }
                let carried = outcome.carried_ids().len();
                let chars = self.echo_chars() + outcome.text.chars().count();
                choice["logprobs"] = match self.top_probs {
                    Some(_) => self.logprobs(&lp.take_until(carried), Some(chars)),
                    None => Value::Null,
                };
                if self.scores_prompt() {
                    let generated = choice["logprobs"].take();
                    self.prompt_fields(&mut choice, &prompt, Some(&generated));
                    if choice["logprobs"].is_null() {
                        choice["logprobs"] = generated;
                    }
                } else if self.return_token_ids && self.endpoint == Endpoint::Completions {
                    choice["prompt_token_ids"] = self.prompt.clone().into();
                }
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
