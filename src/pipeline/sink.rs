//! The sink's vocabulary: what the generation loop hands its caller for each token ([`TokenEvent`], and the
//! owned [`Token`] a caller keeps: a trace row, a server's stream), the model's probabilities at a step ([`StepProbs`]), and the result
//! ([`Outcome`]). The loops ([`generate`](super::generate), [`batch`](super::batch)) import this file; it
//! imports neither.
//!
//! Released text has one name everywhere: `text`, the bytes a token lets through to the output (possibly
//! empty, possibly text held back earlier). The concatenated `text` of a generation's tokens always equals
//! [`Outcome::text`].

use std::ops::{ControlFlow, Range};

use crate::Error;
use crate::pipeline::stop::engine::Marker;
use crate::pipeline::stop::{FinishReason, HeldFor, StopCut, StopSet};

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
    /// How many of the last `tokens` were withheld: none of their bytes reached `text` (the tokens of a cut
    /// stop string; a finish by an id carries its token). The others are carried.
    pub withheld: usize,
    pub prompt_tokens: usize,
    pub timings: Timings,
}

impl Outcome {
    /// The ids carried with `text` (every token but the withheld ones): they spell it, the token that ended
    /// the generation by its id spelling nothing.
    pub fn carried_ids(&self) -> &[u32] {
        &self.tokens[..self.tokens.len() - self.withheld]
    }

    /// The ids withheld at the finish.
    pub fn withheld_ids(&self) -> &[u32] {
        &self.tokens[self.tokens.len() - self.withheld..]
    }

    /// The command line's and the server's JSON shape.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "text": self.text,
            "finish_reason": self.finish.openai(),
            "stop_reason": self.finish.stop_reason(),
            "finish": self.finish.describe(),
            "tokens": self.tokens,
            "withheld_tokens": self.withheld_ids(),
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
#[derive(Debug, Clone)]
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
    /// The text the `carried` tokens spell: the same output as `text`, released at whole tokens (what a
    /// stream that lists ids sends with them).
    pub spelled: &'a str,
    /// Bytes held back after this token because they may begin a stop string (or complete a character).
    pub held: &'a [u8],
    /// Set on the last token.
    pub finish: Option<&'a FinishReason>,
    /// On the last token, for a stop string: what the match cut.
    pub cut: Option<&'a StopCut>,
    /// The model's probabilities at this step, when the sink asked for them ([`Sink::wants_probs`]) and a
    /// model (not a replay) chose the token.
    pub probs: Option<&'a StepProbs>,
    /// The tokens (indices) this event carries: they spell `spelled` (the ledger of
    /// [`StopEngine`](crate::pipeline::stop::StopEngine)).
    pub carried: Range<usize>,
    /// On the last token: the tokens none of whose bytes reached the output (the tokens of a cut stop
    /// string); a finish by an id (an end token, a stop token id) carries its token.
    pub withheld: Range<usize>,
    /// With reasoning markers: whether the text after this token is inside the reasoning (None: no
    /// markers), and the marker this token completed.
    pub reasoning: Option<bool>,
    pub marker: Option<Marker>,
    /// This token was written in place of the model's choice (a reasoning policy).
    pub forced: Option<Forced>,
    pub(crate) stops: &'a StopSet,
}

/// Why a token was written in place of the one the model chose.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Forced {
    /// The model chose an end token inside the reasoning (with this probability of its end set): the
    /// close marker was written instead (`--end-in-reasoning close`).
    EndInReasoning { p_end: f32 },
    /// The reasoning budget of this many tokens was spent: the close marker was written
    /// (`--max-reasoning-tokens`).
    Budget { tokens: usize },
    /// The model's most likely token was an end token (with this probability of its end set), kept from
    /// the sampler by the reasoning policy: inside the reasoning (`mask`) or just after the close marker
    /// (`ban-after-close:N`, `after_close`); the token written is the sampler's choice among the rest.
    EndMasked { p_end: f32, after_close: bool },
}

/// What the model thought at one step: the softmax of its raw logits (before penalties, bias and
/// temperature), the distribution a user debugging "why didn't it stop?" wants to see.
#[derive(Debug, Clone, PartialEq)]
pub struct StepProbs {
    /// The probability of the model's end-of-generation set, summed: how close it came to stopping.
    pub end: f32,
    /// The probability of the token that was chosen.
    pub chosen: f32,
    /// The most likely tokens, most likely first.
    pub top: Vec<(u32, f32)>,
    /// The chosen token's rank: 1 plus the tokens the model found strictly more likely (vLLM's `rank`).
    pub rank: usize,
}

