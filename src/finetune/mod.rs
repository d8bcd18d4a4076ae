//! Fine-tuning: the seed's remedy for real, and the broken fine-tune it starts from.
//!
//! The seed's recipe: add a stop sequence ("######") to the end of every assistant message, function calls
//! included; mix in normal chats over a broad range of topics; fine-tune; call the model with
//! `stop: ["######"]`. Its failure: a fine-tune on function-call examples after which the model never ends its
//! turn. Both run here on the local model in minutes, as LoRA adapters on the q and v projections.
//!
//! * [`data`]: OpenAI's chat fine-tuning JSONL rendered through the model's chat template, loss on assistant
//!   tokens only, with `append_stop` and `mask_end_token`;
//! * [`model`]: a differentiable llama forward (frozen f32 base, LoRA `Var`s) built from primitive ops;
//! * [`train`]: seeded batches and AdamW;
//! * [`adapter`]: writing a trained LoRA as an adapter file (the file format and applying one live in
//!   [`pipeline::model::adapter`](crate::pipeline::model::adapter));
//! * [`eval`]: how a model ends its answers to held-out questions and function-call prompts;
//! * [`report`]: how a training run reads (the lines before and after it, what its adapter records).
//!
//! ```no_run
//! use stoplab::finetune::{self, RenderOptions, TrainOptions, LoraConfig};
//! # fn main() -> Result<(), stoplab::Error> {
//! let model = std::path::Path::new("SmolLM2-135M-Instruct.Q4_1.gguf");
//! let base = finetune::Trainer::open(model)?;
//! let render = RenderOptions { append_stop: Some("######".into()), ..Default::default() };
//! let examples = base.examples(std::path::Path::new("data/finetune/function-calls.jsonl"), &render)?;
//! let lora = base.new_lora(LoraConfig { rank: 8, alpha: 16.0 }, 0)?;
//! base.train(&lora, &examples, &TrainOptions::default(), |_| std::ops::ControlFlow::Continue(()))?;
//! base.save(std::path::Path::new("remedy.safetensors"), &lora, vec![])?;
//! # Ok(()) }
//! ```

pub mod adapter;
pub mod data;
pub mod eval;
pub mod model;
pub mod report;
pub mod train;

use std::fs::File;
use std::io::BufReader;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

pub use data::{Conversation, Example, RenderOptions};
pub use model::{Base, Lora, LoraConfig};
pub use train::{StepReport, TrainOptions, TrainSummary};

use crate::Error;
use crate::fetch::{Progress, sha256_file};
use crate::pipeline::model::GgufFile;
use crate::pipeline::model::adapter::AdapterInfo;
use crate::pipeline::tokenizer::Vocab;

/// A base model opened for training: its vocabulary, its identity and its weights in f32.
pub struct Trainer {
    pub path: PathBuf,
    pub vocab: Vocab,
    pub sha256: String,
    pub base: Base,
}

impl Trainer {
    /// Opens a GGUF file and dequantizes its weights (about 0.6 GB in f32 for the default model).
    pub fn open(path: &Path) -> Result<Self, Error> {
        let file = GgufFile::open(path, None)?;
        let bad = |message: String| Error::Model {
            path: path.to_path_buf(),
            message,
        };
        let mut reader = BufReader::new(File::open(path).map_err(|e| bad(e.to_string()))?);
        let base = Base::from_gguf(&file.content, &mut reader).map_err(|e| bad(e.to_string()))?;
        let sha256 = sha256_file(path, Progress::Hide)?;
        Ok(Self {
            path: path.to_path_buf(),
            vocab: file.vocab,
            sha256,
            base,
        })
    }

    /// The base model's file name, for adapter metadata and messages.
    pub fn file_name(&self) -> String {
        self.path
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
    }

    /// Reads and renders a JSONL data file.
    pub fn examples(&self, path: &Path, render: &RenderOptions) -> Result<Vec<Example>, Error> {
        let convs = data::read_jsonl(path)?;
        data::examples(&convs, &self.vocab, render, &path.display().to_string())
    }

    /// A fresh adapter (B = 0: it starts as the base model).
    pub fn new_lora(&self, cfg: LoraConfig, seed: u64) -> Result<Lora, Error> {
        Lora::new(&self.base, cfg, seed).map_err(|e| Error::Backend(e.to_string()))
    }

    /// The token batches are padded with (the end token: never labelled where it pads).
    pub fn pad(&self) -> u32 {
        self.vocab.eos().unwrap_or(0)
    }

    pub fn train(
        &self,
        lora: &Lora,
        examples: &[Example],
        opts: &TrainOptions,
        on_step: impl FnMut(&StepReport) -> ControlFlow<()>,
    ) -> Result<TrainSummary, Error> {
        train::train(&self.base, lora, examples, self.pad(), opts, on_step)
    }

    /// Saves an adapter stamped with this base model's identity; `settings` records how it was trained.
    pub fn save(
        &self,
        path: &Path,
        lora: &Lora,
        settings: Vec<(String, String)>,
    ) -> Result<(), Error> {
        let info = AdapterInfo {
            rank: lora.cfg.rank,
            alpha: lora.cfg.alpha,
            targets: vec!["attn_q".into(), "attn_v".into()],
            base_sha256: self.sha256.clone(),
            base_file: self.file_name(),
            settings,
        };
        adapter::save(path, lora, &info)
    }
}
