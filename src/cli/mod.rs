//! The command line: one file per subcommand; this one holds what they share.

/// `println!` for a command's output, without its panic: a reader that has gone (`| head`, a closed pipe)
/// ends the command quietly and successfully; any other write error (a full disk) fails it.
macro_rules! say {
    ($($arg:tt)*) => {
        if !$crate::cli::stdout_line(format_args!($($arg)*))? {
            return Ok(());
        }
    };
}

pub mod bench;
pub mod bench_decode;
pub mod experiment;
pub mod fetch;
pub mod finetune;
pub mod generate;
pub mod play;
pub mod probe;
pub mod serve;
pub mod tokenize;
pub mod tools;
pub mod trace;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use stoplab::Error;
use stoplab::pipeline::field::{EndList, Field, SettingsError};
use stoplab::pipeline::format::{Message, PromptFormat, parse_messages};
use stoplab::pipeline::sampling::SamplingParams;
use stoplab::pipeline::settings::{EndTokenChoice, UserSettings};
use stoplab::pipeline::settings::{GenerateParams, RepetitionStop};
use stoplab::pipeline::tokenizer::Vocab;
use stoplab::{LoadOptions, LoadedModel};
const ABOUT: &str = "Run a small chat model locally and watch what makes it stop.

A model does not know when it is done: it writes the next \"user:\" turn of a transcript, or never emits its \
end token. stoplab reproduces the remedies offline (role prefixes plus a stop string, a separator, the chat \
container's end token, a custom stop sequence) and reports exactly why each generation finished.

The default model is SmolLM2-135M-Instruct (Q4_1 GGUF, 98 MB), fetched on first use into the cache.";

const EXAMPLES: &str = "Examples:
  stoplab chat 'Hi!'                       # ends on the model's end token <|im_end|>
  stoplab complete --format transcript 'Capital of Germany?'   # runs on into user: turns
  stoplab complete --format transcript --stop '\\nuser:' 'Capital of Germany?'   # halts
  stoplab complete --replay ' Berlin.\\nuser: and' --stop '\\nuser:' --json 'AI:'  # no weights
  stoplab chat --logit-bias 2=-inf --logit-bias 0=-inf 'Hi!'    # a model that never stops
  stoplab trace --replay ' Berlin.\\nuser: and' --stop '\\nuser:' 'AI:'   # per token: held back
  stoplab tokenize --stop '\\nuser:'       # why stops are matched on bytes
  stoplab experiment --quick               # the seed's story, measured";

