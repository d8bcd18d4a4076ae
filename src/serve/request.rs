//! A generation request, checked: parse, don't validate.
//!
//! A route reads its body its own way (OpenAI's `prompt` or `messages`, the playground's format and
//! messages), then every route that queues a generation goes through the same check, [`Fitted`]: the prompt
//! against the model's context, the settings through the one validation ([`UserSettings::validate`]), and
//! `replay`. What comes out is a [`GenRequest`], which can only fail for reasons of the model or the
//! environment; what does not is an [`ApiError`] naming the field, the same error on every route.

use serde_json::Value;

use crate::pipeline::settings::{GenerateParams, UserSettings};
use crate::serve::error::ApiError;
use crate::serve::fields::{self, Fields, Served};
use crate::serve::names::Names;

/// Which generation route a request came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Completions,
    Chat,
}

/// A generation request, fully checked: it can only fail for reasons of the model or the environment.
#[derive(Debug, Clone)]
pub struct GenRequest {
    pub endpoint: Endpoint,
    pub prompt: Vec<u32>,
    pub replay: Option<Vec<u32>>,
    pub params: GenerateParams,
    pub stream: bool,
    pub include_usage: bool,
    /// Choices to generate (`n`), one after another.
    pub n: usize,
    /// Alternatives per token to compute probabilities for (`logprobs` / `top_logprobs`); None: none.
    pub top_probs: Option<usize>,
    /// Completions' `echo`: the prompt's text, which each choice's text begins with.
    pub echo: Option<String>,
    /// Chat with `tools` (and `tool_choice` not "none"): the tools a reply is read for calls of.
    pub tools: Vec<Value>,
    /// `parallel_tool_calls`: false keeps only a reply's first call.
    pub parallel_tool_calls: bool,
    /// `return_token_ids`: the ids each choice or chunk carries, and the ids withheld at the finish.
    pub return_token_ids: bool,
    /// The prompt scored, with this many alternatives per prompt token: each prompt token's log
    /// probability given the ones before it (completions' `echo` with `logprobs`, vLLM's
    /// `prompt_logprobs`), computed in the prefill's one pass. None: not scored.
    pub prompt_top: Option<usize>,
    /// vLLM's `prompt_logprobs`: each choice lists the prompt's log probabilities in vLLM's shape, with this
    /// many alternatives per token.
    pub prompt_logprobs: Option<usize>,
    /// `max_tokens: 0` with `echo`: the prompt is read (and scored when asked), nothing is generated.
    pub score_only: bool,
}

impl GenRequest {
    /// The seed of choice `i`: the request's seed plus `i`, as vLLM seeds the copies of a request with `n`
    /// (so choice 0 is the text an `n` = 1 request gives).
    pub fn choice_seed(&self, i: usize) -> u64 {
        self.params.sampling.seed.wrapping_add(i as u64)
    }
}

/// A prompt that fits the model's context with at least one token left to generate: the one check every
/// route that queues a generation makes, [`Fitted::new`] then [`Fitted::validate`]. A prompt beyond the
/// context, or one that leaves less room than `max_tokens` asks, is a 400 with OpenAI's
/// `code: "context_length_exceeded"` on every route.
pub struct Fitted<'a> {
    served: &'a Served,
    prompt: Vec<u32>,
}

/// What [`Fitted::validate`] gives a route to build its [`GenRequest`] with.
pub struct Checked {
    pub prompt: Vec<u32>,
    pub params: GenerateParams,
    pub replay: Option<Vec<u32>>,
}

impl<'a> Fitted<'a> {
    /// Checks the prompt, which came from the field `field`: not empty, and shorter than the context.
    pub fn new(prompt: Vec<u32>, field: &str, served: &'a Served) -> Result<Self, ApiError> {
        let context = served.context;
        if prompt.is_empty() {
            return Err(ApiError::invalid(
                field,
                "is empty; give at least one token",
            ));
        }
        if prompt.len() >= context {
            return Err(ApiError::context_length(
                field,
                format!(
                    "the prompt has {} tokens; the model's context is {context} tokens and at least one must be \
                     left to generate",
                    prompt.len()
                ),
            ));
        }
        Ok(Self { served, prompt })
    }

    /// Tokens the context leaves after the prompt (at least one): a route's default `max_tokens` may
    /// depend on it.
    pub fn room(&self) -> usize {
        self.served.context - self.prompt.len()
    }

    /// `max_tokens`, given as the field `field`, within the room the prompt leaves.
    pub fn check_max(&self, max: usize, field: &str) -> Result<usize, ApiError> {
        let (context, room) = (self.served.context, self.room());
        if max > room {
            return Err(ApiError::context_length(
                field,
                format!(
                    "the prompt has {} tokens and {field} asks for {max}: {} in all, beyond the model's context of \
                     {context} tokens; ask for at most {room} or shorten the prompt",
                    self.prompt.len(),
                    self.prompt.len() + max
                ),
            ));
        }
        Ok(max)
    }

    /// The rest of the check, in this order: the settings through the one validation (an error named as
    /// `names` says), their `max_tokens` within the room ([`Fitted::check_max`]), then `replay` (read from
    /// `f`), which a server without weights requires.
    pub fn validate(
        self,
        user: &UserSettings,
        names: &Names,
        f: &Fields,
    ) -> Result<Checked, ApiError> {
        let vocab = &*self.served.vocab;
        let params = user
            .validate(Some(vocab.len()))
            .map_err(|e| ApiError::setting(&e, names))?
            .params;
        self.check_max(params.max_tokens, names.max)?;
        let mut params = params;
        params.speculation = fields::speculation(f, self.served)?;
        params.reasoning = fields::reasoning(f, vocab)?;
        let replay = fields::replay(f, vocab)?;
        if replay.is_none() && !self.served.weights {
            return Err(ApiError::invalid(
                "replay",
                "this server runs without weights (stoplab serve --replay-only): give `replay`, the text or \
                 token ids the model should write",
            ));
        }
        Ok(Checked {
            prompt: self.prompt,
            params,
            replay,
        })
    }
}
