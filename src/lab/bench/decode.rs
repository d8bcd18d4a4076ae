//! `stoplab bench decode`: the model's own speed, comparable with llama.cpp's `llama-bench`.
//!
//! Each run feeds a fixed prompt of `context` tokens in one forward pass (prompt processing), then decodes
//! `tokens` tokens one at a time, greedy, end tokens ignored. Only the model's forward passes and the argmax
//! are timed: no detokenizing, no stop matching, as llama-bench measures. The figures are the median and
//! range over `runs` runs after `warmup` unreported ones, with the thread count, the load average (the
//! machine is shared: a figure without the load means little), peak RSS and load time.

use std::time::Instant;

use serde_json::{Value, json};

use crate::pipeline::model::{Model, Next};
use crate::pipeline::tokenizer::Vocab;
use crate::{Error, LoadOptions, LoadedModel};

/// A fixed, ordinary English text: its tokens, repeated, make the prompt.
const TEXT: &str = "The history of the city begins with a small settlement on the river, where fishermen \
and traders met to exchange salt, grain and wool. Over the centuries the market grew into a town, the town \
built walls and a bridge, and merchants from distant countries came to sell spices, silk and glass. \
Scholars founded a university, printers set up their presses near the cathedral, and by the eighteenth \
century the city was known across the continent for its books, its music and its gardens. ";

/// What to run: each at least 1 (but `warmup`).
#[derive(Clone, Copy, Debug)]
pub struct DecodeOptions {
    /// Prompt tokens fed before decoding.
    pub context: usize,
    /// Tokens decoded after the prompt.
    pub tokens: usize,
    /// Measured runs.
    pub runs: usize,
    /// Unreported runs first.
    pub warmup: usize,
}

/// A model loaded for the bench: how long loading took, and the load average before it.
pub struct Loaded {
    pub engine: LoadedModel,
    pub load_ms: f64,
    pub load_avg: Option<f64>,
}

/// Loads the model, timed.
pub fn load(options: &LoadOptions) -> Result<Loaded, Error> {
    let before = load_avg();
    let t0 = Instant::now();
    let engine = LoadedModel::load(options)?;
    Ok(Loaded {
        engine,
        load_ms: t0.elapsed().as_secs_f64() * 1e3,
        load_avg: before,
    })
}

/// The prompt: the tokens of a fixed, ordinary English text, repeated to `context` tokens.
pub fn prompt(vocab: &Vocab, context: usize) -> Result<Vec<u32>, Error> {
    let unit = vocab.encode(TEXT, false)?;
    Ok(unit.iter().copied().cycle().take(context).collect())
}

/// A figure over the runs.
pub struct Stats {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub all: Vec<f64>,
}

impl Stats {
    /// At least one value.
    pub fn of(mut all: Vec<f64>) -> Self {
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

    pub fn to_json(&self) -> Value {
        json!({"median": self.median, "min": self.min, "max": self.max, "runs": self.all})
    }
}

/// Everything measured, and where.
pub struct DecodeReport {
    pub model: String,
    pub threads: usize,
    pub kernels: &'static str,
    pub options: DecodeOptions,
    pub load_ms: f64,
    pub peak_rss_mb: Option<f64>,
    /// Tokens per second.
    pub prefill: Stats,
    pub decode: Stats,
    /// Before loading, and after the last run.
    pub load_avg: [Option<f64>; 2],
}

/// Runs `options.warmup + options.runs` times on `model`, whose kernel set is named `kernels`; `load_ms` and
/// `load_avg_before` are [`Loaded`]'s.
pub fn measure(
    model: &mut dyn Model,
    kernels: &'static str,
    prompt: &[u32],
    options: DecodeOptions,
    load_ms: f64,
    load_avg_before: Option<f64>,
) -> Result<DecodeReport, Error> {
    let (mut prefill, mut decode) = (Vec::new(), Vec::new());
    for i in 0..options.warmup + options.runs {
        let (p, d) = one_run(model, prompt, options.tokens)?;
        if i >= options.warmup {
            prefill.push(p);
            decode.push(d);
        }
    }
    Ok(DecodeReport {
        model: model.name().to_string(),
        threads: crate::pipeline::model::threads(),
        kernels,
        options,
        load_ms,
        peak_rss_mb: peak_rss_kb().map(|kb| kb as f64 / 1024.0),
        prefill: Stats::of(prefill),
        decode: Stats::of(decode),
        load_avg: [load_avg_before, load_avg()],
    })
}

/// Prompt processing and decode speed of one run, in tokens per second.
fn one_run(model: &mut dyn Model, prompt: &[u32], tokens: usize) -> Result<(f64, f64), Error> {
    let t0 = Instant::now();
    let mut next = argmax(model.forward(prompt, 0)?);
    let prefill_s = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    for i in 0..tokens {
        next = argmax(model.forward(&[next], prompt.len() + i)?);
    }
    let decode_s = t1.elapsed().as_secs_f64();
    Ok((prompt.len() as f64 / prefill_s, tokens as f64 / decode_s))
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

impl DecodeReport {
    /// The lines the terminal shows.
    pub fn text(&self) -> String {
        let o = &self.options;
        let mut lines = vec![
            format!(
                "{}: {} threads, {} kernels, load average {} -> {}",
                self.model,
                self.threads,
                self.kernels,
                fmt_opt(self.load_avg[0]),
                fmt_opt(self.load_avg[1])
            ),
            format!("load             {:8.0} ms", self.load_ms),
            format!(
                "prefill {:>5} tok {:8.1} tok/s  (median of {}, {:.1} - {:.1})",
                o.context, self.prefill.median, o.runs, self.prefill.min, self.prefill.max
            ),
            format!(
                "decode  {:>5} tok {:8.1} tok/s  (median of {}, {:.1} - {:.1}), after {} tokens of context",
                o.tokens, self.decode.median, o.runs, self.decode.min, self.decode.max, o.context
            ),
        ];
        if let Some(mb) = self.peak_rss_mb {
            lines.push(format!("peak RSS         {mb:8.1} MB"));
        }
        lines.join("\n")
    }

    pub fn to_json(&self) -> Value {
        let o = &self.options;
        json!({
            "model": self.model,
            "threads": self.threads,
            "kernels": self.kernels,
            "context": o.context,
            "tokens": o.tokens,
            "runs": o.runs,
            "load_ms": self.load_ms,
            "peak_rss_mb": self.peak_rss_mb,
            "prefill_tok_s": self.prefill.to_json(),
            "decode_tok_s": self.decode.to_json(),
            "load_avg": self.load_avg,
        })
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

#[cfg(test)]
mod tests {
    use super::Stats;

    #[test]
    fn the_median_of_an_even_count_is_the_mean_of_the_middle_two() {
        let s = Stats::of(vec![4.0, 1.0, 3.0, 2.0]);
        assert_eq!((s.median, s.min, s.max), (2.5, 1.0, 4.0));
        assert_eq!(Stats::of(vec![5.0, 1.0, 3.0]).median, 3.0);
    }
}
