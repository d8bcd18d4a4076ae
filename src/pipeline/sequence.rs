//! One generation, driven a step at a time by its caller: its own sampler (seed included), stop engine and
//! timings. It takes the model's proposal for its next token ([`Sequence::accept`]) and answers which token to
//! feed next, so the caller decides when the model runs: [`generate`](super::generate::generate) feeds it one
//! sequence's tokens, a [`Batch`](super::batch::Batch) feeds the tokens of all its running sequences through
//! one [`Model::decode`](crate::pipeline::model::Model::decode) per step.

use std::ops::ControlFlow;
use std::time::Instant;

use crate::Error;
use crate::pipeline::field::{Field, SettingsError};
use crate::pipeline::model::Next;
use crate::pipeline::sampling::Sampler;
use crate::pipeline::settings::{EndInReasoning, GenerateParams, Reasoning};
use crate::pipeline::stop::{Finish, FinishReason, StopEngine, StopSet};
use crate::pipeline::tokenizer::Vocab;

use super::sink::{Forced, Outcome, Sink, StepProbs, Timings, TokenEvent};

/// Whether a generation after `prompt` begins inside the reasoning `r` marks: it says so, or the prompt's
/// last marker (in its last 4,096 tokens) is the open one.
pub fn starts_inside(r: &Reasoning, vocab: &Vocab, prompt: &[u32]) -> Result<bool, Error> {
    let tail = &prompt[prompt.len().saturating_sub(4096)..];
    Ok(r.starts_inside || r.opened_by(&vocab.decode(tail)?))
}

/// One generation, driven a step at a time by its caller.
pub struct Sequence {
    engine: StopEngine,
    sampler: Sampler,
    stops: StopSet,
    prompt_len: usize,
    timings: Timings,
    started: Instant,
    decode_start: Option<Instant>,
    finish: Option<Finish>,
    /// The raw logits of the last step, kept when the sink wants probabilities.
    raw: Vec<f32>,
    /// The end tokens in force: the model's set with the user's choice (replace, add, remove) applied.
    end_tokens: std::collections::BTreeSet<u32>,
    /// The reasoning policies that write the close marker in place of the model's choice, and its id.
    close: Option<Close>,
}

/// What writes the close marker: `--end-in-reasoning close`, the reasoning budget.
struct Close {
    id: u32,
    on_end: bool,
    budget: Option<usize>,
}

impl Sequence {
    /// Checks the settings and the prompt (as [`generate`](super::generate::generate) does) and starts a
    /// generation that may fill `context` positions. The prefill's time counts from here.
    pub fn new(
        vocab: &Vocab,
        prompt: &[u32],
        params: &GenerateParams,
        context: usize,
    ) -> Result<Self, Error> {
        params.validate(vocab.len())?;
        if prompt.is_empty() {
            return Err(
                SettingsError::new(Field::Prompt, "is empty; give at least one token").into(),
            );
        }
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
        let end_tokens = params.end_set(vocab.end_tokens());
        // A prompt that ends inside the reasoning (its template wrote the open marker) starts there.
        let mut params = params.clone();
        let mut close = None;
        if let Some(r) = &mut params.reasoning {
            r.starts_inside = starts_inside(r, vocab, prompt)?;
            let on_end = r.end_in_reasoning == EndInReasoning::Close;
            if on_end || r.max_tokens.is_some() {
                let id = vocab
                    .token_id(&r.close)
                    .filter(|&id| vocab.token_bytes(id) == Some(r.close.as_bytes()))
                    .ok_or_else(|| Error::Invalid {
                        field: "--reasoning-markers".into(),
                        message: format!(
                            "the close marker {:?} is not one token of this vocabulary: --end-in-reasoning close \
                             and --max-reasoning-tokens write it as one token",
                            r.close
                        ),
                    })?;
                close = Some(Close {
                    id,
                    on_end,
                    budget: r.max_tokens,
                });
            }
        }
        let params = &params;
        Ok(Self {
            engine: StopEngine::new(params, &end_tokens, prompt.len(), context),
            end_tokens,
            sampler: Sampler::new(params.sampling.clone(), prompt),
            stops: params.stops.clone(),
            prompt_len: prompt.len(),
            timings: Timings {
                prompt_tokens: prompt.len(),
                ..Default::default()
            },
            started: Instant::now(),
            decode_start: None,
            finish: None,
            raw: Vec::new(),
            close,
        })
    }

