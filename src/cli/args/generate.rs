//! The flags of the commands that generate (`complete`, `chat`, `trace`): [`GenArgs`] gathers the model, the
//! prompt format, [stopping](crate::cli::args::stopping), [sampling](crate::cli::args::sampling), replay and
//! `--json`, and turns them into checked settings, the loaded model and the replay script.

use clap::Args;

use stoplab::LoadedModel;
use stoplab::pipeline::format::PromptFormat;
use stoplab::pipeline::settings::{EndTokenChoice, GenerateParams, UserSettings};
use stoplab::pipeline::speculate::Speculation;
use stoplab::pipeline::tokenizer::Vocab;

use crate::cli::args::model::ModelArgs;
use crate::cli::args::reasoning::ReasoningArgs;
use crate::cli::args::sampling::SamplingArgs;
use crate::cli::args::speculate::NgramArgs;
use crate::cli::args::stopping::StopArgs;
use crate::cli::args::values::{text, unescape};
use crate::cli::output::Failure;

#[derive(Args, Debug)]
pub struct GenArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    prompt: PromptArgs,
    #[command(flatten)]
    stopping: StopArgs,
    #[command(flatten)]
    sampling: SamplingArgs,
    #[command(flatten)]
    replay: ReplayArgs,
    #[command(flatten)]
    speculate: SpeculateArgs,
    #[command(flatten)]
    reasoning: ReasoningArgs,
    /// Print one JSON object (text, finish_reason, stop_reason, tokens, usage, timings) instead of streaming.
    #[arg(long, help_heading = "Output")]
    pub json: bool,
}

#[derive(Args, Debug)]
struct PromptArgs {
    /// Prompt format: raw (text as given), transcript ("user: …\nAI:"), separator ("…\n- - -\n"),
    /// chat (the model's chat template).
    #[arg(long, short, value_parser = PromptFormat::NAMES, help_heading = "Prompt")]
    format: Option<String>,
    /// Transcript prefix of the user's turns [default: "user:"].
    #[arg(long, allow_hyphen_values = true, value_parser = text, help_heading = "Prompt")]
    user_prefix: Option<String>,
    /// Transcript prefix of the AI's turns [default: "AI:"].
    #[arg(long, allow_hyphen_values = true, value_parser = text, help_heading = "Prompt")]
    ai_prefix: Option<String>,
    /// Separator line of the separator format [default: "- - -"] (a value that begins with a hyphen is taken
    /// as written).
    #[arg(long, allow_hyphen_values = true, value_parser = text, help_heading = "Prompt")]
    separator: Option<String>,
}

#[derive(Args, Debug)]
struct ReplayArgs {
    /// Do not run the model: replay this text as if the model had written it (then its end token), and show
    /// what the stop machinery does. Escapes are interpreted; special tokens are parsed.
    #[arg(
        long,
        value_name = "TEXT",
        help_heading = "Replay",
        allow_hyphen_values = true,
        value_parser = text,
        conflicts_with = "replay_ids"
    )]
    replay: Option<String>,
    /// Replay these token ids (comma-separated) instead of running the model.
    #[arg(
        long,
        value_name = "IDS",
        value_delimiter = ',',
        help_heading = "Replay"
    )]
    replay_ids: Option<Vec<u32>>,
}

#[derive(Args, Debug)]
struct SpeculateArgs {
    #[command(flatten)]
    ngram: NgramArgs,
    /// With --replay: stage steps of K tokens, through the same machinery as --speculate (what a stop
    /// inside a multi-token step does, with no weights).
    #[arg(
        long,
        value_name = "K",
        conflicts_with = "speculate",
        help_heading = "Speculation"
    )]
    tokens_per_step: Option<usize>,
}

impl SpeculateArgs {
    fn speculation(&self, replaying: bool) -> Result<Option<Speculation>, Failure> {
        match self.tokens_per_step {
            None => self.ngram.speculation(),
            Some(_) if !replaying => Err(Failure::usage(
                "--tokens-per-step stages steps of a replay: give --replay TEXT (or use --speculate ngram)",
            )),
            Some(0) => Err(Failure::usage("--tokens-per-step must be at least 1")),
            Some(k) => Ok(Some(Speculation::tokens_per_step(k))),
        }
    }
}

impl GenArgs {
    /// The settings these flags ask for, unchecked (`default_format` when --format is absent).
    fn user_settings(&self, default_format: &str) -> UserSettings {
        let (prompt, stopping) = (&self.prompt, &self.stopping);
        UserSettings {
            format: prompt.format.as_deref().unwrap_or(default_format).into(),
            // Absent: the format's own default (PromptFormat::from_name).
            user_prefix: prompt.user_prefix.as_deref().map(unescape),
            ai_prefix: prompt.ai_prefix.as_deref().map(unescape),
            separator: prompt.separator.as_deref().map(unescape),
            natural_stop: stopping.natural_stop,
            stops: stopping.stops(),
            stop_token_ids: stopping.stop_token_id.clone(),
            include_stop: stopping.include_stop,
            // The API's `skip_special_tokens: false`; the command line shows the end token as its own event.
            end_token_text: false,
            ignore_eos: stopping.ignore_eos,
            min_tokens: stopping.min_tokens,
            max_tokens: stopping.max_tokens,
            repetition: stopping.repetition(),
            sampling: self.sampling.params(),
            // Token texts need the vocabulary: `params` fills this in.
            end_tokens: EndTokenChoice::default(),
        }
    }

    /// The prompt format and generation settings these flags ask for, checked against the model's
    /// vocabulary (end tokens given by their text are looked up in it).
    pub fn params(
        &self,
        default_format: &str,
        vocab: &Vocab,
    ) -> Result<(PromptFormat, GenerateParams), Failure> {
        let mut user = self.user_settings(default_format);
        user.end_tokens = self.stopping.end_choice(vocab)?;
        let mut settings = user
            .validate(Some(vocab.len()))
            .map_err(Failure::from_settings)?;
        settings.params.speculation = self.speculate.speculation(self.replaying())?;
        settings.params.reasoning = self.reasoning.reasoning(vocab, self.replaying())?;
        Ok((settings.format, settings.params))
    }

    /// Whether the model is replayed rather than run.
    pub fn replaying(&self) -> bool {
        self.replay.replay.is_some() || self.replay.replay_ids.is_some()
    }

    /// Resolves and loads the model (tokenizer only when replaying), with warnings shown.
    pub fn load_engine(&self) -> Result<LoadedModel, Failure> {
        let engine = LoadedModel::load(&self.model.options(self.replaying()))?;
        for note in engine.vocab.notes() {
            eprintln!("stoplab: warning: {note}");
        }
        Ok(engine)
    }

    /// The ids the replay model writes, if replaying.
    pub fn replay_script(&self, engine: &LoadedModel) -> Result<Option<Vec<u32>>, Failure> {
        Ok(match (&self.replay.replay, &self.replay.replay_ids) {
            (Some(text), _) => Some(engine.vocab.encode(&unescape(text), true)?),
            (None, Some(ids)) => {
                for &id in ids {
                    engine.vocab.check_id(id, "--replay-ids")?;
                }
                Some(ids.clone())
            }
            (None, None) => None,
        })
    }
}
