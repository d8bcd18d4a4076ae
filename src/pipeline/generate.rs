//! The generation loop: model → sampler → token → stop engine → sink, and nothing else.
//!
//! The loop knows nothing of stdout, HTTP or JSON; the caller brings a [`Sink`] that receives one
//! [`TokenEvent`](super::sink::TokenEvent) per generated token and may end the generation early (or fail it: a write error). Every
//! stop decision, and which text each token releases, is the [`StopEngine`](super::stop::StopEngine)'s: see its documentation for the
//! order. The concatenated event texts always equal [`Outcome::text`].

use crate::Error;
use crate::pipeline::model::Model;
use crate::pipeline::settings::GenerateParams;
use crate::pipeline::tokenizer::Vocab;

use super::sequence::Sequence;
use super::sink::{Outcome, Sink};
use super::speculate::generate_speculative;

/// Runs one generation of `model` from `prompt`.
pub fn generate(
    model: &mut dyn Model,
    vocab: &Vocab,
    prompt: &[u32],
    params: &GenerateParams,
    sink: &mut dyn Sink,
) -> Result<Outcome, Error> {
    if let Some(spec) = &params.speculation {
        return generate_speculative(model, vocab, prompt, params, spec, None, sink);
    }
    let mut seq = Sequence::new(vocab, prompt, params, model.context_length())?;
    let mut next = model.forward(prompt, 0)?;
    while let Some((id, pos)) = seq.accept(next, vocab, sink)? {
        next = model.forward(&[id], pos)?;
    }
    Ok(seq.outcome())
}
