//! The server with the replay model (no weights) on the generated chat vocabulary (`common::chatml`, laid
//! out like SmolLM2's): every field, the error table, streaming against non-streaming, holdback, the routes.
//! Each test starts its own server on a free port and stops it.

use crate::common;

use common::*;
use serde_json::{Value, json};
use stoplab::serve::Limits;

fn completion(h: &stoplab::serve::Handle, body: Value) -> Value {
    let r = post(h, "/v1/completions", &body);
    assert_eq!(r.status, 200, "{body} -> {:?}", r.body);
    r.body
}

#[test]
fn a_stop_string_cuts_the_text_and_is_reported() {
    let h = chatml_server();
    let r = completion(
        &h,
        json!({"prompt": "user: Capital of Germany?\nAI:", "replay": " Berlin.\nuser: and France?",
               "stop": "\nuser:", "max_tokens": 50}),
    );
    assert_eq!(r["object"], "text_completion");
    assert_eq!(r["model"], h.model());
    assert!(r["id"].as_str().unwrap().starts_with("cmpl-"));
    assert!(r["created"].as_u64().unwrap() > 0);
    let c = &r["choices"][0];
    assert_eq!(c["index"], 0);
    assert_eq!(c["text"], " Berlin.");
    assert_eq!(c["finish_reason"], "stop");
    assert_eq!(c["stop_reason"], "\nuser:");
    let u = &r["usage"];
    assert!(u["prompt_tokens"].as_u64().unwrap() > 0);
    assert_eq!(
        u["total_tokens"].as_u64(),
        Some(u["prompt_tokens"].as_u64().unwrap() + u["completion_tokens"].as_u64().unwrap())
    );

    // include_stop_str_in_output keeps it; an array of stops works; the earliest match wins.
    let r = completion(
        &h,
        json!({"prompt": "AI:", "replay": " Berlin.\nuser: and France?", "stop": ["France", "\nuser:"],
               "include_stop_str_in_output": true, "max_tokens": 50}),
    );
    assert_eq!(r["choices"][0]["text"], " Berlin.\nuser:");
    assert_eq!(r["choices"][0]["stop_reason"], "\nuser:");
    h.shutdown().unwrap();
}

#[test]
fn length_end_token_and_stop_token_ids_finish_as_openai_says() {
    let h = chatml_server();
    let r = completion(
        &h,
        json!({"prompt": "AI:", "replay": " one two three four five", "max_tokens": 2}),
    );
    assert_eq!(r["choices"][0]["finish_reason"], "length");
    assert_eq!(r["choices"][0]["stop_reason"], Value::Null);
    assert_eq!(r["usage"]["completion_tokens"], 2);

    // The replay ends with the model's end token: finish "stop", stop_reason null (as vLLM answers).
    let r = completion(
        &h,
        json!({"prompt": "AI:", "replay": " Hi.", "max_tokens": 20}),
    );
    assert_eq!(r["choices"][0]["text"], " Hi.");
    assert_eq!(r["choices"][0]["finish_reason"], "stop");
    assert_eq!(r["choices"][0]["stop_reason"], Value::Null);

    let ids = tokenize(&h, " one two three");
    let r = completion(
        &h,
        json!({"prompt": "AI:", "replay": ids, "stop_token_ids": [ids[1]], "max_tokens": 20}),
    );
    assert_eq!(r["choices"][0]["text"], " one");
    assert_eq!(r["choices"][0]["stop_reason"], ids[1]);
    assert_eq!(r["usage"]["completion_tokens"], 2);

    // ignore_eos runs past the end token until max_tokens.
    let r = completion(
        &h,
        json!({"prompt": "AI:", "replay": " Hi.", "ignore_eos": true, "max_tokens": 6}),
    );
    assert_eq!(r["choices"][0]["finish_reason"], "length");
    assert_eq!(r["usage"]["completion_tokens"], 6);

    // min_tokens: no stop counts before it.
    let r = completion(
        &h,
        json!({"prompt": "AI:", "replay": "ab ab ab ab", "stop": "ab", "min_tokens": 3, "max_tokens": 20}),
    );
    let text = r["choices"][0]["text"].as_str().unwrap();
    assert!(text.starts_with("ab ab"), "{text:?}");
    assert_eq!(r["choices"][0]["stop_reason"], "ab");

    // stoplab's repetition stop: the loop ends on its first repeat; OpenAI clients see `stop`.
    let r = completion(
        &h,
        json!({"prompt": "AI:", "replay": " go go go go go go", "ignore_eos": true, "max_tokens": 20,
               "repetition_stop": {"ngram": 2, "count": 2}}),
    );
    assert_eq!(r["choices"][0]["finish_reason"], "stop");
    assert_eq!(r["choices"][0]["stop_reason"], "repetition");
    assert!(r["usage"]["completion_tokens"].as_u64().unwrap() < 20);
    h.shutdown().unwrap();
}

