//! `stoplab trace`: one row per generated token, as the stop machinery saw it.

use std::io::{IsTerminal, Write};
use std::ops::ControlFlow;

use stoplab::lab::trace::{Style, Tracer, explain, header, render_row, row_json};
use stoplab::pipeline::format::Message;
use stoplab::pipeline::sink::Token;

use super::generate::written;
use super::{Failure, GenArgs};

pub const EXAMPLES: &str = "Examples:
  stoplab trace --replay ' Berlin.\\nuser: What' --stop '\\nuser:' 'AI:'   # no weights: the cut
  stoplab trace --format transcript --stop '\\nuser:' 'What is the capital of Germany?'
  stoplab trace --chat 'Hi!'                      # ends on the end token <|im_end|>
  stoplab trace --chat --logit-bias 0=-inf --logit-bias 2=-inf --repeat-stop 8 -n 128 'Hi!'
  stoplab trace --jsonl --replay 'a\\nuser:' --stop '\\nuser:' x | jq .   # rows as JSON lines

Columns: # (token index), id, token (quoted text; special tokens unquoted), END (an end-of-generation id),
held back (bytes the stop engine keeps because they may begin a stop, and how much of which stop they are),
emitted (text released to the output by this token), event (what ended the generation, and what was cut).";

pub fn run(
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
    if !jsonl && writeln!(out, "{}", header(style)).is_err() {
        return Ok(());
    }
    let vocab = engine.vocab.clone();
    let mut closed = false;
    let mut failed = None;
    let on_row = |row: &Token| {
        let line = if jsonl {
            row_json(row).to_string()
        } else {
            render_row(row, style)
        };
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
    let mut tracer = Tracer::new(|id| vocab.is_special(id), on_row);
    let outcome = engine.generate(&prompt, replay, &params, &mut tracer)?;
    let rows = std::mem::take(&mut tracer.rows);
    drop(tracer);
    if let Some(e) = failed {
        return Err(e.into());
    }
    if closed || jsonl {
        return Ok(());
    }
    let mut out = std::io::stdout().lock();
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
    let _ = writeln!(
        out,
        "{}",
        stoplab::lab::trace::end_set_line(&engine.vocab, &params)
    );
    Ok(())
}
