//! `stoplab bench overhead`: what stop matching costs in real decoding. The local model generates the same
//! greedy text with 0, 4, 64, ... stops that never match it; a second scanner over the same stops, fed each
//! token inside the generation, is timed where it runs, and again offline on the same tokens (the hot loop).
//!
//! The steps are separate so that a caller can show the table as it fills: [`Overhead::prepare`] (the
//! prompt and a warm-up), [`Overhead::baseline`] (the generation with no stops, whose text the stops are
//! drawn to miss), then one [`Baseline::row`] per stop count.

use std::ops::ControlFlow;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::lab::bench::{BenchError, CORPUS, Strategy, Stream, measure, never_matching_stops};
use crate::pipeline::format::{Message, PromptFormat};
use crate::pipeline::settings::GenerateParams;
use crate::pipeline::sink::{Discard, Outcome, TokenEvent};
use crate::pipeline::stop::StopSet;
use crate::{Error, LoadedModel};

/// A loaded model with its prompt, warmed up.
pub struct Overhead<'a> {
    engine: &'a mut LoadedModel,
    prompt: Vec<u32>,
}

/// The generation with no stops, and what the rows are measured against.
pub struct Baseline<'a> {
    engine: &'a mut LoadedModel,
    prompt: Vec<u32>,
    tokens: usize,
    first: Vec<u32>,
    /// The first run with its timings, given to the 0-stop row (taken by it).
    unused: Option<(Outcome, Vec<Duration>)>,
    stream: Stream,
    pool: Vec<String>,
}

/// One stop count's figures.
pub struct Row {
    pub stops: usize,
    pub decode_tokens_per_s: f64,
    pub ms_per_token: f64,
    /// The shadow scanner inside the generation: mean and median ns per token.
    pub in_loop_ns: f64,
    pub median_ns: f64,
    /// The same tokens replayed offline.
    pub hot_ns: f64,
    /// In-loop mean over decode time per token.
    pub share: f64,
}

fn params(stops: StopSet, max_tokens: usize) -> GenerateParams {
    GenerateParams {
        stops,
        ignore_eos: true,
        max_tokens,
        ..Default::default()
    }
}

fn no_stops() -> StopSet {
    StopSet::new(Vec::<String>::new()).expect("an empty set is valid")
}

impl<'a> Overhead<'a> {
    /// `message` as the user's turn in the chat format, and a short generation: the first steps of a fresh
    /// process are slower (page faults, thread pools).
    pub fn prepare(engine: &'a mut LoadedModel, message: &str) -> Result<Self, Error> {
        let (_, prompt) = engine.prompt(&PromptFormat::Chat, &[Message::new("user", message)])?;
        engine.generate(&prompt, None, &params(no_stops(), 16), &mut Discard)?;
        Ok(Self { engine, prompt })
    }

    /// Generates `tokens` tokens with no stops, and draws `max_stops` stops that never match that text:
    /// greedy decoding writes the same text every time, so they miss it in every run.
    pub fn baseline(self, tokens: usize, max_stops: usize) -> Result<Baseline<'a>, Error> {
        let (first, first_times) =
            timed_generation(self.engine, &self.prompt, &params(no_stops(), tokens))?;
        let vocab = &self.engine.vocab;
        let stream = Stream {
            ids: first.tokens.clone(),
            bytes: first
                .tokens
                .iter()
                .map(|&id| vocab.token_bytes(id).unwrap_or_default().to_vec())
                .collect(),
        };
        let pool = never_matching_stops(CORPUS.as_bytes(), &[&stream.text()], max_stops, 0x0e4d);
        Ok(Baseline {
            engine: self.engine,
            prompt: self.prompt,
            tokens,
            first: first.tokens.clone(),
            unused: Some((first, first_times)),
            stream,
            pool,
        })
    }
}

