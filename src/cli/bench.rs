//! `stoplab bench stops` and `stoplab bench overhead`.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use serde_json::json;

use stoplab::lab::bench::svg::{Series, line_chart};
use stoplab::lab::bench::{CORPUS, Strategy, Stream, Workload, measure, never_matching_stops};
use stoplab::pipeline::format::{Message, PromptFormat};
use stoplab::pipeline::settings::GenerateParams;
use stoplab::pipeline::sink::TokenEvent;
use stoplab::pipeline::stop::StopSet;
use stoplab::{LoadOptions, LoadedModel};

use super::{Failure, unescape};

/// The human-readable tables: on stdout, or on stderr when stdout carries the JSON document (`--json`).
/// A reader that has gone (`| head`) is no error, and the measurements still reach `--json-out` and `--plot`.
macro_rules! out {
    ($json:expr, $($arg:tt)*) => {{
        use std::io::Write as _;
        let written = if $json {
            write!(std::io::stderr(), $($arg)*)
        } else {
            write!(std::io::stdout(), $($arg)*)
        };
        match written {
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                return Err(stoplab::Error::Output(e).into());
            }
            _ => {}
        }
    }};
}

/// [`out!`] with a newline.
macro_rules! outln {
    ($json:expr) => {
        out!($json, "\n")
    };
    ($json:expr, $($arg:tt)*) => {
        out!($json, "{}\n", format_args!($($arg)*))
    };
}

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Stop matching per token: stoplab's matcher against the peers' strategies (full rescan as in
    /// mistral.rs, tail search as in llama.cpp's server and vLLM, token tables as in HF transformers), on
    /// real token streams with stops that never match. Needs only the tokenizer.
    Stops(StopsArgs),
    /// The real model generating with 0, 4, 64 and 1024 never-matching stops: decode tokens/s and the
    /// matcher's share of the time per token.
    Overhead(OverheadArgs),
    /// Prompt processing and decode speed, peak RSS and load time of the model itself (compare with
    /// llama-bench: benches/peer/llama_cpp.sh).
    Decode(super::bench_decode::BenchDecodeArgs),
}

#[derive(Args)]
pub struct StopsArgs {
    /// Numbers of stop strings, one column each.
    #[arg(long, value_delimiter = ',', default_value = "1,4,16,64,256,1024")]
    stops: Vec<usize>,
    /// Generation length (tokens) of the stops table.
    #[arg(long, default_value_t = 1024)]
    tokens: usize,
    /// Generation lengths (tokens) of the second table, measured at --length-stops stops.
    #[arg(long, value_delimiter = ',', default_value = "64,1024,8192")]
    lengths: Vec<usize>,
    /// Number of stops of the lengths table.
    #[arg(long, default_value_t = 4)]
    length_stops: usize,
    /// Measuring time per cell, in milliseconds (the fastest of 5 rounds counts).
    #[arg(long, default_value_t = 200)]
    ms: u64,
    /// A cell whose first pass over the stream takes longer than this many milliseconds is skipped (full
    /// rescan grows with stops × length²).
    #[arg(long, default_value_t = 500)]
    max_pass_ms: u64,
    /// Print every measurement as one JSON document on stdout (the tables go to stderr).
    #[arg(long)]
    json: bool,
    /// Write every measurement as JSON to FILE (the tables still print).
    #[arg(long, value_name = "FILE")]
    json_out: Option<PathBuf>,
    /// Write an SVG chart of ns/token against the number of stops, one line per strategy.
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<PathBuf>,
    /// A GGUF file or model name whose tokenizer makes the token streams (default: the default model).
    #[arg(long, short, env = "STOPLAB_MODEL")]
    model: Option<String>,
}

