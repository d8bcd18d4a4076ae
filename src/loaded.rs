//! A model ready to generate: the file resolved, the vocabulary built, the weights loaded (or a replay).
//!
//! A weight-free vocabulary (`gpt-oss-vocab`, `llama3-vocab`, `qwen3-vocab`: [`fetch::resolve_vocab`]) makes
//! an engine with no GGUF file and no weights: it tokenizes, replays and runs the stop machinery, and any
//! command that needs the model itself says so ("gpt-oss-vocab has no weights: use --replay").

use std::path::PathBuf;

use crate::Error;
use crate::fetch::{self, Progress};
use crate::pipeline::format::{Message, PromptFormat};
use crate::pipeline::generate::generate;
use crate::pipeline::model::{Backend, GgufFile, GgufLlama, Model, Replay};
use crate::pipeline::settings::GenerateParams;
use crate::pipeline::sink::{Outcome, Sink};
use crate::pipeline::speculate::generate_speculative;
use crate::pipeline::tokenizer::Vocab;

/// How to find and load the model.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// `--model`: a path, a manifest name, `hf:OWNER/REPO/FILE.gguf`, or None for the default model.
    pub model: Option<String>,
    /// A `tokenizer.json` to use instead of the GGUF's tokenizer.
    pub tokenizer: Option<PathBuf>,
    /// Load only the tokenizer (for replays and tokenizing): no weights are read.
    pub tokenizer_only: bool,
    /// A LoRA adapter (`stoplab finetune`) to apply on top of the quantized model.
    pub adapter: Option<PathBuf>,
    pub progress: bool,
}

/// Positions a weight-free vocabulary offers a replay (it declares no context of its own).
const VOCAB_ONLY_CONTEXT: usize = 32768;

/// A loaded model and its vocabulary.
pub struct LoadedModel {
    pub path: PathBuf,
    pub vocab: Vocab,
    /// The GGUF file (None for a weight-free vocabulary).
    pub file: Option<GgufFile>,
    /// The name of a weight-free vocabulary (`gpt-oss-vocab`), when that is what was loaded.
    pub vocab_only: Option<String>,
    weights: Option<GgufLlama>,
    /// An adapter was applied.
    adapter: bool,
    /// The backend asked for (`STOPLAB_BACKEND`).
    asked: Backend,
    /// Sequences generated at once ([`LoadedModel::set_slots`]).
    slots: usize,
    no_weights: NoWeights,
}

/// The model of a tokenizer-only engine: every call says that no weights were loaded.
struct NoWeights(PathBuf, usize);

impl Model for NoWeights {
    fn vocab_size(&self) -> usize {
        0
    }

    fn context_length(&self) -> usize {
        self.1
    }

    fn forward(&mut self, _: &[u32], _: usize) -> Result<crate::pipeline::model::Next, Error> {
        Err(Error::Model {
            path: self.0.clone(),
            message: "weights were not loaded (tokenizer-only engine)".into(),
        })
    }

    fn name(&self) -> &str {
        "no weights"
    }
}

impl LoadedModel {
    pub fn load(opts: &LoadOptions) -> Result<Self, Error> {
        let progress = if opts.progress {
            Progress::Show
        } else {
            Progress::Hide
        };
        if let Some(name) = opts.model.as_deref()
            && let Some(files) = fetch::resolve_vocab(name, progress)?
        {
            if !opts.tokenizer_only {
                return Err(Error::Invalid {
                    field: "--model".into(),
                    message: format!(
                        "{name} has no weights: use --replay TEXT or --replay-ids IDS (or `stoplab tokenize \
                         --model {name}`)"
                    ),
                });
            }
            let vocab = Vocab::from_tiktoken(&files)?;
            return Ok(Self {
                no_weights: NoWeights(files.vocab.clone(), VOCAB_ONLY_CONTEXT),
                path: files.vocab.clone(),
                vocab,
                file: None,
                vocab_only: Some(files.name),
                weights: None,
                adapter: false,
                asked: Backend::Native,
                slots: 1,
            });
        }
        let path = fetch::resolve(opts.model.as_deref(), progress)?;
        let file = GgufFile::open(&path, opts.tokenizer.as_deref())?;
        let asked = if opts.tokenizer_only {
            Backend::Native
        } else {
            Backend::from_env()?
        };
        let weights = match (&opts.adapter, opts.tokenizer_only) {
            (_, true) => None,
            (None, false) => Some(GgufLlama::load_with(&file, asked)?),
            (Some(adapter), false) => {
                let sha256 = fetch::sha256_file(&path, Progress::Hide)?;
                let bytes =
                    crate::pipeline::model::adapter::adapted_model(&file, &sha256, adapter)?;
                Some(GgufLlama::load_from(&file, &bytes, asked)?)
            }
        };
        let no_weights = NoWeights(
            path.clone(),
            crate::pipeline::model::context_for(&file.content),
        );
        let engine = Self {
            path,
            vocab: file.vocab.clone(),
            file: Some(file),
            vocab_only: None,
            weights,
            adapter: opts.adapter.is_some(),
            asked,
            slots: 1,
            no_weights,
        };
        if opts.progress
            && let Some(note) = engine.backend_note()
        {
            eprintln!("warning: {note}");
        }
        Ok(engine)
    }

