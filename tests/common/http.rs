//! Helpers for the server tests: start a server on a free loopback port, talk HTTP to it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};

use serde_json::Value;
use stoplab::LoadOptions;
use stoplab::serve::{self, Config, Handle, Limits};

fn config(engine: LoadOptions, api_key: Option<&str>, limits: Limits) -> Config {
    Config {
        engine,
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        api_key: api_key.map(String::from),
        model_name: None,
        limits,
        speculation: None,
    }
}

/// A server on 127.0.0.1:0 for the default model. `weights: false` loads only the tokenizer (every request
/// carries `replay`).
pub fn start(weights: bool, api_key: Option<&str>, limits: Limits) -> Handle {
    let engine = LoadOptions {
        tokenizer_only: !weights,
        ..Default::default()
    };
    serve::start(config(engine, api_key, limits))
        .expect("the server starts (the default model is in the cache: `stoplab fetch`)")
}

/// The replay tier's server tests' body limit.
fn replay_limits() -> Limits {
    Limits {
        max_body_bytes: 64 * 1024,
        ..Limits::default()
    }
}

/// A server of the default model's tokenizer (no weights; every request carries `replay`).
pub fn replay_server() -> Handle {
    start(false, None, replay_limits())
}

/// A server on 127.0.0.1:0 without weights on the generated chat vocabulary ([`super::chatml_vocab`]):
/// every request carries `replay`, and nothing is read from the model cache.
pub fn start_chatml(api_key: Option<&str>, limits: Limits) -> Handle {
    let engine = LoadOptions {
        model: Some(super::chatml_vocab().to_string_lossy().into_owned()),
        tokenizer_only: true,
        ..Default::default()
    };
    serve::start(config(engine, api_key, limits))
        .expect("the server starts on the generated vocabulary")
}

/// [`start_chatml`] with the body limit of [`replay_server`].
pub fn chatml_server() -> Handle {
    start_chatml(None, replay_limits())
}

pub fn url(h: &Handle, path: &str) -> String {
    format!("http://{}{path}", h.addr())
}

/// A response: status, body as JSON (Null if not JSON), `Retry-After`.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: Value,
    pub retry_after: Option<String>,
}

fn reply(r: Result<ureq::Response, ureq::Error>) -> Reply {
    let resp = match r {
        Ok(resp) => resp,
        Err(ureq::Error::Status(_, resp)) => resp,
        Err(e) => panic!("transport error: {e}"),
    };
    let status = resp.status();
    let retry_after = resp.header("Retry-After").map(String::from);
    let text = resp.into_string().expect("a readable body");
    Reply {
        status,
        body: serde_json::from_str(&text).unwrap_or(Value::Null),
        retry_after,
    }
}

pub fn post_bytes(h: &Handle, path: &str, body: &[u8], headers: &[(&str, &str)]) -> Reply {
    let mut req = ureq::post(&url(h, path)).set("Content-Type", "application/json");
    for (k, v) in headers {
        req = req.set(k, v);
    }
    reply(req.send_bytes(body))
}

pub fn post(h: &Handle, path: &str, body: &Value) -> Reply {
    post_bytes(h, path, body.to_string().as_bytes(), &[])
}

/// A refused request's status, and its error's `param` and `code`.
pub fn refused(h: &Handle, path: &str, body: Value) -> (u16, Value, Value) {
    let r = post(h, path, &body);
    (
        r.status,
        r.body["error"]["param"].clone(),
        r.body["error"]["code"].clone(),
    )
}

/// The body of a request that must succeed (200).
pub fn ok(h: &Handle, path: &str, body: &Value) -> Value {
    let r = post(h, path, body);
    assert_eq!(r.status, 200, "{body} -> {:?}", r.body);
    r.body
}

pub fn get(h: &Handle, path: &str) -> Reply {
    reply(ureq::get(&url(h, path)).call())
}

/// A streamed request's events: the JSON chunks, checking the stream ends with `data: [DONE]`.
pub fn stream(h: &Handle, path: &str, body: &Value) -> Vec<Value> {
    let resp = ureq::post(&url(h, path))
        .set("Content-Type", "application/json")
        .send_string(&body.to_string())
        .unwrap_or_else(|e| panic!("streaming {path}: {e}"));
    assert_eq!(
        resp.header("Content-Type"),
        Some("text/event-stream"),
        "streams are server-sent events"
    );
    let mut events = Vec::new();
    let mut done = false;
    for line in BufReader::new(resp.into_reader()).lines() {
        let line = line.expect("a readable stream");
        if line.is_empty() {
            continue;
        }
        let data = line
            .strip_prefix("data: ")
            .unwrap_or_else(|| panic!("an SSE data line, got {line:?}"));
        assert!(!done, "nothing follows [DONE]");
        if data == "[DONE]" {
            done = true;
        } else {
            events.push(serde_json::from_str(data).expect("each event is JSON"));
        }
    }
    assert!(done, "the stream ends with data: [DONE]");
    events
}

/// The text pieces of streamed chunks (completions `text`, chat `delta.content`), in order.
pub fn deltas(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| e["choices"].get(0))
        .filter_map(|c| {
            c["text"]
                .as_str()
                .or_else(|| c["delta"]["content"].as_str())
                .map(String::from)
        })
        .filter(|t| !t.is_empty())
        .collect()
}

/// The finish_reason / stop_reason of a streamed choice (from its last chunk with choices).
pub fn stream_finish(events: &[Value]) -> (Value, Value) {
    let last = events
        .iter()
        .rev()
        .find_map(|e| {
            e["choices"]
                .get(0)
                .filter(|c| !c["finish_reason"].is_null())
        })
        .expect("a chunk with finish_reason");
    (last["finish_reason"].clone(), last["stop_reason"].clone())
}

/// Token ids of a text, by the server's own /tokenize.
pub fn tokenize(h: &Handle, text: &str) -> Vec<u32> {
    let r = post(h, "/tokenize", &serde_json::json!({ "prompt": text }));
    assert_eq!(r.status, 200, "{:?}", r.body);
    serde_json::from_value(r.body["tokens"].clone()).unwrap()
}

/// A streaming request on a raw connection, read until the first chunk with text; the caller decides when
/// to hang up (drop the stream).
pub fn open_stream(h: &Handle, path: &str, body: &Value) -> BufReader<TcpStream> {
    let mut conn = TcpStream::connect(h.addr()).expect("connect");
    let body = body.to_string();
    write!(
        conn,
        "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        h.addr(),
        body.len()
    )
    .unwrap();
    let mut reader = BufReader::new(conn);
    let mut status = String::new();
    reader.read_line(&mut status).unwrap();
    assert!(status.contains(" 200 "), "{status}");
    loop {
        let mut line = String::new();
        assert!(
            reader.read_line(&mut line).unwrap() > 0,
            "the stream ended early"
        );
        if let Some(data) = line.trim_end().strip_prefix("data: ") {
            let v: Value = serde_json::from_str(data).unwrap();
            if !deltas(&[v]).is_empty() {
                return reader;
            }
        }
    }
}

/// Reads a whole raw HTTP response (for requests sent by hand).
pub fn raw(h: &Handle, request: &[u8]) -> String {
    let mut conn = TcpStream::connect(h.addr()).expect("connect");
    conn.write_all(request).unwrap();
    let mut out = String::new();
    let _ = conn.read_to_string(&mut out);
    out
}

/// Polls /health until `pred` holds (the server's state changes asynchronously; no timing is asserted).
pub fn wait_health(h: &Handle, pred: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..6000 {
        let r = get(h, "/health");
        if pred(&r.body) {
            return r.body;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("the server never reached the state waited for");
}
