//! The reasoning probes, for servers that split a chat answer into `reasoning_content` and `content`
//! (vLLM with a `--reasoning-parser`, llama.cpp's `--reasoning-format`, stoplab with reasoning markers):
//! a stop drawn from the reasoning, and the model's end token inside the reasoning.
//!
//! Both send one chat request that opens the reasoning for the model: the assistant's turn is continued
//! from `<think>\n` (vLLM's `continue_final_message`; llama.cpp continues a final assistant message by
//! itself), as the Qwen3 thinking and DeepSeek-R1 templates open it. A server that returns no reasoning for
//! it makes both probes n/a; `probe --extra-body` carries what a server needs to split (stoplab's
//! `reasoning_markers` for a model without its own).
//!
//! What each expects is stoplab's default, stated in the report: stop strings are armed in the answer only
//! (vLLM's 2025 fix, PR #14550, not in its V1 engine: #52393), and an end token inside the reasoning ends
//! the generation there (`end_in_reasoning` `allow`) with the reasoning so far in `reasoning_content`,
//! nothing in `content`.

use serde_json::{Value, json};

use super::outcome::{Outcome, bounds, show};
use super::{Api, Ctx, Verdict};

/// The question whose thinking the probes read, and the opened reasoning the answer continues. Short on
/// purpose: `end-in-reasoning` needs the model to end inside its reasoning within the probes' token limit
/// (the default model does so here in 9 tokens; asked to think "step by step" it ran past 200).
const QUESTION: &str = "Is 91 a prime number? Think it through, then answer in one sentence.";
const OPEN: &str = "<think>\n";

/// A chat answer split as the server split it.
#[derive(Debug, Clone, PartialEq)]
struct Split {
    reasoning: String,
    content: String,
    finish: Option<String>,
}

/// The request's fields beyond the prompt: the opened reasoning, and at most `limit` tokens.
fn opened(ctx: &Ctx<'_>) -> Value {
    json!({
        "messages": [
            {"role": "user", "content": QUESTION},
            {"role": "assistant", "content": OPEN},
        ],
        "continue_final_message": true,
        "add_generation_prompt": false,
        "max_tokens": ctx.limit,
    })
}