#[derive(Parser)]
#[command(name = "stoplab", version, about = ABOUT, after_help = EXAMPLES)]
pub struct Cli {
    /// Worker threads for the model (default: the cores not already busy, by the load average; candle's
    /// workers spin-wait, so oversubscribing a busy machine slows decoding many times over).
    #[arg(long, global = true, env = "STOPLAB_THREADS")]
    pub threads: Option<usize>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Continue a prompt (format `raw` by default: the text is the whole prompt).
    #[command(after_help = EXAMPLES)]
    Complete {
        /// The prompt. Backslash escapes (\n, \t) are interpreted. Special tokens such as <|im_end|> are parsed.
        #[arg(allow_hyphen_values = true, value_parser = text)]
        prompt: String,
        #[command(flatten)]
        opts: GenArgs,
    },
    /// Answer a chat message (format `chat` by default: the model's own chat template).
    #[command(after_help = EXAMPLES)]
    Chat {
        /// The user's message (appended after --messages, if given).
        #[arg(allow_hyphen_values = true, value_parser = text)]
        message: Option<String>,
        /// A system message.
        #[arg(long, allow_hyphen_values = true, value_parser = text)]
        system: Option<String>,
        /// Earlier turns from a JSON file: [{"role": "user", "content": "..."}, ...] or {"messages": [...]}.
        #[arg(long, value_name = "FILE")]
        messages: Option<PathBuf>,
        /// Functions the model may call, as OpenAI's `tools` in a JSON file; a reply that calls one is
        /// printed as `tool_calls` (needs a template with a tools branch: qwen2.5-coder-0.5b-instruct).
        #[arg(long, value_name = "FILE")]
        tools: Option<PathBuf>,
        #[command(flatten)]
        opts: GenArgs,
    },
    /// Show one row per generated token: id, text, end token, held-back bytes and for which stop, emitted text,
    /// and the event that ended the generation (format `raw` by default, like `complete`).
    #[command(after_help = trace::EXAMPLES)]
    Trace {
        /// The prompt (or, with --chat, the user's message). Escapes are interpreted; special tokens are parsed.
        #[arg(allow_hyphen_values = true, value_parser = text)]
        prompt: Option<String>,
        /// Take the inputs of `chat`: PROMPT is the user's message, format `chat` by default.
        #[arg(long)]
        chat: bool,
        /// With --chat: a system message.
        #[arg(long, requires = "chat", allow_hyphen_values = true, value_parser = text)]
        system: Option<String>,
        /// With --chat: earlier turns from a JSON file, as for `chat --messages`.
        #[arg(long, value_name = "FILE", requires = "chat")]
        messages: Option<PathBuf>,
        /// Write the rows as JSON lines instead of a table.
        #[arg(long)]
        jsonl: bool,
        #[command(flatten)]
        opts: GenArgs,
    },
    /// Show token ids and pieces of a text, how a stop string falls across tokens, or single-token strings.
    #[command(after_help = tokenize::EXAMPLES)]
    Tokenize(tokenize::TokenizeArgs),
    /// Run the seed's techniques as scenarios and measure when each stops and how many tokens it wastes.
    #[command(after_help = experiment::EXAMPLES)]
    Experiment(experiment::ExperimentArgs),
    /// Train a LoRA adapter that teaches the model a custom stop sequence (the seed's remedy), or reproduce
    /// the broken fine-tune (--mask-end-token); with --eval, measure how models end their answers.
    Finetune(finetune::FinetuneArgs),
    /// Download models into the cache and verify their sha256 (with no name: the default model).
    Fetch {
        /// Model or vocabulary names from the manifest (see --list).
        names: Vec<String>,
        /// Fetch again even if the cached file is fine.
        #[arg(long)]
        force: bool,
        /// List the models the manifest knows, with where they are cached.
        #[arg(long)]
        list: bool,
    },
    /// Measure: stop matching against the peers' strategies (stops), its cost in real decoding (overhead),
    /// and the model's own speed (decode).
    Bench {
        #[command(subcommand)]
        what: bench::BenchCommand,
    },
    /// Serve an OpenAI-compatible API (completions, chat completions, streaming) with exact stops.
    #[command(after_help = serve::EXAMPLES)]
    Serve(serve::ServeArgs),
    /// Judge any OpenAI-compatible server's stop handling against stoplab's reference: a suite of probes,
    /// each drawing its stops from the server's own greedy output.
    #[command(after_help = probe::EXAMPLES)]
    Probe(probe::ProbeArgs),
    /// Open the stop playground: a page where you watch the model decide to stop, token by token (starts
    /// the server on a free 127.0.0.1 port and prints its URL).
    #[command(after_help = play::EXAMPLES)]
    Play(play::PlayArgs),
}

/// Which model to load: shared by the commands that run one.
#[derive(Args, Debug, Clone)]
pub struct ModelArgs {
    /// A GGUF file, a model name from `stoplab fetch --list`, or hf:OWNER/REPO/FILE.gguf (default: the default
    /// model, fetched on first use).
    #[arg(long, short, env = "STOPLAB_MODEL", help_heading = "Model")]
    pub model: Option<String>,
    /// A tokenizer.json to use instead of the tokenizer built from the GGUF metadata.
    #[arg(long, value_name = "FILE", help_heading = "Model")]
    pub tokenizer: Option<PathBuf>,
    /// A LoRA adapter from `stoplab finetune`, applied on top of the quantized model (it must have been
    /// trained on the same model file).
    #[arg(long, value_name = "FILE", help_heading = "Model")]
    pub adapter: Option<PathBuf>,
}

impl ModelArgs {
    /// LoadedModel options for these flags; `tokenizer_only` skips the weights.
    pub fn options(&self, tokenizer_only: bool) -> LoadOptions {
        LoadOptions {
            model: self.model.clone(),
            tokenizer: self.tokenizer.clone(),
            adapter: self.adapter.clone(),
            tokenizer_only,
            progress: true,
        }
    }
}