#[test]
fn chat_completions_render_the_template_and_answer_with_a_message() {
    let h = chatml_server();
    let body = json!({"model": h.model(), "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "Hi!"}]}],
        "replay": "Hello there!######\nuser: more", "stop": "######", "max_completion_tokens": 30});
    let r = post(&h, "/v1/chat/completions", &body);
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["object"], "chat.completion");
    assert!(r.body["id"].as_str().unwrap().starts_with("chatcmpl-"));
    let c = &r.body["choices"][0];
    assert_eq!(c["message"]["role"], "assistant");
    assert_eq!(c["message"]["content"], "Hello there!");
    assert_eq!(c["finish_reason"], "stop");
    assert_eq!(c["stop_reason"], "######");

    // The prompt is the model's chat template: /tokenize with the same messages counts the same tokens.
    let t = post(&h, "/tokenize", &json!({"messages": body["messages"]}));
    assert_eq!(t.body["count"], r.body["usage"]["prompt_tokens"]);
    h.shutdown().unwrap();
}

/// Streams and non-streamed answers to the same request, side by side.
fn both(h: &stoplab::serve::Handle, path: &str, body: Value) -> (Vec<String>, Value, Value) {
    // stream_options only goes with a stream (vLLM and OpenAI refuse it otherwise).
    let mut unstreamed = body.clone();
    unstreamed.as_object_mut().unwrap().remove("stream_options");
    let plain = post(h, path, &unstreamed);
    assert_eq!(plain.status, 200, "{:?}", plain.body);
    let mut sbody = body.clone();
    sbody["stream"] = true.into();
    let events = stream(h, path, &sbody);
    let parts = deltas(&events);
    let c = &plain.body["choices"][0];
    let text = c["text"]
        .as_str()
        .or_else(|| c["message"]["content"].as_str())
        .unwrap();
    assert_eq!(
        parts.concat(),
        text,
        "deltas concatenate to the non-streamed text"
    );
    assert_eq!(
        stream_finish(&events),
        (c["finish_reason"].clone(), c["stop_reason"].clone())
    );
    for e in &events {
        assert_eq!(
            e["id"], events[0]["id"],
            "every chunk of a stream shares its id"
        );
    }
    (parts, plain.body, Value::Array(events))
}

