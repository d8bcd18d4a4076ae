//! The ledger probes: which tokens each chunk of a stream carries, on any server that returns
//! log-probabilities (`logprobs`) or token ids (vLLM's `"return_token_ids": true`). The rules are the ones
//! stoplab's own server follows (README, "The ledger"; `tests/replay/ledger.rs`):
//!
//! - (a) the streamed chunks of a choice add up to the unstreamed choice: its text and finish_reason, and the
//!   ids and log-probability entries where they come back;
//! - (b) each chunk's tokens spell its text; the chunk that carries the finish may run on by its last token
//!   (one the stop cut in the middle, or the end token, whose name is not text);
//! - (c) one log-probability entry per id, and one log-probability per entry;
//! - (d) nothing of a choice after the chunk that carries its finish_reason, and every choice has one;
//! - (e) `usage.completion_tokens` counts every generated token: the ids carried plus `withheld_token_ids`;
//!   where only log-probabilities come back, their entries are at most that many, and at most the tokens of
//!   the stop (or the end token) are missing from them.
//!
//! With no vocabulary at hand, a token is spelled by its log-probability entry: `bytes` where given, else the
//! token string (vLLM's `bytes:\xNN` form read back as bytes; a U+FFFD of a lossy string stands for one to
//! three bytes of a character split between tokens). Where an entry names its `id` and its `top_logprobs`
//! list the same id, that one's spelling is used: llama.cpp rewrites the chosen entry's `token` to the text
//! its chunk released (empty for a held token), while its `top_logprobs` keep the id's own text.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::outcome::{Outcome, bounds, first_at, no_stop, show, spans};
use super::{Api, Baseline, Ctx, Verdict};
use crate::client::{Reply, clip};
use crate::lab::trace::escape;

/// One unit of a token's spelling: a byte, or a U+FFFD that a lossy token string put for one to three bytes
/// of a character split between tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unit {
    Byte(u8),
    Split,
}

/// A token as a log-probability entry spells it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Token(Vec<Unit>);

impl Token {
    fn from_bytes(bytes: &[u8]) -> Self {
        Self(bytes.iter().map(|&b| Unit::Byte(b)).collect())
    }

    /// A token string: vLLM's `bytes:\xe2\x80` form as its bytes, a U+FFFD as a split character's bytes.
    fn from_text(s: &str) -> Self {
        if let Some(bytes) = s.strip_prefix("bytes:").and_then(hex_escapes) {
            return Self::from_bytes(&bytes);
        }
        let mut units = Vec::new();
        for c in s.chars() {
            if c == char::REPLACEMENT_CHARACTER {
                units.push(Unit::Split);
            } else {
                units.extend(c.to_string().bytes().map(Unit::Byte));
            }
        }
        Self(units)
    }

    /// For notes: the token in quotes, a split character as U+FFFD.
    fn shown(&self) -> String {
        let mut bytes = Vec::new();
        for u in &self.0 {
            match u {
                Unit::Byte(b) => bytes.push(*b),
                Unit::Split => bytes.extend("\u{FFFD}".bytes()),
            }
        }
        format!("\"{}\"", escape(&bytes))
    }
}

/// `\xe2\x80` → its bytes; None unless the whole string is such escapes.
fn hex_escapes(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut rest = s;
    while !rest.is_empty() {
        let hex = rest.strip_prefix("\\x")?.get(..2)?;
        out.push(u8::from_str_radix(hex, 16).ok()?);
        rest = &rest[4..];
    }
    Some(out)
}

fn shown_tokens(tokens: &[Token]) -> String {
    let list: Vec<String> = tokens.iter().map(Token::shown).collect();
    format!("[{}]", list.join(","))
}

fn shown_ids(ids: &[u64]) -> String {
    let list: Vec<String> = ids.iter().map(u64::to_string).collect();
    format!("[{}]", list.join(","))
}

