//! The four ways of matching stop strings that the benchmark compares, each behind [`StopStrategy`].
//!
//! Every strategy answers exactly what [`StopScanner::feed`] answers (the earliest stop the token completes,
//! the longer one on a tie, then the lower index; and the hold-back), so that the only thing the benchmark
//! measures is how it gets there. The peers' code is reimplemented, not linked: what is copied is the
//! algorithm and its cost per token, in plain Rust with the same substring search (`memchr::memmem`) for all.

use memchr::memmem;

use crate::pipeline::stop::{Scan, StopMatch, StopScanner, StopSet};

use super::StopStrategy;

/// The better of two matches: the one that ends first, then the one that starts first (the longer);
/// `a` (found first, i.e. the lower stop index) on a full tie.
fn earlier(a: Option<StopMatch>, b: StopMatch) -> Option<StopMatch> {
    match a {
        Some(a) if (a.end, a.start) <= (b.end, b.start) => Some(a),
        _ => Some(b),
    }
}

/// llama.cpp server's `find_partial_stop_string`, for every stop: the longest prefix of a stop that the
/// text ends with (the whole stop included, as [`crate::pipeline::stop::naive_hold`] counts it). Cost O(stops × stop
/// length) per token, whatever the length of the text.
fn partial_hold(text: &[u8], stops: &[Vec<u8>]) -> usize {
    let Some(&last) = text.last() else {
        return 0;
    };
    let mut hold = 0;
    for stop in stops {
        for k in (hold + 1..=stop.len().min(text.len())).rev() {
            if stop[k - 1] == last && text.ends_with(&stop[..k]) {
                hold = k;
                break;
            }
        }
    }
    hold
}

/// stoplab's own matcher: the Aho-Corasick DFA of [`crate::pipeline::stop`], one table lookup per byte.
pub struct Stoplab<'s> {
    set: &'s StopSet,
    scanner: StopScanner<'s>,
}

impl<'s> Stoplab<'s> {
    pub fn new(set: &'s StopSet) -> Self {
        Self {
            set,
            scanner: set.scanner(),
        }
    }
}

impl StopStrategy for Stoplab<'_> {
    fn feed(&mut self, _id: u32, bytes: &[u8]) -> Scan {
        self.scanner.feed(bytes)
    }

    fn reset(&mut self) {
        self.scanner = self.set.scanner();
    }
}

/// mistral.rs: after every token, search the whole generated text for every stop. O(stops × text) per token,
/// so a generation costs O(stops × length²). mistral.rs also re-decodes the whole text each step and holds
/// nothing back; here the text is kept as bytes (cheaper than the original) and the hold is computed the
/// llama.cpp way so the answers compare.
///
/// The first match in the whole text is only the first match *of this token* until a match has been
/// reported; like mistral.rs, this strategy is not meant to be fed after its first match.
pub struct FullRescan {
    stops: Vec<Vec<u8>>,
    text: Vec<u8>,
}

impl FullRescan {
    pub fn new(set: &StopSet) -> Self {
        Self {
            stops: set.stops().iter().map(|s| s.as_bytes().to_vec()).collect(),
            text: Vec::new(),
        }
    }
}

impl StopStrategy for FullRescan {
    fn feed(&mut self, _id: u32, bytes: &[u8]) -> Scan {
        self.text.extend_from_slice(bytes);
        let mut matched = None;
        for (i, stop) in self.stops.iter().enumerate() {
            if let Some(start) = memmem::find(&self.text, stop) {
                let m = StopMatch {
                    stop: i,
                    start,
                    end: start + stop.len(),
                };
                matched = earlier(matched, m);
            }
        }
        Scan {
            matched,
            hold: partial_hold(&self.text, &self.stops),
        }
    }

    fn reset(&mut self) {
        self.text.clear();
    }
}

/// llama.cpp's server and vLLM: after every token, search only the new bytes plus, before them, one byte
/// less than the stop's length, for every stop; then look for a partial stop at the end. O(stops × (token +
/// stop length)) per token: flat in the length of the generation, linear in the number of stops.
pub struct TailSearch {
    stops: Vec<Vec<u8>>,
    text: Vec<u8>,
}

impl TailSearch {
    pub fn new(set: &StopSet) -> Self {
        Self {
            stops: set.stops().iter().map(|s| s.as_bytes().to_vec()).collect(),
            text: Vec::new(),
        }
    }
}

impl StopStrategy for TailSearch {
    fn feed(&mut self, _id: u32, bytes: &[u8]) -> Scan {
        let old = self.text.len();
        self.text.extend_from_slice(bytes);
        let mut matched = None;
        if !bytes.is_empty() {
            for (i, stop) in self.stops.iter().enumerate() {
                let from = (old + 1).saturating_sub(stop.len());
                if let Some(at) = memmem::find(&self.text[from..], stop) {
                    let start = from + at;
                    let m = StopMatch {
                        stop: i,
                        start,
                        end: start + stop.len(),
                    };
                    matched = earlier(matched, m);
                }
            }
        }
        Scan {
            matched,
            hold: partial_hold(&self.text, &self.stops),
        }
    }

    fn reset(&mut self) {
        self.text.clear();
    }
}

