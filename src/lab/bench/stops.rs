//! `stoplab bench stops`: every [`Strategy`] timed on the [`Workload`]'s streams, by number of stops and by
//! generation length, each figure counted only if the strategy found what the reference finds; and how the
//! result reads: the tables, the JSON document and the chart.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::lab::bench::svg::{Series, line_chart};
use crate::lab::bench::{BenchError, StopStrategy, Strategy, Stream, Workload, measure};
use crate::pipeline::stop::StopMatch;
use crate::pipeline::tokenizer::Vocab;

/// What to measure.
#[derive(Clone, Debug)]
pub struct StopsOptions {
    /// Numbers of stop strings of the first table (each at least 1).
    pub stops: Vec<usize>,
    /// Generation length of the first table.
    pub tokens: usize,
    /// Generation lengths of the second table (each at least 8), at `length_stops` stops.
    pub lengths: Vec<usize>,
    pub length_stops: usize,
    /// Measuring time per cell (the fastest of 5 rounds counts).
    pub ms: u64,
    /// A cell whose first pass takes longer is skipped.
    pub max_pass_ms: u64,
}

/// One cell of the comparison.
pub struct Cell {
    pub strategy: Strategy,
    pub stops: usize,
    pub tokens: usize,
    /// None: skipped, a single pass would take too long.
    pub ns_per_token: Option<f64>,
    pub ns_per_byte: Option<f64>,
    pub setup_ms: f64,
}