    /// Takes the model's proposal after the last fed token: samples (unless forced), runs the stop engine,
    /// hands the event to `sink`. Returns the token to feed next and its position, or None once the
    /// generation has finished (a stop, the sink's break: [`Sequence::outcome`] says which).
    pub fn accept(
        &mut self,
        next: Next,
        vocab: &Vocab,
        sink: &mut dyn Sink,
    ) -> Result<Option<(u32, usize)>, Error> {
        if self.finish.is_some() {
            return Ok(None);
        }
        if self.decode_start.is_none() {
            self.timings.prefill_ms = self.started.elapsed().as_secs_f64() * 1e3;
            self.decode_start = Some(Instant::now());
        }
        let wants_probs = sink.wants_probs();
        let mut probs = None;
        let mut forced = None;
        let id = match next {
            Next::Forced(id) => id,
            Next::Logits(mut logits) => {
                let inside = self.engine.in_reasoning();
                let closing = self.close.as_ref().filter(|_| inside);
                if wants_probs || closing.is_some_and(|c| c.on_end) {
                    self.raw.clone_from(&logits);
                }
                // An end token the model ranked first, kept out by the reasoning policy: read off the raw
                // logits before the sampler bans it (no copy; the softmax only when it happens).
                if self.engine.policy_bans_ends() {
                    let top = logits
                        .iter()
                        .enumerate()
                        .max_by(|a, b| a.1.total_cmp(b.1))
                        .map(|(i, _)| i as u32);
                    if let Some(t) = top.filter(|t| self.end_tokens.contains(t)) {
                        forced = Some(Forced::EndMasked {
                            p_end: StepProbs::with_top(&logits, t, &self.end_tokens, 0).end,
                            after_close: !inside,
                        });
                    }
                }
                let mut id = self.sampler.sample(&mut logits, self.engine.banned())?;
                if let Some(c) = closing {
                    if let Some(n) = c.budget.filter(|&n| self.engine.reasoning_tokens() >= n) {
                        forced = Some(Forced::Budget { tokens: n });
                        id = c.id;
                    } else if c.on_end && self.end_tokens.contains(&id) {
                        let p_end = StepProbs::with_top(&self.raw, id, &self.end_tokens, 0).end;
                        forced = Some(Forced::EndInReasoning { p_end });
                        id = c.id;
                    }
                }
                if wants_probs {
                    probs = Some(StepProbs::with_top(
                        &self.raw,
                        id,
                        &self.end_tokens,
                        sink.top_probs(),
                    ));
                }
                id
            }
        };
        let bytes = vocab.token_bytes(id).ok_or(Error::UnknownToken {
            id,
            vocab: vocab.len(),
        })?;
        self.sampler.accept(id);
        let step = self.engine.push(id, bytes);
        let event = TokenEvent {
            index: step.index,
            id,
            bytes,
            end_token: step.end_token,
            text: &step.text,
            spelled: &step.spelled,
            held: step.held,
            finish: step.finish.as_ref().map(|f| &f.reason),
            cut: step.finish.as_ref().and_then(|f| f.cut.as_ref()),
            probs: probs.as_ref(),
            carried: step.carried.clone(),
            withheld: step.withheld.clone(),
            reasoning: step.reasoning,
            marker: step.marker,
            forced,
            stops: &self.stops,
        };
        let flow = sink.token(&event)?;
        let (index, finish) = (step.index, step.finish);
        if let Some(f) = finish {
            self.finish = Some(f);
            return Ok(None);
        }
        if flow == ControlFlow::Break(()) {
            self.finish = Some(self.engine.cancel());
            return Ok(None);
        }
        Ok(Some((id, self.prompt_len + index)))
    }

    /// The last token taken (the one that ended the generation, once it has ended).
    pub fn last_token(&self) -> Option<u32> {
        self.engine.tokens().last().copied()
    }

    /// The end-of-generation set in force (the model's, with the user's changes).
    pub fn end_tokens(&self) -> &std::collections::BTreeSet<u32> {
        &self.end_tokens
    }

    /// Ends the generation once its prompt is read, before any token, as `length` (no tokens were asked
    /// for: a prompt scored, not continued).
    pub fn end_at_prompt(&mut self) {
        if self.finish.is_none() {
            self.timings.prefill_ms = self.started.elapsed().as_secs_f64() * 1e3;
            self.finish = Some(Finish {
                reason: FinishReason::Length,
                cut: None,
            });
        }
    }

    /// Ends the generation as abandoned by its consumer (`Cancelled`), unless it has finished already.
    pub fn cancel(&mut self) {
        if self.finish.is_none() {
            self.finish = Some(self.engine.cancel());
        }
    }

    pub fn is_finished(&self) -> bool {
        self.finish.is_some()
    }

    /// The result; a sequence that has not finished counts as cancelled.
    pub fn outcome(mut self) -> Outcome {
        self.cancel();
        let Finish { reason, cut } = self.finish.take().expect("set by cancel");
        let tokens = self.engine.tokens().to_vec();
        let withheld = self.engine.withheld().len();
        let mut timings = self.timings;
        let decode_tokens = tokens.len().saturating_sub(1);
        timings.decode_tokens = decode_tokens;
        timings.decode_ms = self
            .decode_start
            .map_or(0.0, |t| t.elapsed().as_secs_f64() * 1e3);
        timings.prefill_tokens_per_s = per_second(self.prompt_len, timings.prefill_ms);
        timings.decode_tokens_per_s = per_second(decode_tokens, timings.decode_ms);
        Outcome {
            text: self.engine.text().to_owned(),
            finish: reason,
            cut,
            tokens,
            withheld,
            prompt_tokens: self.prompt_len,
            timings,
        }
    }
}

pub(super) fn per_second(n: usize, ms: f64) -> f64 {
    if ms > 0.0 { n as f64 * 1e3 / ms } else { 0.0 }
}