/// One way a token can hold the end of a stop: it covers the stop's last `covered` bytes and runs
/// `overhang` bytes past it.
#[derive(Clone, Copy, Debug)]
struct End {
    stop: u32,
    overhang: u32,
    covered: u32,
}

/// Hugging Face transformers' `StopStringCriteria`: tables computed once over the whole vocabulary say,
/// for every token and stop, where the token can sit inside the stop and how it can end it; each step then
/// walks back over the last token ids only, with no decoding. Its set-up is O(vocabulary × stops × (stop +
/// token length)); [`TokenTables::new`] is that cost.
///
/// transformers keeps dense tensors (vocabulary × stops × positions) and evaluates every stop every step;
/// this rendering keeps, per token, only the entries that exist, so its per-token cost is the number of
/// (stop, position) pairs the last token takes part in. transformers does not hold anything back; the hold
/// here comes from the same tables (the longest chain of tokens that spells a prefix of a stop).
pub struct TokenTables {
    stop_lens: Vec<u32>,
    token_lens: Vec<u32>,
    /// Per token id, the ways it can end a stop, best first: earliest end (largest overhang), then the
    /// longer stop, then the lower index.
    ends: Vec<Vec<End>>,
    /// Per token id, sorted `(stop, e)`: the token can stand for `stop[e - len..e]` (cut at the stop's start
    /// if `e < len`).
    inside: Vec<Vec<(u32, u32)>>,
    /// Ids of the non-empty tokens fed so far.
    history: Vec<u32>,
    pos: usize,
    hold: usize,
}

impl TokenTables {
    /// Builds the tables for `stops` over a vocabulary given as the bytes of every token id.
    pub fn new(set: &StopSet, vocab: &[impl AsRef<[u8]>]) -> Self {
        let stops: Vec<&[u8]> = set.stops().iter().map(|s| s.as_bytes()).collect();
        let mut ends = vec![Vec::new(); vocab.len()];
        let mut inside = vec![Vec::new(); vocab.len()];
        for (id, token) in vocab.iter().enumerate() {
            let token = token.as_ref();
            let t = token.len();
            if t == 0 {
                continue;
            }
            for (si, stop) in stops.iter().enumerate() {
                let l = stop.len();
                // The token occupies [e - t, e) in the stop's coordinates; the overlap must be non-empty.
                for e in 1..l + t {
                    let lo = e.saturating_sub(t);
                    let hi = e.min(l);
                    let off = lo + t - e; // index in the token of stop byte `lo`
                    if token[off] != stop[lo] || token[off..off + hi - lo] != stop[lo..hi] {
                        continue;
                    }
                    if e >= l {
                        ends[id].push(End {
                            stop: si as u32,
                            overhang: (e - l) as u32,
                            covered: (l - lo) as u32,
                        });
                    }
                    if e <= l {
                        inside[id].push((si as u32, e as u32));
                    }
                }
            }
            ends[id].sort_by_key(|x: &End| {
                (
                    std::cmp::Reverse(x.overhang),
                    std::cmp::Reverse(stops[x.stop as usize].len()),
                    x.stop,
                )
            });
            inside[id].sort_unstable();
        }
        Self {
            stop_lens: stops.iter().map(|s| s.len() as u32).collect(),
            token_lens: vocab.iter().map(|t| t.as_ref().len() as u32).collect(),
            ends,
            inside,
            history: Vec::new(),
            pos: 0,
            hold: 0,
        }
    }

    /// Whether the tokens before `history[k]` end with the first `need` bytes of `stop`.
    fn chain(&self, stop: u32, mut need: u32, mut k: usize) -> bool {
        while need > 0 {
            if k == 0 {
                return false;
            }
            k -= 1;
            let id = self.history[k] as usize;
            if self.inside[id].binary_search(&(stop, need)).is_err() {
                return false;
            }
            need = need.saturating_sub(self.token_lens[id]);
        }
        true
    }
}

impl StopStrategy for TokenTables {
    fn feed(&mut self, id: u32, bytes: &[u8]) -> Scan {
        let idx = id as usize;
        debug_assert_eq!(self.token_lens.get(idx).copied(), Some(bytes.len() as u32));
        let t = self.token_lens[idx];
        if t == 0 {
            return Scan {
                matched: None,
                hold: self.hold,
            };
        }
        self.history.push(id);
        self.pos += t as usize;
        let k = self.history.len() - 1;

        let mut matched = None;
        for end in &self.ends[idx] {
            let l = self.stop_lens[end.stop as usize];
            if self.chain(end.stop, l - end.covered, k) {
                let stop_end = self.pos - end.overhang as usize;
                matched = Some(StopMatch {
                    stop: end.stop as usize,
                    start: stop_end - l as usize,
                    end: stop_end,
                });
                break;
            }
        }

        let mut hold = 0;
        for &(stop, e) in &self.inside[idx] {
            if e as usize > hold && self.chain(stop, e.saturating_sub(t), k) {
                hold = e as usize;
            }
        }
        self.hold = hold;
        Scan { matched, hold }
    }

    fn reset(&mut self) {
        self.history.clear();
        self.pos = 0;
        self.hold = 0;
    }
}