/// What one log-probability entry of a chat-shaped list (`logprobs.content[]`) spells: see the module's note
/// on `id`.
fn entry_token(e: &Value) -> Token {
    let by_id = e.get("id").and_then(|id| {
        e.get("top_logprobs")?
            .as_array()?
            .iter()
            .find(|t| t.get("id") == Some(id))
    });
    spelling(by_id.unwrap_or(e))
}

/// An entry's `bytes` where they are a list of bytes, else its `token` string.
fn spelling(e: &Value) -> Token {
    let bytes = e.get("bytes").and_then(Value::as_array).and_then(|a| {
        a.iter()
            .map(|b| b.as_u64().and_then(|b| u8::try_from(b).ok()))
            .collect::<Option<Vec<u8>>>()
    });
    match bytes {
        Some(b) => Token::from_bytes(&b),
        None => Token::from_text(e.get("token").and_then(Value::as_str).unwrap_or("")),
    }
}

/// A choice's `logprobs`: its tokens and how many log-probabilities it holds; None when absent or of no
/// known shape (completions' `tokens` and `token_logprobs`, or chat's `content[]`, which llama.cpp also
/// sends on completions).
fn entries(lp: Option<&Value>) -> Option<(Vec<Token>, usize)> {
    let lp = lp?;
    if let Some(tokens) = lp.get("tokens").and_then(Value::as_array) {
        let tokens = tokens
            .iter()
            .map(|t| Token::from_text(t.as_str().unwrap_or("")))
            .collect();
        let logprobs = lp
            .get("token_logprobs")
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        return Some((tokens, logprobs));
    }
    let content = lp.get("content")?.as_array()?;
    let logprobs = content
        .iter()
        .filter(|e| e.get("logprob").is_some_and(Value::is_number))
        .count();
    Some((content.iter().map(entry_token).collect(), logprobs))
}

/// A list of token ids; None when absent or not a list of ids.
fn id_list(v: Option<&Value>) -> Option<Vec<u64>> {
    v?.as_array()?.iter().map(Value::as_u64).collect()
}

/// One choice of an unstreamed answer, or one choice's part of a stream event.
#[derive(Debug, Clone, Default)]
struct Part {
    index: usize,
    text: String,
    ids: Option<Vec<u64>>,
    tokens: Option<Vec<Token>>,
    /// How many log-probabilities came with the tokens.
    logprobs: usize,
    withheld: Option<Vec<u64>>,
    finish: Option<String>,
}

impl Part {
    fn read(choice: &Value, at: usize) -> Self {
        let text = choice
            .get("text")
            .or_else(|| choice.pointer("/message/content"))
            .or_else(|| choice.pointer("/delta/content"))
            .and_then(Value::as_str)
            .unwrap_or("");
        let (tokens, logprobs) = entries(choice.get("logprobs")).unzip();
        Self {
            index: choice
                .get("index")
                .and_then(Value::as_u64)
                .map_or(at, |i| i as usize),
            text: text.to_string(),
            ids: id_list(choice.get("token_ids")),
            tokens,
            logprobs: logprobs.unwrap_or(0),
            withheld: id_list(choice.get("withheld_token_ids")),
            finish: choice
                .get("finish_reason")
                .and_then(Value::as_str)
                .map(String::from),
        }
    }

    /// Whether the part carries anything of its choice (a chunk after the finish must not).
    fn carries(&self) -> bool {
        !self.text.is_empty()
            || self.ids.as_ref().is_some_and(|i| !i.is_empty())
            || self.tokens.as_ref().is_some_and(|t| !t.is_empty())
            || self.finish.is_some()
    }
}

/// An answer's choices (unstreamed) or chunks (streamed, in order), and its `usage.completion_tokens`.
#[derive(Debug, Default)]
struct Ledger {
    parts: Vec<Part>,
    usage: Option<u64>,
}

impl Ledger {
    fn read(values: &[Value]) -> Result<Self, String> {
        if values.is_empty() {
            return Err("the server answered with nothing".into());
        }
        let mut l = Self::default();
        for v in values {
            if let Some(err) = v.get("error") {
                return Err(format!(
                    "the server sent an error: {}",
                    clip(&err.to_string())
                ));
            }
            if let Some(n) = v
                .pointer("/usage/completion_tokens")
                .and_then(Value::as_u64)
            {
                l.usage = Some(n);
            }
            let choices = v.get("choices").and_then(Value::as_array);
            for (at, c) in choices.into_iter().flatten().enumerate() {
                l.parts.push(Part::read(c, at));
            }
        }
        Ok(l)
    }
}

