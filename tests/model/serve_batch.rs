//! The server's continuous batching with the real model (SmolLM2-135M from the cache): requests run side by
//! side, each answers what it answers alone, and the queue bound counts the running ones.

use crate::common;

use common::*;
use serde_json::json;
use stoplab::serve::Limits;

/// Each choice's text and its whole choice object.
type Texts = Vec<(String, serde_json::Value)>;

/// Two endless streams both produce text at once (with one slot the second would wait for the first's
/// 3,000 tokens); with `--queue 0` a third request is refused, and hanging up frees a slot at once.
#[test]
fn parallel_streams_run_side_by_side_and_the_queue_counts_them() {
    let h = start(
        true,
        None,
        Limits {
            parallel: 2,
            queue: 0,
            ..Limits::default()
        },
    );
    let body = |seed: u64| {
        json!({"prompt": "Once upon a time", "ignore_eos": true, "max_tokens": 3000, "stream": true,
               "temperature": 0.8, "seed": seed})
    };
    let first = open_stream(&h, "/v1/completions", &body(1));
    let second = open_stream(&h, "/v1/completions", &body(2));
    let health = wait_health(&h, |b| b["busy"] == 2);
    assert_eq!(health["running"], true, "{health}");
    let short = json!({"prompt": "Hi", "max_tokens": 3, "temperature": 0});
    let r = post(&h, "/v1/completions", &short);
    assert_eq!(r.status, 429, "{:?}", r.body);
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("2 generations run and 0 wait"),
        "{:?}",
        r.body
    );
    drop(first);
    wait_health(&h, |b| b["busy"] == 1 && b["cancelled"] == 1);
    let r = post(&h, "/v1/completions", &short);
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["usage"]["completion_tokens"], 3);
    drop(second);
    let health = wait_health(&h, |b| b["busy"] == 0 && b["running"] == false);
    assert_eq!(health["cancelled"], 2, "{health}");
    assert_eq!(health["completed"], 1, "{health}");
    h.shutdown().unwrap();
}

/// Requests sent together (batched) answer exactly what each answers alone, streamed or not: greedy and
/// seeded sampling, stop strings, different lengths (so some leave the batch while others run).
#[test]
fn concurrent_requests_answer_what_they_answer_alone() {
    let h = start(true, None, Limits::default());
    let bodies: Vec<serde_json::Value> = vec![
        json!({"prompt": "user: What is the capital of France?\nAI:", "stop": "\nuser:", "max_tokens": 30,
               "temperature": 0}),
        json!({"prompt": "Once upon a time", "max_tokens": 7, "temperature": 0.9, "seed": 3}),
        json!({"prompt": "The number after 41 is", "max_tokens": 25, "temperature": 0.7, "seed": 11,
               "stop": ["."]}),
        json!({"messages": [{"role": "user", "content": "Name a colour."}], "max_tokens": 20,
               "temperature": 0.8, "seed": 5}),
        json!({"prompt": "In 1969,", "max_tokens": 12, "temperature": 1.0, "seed": 2, "n": 2}),
    ];
    let path = |b: &serde_json::Value| {
        if b.get("messages").is_some() {
            "/v1/chat/completions"
        } else {
            "/v1/completions"
        }
    };
    let texts = |r: &serde_json::Value| -> Vec<(String, serde_json::Value)> {
        r["choices"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                let t = c["text"]
                    .as_str()
                    .or_else(|| c["message"]["content"].as_str())
                    .unwrap()
                    .to_owned();
                (t, c["finish_reason"].clone())
            })
            .collect()
    };
    let alone: Vec<_> = bodies
        .iter()
        .map(|b| {
            let r = post(&h, path(b), b);
            assert_eq!(r.status, 200, "{:?}", r.body);
            texts(&r.body)
        })
        .collect();
    // Twice the requests at once, half of them streamed.
    let together: Vec<(usize, bool, Texts)> = std::thread::scope(|s| {
        let handles: Vec<_> = bodies
            .iter()
            .enumerate()
            .flat_map(|(i, b)| [(i, b, false), (i, b, true)])
            .map(|(i, b, streamed)| {
                let h = &h;
                s.spawn(move || {
                    if streamed && b["n"].is_null() {
                        let mut sb = b.clone();
                        sb["stream"] = true.into();
                        let events = stream(h, path(b), &sb);
                        let (finish, _) = stream_finish(&events);
                        (i, true, vec![(deltas(&events).concat(), finish)])
                    } else {
                        let r = post(h, path(b), b);
                        assert_eq!(r.status, 200, "{:?}", r.body);
                        (i, false, texts(&r.body))
                    }
                })
            })
            .collect();
        handles.into_iter().map(|t| t.join().unwrap()).collect()
    });
    for (i, streamed, got) in together {
        assert_eq!(got, alone[i], "request {i} (streamed: {streamed})");
    }
    assert!(
        alone[4][0] != alone[4][1],
        "n choices differ: {:?}",
        alone[4]
    );
    h.shutdown().unwrap();
}