#[test]
fn streaming_equals_non_streaming_and_holds_back_exactly() {
    let h = chatml_server();
    let p = "/v1/completions";

    // A stop split over several tokens: nothing of it is sent, the text before it is.
    let ids = tokenize(&h, " Paris.\nuser: next");
    assert!(tokenize(&h, "\nuser:").len() > 1, "the stop spans tokens");
    let (parts, plain, _) = both(
        &h,
        p,
        json!({"prompt": "AI:", "replay": ids, "stop": "\nuser:", "max_tokens": 20}),
    );
    assert_eq!(plain["choices"][0]["text"], " Paris.");
    assert!(parts.iter().all(|d| !d.contains('\n')), "{parts:?}");

    // A token running past a stop: the stop ends inside " Berlin"; the rest of the token is cut too.
    assert_eq!(
        tokenize(&h, " Berlin").len(),
        1,
        "the stop ends inside one token"
    );
    let (parts, plain, _) = both(
        &h,
        p,
        json!({"prompt": "AI:", "replay": " In Berlin today", "stop": "erl", "max_tokens": 20}),
    );
    assert_eq!(plain["choices"][0]["text"], " In B");
    assert_eq!(parts.concat(), " In B");

    // A false start: "\nuse" is held back while it may begin "\nuser:", then released whole.
    let (parts, plain, _) = both(
        &h,
        p,
        json!({"prompt": "AI:", "replay": " Yes.\nuse it well", "stop": "\nuser:", "max_tokens": 20}),
    );
    assert_eq!(plain["choices"][0]["text"], " Yes.\nuse it well");
    let nl = parts.iter().find(|d| d.contains('\n')).unwrap();
    assert!(
        nl.starts_with('\n') && nl.contains("use"),
        "the held-back prefix goes out in one piece once it cannot be a stop: {parts:?}"
    );
    assert!(
        parts.len() > 1,
        "text before the false start was not held: {parts:?}"
    );

    // Multi-byte characters cut across tokens are never split across events.
    let (parts, plain, _) = both(
        &h,
        p,
        json!({"prompt": "AI:", "replay": "日本語 😀 €uro", "max_tokens": 40}),
    );
    assert_eq!(plain["choices"][0]["text"], "日本語 😀 €uro");
    assert!(parts.iter().all(|d| !d.contains('\u{FFFD}')), "{parts:?}");

    // Chat: the first chunk gives the role, the last the finish; include_usage adds a usage chunk.
    let body = json!({"messages": [{"role": "user", "content": "Hi"}], "replay": "Hello!\nuser: x",
                      "stop": ["\nuser:"], "stream_options": {"include_usage": true}});
    let (_, plain, events) = both(&h, "/v1/chat/completions", body);
    let events = events.as_array().unwrap();
    assert_eq!(events[0]["object"], "chat.completion.chunk");
    assert_eq!(events[0]["choices"][0]["delta"]["role"], "assistant");
    let last = events.last().unwrap();
    assert_eq!(last["choices"], json!([]));
    assert_eq!(last["usage"], plain["usage"]);
    h.shutdown().unwrap();
}

#[test]
fn every_request_field_is_accepted_and_unknown_fields_are_ignored() {
    let h = chatml_server();
    let r = completion(
        &h,
        json!({"model": h.model(), "prompt": "AI:", "replay": " ok", "max_tokens": 5, "temperature": 0.7,
               "top_p": 0.9, "seed": 42, "stop": null, "logit_bias": {"0": -100, "17": 2.5},
               "frequency_penalty": 0.5, "presence_penalty": -0.5, "stream": false,
               "n": 1, "top_k": -1, "min_p": 0.05, "repetition_penalty": 1.1, "stop_token_ids": [],
               "include_stop_str_in_output": false, "ignore_eos": false, "min_tokens": 0,
               "user": "someone", "logprobs": null, "echo": false, "suffix": null, "best_of": 1}),
    );
    assert_eq!(r["choices"][0]["text"], " ok");
    // Prompts as token ids, and the file-name alias of the model.
    let ids = tokenize(&h, "AI:");
    let r = completion(
        &h,
        json!({"model": CHATML_NAME, "prompt": ids, "replay": " ok"}),
    );
    assert_eq!(r["usage"]["prompt_tokens"], ids.len());
    // A batch of one prompt of ids, as lm-evaluation-harness sends it; a batch of two is refused by name.
    let r = completion(&h, json!({"prompt": [ids.clone()], "replay": " ok"}));
    assert_eq!(r["usage"]["prompt_tokens"], ids.len());
    let two = post(
        &h,
        "/v1/completions",
        &json!({"prompt": [ids.clone(), ids], "replay": " ok"}),
    );
    assert_eq!(two.status, 400);
    assert_eq!(two.body["error"]["param"], "prompt");
    h.shutdown().unwrap();
}

