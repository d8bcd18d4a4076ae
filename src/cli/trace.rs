//! `stoplab trace`: one row per generated token, as the stop machinery saw it (the rows, the explanation and
//! the end-set line are [`stoplab::lab::trace`]'s).

use std::io::{IsTerminal, Write};
use std::ops::ControlFlow;
use std::path::PathBuf;

use clap::Args;

use stoplab::lab::trace::{
    Style, Tracer, end_set_line, explain, header, render_row, render_step, row_json, step_json,
};
use stoplab::pipeline::format::{Message, PromptFormat};
use stoplab::pipeline::sink::Token;

use crate::cli::args::chat::chat_messages;
use crate::cli::args::generate::GenArgs;
use crate::cli::args::values::{text, unescape};
use crate::cli::output::{Failure, written};

pub const EXAMPLES: &str = "Examples:
  stoplab trace --replay ' Berlin.\\nuser: What' --stop '\\nuser:' 'AI:'   # no weights: the cut
  stoplab trace --format transcript --stop '\\nuser:' 'What is the capital of Germany?'
  stoplab trace --chat 'Hi!'                      # ends on the end token <|im_end|>
  stoplab trace --chat --logit-bias 0=-inf --logit-bias 2=-inf --repeat-stop 8 -n 128 'Hi!'
  stoplab trace --jsonl --replay 'a\\nuser:' --stop '\\nuser:' x | jq .   # rows as JSON lines
  stoplab trace --replay ' Berlin.\\nuser: next' --stop '\\nuser:' --tokens-per-step 3 'AI:'  # 3 tokens a step
  stoplab trace --speculate ngram --stop 'fig, gr' 'A list: apple, fig, grape.\\nAgain: apple,'  # prompt lookup

Columns: # (token index), id, token (quoted text; special tokens unquoted), END (an end-of-generation id),
held back (bytes the stop engine keeps because they may begin a stop, and how much of which stop they are),
emitted (text released to the output by this token), event (what ended the generation, and what was cut).
With several tokens per step (--speculate, --tokens-per-step), a line under each step's rows says what was
drafted, how much was accepted, what was rejected and what the finish discarded.";

#[derive(Args, Debug)]
pub struct TraceArgs {
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
}

pub fn run(args: TraceArgs) -> Result<(), Failure> {
    if args.chat {
        let all = chat_messages(args.prompt, args.system, args.messages)?;
        trace(all, PromptFormat::Chat.name(), args.jsonl, args.opts)
    } else {
        let prompt = args.prompt.ok_or_else(|| {
            Failure::usage("trace: give a PROMPT (or --chat with a message or --messages)")
        })?;
        let messages = vec![Message::new("user", &unescape(&prompt))];
        trace(messages, PromptFormat::Raw.name(), args.jsonl, args.opts)
    }
}

fn trace(
    messages: Vec<Message>,
    default_format: &str,
    jsonl: bool,
    opts: GenArgs,
) -> Result<(), Failure> {
    let mut engine = opts.load_engine()?;
    let (format, params) = opts.params(default_format, &engine.vocab)?;
    let (_, prompt) = engine.prompt(&format, &messages)?;
    let replay = opts.replay_script(&engine)?;
    let jsonl = jsonl || opts.json;

    let stdout = std::io::stdout();
    let style = Style {
        color: stdout.is_terminal() && std::env::var_os("NO_COLOR").is_none(),
    };
    let mut out = stdout.lock();
    // The table's header goes out with the first row, so that a generation refused before it starts (a
    // close marker that is not one token) leaves only its error.
    let mut headed = jsonl;
    let vocab = engine.vocab.clone();
    let mut closed = false;
    let mut failed = None;
    // Steps of several tokens (--speculate, --tokens-per-step) are reported after their rows, and printed
    // before the next step's first row (or at the end).
    let steps = std::cell::RefCell::new(Vec::<String>::new());
    let on_row = |row: &Token| {
        let mut line = String::new();
        if !headed {
            line.push_str(&header(style));
            line.push('\n');
            headed = true;
        }
        for s in steps.borrow_mut().drain(..) {
            line.push_str(&s);
            line.push('\n');
        }
        line.push_str(&if jsonl {
            row_json(row).to_string()
        } else {
            render_row(row, style)
        });
        match written(writeln!(out, "{line}").and_then(|_| out.flush())) {
            Ok(flow) => {
                closed = flow.is_break();
                flow
            }
            Err(e) => {
                failed = Some(e);
                ControlFlow::Break(())
            }
        }
    };
    let mut tracer = Tracer::new(|id| vocab.is_special(id), on_row).with_steps(|r| {
        if r.drafted.is_empty() && params.speculation.is_none() {
            return;
        }
        steps.borrow_mut().push(if jsonl {
            step_json(r).to_string()
        } else {
            render_step(r, &vocab)
        });
    });
    let outcome = engine.generate(&prompt, replay, &params, &mut tracer)?;
    let rows = std::mem::take(&mut tracer.rows);
    drop(tracer);
    if let Some(e) = failed {
        return Err(e.into());
    }
    if closed {
        return Ok(());
    }
    let mut out = std::io::stdout().lock();
    for s in steps.take() {
        let _ = writeln!(out, "{s}");
    }
    if jsonl {
        return Ok(());
    }
    let _ = writeln!(out);
    for line in explain(&rows) {
        let _ = writeln!(out, "{line}");
    }
    let _ = writeln!(
        out,
        "finish_reason {} (stop_reason {}); {} prompt + {} generated tokens",
        outcome.finish.openai(),
        outcome.finish.stop_reason(),
        outcome.prompt_tokens,
        outcome.tokens.len()
    );
    let _ = writeln!(out, "{}", end_set_line(&engine.vocab, &params));
    Ok(())
}
