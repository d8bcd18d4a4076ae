//! `stoplab bench decode`: the model's own speed, comparable with llama.cpp's `llama-bench` (what is timed
//! and how is [`stoplab::lab::bench::decode`]'s).

use clap::Args;

use stoplab::lab::bench::decode::{self, DecodeOptions};
use stoplab::pipeline::model::Isa;

use crate::cli::args::model::{FILE_OR_NAME, MODEL, ModelArg, own_help};
use crate::cli::output::{Failure, pretty};

#[derive(Args, Debug)]
#[command(mut_arg(MODEL, own_help(FILE_OR_NAME)))]
pub struct DecodeArgs {
    #[command(flatten)]
    model: ModelArg,
    /// Tokens of prompt fed before decoding: 100 gives the prompt-processing figure, 1024 the long-context
    /// decode figure.
    #[arg(long, default_value_t = 100)]
    context: usize,
    /// Tokens to decode after the prompt.
    #[arg(long, short = 'n', default_value_t = 128)]
    tokens: usize,
    /// Measured runs (the median and range are reported).
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Unreported runs first (page cache, thread pool start-up).
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
    /// The own forward pass's kernel set: scalar, avx2 or avx512 (default: the best this CPU runs; every
    /// set gives the same results).
    #[arg(long, value_parser = ["scalar", "avx2", "avx512"])]
    kernels: Option<String>,
}

pub fn run(args: DecodeArgs) -> Result<(), Failure> {
    if args.runs == 0 || args.tokens == 0 || args.context == 0 {
        return Err(Failure::usage(
            "--runs, --tokens and --context must be at least 1",
        ));
    }
    let mut loaded = decode::load(&args.model.options(false))?;
    let engine = &mut loaded.engine;
    let needed = args.context + args.tokens;
    if needed > engine.context_length() {
        return Err(Failure::usage(format!(
            "--context + --tokens: {needed} positions do not fit the model's {}",
            engine.context_length()
        )));
    }
    let prompt = decode::prompt(&engine.vocab, args.context)?;
    let model = engine
        .model_mut()
        .ok_or_else(|| Failure::usage("no weights loaded"))?;
    if let Some(name) = &args.kernels {
        let isa = Isa::ALL
            .into_iter()
            .find(|i| i.name() == name)
            .ok_or_else(|| Failure::usage(format!("--kernels: no kernel set {name:?}")))?;
        model
            .set_kernels(isa)
            .map_err(|e| Failure::usage(format!("--kernels {name}: {e}")))?;
    }
    let kernels = model.kernels().map_or("candle", |i| i.name());
    let options = DecodeOptions {
        context: args.context,
        tokens: args.tokens,
        runs: args.runs,
        warmup: args.warmup,
    };
    let report = decode::measure(
        model,
        kernels,
        &prompt,
        options,
        loaded.load_ms,
        loaded.load_avg,
    )?;
    if args.json {
        say!("{}", pretty(&report.to_json()));
    } else {
        say!("{}", report.text());
    }
    Ok(())
}
