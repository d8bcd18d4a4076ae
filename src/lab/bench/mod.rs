//! Stop matching measured: stoplab's matcher and the peers' strategies behind one trait, the workload they
//! are measured on, and the timing loop that `stoplab bench stops` and the criterion benches share.
//!
//! What each `stoplab bench` subcommand measures, and how its figures read, has a file of its own on top of
//! this one: [`stops`] (the strategies compared), [`overhead`] (the matcher's share of real decoding),
//! [`decode`] (the model's own speed) and [`bandwidth`] (the memory read rate that bounds it); [`svg`] draws
//! the chart.
//!
//! The contract every [`StopStrategy`] keeps is [`crate::pipeline::stop`]'s: fed one token's bytes at a time, it
//! returns the earliest stop those bytes complete (of two ending on the same byte the longer, then the lower
//! index) and how many trailing bytes must be held back. Every strategy is held to
//! [`crate::pipeline::stop::naive_first_match`] and [`crate::pipeline::stop::naive_hold`] by the property test in
//! `tests/strategies.rs`; a figure counts only for a strategy that agrees with them. A strategy need not be
//! fed after its first match (a generation ends there).
//!
//! The workload is real token streams: [`CORPUS`] (the Apache License 2.0, plain English prose) tokenized
//! with the model's tokenizer, repeated to the length wanted and ended with [`END_STOP`]. Stop sets are drawn
//! from the same text and then altered so that they never match it; the "completing" case swaps one of them
//! for [`END_STOP`], which the last token completes.
//!
//! ```
//! use stoplab::lab::bench::{Strategy, StopStrategy};
//! use stoplab::pipeline::stop::{naive_first_match, StopSet};
//!
//! let set = StopSet::new(["\nuser:", "###"]).unwrap();
//! let vocab: Vec<&[u8]> = vec![b" Berlin.", b"\n", b"user", b":"];
//! for strategy in Strategy::ALL {
//!     let mut s = strategy.build(&set, &vocab);
//!     let steps: Vec<_> = (0..4u32).map(|id| s.feed(id, vocab[id as usize])).collect();
//!     assert_eq!((steps[1].hold, steps[2].hold), (1, 5)); // "\n", then "\nuser", may begin a stop
//!     assert_eq!(steps[3].matched, naive_first_match(b" Berlin.\nuser:", set.stops()));
//! }
//! ```

pub mod bandwidth;
pub mod decode;
pub mod overhead;
pub mod speculate;
pub mod stops;
mod strategies;
pub mod svg;

use std::time::{Duration, Instant};

pub use strategies::{FullRescan, Stoplab, TailSearch, TokenTables};

use crate::Error;
use crate::pipeline::stop::{Scan, StopMatch, StopSet};
use crate::pipeline::tokenizer::Vocab;

/// Why a measurement gave no figures.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A strategy reported other matches than the reference: its figures would not count.
    #[error(
        "{strategy} with {stops} stops found {found:?} where {expected:?} was expected; its figures do not count"
    )]
    WrongMatches {
        strategy: &'static str,
        stops: usize,
        found: Vec<(usize, StopMatch)>,
        expected: Vec<(usize, StopMatch)>,
    },
    /// Greedy decoding wrote other tokens with stops than without: the runs do not compare.
    #[error(
        "with {stops} stops the model wrote different tokens ({finish}); greedy decoding should repeat itself"
    )]
    NotRepeated { stops: usize, finish: String },
    #[error(transparent)]
    Stoplab(#[from] Error),
}

/// A way of matching stop strings on a stream of tokens.
pub trait StopStrategy {
    /// Feeds the next generated token (its id and the bytes it stands for) and reports the earliest stop
    /// these bytes complete and the bytes to hold back.
    fn feed(&mut self, id: u32, bytes: &[u8]) -> Scan;
    /// Starts a new generation, keeping whatever was precomputed for the stop set.
    fn reset(&mut self);
}

/// The strategies compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Strategy {
    /// stoplab's Aho-Corasick DFA ([`crate::pipeline::stop::StopScanner`]).
    Stoplab,
    /// Every stop searched in the whole text after every token (mistral.rs).
    FullRescan,
    /// Every stop searched in the new bytes plus its length before them (llama.cpp server, vLLM).
    TailSearch,
    /// Tables over the vocabulary, no decoding per step (Hugging Face transformers' `StopStringCriteria`).
    TokenTables,
}

impl Strategy {
    pub const ALL: [Strategy; 4] = [
        Self::Stoplab,
        Self::TailSearch,
        Self::TokenTables,
        Self::FullRescan,
    ];

