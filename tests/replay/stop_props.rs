//! The streaming matcher and the stop engine against the naive reference, for every way of cutting a text into
//! tokens.

use proptest::prelude::*;
use std::collections::BTreeSet;

use stoplab::pipeline::settings::GenerateParams;
use stoplab::pipeline::stop::{FinishReason, StopEngine, StopSet, naive_first_match, naive_hold};

/// A small alphabet makes overlaps and partial matches common; 'ü' and '€' bring multi-byte characters.
fn text() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            Just('a'),
            Just('b'),
            Just('\n'),
            Just('ü'),
            Just('€'),
            Just(':')
        ],
        0..40,
    )
    .prop_map(|c| c.into_iter().collect())
}

fn stop_list() -> impl Strategy<Value = Vec<String>> {
    proptest::collection::vec(
        proptest::collection::vec(
            prop_oneof![Just('a'), Just('b'), Just('\n'), Just('ü'), Just(':')],
            1..5,
        )
        .prop_map(|c| c.into_iter().collect::<String>()),
        0..6,
    )
}

/// Cut points, as fractions, turned into byte offsets (possibly inside a character).
fn cuts() -> impl Strategy<Value = Vec<u16>> {
    proptest::collection::vec(any::<u16>(), 0..20)
}

fn pieces(bytes: &[u8], cuts: &[u16]) -> Vec<std::ops::Range<usize>> {
    let mut at: Vec<usize> = cuts
        .iter()
        .map(|&c| c as usize * bytes.len() / 65536)
        .collect();
    at.push(0);
    at.push(bytes.len());
    at.sort_unstable();
    at.dedup();
    at.windows(2).map(|w| w[0]..w[1]).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn streaming_matches_the_naive_reference_for_any_cut(text in text(), stops in stop_list(), cuts in cuts()) {
        let set = StopSet::new(stops.clone()).unwrap();
        let bytes = text.as_bytes();
        let expected = naive_first_match(bytes, &stops);
        let mut scan = set.scanner();
        let mut found = None;
        for r in pieces(bytes, &cuts) {
            let step = scan.feed(&bytes[r.clone()]);
            if let Some(m) = step.matched {
                found = Some(m);
                // The match ends in this piece, and nothing before this piece completed a stop.
                prop_assert!(m.end > r.start && m.end <= r.end);
                break;
            }
            prop_assert_eq!(step.hold, naive_hold(&bytes[..r.end], &stops), "hold after {:?}", &bytes[..r.end]);
        }
        prop_assert_eq!(found, expected);
    }

    #[test]
    fn random_stops_taken_from_the_text_are_found(text in "[ab\n:]{4,30}", start in 0usize..30, len in 1usize..6, cuts in cuts()) {
        let start = start % text.len();
        let stop = text[start..(start + len).min(text.len())].to_string();
        let stops = vec!["zz".to_string(), stop];
        let set = StopSet::new(stops.clone()).unwrap();
        let mut scan = set.scanner();
        let bytes = text.as_bytes();
        let found = pieces(bytes, &cuts).into_iter().find_map(|r| scan.feed(&bytes[r]).matched);
        prop_assert!(found.is_some());
        prop_assert_eq!(found, naive_first_match(bytes, &stops));
    }

    /// What a streaming client sees: the text up to the first stop (or all of it), never a byte of the stop,
    /// never a split character before the end, and every held byte accounted for at the finish.
    #[test]
    fn the_engine_releases_exactly_the_naive_cut(text in text(), stops in stop_list(), cuts in cuts(), include in any::<bool>()) {
        let params = GenerateParams {
            stops: StopSet::new(stops.clone()).unwrap(),
            include_stop: include,
            ..Default::default()
        };
        let bytes = text.as_bytes();
        let parts = pieces(bytes, &cuts);
        let ends = BTreeSet::new();
        let mut engine = StopEngine::new(&params, &ends, 1, 1 << 20);
        let mut shown = String::new();
        let mut finish = None;
        for (i, r) in parts.iter().enumerate() {
            let step = engine.push(i as u32, &bytes[r.clone()]);
            shown.push_str(&step.text);
            if step.finish.is_none() {
                // Everything not shown is held, and is no more than the stop prefix plus an unfinished character.
                prop_assert_eq!(shown.len() + step.held.len(), r.end);
                prop_assert!(step.held.len() <= naive_hold(&bytes[..r.end], &stops) + 3);
            }
            if let Some(f) = step.finish {
                finish = Some(f);
                break;
            }
        }
        match naive_first_match(bytes, &stops) {
            Some(m) => {
                let f = finish.expect("a stop in the text finishes the generation");
                let keep = if include { m.end } else { m.start };
                prop_assert_eq!(shown.as_bytes(), &bytes[..keep]);
                prop_assert_eq!(f.reason, FinishReason::StopString { index: m.stop, stop: stops[m.stop].clone(), offset: m.start });
                let cut = f.cut.unwrap();
                let last = parts.iter().position(|r| r.end >= m.end).unwrap();
                prop_assert_eq!(&cut.bytes[..], &bytes[keep..parts[last].end]);
                prop_assert_eq!(cut.began_at, parts.iter().position(|r| r.end > m.start).unwrap());
            }
            None => {
                prop_assert!(finish.is_none());
                prop_assert_eq!(engine.text(), shown.as_str());
                prop_assert!(bytes.starts_with(shown.as_bytes()));
            }
        }
    }
}