#[derive(Args, Debug)]
pub struct GenArgs {
    #[command(flatten)]
    model: ModelArgs,

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
    /// Also stop on the format's natural stop ("\nuser:" for transcript, "\n- - -" for separator).
    #[arg(long, help_heading = "Stopping")]
    natural_stop: bool,

    /// Stop when the output contains this string (repeatable; escapes like \n are interpreted). The earliest
    /// match wins. The stop string is cut from the output unless --include-stop. A value that begins with a
    /// hyphen (`--stop "- - -"`) is taken as written.
    #[arg(
        long,
        short,
        value_name = "S",
        allow_hyphen_values = true,
        value_parser = text,
        help_heading = "Stopping"
    )]
    stop: Vec<String>,
    /// Stop when this token id is generated (repeatable).
    #[arg(long, value_name = "ID", help_heading = "Stopping")]
    stop_token_id: Vec<u32>,
    /// Keep the matched stop string (or stop token's text) in the output.
    #[arg(long, help_heading = "Stopping")]
    include_stop: bool,
    /// Do not stop on the model's end tokens (stop strings and stop token ids still work).
    #[arg(long, help_heading = "Stopping")]
    ignore_eos: bool,
    /// End only on these tokens instead of the model's end set (repeatable): an id or the token's exact
    /// text, e.g. --end-token '<|return|>'. `stoplab tokenize --end-tokens` lists the set and its reasons.
    #[arg(long, value_name = "TOKEN", help_heading = "Stopping")]
    end_token: Vec<String>,
    /// Also end on this token (repeatable): an id or its text, e.g. --add-end-token '<|file_sep|>'.
    #[arg(long, value_name = "TOKEN", help_heading = "Stopping")]
    add_end_token: Vec<String>,
    /// Do not end on this token of the set (repeatable): an id or its text, e.g. --no-end-token '<|call|>'.
    #[arg(long, value_name = "TOKEN", help_heading = "Stopping")]
    no_end_token: Vec<String>,
    /// Most tokens to generate.
    #[arg(long, short = 'n', default_value_t = 256, help_heading = "Stopping")]
    max_tokens: usize,
    /// No stop of any kind before this many tokens.
    #[arg(long, default_value_t = 0, help_heading = "Stopping")]
    min_tokens: usize,
    /// Stop when the last N generated tokens repeat an earlier span of the output (off by default; 8 is a
    /// reasonable N). Reported as stop_reason "repetition" (finish_reason stays "stop").
    #[arg(long, value_name = "N", help_heading = "Stopping")]
    repeat_stop: Option<usize>,
    /// With --repeat-stop: how many occurrences of the span end the generation (2: the first repeat).
    #[arg(
        long,
        value_name = "K",
        default_value_t = 2,
        requires = "repeat_stop",
        help_heading = "Stopping"
    )]
    repeat_stop_count: usize,

    /// 0 is greedy (the default: reproducible).
    #[arg(
        allow_negative_numbers = true,
        long,
        short,
        default_value_t = 0.0,
        help_heading = "Sampling"
    )]
    temperature: f32,
    /// Keep only the k most likely tokens (0: off).
    #[arg(long, default_value_t = 0, help_heading = "Sampling")]
    top_k: usize,
    /// Keep the smallest set of tokens whose probability adds up to p (1: off).
    #[arg(
        allow_negative_numbers = true,
        long,
        default_value_t = 1.0,
        help_heading = "Sampling"
    )]
    top_p: f32,
    /// Drop tokens less likely than min-p times the most likely one (0: off).
    #[arg(
        allow_negative_numbers = true,
        long,
        default_value_t = 0.0,
        help_heading = "Sampling"
    )]
    min_p: f32,
    /// Penalise every token already in prompt or output (1: off; 1.1 is typical).
    #[arg(
        allow_negative_numbers = true,
        long,
        default_value_t = 1.0,
        help_heading = "Sampling"
    )]
    repetition_penalty: f32,
    /// Subtract this from a token's logit per earlier occurrence in the output.
    #[arg(
        long,
        default_value_t = 0.0,
        allow_negative_numbers = true,
        help_heading = "Sampling"
    )]
    frequency_penalty: f32,
    /// Subtract this from a token's logit if it occurred in the output.
    #[arg(
        long,
        default_value_t = 0.0,
        allow_negative_numbers = true,
        help_heading = "Sampling"
    )]
    presence_penalty: f32,
    /// Add BIAS to token ID's logit (repeatable); -inf bans it. `--logit-bias 2=-inf` keeps SmolLM2 from
    /// ending its turn.
    #[arg(long, value_name = "ID=BIAS", value_parser = parse_bias, allow_hyphen_values = true, help_heading = "Sampling")]
    logit_bias: Vec<(u32, f32)>,
    /// Random seed for sampling.
    #[arg(long, default_value_t = 0, help_heading = "Sampling")]
    seed: u64,

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

    /// Print one JSON object (text, finish_reason, stop_reason, tokens, usage, timings) instead of streaming.
    #[arg(long, help_heading = "Output")]
    json: bool,
}