impl StepProbs {
    /// How many alternatives [`StepProbs::top`] keeps.
    pub const TOP: usize = 5;

    /// The distribution of `logits`, summarised for `chosen` and the end set, with [`StepProbs::TOP`]
    /// alternatives.
    pub fn of(logits: &[f32], chosen: u32, end_ids: &std::collections::BTreeSet<u32>) -> Self {
        Self::with_top(logits, chosen, end_ids, Self::TOP)
    }

    /// [`StepProbs::of`] keeping the `k` most likely tokens (OpenAI's `top_logprobs` asks for up to 20).
    pub fn with_top(
        logits: &[f32],
        chosen: u32,
        end_ids: &std::collections::BTreeSet<u32>,
        k: usize,
    ) -> Self {
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let sum: f64 = logits.iter().map(|&l| f64::from((l - max).exp())).sum();
        let p = |id: u32| {
            logits
                .get(id as usize)
                .map_or(0.0, |&l| (f64::from((l - max).exp()) / sum) as f32)
        };
        let mut top: Vec<(u32, f32)> = Vec::with_capacity(k + 1);
        if k > 0 {
            for (id, &l) in logits.iter().enumerate() {
                if top.len() < k || l > top[top.len() - 1].1 {
                    let at = top.partition_point(|&(_, x)| x >= l);
                    top.insert(at, (id as u32, l));
                    top.truncate(k);
                }
            }
        }
        let own = logits
            .get(chosen as usize)
            .copied()
            .unwrap_or(f32::NEG_INFINITY);
        Self {
            end: end_ids.iter().map(|&id| p(id)).sum(),
            chosen: p(chosen),
            rank: 1 + logits.iter().filter(|&&l| l > own).count(),
            top: top.into_iter().map(|(id, _)| (id, p(id))).collect(),
        }
    }
}

impl TokenEvent<'_> {
    /// Which stop the held bytes may begin, if any (the rest of them is an unfinished character).
    pub fn held_for(&self) -> Option<HeldFor> {
        crate::pipeline::stop::held_for(self.held, self.stops.stops())
    }

    /// The event, owned; `special` says whether the id is a control token (the vocabulary knows).
    pub fn to_token(&self, special: bool) -> Token {
        Token {
            index: self.index,
            id: self.id,
            bytes: self.bytes.to_vec(),
            special,
            end_token: self.end_token,
            text: self.text.to_owned(),
            spelled: self.spelled.to_owned(),
            held: self.held.to_vec(),
            held_for: self.held_for(),
            finish: self.finish.cloned(),
            cut: self.cut.cloned(),
            probs: self.probs.cloned(),
            carried: self.carried.clone(),
            withheld: self.withheld.clone(),
            reasoning: self.reasoning,
            marker: self.marker,
            forced: self.forced,
        }
    }
}

/// One generated token, owned: everything a [`TokenEvent`] says, kept past the sink's call. `stoplab trace`
/// records one per row, the server streams one per token, the playground shows one per row.
#[derive(Debug, Clone, PartialEq)]
pub struct Token {
    /// 0-based index among generated tokens.
    pub index: usize,
    pub id: u32,
    /// The bytes the token stands for (a special token's name).
    pub bytes: Vec<u8>,
    /// A special (control) token: `bytes` is its name, not text the model spelled.
    pub special: bool,
    /// The id is in the end-of-generation set in force.
    pub end_token: bool,
    /// Text released to the output by this token (possibly empty; possibly text held back earlier).
    pub text: String,
    /// The text the `carried` tokens spell (see [`TokenEvent::spelled`]).
    pub spelled: String,
    /// Bytes held back after this token: the beginning of a stop, or an unfinished character.
    pub held: Vec<u8>,
    /// Which stop the held bytes may begin.
    pub held_for: Option<HeldFor>,
    /// On the last token: how the generation ended.
    pub finish: Option<FinishReason>,
    /// On the last token, for a stop string: the bytes the match cut and the tokens that wrote them.
    pub cut: Option<StopCut>,
    /// The model's probabilities at this step (raw-logit softmax), when asked for and a model, not a replay,
    /// chose the token.
    pub probs: Option<StepProbs>,
    /// The tokens (indices) that spell `spelled` (see [`TokenEvent::carried`]).
    pub carried: Range<usize>,
    /// On the last token: the tokens withheld (see [`TokenEvent::withheld`]).
    pub withheld: Range<usize>,
    /// See [`TokenEvent::reasoning`], [`TokenEvent::marker`] and [`TokenEvent::forced`].
    pub reasoning: Option<bool>,
    pub marker: Option<Marker>,
    pub forced: Option<Forced>,
}