    /// A short name for tables, files and bench ids.
    pub fn name(self) -> &'static str {
        match self {
            Self::Stoplab => "stoplab",
            Self::FullRescan => "full-rescan",
            Self::TailSearch => "tail-search",
            Self::TokenTables => "token-tables",
        }
    }

    /// Whose strategy it is.
    pub fn peer(self) -> &'static str {
        match self {
            Self::Stoplab => "stoplab (Aho-Corasick DFA)",
            Self::FullRescan => "mistral.rs",
            Self::TailSearch => "llama.cpp server, vLLM",
            Self::TokenTables => "HF transformers StopStringCriteria",
        }
    }

    /// Builds the strategy for a stop set. `vocab` is the bytes of every token id; only
    /// [`Strategy::TokenTables`] reads it, and that set-up is the strategy's own cost.
    pub fn build<'a>(
        self,
        set: &'a StopSet,
        vocab: &[impl AsRef<[u8]>],
    ) -> Box<dyn StopStrategy + 'a> {
        match self {
            Self::Stoplab => Box::new(Stoplab::new(set)),
            Self::FullRescan => Box::new(FullRescan::new(set)),
            Self::TailSearch => Box::new(TailSearch::new(set)),
            Self::TokenTables => Box::new(TokenTables::new(set, vocab)),
        }
    }
}

/// The text the token streams are made of.
pub const CORPUS: &str = include_str!("corpus.txt");

/// The stop every stream ends with, found on its last token in the "completing" case.
pub const END_STOP: &str = "\nuser:";

/// A generation replayed: token ids and the bytes each stands for.
#[derive(Clone, Debug)]
pub struct Stream {
    pub ids: Vec<u32>,
    pub bytes: Vec<Vec<u8>>,
}

impl Stream {
    /// `n` tokens: the tokenized corpus repeated, ending with the tokens of [`END_STOP`].
    pub fn new(corpus_ids: &[u32], end_ids: &[u32], vocab: &[impl AsRef<[u8]>], n: usize) -> Self {
        assert!(n > end_ids.len() && !corpus_ids.is_empty());
        let ids: Vec<u32> = corpus_ids
            .iter()
            .cycle()
            .take(n - end_ids.len())
            .chain(end_ids)
            .copied()
            .collect();
        let bytes = ids
            .iter()
            .map(|&id| vocab[id as usize].as_ref().to_vec())
            .collect();
        Self { ids, bytes }
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Total bytes.
    pub fn byte_len(&self) -> usize {
        self.bytes.iter().map(Vec::len).sum()
    }

    /// The whole text, as bytes.
    pub fn text(&self) -> Vec<u8> {
        self.bytes.concat()
    }

    /// Feeds every token to `strategy` (after a reset) and returns the matches it reported, with the index
    /// of the token each came on.
    pub fn run(&self, strategy: &mut dyn StopStrategy) -> Vec<(usize, StopMatch)> {
        strategy.reset();
        let mut found = Vec::new();
        for (i, (&id, bytes)) in self.ids.iter().zip(&self.bytes).enumerate() {
            if let Some(m) = strategy.feed(id, bytes).matched {
                found.push((i, m));
            }
        }
        found
    }
}

/// Everything the stop benchmarks run on: the vocabulary, a stream per generation length and a pool of
/// never-matching stops (a set of `n` stops is the first `n` of the pool, so the sets are nested).
pub struct Workload {
    /// The bytes of every token id.
    pub vocab: Vec<Vec<u8>>,
    pub streams: Vec<Stream>,
    pub stops: Vec<String>,
}

impl Workload {
    /// Tokenizes [`CORPUS`] and [`END_STOP`] with `vocab` and draws `max_stops` stops that match none of the
    /// streams.
    pub fn new(vocab: &Vocab, lengths: &[usize], max_stops: usize) -> Result<Self, Error> {
        let bytes: Vec<Vec<u8>> = (0..vocab.len() as u32)
            .map(|id| vocab.token_bytes(id).unwrap_or_default().to_vec())
            .collect();
        let corpus = vocab.encode(CORPUS, false)?;
        let end = vocab.encode(END_STOP, false)?;
        let streams: Vec<Stream> = lengths
            .iter()
            .map(|&n| Stream::new(&corpus, &end, &bytes, n))
            .collect();
        let texts: Vec<Vec<u8>> = streams.iter().map(Stream::text).collect();
        let avoid: Vec<&[u8]> = texts.iter().map(Vec::as_slice).collect();
        let stops = never_matching_stops(CORPUS.as_bytes(), &avoid, max_stops, 0x5709);
        Ok(Self {
            vocab: bytes,
            streams,
            stops,
        })
    }

