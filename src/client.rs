//! A small, polite client for OpenAI-compatible servers: JSON and server-sent events over HTTP(S), an API key,
//! timeouts, retries with backoff on 429 and 5xx, and a count of every request sent.

use std::io::{BufRead, BufReader, Read};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};

/// The longest line of a server-sent event stream read (a `data:` payload is one line).
pub const MAX_LINE: usize = 1 << 20;
/// The most bytes of one answer read, body or stream: a server nobody here controls cannot grow the reader's
/// memory without bound.
pub const MAX_ANSWER: usize = 64 << 20;

/// How to reach the server.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// The server's address: `http://127.0.0.1:8080`, with or without a trailing `/v1`.
    pub url: String,
    pub api_key: Option<String>,
    /// The `model` field sent with each request (servers that serve one model usually ignore it).
    pub model: Option<String>,
    /// Per request, connection included.
    pub timeout: Duration,
    /// Extra tries after a 429, a 5xx or a connection error.
    pub retries: u32,
}

/// What a request came back with.
#[derive(Debug, Clone)]
pub enum Reply {
    /// A 2xx answer: the JSON body, or for a stream every `data:` payload before `[DONE]`, in order.
    Ok(Vec<Value>),
    /// The server refused the request: status and its body as text.
    Refused { status: u16, body: String },
}

/// A request that never got an answer.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct TransportError {
    pub url: String,
    pub message: String,
}

pub struct Client {
    opts: ClientOptions,
    base: String,
    agent: ureq::Agent,
    sent: AtomicUsize,
}

impl Client {
    pub fn new(opts: ClientOptions) -> Result<Self, crate::Error> {
        let base = base_url(&opts.url)?;
        let agent = ureq::AgentBuilder::new()
            .timeout(opts.timeout)
            .user_agent(concat!("stoplab-probe/", env!("CARGO_PKG_VERSION")))
            .build();
        Ok(Self {
            opts,
            base,
            agent,
            sent: AtomicUsize::new(0),
        })
    }

    /// The server's root (without `/v1`).
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Requests sent so far, retries included.
    pub fn sent(&self) -> usize {
        self.sent.load(Ordering::SeqCst)
    }

    /// `body` with the `model` field added (when one was given).
    pub fn with_model(&self, mut body: Value) -> Value {
        if let (Some(m), Some(obj)) = (&self.opts.model, body.as_object_mut()) {
            obj.entry("model").or_insert_with(|| json!(m));
        }
        body
    }

    /// POSTs `body` to `path`; a body with `"stream": true` is read as server-sent events.
    pub fn post(&self, path: &str, body: &Value) -> Result<Reply, TransportError> {
        let url = format!("{}{path}", self.base);
        let stream = body.get("stream").and_then(Value::as_bool) == Some(true);
        let mut wait = Duration::from_millis(250);
        let mut tries = 0;
        loop {
            tries += 1;
            self.sent.fetch_add(1, Ordering::SeqCst);
            let mut req = self
                .agent
                .post(&url)
                .set("Content-Type", "application/json");
            if let Some(key) = &self.opts.api_key {
                req = req.set("Authorization", &format!("Bearer {key}"));
            }
            let retryable = match req.send_string(&body.to_string()) {
                Ok(resp) => return read_reply(resp, stream, &url),
                Err(ureq::Error::Status(status, resp)) => {
                    let text = resp.into_string().unwrap_or_default();
                    if status != 429 && status < 500 || tries > self.opts.retries {
                        return Ok(Reply::Refused { status, body: text });
                    }
                    format!("{url}: status {status}")
                }
                Err(ureq::Error::Transport(t)) => {
                    if tries > self.opts.retries {
                        return Err(TransportError {
                            url,
                            message: t.to_string(),
                        });
                    }
                    t.to_string()
                }
            };
            eprintln!("stoplab: {retryable}; retrying in {} ms", wait.as_millis());
            std::thread::sleep(wait);
            wait = (wait * 2).min(Duration::from_secs(8));
        }
    }
}

fn read_reply(resp: ureq::Response, stream: bool, url: &str) -> Result<Reply, TransportError> {
    let err = |message: String| TransportError {
        url: url.to_string(),
        message: format!("{url}: {message}"),
    };
    let mut reader = BufReader::new(resp.into_reader().take(MAX_ANSWER as u64 + 1));
    let too_large = || {
        err(format!(
            "the answer is larger than {} MiB, the most one answer may be; the server sends too much",
            MAX_ANSWER >> 20
        ))
    };
    if !stream {
        let mut bytes = Vec::new();
        reader
            .read_to_end(&mut bytes)
            .map_err(|e| err(format!("reading the body: {e}")))?;
        if bytes.len() > MAX_ANSWER {
            return Err(too_large());
        }
        let text = String::from_utf8_lossy(&bytes);
        let v: Value = serde_json::from_str(&text)
            .map_err(|e| err(format!("the body is not JSON ({e}): {}", clip(&text))))?;
        return Ok(Reply::Ok(vec![v]));
    }
    let mut events = Vec::new();
    let (mut line, mut total) = (Vec::new(), 0usize);
    loop {
        line.clear();
        let n = (&mut reader)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut line)
            .map_err(|e| err(format!("reading the stream: {e}")))?;
        if n == 0 {
            break;
        }
        total += n;
        if line.len() > MAX_LINE && line.last() != Some(&b'\n') {
            return Err(err(format!(
                "a stream line is longer than {} MiB, the most one event may be: {}",
                MAX_LINE >> 20,
                clip(&String::from_utf8_lossy(&line[..200]))
            )));
        }
        if total > MAX_ANSWER {
            return Err(too_large());
        }
        let line = String::from_utf8_lossy(&line);
        let line = line.trim_end_matches(['\n', '\r']);
        let Some(data) = line.strip_prefix("data:") else {
            continue;
        };
        let data = data.trim();
        if data == "[DONE]" {
            return Ok(Reply::Ok(events));
        }
        let v: Value = serde_json::from_str(data)
            .map_err(|e| err(format!("a stream event is not JSON ({e}): {}", clip(data))))?;
        events.push(v);
    }
    // Some servers close the stream without `[DONE]`; what arrived is still the answer.
    Ok(Reply::Ok(events))
}

/// At most 200 characters of a body, for messages.
pub fn clip(s: &str) -> String {
    let mut out: String = s.chars().take(200).collect();
    if out.len() < s.len() {
        out.push('…');
    }
    out
}

/// `http://host:port/v1/` → `http://host:port`; anything that is not an http(s) URL is refused.
pub fn base_url(url: &str) -> Result<String, crate::Error> {
    let bad = |message: &str| crate::Error::Invalid {
        field: "URL".into(),
        message: format!("{url:?} {message}"),
    };
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(|| bad("is not an http:// or https:// address (e.g. http://127.0.0.1:8080)"))?;
    if rest.trim_matches('/').is_empty() {
        return Err(bad("names no host"));
    }
    let trimmed = url.trim_end_matches('/');
    Ok(trimmed.strip_suffix("/v1").unwrap_or(trimmed).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_url_drops_v1_and_slashes_and_refuses_other_schemes() {
        assert_eq!(
            base_url("http://127.0.0.1:8080/v1/").unwrap(),
            "http://127.0.0.1:8080"
        );
        assert_eq!(
            base_url("https://api.example.com").unwrap(),
            "https://api.example.com"
        );
        assert!(
            base_url("127.0.0.1:8080")
                .unwrap_err()
                .to_string()
                .contains("URL")
        );
        assert!(base_url("http://").is_err());
    }
}
