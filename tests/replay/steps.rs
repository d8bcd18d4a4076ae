//! Several tokens per step on replays (`--tokens-per-step K`, the machinery of `--speculate`): for random
//! texts, stop lists, limits, `min_tokens` and K, the generation equals K = 1 in everything a user sees:
//! the text, the finish, the ids, the tokens withheld, and every token's event (released text, the
//! ledger's text and carried tokens). Nothing after the token that ended it is taken, and each step's
//! report says what was drafted, accepted and discarded.

use std::ops::ControlFlow;

use proptest::prelude::*;
use stoplab::Error;
use stoplab::pipeline::model::Replay;
use stoplab::pipeline::settings::GenerateParams;
use stoplab::pipeline::sink::{Outcome, Sink, StepReport, TokenEvent};
use stoplab::pipeline::speculate::{Speculation, generate_speculative};
use stoplab::pipeline::stop::StopSet;

use crate::common::{END, TestVocab};

const WORDS: &[&str] = &["a", "b", "ab", " user", ":", "\n", "é", "€", " Berlin", "."];

/// A token event as the test compares it: id, released text, the ledger's text, carried and withheld.
type Seen = (
    u32,
    String,
    String,
    std::ops::Range<usize>,
    std::ops::Range<usize>,
);

#[derive(Default)]
struct Record {
    events: Vec<Seen>,
    steps: Vec<StepReport>,
}

impl Sink for Record {
    fn token(&mut self, e: &TokenEvent<'_>) -> Result<ControlFlow<()>, Error> {
        self.events.push((
            e.id,
            e.text.to_string(),
            e.spelled.to_string(),
            e.carried.clone(),
            e.withheld.clone(),
        ));
        Ok(ControlFlow::Continue(()))
    }

    fn step(&mut self, r: &StepReport) -> Result<(), Error> {
        self.steps.push(r.clone());
        Ok(())
    }
}

fn run(v: &TestVocab, script: &[u32], params: &GenerateParams, k: usize) -> (Outcome, Record) {
    let mut model = Replay::new(script.to_vec(), END, v.vocab.len(), 4096);
    let mut rec = Record::default();
    let out = generate_speculative(
        &mut model,
        &v.vocab,
        &[v.byte(b'>')],
        params,
        &Speculation::tokens_per_step(k),
        Some(script),
        &mut rec,
    )
    .unwrap();
    (out, rec)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn steps_of_k_tokens_give_what_one_token_at_a_time_gives(
        words in proptest::collection::vec(0..WORDS.len(), 0..30),
        stops in proptest::collection::vec(proptest::collection::vec(0..WORDS.len(), 1..3), 0..3),
        max_tokens in 1usize..40,
        min_tokens in 0usize..4,
        include_stop in any::<bool>(),
        k in 2usize..8,
    ) {
        let v = TestVocab::new(WORDS);
        let script: Vec<u32> = words.iter().map(|&w| v.id(WORDS[w])).collect();
        let stops: Vec<String> = stops.iter().map(|s| s.iter().map(|&w| WORDS[w]).collect()).collect();
        let params = GenerateParams {
            stops: StopSet::new(stops).unwrap(),
            max_tokens,
            min_tokens: min_tokens.min(max_tokens),
            include_stop,
            ..Default::default()
        };
        let (one, one_rec) = run(&v, &script, &params, 1);
        let (many, rec) = run(&v, &script, &params, k);
        prop_assert_eq!(&many.text, &one.text);
        prop_assert_eq!(&many.finish, &one.finish);
        prop_assert_eq!(&many.tokens, &one.tokens);
        prop_assert_eq!(many.withheld, one.withheld);
        prop_assert_eq!(&rec.events, &one_rec.events);
        // Steps of one token draft nothing; a replay's drafts are its script, so every draft is taken
        // whole, and only the step that ended the generation discards any.
        prop_assert!(one_rec.steps.iter().all(|s| s.drafted.is_empty()));
        for s in &rec.steps[..rec.steps.len().saturating_sub(1)] {
            prop_assert!(s.drafted.len() < k);
            prop_assert_eq!(s.accepted, s.drafted.len());
            prop_assert!(s.discarded.is_empty());
        }
        // The prefill gives the first token, the steps the rest; what was discarded never reached the ids.
        let fed: usize = rec.steps.iter().map(|s| s.drafted.len() + 1 - s.discarded.len()).sum();
        prop_assert!(fed + 1 >= many.tokens.len() && fed <= many.tokens.len(), "{} {}", fed, many.tokens.len());
    }
}