#[derive(Args)]
pub struct OverheadArgs {
    /// Numbers of never-matching stop strings, one generation each.
    #[arg(long, value_delimiter = ',', default_value = "0,4,64,1024")]
    stops: Vec<usize>,
    /// Tokens to generate (end tokens are ignored, so every generation has exactly this many).
    #[arg(long, short = 'n', default_value_t = 256)]
    tokens: usize,
    /// The user message (chat format, greedy decoding).
    #[arg(
        long,
        default_value = "Write a long story about a lighthouse keeper and the sea."
    )]
    prompt: String,
    /// Print the measurements as one JSON document on stdout (the table goes to stderr).
    #[arg(long)]
    json: bool,
    /// Write the measurements as JSON to FILE (the table still prints).
    #[arg(long, value_name = "FILE")]
    json_out: Option<PathBuf>,
    /// A GGUF file or model name (default: the default model); with --endpoint, the request's `model`.
    #[arg(long, short, env = "STOPLAB_MODEL")]
    model: Option<String>,
    /// Measure an OpenAI-compatible server instead of the local model: the same greedy request with each
    /// number of stops, alternated round by round (its own timings where it reports them, else wall time).
    #[arg(long, value_name = "URL")]
    endpoint: Option<String>,
    /// With --endpoint: sent as `Authorization: Bearer KEY`.
    #[arg(
        long,
        env = "OPENAI_API_KEY",
        hide_env_values = true,
        requires = "endpoint"
    )]
    api_key: Option<String>,
    /// With --endpoint: rounds over the stop counts.
    #[arg(long, default_value_t = 5, requires = "endpoint")]
    rounds: usize,
}

pub fn run(command: BenchCommand) -> Result<(), Failure> {
    match command {
        BenchCommand::Stops(args) => stops(args),
        BenchCommand::Overhead(args) => overhead(args),
        BenchCommand::Decode(args) => super::bench_decode::run(args),
    }
}

/// One cell of the comparison.
struct Cell {
    strategy: Strategy,
    stops: usize,
    tokens: usize,
    /// None: skipped, a single pass would take too long.
    ns_per_token: Option<f64>,
    ns_per_byte: Option<f64>,
    setup_ms: f64,
}

impl Cell {
    fn to_json(&self) -> serde_json::Value {
        json!({
            "strategy": self.strategy.name(),
            "peer": self.strategy.peer(),
            "stops": self.stops,
            "tokens": self.tokens,
            "ns_per_token": self.ns_per_token,
            "ns_per_byte": self.ns_per_byte,
            "setup_ms": self.setup_ms,
        })
    }
}

/// Measures every strategy on `stream` for each stop count. A cell is skipped when a first pass over the
/// stream does not finish within `--max-pass-ms` (full rescan grows with stops × length²), or when a smaller
/// stop count of the same strategy was already skipped.
fn sweep(
    w: &Workload,
    stream: &Stream,
    stop_counts: &[usize],
    args: &StopsArgs,
) -> Result<Vec<Cell>, Failure> {
    let mut cells = Vec::new();
    let limit = Duration::from_millis(args.max_pass_ms);
    for strategy in Strategy::ALL {
        let mut too_slow = false;
        for &n in stop_counts {
            let set = w.stop_set(n, false);
            let t = Instant::now();
            let mut s = strategy.build(&set, &w.vocab);
            let setup_ms = t.elapsed().as_secs_f64() * 1e3;
            too_slow = too_slow || !finishes_within(s.as_mut(), stream, limit);
            if too_slow {
                cells.push(Cell {
                    strategy,
                    stops: n,
                    tokens: stream.len(),
                    ns_per_token: None,
                    ns_per_byte: None,
                    setup_ms,
                });
                continue;
            }
            let m = measure(s.as_mut(), stream, Duration::from_millis(args.ms), 5);
            check(strategy, n, &m.found, &w.expected(stream, n, false))?;
            // The same strategy must also find the stop that the last token completes.
            if strategy != Strategy::TokenTables {
                let set = w.stop_set(n, true);
                let mut s = strategy.build(&set, &w.vocab);
                check(
                    strategy,
                    n,
                    &stream.run(s.as_mut()),
                    &w.expected(stream, n, true),
                )?;
            }
            cells.push(Cell {
                strategy,
                stops: n,
                tokens: stream.len(),
                ns_per_token: Some(m.ns_per_token),
                ns_per_byte: Some(m.ns_per_byte),
                setup_ms,
            });
        }
    }
    Ok(cells)
}