    /// What a user should know about the forward pass that runs: said when an adapter (or a file the own
    /// pass does not support) moves the model to candle's pass, whose context stops at 4,096 positions.
    pub fn backend_note(&self) -> Option<String> {
        let w = self.weights.as_ref()?;
        if w.backend() != Backend::Candle || self.asked == Backend::Candle {
            return None;
        }
        let content = &self.file.as_ref()?.content;
        let arch = content
            .metadata
            .get("general.architecture")
            .and_then(|v| v.to_string().ok())
            .map_or("llama", String::as_str);
        let declared = content
            .metadata
            .get(&format!("{arch}.context_length"))
            .and_then(|v| v.to_u32().ok())
            .map_or(0, |c| c as usize);
        let why = if self.adapter {
            "the adapter's merged attention weights are F32, which stoplab's own forward pass does not run"
        } else {
            "stoplab's own forward pass does not support this file"
        };
        Some(format!(
            "{why}, so the model runs on candle's forward pass: slower, and its context is {} positions{}",
            w.context_length(),
            if declared > w.context_length() {
                format!(" (the model declares {declared})")
            } else {
                String::new()
            }
        ))
    }

    /// The model's declared context length (capped by what the backend supports).
    pub fn context_length(&self) -> usize {
        match &self.weights {
            Some(w) => w.context_length(),
            None => match &self.file {
                Some(f) => crate::pipeline::model::context_for(&f.content),
                None => VOCAB_ONLY_CONTEXT,
            },
        }
    }

    /// Renders messages in a format and tokenizes them (special tokens in the prompt are parsed; the BOS
    /// first when the file asks for it: [`Vocab::encode_prompt`]).
    pub fn prompt(
        &self,
        format: &PromptFormat,
        messages: &[Message],
    ) -> Result<(String, Vec<u32>), Error> {
        let text = format.render(messages, self.vocab.chat_template())?;
        let ids = self.vocab.encode_prompt(&text)?;
        Ok((text, ids))
    }

    /// A replay model for this vocabulary: it writes `script`, then the model's end token.
    pub fn replay(&self, script: Vec<u32>) -> Result<Replay, Error> {
        self.replay_ending(script, self.vocab.end_tokens())
    }

    /// A replay that writes `script`, then an end token of `ends` (the set in force): the model's EOS when
    /// it counts, else the first of the set; with none counting, the EOS all the same (the stop machinery
    /// then runs to its limit).
    pub fn replay_ending(
        &self,
        script: Vec<u32>,
        ends: &std::collections::BTreeSet<u32>,
    ) -> Result<Replay, Error> {
        for &id in &script {
            self.vocab.check_id(id, "replay")?;
        }
        let eos = self.vocab.eos();
        let end = eos
            .filter(|e| ends.contains(e))
            .or_else(|| ends.iter().next().copied())
            .or(eos)
            .or_else(|| self.vocab.end_tokens().iter().next().copied())
            .ok_or_else(|| Error::Model {
                path: self.path.clone(),
                message: "the model declares no end token".into(),
            })?;
        Ok(Replay::new(
            script,
            end,
            self.vocab.len(),
            self.context_length(),
        ))
    }

    /// The loaded GGUF model, if weights were loaded.
    pub fn model_mut(&mut self) -> Option<&mut GgufLlama> {
        self.weights.as_mut()
    }

    /// Lets `slots` sequences generate at once, each with a KV cache of `context` positions (capped at the
    /// model's): the model's weights are then read once per step for all of them. Returns how many can:
    /// `slots`, or 1 where the backend keeps one sequence (candle's). Replays need no KV cache: a
    /// tokenizer-only engine runs `slots` replays at once. [`LoadedModel::context_length`] is then a slot's.
    pub fn set_slots(&mut self, slots: usize, context: usize) -> Result<usize, Error> {
        if slots == 0 {
            return Err(Error::Invalid {
                field: "slots".into(),
                message: "at least one sequence must be able to run".into(),
            });
        }
        self.slots = match self.weights.as_mut() {
            Some(w) => w.set_slots(slots, context)?,
            None => slots,
        };
        Ok(self.slots)
    }

    /// Sequences that generate at once (1 unless [`LoadedModel::set_slots`] said more).
    pub fn slots(&self) -> usize {
        self.slots
    }

    /// The model to batch sequences on (one that fails every call when no weights were loaded: only
    /// replays, which bring their own, can run then), and the vocabulary.
    pub fn batch_parts(&mut self) -> (&mut dyn Model, &Vocab) {
        if self.weights.is_none() {
            return (&mut self.no_weights, &self.vocab);
        }
        let w = self.weights.as_mut().expect("checked above");
        (w, &self.vocab)
    }

    /// Generates with the real model, or with `replay` when given.
    pub fn generate(
        &mut self,
        prompt: &[u32],
        replay: Option<Vec<u32>>,
        params: &GenerateParams,
        sink: &mut dyn Sink,
    ) -> Result<Outcome, Error> {
        if let Some(script) = replay {
            let mut model =
                self.replay_ending(script.clone(), &params.end_set(self.vocab.end_tokens()))?;
            if let Some(spec) = &params.speculation {
                return generate_speculative(
                    &mut model,
                    &self.vocab,
                    prompt,
                    params,
                    spec,
                    Some(&script),
                    sink,
                );
            }
            return generate(&mut model, &self.vocab, prompt, params, sink);
        }
        if let Some(name) = &self.vocab_only {
            return Err(Error::Invalid {
                field: "--model".into(),
                message: format!("{name} has no weights: use --replay"),
            });
        }
        let path = self.path.clone();
        let model = self.weights.as_mut().ok_or_else(|| Error::Model {
            path,
            message: "weights were not loaded (tokenizer-only engine)".into(),
        })?;
        generate(model, &self.vocab, prompt, params, sink)
    }
}
