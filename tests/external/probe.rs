//! `stoplab probe` against three servers: stoplab's own (every probe passes), a small fake server with
//! llama.cpp's two known stop bugs (the probes must catch both), and llama.cpp's own server from the
//! `xllamacpp` wheel on the default model (its known failures reported as failures, its correct behaviour as
//! passes).

use crate::common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use stoplab::client::{Client, ClientOptions};
use stoplab::pipeline::stop::{naive_first_match, naive_hold};
use stoplab::probe::{self, Api, ProbeOptions, ProbeResult, Verdict};
use stoplab::serve::Limits;

fn client(url: &str) -> Client {
    Client::new(ClientOptions {
        url: url.into(),
        api_key: None,
        model: None,
        timeout: Duration::from_secs(120),
        retries: 1,
    })
    .unwrap()
}

fn verdicts(results: &[ProbeResult], api: Api) -> HashMap<&'static str, Verdict> {
    results
        .iter()
        .filter(|r| r.api == api)
        .map(|r| (r.probe, r.verdict))
        .collect()
}

fn run(url: &str, apis: Vec<Api>) -> Vec<ProbeResult> {
    run_with(url, apis, &[], json!({}))
}

fn run_with(url: &str, apis: Vec<Api>, only: &[&str], extra_body: Value) -> Vec<ProbeResult> {
    let opts = ProbeOptions {
        apis,
        only: only.iter().map(|s| s.to_string()).collect(),
        extra_body,
        ..Default::default()
    };
    probe::run(&client(url), &opts, &|_| {}).expect("the baselines come back")
}

#[test]
fn every_probe_passes_or_is_explained_on_stoplab_serve() {
    let server = common::start(true, None, Limits::default());
    let url = format!("http://{}/v1", server.addr());
    let results = run(&url, vec![Api::Completions, Api::Chat]);
    for r in &results {
        assert_ne!(r.verdict, Verdict::Fail, "{r:#?}");
    }
    let chat = verdicts(&results, Api::Chat);
    // The chat answer ends by itself, so every probe has something to test there but the reasoning probes:
    // the default model has no reasoning markers of its own.
    for (name, v) in &chat {
        let want = match *name {
            "stop-limits" => Verdict::Info,
            "stop-in-reasoning" | "end-in-reasoning" => Verdict::NotApplicable,
            _ => Verdict::Pass,
        };
        assert_eq!(*v, want, "chat {name}");
    }
    let completions = verdicts(&results, Api::Completions);
    for name in [
        "stop-inside-token",
        "stop-spans-tokens",
        "token-runs-past-stop",
        "later-listed-first",
        "overlapping-stops",
        "held-at-length",
        "include-stop",
        "stop-token-ids",
        "finish-reason",
        "stop-reason",
        "empty-stop",
        "ledger-stop",
        "ledger-stop-cut",
        "ledger-length",
        "ledger-end-token",
        "ledger-n2",
        "abort",
        "stop-in-copied-span",
    ] {
        assert_eq!(completions[name], Verdict::Pass, "completions {name}");
    }
    server.shutdown().unwrap();
}

#[test]
fn the_reasoning_probes_pass_on_stoplab_serve_with_markers_and_catch_a_stop_armed_inside() {
    let server = common::start(true, None, Limits::default());
    let url = format!("http://{}/v1", server.addr());
    let only = ["stop-in-reasoning", "end-in-reasoning"];
    // The default model writes no markers of its own: given plain-text ones, the answer the probes open
    // with <think> is its reasoning, and it ends there with its end token.
    let markers = json!({"reasoning_markers": "<think>,</think>"});
    let results = run_with(&url, vec![Api::Chat, Api::Completions], &only, markers);
    for r in &results {
        let want = match r.api {
            Api::Chat => Verdict::Pass,
            Api::Completions => Verdict::NotApplicable,
        };
        assert_eq!(r.verdict, want, "{r:#?}");
    }
    // A server whose stops are armed inside the reasoning (stoplab with stop_scope all, vLLM's V1 engine)
    // fails the stop probe, and says where the stop cut.
    let armed = json!({"reasoning_markers": "<think>,</think>", "stop_scope": "all"});
    let results = run_with(&url, vec![Api::Chat], &only[..1], armed);
    assert_eq!(results[0].verdict, Verdict::Fail, "{:#?}", results[0]);
    assert!(
        results[0].note.contains("ended the reasoning"),
        "{}",
        results[0].note
    );
    server.shutdown().unwrap();
}

/// A fake OpenAI server whose "model" always writes the same tokens, with llama.cpp's two stop bugs: text
/// held back as a possible stop prefix is dropped when a stream hits `max_tokens`, and an empty stop ends the
/// generation at once. It ignores every field but `prompt`, `max_tokens`, `stop` and `stream`.
struct Fake {
    addr: String,
    stop: Arc<AtomicBool>,
}

