//! `stoplab probe URL`: judge any OpenAI-compatible server's stop handling against stoplab's reference.
//!
//! Each probe fixes the output it judges in the first way the server supports: a grammar that forces a known
//! text (llama.cpp's `grammar`: words of several token lengths, multi-byte characters, an end the model
//! reaches), else the server's own greedy output fetched first with no stop (`temperature` 0, a fixed `seed`).
//! Either way the text is fetched streamed and not: the two must agree, and the streamed chunks show where the
//! server's tokens begin and end. The probes about the model's own end token (`ignore_eos`, `min_tokens`)
//! always use the greedy output, since a grammar decides where a text ends. The stops are then drawn from that text so that each probe tests one
//! thing (a stop inside one token, one spanning several, a token running past a stop's end, ...), the same
//! request is sent again with the stops, streamed and not, and the answer is judged against
//! [`crate::pipeline::stop::naive_first_match`] on the greedy text: the earliest-ending stop wins whatever the list
//! order, nothing of an excluded stop is shown, nothing held back is lost at the end.
//!
//! What the server does not support (a field it refuses, or ignores so that the answer is the one without
//! it) is reported as unsupported, never as a pass; a probe whose precondition the model's output does not
//! meet (no multi-byte character, no end token within the limit) is "n/a", and says why.
//!
//! The `ledger-*` probes hold a stream to the ledger's rules (which tokens each chunk carries: README, "The
//! ledger") wherever the server returns log-probabilities or token ids, and `abort` hangs up mid-stream and
//! asks again. Files, bottom-up: `outcome.rs` (what a probe finds, the helpers the probes share),
//! `ledger.rs` (the ledger probes), `reasoning.rs` (the two about reasoning_content), `probes.rs` (the table
//! of probes and the stop probes), `report.rs` (the
//! table and the report files), `overhead.rs` (`bench overhead --endpoint`), this file (the run).

mod ledger;
mod outcome;
pub mod overhead;
mod probes;
mod reasoning;
pub mod report;

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde::Serialize;
use serde_json::{Value, json};

use crate::client::{self, Client, Reply};

pub use probes::PROBES;

/// The two OpenAI endpoints a probe can go through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Api {
    Completions,
    Chat,
}

impl Api {
    pub fn name(self) -> &'static str {
        match self {
            Self::Completions => "completions",
            Self::Chat => "chat",
        }
    }

    fn path(self) -> &'static str {
        match self {
            Self::Completions => "/v1/completions",
            Self::Chat => "/v1/chat/completions",
        }
    }
}

/// How a probe came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Pass,
    Fail,
    /// The server lacks the feature (refused or ignored it): not a pass.
    Unsupported,
    /// The model's output gave the probe nothing to test (no multi-byte character, no end token within the
    /// limit): not a pass either.
    NotApplicable,
    /// A measurement, not a judgement (the limits the server accepts).
    Info,
}

impl Verdict {
    /// A judgement: pass when `ok`, else fail.
    pub fn pass_if(ok: bool) -> Self {
        if ok { Self::Pass } else { Self::Fail }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Pass => "pass",
            Self::Fail => "FAIL",
            Self::Unsupported => "unsupported",
            Self::NotApplicable => "n/a",
            Self::Info => "info",
        }
    }
}

/// One probe's result on one endpoint.
#[derive(Debug, Clone, Serialize)]
pub struct ProbeResult {
    pub probe: &'static str,
    pub api: Api,
    pub verdict: Verdict,
    /// How the output was fixed (e.g. "greedy output fetched first").
    pub method: &'static str,
    /// What was sent: the fields that matter for this probe.
    pub sent: Value,
    /// What came back, streamed and not.
    pub got: String,
    /// What stoplab's reference expects.
    pub expected: String,
    /// Why, in a sentence.
    pub note: String,
}

/// How to probe.
#[derive(Debug, Clone)]
pub struct ProbeOptions {
    /// Probe names to run (all when empty).
    pub only: Vec<String>,
    pub apis: Vec<Api>,
    /// Tokens of greedy output fetched first (the probes' requests never ask for more).
    pub max_tokens: usize,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// Fix the text with a grammar where the server takes one (else every probe uses the greedy output).
    pub grammar: bool,
    /// Fields every request carries (an object, as the OpenAI clients' `extra_body`): a server's own
    /// switches, such as stoplab's `reasoning_markers`. The probes' own fields win.
    pub extra_body: Value,
}

