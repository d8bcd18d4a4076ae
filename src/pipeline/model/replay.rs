//! The replay model: "if the model wrote this, what would the stop machinery do?"

use super::{Model, Next};
use crate::Error;

/// Emits a fixed list of ids, then the model's end token for ever.
#[derive(Debug, Clone)]
pub struct Replay {
    script: Vec<u32>,
    end: u32,
    vocab_size: usize,
    context: usize,
    prompt_len: usize,
}

impl Replay {
    /// `script` is what the model "writes"; `end` the id that follows it (the model's end token).
    pub fn new(script: Vec<u32>, end: u32, vocab_size: usize, context: usize) -> Self {
        Self {
            script,
            end,
            vocab_size,
            context,
            prompt_len: 0,
        }
    }

    pub fn script(&self) -> &[u32] {
        &self.script
    }

    /// The id written after the script.
    pub fn end(&self) -> u32 {
        self.end
    }
}

impl Model for Replay {
    fn script(&self) -> Option<&[u32]> {
        Some(&self.script)
    }

    fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    fn context_length(&self) -> usize {
        self.context
    }

    fn forward(&mut self, tokens: &[u32], pos: usize) -> Result<Next, Error> {
        if pos + tokens.len() > self.context {
            return Err(Error::ContextFull {
                needed: pos + tokens.len(),
                context: self.context,
            });
        }
        // The call at position 0 carries the prompt; the script is indexed by generated position.
        if pos == 0 {
            self.prompt_len = tokens.len();
        }
        let index = (pos + tokens.len()).saturating_sub(self.prompt_len);
        Ok(Next::Forced(
            self.script.get(index).copied().unwrap_or(self.end),
        ))
    }

    fn name(&self) -> &str {
        "replay"
    }
}
