//! The command line: flags in, the library called, its output printed. [`Cli`] and [`Command`] are the
//! grammar, [`run`] the dispatch; each subcommand has a file (or, with parts, a folder) that reads its flags
//! and prints what [`stoplab`] returns; [`args`] holds the flags several subcommands share, [`output`] how
//! every subcommand writes and fails, [`signals`] the wait of the serving commands.

#[macro_use]
pub mod output;

pub mod args;
pub mod bench;
pub mod experiment;
pub mod fetch;
pub mod finetune;
pub mod generate;
pub mod play;
pub mod probe;
pub mod serve;
pub mod signals;
pub mod tokenize;
pub mod tools;
pub mod trace;

use clap::{Parser, Subcommand};

use crate::cli::output::Failure;

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
    Complete(generate::CompleteArgs),
    /// Answer a chat message (format `chat` by default: the model's own chat template).
    #[command(after_help = EXAMPLES)]
    Chat(generate::ChatArgs),
    /// Show one row per generated token: id, text, end token, held-back bytes and for which stop, emitted text,
    /// and the event that ended the generation (format `raw` by default, like `complete`).
    #[command(after_help = trace::EXAMPLES)]
    Trace(trace::TraceArgs),
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
    Fetch(fetch::FetchArgs),
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

/// Runs a parsed command.
pub fn run(command: Command) -> Result<(), Failure> {
    match command {
        Command::Complete(args) => generate::complete(args),
        Command::Chat(args) => generate::chat(args),
        Command::Trace(args) => trace::run(args),
        Command::Tokenize(args) => tokenize::run(args),
        Command::Experiment(args) => experiment::run(args),
        Command::Finetune(args) => finetune::run(args),
        Command::Fetch(args) => fetch::run(args),
        Command::Bench { what } => bench::run(what),
        Command::Serve(args) => serve::run(args),
        Command::Probe(args) => probe::run(args),
        Command::Play(args) => play::run(args),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use crate::cli::Cli;

    /// Every `--model` is the one declaration in `args/model.rs`; its `mut_arg` edits run when the grammar
    /// is built, and only `probe` (a remote request's field) drops `-m` and `STOPLAB_MODEL`.
    #[test]
    fn every_model_flag_is_the_shared_one_and_only_probe_drops_its_env() {
        let cli = Cli::command();
        cli.clone().debug_assert();
        let mut seen = Vec::new();
        let mut visit = vec![cli];
        while let Some(cmd) = visit.pop() {
            if let Some(model) = cmd.get_arguments().find(|a| a.get_id() == "model") {
                let remote = cmd.get_name() == "probe";
                assert_eq!(model.get_long(), Some("model"));
                assert_eq!(
                    model.get_short(),
                    (!remote).then_some('m'),
                    "{}",
                    cmd.get_name()
                );
                assert_eq!(
                    model.get_env().is_some(),
                    !remote,
                    "{}: STOPLAB_MODEL",
                    cmd.get_name()
                );
                seen.push(cmd.get_name().to_string());
            }
            visit.extend(cmd.get_subcommands().cloned());
        }
        seen.sort();
        assert_eq!(
            seen,
            [
                "chat",
                "complete",
                "decode",
                "experiment",
                "finetune",
                "overhead",
                "play",
                "probe",
                "serve",
                "stops",
                "tokenize",
                "trace"
            ]
        );
    }
}
