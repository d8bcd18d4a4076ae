//! The stream ledger on the real models of all three families: stops drawn from each model's own greedy
//! text at several characters (inside tokens and across them), the length limit, the end token, and `n` = 2
//! sampled, on both endpoints (completions only where the file has no chat template), streamed and not, held to the rules (a)-(e) of `tests/common/ledger.rs`.

use serde_json::{Value, json};
use stoplab::pipeline::model::GgufFile;
use stoplab::serve::{Config, Handle, Limits};

use crate::common::ledger::{check, text_of};
use crate::common::{model_path, post};

const FAMILIES: [Option<&str>; 3] = [
    None,
    Some("qwen2.5-coder-0.5b-instruct"),
    Some("gemma3-270m"),
];

const QUESTION: &str = "What is the capital of France? Answer in one sentence.";

fn serve(model: Option<&str>) -> Handle {
    stoplab::serve::start(Config {
        engine: stoplab::LoadOptions {
            model: model.map(String::from),
            ..Default::default()
        },
        addr: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        api_key: None,
        model_name: None,
        limits: Limits::default(),
        speculation: None,
    })
    .unwrap_or_else(|e| panic!("{model:?} serves: {e}"))
}

/// The endpoint's request with the ledger's fields.
fn request(chat: bool) -> (&'static str, Value) {
    if chat {
        (
            "/v1/chat/completions",
            json!({"messages": [{"role": "user", "content": QUESTION}], "logprobs": true,
                "top_logprobs": 1, "return_token_ids": true, "temperature": 0}),
        )
    } else {
        (
            "/v1/completions",
            json!({"prompt": "user: What is the capital of France?\nAI:", "logprobs": 1,
                "return_token_ids": true, "temperature": 0}),
        )
    }
}

/// Stops of three characters taken from `text` at a third, a half and two thirds of its characters.
fn stops_from(text: &str) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    [(1, 3), (1, 2), (2, 3)]
        .iter()
        .map(|&(m, d)| chars.len() * m / d)
        .filter(|&at| at < chars.len())
        .map(|at| chars[at..].iter().take(3).collect::<String>())
        .filter(|s| !s.trim().is_empty())
        .collect()
}

#[test]
fn the_ledger_holds_on_every_family_for_every_way_a_choice_ends() {
    for model in FAMILIES {
        let h = serve(model);
        let vocab = GgufFile::open(&model_path(model), None).unwrap().vocab;
        for chat in [false, true] {
            let (path, base) = request(chat);
            let what = format!("{model:?} {path}");
            let mut greedy = base.clone();
            greedy["max_tokens"] = 32.into();
            let r = post(&h, path, &greedy);
            let no_template = r.body["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("no tokenizer.chat_template"));
            if chat && no_template {
                // Gemma 3 270M's file is the pretrained model's: it has no chat template.
                continue;
            }
            assert_eq!(r.status, 200, "{what}: {:?}", r.body);
            let text = text_of(&r.body["choices"][0]);
            let stops = stops_from(&text);
            assert!(!stops.is_empty(), "{what}: no stop drawn from {text:?}");
            let mut cases = Vec::new();
            for stop in &stops {
                let mut b = greedy.clone();
                b["stop"] = json!([stop]);
                cases.push((b, 1));
            }
            // The length limit, the end token (or the limit) and n = 2 sampled with a stop.
            let mut b = greedy.clone();
            b["max_tokens"] = 7.into();
            cases.push((b, 1));
            let mut b = base.clone();
            b["max_tokens"] = 64.into();
            cases.push((b, 1));
            let mut b = greedy.clone();
            b["n"] = 2.into();
            b["temperature"] = 0.9.into();
            b["seed"] = 11.into();
            b["stop"] = json!([stops[0]]);
            cases.push((b, 2));
            for (body, n) in &cases {
                check(&h, &vocab, path, body, *n).unwrap_or_else(|e| panic!("{what} {body}: {e}"));
            }
        }
        h.shutdown().unwrap();
    }
}
