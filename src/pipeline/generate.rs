//! The generation loop: model → sampler → token → stop engine → sink, and nothing else.
//!
//! The loop knows nothing of stdout, HTTP or JSON; the caller brings a [`Sink`] that receives one
//! [`TokenEvent`] per generated token and may end the generation early (or fail it: a write error). Every
//! stop decision, and which text each token releases, is the [`StopEngine`]'s: see its documentation for the
//! order. The concatenated event texts always equal [`Outcome::text`].

use std::ops::ControlFlow;
use std::time::Instant;

use crate::Error;
use crate::model::{Model, Next};
use crate::sampling::Sampler;
use crate::stop::{Finish, HeldFor, StopCut, StopEngine, StopSet};

use super::settings::{Field, SettingsError};
pub use super::settings::{GenerateParams, RepetitionStop};
pub use super::stop::FinishReason;
use crate::tokenizer::Vocab;

/// Speeds of one generation.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct Timings {
    pub prompt_tokens: usize,
    pub prefill_ms: f64,
    pub prefill_tokens_per_s: f64,
    /// Tokens produced by decode steps (the first generated token comes out of the prefill).
    pub decode_tokens: usize,
    pub decode_ms: f64,
    pub decode_tokens_per_s: f64,
}

/// The result of one generation.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The generated text, stop string cut (unless `include_stop`).
    pub text: String,
    pub finish: FinishReason,
    /// For a stop string: the bytes it cut, and the tokens that wrote them.
    pub cut: Option<StopCut>,
    /// Every generated id, the one that stopped the generation included (as llama.cpp counts them).
    pub tokens: Vec<u32>,
    pub prompt_tokens: usize,
    pub timings: Timings,
}

impl Outcome {
    /// The command line's and the server's JSON shape.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "text": self.text,
            "finish_reason": self.finish.openai(),
            "stop_reason": self.finish.stop_reason(),
            "finish": self.finish.describe(),
            "tokens": self.tokens,
            "usage": {
                "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.tokens.len(),
                "total_tokens": self.prompt_tokens + self.tokens.len(),
            },
            "timings": self.timings,
        })
    }
}

/// One generated token as the stop machinery saw it.
#[derive(Debug, Clone, Copy)]
pub struct TokenEvent<'a> {
    /// 0-based index among generated tokens.
    pub index: usize,
    pub id: u32,
    /// The bytes the token stands for.
    pub bytes: &'a [u8],
    /// The id is in the model's end-of-generation set.
    pub end_token: bool,
    /// Text released to the output by this token (possibly empty; possibly text held back earlier).
    pub text: &'a str,
    /// Bytes held back after this token because they may begin a stop string (or complete a character).
    pub held: &'a [u8],
    /// Set on the last token.
    pub finish: Option<&'a FinishReason>,
    /// On the last token, for a stop string: what the match cut.
    pub cut: Option<&'a StopCut>,
    stops: &'a StopSet,
}

impl TokenEvent<'_> {
    /// Which stop the held bytes may begin, if any (the rest of them is an unfinished character).
    pub fn held_for(&self) -> Option<HeldFor> {
        crate::stop::held_for(self.held, self.stops.stops())
    }
}

/// Where generated tokens go. Return `Ok(ControlFlow::Break(()))` to end the generation (`Cancelled`: a
/// reader that went away), or an error to fail it (a write that could not be done: a full disk).
pub trait Sink {
    fn token(&mut self, event: &TokenEvent<'_>) -> Result<ControlFlow<()>, Error>;
}

/// A closure is a sink that cannot fail.
impl<F: FnMut(&TokenEvent<'_>) -> ControlFlow<()>> Sink for F {
    fn token(&mut self, event: &TokenEvent<'_>) -> Result<ControlFlow<()>, Error> {
        Ok(self(event))
    }
}

/// A sink that ignores everything (for callers that only want the [`Outcome`]).
pub struct Discard;

impl Sink for Discard {
    fn token(&mut self, _: &TokenEvent<'_>) -> Result<ControlFlow<()>, Error> {
        Ok(ControlFlow::Continue(()))
    }
}

/// Runs one generation of `model` from `prompt`.
pub fn generate(
    model: &mut dyn Model,
    vocab: &Vocab,
    prompt: &[u32],
    params: &GenerateParams,
    sink: &mut dyn Sink,
) -> Result<Outcome, Error> {
    params.validate(vocab.len())?;
    if prompt.is_empty() {
        return Err(SettingsError::new(Field::Prompt, "is empty; give at least one token").into());
    }
    let context = model.context_length();
    if prompt.len() >= context {
        return Err(Error::PromptTooLong {
            prompt: prompt.len(),
            context,
        });
    }
    if let Some(&id) = prompt.iter().find(|&&id| id as usize >= vocab.len()) {
        return Err(Error::UnknownToken {
            id,
            vocab: vocab.len(),
        });
    }

    let mut engine = StopEngine::new(params, vocab.end_tokens(), prompt.len(), context);
    let mut sampler = Sampler::new(params.sampling.clone(), prompt);
    let mut timings = Timings {
        prompt_tokens: prompt.len(),
        ..Default::default()
    };

    let t0 = Instant::now();
    let mut next = model.forward(prompt, 0)?;
    timings.prefill_ms = t0.elapsed().as_secs_f64() * 1e3;
    let decode_start = Instant::now();

    let finish = loop {
        let id = match next {
            Next::Forced(id) => id,
            Next::Logits(mut logits) => sampler.sample(&mut logits, engine.banned())?,
        };
        let bytes = vocab.token_bytes(id).ok_or(Error::UnknownToken {
            id,
            vocab: vocab.len(),
        })?;
        sampler.accept(id);
        let step = engine.push(id, bytes);
        let event = TokenEvent {
            index: step.index,
            id,
            bytes,
            end_token: step.end_token,
            text: &step.released,
            held: step.held,
            finish: step.finish.as_ref().map(|f| &f.reason),
            cut: step.finish.as_ref().and_then(|f| f.cut.as_ref()),
            stops: &params.stops,
        };
        let flow = sink.token(&event)?;
        let (index, finish) = (step.index, step.finish);
        if let Some(f) = finish {
            break f;
        }
        if flow.is_break() {
            break engine.cancel();
        }
        next = model.forward(&[id], prompt.len() + index)?;
    };
    let Finish { reason, cut } = finish;
    let tokens = engine.tokens().to_vec();

    let decode_tokens = tokens.len().saturating_sub(1);
    timings.decode_tokens = decode_tokens;
    timings.decode_ms = decode_start.elapsed().as_secs_f64() * 1e3;
    timings.prefill_tokens_per_s = per_second(prompt.len(), timings.prefill_ms);
    timings.decode_tokens_per_s = per_second(decode_tokens, timings.decode_ms);
    Ok(Outcome {
        text: engine.text().to_owned(),
        finish: reason,
        cut,
        tokens,
        prompt_tokens: prompt.len(),
        timings,
    })
}

fn per_second(n: usize, ms: f64) -> f64 {
    if ms > 0.0 { n as f64 * 1e3 / ms } else { 0.0 }
}