/// What came back for the ledger: ids, log-probability entries, or both.
#[derive(Debug, Clone, Copy)]
struct Has {
    ids: bool,
    tokens: bool,
}

impl Has {
    fn of(parts: &[Part]) -> Self {
        Self {
            ids: parts.iter().any(|p| p.ids.is_some()),
            tokens: parts.iter().any(|p| p.tokens.is_some()),
        }
    }

    fn name(self) -> &'static str {
        match (self.ids, self.tokens) {
            (true, true) => "token_ids and logprobs",
            (true, false) => "token_ids (no logprobs: the ids are not spelled)",
            (false, _) => "logprobs (no token_ids)",
        }
    }
}

/// How tokens spell a text: exactly it, a beginning of it (`within`), or it and then more (`past`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fit {
    exact: bool,
    within: bool,
    past: bool,
}

/// Matches the tokens' units against the text's bytes, every way a split character may be read.
fn fit(tokens: &[Token], text: &[u8]) -> Fit {
    let m = text.len();
    let mut row = vec![false; m + 1];
    row[0] = true;
    let mut past = row[m];
    for &u in tokens.iter().flat_map(|t| &t.0) {
        let mut next = vec![false; m + 1];
        for j in (0..=m).filter(|&j| row[j]) {
            match u {
                Unit::Byte(b) => {
                    if text.get(j) == Some(&b) {
                        next[j + 1] = true;
                    }
                }
                Unit::Split => {
                    for k in 1..=3.min(m - j) {
                        if text[j..j + k].iter().all(|&c| c >= 0x80) {
                            next[j + k] = true;
                        }
                    }
                }
            }
        }
        row = next;
        past |= row[m];
    }
    Fit {
        exact: row[m],
        within: row.contains(&true),
        past,
    }
}

/// (b): the tokens spell the text; with `last` (the part that carries the finish) the last token may run on.
fn spells(tokens: &[Token], text: &str, last: bool) -> bool {
    let text = text.as_bytes();
    match tokens.split_last() {
        None => text.is_empty(),
        Some(_) if !last => fit(tokens, text).exact,
        Some((_, head)) => fit(head, text).within && fit(tokens, text).past,
    }
}

/// (b) and (c) on one part, under the label `at`.
fn check_part(p: &Part, last: bool, has: Has, at: &str, breaks: &mut Vec<String>) {
    let tokens = p.tokens.as_deref().unwrap_or(&[]);
    let ids = p.ids.as_deref().unwrap_or(&[]);
    let ids_shown = if has.ids {
        format!(" (token_ids {})", shown_ids(ids))
    } else {
        String::new()
    };
    if has.tokens && !spells(tokens, &p.text, last) {
        breaks.push(format!(
            "{at}: text {} carries logprobs tokens {}{ids_shown}",
            show(&p.text),
            shown_tokens(tokens)
        ));
    }
    if has.ids && has.tokens && ids.len() != tokens.len() {
        breaks.push(format!(
            "{at}: {} token_ids but {} logprobs entries",
            ids.len(),
            tokens.len()
        ));
    }
    if has.tokens && p.logprobs != tokens.len() {
        breaks.push(format!(
            "{at}: {} logprobs tokens but {} log-probabilities",
            tokens.len(),
            p.logprobs
        ));
    }
}

/// What a stream carried for one choice, in order.
#[derive(Debug, Default)]
struct Sum {
    text: String,
    ids: Vec<u64>,
    tokens: Vec<Token>,
    withheld: Vec<u64>,
    finish: Option<String>,
}

