//! Scenarios on a remote OpenAI-compatible endpoint (`experiment --endpoint URL`): the same runs and
//! measures as on the local model, with the server doing the generating.
//!
//! Chat scenarios go through `/v1/chat/completions` (the server renders its own template); transcript,
//! separator and raw ones through `/v1/completions` with the prompt rendered here. Each run is streamed, so
//! the chunks stand in for the tokens a local run sees: the answer is complete at the chunk that completes a
//! `done` text, repeats are counted over the chunks, and the token count is the server's `usage` when it
//! reports one. What a server cannot show differs from a local run: the bytes of a stop it cut never arrive,
//! so an answer written only inside a cut stop is not seen. Runs go out `concurrency` at a time, so a fleet
//! behind one URL shares the work.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use serde_json::{Value, json};

use super::run::{
    RunOptions, RunResult, ScenarioReport, count_markers, repeated_ngrams, summarise,
};
use super::scenario::Scenario;
use crate::Error;
use crate::client::{Client, Reply, clip};
use crate::pipeline::format::PromptFormat;
use crate::pipeline::settings::GenerateParams;

/// The request for run `params` of `sc`: its endpoint path and body. Only the fields a scenario sets are
/// sent, so a server that refuses unknown fields sees nothing it did not need.
pub fn request(
    client: &Client,
    sc: &Scenario,
    params: &GenerateParams,
) -> Result<(&'static str, Value), Error> {
    let mut body = if sc.format == PromptFormat::Chat {
        json!({"messages": sc.messages})
    } else {
        json!({"prompt": sc.format.render(&sc.messages, None)?})
    };
    let s = &params.sampling;
    body["max_tokens"] = json!(params.max_tokens);
    body["temperature"] = json!(s.temperature);
    body["seed"] = json!(s.seed);
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    if !params.stops.is_empty() {
        body["stop"] = json!(params.stops.stops());
    }
    if s.top_p < 1.0 {
        body["top_p"] = json!(s.top_p);
    }
    if s.top_k > 0 {
        body["top_k"] = json!(s.top_k);
    }
    if !params.stop_token_ids.is_empty() {
        body["stop_token_ids"] = json!(params.stop_token_ids);
    }
    if params.include_stop {
        body["include_stop_str_in_output"] = json!(true);
    }
    if params.ignore_eos {
        body["ignore_eos"] = json!(true);
    }
    if params.min_tokens > 0 {
        body["min_tokens"] = json!(params.min_tokens);
    }
    if !s.logit_bias.is_empty() {
        let bias: serde_json::Map<String, Value> = s
            .logit_bias
            .iter()
            .map(|&(id, b)| (id.to_string(), json!(b.max(-100.0))))
            .collect();
        body["logit_bias"] = Value::Object(bias);
    }
    if let Some(r) = params.repetition {
        body["repetition_stop"] = json!({"ngram": r.ngram, "count": r.count});
    }
    let path = if sc.format == PromptFormat::Chat {
        "/v1/chat/completions"
    } else {
        "/v1/completions"
    };
    Ok((path, client.with_model(body)))
}