impl GenArgs {
    /// The settings these flags ask for, unchecked (`default_format` when --format is absent).
    pub fn user_settings(&self, default_format: &str) -> UserSettings {
        let opts = self;
        UserSettings {
            format: opts.format.as_deref().unwrap_or(default_format).into(),
            // Absent: the format's own default (PromptFormat::from_name).
            user_prefix: opts.user_prefix.as_deref().map(unescape),
            ai_prefix: opts.ai_prefix.as_deref().map(unescape),
            separator: opts.separator.as_deref().map(unescape),
            natural_stop: opts.natural_stop,
            stops: opts.stop.iter().map(|s| unescape(s)).collect(),
            stop_token_ids: opts.stop_token_id.clone(),
            include_stop: opts.include_stop,
            ignore_eos: opts.ignore_eos,
            min_tokens: opts.min_tokens,
            max_tokens: opts.max_tokens,
            repetition: opts.repeat_stop.map(|ngram| RepetitionStop {
                ngram,
                count: opts.repeat_stop_count,
            }),
            sampling: SamplingParams {
                temperature: opts.temperature,
                top_k: opts.top_k,
                top_p: opts.top_p,
                min_p: opts.min_p,
                repetition_penalty: opts.repetition_penalty,
                frequency_penalty: opts.frequency_penalty,
                presence_penalty: opts.presence_penalty,
                logit_bias: opts.logit_bias.clone(),
                seed: opts.seed,
            },
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
        user.end_tokens = self.end_choice(vocab)?;
        let settings = user
            .validate(Some(vocab.len()))
            .map_err(Failure::from_settings)?;
        Ok((settings.format, settings.params))
    }

    /// --end-token, --add-end-token, --no-end-token as ids (a value is an id, or a token's exact text).
    pub fn end_choice(&self, vocab: &Vocab) -> Result<EndTokenChoice, Failure> {
        let ids = |flag: &str, values: &[String]| -> Result<Vec<u32>, Failure> {
            values
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    let v = unescape(v);
                    v.trim().parse::<u32>().ok().or_else(|| vocab.token_id(&v)).ok_or_else(|| {
                        Failure::usage(format!(
                            "{flag} #{}: {v:?} is not a token of this vocabulary; give a token id or a token's \
                             exact text (`stoplab tokenize --end-tokens` lists the end tokens)",
                            i + 1
                        ))
                    })
                })
                .collect()
        };
        Ok(EndTokenChoice {
            replace: if self.end_token.is_empty() {
                None
            } else {
                Some(ids("--end-token", &self.end_token)?)
            },
            add: ids("--add-end-token", &self.add_end_token)?,
            remove: ids("--no-end-token", &self.no_end_token)?,
        })
    }

    /// Whether the model is replayed rather than run.
    pub fn replaying(&self) -> bool {
        self.replay.is_some() || self.replay_ids.is_some()
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
        Ok(match (&self.replay, &self.replay_ids) {
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

pub fn parse_bias(s: &str) -> Result<(u32, f32), String> {
    let (id, bias) = s.split_once('=').ok_or("expected ID=BIAS, e.g. 2=-inf")?;
    let id = id
        .trim()
        .parse::<u32>()
        .map_err(|_| format!("token id {id:?} is not a number"))?;
    let bias = match bias.trim() {
        "-inf" | "-infinity" => f32::NEG_INFINITY,
        b => b
            .parse::<f32>()
            .map_err(|_| format!("bias {b:?} is not a number or -inf"))?,
    };
    if bias.is_nan() || bias == f32::INFINITY {
        return Err(format!("bias {bias} must be a finite number or -inf"));
    }
    Ok((id, bias))
}

/// A text value (a prompt, a stop, a separator, a replay): one that begins with a hyphen is taken as written
/// (`--stop "- - -"`, `--replay "- item"`, the prompt `"- - -"`), unless it looks like a flag (`--json`,
/// `-n`: a hyphen or two, then a word): that is refused, so a flag left without its value, or a mistyped
/// flag, is never taken as text. `\-` writes a leading hyphen that would look like a flag (`\-x`).
fn text(s: &str) -> Result<String, String> {
    let word = s.strip_prefix("--").or_else(|| s.strip_prefix('-'));
    if let Some(word) = word
        && word.starts_with(|c: char| c.is_ascii_alphabetic())
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(format!(
            "{s:?} looks like a flag, not a value; give the value after the flag that takes it \
             (write \\{s} for this text itself)"
        ));
    }
    Ok(s.to_string())
}

/// Writes one line of a command's output to stdout: `Ok(false)` when the reader has gone (a closed pipe: a
/// normal end), an error for any other write error.
pub fn stdout_line(line: std::fmt::Arguments<'_>) -> Result<bool, Failure> {
    use std::io::Write as _;
    match writeln!(std::io::stdout().lock(), "{line}") {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(Error::Output(e).into()),
    }
}

/// Interprets the escapes a shell makes hard to type: \n, \t, \r, \\, and \- for a hyphen (anything else
/// is kept as written).
pub fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some('\\') => out.push('\\'),
            Some('-') => out.push('-'),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}

/// An error on the command line: exit status 2 for bad usage, 1 for everything else.
pub struct Failure {
    pub usage: bool,
    pub message: String,
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        match e {
            Error::Settings(e) => Self::from_settings(e),
            e => Self {
                usage: e.is_user_input(),
                message: e.to_string(),
            },
        }
    }
}