/// Whether one pass over the stream takes less than `limit` (given up as soon as it has taken longer).
fn finishes_within(
    strategy: &mut dyn stoplab::lab::bench::StopStrategy,
    stream: &Stream,
    limit: Duration,
) -> bool {
    strategy.reset();
    let t = Instant::now();
    for (i, (&id, bytes)) in stream.ids.iter().zip(&stream.bytes).enumerate() {
        std::hint::black_box(strategy.feed(id, bytes));
        if i % 64 == 0 && t.elapsed() > limit {
            return false;
        }
    }
    true
}

fn check(
    strategy: Strategy,
    n: usize,
    found: &[(usize, stoplab::pipeline::stop::StopMatch)],
    expected: &[(usize, stoplab::pipeline::stop::StopMatch)],
) -> Result<(), Failure> {
    if found == expected {
        return Ok(());
    }
    Err(Failure {
        usage: false,
        message: format!(
            "{} with {n} stops found {found:?} where {expected:?} was expected; its figures do not count",
            strategy.name()
        ),
    })
}

fn stops(args: StopsArgs) -> Result<(), Failure> {
    if args.stops.is_empty() || args.stops.contains(&0) {
        return Err(Failure::usage(
            "--stops: give one or more numbers of stops, each at least 1",
        ));
    }
    if args.tokens < 8 || args.lengths.iter().any(|&n| n < 8) {
        return Err(Failure::usage(
            "--tokens, --lengths: generations must be at least 8 tokens",
        ));
    }
    if args.length_stops == 0 {
        return Err(Failure::usage("--length-stops: must be at least 1"));
    }
    let started = Instant::now();
    let engine = LoadedModel::load(&LoadOptions {
        model: args.model.clone(),
        tokenizer_only: true,
        progress: true,
        ..Default::default()
    })?;
    let mut lengths = args.lengths.clone();
    lengths.push(args.tokens);
    lengths.sort_unstable();
    lengths.dedup();
    let max_stops = args
        .stops
        .iter()
        .copied()
        .chain([args.length_stops])
        .max()
        .unwrap_or(1);
    let w = Workload::new(&engine.vocab, &lengths, max_stops)?;
    let stream = w.stream(args.tokens);
    let bpt = stream.byte_len() as f64 / stream.len() as f64;

    let mut stop_counts = args.stops.clone();
    stop_counts.sort_unstable();
    stop_counts.dedup();
    let by_stops = sweep(&w, stream, &stop_counts, &args)?;
    let mut by_length = Vec::new();
    for &n in &args.lengths {
        by_length.extend(sweep(&w, w.stream(n), &[args.length_stops], &args)?);
    }

    let fmt = |v: Option<f64>| v.map_or("skipped".to_string(), |v| format!("{v:.0}"));
    outln!(
        args.json,
        "ns per token, {}-token generations ({bpt:.2} bytes/token), stops that never match",
        args.tokens
    );
    out!(args.json, "{:<14}{:<36}", "strategy", "as in");
    for n in &stop_counts {
        out!(args.json, "{n:>10}");
    }
    outln!(args.json);
    for strategy in Strategy::ALL {
        out!(args.json, "{:<14}{:<36}", strategy.name(), strategy.peer());
        for c in by_stops.iter().filter(|c| c.strategy == strategy) {
            out!(args.json, "{:>10}", fmt(c.ns_per_token));
        }
        outln!(args.json);
    }
    out!(
        args.json,
        "{:<50}",
        "token-tables set-up over the vocabulary (ms)"
    );
    for c in by_stops
        .iter()
        .filter(|c| c.strategy == Strategy::TokenTables)
    {
        out!(args.json, "{:>10.0}", c.setup_ms);
    }
    outln!(args.json, "\n");

    outln!(
        args.json,
        "ns per token with {} stops, by generation length",
        args.length_stops
    );
    out!(args.json, "{:<14}", "strategy");
    for n in &args.lengths {
        out!(args.json, "{:>10}", format!("{n} tok"));
    }
    outln!(args.json);
    for strategy in Strategy::ALL {
        out!(args.json, "{:<14}", strategy.name());
        for &n in &args.lengths {
            let c = by_length
                .iter()
                .find(|c| c.strategy == strategy && c.tokens == n);
            out!(args.json, "{:>10}", fmt(c.and_then(|c| c.ns_per_token)));
        }
        outln!(args.json);
    }
    outln!(args.json);

    let ns = |cells: &[Cell], s: Strategy, stops: usize, tokens: usize| {
        cells
            .iter()
            .find(|c| c.strategy == s && c.stops == stops && c.tokens == tokens)
            .and_then(|c| c.ns_per_token)
    };
    let mut ratios = Vec::new();
    for peer in [
        Strategy::TailSearch,
        Strategy::TokenTables,
        Strategy::FullRescan,
    ] {
        for &n in &stop_counts {
            if let (Some(a), Some(b)) = (
                ns(&by_stops, Strategy::Stoplab, n, args.tokens),
                ns(&by_stops, peer, n, args.tokens),
            ) {
                ratios.push(
                    json!({"vs": peer.name(), "stops": n, "tokens": args.tokens, "speedup": b / a}),
                );
            }
        }
        for &t in &args.lengths {
            if let (Some(a), Some(b)) = (
                ns(&by_length, Strategy::Stoplab, args.length_stops, t),
                ns(&by_length, peer, args.length_stops, t),
            ) {
                ratios.push(json!({"vs": peer.name(), "stops": args.length_stops, "tokens": t, "speedup": b / a}));
            }
        }
    }
    outln!(
        args.json,
        "stoplab's speed-up (peer ns/token ÷ stoplab ns/token):"
    );
    for peer in [
        Strategy::TailSearch,
        Strategy::TokenTables,
        Strategy::FullRescan,
    ] {
        let line: Vec<String> = ratios
            .iter()
            .filter(|r| r["vs"] == peer.name())
            .map(|r| {
                let x = r["speedup"].as_f64().unwrap_or(0.0);
                let digits = if x < 10.0 { 1 } else { 0 };
                format!("{}s×{}t {x:.digits$}x", r["stops"], r["tokens"])
            })
            .collect();
        outln!(args.json, "  vs {:<13} {}", peer.name(), line.join(", "));
    }
    eprintln!("[{:.1} s]", started.elapsed().as_secs_f64());

    if args.json || args.json_out.is_some() {
        let doc = json!({
            "benchmark": "stop matching per token",
            "stream": {
                "source": "Apache License 2.0 text, repeated, ending with \"\\nuser:\"",
                "tokenizer": engine.path.display().to_string(),
                "tokens": args.tokens,
                "bytes_per_token": bpt,
            },
            "stops_never_match": true,
            "by_stops": by_stops.iter().map(Cell::to_json).collect::<Vec<_>>(),
            "by_length": by_length.iter().map(Cell::to_json).collect::<Vec<_>>(),
            "speedups": ratios,
        });
        emit_json(&doc, args.json, args.json_out.as_deref())?;
    }
    if let Some(path) = &args.plot {
        let series: Vec<Series> = Strategy::ALL
            .iter()
            .map(|&s| Series {
                name: s.name().to_string(),
                points: by_stops
                    .iter()
                    .filter(|c| c.strategy == s)
                    .filter_map(|c| Some((c.stops as f64, c.ns_per_token?)))
                    .collect(),
            })
            .collect();
        let title = format!(
            "Stop matching, {}-token generations (lower is better)",
            args.tokens
        );
        write(
            path,
            &line_chart(&title, "number of stop strings", "ns per token", &series),
        )?;
    }
    Ok(())
}