impl Default for ProbeOptions {
    fn default() -> Self {
        Self {
            only: Vec::new(),
            apis: vec![Api::Completions, Api::Chat],
            max_tokens: 48,
            concurrency: 2,
            grammar: true,
            extra_body: json!({}),
        }
    }
}

/// A generation as the server returned it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Gen {
    pub text: String,
    pub finish_reason: Option<String>,
    /// vLLM's field; absent on servers that do not have it.
    pub stop_reason: Option<Value>,
    pub completion_tokens: Option<u64>,
    /// Streamed: the text of each chunk, in order.
    pub pieces: Vec<String>,
}

/// A request's answer: a generation, or the server's refusal.
#[derive(Debug, Clone)]
pub enum Answer {
    Gen(Gen),
    Refused { status: u16, body: String },
}

/// The server's greedy output with no stop, that every probe draws its stops from.
#[derive(Debug, Clone)]
pub struct Baseline {
    pub api: Api,
    pub text: String,
    /// The streamed chunks: one token each on the servers seen so far.
    pub pieces: Vec<String>,
    /// Where each piece begins in `text`.
    pub starts: Vec<usize>,
    pub finish_reason: Option<String>,
    /// vLLM's field, when the server sends it.
    pub stop_reason: Option<Value>,
    pub tokens: usize,
    /// The model ended by itself (finish "stop" with no stop given) within the limit.
    pub ended: bool,
    /// How the text was fixed, for the report.
    pub method: &'static str,
    /// Fields every request of a probe carries to reproduce the text (a grammar), or `{}`.
    pub fix: Value,
}

/// The text a grammar forces where the server takes one (llama.cpp's `grammar`): words that split into
/// tokens of several lengths, multi-byte characters, and an end the model reaches by itself.
pub const FORCED: &str =
    "The capital of France is Paris. Grüße aus München! It is known for the Eiffel Tower.";

/// What the probes share: the client, the endpoint's prompt, the baseline.
pub struct Ctx<'a> {
    pub client: &'a Client,
    pub api: Api,
    pub base: &'a Baseline,
    pub prompt: &'a Value,
    pub max_tokens: usize,
    /// The most tokens any request may ask for (`--max-tokens`): a probe that needs the server busy for a
    /// while (the abort) asks for this many.
    pub limit: usize,
    /// [`ProbeOptions::extra_body`].
    pub extra_body: &'a Value,
}

impl Ctx<'_> {
    /// A request body: the prompt, greedy, a fixed seed, the baseline's length, then `extra`'s fields.
    pub fn body(&self, extra: &Value, stream: bool) -> Value {
        let mut body = self.prompt.clone();
        let obj = body.as_object_mut().expect("prompts are objects");
        obj.insert("temperature".into(), json!(0));
        obj.insert("seed".into(), json!(1));
        obj.insert("max_tokens".into(), json!(self.max_tokens));
        obj.insert("stream".into(), json!(stream));
        for extra in [self.extra_body, &self.base.fix, extra] {
            let Some(extra) = extra.as_object() else {
                continue;
            };
            for (k, v) in extra {
                obj.insert(k.clone(), v.clone());
            }
        }
        self.client.with_model(body)
    }

    /// Sends `extra` (with the prompt) and reads the answer.
    pub fn ask(&self, extra: &Value, stream: bool) -> Result<Answer, String> {
        match self.send(extra, stream)? {
            Reply::Refused { status, body } => Ok(Answer::Refused { status, body }),
            Reply::Ok(values) => parse_gen(self.api, &values, stream).map(Answer::Gen),
        }
    }

    /// Sends `extra` (with the prompt) and returns the server's JSON as it came (the body, or every event of a
    /// stream), for probes that read more than the first choice's text (the ledger's ids and log-probabilities).
    pub fn send(&self, extra: &Value, stream: bool) -> Result<Reply, String> {
        self.client
            .post(self.api.path(), &self.body(extra, stream))
            .map_err(|e| e.to_string())
    }
}