/// stoplab's `end_tokens`: which end tokens count, per request, as `--end-token` / `--add-end-token` /
/// `--no-end-token` on the command line. The generated vocabulary's set is SmolLM2's: {0 <|endoftext|>,
/// 2 <|im_end|>}.
#[test]
fn end_tokens_choose_which_end_tokens_count_per_request() {
    let h = chatml_server();
    let replay = " Hi.<|im_end|> more<|endoftext|> rest";
    // The model's set: <|im_end|> ends it.
    let r = completion(
        &h,
        json!({"prompt": "AI:", "replay": replay, "max_tokens": 20}),
    );
    assert_eq!(r["choices"][0]["text"], " Hi.");
    assert_eq!(r["usage"]["completion_tokens"], 3);
    // Removed from the set, <|im_end|> is a token like any other; <|endoftext|> still ends it.
    let r = completion(
        &h,
        json!({"prompt": "AI:", "replay": replay, "max_tokens": 20, "end_tokens": {"remove": [2]}}),
    );
    assert_eq!(r["choices"][0]["text"], " Hi.<|im_end|> more");
    assert_eq!(r["choices"][0]["finish_reason"], "stop");
    assert_eq!(r["choices"][0]["stop_reason"], Value::Null);
    // Replaced by an ordinary token: the generation ends on it as on the model's own end token (stop_reason
    // null, the token not in the text).
    let more = tokenize(&h, " more")[0];
    let r = completion(
        &h,
        json!({"prompt": "AI:", "replay": replay, "max_tokens": 20, "end_tokens": {"replace": [more]}}),
    );
    assert_eq!(r["choices"][0]["text"], " Hi.<|im_end|>");
    assert_eq!(r["choices"][0]["finish_reason"], "stop");
    // Ids are checked against the vocabulary and named by their place.
    let r = post(
        &h,
        "/v1/completions",
        &json!({"prompt": "AI:", "replay": " x", "end_tokens": {"add": [7, 999999]}}),
    );
    assert_eq!(r.status, 400, "{:?}", r.body);
    let msg = r.body["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("end_tokens.add[1]") && msg.contains("999999"),
        "{msg}"
    );
    let r = post(
        &h,
        "/v1/completions",
        &json!({"prompt": "AI:", "replay": " x", "end_tokens": {"drop": [2]}}),
    );
    assert_eq!(r.status, 400, "{:?}", r.body);
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("end_tokens")
    );
    h.shutdown().unwrap();
}

