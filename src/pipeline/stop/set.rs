//! The compiled stop strings and their streaming scanner.
//!
//! Matching is an Aho-Corasick DFA walked one byte at a time, so the cost per byte is a table lookup,
//! independent of the number of stops and of how much has been generated. The scanner answers two questions
//! per token: which stop (if any) these bytes complete first, and how many trailing bytes may still begin one.

use aho_corasick::automaton::{Automaton, StateID};
use aho_corasick::dfa::DFA;
use std::sync::Arc;

use aho_corasick::{Anchored, MatchKind, StartKind};

/// Why a set of stop strings was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StopError {
    #[error("stop string #{index} {}", StopError::EMPTY)]
    Empty { index: usize },
    #[error("stop strings could not be compiled: {0}")]
    Build(String),
}

impl StopError {
    /// Why an empty stop string is refused, for a front end that names the stop its own way.
    pub const EMPTY: &str =
        "is empty; an empty stop would match at once, before the first byte: remove it";
}

/// A compiled set of stop strings, shared by every generation that uses it (a clone is a reference count).
#[derive(Clone, Debug)]
pub struct StopSet {
    inner: Arc<Compiled>,
}

#[derive(Debug)]
struct Compiled {
    stops: Vec<String>,
    dfa: Option<DFA>,
    start: Option<StateID>,
    /// Depth of every DFA state (length of the stop prefix it stands for), indexed by `sid >> shift`.
    depth: Vec<u32>,
    shift: u32,
}

/// A stop string found in the generated text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StopMatch {
    /// Index of the stop in the list it was given in.
    pub stop: usize,
    /// Byte offset of the first byte of the stop in the generated text.
    pub start: usize,
    /// Byte offset just past its last byte.
    pub end: usize,
}

/// What one token's bytes did to the scanner.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Scan {
    /// The earliest stop completed by these bytes, if any.
    pub matched: Option<StopMatch>,
    /// Number of trailing bytes of the text so far that could still begin a stop.
    pub hold: usize,
}

impl StopSet {
    /// Compiles a set of stop strings. An empty list is allowed and never matches; an empty string is an error.
    pub fn new<I, S>(stops: I) -> Result<Self, StopError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let stops: Vec<String> = stops.into_iter().map(Into::into).collect();
        if let Some(index) = stops.iter().position(String::is_empty) {
            return Err(StopError::Empty { index });
        }
        if stops.is_empty() {
            return Ok(Self::from(Compiled {
                stops,
                dfa: None,
                start: None,
                depth: Vec::new(),
                shift: 0,
            }));
        }
        let dfa = DFA::builder()
            .match_kind(MatchKind::Standard)
            .start_kind(StartKind::Unanchored)
            .prefilter(false)
            .build(&stops)
            .map_err(|e| StopError::Build(e.to_string()))?;
        let start = dfa
            .start_state(Anchored::No)
            .map_err(|e| StopError::Build(e.to_string()))?;
        let (depth, shift) = state_depths(&dfa, start);
        Ok(Self::from(Compiled {
            stops,
            dfa: Some(dfa),
            start: Some(start),
            depth,
            shift,
        }))
    }

    /// The stop strings, in the order given.
    pub fn stops(&self) -> &[String] {
        &self.inner.stops
    }

    pub fn is_empty(&self) -> bool {
        self.inner.stops.is_empty()
    }

    /// A fresh scanner for one generation.
    pub fn scanner(&self) -> StopScanner<'_> {
        StopScanner {
            set: self,
            state: self.start(),
        }
    }

    /// The state before any byte, for a caller that keeps its own [`ScanState`] (an owned scanner).
    pub fn start(&self) -> ScanState {
        ScanState {
            sid: self.inner.start,
            pos: 0,
        }
    }

    /// The state before any byte, for a scan that begins at byte `pos` of the generated text (after a
    /// stretch the stops do not see: a reasoning marker): matches report offsets from the text's start.
    pub fn start_at(&self, pos: usize) -> ScanState {
        ScanState {
            sid: self.inner.start,
            pos,
        }
    }

    /// Feeds the next bytes of the generated text to `state` and reports the earliest stop they complete:
    /// what [`StopScanner::feed`] does, for a caller that owns the set and the state.
    pub fn feed(&self, state: &mut ScanState, bytes: &[u8]) -> Scan {
        let c = &*self.inner;
        let (Some(dfa), Some(mut sid)) = (c.dfa.as_ref(), state.sid) else {
            state.pos += bytes.len();
            return Scan::default();
        };
        let mut matched = None;
        for (i, &b) in bytes.iter().enumerate() {
            sid = dfa.next_state(Anchored::No, sid, b);
            if matched.is_none() && dfa.is_match(sid) {
                let end = state.pos + i + 1;
                // Every pattern ending here is listed; the longest starts earliest. The closure gets its own
                // copy of the state: borrowing `sid` would keep it in memory through the whole byte loop
                // (measured: twice the time per token).
                let at = sid;
                let pid = (0..dfa.match_len(at))
                    .map(move |k| dfa.match_pattern(at, k))
                    .max_by_key(|&p| (dfa.pattern_len(p), std::cmp::Reverse(p)))
                    .expect("a match state has at least one pattern");
                let len = dfa.pattern_len(pid);
                matched = Some(StopMatch {
                    stop: pid.as_usize(),
                    start: end - len,
                    end,
                });
            }
        }
        state.pos += bytes.len();
        state.sid = Some(sid);
        Scan {
            matched,
            hold: c.depth[sid.as_usize() >> c.shift] as usize,
        }
    }
}

impl From<Compiled> for StopSet {
    fn from(c: Compiled) -> Self {
        Self { inner: Arc::new(c) }
    }
}