    /// The stream of `n` tokens.
    pub fn stream(&self, n: usize) -> &Stream {
        self.streams
            .iter()
            .find(|s| s.len() == n)
            .expect("a stream of every length asked for")
    }

    /// `n` stops that never match; with `completing`, the last of them is [`END_STOP`] instead.
    pub fn stop_set(&self, n: usize, completing: bool) -> StopSet {
        let mut stops = self.stops[..n].to_vec();
        if completing {
            stops[n - 1] = END_STOP.to_string();
        }
        StopSet::new(stops).expect("drawn stops are non-empty")
    }

    /// The matches a strategy must report on `stream` with [`Workload::stop_set`]`(n, completing)`: none,
    /// or [`END_STOP`] on the last token.
    pub fn expected(&self, stream: &Stream, n: usize, completing: bool) -> Vec<(usize, StopMatch)> {
        if !completing {
            return Vec::new();
        }
        let end = stream.byte_len();
        vec![(
            stream.len() - 1,
            StopMatch {
                stop: n - 1,
                start: end - END_STOP.len(),
                end,
            },
        )]
    }
}

/// `n` distinct stop strings that occur in none of `avoid`: pieces of `text`, 3 to 12 bytes long, whose last
/// byte is replaced by a symbol. Stops that look like the text make the matchers work (their prefixes match
/// often, so bytes are held back and partial matches are followed) without ever completing.
pub fn never_matching_stops(text: &[u8], avoid: &[&[u8]], n: usize, seed: u64) -> Vec<String> {
    const LAST: &[u8] = b"~|^`@#%$}{<>";
    let finder = |s: &[u8]| avoid.iter().any(|t| memchr::memmem::find(t, s).is_some());
    assert!(
        text.len() > 12,
        "stops are drawn from a text of more than 12 bytes"
    );
    let mut rng = crate::rng::SplitMix::new(seed);
    let mut stops: Vec<String> = Vec::with_capacity(n);
    let mut seen = std::collections::HashSet::new();
    while stops.len() < n {
        let len = rng.range(3, 13);
        let start = rng.range(0, text.len() - len);
        let mut stop = text[start..start + len - 1].to_vec();
        stop.push(LAST[rng.range(0, LAST.len())]);
        let Ok(s) = String::from_utf8(stop) else {
            continue;
        };
        if !finder(s.as_bytes()) && seen.insert(s.clone()) {
            stops.push(s);
        }
    }
    stops
}

/// One timed run of a strategy on a stream.
#[derive(Clone, Debug)]
pub struct Measurement {
    pub ns_per_token: f64,
    pub ns_per_byte: f64,
    /// Passes over the whole stream that were timed.
    pub passes: usize,
    /// The matches the last pass found.
    pub found: Vec<(usize, StopMatch)>,
}

/// Times `strategy` over `stream`: passes are repeated for at least `budget`, in rounds, and the fastest
/// round counts (the least disturbed by other work on the machine).
pub fn measure(
    strategy: &mut dyn StopStrategy,
    stream: &Stream,
    budget: Duration,
    rounds: usize,
) -> Measurement {
    let found = stream.run(strategy);
    let t = Instant::now();
    let _ = stream.run(strategy);
    let one = t.elapsed().max(Duration::from_nanos(1));
    let per_round = ((budget.as_secs_f64() / rounds as f64) / one.as_secs_f64()).ceil() as usize;
    let per_round = per_round.max(1);
    let mut best = f64::INFINITY;
    for _ in 0..rounds {
        let t = Instant::now();
        for _ in 0..per_round {
            std::hint::black_box(feed_all(strategy, stream));
        }
        best = best.min(t.elapsed().as_secs_f64() / per_round as f64);
    }
    Measurement {
        ns_per_token: best * 1e9 / stream.len() as f64,
        ns_per_byte: best * 1e9 / stream.byte_len().max(1) as f64,
        passes: per_round * rounds,
        found,
    }
}

/// The timed loop: every token fed, the number of matches returned so the work cannot be optimised away.
pub fn feed_all(strategy: &mut dyn StopStrategy, stream: &Stream) -> usize {
    strategy.reset();
    let mut n = 0;
    for (&id, bytes) in stream.ids.iter().zip(&stream.bytes) {
        n += strategy.feed(id, bytes).matched.is_some() as usize;
    }
    n
}
