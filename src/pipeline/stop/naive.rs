//! The reference every fast matcher is held to: so simple it is unlikely to be wrong.
//!
//! [`naive_first_match`] searches the whole text for every stop; [`naive_hold`] tries every suffix. The
//! property tests (`tests/replay/stop_props.rs`) hold the DFA scanner and the stop engine to both, and the peers'
//! strategies (`lab::bench::strategies`) are held to them too.

use super::set::StopMatch;

/// The reference the fast matcher is held to: so simple it is unlikely to be wrong. Searches the whole text
/// for every stop and returns the match that ends first (the longer one on a tie).
pub fn naive_first_match(text: &[u8], stops: &[impl AsRef<[u8]>]) -> Option<StopMatch> {
    let mut best: Option<StopMatch> = None;
    for (i, stop) in stops.iter().enumerate() {
        let stop = stop.as_ref();
        if stop.is_empty() || stop.len() > text.len() {
            continue;
        }
        if let Some(start) = text.windows(stop.len()).position(|w| w == stop) {
            let m = StopMatch {
                stop: i,
                start,
                end: start + stop.len(),
            };
            let better = match best {
                None => true,
                Some(b) => (m.end, m.start) < (b.end, b.start),
            };
            if better {
                best = Some(m);
            }
        }
    }
    best
}

/// The reference for hold-back: the longest suffix of `text` that is a proper prefix of some stop
/// (or a whole stop, which the scanner reports as a match instead).
pub fn naive_hold(text: &[u8], stops: &[impl AsRef<[u8]>]) -> usize {
    let mut hold = 0;
    for stop in stops {
        let stop = stop.as_ref();
        for k in (hold + 1)..=stop.len().min(text.len()) {
            if text[text.len() - k..] == stop[..k] {
                hold = k;
            }
        }
    }
    hold
}
