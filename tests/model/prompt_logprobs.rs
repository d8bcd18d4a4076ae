//! The prompt's log probabilities: computed in one pass over the prompt ([`Model::forward_each`]) they agree
//! with a token-by-token decode of the same ids within 1e-3 on all three families, and the server gives
//! them as OpenAI's legacy `echo` with `logprobs` and vLLM's `prompt_logprobs`, with `max_tokens: 0` for
//! scoring, streamed and not, for every choice.

use crate::common;

use common::scoring::{log_prob, max_diff, one_at_a_time};
use common::*;
use serde_json::{Value, json};
use stoplab::pipeline::model::{Backend, GgufLlama, Model, Next};
use stoplab::serve::Limits;

/// The same from one pass over all of them.
fn one_pass(model: &mut GgufLlama, ids: &[u32]) -> Vec<f64> {
    let mut rows = Vec::new();
    model
        .forward_each(0, ids, 0, &mut |l| rows.push(l.to_vec()))
        .unwrap();
    assert_eq!(rows.len(), ids.len(), "one row per token");
    rows.iter()
        .zip(&ids[1..])
        .map(|(l, &id)| log_prob(l, id))
        .collect()
}

#[test]
fn one_pass_agrees_with_one_token_at_a_time_on_every_family() {
    let text = "user: What is the capital of France?\nassistant: The capital of France is Paris.\n\
                user: And of Germany?\nassistant: Berlin.";
    for name in [
        None,
        Some("qwen2.5-coder-0.5b-instruct"),
        Some("gemma3-270m"),
    ] {
        let path = model_path(name);
        let file = stoplab::pipeline::model::GgufFile::open(&path, None).unwrap();
        let ids = file.vocab.encode(text, false).unwrap();
        let mut model = GgufLlama::load_with(&file, Backend::Native).unwrap();
        let stepped = one_at_a_time(&mut model, &ids);
        let whole = one_pass(&mut model, &ids);
        let d = max_diff(&stepped, &whole);
        assert!(
            d < 1e-3,
            "{name:?}: the one-pass log probabilities differ from the decode path's by {d}"
        );
        // The last row is the proposal for the token after the prompt: the prefill's own.
        let mut last = Vec::new();
        model
            .forward_each(0, &ids, 0, &mut |l| last = l.to_vec())
            .unwrap();
        let Next::Logits(prefill) = model.forward(&ids, 0).unwrap() else {
            panic!()
        };
        let argmax = |v: &[f32]| (0..v.len()).max_by(|&a, &b| v[a].total_cmp(&v[b]));
        assert_eq!(argmax(&last), argmax(&prefill), "{name:?}");
    }
}

/// `token_logprobs` of a completions choice as numbers (the first, `null`, left out).
fn scored(choice: &Value) -> Vec<f64> {
    let lp = choice["logprobs"]["token_logprobs"].as_array().unwrap();
    assert_eq!(lp[0], Value::Null, "nothing comes before the first token");
    lp[1..].iter().map(|v| v.as_f64().unwrap()).collect()
}

#[test]
fn the_server_scores_a_prompt_as_openais_legacy_api_and_vllm_do() {
    let h = start(true, None, Limits::default());
    let prompt = "Question: What is the capital of France?\nAnswer: Paris";
    let ids = tokenize(&h, prompt);
    let body = json!({"prompt": ids, "echo": true, "logprobs": 2, "max_tokens": 0,
                      "prompt_logprobs": 2, "return_token_ids": true});
    let r = ok(&h, "/v1/completions", &body);
    let c = &r["choices"][0];
    assert_eq!(c["text"], prompt);
    assert_eq!(c["finish_reason"], "length");
    assert_eq!(r["usage"]["completion_tokens"], 0);
    assert_eq!(r["usage"]["prompt_tokens"], ids.len());
    assert_eq!(c["prompt_token_ids"], json!(ids));
    assert_eq!(c["token_ids"], json!([]));
    // The tokens spell the prompt, offsets count its characters.
    let tokens: Vec<&str> = c["logprobs"]["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert_eq!(tokens.concat(), prompt);
    let offsets = &c["logprobs"]["text_offset"];
    assert_eq!(offsets[0], 0);
    assert_eq!(offsets[1], tokens[0].chars().count());
    // The numbers are the decode path's, within 1e-3.
    let path = model_path(None);
    let mut model = GgufLlama::open(&path, Backend::Native).unwrap();
    let want = one_at_a_time(&mut model, &ids);
    let got = scored(c);
    let d = max_diff(&want, &got);
    assert!(
        d < 1e-3,
        "the server's prompt log probabilities are {d} off"
    );
    // vLLM's shape: the prompt token with its rank beside the most likely ones.
    let vllm = c["prompt_logprobs"].as_array().unwrap();
    assert_eq!(vllm.len(), ids.len());
    assert_eq!(vllm[0], Value::Null);
    for (i, row) in vllm.iter().enumerate().skip(1) {
        let own = &row[ids[i].to_string()];
        assert!(
            (own["logprob"].as_f64().unwrap() - got[i - 1]).abs() < 1e-6,
            "{row}"
        );
        let rank = own["rank"].as_u64().unwrap();
        assert!(rank >= 1);
        let best = row
            .as_object()
            .unwrap()
            .values()
            .map(|e| e["logprob"].as_f64().unwrap())
            .fold(f64::MIN, f64::max);
        assert_eq!(rank == 1, own["logprob"].as_f64().unwrap() >= best, "{row}");
    }

    // With tokens generated the prompt comes first, then one entry per generated token; with n = 2 every
    // choice has the same prompt part; streamed, the first chunk carries it.
    let body = json!({"prompt": ids, "echo": true, "logprobs": 1, "max_tokens": 3, "n": 2,
                      "temperature": 0});
    let r = ok(&h, "/v1/completions", &body);
    for c in r["choices"].as_array().unwrap() {
        let all = scored(c);
        assert_eq!(all.len(), ids.len() - 1 + 3, "{c}");
        assert!(max_diff(&all[..ids.len() - 1], &got) < 1e-6);
        let text = c["text"].as_str().unwrap();
        assert!(text.starts_with(prompt), "{text:?}");
        let offsets = c["logprobs"]["text_offset"].as_array().unwrap();
        assert_eq!(offsets[ids.len()], prompt.chars().count(), "{c}");
    }
    let mut s = body.clone();
    s["stream"] = true.into();
    s["n"] = 1.into();
    let events = stream(&h, "/v1/completions", &s);
    let first = &events[0]["choices"][0];
    assert_eq!(first["text"], prompt);
    assert!(max_diff(&scored(first), &got) < 1e-6, "{first}");
    assert_eq!(
        deltas(&events).concat(),
        r["choices"][0]["text"].as_str().unwrap()
    );
    h.shutdown().unwrap();
}
