//! The stream ledger over HTTP, on random replays: for any text, stop list, limit, `n` and `include_stop`,
//! streamed and not, on both endpoints:
//! (a) the streamed chunks of a choice concatenate to the non-streamed text;
//! (b) each chunk's `token_ids` spell its text exactly (a special token by its name); the last chunk's may
//!     run on into the cut stop, for a token the stop cut in the middle;
//! (c) one log-probability per id, the same token, in the same order;
//! (d) nothing of a choice after the chunk that ends it;
//! (e) `usage.completion_tokens` counts every generated token: the ids carried plus the ids withheld.

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{Value, json};
use stoplab::pipeline::model::GgufFile;
use stoplab::pipeline::tokenizer::Vocab;

use crate::common::ledger::{self, ids_of, spell, text_of};
use crate::common::{chatml_server, chatml_vocab, stream};

/// Pieces that tokenize into several shapes: whole-word tokens of the test vocabulary, bytes, a two-byte
/// and a three-byte character, and the pieces of "\nuser:".
const PIECES: &[&str] = &[
    " Berlin", " one", " two", "a", "b", " ", "\n", "user", ":", "é", "€", ".", "##",
];

#[derive(Debug)]
struct Case {
    text: String,
    stops: Vec<String>,
    max_tokens: usize,
    n: usize,
    include_stop: bool,
    chat: bool,
}

fn case() -> impl Strategy<Value = Case> {
    (
        prop::collection::vec(prop::sample::select(PIECES), 1..14),
        prop::collection::vec(prop::sample::select(PIECES), 0..3),
        1usize..20,
        1usize..3,
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        prop::option::of((any::<prop::sample::Index>(), 1usize..6)),
    )
        .prop_map(
            |(text, stops, max_tokens, n, include_stop, chat, newline_user, from_text)| {
                let text = text.concat();
                let mut stops: Vec<String> = stops.into_iter().map(String::from).collect();
                if newline_user {
                    stops.push("\nuser:".into());
                }
                // A stop taken from the text at any character: it may begin or end inside a token.
                if let Some((at, len)) = from_text {
                    let chars: Vec<char> = text.chars().collect();
                    let start = at.index(chars.len());
                    let stop: String = chars[start..].iter().take(len).collect();
                    stops.push(stop);
                }
                Case {
                    text,
                    stops,
                    max_tokens,
                    n,
                    include_stop,
                    chat,
                }
            },
        )
}

fn check(h: &stoplab::serve::Handle, vocab: &Vocab, c: &Case) -> Result<(), TestCaseError> {
    let (path, mut body) = if c.chat {
        (
            "/v1/chat/completions",
            json!({"messages": [{"role": "user", "content": "hi"}], "logprobs": true, "top_logprobs": 1}),
        )
    } else {
        ("/v1/completions", json!({"prompt": "AI:", "logprobs": 1}))
    };
    body["replay"] = c.text.clone().into();
    body["stop"] = c.stops.clone().into();
    body["max_tokens"] = c.max_tokens.into();
    body["n"] = c.n.into();
    body["include_stop_str_in_output"] = c.include_stop.into();
    body["return_token_ids"] = true.into();
    ledger::check(h, vocab, path, &body, c.n).map_err(TestCaseError::fail)
}

#[test]
fn every_chunk_carries_the_tokens_that_spell_it() {
    let h = chatml_server();
    let vocab = GgufFile::open(chatml_vocab(), None).unwrap().vocab;
    let mut runner = TestRunner::new(Config {
        cases: 256,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&case(), |c| check(&h, &vocab, &c))
        .unwrap_or_else(|e| panic!("{e}"));
}

/// The README's example: the three tokens of the cut "\nuser:" are withheld, not carried by the last chunk.
#[test]
fn the_tokens_of_a_cut_stop_are_withheld_not_streamed() {
    let h = chatml_server();
    let body = json!({"prompt": "AI:", "replay": " Berlin.\nuser: next", "stop": ["\nuser:"],
        "stream": true, "logprobs": 1, "return_token_ids": true});
    let events = stream(&h, "/v1/completions", &body);
    let chunks: Vec<&Value> = events.iter().filter_map(|e| e["choices"].get(0)).collect();
    let last = chunks.last().unwrap();
    assert_eq!(last["finish_reason"], "stop");
    assert_eq!(last["stop_reason"], "\nuser:");
    assert_eq!(last["text"], "");
    assert_eq!(
        last["token_ids"],
        json!([]),
        "the last chunk releases nothing: it carries nothing"
    );
    assert_eq!(last["logprobs"]["tokens"], json!([]));
    let withheld = ids_of(&last["withheld_token_ids"]);
    let vocab = GgufFile::open(chatml_vocab(), None).unwrap().vocab;
    assert_eq!(spell(&vocab, &withheld), b"\nuser:");
    let carried: Vec<u32> = chunks
        .iter()
        .flat_map(|c| ids_of(&c["token_ids"]))
        .collect();
    assert_eq!(spell(&vocab, &carried), b" Berlin.");
}

/// A stop that begins at a token's last character ("n." in " Berlin."): the part of the token before
/// it is released early by the stop engine, but a chunk carries whole tokens, so it goes out with the
/// token, in the last chunk, which runs on by the cut "l".
#[test]
fn a_token_cut_by_the_stop_goes_out_whole_with_its_kept_text() {
    let h = chatml_server();
    let vocab = GgufFile::open(chatml_vocab(), None).unwrap().vocab;
    let body = json!({"prompt": "AI:", "replay": " Berlin. It is", "stop": ["n."],
        "stream": true, "logprobs": 1, "return_token_ids": true});
    let events = stream(&h, "/v1/completions", &body);
    let chunks: Vec<&Value> = events.iter().filter_map(|e| e["choices"].get(0)).collect();
    let mut text = String::new();
    for c in &chunks {
        let ids = ids_of(&c["token_ids"]);
        let spelled = String::from_utf8_lossy(&spell(&vocab, &ids)).into_owned();
        let t = text_of(c);
        if c["finish_reason"].is_null() {
            assert_eq!(spelled, t, "chunk {c}");
        } else {
            assert!(
                spelled.starts_with(&t) && spelled.len() > t.len(),
                "last chunk {c}"
            );
            assert_eq!(
                t, " Berli",
                "the cut token's kept text goes out with it: {c}"
            );
        }
        text.push_str(&t);
    }
    assert_eq!(text, " Berli");
}