/// (b), (c), (d) on every chunk; returns what each choice's chunks add up to.
fn check_chunks(chunks: &[Part], has: Has, breaks: &mut Vec<String>) -> BTreeMap<usize, Sum> {
    let mut sums: BTreeMap<usize, Sum> = BTreeMap::new();
    let multi = chunks.iter().any(|c| c.index != 0);
    for (k, c) in chunks.iter().enumerate() {
        let last = c.finish.is_some();
        let at = match (multi, last) {
            (false, false) => format!("streamed chunk {}", k + 1),
            (false, true) => format!("streamed chunk {} (the last)", k + 1),
            (true, false) => format!("streamed chunk {} (choice {})", k + 1, c.index),
            (true, true) => format!("streamed chunk {} (choice {}, its last)", k + 1, c.index),
        };
        let sum = sums.entry(c.index).or_default();
        if sum.finish.is_some() && c.carries() {
            breaks.push(format!(
                "{at}: comes after its choice's finish_reason, carrying text {} and logprobs tokens {}",
                show(&c.text),
                shown_tokens(c.tokens.as_deref().unwrap_or(&[]))
            ));
        }
        check_part(c, last, has, &at, breaks);
        sum.text.push_str(&c.text);
        sum.ids.extend(c.ids.iter().flatten());
        sum.tokens.extend(c.tokens.iter().flatten().cloned());
        if last {
            sum.finish.clone_from(&c.finish);
            sum.withheld = c.withheld.clone().unwrap_or_default();
        }
    }
    sums
}

/// (a) and (d): each choice's chunks add up to the unstreamed choice, and end with a finish_reason.
fn check_sums(whole: &[Part], sums: &BTreeMap<usize, Sum>, has: Has, breaks: &mut Vec<String>) {
    for w in whole {
        let Some(s) = sums.get(&w.index) else {
            breaks.push(format!("streamed: no chunk of choice {}", w.index));
            continue;
        };
        let of = if whole.len() > 1 {
            format!(" of choice {}", w.index)
        } else {
            String::new()
        };
        let mut differ = |what: &str, streamed: String, unstreamed: String| {
            if streamed != unstreamed {
                breaks.push(format!(
                    "the streamed chunks{of} carry {what} {streamed}, the unstreamed choice {unstreamed}"
                ));
            }
        };
        differ("text", show(&s.text), show(&w.text));
        let finish = |f: &Option<String>| f.clone().unwrap_or_else(|| "none".into());
        differ("finish_reason", finish(&s.finish), finish(&w.finish));
        if has.ids {
            differ(
                "token_ids",
                shown_ids(&s.ids),
                shown_ids(w.ids.as_deref().unwrap_or(&[])),
            );
        }
        if has.tokens {
            differ(
                "logprobs tokens",
                shown_tokens(&s.tokens),
                shown_tokens(w.tokens.as_deref().unwrap_or(&[])),
            );
        }
        if let Some(withheld) = &w.withheld {
            differ(
                "withheld_token_ids",
                shown_ids(&s.withheld),
                shown_ids(withheld),
            );
        }
        if s.finish.is_none() {
            breaks.push(format!(
                "streamed: choice {} has no chunk with a finish_reason",
                w.index
            ));
        }
    }
    for i in sums
        .keys()
        .filter(|&&i| !whole.iter().any(|w| w.index == i))
    {
        breaks.push(format!(
            "streamed: choice {i} is not in the unstreamed answer"
        ));
    }
}

/// (e) on one answer: `usage.completion_tokens` against what its choices carried and withheld. `slack`: how
/// many tokens per choice may be missing from the log-probabilities (the stop's tokens, the end token).
fn check_usage(
    label: &str,
    carried: &[(usize, usize, usize)],
    usage: Option<u64>,
    has: Has,
    slack: usize,
    breaks: &mut Vec<String>,
) {
    let Some(n) = usage.map(|n| n as usize) else {
        return;
    };
    let ids: usize = carried.iter().map(|c| c.0).sum();
    let withheld: usize = carried.iter().map(|c| c.1).sum();
    let tokens: usize = carried.iter().map(|c| c.2).sum();
    let slack = slack * carried.len();
    if has.ids && ids + withheld != n {
        breaks.push(format!(
            "{label}: usage.completion_tokens is {n}, but {ids} token_ids were carried and {withheld} withheld"
        ));
    } else if !has.ids && (tokens > n || tokens + slack < n) {
        breaks.push(format!(
            "{label}: {tokens} logprobs entries for usage.completion_tokens {n} (at most {slack} may be missing: \
             the stop's tokens or the end token)"
        ));
    }
}