impl Baseline<'_> {
    /// The generation with the first `n` stops of the pool (the baseline itself for 0, the first time).
    pub fn row(&mut self, n: usize) -> Result<Row, BenchError> {
        let set = StopSet::new(self.pool[..n].iter().cloned()).map_err(Error::from)?;
        let (out, mut per_token) = match self.unused.take_if(|_| n == 0) {
            Some(run) => run,
            None => timed_generation(self.engine, &self.prompt, &params(set.clone(), self.tokens))?,
        };
        if out.tokens != self.first {
            return Err(BenchError::NotRepeated {
                stops: n,
                finish: out.finish.describe(),
            });
        }
        let t = &out.timings;
        let ms_per_token = t.decode_ms / t.decode_tokens.max(1) as f64;
        let in_loop_ns =
            per_token.iter().sum::<Duration>().as_secs_f64() * 1e9 / per_token.len().max(1) as f64;
        per_token.sort_unstable();
        let median_ns = per_token
            .get(per_token.len() / 2)
            .map_or(0.0, |d| d.as_secs_f64() * 1e9);
        let mut strategy = Strategy::Stoplab.build(&set, &[] as &[&[u8]]);
        let hot = measure(
            strategy.as_mut(),
            &self.stream,
            Duration::from_millis(100),
            5,
        );
        Ok(Row {
            stops: n,
            decode_tokens_per_s: t.decode_tokens_per_s,
            ms_per_token,
            in_loop_ns,
            median_ns,
            hot_ns: hot.ns_per_token,
            share: in_loop_ns / (ms_per_token * 1e6),
        })
    }
}

/// One generation with the matcher timed where it runs: a second scanner over the same stop set, fed each
/// token's bytes inside the generation right after the model's step (cold caches and all), with a clock read
/// on either side. The loop's own scanner does the same work on the same bytes.
fn timed_generation(
    engine: &mut LoadedModel,
    prompt: &[u32],
    params: &GenerateParams,
) -> Result<(Outcome, Vec<Duration>), Error> {
    let mut shadow = params.stops.scanner();
    let mut per_token: Vec<Duration> = Vec::with_capacity(params.max_tokens);
    let mut sink = |ev: &TokenEvent<'_>| {
        let t = Instant::now();
        let scan = shadow.feed(std::hint::black_box(ev.bytes));
        per_token.push(t.elapsed());
        std::hint::black_box(scan);
        ControlFlow::Continue(())
    };
    let out = engine.generate(prompt, None, params, &mut sink)?;
    Ok((out, per_token))
}

/// The table's title and column heads.
pub fn header(tokens: usize) -> String {
    format!(
        "{tokens} tokens generated (greedy, chat format, end tokens ignored), stops that never match\n\
         {:>6}{:>14}{:>12}{:>16}{:>12}{:>12}{:>12}",
        "stops", "decode tok/s", "ms/token", "matcher ns/tok", "(median)", "(hot loop)", "share"
    )
}

/// What the columns mean, printed under the table.
pub const NOTE: &str = "matcher ns/tok: a second scanner on the same stops, timed with Instant around each feed \
inside the generation, mean (with the clock reads and any preemption) and median; (hot loop): the same tokens \
replayed offline; share: in-loop mean ÷ decode time per token";

impl Row {
    pub fn line(&self) -> String {
        format!(
            "{:>6}{:>14.1}{:>12.2}{:>16.0}{:>12.0}{:>12.0}{:>11.5}%",
            self.stops,
            self.decode_tokens_per_s,
            self.ms_per_token,
            self.in_loop_ns,
            self.median_ns,
            self.hot_ns,
            self.share * 100.0
        )
    }

    fn to_json(&self) -> Value {
        json!({
            "stops": self.stops,
            "decode_tokens_per_s": self.decode_tokens_per_s,
            "decode_ms_per_token": self.ms_per_token,
            "matcher_ns_per_token_in_loop": self.in_loop_ns,
            "matcher_ns_per_token_in_loop_median": self.median_ns,
            "matcher_ns_per_token_hot": self.hot_ns,
            "matcher_share": self.share,
        })
    }
}

/// Every row, with the model file, the length and the user message.
pub fn to_json(model: &Path, tokens: usize, message: &str, rows: &[Row]) -> Value {
    json!({
        "benchmark": "stop matcher overhead in real decoding",
        "model": model.display().to_string(),
        "tokens": tokens,
        "prompt": message,
        "runs": rows.iter().map(Row::to_json).collect::<Vec<_>>(),
    })
}