/// How the command line names a setting: its flag, or the positional argument.
pub fn flag(field: Field) -> String {
    match field {
        Field::Prompt => "PROMPT".into(),
        Field::Format => "--format".into(),
        Field::UserPrefix => "--user-prefix".into(),
        Field::AiPrefix => "--ai-prefix".into(),
        Field::Separator => "--separator".into(),
        Field::NaturalStop => "--natural-stop".into(),
        Field::Stop { index } => format!("--stop #{}", index + 1),
        Field::Stops => "--stop".into(),
        Field::StopTokenIds { .. } => "--stop-token-id".into(),
        Field::MaxTokens => "--max-tokens".into(),
        Field::MinTokens => "--min-tokens".into(),
        Field::RepetitionNgram => "--repeat-stop".into(),
        Field::RepetitionCount => "--repeat-stop-count".into(),
        Field::Temperature => "--temperature".into(),
        Field::TopK => "--top-k".into(),
        Field::TopP => "--top-p".into(),
        Field::MinP => "--min-p".into(),
        Field::RepetitionPenalty => "--repetition-penalty".into(),
        Field::FrequencyPenalty => "--frequency-penalty".into(),
        Field::PresencePenalty => "--presence-penalty".into(),
        Field::LogitBias { .. } => "--logit-bias".into(),
        Field::Seed => "--seed".into(),
        Field::EndTokens { list, index } => format!(
            "{} #{}",
            match list {
                EndList::Replace => "--end-token",
                EndList::Add => "--add-end-token",
                EndList::Remove => "--no-end-token",
            },
            index + 1
        ),
    }
}

impl Failure {
    /// A setting the user gave on the command line, named as its flag: exit status 2.
    pub fn from_settings(e: SettingsError) -> Self {
        Self::usage(format!("{}: {}", flag(e.field), e.message))
    }