/// `--json`: the document on stdout; `--json-out FILE`: the document in FILE. Either, both or neither.
fn emit_json(doc: &serde_json::Value, stdout: bool, file: Option<&Path>) -> Result<(), Failure> {
    let text = serde_json::to_string_pretty(doc).expect("JSON values serialise");
    if stdout {
        // A reader that has gone is no error, and the file below is still written.
        super::stdout_line(format_args!("{text}"))?;
    }
    if let Some(path) = file {
        write(path, &text)?;
    }
    Ok(())
}

fn write(path: &Path, text: &str) -> Result<(), Failure> {
    std::fs::write(path, text).map_err(|e| Failure {
        usage: false,
        message: format!("{}: {e}", path.display()),
    })
}

fn overhead(args: OverheadArgs) -> Result<(), Failure> {
    if args.tokens < 2 {
        return Err(Failure::usage("--tokens: must be at least 2"));
    }
    if let Some(url) = &args.endpoint {
        return endpoint_overhead(url, &args);
    }
    let mut engine = LoadedModel::load(&LoadOptions {
        model: args.model.clone(),
        progress: true,
        ..Default::default()
    })?;
    let format = PromptFormat::Chat;
    let (_, prompt) = engine.prompt(&format, &[Message::new("user", &unescape(&args.prompt))])?;
    let params = |stops: StopSet, max_tokens: usize| GenerateParams {
        stops,
        ignore_eos: true,
        max_tokens,
        ..Default::default()
    };
    let none = || StopSet::new(Vec::<String>::new()).expect("an empty set is valid");

    // Warm-up: the first steps of a fresh process are slower (page faults, thread pools).
    engine.generate(
        &prompt,
        None,
        &params(none(), 16),
        &mut stoplab::pipeline::sink::Discard,
    )?;

    // Greedy decoding writes the same text every time, so stops drawn to miss the first run's text miss it
    // in every run; the first run has no stops and is the baseline row.
    outln!(
        args.json,
        "{} tokens generated (greedy, chat format, end tokens ignored), stops that never match",
        args.tokens
    );
    outln!(
        args.json,
        "{:>6}{:>14}{:>12}{:>16}{:>12}{:>12}{:>12}",
        "stops",
        "decode tok/s",
        "ms/token",
        "matcher ns/tok",
        "(median)",
        "(hot loop)",
        "share"
    );
    let (first, first_times) =
        timed_generation(&mut engine, &prompt, &params(none(), args.tokens))?;
    let stream = Stream {
        ids: first.tokens.clone(),
        bytes: first
            .tokens
            .iter()
            .map(|&id| engine.vocab.token_bytes(id).unwrap_or_default().to_vec())
            .collect(),
    };
    let max_stops = args.stops.iter().copied().max().unwrap_or(0);
    let pool = never_matching_stops(CORPUS.as_bytes(), &[&stream.text()], max_stops, 0x0e4d);

    let mut rows = Vec::new();
    let mut baseline = Some((first.clone(), first_times));
    for &n in &args.stops {
        let set = StopSet::new(pool[..n].iter().cloned()).map_err(stoplab::Error::from)?;
        let (out, mut per_token) = match baseline.take_if(|_| n == 0) {
            Some(run) => run,
            None => timed_generation(&mut engine, &prompt, &params(set.clone(), args.tokens))?,
        };
        if out.tokens != first.tokens {
            return Err(Failure {
                usage: false,
                message: format!(
                    "with {n} stops the model wrote different tokens ({}); greedy decoding should repeat itself",
                    out.finish.describe()
                ),
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
        let hot = measure(strategy.as_mut(), &stream, Duration::from_millis(100), 5);
        let share = in_loop_ns / (ms_per_token * 1e6);
        outln!(
            args.json,
            "{n:>6}{:>14.1}{:>12.2}{:>16.0}{:>12.0}{:>12.0}{:>11.5}%",
            t.decode_tokens_per_s,
            ms_per_token,
            in_loop_ns,
            median_ns,
            hot.ns_per_token,
            share * 100.0
        );
        rows.push(json!({
            "stops": n,
            "decode_tokens_per_s": t.decode_tokens_per_s,
            "decode_ms_per_token": ms_per_token,
            "matcher_ns_per_token_in_loop": in_loop_ns,
            "matcher_ns_per_token_in_loop_median": median_ns,
            "matcher_ns_per_token_hot": hot.ns_per_token,
            "matcher_share": share,
        }));
    }
    outln!(
        args.json,
        "matcher ns/tok: a second scanner on the same stops, timed with Instant around each feed inside the \
         generation, mean (with the clock reads and any preemption) and median; (hot loop): the same tokens \
         replayed offline; share: in-loop mean ÷ decode time per token"
    );
    if args.json || args.json_out.is_some() {
        let doc = json!({
            "benchmark": "stop matcher overhead in real decoding",
            "model": engine.path.display().to_string(),
            "tokens": args.tokens,
            "prompt": args.prompt,
            "runs": rows,
        });
        emit_json(&doc, args.json, args.json_out.as_deref())?;
    }
    Ok(())
}

/// One generation with the matcher timed where it runs: a second scanner over the same stop set, fed each
/// token's bytes inside the generation right after the model's step (cold caches and all), with a clock read
/// on either side. The loop's own scanner does the same work on the same bytes.
fn timed_generation(
    engine: &mut LoadedModel,
    prompt: &[u32],
    params: &GenerateParams,
) -> Result<(stoplab::pipeline::sink::Outcome, Vec<Duration>), Failure> {
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

/// `bench overhead --endpoint URL`: the same request with 0..N never-matching stops on a server.
fn endpoint_overhead(url: &str, args: &OverheadArgs) -> Result<(), Failure> {
    use stoplab::client::{Client, ClientOptions};
    if args.rounds == 0 {
        return Err(Failure::usage("--rounds: must be at least 1"));
    }
    let client = Client::new(ClientOptions {
        url: url.into(),
        api_key: args.api_key.clone(),
        model: args.model.clone(),
        timeout: std::time::Duration::from_secs(300),
        retries: 3,
    })
    .map_err(|e| Failure::usage(format!("--endpoint: {e}")))?;
    let rows = stoplab::probe::overhead::measure(
        &client,
        &args.stops,
        args.rounds,
        args.tokens,
        |r, n| {
            eprint!("\rround {}/{}, {n} stops   ", r + 1, args.rounds);
        },
    )?;
    eprintln!();
    let json = serde_json::json!({
        "endpoint": client.base(),
        "prompt": stoplab::probe::overhead::PROMPT,
        "tokens": args.tokens,
        "rounds": args.rounds,
        "requests": client.sent(),
        "rows": rows,
    });
    let mut table = format!(
        "{} tokens per request (greedy, end tokens ignored), {} rounds, stops that never match; {}\n{:>6}{:>14}{:>10}  {}\n",
        args.tokens,
        args.rounds,
        if rows.iter().any(|r| r.server_timing) {
            "the server's own decode timings"
        } else {
            "wall time per token"
        },
        "stops",
        "ms/token",
        "ratio",
        "per round"
    );
    for r in &rows {
        match &r.refused {
            Some(why) if r.ms_per_token.is_empty() => {
                table.push_str(&format!("{:>6}  refused: {why}\n", r.stops));
            }
            _ => table.push_str(&format!(
                "{:>6}{:>14.3}{:>10.3}  {}\n",
                r.stops,
                r.median_ms,
                r.ratio,
                r.ms_per_token
                    .iter()
                    .map(|x| format!("{x:.3}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            )),
        }
    }
    if let Some(path) = &args.json_out {
        std::fs::write(
            path,
            serde_json::to_string_pretty(&json).expect("JSON values serialise"),
        )
        .map_err(|e| Failure::usage(format!("--json-out {}: {e}", path.display())))?;
    }
    if args.json {
        eprint!("{table}");
        say!(
            "{}",
            serde_json::to_string_pretty(&json).expect("JSON values serialise")
        );
    } else {
        say!("{}", table.trim_end());
    }
    Ok(())
}
