//! `logprobs`: each generated token's log probability and its alternatives, gathered per choice as the
//! tokens arrive, and handed out with the text that carries their tokens (the stop engine's ledger: one entry
//! per carried id, in order; withheld tokens have none). Each endpoint writes them in
//! its own shape ([`completions::logprobs_json`], [`chat::logprobs_json`]).
//!
//! [`completions::logprobs_json`]: crate::serve::openai::completions::logprobs_json
//! [`chat::logprobs_json`]: crate::serve::openai::chat::logprobs_json

use crate::pipeline::sink::Token;

/// One token's log probability and its alternatives, from the raw-logit softmax (`trace`'s p(end) is from
/// the same distribution). A replayed token was written with certainty: log probability 0, and it is its
/// own only alternative.
#[derive(Debug, Clone)]
pub struct TokenLogprob {
    pub id: u32,
    pub bytes: Vec<u8>,
    pub logprob: f32,
    pub top: Vec<(u32, f32)>,
    /// Characters of the choice's text before this token's first byte.
    pub offset: usize,
}

/// A log probability as JSON can carry it (vLLM's floor for a probability of 0).
pub fn ln(p: f32) -> f32 {
    if p > 0.0 {
        p.ln().max(-9999.0)
    } else {
        -9999.0
    }
}

/// Per choice: the text offsets logprobs need, and the entries not yet handed out (the first is token
/// `sent`'s).
#[derive(Debug, Default)]
pub struct Logprobs {
    released_chars: usize,
    held_chars: usize,
    pending: Vec<TokenLogprob>,
    sent: usize,
}

impl Logprobs {
    /// A choice whose text follows `chars` characters (the echoed prompt): the text offsets count them.
    pub fn after(chars: usize) -> Self {
        Self {
            released_chars: chars,
            ..Self::default()
        }
    }

    /// A generated step's entry, with its `top` alternatives.
    pub fn push(&mut self, step: &Token, top: usize) {
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

    /// The entries of the tokens carried up to token `end` (exclusive) not yet handed out.
    pub fn take_until(&mut self, end: usize) -> Vec<TokenLogprob> {
        let n = end.saturating_sub(self.sent).min(self.pending.len());
        self.sent += n;
        self.pending.drain(..n).collect()
    }
}