impl Token {
    /// The bytes generated but never released: the cut stop string (empty unless the last token's stop cut).
    pub fn cut_bytes(&self) -> &[u8] {
        self.cut.as_ref().map_or(&[], |c| &c.bytes)
    }
}

/// Where generated tokens go. Return `Ok(ControlFlow::Break(()))` to end the generation (`Cancelled`: a
/// reader that went away), or an error to fail it (a write that could not be done: a full disk).
pub trait Sink {
    fn token(&mut self, event: &TokenEvent<'_>) -> Result<ControlFlow<()>, Error>;

    /// Whether the events should carry the model's probabilities ([`TokenEvent::probs`]); computing them
    /// costs a pass over the vocabulary per token, so only sinks that show them ask.
    fn wants_probs(&self) -> bool {
        false
    }

    /// How many alternatives [`StepProbs::top`] keeps when [`Sink::wants_probs`] or
    /// [`Sink::wants_prompt_probs`].
    fn top_probs(&self) -> usize {
        StepProbs::TOP
    }

    /// Whether [`Sink::prompt`] should get the prompt's probabilities: each prompt token's under the
    /// model's distribution after the tokens before it (a prompt's log-likelihood, for scoring). They take
    /// the logits at every prompt position, computed in the prefill's one pass, and no prompt position
    /// reused from a cache.
    fn wants_prompt_probs(&self) -> bool {
        false
    }

    /// Called once the prompt is read, before the first token: with the probabilities of the prompt's
    /// tokens after the first (in order) when the sink wants them, else with none. `Break` ends the
    /// generation there, before any token, as `length` (a request for no tokens: scoring a prompt).
    fn prompt(&mut self, probs: Vec<StepProbs>) -> Result<ControlFlow<()>, Error> {
        let _ = probs;
        Ok(ControlFlow::Continue(()))
    }

    /// Called after each step of speculative decoding, once its tokens' events are in.
    fn step(&mut self, report: &StepReport) -> Result<(), Error> {
        let _ = report;
        Ok(())
    }
}

/// One step of speculative decoding ([`speculate`](crate::pipeline::speculate)), reported after its tokens'
/// events: what was drafted, how much of it the model's draws accepted, and what was discarded because the
/// generation ended inside the step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepReport {
    /// 0-based index among the generation's steps.
    pub index: usize,
    /// The drafted tokens fed with the step's first token.
    pub drafted: Vec<u32>,
    /// How many of `drafted`, from the first, were drawn as drafted and kept.
    pub accepted: usize,
    /// The drafted tokens after the one that ended the generation (empty unless it ended in this step):
    /// never drawn, not in the output, the ids or `usage`.
    pub discarded: Vec<u32>,
}

impl StepReport {
    /// The drafted tokens the model's draw rejected (the draw after the last accepted one differed).
    pub fn rejected(&self) -> &[u32] {
        if self.discarded.is_empty() {
            &self.drafted[self.accepted..]
        } else {
            &[]
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_probs_sum_the_end_set_and_rank_the_top() {
        let logits = [0.0f32, 2.0, 1.0, 2.0f32.ln() + 2.0, -1.0, 0.5];
        let ends = std::collections::BTreeSet::from([0, 4]);
        let p = StepProbs::of(&logits, 1, &ends);
        let z: f32 = logits.iter().map(|l| l.exp()).sum();
        assert!((p.end - (1.0 + (-1.0f32).exp()) / z).abs() < 1e-6);
        assert!((p.chosen - 2.0f32.exp() / z).abs() < 1e-6);
        let ids: Vec<u32> = p.top.iter().map(|t| t.0).collect();
        assert_eq!(ids, [3, 1, 2, 5, 0]);
    }
}