    /// Prefixes the message with where it happened (a file, a scenario).
    pub fn with_context(mut self, context: &str) -> Self {
        self.message = format!("{context}: {}", self.message);
        self
    }

    /// Bad usage: exit status 2.
    pub fn usage(message: impl Into<String>) -> Self {
        Self {
            usage: true,
            message: message.into(),
        }
    }
}

/// The conversation of `chat` (and `trace --chat`): a system message, earlier turns from a file, the message.
fn chat_messages(
    message: Option<String>,
    system: Option<String>,
    messages: Option<PathBuf>,
) -> Result<Vec<Message>, Failure> {
    let mut all = Vec::new();
    if let Some(s) = system {
        all.push(Message::new("system", &unescape(&s)));
    }
    if let Some(path) = messages {
        let json = std::fs::read_to_string(&path).map_err(|e| Failure {
            usage: true,
            message: format!("--messages {}: {e}", path.display()),
        })?;
        all.extend(parse_messages(
            &json,
            &format!("--messages {}", path.display()),
        )?);
    }
    if let Some(m) = message {
        all.push(Message::new("user", &unescape(&m)));
    }
    if all.iter().all(|m| m.role == "system") {
        return Err(Failure {
            usage: true,
            message: "chat: give a MESSAGE or --messages FILE".into(),
        });
    }
    Ok(all)
}

/// Runs a parsed command.
pub fn run(command: Command) -> Result<(), Failure> {
    match command {
        Command::Complete { prompt, opts } => {
            let messages = vec![Message::new("user", &unescape(&prompt))];
            generate::run(messages, PromptFormat::Raw.name(), opts)
        }
        Command::Chat {
            message,
            system,
            messages,
            tools,
            opts,
        } => {
            let all = chat_messages(message, system, messages)?;
            match tools {
                Some(file) => tools::run(all, &file, opts),
                None => generate::run(all, PromptFormat::Chat.name(), opts),
            }
        }
        Command::Trace {
            prompt,
            chat,
            system,
            messages,
            jsonl,
            opts,
        } => {
            if chat {
                let all = chat_messages(prompt, system, messages)?;
                trace::run(all, PromptFormat::Chat.name(), jsonl, opts)
            } else {
                let prompt = prompt.ok_or_else(|| {
                    Failure::usage("trace: give a PROMPT (or --chat with a message or --messages)")
                })?;
                trace::run(
                    vec![Message::new("user", &unescape(&prompt))],
                    PromptFormat::Raw.name(),
                    jsonl,
                    opts,
                )
            }
        }
        Command::Tokenize(args) => tokenize::run(args),
        Command::Experiment(args) => experiment::run(args),
        Command::Fetch { names, force, list } => fetch::run(names, force, list),
        Command::Bench { what } => bench::run(what),
        Command::Serve(args) => serve::run(args),
        Command::Probe(args) => probe::run(args),
        Command::Play(args) => play::run(args),
        Command::Finetune(args) => finetune::run(args),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_are_interpreted() {
        assert_eq!(unescape(r"\nuser:"), "\nuser:");
        assert_eq!(unescape(r"a\tb\\n\q"), "a\tb\\n\\q");
        assert_eq!(unescape(r"\-x"), "-x");
    }

    #[test]
    fn text_values_may_begin_with_a_hyphen_but_not_look_like_a_flag() {
        for ok in [
            "- - -", "- item", "-", "---", "-1", "--", "-> x", r"\-x", "user:",
        ] {
            assert_eq!(text(ok).as_deref(), Ok(ok), "{ok:?}");
        }
        for flag in ["--json", "-n", "--max-tokens", "--jsn", "-abc"] {
            assert!(
                text(flag).unwrap_err().contains("looks like a flag"),
                "{flag:?}"
            );
        }
    }

    #[test]
    fn bias_parses_minus_infinity() {
        assert_eq!(parse_bias("2=-inf").unwrap(), (2, f32::NEG_INFINITY));
        assert_eq!(parse_bias("17=1.5").unwrap(), (17, 1.5));
        assert!(parse_bias("x=1").is_err());
        assert!(parse_bias("2").is_err());
    }
}