/// For the report: an unstreamed answer's choices.
fn describe_whole(l: &Ledger, has: Has) -> String {
    let choices: Vec<String> = l.parts.iter().map(|p| describe(p, has)).collect();
    format!(
        "unstreamed: {} usage {}",
        choices.join("; "),
        l.usage.map_or("none".into(), |n| n.to_string())
    )
}

/// For the report: a stream's chunks.
fn describe_chunks(l: &Ledger, has: Has) -> String {
    let chunks: Vec<String> = l
        .parts
        .iter()
        .filter(|p| p.carries())
        .map(|p| describe(p, has))
        .collect();
    format!(
        "streamed: {} usage {}",
        chunks.join(" | "),
        l.usage.map_or("none".into(), |n| n.to_string())
    )
}

fn describe(p: &Part, has: Has) -> String {
    let mut s = show(&p.text);
    if has.tokens {
        s.push_str(&format!(
            " {}",
            shown_tokens(p.tokens.as_deref().unwrap_or(&[]))
        ));
    }
    if has.ids {
        s.push_str(&format!(
            " ids {}",
            shown_ids(p.ids.as_deref().unwrap_or(&[]))
        ));
    }
    if let Some(w) = p.withheld.as_deref().filter(|w| !w.is_empty()) {
        s.push_str(&format!(" withheld {}", shown_ids(w)));
    }
    if let Some(f) = &p.finish {
        s.push_str(&format!(" ({f})"));
    }
    s
}

/// The fields that ask for the ledger: log-probabilities and ids, then each alone for a server that refuses
/// one of them.
fn field_sets(api: Api) -> [Value; 3] {
    let lp = match api {
        Api::Completions => json!({"logprobs": 1}),
        Api::Chat => json!({"logprobs": true, "top_logprobs": 1}),
    };
    let mut both = lp.clone();
    both["return_token_ids"] = json!(true);
    [both, lp, json!({"return_token_ids": true})]
}

/// `a`'s fields, then `b`'s.
fn merged(a: &Value, b: &Value) -> Value {
    let mut out = a.clone();
    if let (Some(o), Some(b)) = (out.as_object_mut(), b.as_object()) {
        for (k, v) in b {
            o.insert(k.clone(), v.clone());
        }
    }
    out
}

/// The unstreamed answer, asked with the first field set the server takes.
struct Asked {
    sent: Value,
    whole: Ledger,
    has: Has,
}

/// Sends `extra` unstreamed with the ledger's fields: the answer, or the outcome that ends the probe (no
/// answer, every field set refused, neither ids nor log-probabilities in the answer).
fn ask_whole(ctx: &Ctx<'_>, extra: &Value) -> Result<Asked, Box<Outcome>> {
    let mut refused = None;
    for fields in field_sets(ctx.api) {
        let sent = merged(extra, &fields);
        match ctx.send(&sent, false) {
            Err(e) => return Err(Box::new(Outcome::no_answer(sent, e))),
            Ok(Reply::Refused { status, body }) => refused = Some((sent, status, body)),
            Ok(Reply::Ok(values)) => {
                let whole = Ledger::read(&values)
                    .map_err(|e| Box::new(Outcome::no_answer(sent.clone(), e)))?;
                let has = Has::of(&whole.parts);
                if !has.ids && !has.tokens {
                    return Err(Box::new(Outcome::unsupported(
                        sent,
                        "neither logprobs nor token_ids came back",
                    )));
                }
                return Ok(Asked { sent, whole, has });
            }
        }
    }
    Err(Box::new(match refused {
        Some((sent, status, body)) => Outcome::refused(sent, status, &body),
        None => Outcome::unsupported(extra.clone(), "no field set to ask with"),
    }))
}