/// Breadth-first search from the start state: in an Aho-Corasick DFA the state reached after reading `w` is
/// the longest suffix of `w` that is a prefix of some pattern, and the shortest input reaching the state of
/// prefix `p` is `p` itself, so the BFS distance of a state is exactly its depth. DFA state ids are
/// premultiplied by a power-of-two stride; dividing it out keeps the table as small as the automaton.
fn state_depths(dfa: &DFA, start: StateID) -> (Vec<u32>, u32) {
    use std::collections::{HashMap, VecDeque};
    let mut seen: HashMap<StateID, u32> = HashMap::from([(start, 0)]);
    let mut queue = VecDeque::from([start]);
    while let Some(sid) = queue.pop_front() {
        let d = seen[&sid];
        for byte in 0..=255u8 {
            let next = dfa.next_state(Anchored::No, sid, byte);
            if let std::collections::hash_map::Entry::Vacant(e) = seen.entry(next) {
                e.insert(d + 1);
                queue.push_back(next);
            }
        }
    }
    let gcd = seen.keys().map(|s| s.as_usize()).fold(0, gcd);
    let shift = if gcd == 0 { 0 } else { gcd.trailing_zeros() };
    let max = seen
        .keys()
        .map(|s| s.as_usize() >> shift)
        .max()
        .unwrap_or(0);
    let mut depth = vec![0u32; max + 1];
    for (sid, d) in seen {
        depth[sid.as_usize() >> shift] = d;
    }
    (depth, shift)
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// Where a scan stands: the DFA state and the bytes fed so far.
#[derive(Clone, Copy, Debug)]
pub struct ScanState {
    sid: Option<StateID>,
    pos: usize,
}

impl ScanState {
    /// Bytes fed so far.
    pub fn position(&self) -> usize {
        self.pos
    }
}

/// The matching state of one generation: feed it each token's bytes in order.
#[derive(Clone, Debug)]
pub struct StopScanner<'s> {
    set: &'s StopSet,
    state: ScanState,
}

impl StopScanner<'_> {
    /// Feeds the next bytes of the generated text (one token's worth, or any other cut) and reports the
    /// earliest stop they complete. The scanner stays usable after a match (a caller may ignore a match,
    /// as `min_tokens` does, and go on).
    pub fn feed(&mut self, bytes: &[u8]) -> Scan {
        self.set.feed(&mut self.state, bytes)
    }

    /// Bytes fed so far.
    pub fn position(&self) -> usize {
        self.state.pos
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stops: &[&str], tokens: &[&str]) -> (Option<StopMatch>, Vec<usize>) {
        let set = StopSet::new(stops.iter().copied()).unwrap();
        let mut scan = set.scanner();
        let mut holds = Vec::new();
        for t in tokens {
            let s = scan.feed(t.as_bytes());
            holds.push(s.hold);
            if s.matched.is_some() {
                return (s.matched, holds);
            }
        }
        (None, holds)
    }

    #[test]
    fn stop_spanning_three_tokens_is_found_on_the_last() {
        let (m, holds) = run(&["\nuser:"], &[" Berlin", ".", "\n", "user", ":"]);
        assert_eq!(
            m,
            Some(StopMatch {
                stop: 0,
                start: 8,
                end: 14
            })
        );
        assert_eq!(holds[..4], [0, 0, 1, 5]);
    }

    #[test]
    fn token_running_past_the_stop_end_matches() {
        let (m, _) = run(&["###"], &["ab", "c###def"]);
        assert_eq!(
            m,
            Some(StopMatch {
                stop: 0,
                start: 3,
                end: 6
            })
        );
    }

    #[test]
    fn earliest_ending_stop_wins_whatever_the_list_order() {
        let (m, _) = run(&["world", "lo w"], &["hello world"]);
        assert_eq!(
            m,
            Some(StopMatch {
                stop: 1,
                start: 3,
                end: 7
            })
        );
        let (m, _) = run(&["lo w", "world"], &["hello world"]);
        assert_eq!(
            m,
            Some(StopMatch {
                stop: 0,
                start: 3,
                end: 7
            })
        );
    }

    #[test]
    fn longer_stop_wins_when_two_end_on_the_same_byte() {
        let (m, _) = run(&["b", "ab"], &["xab"]);
        assert_eq!(
            m,
            Some(StopMatch {
                stop: 1,
                start: 1,
                end: 3
            })
        );
    }

    #[test]
    fn false_start_is_released() {
        let (m, holds) = run(&["\nuser:"], &["\n", "use", "d it"]);
        assert_eq!(m, None);
        assert_eq!(holds, vec![1, 4, 0]);
    }

    #[test]
    fn hold_tracks_the_longest_live_prefix_of_any_stop() {
        let (_, holds) = run(&["abcd", "cde"], &["abc"]);
        assert_eq!(holds, vec![3]);
        let (_, holds) = run(&["abcd", "cdx"], &["zzabcdz"]);
        assert_eq!(holds, vec![0]);
    }

    #[test]
    fn empty_stop_is_refused_and_empty_set_never_matches() {
        assert_eq!(
            StopSet::new(["a", ""]).unwrap_err(),
            StopError::Empty { index: 1 }
        );
        let (m, holds) = run(&[], &["anything"]);
        assert_eq!((m, holds), (None, vec![0]));
    }

    #[test]
    fn multibyte_stop_split_inside_a_character() {
        let text = "tschüß!".as_bytes();
        let set = StopSet::new(["üß"]).unwrap();
        let mut scan = set.scanner();
        let mut found = None;
        for b in text {
            if let Some(m) = scan.feed(std::slice::from_ref(b)).matched {
                found = Some(m);
                break;
            }
        }
        assert_eq!(
            found,
            Some(StopMatch {
                stop: 0,
                start: 4,
                end: 8
            })
        );
    }
}
