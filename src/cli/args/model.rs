//! Which model a command loads: `--model`, `--tokenizer` and `--adapter`, each declared here and nowhere
//! else, and flattened (`#[command(flatten)]`) into every subcommand that takes it.
//!
//! The docs below are the flags' help in `complete`, `chat`, `trace`, `serve` and `play`. A subcommand that
//! means something else by a flag (only the tokenizer is read; `--model` is a remote request's `model`
//! field; in `experiment`, several models) words its help, and changes what it must, with a
//! `#[command(mut_arg(MODEL, ...))]` on its arguments: [`own_help`] for the common case.

use std::path::PathBuf;

use clap::{Arg, ArgAction, Args};

use stoplab::LoadOptions;

/// The id of `--model`, for a subcommand's `mut_arg`.
pub const MODEL: &str = "model";
/// The id of `--tokenizer`.
pub const TOKENIZER: &str = "tokenizer";
/// The id of `--adapter`.
pub const ADAPTER: &str = "adapter";

/// `--model` (`-m`, `STOPLAB_MODEL`).
#[derive(Args, Debug, Clone)]
pub struct ModelArg {
    /// A GGUF file, a model name from `stoplab fetch --list`, or hf:OWNER/REPO/FILE.gguf (default: the default
    /// model, fetched on first use).
    // A list given once, so that `experiment` can make it `ArgAction::Append` (several models) with the
    // same declaration; everywhere else a second --model is an error, as for any single-valued flag.
    #[arg(
        id = MODEL,
        long,
        short,
        value_name = "MODEL",
        env = "STOPLAB_MODEL",
        action = ArgAction::Set,
        help_heading = "Model"
    )]
    model: Vec<String>,
}

impl ModelArg {
    /// The model named, or None for the default model.
    pub fn name(&self) -> Option<String> {
        self.model.first().cloned()
    }

    /// Every model named (several only where the subcommand lets `--model` repeat).
    pub fn names(&self) -> &[String] {
        &self.model
    }

    /// LoadedModel options for this model alone (its own tokenizer, no adapter); `tokenizer_only` skips the
    /// weights.
    pub fn options(&self, tokenizer_only: bool) -> LoadOptions {
        LoadOptions {
            model: self.name(),
            tokenizer: None,
            adapter: None,
            tokenizer_only,
            progress: true,
        }
    }
}

/// `--tokenizer FILE`.
#[derive(Args, Debug, Clone)]
pub struct TokenizerArg {
    /// A tokenizer.json to use instead of the tokenizer built from the GGUF metadata.
    #[arg(id = TOKENIZER, long, value_name = "FILE", help_heading = "Model")]
    pub tokenizer: Option<PathBuf>,
}

/// Which model to load, with its tokenizer and adapter: shared by the commands that run one.
#[derive(Args, Debug, Clone)]
pub struct ModelArgs {
    #[command(flatten)]
    pub model: ModelArg,
    #[command(flatten)]
    pub tokenizer: TokenizerArg,
    /// A LoRA adapter from `stoplab finetune`, applied on top of the quantized model (it must have been
    /// trained on the same model file).
    #[arg(id = ADAPTER, long, value_name = "FILE", help_heading = "Model")]
    pub adapter: Option<PathBuf>,
}

impl ModelArgs {
    /// LoadedModel options for these flags; `tokenizer_only` skips the weights.
    pub fn options(&self, tokenizer_only: bool) -> LoadOptions {
        LoadOptions {
            tokenizer: self.tokenizer.tokenizer.clone(),
            adapter: self.adapter.clone(),
            ..self.model.options(tokenizer_only)
        }
    }
}

/// The shorter `--model` help of `tokenize` and `bench decode`.
pub const FILE_OR_NAME: &str = "A GGUF file or model name (default: the default model)";

/// A flag's help where the subcommand means something narrower than the doc here, listed with the
/// subcommand's other options rather than under "Model". The text is shown as written (clap drops the final
/// period of a doc comment, so these have none).
pub fn own_help(help: &'static str) -> impl FnOnce(Arg) -> Arg {
    move |arg| arg.help(help).help_heading(None)
}
