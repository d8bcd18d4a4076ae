//! The streaming matcher held to the naive reference on arbitrary stop sets, text and token cuts.
//!
//! Input layout: byte 0 picks the number of stops (1 to 8); each stop is a length byte (1 to 16) and that
//! many bytes (made valid UTF-8 lossily, as stop strings are strings); then a count of cuts and the cut
//! positions; the rest is the generated text, arbitrary bytes.
//!
//! `cargo fuzz run stop_matcher` (with a stable toolchain: `RUSTC_BOOTSTRAP=1 cargo fuzz run stop_matcher`).

#![no_main]

use libfuzzer_sys::fuzz_target;

// The stop matcher's two files compiled on their own (`naive.rs` reaches `set.rs` as `super::set`): the
// target needs no model backend.
#[allow(dead_code)]
#[path = "../../src/pipeline/stop/naive.rs"]
mod naive;
#[allow(dead_code)]
#[path = "../../src/pipeline/stop/set.rs"]
mod set;

use naive::{naive_first_match, naive_hold};
use set::StopSet;

fn take<'a>(data: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if data.len() < n {
        return None;
    }
    let (head, tail) = data.split_at(n);
    *data = tail;
    Some(head)
}

fn parse(mut data: &[u8]) -> Option<(Vec<String>, Vec<usize>, &[u8])> {
    let n_stops = take(&mut data, 1)?[0] as usize % 8 + 1;
    let mut stops = Vec::with_capacity(n_stops);
    for _ in 0..n_stops {
        let len = take(&mut data, 1)?[0] as usize % 16 + 1;
        stops.push(String::from_utf8_lossy(take(&mut data, len)?).into_owned());
    }
    let n_cuts = take(&mut data, 1)?[0] as usize % 32;
    let cuts = take(&mut data, n_cuts)?;
    let text = data;
    let mut at: Vec<usize> = cuts
        .iter()
        .map(|&c| c as usize % (text.len() + 1))
        .collect();
    at.push(0);
    at.push(text.len());
    at.sort_unstable();
    Some((stops, at, text))
}

fuzz_target!(|data: &[u8]| {
    let Some((stops, at, text)) = parse(data) else {
        return;
    };
    let set = StopSet::new(stops.iter().cloned()).expect("stops are non-empty");
    let expected = naive_first_match(text, &stops);
    let mut scan = set.scanner();
    let mut found = None;
    for w in at.windows(2) {
        let step = scan.feed(&text[w[0]..w[1]]);
        if let Some(m) = step.matched {
            found = Some(m);
            // The match ends inside this token.
            assert!(w[0] < m.end && m.end <= w[1], "{m:?} outside token {w:?}");
            break;
        }
        assert_eq!(
            step.hold,
            naive_hold(&text[..w[1]], &stops),
            "hold after {}",
            w[1]
        );
        assert_eq!(scan.position(), w[1]);
    }
    assert_eq!(found, expected, "stops {stops:?}, cuts {at:?}");
});
