//! `stoplab complete` and `stoplab chat`: the text streamed to stdout as it is released, or one JSON object.

use std::io::{IsTerminal, Write};
use std::ops::ControlFlow;
use std::path::PathBuf;

use clap::Args;

use stoplab::pipeline::format::{Message, PromptFormat};
use stoplab::pipeline::sink::{Discard, Sink, TokenEvent};

use crate::cli::args::chat::chat_messages;
use crate::cli::args::generate::GenArgs;
use crate::cli::args::values::{text, unescape};
use crate::cli::output::{Failure, pretty, written};
use crate::cli::tools;

#[derive(Args, Debug)]
pub struct CompleteArgs {
    /// The prompt. Backslash escapes (\n, \t) are interpreted. Special tokens such as <|im_end|> are parsed.
    #[arg(allow_hyphen_values = true, value_parser = text)]
    prompt: String,
    #[command(flatten)]
    opts: GenArgs,
}

#[derive(Args, Debug)]
pub struct ChatArgs {
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
}

pub fn complete(args: CompleteArgs) -> Result<(), Failure> {
    let messages = vec![Message::new("user", &unescape(&args.prompt))];
    run(messages, PromptFormat::Raw.name(), args.opts)
}

pub fn chat(args: ChatArgs) -> Result<(), Failure> {
    let all = chat_messages(args.message, args.system, args.messages)?;
    match args.tools {
        Some(file) => tools::run(all, &file, args.opts),
        None => run(all, PromptFormat::Chat.name(), args.opts),
    }
}

fn run(messages: Vec<Message>, default_format: &str, opts: GenArgs) -> Result<(), Failure> {
    let replaying = opts.replaying();
    let mut engine = opts.load_engine()?;
    let (format, params) = opts.params(default_format, &engine.vocab)?;
    let natural = format.natural_stop();
    let (_, prompt) = engine.prompt(&format, &messages)?;
    let replay = opts.replay_script(&engine)?;

    let outcome = if opts.json {
        engine.generate(&prompt, replay, &params, &mut Discard)?
    } else {
        let mut sink = TextOut(std::io::stdout().lock());
        let outcome = engine.generate(&prompt, replay, &params, &mut sink)?;
        if let ControlFlow::Break(()) = written(writeln!(sink.0).and_then(|_| sink.0.flush()))? {
            return Ok(());
        }
        outcome
    };

    if opts.json {
        println!("{}", pretty(&outcome.to_json()));
    } else {
        let t = &outcome.timings;
        let speed = if replaying {
            "replayed".to_string()
        } else {
            let threads = stoplab::pipeline::model::threads();
            format!(
                "prefill {:.0} tok/s, decode {:.1} tok/s, {threads} thread{}",
                t.prefill_tokens_per_s,
                t.decode_tokens_per_s,
                if threads == 1 { "" } else { "s" }
            )
        };
        eprintln!(
            "[finish_reason: {} ({}) | {} prompt + {} generated tokens | {speed}]",
            outcome.finish.openai(),
            outcome.finish.describe(),
            outcome.prompt_tokens,
            outcome.tokens.len(),
        );
        if let Some(n) = natural.filter(|n| !params.stops.stops().contains(n))
            && std::io::stderr().is_terminal()
        {
            eprintln!(
                "hint: this format's natural stop is {n:?}; add --natural-stop or --stop to use it"
            );
        }
    }
    Ok(())
}

/// The generated text, written as it is released.
struct TextOut<W: Write>(W);

impl<W: Write> Sink for TextOut<W> {
    fn token(&mut self, ev: &TokenEvent<'_>) -> Result<ControlFlow<()>, stoplab::Error> {
        written(
            self.0
                .write_all(ev.text.as_bytes())
                .and_then(|_| self.0.flush()),
        )
    }
}