/// Reads OpenAI's shapes: `choices[0].text` / `choices[0].message.content`, or the deltas of a stream.
fn parse_gen(api: Api, values: &[Value], stream: bool) -> Result<Gen, String> {
    let mut g = Gen::default();
    for v in values {
        if let Some(err) = v.get("error") {
            return Err(format!("the server sent an error event: {err}"));
        }
        if let Some(n) = v
            .pointer("/usage/completion_tokens")
            .and_then(Value::as_u64)
        {
            g.completion_tokens = Some(n);
        }
        let Some(choice) = v.pointer("/choices/0") else {
            continue;
        };
        let piece = match (api, stream) {
            (Api::Completions, _) => choice.get("text"),
            (Api::Chat, false) => choice.pointer("/message/content"),
            (Api::Chat, true) => choice.pointer("/delta/content"),
        }
        .and_then(Value::as_str)
        .unwrap_or("");
        g.text.push_str(piece);
        if stream && !piece.is_empty() {
            g.pieces.push(piece.to_string());
        }
        if let Some(f) = choice.get("finish_reason").and_then(Value::as_str) {
            g.finish_reason = Some(f.to_string());
        }
        if let Some(r) = choice.get("stop_reason") {
            g.stop_reason = Some(r.clone());
        }
    }
    if values.is_empty() {
        return Err("the server answered with nothing".into());
    }
    Ok(g)
}

/// The prompt each endpoint is probed with: the seed's transcript for completions, one question for chat.
pub fn prompt(api: Api) -> Value {
    match api {
        Api::Completions => json!({"prompt": "user: What is the capital of France?\nAI:"}),
        Api::Chat => json!({"messages": [
            {"role": "user", "content": "What is the capital of France? Answer in one sentence."}
        ]}),
    }
}

/// Fetches the greedy output with no stop, streamed and not, and checks that the two agree.
pub fn baseline(
    client: &Client,
    api: Api,
    max_tokens: usize,
    extra_body: &Value,
) -> Result<Baseline, String> {
    fetch_baseline(
        client,
        api,
        max_tokens,
        extra_body,
        json!({}),
        "greedy output fetched first",
    )
}

/// The text [`FORCED`] by a grammar (llama.cpp's `grammar`, vLLM's `structured_outputs` or `guided_regex`),
/// when the server takes one and writes exactly that, streamed and not; None otherwise (the probes then use
/// the greedy output).
pub fn forced_baseline(
    client: &Client,
    api: Api,
    max_tokens: usize,
    extra_body: &Value,
) -> Option<Baseline> {
    let text = match api {
        Api::Completions => format!(" {FORCED}"),
        Api::Chat => FORCED.to_string(),
    };
    let regex = text.replace('.', "\\.");
    // llama.cpp's GBNF grammar, vLLM's structured outputs (current, then the older guided_regex): the first
    // the server honours (it writes exactly the text, and ends there) fixes the text.
    let fixes = [
        (
            json!({ "grammar": format!("root ::= \"{text}\"") }),
            "text fixed by a grammar",
        ),
        (
            json!({ "structured_outputs": {"regex": regex} }),
            "text fixed by a grammar (structured_outputs)",
        ),
        (
            json!({ "guided_regex": regex }),
            "text fixed by a grammar (guided_regex)",
        ),
    ];
    fixes.into_iter().find_map(|(fix, method)| {
        let b = fetch_baseline(client, api, max_tokens, extra_body, fix, method).ok()?;
        (b.text == text && b.ended).then_some(b)
    })
}

fn fetch_baseline(
    client: &Client,
    api: Api,
    max_tokens: usize,
    extra_body: &Value,
    fix: Value,
    method: &'static str,
) -> Result<Baseline, String> {
    let p = prompt(api);
    let empty = Baseline {
        api,
        text: String::new(),
        pieces: Vec::new(),
        starts: Vec::new(),
        finish_reason: None,
        stop_reason: None,
        tokens: 0,
        ended: false,
        method,
        fix,
    };
    let ctx = Ctx {
        client,
        api,
        base: &empty,
        prompt: &p,
        max_tokens,
        limit: max_tokens,
        extra_body,
    };
    let get = |stream| match ctx.ask(&json!({}), stream)? {
        Answer::Gen(g) => Ok(g),
        Answer::Refused { status, body } => Err(format!(
            "{} refused a plain greedy request ({status}): {}",
            api.path(),
            client::clip(&body)
        )),
    };
    let whole = get(false)?;
    let streamed = get(true)?;
    if whole.text != streamed.text {
        return Err(format!(
            "the greedy output is not reproducible: unstreamed {:?}, streamed {:?}; the probes need a server \
             that gives the same text for the same greedy request",
            whole.text, streamed.text
        ));
    }
    if whole.text.is_empty() {
        return Err("the greedy output is empty: nothing to draw stops from".into());
    }
    let mut starts = Vec::new();
    let mut at = 0;
    for p in &streamed.pieces {
        starts.push(at);
        at += p.len();
    }
    let tokens = whole
        .completion_tokens
        .map_or(streamed.pieces.len(), |n| n as usize);
    Ok(Baseline {
        ended: whole.finish_reason.as_deref() == Some("stop") && tokens < max_tokens,
        text: whole.text,
        pieces: streamed.pieces,
        starts,
        finish_reason: whole.finish_reason,
        stop_reason: whole.stop_reason,
        tokens,
        ..empty
    })
}