/// The same request streamed, with the usage at the end.
fn ask_stream(ctx: &Ctx<'_>, sent: &Value) -> Result<Ledger, Box<Outcome>> {
    let sent = merged(sent, &json!({"stream_options": {"include_usage": true}}));
    match ctx.send(&sent, true) {
        Err(e) => Err(Box::new(Outcome::no_answer(sent, e))),
        Ok(Reply::Refused { status, body }) => Err(Box::new(Outcome::unsupported(
            sent,
            format!(
                "streamed: refused ({status}) though taken unstreamed: {}",
                clip(&body)
            ),
        ))),
        Ok(Reply::Ok(values)) => {
            Ledger::read(&values).map_err(|e| Box::new(Outcome::no_answer(sent.clone(), e)))
        }
    }
}

/// Streams the request `asked` was, and holds both answers to the rules (a)–(e).
fn judge(ctx: &Ctx<'_>, asked: Asked, slack: usize, what: &str) -> Outcome {
    let Asked { sent, whole, has } = asked;
    let streamed = match ask_stream(ctx, &sent) {
        Ok(l) => l,
        Err(o) => return *o,
    };
    let mut breaks = Vec::new();
    let multi = whole.parts.len() > 1;
    for p in &whole.parts {
        let at = if multi {
            format!("unstreamed choice {}", p.index)
        } else {
            "unstreamed".into()
        };
        check_part(p, true, has, &at, &mut breaks);
    }
    let count = |p: &Part| {
        (
            p.ids.as_ref().map_or(0, Vec::len),
            p.withheld.as_ref().map_or(0, Vec::len),
            p.tokens.as_ref().map_or(0, Vec::len),
        )
    };
    let carried: Vec<_> = whole.parts.iter().map(count).collect();
    check_usage("unstreamed", &carried, whole.usage, has, slack, &mut breaks);
    let sums = check_chunks(&streamed.parts, has, &mut breaks);
    check_sums(&whole.parts, &sums, has, &mut breaks);
    let carried: Vec<_> = sums
        .values()
        .map(|s| (s.ids.len(), s.withheld.len(), s.tokens.len()))
        .collect();
    check_usage(
        "streamed",
        &carried,
        streamed.usage,
        has,
        slack,
        &mut breaks,
    );
    let got = format!(
        "{}; {}",
        describe_whole(&whole, has),
        describe_chunks(&streamed, has)
    );
    let note = match breaks.len() {
        0 => format!("{what}; checked with {}", has.name()),
        1..=3 => format!("{what}: {}", breaks.join("; ")),
        n => format!("{what}: {} (and {} more)", breaks[..3].join("; "), n - 3),
    };
    Outcome {
        verdict: Verdict::pass_if(breaks.is_empty()),
        sent,
        got,
        expected: "each chunk's tokens spell its text (the last may run on by one token), one \
                   log-probability per token, nothing after the finish, the chunks add up to the unstreamed \
                   answer, usage counts every token"
            .into(),
        note,
    }
}

/// Asks `extra` unstreamed and streamed and judges the ledger.
fn probe(ctx: &Ctx<'_>, extra: Value, slack: usize, what: &str) -> Outcome {
    match ask_whole(ctx, &extra) {
        Ok(asked) => judge(ctx, asked, slack, what),
        Err(o) => *o,
    }
}

/// Tokens a stop of [`stop_at_boundary`] or [`stop_inside`] spans: all may be missing from the
/// log-probabilities (withheld).
const STOP_TOKENS: usize = 3;

/// A stop that begins where a token begins and ends inside the token after next (the README's `\nuser:`):
/// the three tokens spelled only the stop, so all three are withheld, none carried.
fn stop_at_boundary(base: &Baseline) -> Option<String> {
    let t = &base.text;
    let all: Vec<_> = spans(base).skip(1).collect();
    all.windows(3).find_map(|w| {
        let ((_, s0, _), (_, s2, e2)) = (w[0], w[2]);
        let b2 = bounds(&t[s2..e2]);
        let stop = &t[s0..s2 + *b2.get(1)?];
        (b2.len() > 2 && first_at(t, stop, s0)).then(|| stop.to_string())
    })
}

