//! `stoplab complete` and `stoplab chat`.

use std::io::{IsTerminal, Write};
use std::ops::ControlFlow;

use stoplab::pipeline::format::Message;
use stoplab::pipeline::sink::{Sink, TokenEvent};

use super::{Failure, GenArgs};

pub fn run(messages: Vec<Message>, default_format: &str, opts: GenArgs) -> Result<(), Failure> {
    let replaying = opts.replaying();
    let mut engine = opts.load_engine()?;
    let (format, params) = opts.params(default_format, &engine.vocab)?;
    let natural = format.natural_stop();
    let (_, prompt) = engine.prompt(&format, &messages)?;
    let replay = opts.replay_script(&engine)?;

    let outcome = if opts.json {
        engine.generate(
            &prompt,
            replay,
            &params,
            &mut stoplab::pipeline::sink::Discard,
        )?
    } else {
        let mut sink = TextOut(std::io::stdout().lock());
        let outcome = engine.generate(&prompt, replay, &params, &mut sink)?;
        if let ControlFlow::Break(()) = written(writeln!(sink.0).and_then(|_| sink.0.flush()))? {
            return Ok(());
        }
        outcome
    };

    if opts.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&outcome.to_json()).expect("JSON values serialise")
        );
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

/// What a write to stdout means for the generation: a closed pipe (`| head`) is a reader saying it has seen
/// enough (stop quietly); any other error (a full disk) fails the command.
pub(super) fn written(r: std::io::Result<()>) -> Result<ControlFlow<()>, stoplab::Error> {
    match r {
        Ok(()) => Ok(ControlFlow::Continue(())),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(ControlFlow::Break(())),
        Err(e) => Err(stoplab::Error::Output(e)),
    }
}