#[test]
fn the_error_table() {
    let h = chatml_server();
    let ok = json!({"prompt": "AI:", "replay": " x", "max_tokens": 4});
    let with = |k: &str, v: Value| {
        let mut b = ok.clone();
        b[k] = v;
        b
    };
    let cases: Vec<(&str, Value, u16, Option<&str>)> = vec![
        (
            "wrong type",
            with("temperature", json!("hot")),
            400,
            Some("temperature"),
        ),
        (
            "stream as a string",
            with("stream", json!("yes")),
            400,
            Some("stream"),
        ),
        ("empty stop", with("stop", json!("")), 400, Some("stop")),
        (
            "empty stop in a list",
            with("stop", json!(["a", ""])),
            400,
            Some("stop[1]"),
        ),
        (
            "stop of the wrong type",
            with("stop", json!(5)),
            400,
            Some("stop"),
        ),
        (
            "65 stops",
            with(
                "stop",
                json!((0..65).map(|i| format!("s{i}")).collect::<Vec<_>>()),
            ),
            400,
            Some("stop"),
        ),
        (
            "a stop over 1024 bytes",
            with("stop", json!("x".repeat(1025))),
            400,
            Some("stop"),
        ),
        (
            "max_tokens 0",
            with("max_tokens", json!(0)),
            400,
            Some("max_tokens"),
        ),
        (
            "max_tokens negative",
            with("max_tokens", json!(-3)),
            400,
            Some("max_tokens"),
        ),
        (
            "beyond the context",
            with("max_tokens", json!(100_000)),
            400,
            Some("max_tokens"),
        ),
        (
            "logit_bias id outside the vocabulary",
            with("logit_bias", json!({"99999999": 1})),
            400,
            Some("logit_bias.99999999"),
        ),
        (
            "logit_bias key not an id",
            with("logit_bias", json!({"abc": 1})),
            400,
            Some("logit_bias.abc"),
        ),
        (
            "logit_bias beyond 100",
            with("logit_bias", json!({"5": 101})),
            400,
            Some("logit_bias.5"),
        ),
        ("n above --max-n", with("n", json!(17)), 400, Some("n")),
        ("n of 0", with("n", json!(0)), 400, Some("n")),
        (
            "repetition_stop count 1",
            with("repetition_stop", json!({"ngram": 2, "count": 1})),
            400,
            Some("repetition_stop.count"),
        ),
        (
            "a stop over 1024 bytes in a list",
            with("stop", json!(["a", "x".repeat(1025)])),
            400,
            Some("stop[1]"),
        ),
        ("top_p 0", with("top_p", json!(0)), 400, Some("top_p")),
        (
            "negative temperature",
            with("temperature", json!(-1)),
            400,
            Some("temperature"),
        ),
        (
            "penalty beyond 2",
            with("presence_penalty", json!(3)),
            400,
            Some("presence_penalty"),
        ),
        (
            "stop_token_ids negative",
            with("stop_token_ids", json!([-1])),
            400,
            Some("stop_token_ids"),
        ),
        (
            "stop_token_ids outside",
            with("stop_token_ids", json!([4, 99999999])),
            400,
            Some("stop_token_ids[1]"),
        ),
        (
            "min_tokens above max",
            with("min_tokens", json!(10)),
            400,
            Some("min_tokens"),
        ),
        (
            "replay id outside",
            with("replay", json!([99999999])),
            400,
            Some("replay"),
        ),
        (
            "no replay without weights",
            json!({"prompt": "AI:"}),
            400,
            Some("replay"),
        ),
        ("no prompt", json!({"replay": "x"}), 400, Some("prompt")),
        (
            "empty prompt",
            with("prompt", json!("")),
            400,
            Some("prompt"),
        ),
        ("unknown model", with("model", json!("gpt-4")), 404, None),
        (
            "stream_options not an object",
            with("stream_options", json!(true)),
            400,
            Some("stream_options"),
        ),
    ];
    for (what, body, status, param) in cases {
        let r = post(&h, "/v1/completions", &body);
        assert_eq!(r.status, status, "{what}: {:?}", r.body);
        let e = &r.body["error"];
        assert!(e["message"].is_string(), "{what}: {:?}", r.body);
        assert!(e["type"].is_string(), "{what}: {:?}", r.body);
        assert!(e.get("code").is_some(), "{what}: {:?}", r.body);
        if let Some(p) = param {
            assert_eq!(e["param"], p, "{what}: {:?}", r.body);
            assert!(
                e["message"].as_str().unwrap().starts_with(p),
                "{what}: {:?}",
                r.body
            );
        }
    }
    // The context error says how many tokens.
    let r = post(&h, "/v1/completions", &with("max_tokens", json!(100_000)));
    let m = r.body["error"]["message"].as_str().unwrap();
    assert!(m.contains("100000") && m.contains("context of"), "{m}");

    // Chat's own fields.
    let chat = |b: Value| post(&h, "/v1/chat/completions", &b);
    let r = chat(json!({"replay": "x"}));
    assert_eq!(
        (r.status, r.body["error"]["param"].clone()),
        (400, json!("messages"))
    );
    let r = chat(json!({"messages": [], "replay": "x"}));
    assert_eq!(r.status, 400);
    let r = chat(json!({"messages": [{"role": "user", "content": 5}], "replay": "x"}));
    assert_eq!(r.body["error"]["param"], "messages[0].content");
    let r = chat(json!({"messages": [{"content": "hi"}], "replay": "x"}));
    assert_eq!(r.body["error"]["param"], "messages[0].role");
    let r = chat(
        json!({"messages": [{"role": "user", "content": "hi"}], "replay": "x", "max_completion_tokens": 0}),
    );
    assert_eq!(r.body["error"]["param"], "max_completion_tokens");

    // Bodies that are not requests at all: 400, never a 500.
    for body in [
        &b""[..],
        b"{",
        b"null",
        b"[]",
        b"\"prompt\"",
        b"{\"prompt\": {}}",
        b"{\"prompt\": [1, \"a\"]}",
        b"\xff\xfe",
        "[".repeat(10_000).as_bytes(),
    ] {
        let r = post_bytes(&h, "/v1/completions", body, &[]);
        assert_eq!(
            r.status,
            400,
            "{:?} -> {:?}",
            String::from_utf8_lossy(body),
            r.body
        );
        assert!(r.body["error"]["message"].is_string());
    }

    // 404 unknown route, 405 wrong method, 413 over the body limit: all in OpenAI's error shape.
    let r = get(&h, "/v1/nothing");
    assert_eq!(r.status, 404);
    assert!(r.body["error"]["message"].is_string());
    let r = get(&h, "/v1/completions");
    assert_eq!(r.status, 405);
    // A body small enough to sit whole in the socket buffers, so the early 413 cannot break the client's pipe.
    let small = start_chatml(
        None,
        Limits {
            max_body_bytes: 1024,
            ..Limits::default()
        },
    );
    let big = json!({"prompt": "x".repeat(2000), "replay": "x"});
    let r = post(&small, "/v1/completions", &big);
    assert_eq!(r.status, 413, "{:?}", r.body);
    let m = r.body["error"]["message"].as_str().unwrap();
    assert!(m.contains("1024"), "{m}");
    small.shutdown().unwrap();

    // The server is still fine.
    assert_eq!(post(&h, "/v1/completions", &ok).status, 200);
    h.shutdown().unwrap();
}