/// sglang's #31599: `output_ids=[10,11,STOP,20,21,22]` with `max_new_tokens=5` in one step. A draft never
/// runs past the tokens still allowed (here 3 after the first), and the stop comes first, so the choice
/// ends on it with `stop`; the drafted token after it is discarded, not leaked.
#[test]
fn a_stop_inside_a_step_ends_it_before_the_length_limit() {
    let v = TestVocab::new(WORDS);
    let script = v.ids(&["a", "b", "\n", " Berlin", ".", "a"]);
    let params = GenerateParams {
        stops: StopSet::new(["\n"]).unwrap(),
        max_tokens: 5,
        ..Default::default()
    };
    let (out, rec) = run(&v, &script, &params, 6);
    assert_eq!(out.text, "ab");
    assert_eq!(out.finish.openai(), "stop");
    assert_eq!(out.tokens, v.ids(&["a", "b", "\n"]));
    assert_eq!(rec.steps.len(), 1);
    let s = &rec.steps[0];
    assert_eq!(s.drafted, v.ids(&["b", "\n", " Berlin"]));
    assert_eq!(s.accepted, 2, "b and \\n were taken");
    assert_eq!(s.discarded, v.ids(&[" Berlin"]));
}

/// A server speculates per request (`speculate`) or by default (`serve --speculate ngram`), each
/// sequence's draft in the batch's step: on a replay that copies its prompt, with a stop in the middle of
/// the copied span and the length limit around it, the answers (text, finish, ids, usage, streamed
/// chunks) are the ones without speculation, and `/health` counts the drafted and accepted tokens.
#[test]
fn a_speculating_server_answers_what_a_plain_one_does() {
    use crate::common::{get, ok, refused, replay_server, stream};
    use serde_json::{Value, json};

    let h = replay_server();
    let list = "apple, banana, cherry, date, elderberry, fig, grape, honeydew, kiwi";
    let prompt = format!("A list: {list}.\nAgain: apple,");
    let replay =
        format!(" banana, cherry, date, elderberry, fig, grape, honeydew, kiwi.\nDone. {list}.");
    let strip = |mut v: Value| {
        for k in ["id", "created", "system_fingerprint"] {
            v.as_object_mut().map(|o| o.remove(k));
        }
        v
    };
    let strip_all = |events: Vec<Value>| events.into_iter().map(strip).collect::<Vec<_>>();
    for max_tokens in [6, 7, 8, 40] {
        for stop in [
            json!("elderberry, fi"),
            json!(["kiwi.\n", "grape, h"]),
            json!([]),
        ] {
            let base = json!({
                "prompt": prompt, "replay": replay, "stop": stop, "max_tokens": max_tokens,
                "return_token_ids": true, "logprobs": 1, "n": 2,
            });
            let mut spec = base.clone();
            spec["speculate"] = json!({"method": "ngram", "draft_tokens": 4});
            let mut off = base.clone();
            off["speculate"] = json!("off");
            let plain = strip(ok(&h, "/v1/completions", &off));
            assert_eq!(strip(ok(&h, "/v1/completions", &spec)), plain, "{spec}");
            assert_eq!(
                strip(ok(&h, "/v1/completions", &base)),
                plain,
                "the default is off"
            );
            let (mut s_spec, mut s_off) = (spec.clone(), off.clone());
            s_spec["stream"] = json!(true);
            s_off["stream"] = json!(true);
            assert_eq!(
                strip_all(stream(&h, "/v1/completions", &s_spec)),
                strip_all(stream(&h, "/v1/completions", &s_off)),
                "{s_spec}"
            );
        }
    }
    let health = get(&h, "/health").body;
    let drafted = health["speculation"]["drafted_tokens"].as_u64().unwrap();
    let accepted = health["speculation"]["accepted_tokens"].as_u64().unwrap();
    assert!(accepted > 0 && accepted <= drafted, "{health}");
    assert_eq!(health["speculation"]["default"], false);

    // Bad settings are refused by name.
    let base = json!({"prompt": "x", "replay": "y", "max_tokens": 2});
    for (value, param) in [
        (json!("eagle"), "speculate"),
        (json!(3), "speculate"),
        (json!({"draft_tokens": 0}), "speculate.draft_tokens"),
        (
            json!({"ngram_max": 1, "ngram_min": 2}),
            "speculate.ngram_min",
        ),
        (json!({"method": "ngram", "depth": 2}), "speculate.depth"),
    ] {
        let mut body = base.clone();
        body["speculate"] = value.clone();
        let (status, p, _) = refused(&h, "/v1/completions", body);
        assert_eq!((status, p.as_str()), (400, Some(param)), "{value}");
    }
    let mut body = base.clone();
    body["speculative_config"] = json!({"method": "ngram"});
    let (status, p, _) = refused(&h, "/v1/completions", body);
    assert_eq!((status, p.as_str()), (400, Some("speculative_config")));
}