/// The reasoning field of a message or delta: `reasoning_content` (vLLM, DeepSeek, llama.cpp), or
/// `reasoning` (vLLM's later name).
fn reasoning_of(v: &Value) -> &str {
    v.get("reasoning_content")
        .or_else(|| v.get("reasoning"))
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// Reads a chat answer, streamed or not, into its two fields.
fn split_of(values: &[Value], stream: bool) -> Result<Split, String> {
    let mut s = Split {
        reasoning: String::new(),
        content: String::new(),
        finish: None,
    };
    for v in values {
        if let Some(err) = v.get("error") {
            return Err(format!("the server sent an error event: {err}"));
        }
        let Some(choice) = v.pointer("/choices/0") else {
            continue;
        };
        let part = choice
            .get(if stream { "delta" } else { "message" })
            .unwrap_or(&Value::Null);
        s.reasoning.push_str(reasoning_of(part));
        s.content
            .push_str(part.get("content").and_then(Value::as_str).unwrap_or(""));
        if let Some(f) = choice.get("finish_reason").and_then(Value::as_str) {
            s.finish = Some(f.to_string());
        }
    }
    if values.is_empty() {
        return Err("the server answered with nothing".into());
    }
    Ok(s)
}

fn show_split(s: &Split) -> String {
    format!(
        "reasoning_content {}, content {} (finish_reason {})",
        show(&s.reasoning),
        show(&s.content),
        s.finish.as_deref().unwrap_or("none")
    )
}

/// Sends `extra` unstreamed and streamed: the two answers.
fn ask_both(ctx: &Ctx<'_>, extra: &Value) -> Result<(Split, Split), Box<Outcome>> {
    let mut got: Vec<Split> = Vec::new();
    for stream in [false, true] {
        match ctx.send(extra, stream) {
            Err(e) => return Err(Box::new(Outcome::no_answer(extra.clone(), e))),
            Ok(crate::client::Reply::Refused { status, body }) => {
                return Err(Box::new(Outcome::refused(extra.clone(), status, &body)));
            }
            Ok(crate::client::Reply::Ok(values)) => match split_of(&values, stream) {
                Ok(s) => got.push(s),
                Err(e) => return Err(Box::new(Outcome::no_answer(extra.clone(), e))),
            },
        }
    }
    let streamed = got.pop().expect("two answers");
    Ok((got.pop().expect("two answers"), streamed))
}

/// The two answers must split alike (the stream's deltas add up to the whole answer's fields).
fn agree(extra: &Value, (whole, streamed): (Split, Split)) -> Result<Split, Box<Outcome>> {
    if whole == streamed {
        return Ok(whole);
    }
    Err(Box::new(Outcome {
        verdict: Verdict::Fail,
        sent: extra.clone(),
        got: format!(
            "unstreamed: {}; streamed: {}",
            show_split(&whole),
            show_split(&streamed)
        ),
        expected: "the streamed deltas add up to the unstreamed fields".into(),
        note: "the stream and the whole answer split the reasoning differently".into(),
    }))
}

fn ask(ctx: &Ctx<'_>, extra: &Value) -> Result<Split, Box<Outcome>> {
    agree(extra, ask_both(ctx, extra)?)
}

/// The answer to the opened reasoning with no stop; `Err` when the probe cannot go on (chat only; a server
/// that returns no reasoning is n/a).
fn baseline(ctx: &Ctx<'_>) -> Result<(Value, Split), Box<Outcome>> {
    let extra = opened(ctx);
    if ctx.api != Api::Chat {
        return Err(Box::new(Outcome {
            verdict: Verdict::NotApplicable,
            sent: json!({}),
            got: String::new(),
            expected: String::new(),
            note: "reasoning_content is a chat completions field".into(),
        }));
    }
    let (whole, streamed) = ask_both(ctx, &extra)?;
    if whole.reasoning.is_empty() && streamed.reasoning.is_empty() {
        let differ = if whole == streamed {
            String::new()
        } else {
            format!(
                " (and the stream's content differs from the whole answer's: {})",
                show(&streamed.content)
            )
        };
        return Err(Box::new(Outcome {
            verdict: Verdict::NotApplicable,
            sent: extra,
            got: show_split(&whole),
            expected: String::new(),
            note: format!(
                "the server returned no reasoning_content for an answer opened with <think>: not a reasoning \
                 model, no reasoning parser, or markers it was not given (stoplab: --extra-body \
                 '{{\"reasoning_markers\": \"<think>,</think>\"}}'){differ}"
            ),
        }));
    }
    Ok((extra.clone(), agree(&extra, (whole, streamed))?))
}

/// A stop of five characters from the reasoning, first found there (after its first word): one that the
/// content holds too where there is one (the answer must be cut at the content's, not the reasoning's).
fn stop_from(s: &Split) -> Option<String> {
    let r = &s.reasoning;
    let b = bounds(r);
    let candidates: Vec<&str> = (1..b.len().saturating_sub(5))
        .map(|i| &r[b[i]..b[i + 5]])
        .filter(|c| {
            c.chars().all(|ch| ch.is_ascii_graphic() || ch == ' ')
                && !c.trim().is_empty()
                && !c.contains("think")
        })
        .collect();
    let words: Vec<&str> = candidates
        .iter()
        .copied()
        .filter(|c| c.starts_with(' '))
        .collect();
    candidates
        .iter()
        .find(|c| s.content.contains(**c))
        .or_else(|| words.get(words.len() / 3))
        .or_else(|| candidates.get(candidates.len() / 3))
        .map(|c| c.to_string())
}

pub(super) fn stop_in_reasoning(ctx: &Ctx<'_>) -> Outcome {
    let (mut extra, base) = match baseline(ctx) {
        Ok(b) => b,
        Err(o) => return *o,
    };
    let Some(stop) = stop_from(&base) else {
        return super::outcome::no_stop("the reasoning is too short for a stop of five characters");
    };
    extra["stop"] = json!([stop]);
    // stoplab's default: the stop is not armed in the reasoning, so the reasoning is whole; the content is
    // cut at the stop's first occurrence in it.
    let want = match base.content.find(&stop) {
        Some(at) => Split {
            reasoning: base.reasoning.clone(),
            content: base.content[..at].to_string(),
            finish: Some("stop".into()),
        },
        None => base.clone(),
    };
    let got = match ask(ctx, &extra) {
        Ok(s) => s,
        Err(o) => return *o,
    };
    let in_content = if want.content != base.content {
        "; it also occurs in the content, which is cut there"
    } else {
        ""
    };
    let note = if got == want {
        format!(
            "stop {} from the reasoning left the reasoning whole{in_content}",
            show(&stop)
        )
    } else if base
        .reasoning
        .find(&stop)
        .is_some_and(|at| got.reasoning == base.reasoning[..at])
    {
        format!(
            "stop {} ended the reasoning where it occurs (armed inside it: vLLM's V1 engine, #52393; sglang \
             cut at the first occurrence, PR #33151)",
            show(&stop)
        )
    } else {
        format!(
            "stop {} from the reasoning: the answer differs",
            show(&stop)
        )
    };
    Outcome {
        verdict: Verdict::pass_if(got == want),
        sent: extra,
        got: show_split(&got),
        expected: format!(
            "{} (stop scope answer, stoplab's default)",
            show_split(&want)
        ),
        note,
    }
}

pub(super) fn end_in_reasoning(ctx: &Ctx<'_>) -> Outcome {
    let (extra, base) = match baseline(ctx) {
        Ok(b) => b,
        Err(o) => return *o,
    };
    if base.finish.as_deref() != Some("stop") || !base.content.is_empty() {
        return Outcome {
            verdict: Verdict::NotApplicable,
            sent: extra,
            got: show_split(&base),
            expected: String::new(),
            note: "the model did not write its end token inside the reasoning (it closed it, or ran to the \
                   length limit)"
                .into(),
        };
    }
    // The end token came inside the reasoning: what the model wrote is its reasoning, and no marker or end
    // token's text is shown.
    let leaked = [
        "<|im_end|>",
        "<|endoftext|>",
        "</s>",
        "<end_of_turn>",
        "<|eot_id|>",
        "</think>",
    ]
    .into_iter()
    .find(|t| base.reasoning.contains(t));
    Outcome {
        verdict: Verdict::pass_if(leaked.is_none()),
        sent: extra,
        got: show_split(&base),
        expected:
            "finish_reason stop, the reasoning so far in reasoning_content, content empty, no end \
                   token's text (end_in_reasoning allow, stoplab's default)"
                .into(),
        note: match leaked {
            None => {
                "the end token inside the reasoning ended the answer there; the reasoning was kept"
                    .into()
            }
            Some(t) => format!("the reasoning shows {}", show(t)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_split_reads_both_field_names_and_stream_deltas() {
        let whole = [
            json!({"choices": [{"message": {"reasoning": "a b", "content": null},
                                          "finish_reason": "stop"}]}),
        ];
        let s = split_of(&whole, false).unwrap();
        assert_eq!((s.reasoning.as_str(), s.content.as_str()), ("a b", ""));
        let stream = [
            json!({"choices": [{"delta": {"reasoning_content": "a "}}]}),
            json!({"choices": [{"delta": {"reasoning_content": "b"}}]}),
            json!({"choices": [{"delta": {"content": "c"}, "finish_reason": "stop"}]}),
        ];
        let s = split_of(&stream, true).unwrap();
        assert_eq!(
            (
                s.reasoning.as_str(),
                s.content.as_str(),
                s.finish.as_deref()
            ),
            ("a b", "c", Some("stop"))
        );
    }

    #[test]
    fn the_stop_prefers_text_the_content_holds_too() {
        let s = Split {
            reasoning: "First, 91 is odd. Then 91 = 7 x 13.".into(),
            content: "No: 91 = 7 x 13.".into(),
            finish: Some("stop".into()),
        };
        let stop = stop_from(&s).unwrap();
        assert!(s.content.contains(&stop), "{stop:?}");
        let alone = Split {
            content: String::new(),
            ..s
        };
        let stop = stop_from(&alone).unwrap();
        assert!(alone.reasoning.contains(&stop) && stop.chars().count() == 5);
    }
}