#[test]
fn a_bad_streamed_request_gets_its_status_not_a_200() {
    let h = chatml_server();
    let body =
        json!({"prompt": "AI:", "replay": "x", "stop_token_ids": [99999999], "stream": true});
    let r = post(&h, "/v1/completions", &body);
    assert_eq!(r.status, 400);
    assert_eq!(r.body["error"]["param"], "stop_token_ids[0]");
    h.shutdown().unwrap();
}

#[test]
fn an_api_key_is_required_when_set() {
    let h = start_chatml(Some("sekret"), Limits::default());
    let body = json!({"prompt": "AI:", "replay": " x"}).to_string();
    let r = post_bytes(&h, "/v1/completions", body.as_bytes(), &[]);
    assert_eq!(r.status, 401);
    assert_eq!(r.body["error"]["code"], "invalid_api_key");
    let r = post_bytes(
        &h,
        "/v1/completions",
        body.as_bytes(),
        &[("Authorization", "Bearer wrong")],
    );
    assert_eq!(r.status, 401);
    let r = post_bytes(
        &h,
        "/v1/completions",
        body.as_bytes(),
        &[("Authorization", "Bearer sekret")],
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    let r = reply_models(&h, None);
    assert_eq!(r, 401);
    assert_eq!(reply_models(&h, Some("Bearer sekret")), 200);
    // Health checks need no key.
    assert_eq!(get(&h, "/health").status, 200);
    h.shutdown().unwrap();
}

fn reply_models(h: &stoplab::serve::Handle, auth: Option<&str>) -> u16 {
    let mut req = ureq::get(&url(h, "/v1/models"));
    if let Some(a) = auth {
        req = req.set("Authorization", a);
    }
    match req.call() {
        Ok(r) => r.status(),
        Err(ureq::Error::Status(s, _)) => s,
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn models_health_tokenize_detokenize() {
    let h = chatml_server();
    let m = get(&h, "/v1/models");
    assert_eq!(m.status, 200);
    assert_eq!(m.body["object"], "list");
    assert_eq!(m.body["data"][0]["id"], h.model());
    assert_eq!(m.body["data"][0]["object"], "model");
    assert!(m.body["data"][0]["max_model_len"].as_u64().unwrap() > 0);

    let health = get(&h, "/health");
    assert_eq!(health.body["status"], "ok");
    assert_eq!(health.body["busy"], 0);

    let ids = tokenize(&h, "Hello <|im_end|> world");
    assert!(
        ids.contains(&2),
        "special tokens in the text are parsed: {ids:?}"
    );
    let d = post(&h, "/detokenize", &json!({"tokens": ids}));
    assert_eq!(d.body["prompt"], "Hello <|im_end|> world");
    assert_eq!(
        d.body["content"], d.body["prompt"],
        "llama.cpp's key beside vLLM's"
    );
    let d = post(&h, "/detokenize", &json!({"tokens": [99999999]}));
    assert_eq!(
        (d.status, d.body["error"]["param"].clone()),
        (400, json!("tokens"))
    );
    let d = post(&h, "/detokenize", &json!({"tokens": "abc"}));
    assert_eq!(d.status, 400);
    h.shutdown().unwrap();
}

#[test]
fn shutdown_stops_listening() {
    let h = chatml_server();
    let addr = h.addr();
    assert_eq!(get(&h, "/health").status, 200);
    h.shutdown().unwrap();
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "the port is closed"
    );
}

#[test]
fn a_raw_request_without_content_type_works_like_curl() {
    let h = chatml_server();
    let body = r#"{"prompt": "AI:", "replay": " hi", "stop": "i"}"#;
    let out = raw(
        &h,
        format!(
            "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    );
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.contains(r#""text":" h""#), "{out}");
    h.shutdown().unwrap();
}

#[cfg(unix)]
#[test]
fn the_command_serves_until_sigint_or_sigterm_then_exits_0() {
    for signal in ["-INT", "-TERM"] {
        serve_until(signal);
    }
}

#[cfg(unix)]
fn serve_until(signal: &str) {
    use std::io::BufRead;
    use std::process::{Command, Stdio};
    /// Kills the server if the test fails before it is stopped.
    struct Child(std::process::Child);
    impl Drop for Child {
        fn drop(&mut self) {
            if self.0.try_wait().ok().flatten().is_none() {
                let _ = self.0.kill();
                let _ = self.0.wait();
            }
        }
    }
    let mut child = Child(
        Command::new(env!("CARGO_BIN_EXE_stoplab"))
            .args(["serve", "--replay-only", "--port", "0", "--model"])
            .arg(chatml_vocab())
            .env_remove("STOPLAB_API_KEY")
            .env_remove("STOPLAB_MODEL")
            .stderr(Stdio::piped())
            .spawn()
            .expect("the binary runs"),
    );
    let mut lines = std::io::BufReader::new(child.0.stderr.take().unwrap()).lines();
    let addr = loop {
        let line = lines
            .next()
            .expect("the server says where it listens")
            .unwrap();
        if let Some(rest) = line.split("at http://").nth(1) {
            break rest.split('/').next().unwrap().to_string();
        }
    };
    let r = ureq::post(&format!("http://{addr}/v1/completions"))
        .send_string(r#"{"prompt": "AI:", "replay": " ok"}"#)
        .unwrap();
    let r: Value = serde_json::from_str(&r.into_string().unwrap()).unwrap();
    assert_eq!(r["choices"][0]["text"], " ok");
    let killed = Command::new("kill")
        .args([signal, &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = child.0.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{signal} is a normal end");
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(rest.iter().any(|l| l.contains("shutting down")), "{rest:?}");
}

/// vLLM's `skip_special_tokens: false` with `include_stop_str_in_output`: the end token's name ends the
/// text, and the last chunk's ids spell it; without either, the name stays out.
#[test]
fn skip_special_tokens_false_keeps_the_end_tokens_name_with_include_stop() {
    let h = chatml_server();
    let body = |skip: bool, include: bool| {
        json!({"prompt": "AI:", "replay": " Berlin.<|im_end|> more", "max_tokens": 20,
               "skip_special_tokens": skip, "include_stop_str_in_output": include})
    };
    for (skip, include, want) in [
        (false, true, " Berlin.<|im_end|>"),
        (false, false, " Berlin."),
        (true, true, " Berlin."),
    ] {
        let r = completion(&h, body(skip, include));
        let c = &r["choices"][0];
        assert_eq!(c["text"], want, "skip {skip} include {include}");
        assert_eq!(c["finish_reason"], "stop");
        assert_eq!(c["stop_reason"], Value::Null);
        let mut s = body(skip, include);
        s["stream"] = true.into();
        let streamed: String = stream(&h, "/v1/completions", &s)
            .iter()
            .filter_map(|e| e["choices"][0]["text"].as_str().map(String::from))
            .collect();
        assert_eq!(streamed, want, "streamed, skip {skip} include {include}");
    }
    h.shutdown().unwrap();
}
