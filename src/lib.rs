//! stoplab: run a small open chat model locally and make its stop behaviour visible, reproducible and
//! measurable.
//!
//! Data flows one way:
//!
//! ```text
//! prompt text ─► format ─► tokens ─► model ─► logits ─► sampler ─► token
//!                                                                   │
//!        sink (stdout / SSE / recorder) ◄── stop engine ◄── bytes ◄─┘
//! ```
//!
//! * [`format`]: the seed's prompt techniques (`raw`, `transcript`, `separator`, `chat`);
//! * [`tokenizer`]: the vocabulary built from the GGUF file's own metadata;
//! * [`model`]: the [`model::Model`] trait, the GGUF llama backend and the replay model;
//! * [`sampling`]: greedy, temperature, top-k/p, min-p, penalties, logit bias, seed;
//! * [`stop`]: the streaming stop-string matcher and its naive reference;
//! * [`generate`]: the loop that ties them together and reports why it finished;
//! * [`fetch`]: where model files come from;
//! * [`trace`]: one row per generated token, as the stop machinery saw it;
//! * [`inspect`]: how stop strings fall across tokens, and single-token candidates for custom stops;
//! * [`experiment`]: scenarios (TOML) that replay the seed's techniques and measure the waste;
//! * [`bench`]: stop matching measured against the peers' strategies.
//! * [`finetune`]: LoRA fine-tunes that teach a custom stop sequence (or break the end token), adapters.

pub mod fetch;
pub mod finetune;
pub mod lab;
pub mod pipeline;
pub mod rng;
pub mod serve;

pub use lab::{bench, experiment, inspect, trace};
pub use pipeline::{format, generate, model, sampling, stop, tokenizer};

mod engine;

pub use engine::{Engine, EngineOptions};
pub use generate::{
    FinishReason, GenerateParams, Outcome, RepetitionStop, Sink, TokenEvent, generate,
};

use std::path::PathBuf;

/// Everything that can go wrong, each naming the field or file at fault and what would fix it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}: {message}", path.display())]
    Model { path: PathBuf, message: String },
    #[error("fetching the model: {0}")]
    Fetch(String),
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    #[error(
        "prompt: {prompt} tokens do not fit the context of {context} tokens (at least one must be left to generate); \
         shorten the prompt"
    )]
    PromptTooLong { prompt: usize, context: usize },
    #[error("context full: {needed} positions needed, the model has {context}")]
    ContextFull { needed: usize, context: usize },
    #[error("unknown token id {id}: the vocabulary has ids 0..{vocab}")]
    UnknownToken { id: u32, vocab: usize },
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("model backend: {0}")]
    Backend(String),
    #[error("stop: {0}")]
    Stop(#[from] stop::StopError),
}

impl Error {
    /// Whether the error is the caller's input (exit status 2, HTTP 400) rather than the environment's.
    pub fn is_user_input(&self) -> bool {
        matches!(
            self,
            Self::Invalid { .. }
                | Self::PromptTooLong { .. }
                | Self::UnknownToken { .. }
                | Self::Stop(_)
        )
    }
}