impl Cell {
    fn to_json(&self) -> Value {
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

/// How many times faster stoplab's matcher was than a peer's on one workload.
pub struct Speedup {
    pub vs: Strategy,
    pub stops: usize,
    pub tokens: usize,
    pub speedup: f64,
}

/// The peers, in the order the speed-ups are listed.
const PEERS: [Strategy; 3] = [
    Strategy::TailSearch,
    Strategy::TokenTables,
    Strategy::FullRescan,
];

/// Everything measured.
pub struct StopsReport {
    pub options: StopsOptions,
    /// The first table's stop counts, sorted, each once.
    pub stop_counts: Vec<usize>,
    pub bytes_per_token: f64,
    pub by_stops: Vec<Cell>,
    pub by_length: Vec<Cell>,
    pub speedups: Vec<Speedup>,
}

/// Measures both tables on token streams made with `vocab`.
pub fn run(vocab: &Vocab, options: &StopsOptions) -> Result<StopsReport, BenchError> {
    let mut lengths = options.lengths.clone();
    lengths.push(options.tokens);
    lengths.sort_unstable();
    lengths.dedup();
    let max_stops = options
        .stops
        .iter()
        .copied()
        .chain([options.length_stops])
        .max()
        .unwrap_or(1);
    let w = Workload::new(vocab, &lengths, max_stops)?;
    let stream = w.stream(options.tokens);
    let bytes_per_token = stream.byte_len() as f64 / stream.len() as f64;

    let mut stop_counts = options.stops.clone();
    stop_counts.sort_unstable();
    stop_counts.dedup();
    let by_stops = sweep(&w, stream, &stop_counts, options)?;
    let mut by_length = Vec::new();
    for &n in &options.lengths {
        by_length.extend(sweep(&w, w.stream(n), &[options.length_stops], options)?);
    }

    let ns = |cells: &[Cell], s: Strategy, stops: usize, tokens: usize| {
        cells
            .iter()
            .find(|c| c.strategy == s && c.stops == stops && c.tokens == tokens)
            .and_then(|c| c.ns_per_token)
    };
    let mut speedups = Vec::new();
    for vs in PEERS {
        let mut push = |cells: &[Cell], stops: usize, tokens: usize| {
            if let (Some(a), Some(b)) = (
                ns(cells, Strategy::Stoplab, stops, tokens),
                ns(cells, vs, stops, tokens),
            ) {
                speedups.push(Speedup {
                    vs,
                    stops,
                    tokens,
                    speedup: b / a,
                });
            }
        };
        for &n in &stop_counts {
            push(&by_stops, n, options.tokens);
        }
        for &t in &options.lengths {
            push(&by_length, options.length_stops, t);
        }
    }
    Ok(StopsReport {
        options: options.clone(),
        stop_counts,
        bytes_per_token,
        by_stops,
        by_length,
        speedups,
    })
}

/// Measures every strategy on `stream` for each stop count. A cell is skipped when a first pass over the
/// stream does not finish within `max_pass_ms` (full rescan grows with stops × length²), or when a smaller
/// stop count of the same strategy was already skipped.
fn sweep(
    w: &Workload,
    stream: &Stream,
    stop_counts: &[usize],
    options: &StopsOptions,
) -> Result<Vec<Cell>, BenchError> {
    let mut cells = Vec::new();
    let limit = Duration::from_millis(options.max_pass_ms);
    for strategy in Strategy::ALL {
        let mut too_slow = false;
        for &n in stop_counts {
            let set = w.stop_set(n, false);
            let t = Instant::now();
            let mut s = strategy.build(&set, &w.vocab);
            let setup_ms = t.elapsed().as_secs_f64() * 1e3;
            too_slow = too_slow || !finishes_within(s.as_mut(), stream, limit);
            let mut cell = Cell {
                strategy,
                stops: n,
                tokens: stream.len(),
                ns_per_token: None,
                ns_per_byte: None,
                setup_ms,
            };
            if !too_slow {
                let m = measure(s.as_mut(), stream, Duration::from_millis(options.ms), 5);
                check(strategy, n, m.found, w.expected(stream, n, false))?;
                // The same strategy must also find the stop that the last token completes.
                if strategy != Strategy::TokenTables {
                    let set = w.stop_set(n, true);
                    let mut s = strategy.build(&set, &w.vocab);
                    check(
                        strategy,
                        n,
                        stream.run(s.as_mut()),
                        w.expected(stream, n, true),
                    )?;
                }
                cell.ns_per_token = Some(m.ns_per_token);
                cell.ns_per_byte = Some(m.ns_per_byte);
            }
            cells.push(cell);
        }
    }
    Ok(cells)
}

/// Whether one pass over the stream takes less than `limit` (given up as soon as it has taken longer).
fn finishes_within(strategy: &mut dyn StopStrategy, stream: &Stream, limit: Duration) -> bool {
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
    stops: usize,
    found: Vec<(usize, StopMatch)>,
    expected: Vec<(usize, StopMatch)>,
) -> Result<(), BenchError> {
    if found == expected {
        return Ok(());
    }
    Err(BenchError::WrongMatches {
        strategy: strategy.name(),
        stops,
        found,
        expected,
    })
}

impl StopsReport {
    /// The two tables and the speed-ups, as the terminal shows them.
    pub fn tables(&self) -> String {
        let o = &self.options;
        let fmt = |v: Option<f64>| v.map_or("skipped".to_string(), |v| format!("{v:.0}"));
        let mut out = String::new();
        let mut w = |args: std::fmt::Arguments<'_>| out.write_fmt(args).expect("a String takes it");
        w(format_args!(
            "ns per token, {}-token generations ({:.2} bytes/token), stops that never match\n",
            o.tokens, self.bytes_per_token
        ));
        w(format_args!("{:<14}{:<36}", "strategy", "as in"));
        for n in &self.stop_counts {
            w(format_args!("{n:>10}"));
        }
        w(format_args!("\n"));
        for strategy in Strategy::ALL {
            w(format_args!(
                "{:<14}{:<36}",
                strategy.name(),
                strategy.peer()
            ));
            for c in self.by_stops.iter().filter(|c| c.strategy == strategy) {
                w(format_args!("{:>10}", fmt(c.ns_per_token)));
            }
            w(format_args!("\n"));
        }
        w(format_args!(
            "{:<50}",
            "token-tables set-up over the vocabulary (ms)"
        ));
        for c in self
            .by_stops
            .iter()
            .filter(|c| c.strategy == Strategy::TokenTables)
        {
            w(format_args!("{:>10.0}", c.setup_ms));
        }
        w(format_args!("\n\n"));

        w(format_args!(
            "ns per token with {} stops, by generation length\n",
            o.length_stops
        ));
        w(format_args!("{:<14}", "strategy"));
        for n in &o.lengths {
            w(format_args!("{:>10}", format!("{n} tok")));
        }
        w(format_args!("\n"));
        for strategy in Strategy::ALL {
            w(format_args!("{:<14}", strategy.name()));
            for &n in &o.lengths {
                let c = self
                    .by_length
                    .iter()
                    .find(|c| c.strategy == strategy && c.tokens == n);
                w(format_args!("{:>10}", fmt(c.and_then(|c| c.ns_per_token))));
            }
            w(format_args!("\n"));
        }
        w(format_args!("\n"));

        w(format_args!(
            "stoplab's speed-up (peer ns/token ÷ stoplab ns/token):\n"
        ));
        for peer in PEERS {
            let line: Vec<String> = self
                .speedups
                .iter()
                .filter(|r| r.vs == peer)
                .map(|r| {
                    let x = r.speedup;
                    let digits = if x < 10.0 { 1 } else { 0 };
                    format!("{}s×{}t {x:.digits$}x", r.stops, r.tokens)
                })
                .collect();
            w(format_args!(
                "  vs {:<13} {}\n",
                peer.name(),
                line.join(", ")
            ));
        }
        out
    }

    /// Every measurement; `tokenizer` is the file whose tokenizer made the streams.
    pub fn to_json(&self, tokenizer: &Path) -> Value {
        json!({
            "benchmark": "stop matching per token",
            "stream": {
                "source": "Apache License 2.0 text, repeated, ending with \"\\nuser:\"",
                "tokenizer": tokenizer.display().to_string(),
                "tokens": self.options.tokens,
                "bytes_per_token": self.bytes_per_token,
            },
            "stops_never_match": true,
            "by_stops": self.by_stops.iter().map(Cell::to_json).collect::<Vec<_>>(),
            "by_length": self.by_length.iter().map(Cell::to_json).collect::<Vec<_>>(),
            "speedups": self.speedups.iter().map(|r| json!({
                "vs": r.vs.name(), "stops": r.stops, "tokens": r.tokens, "speedup": r.speedup,
            })).collect::<Vec<_>>(),
        })
    }

    /// An SVG chart of ns/token against the number of stops, one line per strategy.
    pub fn chart(&self) -> String {
        let series: Vec<Series> = Strategy::ALL
            .iter()
            .map(|&s| Series {
                name: s.name().to_string(),
                points: self
                    .by_stops
                    .iter()
                    .filter(|c| c.strategy == s)
                    .filter_map(|c| Some((c.stops as f64, c.ns_per_token?)))
                    .collect(),
            })
            .collect();
        let title = format!(
            "Stop matching, {}-token generations (lower is better)",
            self.options.tokens
        );
        line_chart(&title, "number of stop strings", "ns per token", &series)
    }
}