/// The names of every probe, in order.
pub fn names() -> Vec<&'static str> {
    PROBES.iter().map(|p| p.name).collect()
}

/// Checks `--only` against the probes' names.
pub fn check_only(only: &[String]) -> Result<(), crate::Error> {
    match only
        .iter()
        .find(|n| !PROBES.iter().any(|p| p.name == n.as_str()))
    {
        Some(name) => Err(crate::Error::Invalid {
            field: "--only".into(),
            message: format!(
                "unknown probe {name:?}; the probes are: {}",
                names().join(", ")
            ),
        }),
        None => Ok(()),
    }
}

/// Runs the suite: the baselines first, then every selected probe on every endpoint, `concurrency` at a time.
/// `on_result` sees each result as it comes (in completion order); the returned list is in suite order.
pub fn run(
    client: &Client,
    opts: &ProbeOptions,
    on_result: &(dyn Fn(&ProbeResult) + Sync),
) -> Result<Vec<ProbeResult>, crate::Error> {
    check_only(&opts.only)?;
    let selected: Vec<_> = PROBES
        .iter()
        .filter(|p| opts.only.is_empty() || opts.only.iter().any(|o| o == p.name))
        .collect();
    // Per endpoint: the greedy output, and the grammar-forced text where the server can force one.
    let mut baselines = Vec::new();
    for &api in &opts.apis {
        let b = baseline(client, api, opts.max_tokens, &opts.extra_body).map_err(|message| {
            crate::Error::Invalid {
                field: "URL".into(),
                message,
            }
        })?;
        let forced = if opts.grammar {
            forced_baseline(client, api, opts.max_tokens, &opts.extra_body)
        } else {
            None
        };
        baselines.push((b, forced));
    }
    let prompts: Vec<Value> = opts.apis.iter().map(|&a| prompt(a)).collect();
    let jobs: Vec<(usize, &probes::Probe)> = (0..baselines.len())
        .flat_map(|b| selected.iter().map(move |&p| (b, p)))
        .collect();
    let results: Mutex<Vec<Option<ProbeResult>>> = Mutex::new(vec![None; jobs.len()]);
    let next = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..opts.concurrency.clamp(1, jobs.len().max(1)) {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(&(b, probe)) = jobs.get(i) else {
                        return;
                    };
                    let (greedy, forced) = &baselines[b];
                    let base = match forced {
                        Some(f) if !probe.greedy_only => f,
                        _ => greedy,
                    };
                    let ctx = Ctx {
                        client,
                        api: base.api,
                        base,
                        prompt: &prompts[b],
                        max_tokens: base.tokens.max(1),
                        limit: opts.max_tokens,
                        extra_body: &opts.extra_body,
                    };
                    let r = probe.run(&ctx);
                    on_result(&r);
                    results.lock().expect("no probe panics holding the lock")[i] = Some(r);
                }
            });
        }
    });
    Ok(results
        .into_inner()
        .expect("no probe panics holding the lock")
        .into_iter()
        .flatten()
        .collect())
}

/// Requests the suite will send at most (retries aside), for the count printed before it starts.
pub fn planned_requests(opts: &ProbeOptions) -> usize {
    let per_api: usize = PROBES
        .iter()
        .filter(|p| opts.only.is_empty() || opts.only.iter().any(|o| o == p.name))
        .map(|p| p.requests)
        .sum();
    opts.apis.len() * (2 + 6 * usize::from(opts.grammar) + per_api)
}