/// A stop that begins at a token's last character and ends inside the token after next: that token is cut
/// in the middle, its kept bytes shown, and it goes with the chunk that carries the finish.
fn stop_inside(base: &Baseline) -> Option<String> {
    let t = &base.text;
    let all: Vec<_> = spans(base).skip(1).collect();
    all.windows(3).find_map(|w| {
        let ((_, s0, e0), (_, s2, e2)) = (w[0], w[2]);
        let b0 = bounds(&t[s0..e0]);
        let b2 = bounds(&t[s2..e2]);
        if b0.len() < 3 || b2.len() < 3 {
            return None;
        }
        let from = s0 + b0[b0.len() - 2];
        let stop = &t[from..s2 + b2[1]];
        first_at(t, stop, from).then(|| stop.to_string())
    })
}

pub(super) fn ledger_stop(ctx: &Ctx<'_>) -> Outcome {
    let Some(stop) = stop_at_boundary(ctx.base) else {
        return no_stop("no three tokens, the third of two characters or more");
    };
    let what = format!(
        "stop {} begins at a token and spans three (all withheld)",
        show(&stop)
    );
    probe(ctx, json!({"stop": [stop]}), STOP_TOKENS, &what)
}

pub(super) fn ledger_stop_cut(ctx: &Ctx<'_>) -> Outcome {
    let Some(stop) = stop_inside(ctx.base) else {
        return no_stop("no three tokens, the first and third of two characters or more");
    };
    let what = format!(
        "stop {} begins inside a token (which the last chunk carries)",
        show(&stop)
    );
    probe(ctx, json!({"stop": [stop]}), STOP_TOKENS, &what)
}

pub(super) fn ledger_length(ctx: &Ctx<'_>) -> Outcome {
    let k = ctx.base.tokens.saturating_sub(1).min(5);
    if k == 0 {
        return no_stop("a single token");
    }
    let what = format!("max_tokens {k} ends the generation");
    probe(ctx, json!({"max_tokens": k}), 0, &what)
}

/// A completions prompt in ChatML (the default model's template, and many small models'), for an answer
/// that ends by itself where the plain transcript prompt runs to the limit.
const CHATML: &str = "<|im_start|>user\nWhat is the capital of France? Answer in one sentence.<|im_end|>\n\
                      <|im_start|>assistant\n";

pub(super) fn ledger_end_token(ctx: &Ctx<'_>) -> Outcome {
    // No stop is sent, so a finish_reason "stop" is the end token's.
    let extra = match (ctx.base.ended, ctx.api) {
        (true, _) => json!({}),
        (false, Api::Completions) => json!({"prompt": CHATML, "max_tokens": ctx.limit}),
        (false, Api::Chat) => {
            return no_stop("the model did not end by itself within the limit");
        }
    };
    let asked = match ask_whole(ctx, &extra) {
        Ok(a) => a,
        Err(o) => return *o,
    };
    let ended = asked
        .whole
        .parts
        .iter()
        .all(|p| p.finish.as_deref() == Some("stop"));
    if !ended {
        return no_stop(
            "the model did not end by itself within the limit (plain or ChatML prompt)",
        );
    }
    let what = if ctx.base.ended {
        "the model ends by itself"
    } else {
        "the model ends by itself (a ChatML prompt)"
    };
    judge(ctx, asked, 1, what)
}

