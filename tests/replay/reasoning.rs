//! Reasoning scopes on replays: for random texts (words, plain-text markers `<r>` and `</r>` written whole or
//! over several tokens, stops drawn from the words), every scope and a start inside or outside the
//! reasoning, the generation ends where a naive reference says: the first stop that completes inside a
//! region where its scope arms it, matched from that region's start (never across a marker), cut at its
//! own offset. With scope `all` the markers change nothing. The released texts always add up to the text.

use proptest::prelude::*;
use stoplab::pipeline::settings::{GenerateParams, Reasoning, Scope};
use stoplab::pipeline::stop::{FinishReason, StopSet};

use crate::common::TestVocab;

const WORDS: &[&str] = &[
    "a", "b", "ab", "\n", "\n\n", " x", "<r>", "</r>", "<", "/r", ">", "r>",
];

/// The naive reference: where the first armed stop ends and begins (byte offsets), if any.
fn reference(
    text: &[u8],
    stops: &[String],
    scope: Scope,
    starts_inside: bool,
) -> Option<(usize, usize)> {
    let (open, close) = (b"<r>".as_slice(), b"</r>".as_slice());
    let mut inside = starts_inside;
    let mut seg_start = 0;
    for e in 1..=text.len() {
        let upto = &text[..e];
        // Stops first: a stop completed at byte e inside the current region (the marker bytes belong to the
        // region before the switch).
        if scope.covers(inside) {
            let best = stops
                .iter()
                .filter(|s| upto.ends_with(s.as_bytes()) && e - s.len() >= seg_start)
                .map(|s| s.len())
                .max();
            if let Some(len) = best {
                return Some((e - len, e));
            }
        }
        let expected = if inside { close } else { open };
        if upto.ends_with(expected) {
            inside = !inside;
            seg_start = e;
        }
    }
    None
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn a_stop_ends_the_text_only_in_its_scope(
        words in proptest::collection::vec(0..WORDS.len(), 0..40),
        stops in proptest::collection::vec(proptest::collection::vec(0..6usize, 1..3), 0..3),
        scope in 0..3usize,
        starts_inside in any::<bool>(),
    ) {
        let v = TestVocab::new(WORDS);
        let script: Vec<u32> = words.iter().map(|&w| v.id(WORDS[w])).collect();
        let stops: Vec<String> = stops.iter().map(|s| s.iter().map(|&w| WORDS[w]).collect()).collect();
        let scope = [Scope::Answer, Scope::Reasoning, Scope::All][scope];
        let mut reasoning = Reasoning::new("<r>", "</r>").unwrap();
        reasoning.stop_scope = scope;
        reasoning.starts_inside = starts_inside;
        let params = GenerateParams {
            stops: StopSet::new(stops.clone()).unwrap(),
            max_tokens: 100,
            reasoning: Some(reasoning),
            ..Default::default()
        };
        let (out, events) = v.run(script.clone(), &params);
        let text: Vec<u8> = words.iter().flat_map(|&w| WORDS[w].bytes()).collect();
        match reference(&text, &stops, scope, starts_inside) {
            Some((start, _)) => {
                let is_stop = matches!(&out.finish, FinishReason::StopString { offset, .. } if *offset == start);
                prop_assert!(is_stop, "{:?} at {}", out.finish, start);
                prop_assert_eq!(out.text.as_bytes(), &text[..start]);
            }
            None => {
                prop_assert!(matches!(out.finish, FinishReason::EndToken { .. }), "{:?}", out.finish);
                prop_assert_eq!(out.text.as_bytes(), &text[..]);
            }
        }
        let released: String = events.iter().map(|e| e.text.as_str()).collect();
        prop_assert_eq!(&released, &out.text);
        if scope == Scope::All {
            let plain = GenerateParams { reasoning: None, ..params.clone() };
            let (p, _) = v.run(script, &plain);
            prop_assert_eq!(&p.text, &out.text);
            prop_assert_eq!(&p.finish, &out.finish);
        }
    }
}