const WORDS: &[&str] = &[
    " The", " capital", " of", " France", " is", " Paris", ".", " It", " is", " known", " for",
    " the", " Eiffel", " Tower", ".",
];

impl Fake {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = format!("http://{}", listener.local_addr().unwrap());
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        std::thread::spawn(move || {
            while !stopping.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        conn.set_nonblocking(false).unwrap();
                        std::thread::spawn(move || Self::serve(conn));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Self { addr, stop }
    }

    fn serve(mut conn: TcpStream) {
        let mut reader = BufReader::new(conn.try_clone().unwrap());
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
        let mut length = 0;
        loop {
            let mut h = String::new();
            reader.read_line(&mut h).unwrap();
            if h.trim().is_empty() {
                break;
            }
            if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse().unwrap();
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).unwrap();
        let req: Value = serde_json::from_slice(&body).unwrap_or(json!({}));
        if path != "/v1/completions" {
            let _ = conn.write_all(
                b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
            return;
        }
        let max = req["max_tokens"].as_u64().unwrap_or(16) as usize;
        let stops: Vec<String> = match &req["stop"] {
            Value::String(s) => vec![s.clone()],
            Value::Array(a) => a
                .iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect(),
            _ => Vec::new(),
        };
        let stream = req["stream"].as_bool() == Some(true);
        // The generation: pieces as released, and the finish.
        let mut text = String::new();
        let mut sent = 0;
        let mut pieces = Vec::new();
        let mut finish = "stop";
        for (i, w) in WORDS.iter().enumerate() {
            if stops.iter().any(String::is_empty) {
                break; // bug: the empty stop "matches" before anything is shown
            }
            text.push_str(w);
            if let Some(m) = naive_first_match(text.as_bytes(), &stops) {
                pieces.push(text[sent..m.start].to_string());
                text.truncate(m.start);
                break;
            }
            if i + 1 == max {
                finish = "length";
                if !stream {
                    pieces.push(text[sent..].to_string());
                }
                break; // bug: a stream drops what it held at the length limit
            }
            let safe = text.len() - naive_hold(text.as_bytes(), &stops);
            pieces.push(text[sent..safe].to_string());
            sent = safe;
        }
        let shown: String = pieces.concat();
        let reply = if stream {
            let mut sse = String::new();
            for p in pieces.iter().filter(|p| !p.is_empty()) {
                sse.push_str(&format!(
                    "data: {}\n\n",
                    json!({"choices": [{"text": p, "finish_reason": null}]})
                ));
            }
            sse.push_str(&format!(
                "data: {}\n\n",
                json!({"choices": [{"text": "", "finish_reason": finish}]})
            ));
            sse.push_str("data: [DONE]\n\n");
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n{sse}"
            )
        } else {
            let body = json!({"choices": [{"text": shown, "finish_reason": finish}]}).to_string();
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
        };
        let _ = conn.write_all(reply.as_bytes());
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

#[test]
fn the_probes_catch_a_server_that_loses_held_text_and_matches_an_empty_stop() {
    let fake = Fake::start();
    let results = run(&fake.addr, vec![Api::Completions]);
    let v = verdicts(&results, Api::Completions);
    assert_eq!(v["held-at-length"], Verdict::Fail);
    let held = results
        .iter()
        .find(|r| r.probe == "held-at-length")
        .unwrap();
    assert!(held.note.contains("streamed text differs"), "{held:#?}");
    assert!(!held.note.contains("unstreamed text differs"), "{held:#?}");
    assert_eq!(v["empty-stop"], Verdict::Fail);
    // What it does right passes; what it lacks is unsupported, never a pass.
    for name in [
        "stop-inside-token",
        "stop-spans-tokens",
        "token-runs-past-stop",
        "later-listed-first",
    ] {
        assert_eq!(v[name], Verdict::Pass, "{name}");
    }
    for name in ["include-stop", "stop-reason", "stop-token-ids"] {
        assert_eq!(v[name], Verdict::Unsupported, "{name}");
    }
}

/// llama.cpp's server as a Python wheel: the peer the probes are run against.
const XLLAMACPP: &str = "xllamacpp==2026.10.11549";

struct Peer(Child);

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn llama_cpp_server_fails_where_it_is_known_to_and_passes_the_rest() {
    let python = match crate::common::venv("xllamacpp-venv", "xllamacpp", XLLAMACPP) {
        Ok(p) => p,
        Err(why) => {
            eprintln!("SKIPPED llama_cpp_server: {why}");
            return;
        }
    };
    let model = stoplab::fetch::cached_path(stoplab::fetch::Manifest::builtin().default_model());
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/peer/xllamacpp_server.py");
    let child = Command::new(&python)
        .arg(&script)
        .arg(&model)
        .arg(port.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the peer starts");
    let _peer = Peer(child);
    let url = format!("http://127.0.0.1:{port}");
    let start = Instant::now();
    // /health answers 503 while the model loads, then 200.
    while ureq::get(&format!("{url}/health")).call().is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "llama.cpp's server did not start"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let results = run(&url, vec![Api::Completions, Api::Chat]);
    for api in [Api::Completions, Api::Chat] {
        let v = verdicts(&results, api);
        // Its two known bugs, with their evidence.
        assert_eq!(v["held-at-length"], Verdict::Fail, "{api:?}");
        assert_eq!(v["empty-stop"], Verdict::Fail, "{api:?}");
        // What it gets right.
        for name in [
            "stop-inside-token",
            "stop-spans-tokens",
            "token-runs-past-stop",
            "later-listed-first",
            "overlapping-stops",
            "finish-reason",
        ] {
            assert_eq!(v[name], Verdict::Pass, "{api:?} {name}");
        }
        // vLLM's fields it does not have, and n > 1.
        for name in ["include-stop", "stop-reason", "stop-token-ids", "ledger-n2"] {
            assert_eq!(v[name], Verdict::Unsupported, "{api:?} {name}");
        }
        // The stream ledger: a stop cut inside a token leaves that token out of the log-probabilities (or
        // pairs it with another token's text); the length limit is kept; a hang-up is survived.
        assert_eq!(v["ledger-stop-cut"], Verdict::Fail, "{api:?}");
        for name in ["ledger-length", "abort", "stop-in-copied-span"] {
            assert_eq!(v[name], Verdict::Pass, "{api:?} {name}");
        }
    }
    // Completions: the stop's tokens are streamed with empty text; chat: the end token's entry is in the
    // unstreamed log-probabilities and not in the streamed ones.
    let v = verdicts(&results, Api::Completions);
    assert_eq!(v["ledger-stop"], Verdict::Fail);
    assert_eq!(v["ledger-end-token"], Verdict::Pass);
    let v = verdicts(&results, Api::Chat);
    assert_eq!(v["ledger-stop"], Verdict::Pass);
    assert_eq!(v["ledger-end-token"], Verdict::Fail);
    // The default model is no reasoning model: llama.cpp's parser leaves the answer opened with <think> in
    // content (the unstreamed content starts with the opening, the streamed one does not), so n/a.
    for name in ["stop-in-reasoning", "end-in-reasoning"] {
        assert_eq!(v[name], Verdict::NotApplicable, "{name}");
    }
    let held = results
        .iter()
        .find(|r| r.probe == "held-at-length")
        .unwrap();
    assert!(held.got.contains("streamed:"), "{held:#?}");
    // llama.cpp takes a grammar, so the stop probes ran on a forced text (which ends by itself) and the
    // end-token probes on the greedy output.
    assert!(held.method.contains("grammar"), "{held:#?}");
    let v = verdicts(&results, Api::Completions);
    assert_eq!(v["held-at-end-token"], Verdict::Pass);
    for r in results.iter().filter(|r| r.probe == "ignore-eos") {
        assert!(r.method.contains("greedy"), "{r:#?}");
    }

    // The quick scenarios run on it too.
    let o = Command::new(env!("CARGO_BIN_EXE_stoplab"))
        .args(["experiment", "--quick", "--json", "--endpoint", &url])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let report: Value = serde_json::from_slice(&o.stdout).unwrap();
    let scenarios = report["scenarios"].as_array().unwrap();
    assert_eq!(scenarios.len(), stoplab::lab::experiment::SHIPPED.len());
    // The transcript with "\nuser:" as a stop ends on it; without, it runs to the limit.
    let finish = |name: &str| {
        scenarios.iter().find(|s| s["name"] == name).unwrap()["results"][0]["finish_reason"].clone()
    };
    assert_eq!(finish("2-transcript-stop"), "stop");
    assert_eq!(finish("1-transcript-nostop"), "length");
}

#[test]
fn bench_overhead_times_an_endpoint_with_each_number_of_stops() {
    let server = common::start(true, None, Limits::default());
    let url = format!("http://{}", server.addr());
    let o = Command::new(env!("CARGO_BIN_EXE_stoplab"))
        .args([
            "bench",
            "overhead",
            "--endpoint",
            &url,
            "--stops",
            "0,4,64,100",
            "--rounds",
            "2",
            "-n",
            "8",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let rows = v["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 4);
    for r in &rows[..3] {
        assert_eq!(r["ms_per_token"].as_array().unwrap().len(), 2, "{r}");
        assert!(r["median_ms"].as_f64().unwrap() > 0.0);
    }
    assert_eq!(rows[0]["ratio"], 1.0);
    // stoplab serve takes at most 64 stops by default: the refusal is reported, not hidden.
    assert!(
        rows[3]["refused"].as_str().unwrap().contains("at most 64"),
        "{}",
        rows[3]
    );
    // One plain request first, then two rounds over the three accepted counts and one refused try.
    assert_eq!(v["requests"], 1 + 3 * 2 + 1);
    server.shutdown().unwrap();
}
