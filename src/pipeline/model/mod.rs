//! Models: something that, given the tokens so far, proposes the next one.
//!
//! A real model returns logits for the sampler; the replay model returns the token its script says,
//! so every stop scenario can be staged with no weights and no randomness.

pub mod adapter;
mod gguf;
mod layout;
mod llama;
mod replay;

pub use gguf::{Backend, GgufFile, GgufLlama};
pub(crate) use gguf::{candle_message, context_for};
pub use llama::{Arch, Isa, KERNEL_FORMATS, kernel_rate, threads};
pub use replay::Replay;

use crate::Error;

/// What a model proposes for the next position.
#[derive(Debug, Clone)]
pub enum Next {
    /// Scores over the vocabulary, for the sampler.
    Logits(Vec<f32>),
    /// A token chosen already (the replay model): sampling does not apply.
    Forced(u32),
}

/// A language model driven one step at a time.
pub trait Model {
    /// Number of ids the model can produce.
    fn vocab_size(&self) -> usize;
    /// Largest number of positions (prompt plus generated) the model accepts.
    fn context_length(&self) -> usize;
    /// Feeds `tokens` at positions `pos..pos + tokens.len()` and proposes the token after the last one.
    /// `pos == 0` starts a new sequence.
    fn forward(&mut self, tokens: &[u32], pos: usize) -> Result<Next, Error>;
    /// A short name for reports.
    fn name(&self) -> &str;

    /// Sequences the model can hold at once, each in its own KV slot ([`Model::forward_in`]). A model of
    /// one slot (the replay, candle's backend) runs sequences one at a time.
    fn slots(&self) -> usize {
        1
    }

    /// [`Model::forward`] for the sequence held in `slot` (`0..slots()`).
    fn forward_in(&mut self, slot: usize, tokens: &[u32], pos: usize) -> Result<Next, Error> {
        if slot != 0 {
            return Err(Error::Backend(format!(
                "{} holds one sequence (slot 0), not slot {slot}",
                self.name()
            )));
        }
        self.forward(tokens, pos)
    }

    /// [`Model::forward_in`] that hands the logits after *every* token of `tokens` to `each`, in order: the
    /// distribution each next token is drawn from (a prompt's log probabilities; the last row is the
    /// proposal for the token after them). By default one token at a time; a model that can computes the
    /// rows in one pass, as its prefill does. A model that proposes without logits (the replay) fails.
    fn forward_each(
        &mut self,
        slot: usize,
        tokens: &[u32],
        pos: usize,
        each: &mut dyn FnMut(&[f32]),
    ) -> Result<(), Error> {
        for (i, &t) in tokens.iter().enumerate() {
            match self.forward_in(slot, &[t], pos + i)? {
                Next::Logits(logits) => each(&logits),
                Next::Forced(_) => {
                    return Err(Error::Backend(format!(
                        "{} writes scripted tokens: it has no probabilities to give",
                        self.name()
                    )));
                }
            }
        }
        Ok(())
    }

    /// Feeds `tokens` at `pos..` of `slot` and returns the proposal after *each* of them, in order (a step
    /// of speculative decoding verifies a draft so). By default one token at a time; a model with logits
    /// for every row of a pass gives them in one ([`Model::forward_each`]).
    fn forward_all(&mut self, slot: usize, tokens: &[u32], pos: usize) -> Result<Vec<Next>, Error> {
        tokens
            .iter()
            .enumerate()
            .map(|(i, &t)| self.forward_in(slot, &[t], pos + i))
            .collect()
    }

    /// The tokens the model writes, when it replays a script (what `--tokens-per-step` stages steps of).
    fn script(&self) -> Option<&[u32]> {
        None
    }

    /// One step of several sequences, several positions each: `steps[i] = (slot, tokens, pos)` feeds
    /// `tokens` at `pos..` of the sequence in `slot` (each slot at most once) and returns, per step, the
    /// proposal after each of its tokens (a batch's step of speculative decoding: each sequence its token
    /// and its draft). A model that batches reads its weights once for all the rows; by default each
    /// step's rows come from [`Model::forward_all`], one step after another.
    fn decode_rows(&mut self, steps: &[(usize, &[u32], usize)]) -> Result<Vec<Vec<Next>>, Error> {
        steps
            .iter()
            .map(|&(slot, tokens, pos)| self.forward_all(slot, tokens, pos))
            .collect()
    }

    /// Copies the cached positions `..n` of the sequence in slot `from` into slot `to` (the same slot:
    /// keeps them), when the model can do so without changing any number: feeding the rest of a prompt
    /// after them then gives the logits that a prefill of the whole prompt gives. Returns whether it did;
    /// a model that cannot (the default) answers false, and the caller feeds the whole prompt.
    fn copy_prefix(&mut self, from: usize, to: usize, n: usize) -> Result<bool, Error> {
        let _ = (from, to, n);
        Ok(false)
    }

    /// One decode step of several sequences: `steps[i] = (slot, token, pos)` feeds one token to the
    /// sequence in `slot` (each slot at most once) and proposes its next, in the order of `steps`. A model
    /// that batches reads its weights once for all of them; by default the steps run one after another.
    fn decode(&mut self, steps: &[(usize, u32, usize)]) -> Result<Vec<Next>, Error> {
        steps
            .iter()
            .map(|&(slot, t, pos)| self.forward_in(slot, &[t], pos))
            .collect()
    }
}