/// The markers written over several tokens still switch the region, and the trace rows say where.
#[test]
fn markers_split_over_tokens_switch_the_region() {
    let v = TestVocab::new(WORDS);
    let script = v.ids(&["<", "r>", "a", "\n\n", "<", "/r", ">", "b", "\n\n", "a"]);
    let params = GenerateParams {
        stops: StopSet::new(["\n\n"]).unwrap(),
        reasoning: Some(Reasoning::new("<r>", "</r>").unwrap()),
        ..Default::default()
    };
    let (out, events) = v.run(script, &params);
    assert_eq!(
        out.text, "<r>a\n\n</r>b",
        "the stop inside the reasoning is not armed"
    );
    assert!(matches!(out.finish, FinishReason::StopString { .. }));
    let regions: Vec<Option<bool>> = events.iter().map(|e| e.reasoning).collect();
    assert_eq!(
        regions,
        [false, true, true, true, true, true, false, false, false].map(Some)
    );
}

/// The server takes the same settings per request: `reasoning_markers`, `stop_scope` (answer by default
/// with markers), `end_in_reasoning`; bad values are refused by name.
#[test]
fn the_server_scopes_stops_per_request() {
    use crate::common::{ok, refused, replay_server};
    use serde_json::json;

    let h = replay_server();
    let base = json!({
        "prompt": "Q", "replay": "<r>plan\n\nmore</r>Four.\n\nMore.", "stop": "\n\n",
        "max_tokens": 40, "reasoning_markers": "<r>,</r>",
    });
    let text = |body: &serde_json::Value| {
        ok(&h, "/v1/completions", body)["choices"][0]["text"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(text(&base), "<r>plan\n\nmore</r>Four.");
    let mut all = base.clone();
    all["stop_scope"] = json!("all");
    assert_eq!(text(&all), "<r>plan");
    let mut pair = base.clone();
    pair["reasoning_markers"] = json!(["<r>", "</r>"]);
    pair["stop_scope"] = json!("reasoning");
    assert_eq!(text(&pair), "<r>plan");
    let mut none = base.clone();
    none["reasoning_markers"] = json!("none");
    assert_eq!(text(&none), "<r>plan", "no markers: every byte alike");

    for (k, v, param) in [
        ("stop_scope", json!("thinking"), "stop_scope"),
        ("end_in_reasoning", json!("mask"), "end_in_reasoning"),
        (
            "end_in_reasoning",
            json!("ban-after-close:1"),
            "end_in_reasoning",
        ),
        (
            "end_in_reasoning",
            json!("ban-after-close:0"),
            "end_in_reasoning",
        ),
        ("end_in_reasoning", json!("ban"), "end_in_reasoning"),
        ("reasoning_markers", json!("<r>"), "reasoning_markers"),
        ("reasoning_markers", json!(["<r>"]), "reasoning_markers"),
        ("reasoning_markers", json!(",</r>"), "reasoning_markers"),
    ] {
        let mut body = base.clone();
        body[k] = v.clone();
        let (status, p, _) = refused(&h, "/v1/completions", body);
        assert_eq!((status, p.as_str()), (400, Some(param)), "{k}: {v}");
    }
    // A scope on a vocabulary without markers of its own, none given.
    let mut body = base.clone();
    body.as_object_mut().unwrap().remove("reasoning_markers");
    body["stop_scope"] = json!("all");
    let (status, p, _) = refused(&h, "/v1/completions", body);
    assert_eq!((status, p.as_str()), (400, Some("stop_scope")));
    h.shutdown().unwrap();
}

const PIECES: &[&str] = &[
    "plan", " ok", "\n\n", "<think>", "</think>", "</thi", "nk>", "<", "Answer.", " x",
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Chat splits the reply into `reasoning_content` and `content` at the markers (which are in neither),
    /// streamed and not: the streamed fields add up to the unstreamed ones, the streamed ids to the
    /// unstreamed ids.
    #[test]
    fn chat_splits_reasoning_from_content_streamed_and_not(
        pieces in proptest::collection::vec(0..PIECES.len(), 0..24),
        stop in proptest::option::of(0..3usize),
        inside in any::<bool>(),
        max_tokens in 1usize..40,
    ) {
        use crate::common::{chatml_server, ok, stream};
        use serde_json::json;
        let h = chatml_server();
        let replay: String = pieces.iter().map(|&i| PIECES[i]).collect();
        // A prompt whose template ends with the open marker starts inside the reasoning.
        let user = if inside { "Q<think>" } else { "Q" };
        let mut body = json!({
            "messages": [{"role": "user", "content": user}], "replay": replay,
            "reasoning_markers": "<think>,</think>", "max_tokens": max_tokens, "return_token_ids": true,
        });
        if let Some(s) = stop {
            let s = ["\n\n", " ok", "Answer"][s];
            body["stop"] = json!([s]);
        }
        let whole = ok(&h, "/v1/chat/completions", &body);
        let msg = &whole["choices"][0]["message"];
        let (r, c) = (
            msg["reasoning_content"].as_str().unwrap_or("").to_string(),
            msg["content"].as_str().unwrap_or("").to_string(),
        );
        let mut streamed = body.clone();
        streamed["stream"] = json!(true);
        let events = stream(&h, "/v1/chat/completions", &streamed);
        let mut sr = String::new();
        let mut sc = String::new();
        let mut ids: Vec<u64> = Vec::new();
        for e in &events {
            let Some(ch) = e["choices"].get(0) else { continue };
            sr.push_str(ch["delta"]["reasoning_content"].as_str().unwrap_or(""));
            sc.push_str(ch["delta"]["content"].as_str().unwrap_or(""));
            ids.extend(ch["token_ids"].as_array().into_iter().flatten().map(|v| v.as_u64().unwrap()));
        }
        prop_assert_eq!(&sr, &r);
        prop_assert_eq!(&sc, &c);
        let whole_ids: Vec<u64> = whole["choices"][0]["token_ids"]
            .as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
        prop_assert_eq!(ids, whole_ids);
        h.shutdown().unwrap();
    }
}

/// The split on one reply, streamed and not, with a stop inside the reasoning (not armed) and one in the
/// answer.
#[test]
fn chat_answers_carry_reasoning_content() {
    use crate::common::{chatml_server, ok, stream};
    use serde_json::json;
    let h = chatml_server();
    let body = json!({
        "messages": [{"role": "user", "content": "Q"}],
        "replay": "<think>plan\n\nmore</think>Answer.\n\nMore.",
        "reasoning_markers": "<think>,</think>", "stop": "\n\n",
    });
    let whole = ok(&h, "/v1/chat/completions", &body);
    let msg = &whole["choices"][0]["message"];
    assert_eq!(msg["reasoning_content"], "plan\n\nmore");
    assert_eq!(msg["content"], "Answer.");
    assert_eq!(whole["choices"][0]["finish_reason"], "stop");
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let events = stream(&h, "/v1/chat/completions", &streamed);
    let field = |k: &str| -> String {
        events
            .iter()
            .filter_map(|e| e["choices"].get(0))
            .filter_map(|c| c["delta"][k].as_str())
            .collect()
    };
    assert_eq!(field("reasoning_content"), "plan\n\nmore");
    assert_eq!(field("content"), "Answer.");
    // Completions are not split: the text keeps its markers.
    let text = ok(
        &h,
        "/v1/completions",
        &json!({"prompt": "Q", "replay": "<think>a</think>b", "reasoning_markers": "<think>,</think>", "max_tokens": 40}),
    );
    assert_eq!(text["choices"][0]["text"], "<think>a</think>b");
    h.shutdown().unwrap();
}

/// A model whose logits peak at one token per position (`favourite[i]` for the i-th generated token, the
/// last one after that): enough to drive the sampler through the reasoning policies.
struct Peaked {
    vocab: usize,
    prompt_len: usize,
    favourite: Vec<u32>,
}

impl stoplab::pipeline::model::Model for Peaked {
    fn vocab_size(&self) -> usize {
        self.vocab
    }
    fn context_length(&self) -> usize {
        4096
    }
    fn forward(
        &mut self,
        tokens: &[u32],
        pos: usize,
    ) -> Result<stoplab::pipeline::model::Next, stoplab::Error> {
        let i = pos + tokens.len() - self.prompt_len;
        let fav = self.favourite[i.min(self.favourite.len() - 1)];
        let mut logits = vec![0.0f32; self.vocab];
        logits[fav as usize] = 10.0;
        Ok(stoplab::pipeline::model::Next::Logits(logits))
    }
    fn name(&self) -> &str {
        "peaked"
    }
}

/// The end-token policies and the budget, on a prompt that opened the reasoning: `allow` ends with no
/// answer, `mask` keeps the end tokens from the sampler, `close` writes the close marker in the end
/// token's place (with p(end)) and goes on into the answer, the budget writes it after N tokens.
#[test]
fn end_tokens_and_the_budget_inside_the_reasoning() {
    use stoplab::pipeline::generate::generate;
    use stoplab::pipeline::settings::EndInReasoning;
    use stoplab::pipeline::sink::{Forced, TokenEvent};

    let v = TestVocab::new(WORDS);
    let end = crate::common::END;
    let run = |policy: EndInReasoning, budget: Option<usize>, favourite: Vec<u32>| {
        let mut r = Reasoning::new("<r>", "</r>").unwrap();
        r.end_in_reasoning = policy;
        r.max_tokens = budget;
        let params = GenerateParams {
            max_tokens: 8,
            reasoning: Some(r),
            ..Default::default()
        };
        let prompt = [v.id("<r>")];
        let mut model = Peaked {
            vocab: v.vocab.len(),
            prompt_len: prompt.len(),
            favourite,
        };
        let mut forced = Vec::new();
        let mut sink = |e: &TokenEvent<'_>| {
            forced.push(e.forced);
            std::ops::ControlFlow::Continue(())
        };
        let out = generate(&mut model, &v.vocab, &prompt, &params, &mut sink).unwrap();
        (out, forced)
    };
    let (out, _) = run(EndInReasoning::Allow, None, vec![end]);
    assert_eq!(
        (out.text.as_str(), out.finish.clone()),
        ("", FinishReason::EndToken { id: end })
    );
    let (out, forced) = run(EndInReasoning::Mask, None, vec![end]);
    assert!(
        !v.vocab.end_tokens().contains(&out.tokens[0]),
        "{:?}",
        out.tokens
    );
    // The trace's event: the model's top choice was the end token, kept out inside the reasoning.
    assert!(
        matches!(forced[0], Some(Forced::EndMasked { p_end, after_close: false }) if p_end > 0.9),
        "{forced:?}"
    );
    let (out, forced) = run(EndInReasoning::Close, None, vec![end]);
    assert_eq!(out.text, "</r>");
    assert_eq!(out.finish, FinishReason::EndToken { id: end });
    assert!(
        matches!(forced[0], Some(Forced::EndInReasoning { p_end }) if p_end > 0.9),
        "{forced:?}"
    );
    let a = v.id("a");
    let close = v.id("</r>");
    // The end token right after the close marker: allowed, the answer is empty; banned for one token
    // (sglang's answer), one token of answer is written and then the end token ends it.
    let (out, _) = run(EndInReasoning::Allow, None, vec![a, close, end]);
    assert_eq!(
        (out.text.as_str(), out.tokens.len()),
        ("a</r>", 3),
        "{out:?}"
    );
    let (out, forced) = run(EndInReasoning::BanAfterClose(1), None, vec![a, close, end]);
    assert_eq!(out.tokens.len(), 4, "{out:?}");
    assert!(
        matches!(
            forced[2],
            Some(Forced::EndMasked {
                after_close: true,
                ..
            })
        ),
        "{forced:?}"
    );
    assert_eq!(forced[3], None, "the ban is over: the end token ends it");
    assert!(!v.vocab.end_tokens().contains(&out.tokens[2]));
    assert_eq!(out.finish, FinishReason::EndToken { id: end });
    let (out, forced) = run(EndInReasoning::Allow, Some(3), vec![a]);
    assert_eq!(out.text, "aaa</r>aaaa");
    assert_eq!(forced[3], Some(Forced::Budget { tokens: 3 }));
    assert_eq!(out.finish, FinishReason::Length);
}
