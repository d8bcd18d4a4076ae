//! The probes: one per stop behaviour a user relies on. Each draws its stops from the baseline (the server's
//! own greedy text and the chunks it streamed it in), sends them, and judges the answer with the reference.

use std::io::{BufRead, BufReader, Read};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::ledger;
use super::outcome::{Outcome, bounds, first_at, no_stop, show, spans};
use super::{Answer, Api, Ctx, Gen, ProbeResult, Verdict, reasoning};
use crate::client::{MAX_ANSWER, MAX_LINE};
use crate::pipeline::stop::naive_first_match;

/// A probe: its name (for `--only`), what it checks, its most requests per endpoint, and how it runs.
pub struct Probe {
    pub name: &'static str,
    pub what: &'static str,
    pub requests: usize,
    /// The probe is about the model's own end token, so it needs the unconstrained greedy output (a grammar
    /// would decide where the text ends).
    pub greedy_only: bool,
    run: fn(&Ctx<'_>) -> Outcome,
}

impl Probe {
    pub fn run(&self, ctx: &Ctx<'_>) -> ProbeResult {
        let mut o = (self.run)(ctx);
        // What was sent includes what fixed the text.
        if let (Some(sent), Some(fix)) = (o.sent.as_object_mut(), ctx.base.fix.as_object()) {
            for (k, v) in fix {
                sent.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
        ProbeResult {
            probe: self.name,
            api: ctx.api,
            verdict: o.verdict,
            method: ctx.base.method,
            sent: o.sent,
            got: o.got,
            expected: o.expected,
            note: o.note,
        }
    }
}

pub static PROBES: &[Probe] = &[
    Probe {
        name: "stop-inside-token",
        what: "a stop that lies inside one token's text",
        requests: 2,
        greedy_only: false,
        run: stop_inside_token,
    },
    Probe {
        name: "stop-spans-tokens",
        what: "a stop written across three tokens",
        requests: 2,
        greedy_only: false,
        run: stop_spans_tokens,
    },
    Probe {
        name: "token-runs-past-stop",
        what: "a token that goes on after the stop's last byte",
        requests: 2,
        greedy_only: false,
        run: token_runs_past_stop,
    },
    Probe {
        name: "later-listed-first",
        what: "two stops: the one listed second completes first and wins",
        requests: 2,
        greedy_only: false,
        run: later_listed_first,
    },
    Probe {
        name: "overlapping-stops",
        what: "two stops ending on the same byte: the longer wins",
        requests: 2,
        greedy_only: false,
        run: overlapping_stops,
    },
    Probe {
        name: "multibyte-stop",
        what: "a stop holding a multi-byte UTF-8 character",
        requests: 4,
        greedy_only: false,
        run: multibyte_stop,
    },
    Probe {
        name: "held-at-length",
        what: "text held back as a possible stop prefix is released at max_tokens",
        requests: 2,
        greedy_only: false,
        run: held_at_length,
    },
    Probe {
        name: "held-at-end-token",
        what: "text held back as a possible stop prefix is released at the end token",
        requests: 2,
        greedy_only: false,
        run: held_at_end_token,
    },
    Probe {
        name: "include-stop",
        what: "include_stop_str_in_output keeps the stop, cuts what follows",
        requests: 2,
        greedy_only: false,
        run: include_stop,
    },
    Probe {
        name: "stop-token-ids",
        what: "stop_token_ids ends on a token id",
        requests: 4,
        greedy_only: false,
        run: stop_token_ids,
    },
    Probe {
        name: "ignore-eos",
        what: "ignore_eos lets the model write past its end token",
        requests: 2,
        greedy_only: true,
        run: ignore_eos,
    },
    Probe {
        name: "min-tokens",
        what: "min_tokens keeps the model from ending early",
        requests: 2,
        greedy_only: true,
        run: min_tokens,
    },
    Probe {
        name: "finish-reason",
        what: "finish_reason is \"stop\" on a stop and \"length\" at max_tokens",
        requests: 2,
        greedy_only: false,
        run: finish_reason,
    },
    Probe {
        name: "stop-reason",
        what: "vLLM's stop_reason names the stop string that matched, and is null at the end token",
        requests: 1,
        greedy_only: false,
        run: stop_reason,
    },
    Probe {
        name: "empty-stop",
        what: "an empty stop string is refused or ignored, never matched before the first byte",
        requests: 1,
        greedy_only: false,
        run: empty_stop,
    },
    Probe {
        name: "ledger-stop",
        what: "the stream ledger on a stop spanning three tokens from a token's start: all three withheld",
        requests: 4,
        greedy_only: false,
        run: ledger::ledger_stop,
    },
    Probe {
        name: "ledger-stop-cut",
        what: "the stream ledger on a stop beginning inside a token: that token goes with the last chunk",
        requests: 4,
        greedy_only: false,
        run: ledger::ledger_stop_cut,
    },
    Probe {
        name: "ledger-length",
        what: "the stream ledger when max_tokens ends the generation",
        requests: 4,
        greedy_only: false,
        run: ledger::ledger_length,
    },
    Probe {
        name: "ledger-end-token",
        what: "the stream ledger when the model's end token ends the generation",
        requests: 4,
        greedy_only: true,
        run: ledger::ledger_end_token,
    },
    Probe {
        name: "ledger-n2",
        what: "the stream ledger of each choice with n = 2",
        requests: 4,
        greedy_only: false,
        run: ledger::ledger_n2,
    },
    Probe {
        name: "stop-in-copied-span",
        what: "a stop in the middle of a span the answer copies from its prompt (what a speculating server \
               drafts and accepts several tokens at a time), with the length limit at and just past it",
        requests: 7,
        greedy_only: true,
        run: stop_in_copied_span,
    },
    Probe {
        name: "stop-in-reasoning",
        what: "a stop drawn from the reasoning (chat, reasoning_content): the reasoning stays whole, the answer \
               is cut only where the stop occurs in it (stop scope answer)",
        requests: 4,
        greedy_only: true,
        run: reasoning::stop_in_reasoning,
    },
    Probe {
        name: "end-in-reasoning",
        what: "the model's end token inside its reasoning (chat, reasoning_content): the answer ends there, \
               the reasoning kept in reasoning_content, no end token's text shown",
        requests: 2,
        greedy_only: true,
        run: reasoning::end_in_reasoning,
    },
    Probe {
        name: "abort",
        what: "a client that hangs up mid-stream: the server still answers the next request",
        requests: 2,
        greedy_only: true,
        run: abort,
    },
    Probe {
        name: "stop-limits",
        what: "how many stops, and how long a stop, the server accepts",
        requests: 6,
        greedy_only: false,
        run: stop_limits,
    },
];

/// Whether every char of `s` is a plain visible ASCII letter, digit or punctuation (stops that read well).
fn plain(s: &str) -> bool {
    s.chars().all(|c| c.is_ascii_graphic() || c == ' ')
}

/// What the reference expects of `text` with `stops`: the text cut at the earliest match (after it with
/// `include`), and whether a stop matched.
fn reference(text: &str, stops: &[String], include: bool) -> (String, bool) {
    match naive_first_match(text.as_bytes(), stops) {
        Some(m) => {
            let keep = if include { m.end } else { m.start };
            (
                String::from_utf8_lossy(&text.as_bytes()[..keep]).into_owned(),
                true,
            )
        }
        None => (text.to_string(), false),
    }
}

fn show_gen(g: &Gen) -> String {
    format!(
        "{} (finish_reason {})",
        show(&g.text),
        g.finish_reason.as_deref().unwrap_or("none")
    )
}

/// Sends `extra` unstreamed and streamed and holds both to `want` (text, finish_reason).
fn judge(ctx: &Ctx<'_>, extra: Value, want: &str, finish: &str, what: &str) -> Outcome {
    let mut got = Vec::new();
    let mut bad = Vec::new();
    for stream in [false, true] {
        let label = if stream { "streamed" } else { "unstreamed" };
        match ctx.ask(&extra, stream) {
            Err(e) => {
                return Outcome {
                    verdict: Verdict::Fail,
                    sent: extra,
                    got: e.clone(),
                    expected: show(want),
                    note: format!("{label}: no answer: {e}"),
                };
            }
            Ok(Answer::Refused { status, body }) => {
                return Outcome::unsupported(
                    extra,
                    format!(
                        "{label}: the server refused the request ({status}): {}",
                        crate::client::clip(&body)
                    ),
                );
            }
            Ok(Answer::Gen(g)) => {
                if g.text != want {
                    bad.push(format!("{label} text differs"));
                }
                if g.finish_reason.as_deref() != Some(finish) {
                    bad.push(format!("{label} finish_reason is not {finish:?}"));
                }
                got.push(format!("{label}: {}", show_gen(&g)));
            }
        }
    }
    Outcome {
        verdict: Verdict::pass_if(bad.is_empty()),
        sent: extra,
        got: got.join("; "),
        expected: format!("{} (finish_reason {finish})", show(want)),
        note: if bad.is_empty() {
            what.to_string()
        } else {
            format!("{what}: {}", bad.join(", "))
        },
    }
}

/// Judges a stop list against the reference on the baseline.
fn judge_stops(ctx: &Ctx<'_>, stops: Vec<String>, what: &str) -> Outcome {
    let (want, matched) = reference(&ctx.base.text, &stops, false);
    let finish = if matched {
        "stop"
    } else {
        ctx.base.finish_reason.as_deref().unwrap_or("length")
    };
    judge(ctx, json!({ "stop": stops }), &want, finish, what)
}

fn stop_inside_token(ctx: &Ctx<'_>) -> Outcome {
    let t = &ctx.base.text;
    for (i, s, e) in spans(ctx.base).skip(1) {
        let piece = &t[s..e];
        let b = bounds(piece);
        if b.len() < 5 {
            continue;
        }
        let stop = &piece[b[1]..b[b.len() - 2]];
        if plain(stop) && first_at(t, stop, s + b[1]) {
            return judge_stops(
                ctx,
                vec![stop.to_string()],
                &format!("stop {} inside token {i} ({})", show(stop), show(piece)),
            );
        }
    }
    no_stop("no token of four characters or more")
}

fn stop_spans_tokens(ctx: &Ctx<'_>) -> Outcome {
    let t = &ctx.base.text;
    let all: Vec<_> = spans(ctx.base).collect();
    for w in all.windows(3) {
        let ((i, s0, e0), (_, _, _), (_, s2, e2)) = (w[0], w[1], w[2]);
        let b0 = bounds(&t[s0..e0]);
        let b2 = bounds(&t[s2..e2]);
        if b0.len() < 2 || b2.len() < 2 {
            continue;
        }
        let from = s0 + b0[b0.len() - 2];
        let to = s2 + b2[1];
        let stop = &t[from..to];
        if first_at(t, stop, from) {
            return judge_stops(
                ctx,
                vec![stop.to_string()],
                &format!("stop {} written by tokens {i}–{}", show(stop), i + 2),
            );
        }
    }
    no_stop("fewer than three tokens")
}

fn token_runs_past_stop(ctx: &Ctx<'_>) -> Outcome {
    let t = &ctx.base.text;
    let all: Vec<_> = spans(ctx.base).collect();
    for w in all.windows(2) {
        let ((_, s0, e0), (i, s1, e1)) = (w[0], w[1]);
        let b0 = bounds(&t[s0..e0]);
        let b1 = bounds(&t[s1..e1]);
        if b0.len() < 2 || b1.len() < 3 {
            continue;
        }
        let from = s0 + b0[b0.len() - 2];
        let to = s1 + b1[1];
        let stop = &t[from..to];
        if first_at(t, stop, from) {
            return judge_stops(
                ctx,
                vec![stop.to_string()],
                &format!(
                    "stop {} ends inside token {i} ({}), which goes on after it",
                    show(stop),
                    show(&t[s1..e1])
                ),
            );
        }
    }
    no_stop("no token of three characters or more after another")
}

/// The char positions `i` at which the `len`-char substring of `t` occurs first, in order.
fn unique_at(t: &str, len: usize) -> Vec<(usize, &str)> {
    let b = bounds(t);
    (0..b.len().saturating_sub(len))
        .map(|i| (i, &t[b[i]..b[i + len]]))
        .filter(|&(i, s)| plain(s) && first_at(t, s, b[i]))
        .collect()
}

/// Two non-overlapping stops drawn from the text, the later one listed first.
fn later_listed_first(ctx: &Ctx<'_>) -> Outcome {
    let t = &ctx.base.text;
    let found = unique_at(t, 3);
    let Some(&(i, early)) = found.first() else {
        return no_stop("no three-character stop that occurs once");
    };
    let Some(&(_, late)) = found.iter().rev().find(|&&(j, _)| j >= i + 3) else {
        return no_stop("no two distinct three-character stops");
    };
    judge_stops(
        ctx,
        vec![late.to_string(), early.to_string()],
        &format!(
            "stops [{}, {}]: the second ends first",
            show(late),
            show(early)
        ),
    )
}

/// A long stop and its own suffix, which end on the same byte: the longer, listed second, wins.
fn overlapping_stops(ctx: &Ctx<'_>) -> Outcome {
    let t = &ctx.base.text;
    let b = bounds(t);
    let n = b.len() - 1;
    if n < 8 {
        return no_stop("fewer than eight characters");
    }
    let at = n / 3;
    let long = &t[b[at]..b[at + 5]];
    let short = &t[b[at + 3]..b[at + 5]];
    if !first_at(t, long, b[at]) || t.find(short) != Some(b[at + 3]) {
        return no_stop("no stop whose suffix occurs nowhere earlier");
    }
    judge_stops(
        ctx,
        vec![short.to_string(), long.to_string()],
        &format!(
            "stops [{}, {}] end on the same byte",
            show(short),
            show(long)
        ),
    )
}

/// A stop around the first multi-byte character of the greedy output; the probe asks for one when the
/// baseline has none.
fn multibyte_stop(ctx: &Ctx<'_>) -> Outcome {
    let find = |t: &str| {
        t.char_indices()
            .find(|(_, c)| c.len_utf8() > 1)
            .map(|(i, c)| (i, i + c.len_utf8()))
    };
    let (text, finish, extra_prompt) = match find(&ctx.base.text) {
        Some(_) => (ctx.base.text.clone(), ctx.base.finish_reason.clone(), None),
        None => {
            // Ask for a word with an accent: "café", then judge against that text.
            let p = match ctx.api {
                Api::Completions => {
                    json!({"prompt": "user: Write the French word for coffee shop.\nAI:"})
                }
                Api::Chat => json!({"messages": [
                    {"role": "user", "content": "Write the French word for coffee shop."}
                ]}),
            };
            match ctx.ask(&p, false) {
                Ok(Answer::Gen(g)) => (g.text, g.finish_reason, Some(p)),
                _ => return no_stop("the model wrote no multi-byte character"),
            }
        }
    };
    let Some((s, e)) = find(&text) else {
        return no_stop("the model wrote no multi-byte character");
    };
    let b = bounds(&text);
    let from = b.iter().rev().find(|&&x| x < s).copied().unwrap_or(s);
    let stop = &text[from..e];
    let stops = vec![stop.to_string()];
    let (want, matched) = reference(&text, &stops, false);
    let mut extra = extra_prompt.unwrap_or_else(|| json!({}));
    extra["stop"] = json!(stops);
    let finish = if matched {
        "stop".to_string()
    } else {
        finish.unwrap_or_else(|| "length".into())
    };
    judge(
        ctx,
        extra,
        &want,
        &finish,
        &format!("stop {} holds a multi-byte character", show(stop)),
    )
}

/// A stop whose first characters end the text at `max_tokens`: they must be held while the stop may come,
/// then released when the limit ends the generation.
fn held_at_length(ctx: &Ctx<'_>) -> Outcome {
    let base = ctx.base;
    let k = base.pieces.len().min(base.tokens).saturating_sub(1).min(6);
    if k < 2 {
        return no_stop("fewer than three tokens");
    }
    let prefix: String = base.pieces[..k].concat();
    let b = bounds(&prefix);
    let tail = &prefix[b[b.len() - 3]..];
    let stop = format!("{tail}\u{2063}#");
    let extra = json!({"stop": [stop], "max_tokens": k});
    let what = format!(
        "{k} tokens, the last characters {} begin the stop {}",
        show(tail),
        show(&stop)
    );
    judge(ctx, extra, &prefix, "length", &what)
}

fn held_at_end_token(ctx: &Ctx<'_>) -> Outcome {
    let base = ctx.base;
    if !base.ended {
        return no_stop("the model did not end by itself within the limit");
    }
    let b = bounds(&base.text);
    let tail = &base.text[b[b.len().saturating_sub(3)]..];
    let stop = format!("{tail}\u{2063}#");
    let what = format!(
        "the last characters {} begin the stop {}",
        show(tail),
        show(&stop)
    );
    judge(ctx, json!({"stop": [stop]}), &base.text, "stop", &what)
}

/// Whether a field the probe set was ignored: the answer is the one without the field.
fn ignored(a: &Answer, without: &str) -> bool {
    matches!(a, Answer::Gen(g) if g.text == without)
}

fn include_stop(ctx: &Ctx<'_>) -> Outcome {
    let t = &ctx.base.text;
    let found = unique_at(t, 3);
    // One from the middle of the text, so that something follows it.
    let Some(&(_, stop)) = found.get(found.len() / 2) else {
        return no_stop("no three-character stop that occurs once");
    };
    let stops = vec![stop.to_string()];
    let (want, _) = reference(t, &stops, true);
    let (without, _) = reference(t, &stops, false);
    let extra = json!({"stop": stops, "include_stop_str_in_output": true});
    if let Ok(a) = ctx.ask(&extra, false)
        && ignored(&a, &without)
    {
        return Outcome::unsupported(
            extra,
            "include_stop_str_in_output was ignored: the stop was cut",
        );
    }
    judge(
        ctx,
        extra,
        &want,
        "stop",
        &format!("stop {} kept", show(stop)),
    )
}

/// Token ids of `text` by the server's `/tokenize` (llama.cpp's `content`, or `prompt` as vLLM and stoplab
/// take it), without special tokens.
fn tokenize(ctx: &Ctx<'_>, text: &str) -> Option<Vec<u64>> {
    for body in [
        json!({"content": text, "add_special": false}),
        json!({"prompt": text, "add_special_tokens": false}),
        json!({"prompt": text}),
    ] {
        let body = ctx.client.with_model(body);
        if let Ok(crate::client::Reply::Ok(v)) = ctx.client.post("/tokenize", &body)
            && let Some(ids) = v
                .first()
                .and_then(|v| v.get("tokens"))
                .and_then(Value::as_array)
        {
            return ids.iter().map(Value::as_u64).collect();
        }
    }
    None
}

fn stop_token_ids(ctx: &Ctx<'_>) -> Outcome {
    let base = ctx.base;
    // A piece that the tokenizer makes one token, whose text occurs nowhere before it.
    let Some((i, id)) = spans(base).skip(1).take(2).find_map(|(i, s, e)| {
        let piece = &base.text[s..e];
        if base.text.find(piece) != Some(s) {
            return None;
        }
        match tokenize(ctx, piece)?.as_slice() {
            [id] => Some((i, *id)),
            _ => None,
        }
    }) else {
        return Outcome::unsupported(
            json!({}),
            "no /tokenize endpoint gave a single id for a token of the greedy output",
        );
    };
    let want = base.text[..base.starts[i]].to_string();
    let extra = json!({"stop_token_ids": [id]});
    if let Ok(a) = ctx.ask(&extra, false)
        && ignored(&a, &base.text)
    {
        return Outcome::unsupported(extra, "stop_token_ids was ignored");
    }
    judge(
        ctx,
        extra,
        &want,
        "stop",
        &format!("token {i} ({}) is id {id}", show(&base.pieces[i])),
    )
}

fn ignore_eos(ctx: &Ctx<'_>) -> Outcome {
    let base = ctx.base;
    if !base.ended {
        return no_stop("the model did not end by itself within the limit");
    }
    let n = base.tokens + 4;
    let extra = json!({"ignore_eos": true, "max_tokens": n});
    match ctx.ask(&extra, false) {
        Ok(Answer::Gen(g)) if g.text == base.text && g.finish_reason.as_deref() == Some("stop") => {
            Outcome::unsupported(
                extra,
                "ignore_eos was ignored: the model ended where it did without it",
            )
        }
        Ok(Answer::Gen(g)) => {
            let ok = g.finish_reason.as_deref() == Some("length")
                && g.completion_tokens.is_none_or(|c| c as usize == n)
                && g.text.len() >= base.text.len();
            Outcome {
                verdict: Verdict::pass_if(ok),
                sent: extra,
                got: format!(
                    "{} ({} tokens)",
                    show_gen(&g),
                    g.completion_tokens.map_or("?".into(), |c| c.to_string())
                ),
                expected: format!("{n} tokens, finish_reason length"),
                note: format!("the model ends by itself after {} tokens", base.tokens),
            }
        }
        Ok(Answer::Refused { status, body }) => Outcome::refused(extra, status, &body),
        Err(e) => Outcome::no_answer(extra, e),
    }
}

fn min_tokens(ctx: &Ctx<'_>) -> Outcome {
    let base = ctx.base;
    if !base.ended {
        return no_stop("the model did not end by itself within the limit");
    }
    let min = base.tokens + 2;
    let extra = json!({"min_tokens": min, "max_tokens": min + 4});
    match ctx.ask(&extra, false) {
        Ok(Answer::Gen(g)) if g.text == base.text => Outcome::unsupported(
            extra,
            "min_tokens was ignored: the model ended where it did without it",
        ),
        Ok(Answer::Gen(g)) => {
            let n = g.completion_tokens.map_or(0, |c| c as usize);
            Outcome {
                verdict: Verdict::pass_if(n >= min),
                sent: extra,
                got: format!("{} ({n} tokens)", show_gen(&g)),
                expected: format!("at least {min} tokens"),
                note: format!("the model ends by itself after {} tokens", base.tokens),
            }
        }
        Ok(Answer::Refused { status, body }) => Outcome::refused(extra, status, &body),
        Err(e) => Outcome::no_answer(extra, e),
    }
}

fn finish_reason(ctx: &Ctx<'_>) -> Outcome {
    let base = ctx.base;
    let mut got = Vec::new();
    let mut bad = Vec::new();
    let stop = base.pieces.get(1).cloned().unwrap_or_default();
    let checks = [
        (json!({"stop": [stop], "max_tokens": base.tokens}), "stop"),
        (json!({"max_tokens": 2}), "length"),
    ];
    for (extra, want) in &checks {
        if extra["stop"][0] == "" {
            continue;
        }
        match ctx.ask(extra, false) {
            Ok(Answer::Gen(g)) => {
                if g.finish_reason.as_deref() != Some(want) {
                    bad.push(format!("{extra} gave {:?}", g.finish_reason));
                }
                got.push(format!(
                    "{extra}: {}",
                    g.finish_reason.as_deref().unwrap_or("none")
                ));
            }
            Ok(Answer::Refused { status, .. }) => bad.push(format!("{extra} refused ({status})")),
            Err(e) => bad.push(e),
        }
    }
    Outcome {
        verdict: Verdict::pass_if(bad.is_empty()),
        sent: json!([checks[0].0, checks[1].0]),
        got: got.join("; "),
        expected: "stop; length".into(),
        note: if bad.is_empty() {
            "a stop that matched, then max_tokens".into()
        } else {
            bad.join("; ")
        },
    }
}

fn stop_reason(ctx: &Ctx<'_>) -> Outcome {
    let Some(stop) = ctx.base.pieces.get(1).filter(|p| !p.is_empty()).cloned() else {
        return no_stop("fewer than two tokens");
    };
    let extra = json!({"stop": ["\u{2063}never", stop]});
    match ctx.ask(&extra, false) {
        Ok(Answer::Gen(g)) => match &g.stop_reason {
            None => Outcome::unsupported(
                extra,
                "the answer has no stop_reason field (a vLLM extension)",
            ),
            Some(r) => Outcome {
                verdict: Verdict::pass_if(*r == json!(stop)),
                sent: extra,
                got: format!("stop_reason {r}"),
                expected: format!("stop_reason {}", json!(stop)),
                note: "the stop that matched, not its index or the list".into(),
            },
        },
        Ok(Answer::Refused { status, body }) => Outcome::refused(extra, status, &body),
        Err(e) => Outcome::no_answer(extra, e),
    }
}

fn empty_stop(ctx: &Ctx<'_>) -> Outcome {
    let extra = json!({"stop": [""]});
    match ctx.ask(&extra, false) {
        Ok(Answer::Refused { status, body }) if (400..500).contains(&status) => Outcome {
            verdict: Verdict::Pass,
            sent: extra,
            got: format!("refused ({status}): {}", crate::client::clip(&body)),
            expected: "a 4xx naming the empty stop, or the text of no stop".into(),
            note: "an empty stop was refused".into(),
        },
        Ok(Answer::Gen(g)) => Outcome {
            verdict: Verdict::pass_if(g.text == ctx.base.text),
            note: if g.text == ctx.base.text {
                "the empty stop was ignored".into()
            } else {
                "the empty stop cut the generation: it matched before the first byte".into()
            },
            sent: extra,
            got: show_gen(&g),
            expected: format!("refused, or {}", show(&ctx.base.text)),
        },
        Ok(Answer::Refused { status, body }) => Outcome {
            verdict: Verdict::Fail,
            sent: extra,
            got: format!("{status}: {}", crate::client::clip(&body)),
            expected: "a 4xx, or the text of no stop".into(),
            note: "a server error on user input".into(),
        },
        Err(e) => Outcome::no_answer(extra, e),
    }
}

/// How long the abort probe's own connection waits for the first chunks.
const ABORT_WAIT: Duration = Duration::from_secs(60);

/// What became of a stream opened to be hung up on.
enum HangUp {
    /// Hung up after two `data:` events.
    Done,
    /// The stream ended first, after this many events: nothing was cut.
    Ended(usize),
    Refused(u16, String),
}

/// Opens `body` as a stream on a connection of its own, reads two `data:` events (lines only: nothing of them
/// is needed), and hangs up: dropping an unread answer closes its connection (ureq pools only a connection
/// read to its end). It sends no API key: the probes' client keeps its key to itself.
fn open_and_hang_up(url: &str, body: &Value) -> Result<HangUp, String> {
    let agent = ureq::AgentBuilder::new().timeout(ABORT_WAIT).build();
    let resp = match agent
        .post(url)
        .set("Content-Type", "application/json")
        .send_string(&body.to_string())
    {
        Ok(r) => r,
        Err(ureq::Error::Status(status, r)) => {
            return Ok(HangUp::Refused(status, r.into_string().unwrap_or_default()));
        }
        Err(e) => return Err(e.to_string()),
    };
    let mut reader = BufReader::new(resp.into_reader().take(MAX_ANSWER as u64));
    let (mut events, mut line) = (0, Vec::new());
    while events < 2 {
        line.clear();
        let n = (&mut reader)
            .take(MAX_LINE as u64)
            .read_until(b'\n', &mut line)
            .map_err(|e| format!("reading the stream: {e}"))?;
        let data = line.strip_prefix(b"data:").map(<[u8]>::trim_ascii);
        if n == 0 || data == Some(b"[DONE]") {
            return Ok(HangUp::Ended(events));
        }
        events += usize::from(data.is_some());
    }
    Ok(HangUp::Done)
}

/// A prompt whose answer runs long, so that the hang-up comes while the server is still writing.
fn long_prompt(api: Api) -> Value {
    match api {
        Api::Completions => {
            json!({"prompt": "user: Count from 1 to 100, one number per line.\nAI:"})
        }
        Api::Chat => json!({"messages": [
            {"role": "user", "content": "Count from 1 to 100, one number per line."}
        ]}),
    }
}

/// Hangs up on a stream after two chunks, then sends the greedy request again: the server must answer it
/// (within the client's timeout) with the same text, as if nothing had happened.
fn abort(ctx: &Ctx<'_>) -> Outcome {
    let mut extra = long_prompt(ctx.api);
    extra["max_tokens"] = json!(ctx.limit);
    let url = format!("{}{}", ctx.client.base(), ctx.api.path());
    let mut sent = extra.clone();
    sent["stream"] = json!(true);
    sent["hang_up_after_events"] = json!(2);
    match open_and_hang_up(&url, &ctx.body(&extra, true)) {
        Err(e) => return Outcome::no_answer(sent, e),
        Ok(HangUp::Refused(status, body)) => {
            let mut o = Outcome::refused(sent, status, &body);
            if matches!(status, 401 | 403) {
                o.note
                    .push_str(" (the probe's own connection sends no API key)");
            }
            return o;
        }
        Ok(HangUp::Ended(n)) => {
            return no_stop(&format!(
                "the stream ended after {n} event(s), before the probe could hang up"
            ));
        }
        Ok(HangUp::Done) => {}
    }
    let t0 = Instant::now();
    let answer = ctx.ask(&json!({}), false);
    let ms = t0.elapsed().as_millis();
    let want = show(&ctx.base.text);
    match answer {
        Ok(Answer::Gen(g)) => {
            let same = g.text == ctx.base.text;
            Outcome {
                verdict: Verdict::pass_if(same),
                sent,
                got: format!("next request: {} in {ms} ms", show_gen(&g)),
                expected: format!("{want} (the greedy output)"),
                note: if same {
                    format!("hung up after two chunks; the next request answered in {ms} ms")
                } else {
                    "after the hang-up the same greedy request gave another text".into()
                },
            }
        }
        Ok(Answer::Refused { status, body }) => Outcome {
            verdict: Verdict::Fail,
            sent,
            got: format!(
                "next request refused ({status}): {}",
                crate::client::clip(&body)
            ),
            expected: format!("{want} (the greedy output)"),
            note: "after the hang-up the server refused a plain request".into(),
        },
        Err(e) => Outcome {
            verdict: Verdict::Fail,
            sent,
            got: e,
            expected: format!("{want} (the greedy output)"),
            note: format!("after the hang-up the next request got no answer ({ms} ms)"),
        },
    }
}

/// The most stops and the longest stop accepted, of a few sizes, one token each.
fn stop_limits(ctx: &Ctx<'_>) -> Outcome {
    let accepts = |stops: Vec<String>| {
        matches!(
            ctx.ask(&json!({"stop": stops, "max_tokens": 1}), false),
            Ok(Answer::Gen(_))
        )
    };
    let never = |i: usize| format!("\u{2063}{i}\u{2063}");
    let most = [4usize, 16, 64]
        .into_iter()
        .take_while(|&n| accepts((0..n).map(never).collect()))
        .last();
    let longest = [64usize, 1024, 16384]
        .into_iter()
        .take_while(|&n| accepts(vec!["\u{2063}".repeat(n / 3)]))
        .last();
    let say = |v: Option<usize>, what: &str| match v {
        Some(n) => format!("{what} {n}: accepted"),
        None => format!("{what}: even the smallest size was refused"),
    };
    Outcome {
        verdict: Verdict::Info,
        sent: json!({"stops": [4, 16, 64], "stop_bytes": [64, 1024, 16383]}),
        got: format!("{}; {}", say(most, "stops"), say(longest, "stop bytes")),
        expected: String::new(),
        note: "sizes tried in turn until one is refused".into(),
    }
}

/// A prompt whose answer copies a list from it, so that an n-gram drafter (llama.cpp's `--spec-type
/// ngram-simple`, vLLM's `ngram`) drafts it and accepts several tokens per step.
fn copy_prompt(api: Api) -> Value {
    const LIST: &str = "Here is a list of fruits: apple, banana, cherry, date, elderberry, fig, grape, \
                        honeydew, kiwi, lemon, mango.";
    match api {
        Api::Completions => {
            json!({"prompt": format!("{LIST}\nRepeat the list exactly: apple, banana,")})
        }
        Api::Chat => json!({"messages": [
            {"role": "user", "content": format!("{LIST}\nRepeat the list exactly.")}
        ]}),
    }
}

/// The answer to the copy prompt is fetched first (greedy, no stop); a stop is drawn from the middle of it,
/// and the request is sent again with the stop alone, with `max_tokens` at the token that completes the
/// stop (the stop must win over the length: sglang #31599 finished `length` there), and one past it.
fn stop_in_copied_span(ctx: &Ctx<'_>) -> Outcome {
    let mut extra = copy_prompt(ctx.api);
    extra["max_tokens"] = json!(ctx.limit);
    let text = match ctx.ask(&extra, false) {
        Err(e) => return Outcome::no_answer(extra, e),
        Ok(Answer::Refused { status, body }) => return Outcome::refused(extra, status, &body),
        Ok(Answer::Gen(g)) => g.text,
    };
    // A stop of 5 characters from the middle of the answer, first found there.
    let b = bounds(&text);
    let stop = (b.len() / 2..b.len().saturating_sub(6))
        .map(|i| (b[i], &text[b[i]..b[i + 5]]))
        .find(|&(at, s)| first_at(&text, s, at) && !s.trim().is_empty());
    let Some((_, stop)) = stop else {
        return no_stop("the answer to the copy prompt is too short for a stop in its middle");
    };
    let (want, _) = reference(&text, &[stop.to_string()], false);
    extra["stop"] = json!([stop]);
    let first = judge(ctx, extra.clone(), &want, "stop", "the stop alone");
    if first.verdict != Verdict::Pass {
        return first;
    }
    // The tokens up to the one that completes the stop, as the server counts them, and what llama.cpp's
    // server says of its drafts (`timings.draft_n`, `draft_n_accepted`), where it says.
    let answer = match ctx.send(&extra, false) {
        Ok(crate::client::Reply::Ok(values)) => values.into_iter().next(),
        _ => None,
    };
    let n = |path: &str| {
        answer
            .as_ref()
            .and_then(|a| a.pointer(path))
            .and_then(Value::as_u64)
    };
    let used = n("/usage/completion_tokens");
    let drafts = match (n("/timings/draft_n"), n("/timings/draft_n_accepted")) {
        (Some(d), Some(a)) => format!("; the server drafted {d} tokens and accepted {a}"),
        _ => String::new(),
    };
    let Some(used) = used.filter(|&n| n > 0) else {
        return Outcome {
            note: format!(
                "{}; the server gave no usage, so the length limit was not placed",
                first.note
            ),
            ..first
        };
    };
    for (limit, what) in [
        (used, "max_tokens at the token that completes the stop"),
        (used + 1, "max_tokens one past it"),
    ] {
        let mut with_limit = extra.clone();
        with_limit["max_tokens"] = json!(limit);
        let o = judge(ctx, with_limit, &want, "stop", what);
        if o.verdict != Verdict::Pass {
            return o;
        }
    }
    Outcome {
        note: format!(
            "stop {} in the copied answer; alone, with max_tokens {used} and {}{drafts}",
            show(stop),
            used + 1,
        ),
        ..first
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_cuts_at_the_earliest_ending_stop() {
        let stops = vec!["ris.".to_string(), "Par".to_string()];
        assert_eq!(
            reference("It is Paris.", &stops, false),
            ("It is ".into(), true)
        );
        assert_eq!(
            reference("It is Paris.", &stops, true),
            ("It is Par".into(), true)
        );
        assert_eq!(reference("No.", &stops, false), ("No.".into(), false));
    }

    #[test]
    fn probe_names_are_unique() {
        let mut names: Vec<_> = PROBES.iter().map(|p| p.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), PROBES.len());
    }
}
