//! Every stop-matching strategy held to the naive reference: on random texts, random stop sets (overlapping,
//! multi-byte, one-byte, repeated) and random cuts into tokens, each must report the same first match, on
//! the token holding the match's last byte, and the same hold-back after every token before it.

use proptest::prelude::*;

use stoplab::lab::bench::{StopStrategy, Strategy as Matcher};
use stoplab::pipeline::stop::{StopMatch, StopSet, naive_first_match, naive_hold};

/// A small alphabet so that stops overlap the text and each other often; "ü" and "€" are 2 and 3 bytes,
/// so cuts fall inside characters.
fn text_from(alphabet: &'static [&'static str], max: usize) -> impl Strategy<Value = String> {
    proptest::collection::vec(proptest::sample::select(alphabet), 0..max).prop_map(|v| v.concat())
}

const ALPHABET: &[&str] = &["a", "b", "c", "\n", "ü", "€"];

/// The token boundaries: sorted cut positions inside the text, duplicates giving empty tokens.
fn cut(text: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
    let mut at: Vec<usize> = cuts.iter().map(|c| c % (text.len() + 1)).collect();
    at.push(0);
    at.push(text.len());
    at.sort_unstable();
    at.windows(2).map(|w| text[w[0]..w[1]].to_vec()).collect()
}

/// Feeds the tokens until the first match; returns it with the token it came on, and every hold before.
fn drive(
    strategy: &mut dyn StopStrategy,
    tokens: &[Vec<u8>],
) -> (Option<(usize, StopMatch)>, Vec<usize>) {
    let mut holds = Vec::new();
    for (i, bytes) in tokens.iter().enumerate() {
        let scan = strategy.feed(i as u32, bytes);
        if let Some(m) = scan.matched {
            return (Some((i, m)), holds);
        }
        holds.push(scan.hold);
    }
    (None, holds)
}

fn check(text: &str, stops: &[String], cuts: &[usize]) -> Result<(), TestCaseError> {
    let text = text.as_bytes();
    let set = StopSet::new(stops.iter().cloned()).unwrap();
    // The vocabulary is the tokens themselves, one id per token (repeats included), as a model's would be.
    let tokens = cut(text, cuts);
    let expected = naive_first_match(text, stops);
    let mut ends = Vec::new();
    let mut pos = 0;
    for t in &tokens {
        pos += t.len();
        ends.push(pos);
    }
    let expected_token = expected.map(|m| ends.iter().position(|&e| e >= m.end).unwrap());
    for strategy in Matcher::ALL {
        let mut s = strategy.build(&set, &tokens);
        // Twice: `reset` must leave no trace of the first run.
        for _ in 0..2 {
            s.reset();
            let (found, holds) = drive(s.as_mut(), &tokens);
            prop_assert_eq!(
                found.map(|f| f.1),
                expected,
                "{} found the wrong first match",
                strategy.name()
            );
            prop_assert_eq!(
                found.map(|f| f.0),
                expected_token,
                "{}: wrong token",
                strategy.name()
            );
            for (i, &hold) in holds.iter().enumerate() {
                prop_assert_eq!(
                    hold,
                    naive_hold(&text[..ends[i]], stops),
                    "{}: wrong hold after token {}",
                    strategy.name(),
                    i
                );
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn every_strategy_agrees_with_the_naive_reference(
        text in text_from(ALPHABET, 40),
        stops in proptest::collection::vec(text_from(ALPHABET, 5).prop_filter("non-empty", |s| !s.is_empty()), 1..6),
        cuts in proptest::collection::vec(any::<usize>(), 0..20),
    ) {
        check(&text, &stops, &cuts)?;
    }

    #[test]
    fn one_byte_stops_and_one_byte_tokens(
        text in text_from(&["a", "b", "ü"], 30),
        stops in proptest::collection::vec(text_from(&["a", "b", "ü"], 2).prop_filter("non-empty", |s| !s.is_empty()), 1..4),
    ) {
        let cuts: Vec<usize> = (0..text.len()).collect();
        check(&text, &stops, &cuts)?;
    }

    #[test]
    fn stops_taken_from_the_text_are_found(
        text in text_from(ALPHABET, 40).prop_filter("long enough", |t| t.len() >= 4),
        at in any::<usize>(),
        len in 1usize..8,
        others in proptest::collection::vec(text_from(ALPHABET, 6).prop_filter("non-empty", |s| !s.is_empty()), 0..4),
        cuts in proptest::collection::vec(any::<usize>(), 0..20),
    ) {
        // A stop cut out of the text at char boundaries, so there is always a match to find.
        let chars: Vec<(usize, char)> = text.char_indices().collect();
        let i = at % chars.len();
        let j = (i + len).min(chars.len());
        let end = chars.get(j).map_or(text.len(), |c| c.0);
        let mut stops = others;
        stops.insert(at % (stops.len() + 1), text[chars[i].0..end].to_string());
        check(&text, &stops, &cuts)?;
    }
}

#[test]
fn a_stop_ending_inside_a_token_that_runs_past_it() {
    let stops = vec!["bc".to_string(), "cde".to_string()];
    check("abcdef", &stops, &[1]).unwrap();
    check("xabcdefgh", &stops, &[2, 7]).unwrap();
}

#[test]
fn the_longer_of_two_stops_ending_together_wins_in_every_strategy() {
    let stops = vec!["b".to_string(), "ab".to_string(), "ab".to_string()];
    check("xxab", &stops, &[1, 3]).unwrap();
    check("xxab", &stops, &[]).unwrap();
}
