//! `stoplab bench decode`: the model's own speed, comparable with llama.cpp's `llama-bench` (what is timed
//! and how is [`stoplab::lab::bench::decode`]'s).

use clap::Args;

use stoplab::LoadedModel;
use stoplab::lab::bench::bandwidth;
use stoplab::lab::bench::decode::{self, DecodeOptions};
use stoplab::lab::bench::speculate;
use stoplab::pipeline::format::{Message, PromptFormat};
use stoplab::pipeline::model::Isa;
use stoplab::pipeline::speculate::Speculation;

use crate::cli::args::model::{FILE_OR_NAME, MODEL, ModelArg, own_help};
use crate::cli::args::speculate::NgramArgs;
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
    /// Leave out the limit line and its read-bandwidth measurement (a 512 MiB buffer streamed after the
    /// runs), e.g. to time the whole process or read its peak RSS from outside, as llama-bench's.
    #[arg(long)]
    no_limit: bool,
    // With --speculate: prompt-lookup speculation is measured instead, each prompt of the shipped sets
    // (--set) generated greedy, at most --tokens tokens, plain and speculative in turn, the same ids
    // required (--context is not used: the prompts are the sets').
    #[command(flatten)]
    ngram: NgramArgs,
    /// The prompt sets: copy (answers that copy their context: a transcript, a code edit, a JSON echo, a
    /// quoted passage), chat (ordinary questions) or both.
    #[arg(long, value_parser = ["copy", "chat", "both"], default_value = "both", requires = "speculate",
          help_heading = "Speculation")]
    set: String,
}

/// `--speculate`: plain decoding against prompt lookup on the shipped prompt sets.
fn speculation(args: &DecodeArgs, spec: Speculation) -> Result<(), Failure> {
    let mut engine = LoadedModel::load(&args.model.options(false))?;
    let format = if engine.vocab.chat_template().is_some() {
        PromptFormat::Chat
    } else {
        PromptFormat::from_name("transcript").expect("a format")
    };
    let sets: Vec<(&'static str, &'static [speculate::Prompt])> = match args.set.as_str() {
        "copy" => vec![("copy", speculate::COPY)],
        "chat" => vec![("chat", speculate::CHAT)],
        _ => vec![("copy", speculate::COPY), ("chat", speculate::CHAT)],
    };
    let vocab = engine.vocab.clone();
    let render = |m: &[Message]| {
        let text = format.render(m, vocab.chat_template())?;
        vocab.encode_prompt(&text)
    };
    let model = engine
        .model_mut()
        .ok_or_else(|| Failure::usage("no weights loaded"))?;
    let rows = speculate::measure(
        model,
        &vocab,
        &render,
        &sets,
        speculate::Plan {
            spec,
            tokens: args.tokens,
            runs: args.runs,
            warmup: args.warmup,
        },
        &mut |line| eprintln!("stoplab: {line}"),
    )?;
    if args.json {
        say!("{}", pretty(&speculate::to_json(&rows)));
    } else {
        say!("{}", speculate::text(&rows));
    }
    Ok(())
}

pub fn run(args: DecodeArgs) -> Result<(), Failure> {
    if args.runs == 0 || args.tokens == 0 || args.context == 0 {
        return Err(Failure::usage(
            "--runs, --tokens and --context must be at least 1",
        ));
    }
    if let Some(spec) = args.ngram.speculation()? {
        return speculation(&args, spec);
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
    // The limit: the weights a step reads, at the decode rate, against the machine's read bandwidth at the
    // same thread count (measured after the runs, so it does not disturb them).
    let weights = loaded
        .engine
        .file
        .as_ref()
        .filter(|_| !args.no_limit)
        .map(|f| bandwidth::weights_per_token(&f.content));
    let limit = weights.map(|w| {
        (
            w,
            bandwidth::read(super::bandwidth::BANDWIDTH_BYTES, report.threads, 5),
        )
    });
    if args.json {
        let mut json = report.to_json();
        if let Some((w, bw)) = &limit {
            json["weights_bytes_per_token"] = (*w).into();
            json["decode_read_gb_s"] = (*w as f64 * report.decode.median / 1e9).into();
            json["read_bandwidth_gb_s"] = bw.to_json();
        }
        say!("{}", pretty(&json));
    } else {
        say!("{}", report.text());
        if let Some((w, bw)) = &limit {
            let rate = *w as f64 * report.decode.median / 1e9;
            say!(
                "limit            decode reads {:.1} MB of weights a token: {rate:.1} GB/s, {:.0}% of this \
                 machine's read bandwidth at {} threads ({:.1} GB/s: bench bandwidth)",
                *w as f64 / 1e6,
                100.0 * rate / bw.median,
                report.threads,
                bw.median
            );
        }
    }
    Ok(())
}