pub(super) fn ledger_n2(ctx: &Ctx<'_>) -> Outcome {
    let stop = stop_at_boundary(ctx.base);
    let (extra, slack, what) = match &stop {
        Some(s) => (
            json!({"n": 2, "stop": [s]}),
            STOP_TOKENS,
            format!("n 2, stop {}", show(s)),
        ),
        None => (json!({"n": 2}), 1, "n 2".to_string()),
    };
    let asked = match ask_whole(ctx, &extra) {
        Ok(a) => a,
        Err(o) => return *o,
    };
    if asked.whole.parts.len() != 2 {
        let k = asked.whole.parts.len();
        return Outcome::unsupported(
            asked.sent,
            format!("n was ignored: {k} choice(s) came back"),
        );
    }
    judge(ctx, asked, slack, &what)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(list: &[&str]) -> Vec<Token> {
        list.iter().map(|s| Token::from_text(s)).collect()
    }

    #[test]
    fn a_chunk_spells_its_text_and_the_last_may_run_on_by_one_token() {
        assert!(spells(&toks(&[" The", " cap"]), " The cap", false));
        assert!(!spells(&toks(&[" The"]), " The cap", false));
        assert!(!spells(&toks(&[]), " capita", false));
        // The last chunk: a cut token, the end token.
        assert!(spells(&toks(&[" capital"]), " capita", true));
        assert!(spells(&toks(&[" capital"]), "", true));
        assert!(spells(&toks(&[".", "<|im_end|>"]), ".", true));
        // The README's case: the tokens of the cut "\nuser:" carried with the finish.
        assert!(!spells(&toks(&["\n", "user", ":"]), "", true));
    }

    #[test]
    fn a_lossy_token_string_reads_as_a_split_character() {
        // "é" is C3 A9: two byte tokens, each shown as U+FFFD.
        assert!(spells(
            &toks(&["caf", "\u{FFFD}", "\u{FFFD}"]),
            "café",
            false
        ));
        assert!(!spells(&toks(&["caf", "\u{FFFD}"]), "cafe", false));
        assert_eq!(
            Token::from_text("bytes:\\xc3\\xa9"),
            Token::from_bytes("é".as_bytes())
        );
        assert_eq!(Token::from_text("bytes:\\xc3"), Token::from_bytes(&[0xc3]));
    }

    #[test]
    fn an_entry_is_spelled_by_its_id_where_top_logprobs_name_it() {
        // llama.cpp: a held token's entry is emptied, its top_logprobs keep the id's text.
        let e = json!({"id": 282, "token": "", "bytes": [], "logprob": -0.1,
            "top_logprobs": [{"id": 282, "token": " of", "bytes": [32, 111, 102]}]});
        assert_eq!(entry_token(&e), Token::from_text(" of"));
        let e = json!({"token": "The", "bytes": [84, 104, 101], "logprob": -0.6});
        assert_eq!(entry_token(&e), Token::from_text("The"));
    }

    #[test]
    fn anything_a_server_sends_reads_without_panicking() {
        for v in [
            json!({}),
            json!({"choices": 3}),
            json!({"choices": [null, 1, {"index": "x", "logprobs": {"tokens": [1, null]},
                "token_ids": ["a"], "delta": {"content": 5}}]}),
            json!({"choices": [{"logprobs": {"content": [{"bytes": [300, -1], "token": 7}]}}]}),
        ] {
            let l = Ledger::read(&[v]).unwrap();
            let has = Has::of(&l.parts);
            let mut breaks = Vec::new();
            let sums = check_chunks(&l.parts, has, &mut breaks);
            check_sums(&l.parts, &sums, has, &mut breaks);
        }
        assert!(Ledger::read(&[json!({"error": "no"})]).is_err());
        assert!(Ledger::read(&[]).is_err());
    }

    #[test]
    fn usage_counts_carried_and_withheld_ids() {
        let ids = Has {
            ids: true,
            tokens: true,
        };
        let lp = Has {
            ids: false,
            tokens: true,
        };
        let mut b = Vec::new();
        check_usage("u", &[(2, 2, 2)], Some(4), ids, 3, &mut b);
        check_usage("u", &[(0, 0, 2)], Some(4), lp, 3, &mut b);
        assert!(b.is_empty(), "{b:?}");
        check_usage("u", &[(2, 0, 2)], Some(4), ids, 3, &mut b);
        check_usage("u", &[(0, 0, 5)], Some(4), lp, 3, &mut b);
        check_usage("u", &[(0, 0, 4)], Some(5), lp, 0, &mut b);
        assert_eq!(b.len(), 3, "{b:?}");
    }
}