/// One streamed run, measured as [`super::run_scenario`] measures a local one.
fn run_once(client: &Client, sc: &Scenario, params: &GenerateParams) -> Result<RunResult, Error> {
    let (path, body) = request(client, sc, params)?;
    let bad = |message: String| Error::Invalid {
        field: format!("{}{path}", client.base()),
        message,
    };
    let t0 = Instant::now();
    let events = match client.post(path, &body).map_err(|e| bad(e.to_string()))? {
        Reply::Ok(events) => events,
        Reply::Refused { status, body } => {
            return Err(bad(format!("refused ({status}): {}", clip(&body))));
        }
    };
    let total_ms = t0.elapsed().as_secs_f64() * 1e3;
    let chat = path.ends_with("chat/completions");
    let mut pieces: Vec<String> = Vec::new();
    let (mut finish, mut stop_reason, mut usage) = (None, None, None);
    for v in &events {
        if let Some(e) = v.get("error") {
            return Err(bad(format!("the stream carried an error: {e}")));
        }
        if let Some(n) = v
            .pointer("/usage/completion_tokens")
            .and_then(Value::as_u64)
        {
            usage = Some(n as usize);
        }
        let Some(c) = v.pointer("/choices/0") else {
            continue;
        };
        let piece = if chat {
            c.pointer("/delta/content")
        } else {
            c.get("text")
        };
        if let Some(p) = piece.and_then(Value::as_str).filter(|p| !p.is_empty()) {
            pieces.push(p.to_string());
        }
        if let Some(f) = c.get("finish_reason").and_then(Value::as_str) {
            finish = Some(f.to_string());
        }
        if let Some(r) = c.get("stop_reason").filter(|r| !r.is_null()) {
            stop_reason = Some(r.clone());
        }
    }
    let text: String = pieces.concat();
    let tokens = usage.unwrap_or(pieces.len()).max(pieces.len());
    // The chunk that completes a `done` text.
    let mut seen = String::new();
    let answered_at = pieces.iter().position(|p| {
        seen.push_str(p);
        sc.done.iter().any(|d| seen.contains(d.as_str()))
    });
    // Repeats are counted over the chunks, each text standing for one token id.
    let mut ids: HashMap<&str, u32> = HashMap::new();
    let chunk_ids: Vec<u32> = pieces
        .iter()
        .map(|p| {
            let n = ids.len() as u32;
            *ids.entry(p.as_str()).or_insert(n)
        })
        .collect();
    let finish_reason = finish.unwrap_or_else(|| "none".into());
    let (kind, detail) = match (finish_reason.as_str(), &stop_reason) {
        ("length", _) => ("length", "max tokens reached".to_string()),
        ("stop", Some(Value::String(s))) if s == "repetition" => {
            ("repetition", "repetition stop".to_string())
        }
        ("stop", Some(Value::String(s))) => ("stop_string", format!("stop string {s:?}")),
        ("stop", Some(Value::Number(n))) => ("stop_token", format!("stop token {n}")),
        ("stop", _) => ("stop", "stop (the server did not say which)".to_string()),
        (other, _) => ("other", format!("finish_reason {other:?}")),
    };
    Ok(RunResult {
        seed: params.sampling.seed,
        finish: kind.into(),
        finish_detail: detail,
        finish_reason: finish_reason.clone(),
        tokens,
        answered_at,
        wasted: answered_at.map(|a| tokens.saturating_sub(a + 1)),
        run_on_turns: count_markers(&text, &sc.turn_markers),
        repeated_ngrams: repeated_ngrams(&chunk_ids, sc.ngram),
        decode_ms: total_ms,
        prefill_ms: 0.0,
        text,
    })
}

/// Runs one scenario on the endpoint, `concurrency` runs at a time; `on_run` sees each result as it comes.
pub fn run_scenario_remote(
    client: &Client,
    sc: &Scenario,
    opts: &RunOptions,
    concurrency: usize,
    on_run: &(dyn Fn(&RunResult) + Sync),
) -> Result<ScenarioReport, Error> {
    let n = opts.runs_of(sc);
    let slots: Mutex<Vec<Option<Result<RunResult, Error>>>> =
        Mutex::new((0..n).map(|_| None).collect());
    let next = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..concurrency.clamp(1, n.max(1)) {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= n {
                        return;
                    }
                    let r = run_once(client, sc, &opts.params(sc, i));
                    if let Ok(r) = &r {
                        on_run(r);
                    }
                    let failed = r.is_err();
                    slots.lock().expect("no run panics holding the lock")[i] = Some(r);
                    if failed {
                        // Stop handing out runs: the first error is the answer.
                        next.store(n, Ordering::SeqCst);
                        return;
                    }
                }
            });
        }
    });
    let mut results = Vec::with_capacity(n);
    for r in slots
        .into_inner()
        .expect("no run panics holding the lock")
        .into_iter()
        .flatten()
    {
        results.push(r?);
    }
    Ok(summarise(sc, results))
}
