//! `stoplab bench decode`: the model's own speed, comparable with llama.cpp's `llama-bench`.
//!
//! Each run feeds a fixed prompt of `--context` tokens in one forward pass (prompt processing), then
//! decodes `--tokens` tokens one at a time, greedy, end tokens ignored. Only the model's forward passes and
//! the argmax are timed: no detokenizing, no stop matching, as llama-bench measures. The figures are the
//! median and range over `--runs` runs after `--warmup` unreported ones, with the thread count, the load
//! average (the machine is shared: a figure without the load means little), peak RSS and load time.

use std::time::Instant;

use clap::Args;
use serde_json::json;

use stoplab::LoadOptions;
use stoplab::pipeline::model::{Isa, Model, Next};

use super::Failure;

#[derive(Args, Debug)]
pub struct BenchDecodeArgs {
    /// A GGUF file or model name (default: the default model).
    #[arg(long, short, env = "STOPLAB_MODEL")]
    model: Option<String>,
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

/// A fixed, ordinary English text: its tokens, repeated, make the prompt.
const TEXT: &str = "The history of the city begins with a small settlement on the river, where fishermen \
and traders met to exchange salt, grain and wool. Over the centuries the market grew into a town, the town \
built walls and a bridge, and merchants from distant countries came to sell spices, silk and glass. \
Scholars founded a university, printers set up their presses near the cathedral, and by the eighteenth \
century the city was known across the continent for its books, its music and its gardens. ";

#[derive(Debug, Clone, Copy)]
struct Run {
    prefill_tok_s: f64,
    decode_tok_s: f64,
}

pub fn run(args: BenchDecodeArgs) -> Result<(), Failure> {
    if args.runs == 0 || args.tokens == 0 || args.context == 0 {
        return Err(Failure::usage(
            "--runs, --tokens and --context must be at least 1",
        ));
    }
    let load_avg_start = load_avg();
    let t0 = Instant::now();
    let mut engine = stoplab::LoadedModel::load(&LoadOptions {
        model: args.model.clone(),
        progress: true,
        ..Default::default()
    })?;
    let load_ms = t0.elapsed().as_secs_f64() * 1e3;
    let needed = args.context + args.tokens;
    if needed > engine.context_length() {
        return Err(Failure::usage(format!(
            "--context + --tokens: {needed} positions do not fit the model's {}",
            engine.context_length()
        )));
    }
    let unit = engine.vocab.encode(TEXT, false)?;
    let prompt: Vec<u32> = unit.iter().copied().cycle().take(args.context).collect();
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

    let mut runs = Vec::with_capacity(args.runs);
    for i in 0..args.warmup + args.runs {
        let r = one_run(model, &prompt, args.tokens)?;
        if i >= args.warmup {
            runs.push(r);
        }
    }
    let load_avg_end = load_avg();
    let prefill = Stats::of(runs.iter().map(|r| r.prefill_tok_s).collect());
    let decode = Stats::of(runs.iter().map(|r| r.decode_tok_s).collect());
    let peak_rss_mb = peak_rss_kb().map(|kb| kb as f64 / 1024.0);
    let threads = stoplab::pipeline::model::threads();

    if args.json {
        let value = json!({
            "model": model.name(),
            "threads": threads,
            "kernels": kernels,
            "context": args.context,
            "tokens": args.tokens,
            "runs": args.runs,
            "load_ms": load_ms,
            "peak_rss_mb": peak_rss_mb,
            "prefill_tok_s": prefill.to_json(),
            "decode_tok_s": decode.to_json(),
            "load_avg": [load_avg_start, load_avg_end],
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&value).expect("JSON values serialise")
        );
    } else {
        println!(
            "{}: {} threads, {} kernels, load average {} -> {}",
            model.name(),
            threads,
            kernels,
            fmt_opt(load_avg_start),
            fmt_opt(load_avg_end)
        );
        println!("load             {load_ms:8.0} ms");
        println!(
            "prefill {:>5} tok {:8.1} tok/s  (median of {}, {:.1} - {:.1})",
            args.context, prefill.median, args.runs, prefill.min, prefill.max
        );
        println!(
            "decode  {:>5} tok {:8.1} tok/s  (median of {}, {:.1} - {:.1}), after {} tokens of context",
            args.tokens, decode.median, args.runs, decode.min, decode.max, args.context
        );
        if let Some(mb) = peak_rss_mb {
            println!("peak RSS         {mb:8.1} MB");
        }
    }
    Ok(())
}

fn one_run(model: &mut dyn Model, prompt: &[u32], tokens: usize) -> Result<Run, Failure> {
    let t0 = Instant::now();
    let mut next = argmax(model.forward(prompt, 0)?);
    let prefill_s = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    for i in 0..tokens {
        next = argmax(model.forward(&[next], prompt.len() + i)?);
    }
    let decode_s = t1.elapsed().as_secs_f64();
    Ok(Run {
        prefill_tok_s: prompt.len() as f64 / prefill_s,
        decode_tok_s: tokens as f64 / decode_s,
    })
}

fn argmax(next: Next) -> u32 {
    match next {
        Next::Forced(id) => id,
        Next::Logits(logits) => {
            logits
                .iter()
                .enumerate()
                .fold((0, f32::NEG_INFINITY), |best, (i, &v)| {
                    if v > best.1 { (i, v) } else { best }
                })
                .0 as u32
        }
    }
}

struct Stats {
    median: f64,
    min: f64,
    max: f64,
    all: Vec<f64>,
}

impl Stats {
    fn of(mut all: Vec<f64>) -> Self {
        all.sort_by(f64::total_cmp);
        let n = all.len();
        let median = if n % 2 == 1 {
            all[n / 2]
        } else {
            (all[n / 2 - 1] + all[n / 2]) / 2.0
        };
        Self {
            median,
            min: all[0],
            max: all[n - 1],
            all,
        }
    }

    fn to_json(&self) -> serde_json::Value {
        json!({"median": self.median, "min": self.min, "max": self.max, "runs": self.all})
    }
}

/// The process's peak resident set (VmHWM), in kB.
fn peak_rss_kb() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn load_avg() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn fmt_opt(v: Option<f64>) -> String {
    v.map_or_else(|| "?".into(), |v| format!("{v:.2}"))
}
