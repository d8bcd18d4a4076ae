//! `POST /v1/completions`: a `prompt` (text or token ids) continued as it is, OpenAI's legacy API.
//!
//! Its own fields: `prompt`, `echo`, `logprobs` (an integer: alternatives per token), vLLM's
//! `prompt_logprobs`, and a default of 16 tokens; the rest it reads as chat does ([`shared`]). Its choices
//! carry `text`, and log probabilities in its shape ([`logprobs_json`]).
//!
//! A prompt is scored as OpenAI's legacy API scored it: `echo` with `logprobs` lists the prompt's tokens
//! before the generated ones, each with its log probability given the tokens before it (the first `null`:
//! nothing came before it), and `max_tokens: 0` with `echo` reads the prompt and generates nothing. vLLM's
//! `prompt_logprobs: k` gives the same numbers in vLLM's shape ([`vllm_prompt_logprobs`]). One prefill
//! computes them all ([`Sink::wants_prompt_probs`](crate::pipeline::sink::Sink::wants_prompt_probs)).

use serde_json::{Value, json};

use crate::pipeline::sink::StepProbs;
use crate::pipeline::tokenizer::Vocab;
use crate::serve::error::ApiError;
use crate::serve::fields::{Fields, Served, kind, typed};
use crate::serve::names::Names;
use crate::serve::openai::logprobs::{TokenLogprob, ln};
use crate::serve::openai::shared::{self, Head};
use crate::serve::openai::unsupported;
use crate::serve::request::{Endpoint, Fitted, GenRequest};

/// Reads and checks a completions body (its `model` already checked), in this order, the first error
/// being the one answered: unsupported fields, `n` and streaming, `logprobs` and `echo`, `tool_choice`, the
/// prompt and its fit in the context, `max_tokens`, then the settings and `replay` ([`Fitted::validate`]).
pub fn request(f: &Fields, served: &Served) -> Result<GenRequest, ApiError> {
    unsupported::check(f, Endpoint::Completions)?;
    let head = Head::read(f, &served.limits)?;
    let top_probs = logprobs(f)?;
    let echo = f.get::<bool>("echo")?.unwrap_or(false);
    let prompt_logprobs = f
        .get::<i64>("prompt_logprobs")?
        .map(|n| shared::alternatives("prompt_logprobs", n))
        .transpose()?;
    // Echo with logprobs lists the prompt's tokens too, each with its log probability (OpenAI's legacy
    // API; what evaluation harnesses score a prompt with).
    let prompt_top = match (echo.then_some(top_probs).flatten(), prompt_logprobs) {
        (None, None) => None,
        (a, b) => Some(a.unwrap_or(0).max(b.unwrap_or(0))),
    };
    // `max_tokens: 0` with echo: the prompt alone, read and scored.
    let score_only = f.get::<i64>("max_tokens")? == Some(0);
    if score_only && !echo {
        return Err(ApiError::invalid(
            "max_tokens",
            "0 asks for no tokens, which only echo can answer (the prompt scored, nothing generated); ask \
             for at least 1, or set echo",
        ));
    }
    // No tools here, but a tool_choice that would force a call is refused all the same.
    shared::tool_choice(f, &[])?;
    let (prompt, text) = prompt(f, &served.vocab, true, true)?;
    let fitted = Fitted::new(prompt, "prompt", served)?;
    let (max_field, max) = if score_only {
        ("max_tokens", Some(1))
    } else {
        shared::max_tokens(f, Endpoint::Completions)?
    };
    let max_tokens = match max {
        Some(m) => fitted.check_max(m, max_field)?,
        // OpenAI's legacy completions default to 16 tokens.
        None => 16.min(fitted.room()),
    };
    let (user, single_stop) =
        shared::settings(f, Endpoint::Completions, max_tokens, &served.limits)?;
    let names = Names::openai("prompt", max_field, single_stop);
    let checked = fitted.validate(&user, &names, f)?;
    if score_only && checked.params.min_tokens > 0 {
        return Err(ApiError::invalid(
            "min_tokens",
            "asks for tokens where max_tokens 0 asks for none; drop one of them",
        ));
    }
    if prompt_top.is_some() && checked.replay.is_some() {
        let asked = if prompt_logprobs.is_some() {
            "prompt_logprobs"
        } else {
            "echo with logprobs"
        };
        return Err(ApiError::invalid(
            "replay",
            format!(
                "writes scripted tokens with no model behind them, so {asked} has no probabilities to give \
                 for the prompt; drop replay (on a server with weights) or {asked}"
            ),
        ));
    }
    Ok(GenRequest {
        endpoint: Endpoint::Completions,
        prompt: checked.prompt,
        replay: checked.replay,
        params: checked.params,
        stream: head.stream,
        include_usage: head.include_usage,
        n: head.n,
        top_probs,
        echo: echo.then_some(text),
        tools: Vec::new(),
        parallel_tool_calls: true,
        return_token_ids: head.return_token_ids,
        prompt_top,
        prompt_logprobs,
        score_only,
    })
}

/// `logprobs`: an integer, the alternatives per token; None when not asked.
fn logprobs(f: &Fields) -> Result<Option<usize>, ApiError> {
    f.get::<i64>("logprobs")?
        .map(|n| shared::alternatives("logprobs", n))
        .transpose()
}

/// A prompt given as token ids, each checked against the vocabulary, with its text.
fn token_ids(v: &Value, vocab: &Vocab, name: &str) -> Result<(Vec<u32>, String), ApiError> {
    let ids: Vec<u32> = typed(v, name)?;
    for &id in &ids {
        vocab.check_id(id, name)?;
    }
    let text = vocab.decode(&ids)?;
    Ok((ids, text))
}

/// Tokenizes the `prompt` (also for `/tokenize`): a string, a one-string array, an array of token ids, or a
/// batch of one array of ids.
/// Also gives the prompt's text (the ids decoded), for `echo`. With `generate`, a text prompt gets the
/// model's BOS when its file asks for one (special tokens are parsed).
pub fn prompt(
    f: &Fields,
    vocab: &Vocab,
    parse_special: bool,
    generate: bool,
) -> Result<(Vec<u32>, String), ApiError> {
    // A text prompt to generate from gets the BOS when the model asks for one (Gemma), as llama.cpp's
    // /completion does; a prompt of token ids is taken as given.
    let text = |s: &str| {
        if generate {
            vocab.encode_prompt(s)
        } else {
            vocab.encode(s, parse_special)
        }
    };
    let prompt = f
        .raw("prompt")
        .ok_or_else(|| ApiError::invalid("prompt", "is required"))?;
    let ids = match prompt {
        Value::String(s) => (text(s)?, s.clone()),
        Value::Array(a) if a.len() == 1 && a[0].is_string() => {
            let s = a[0].as_str().unwrap_or_default();
            (text(s)?, s.to_string())
        }
        Value::Array(a) if a.iter().all(Value::is_number) => token_ids(prompt, vocab, "prompt")?,
        // A batch of one prompt of ids, as lm-evaluation-harness sends it: `[[17872, 42, ...]]`.
        Value::Array(a)
            if a.len() == 1
                && a[0]
                    .as_array()
                    .is_some_and(|i| i.iter().all(Value::is_number)) =>
        {
            token_ids(&a[0], vocab, "prompt[0]")?
        }
        other => {
            return Err(ApiError::invalid(
                "prompt",
                format!(
                    "expected a string or an array of token ids (or a batch of one of either), got {} \
                     (one prompt per request)",
                    kind(other)
                ),
            ));
        }
    };
    Ok(ids)
}

/// Log probabilities in completions' shape: parallel lists of the tokens, their log probabilities, their
/// alternatives and their text offsets (capped at the choice's final length, when known).
pub fn logprobs_json(entries: &[TokenLogprob], vocab: &Vocab, cap: Option<usize>) -> Value {
    let text = |id: u32, bytes: Option<&[u8]>| {
        let b = bytes.or_else(|| vocab.token_bytes(id)).unwrap_or_default();
        String::from_utf8_lossy(b).into_owned()
    };
    json!({
        "tokens": entries.iter().map(|e| text(e.id, Some(&e.bytes))).collect::<Vec<_>>(),
        "token_logprobs": entries.iter().map(|e| e.logprob).collect::<Vec<_>>(),
        "top_logprobs": entries.iter().map(|e| {
            let mut m = serde_json::Map::new();
            for &(id, lp) in &e.top {
                m.entry(text(id, None)).or_insert(lp.into());
            }
            Value::Object(m)
        }).collect::<Vec<_>>(),
        "text_offset": entries.iter().map(|e| cap.map_or(e.offset, |c| e.offset.min(c))).collect::<Vec<_>>(),
    })
}

/// The text a token stands for, as log probabilities list it.
fn token_text(vocab: &Vocab, id: u32) -> String {
    String::from_utf8_lossy(vocab.token_bytes(id).unwrap_or_default()).into_owned()
}

/// `top` alternatives of one position, by their text (the more likely kept where two spell alike).
fn alternatives_json(probs: &StepProbs, top: usize, vocab: &Vocab) -> Value {
    let mut m = serde_json::Map::new();
    for &(id, p) in probs.top.iter().take(top) {
        m.entry(token_text(vocab, id)).or_insert(ln(p).into());
    }
    Value::Object(m)
}

/// The prompt's part of echo's log probabilities, in [`logprobs_json`]'s shape: each prompt token, its
/// log probability given the tokens before it (`probs[i]` is token `i + 1`'s; the first is `null`), its
/// `top` alternatives (`null` for the first) and its offset in the echoed text of `chars` characters.
pub fn prompt_logprobs_json(
    prompt: &[u32],
    probs: &[StepProbs],
    top: usize,
    chars: usize,
    vocab: &Vocab,
) -> Value {
    let mut offsets = Vec::with_capacity(prompt.len());
    let mut at = 0;
    for &id in prompt {
        offsets.push(at.min(chars));
        at += token_text(vocab, id).chars().count();
    }
    let scored = prompt.iter().skip(1).zip(probs);
    json!({
        "tokens": prompt.iter().map(|&id| token_text(vocab, id)).collect::<Vec<_>>(),
        "token_logprobs": std::iter::once(Value::Null)
            .chain(scored.clone().map(|(_, p)| ln(p.chosen).into()))
            .collect::<Vec<_>>(),
        "top_logprobs": std::iter::once(Value::Null)
            .chain(scored.map(|(_, p)| alternatives_json(p, top, vocab)))
            .collect::<Vec<_>>(),
        "text_offset": offsets,
    })
}

/// vLLM's `prompt_logprobs`: `null` for the first prompt token, then per token a map from token id to its
/// `logprob`, `rank` and `decoded_token`, holding the prompt's token and the `top` most likely ones.
pub fn vllm_prompt_logprobs(
    prompt: &[u32],
    probs: &[StepProbs],
    top: usize,
    vocab: &Vocab,
) -> Value {
    let entry = |id: u32, p: f32, rank: usize| json!({"logprob": ln(p), "rank": rank, "decoded_token": token_text(vocab, id)});
    let rows = prompt.iter().skip(1).zip(probs).map(|(&id, p)| {
        let mut m = serde_json::Map::new();
        m.insert(id.to_string(), entry(id, p.chosen, p.rank));
        for (r, &(alt, q)) in p.top.iter().take(top).enumerate() {
            m.entry(alt.to_string())
                .or_insert_with(|| entry(alt, q, r + 1));
        }
        Value::Object(m)
    });
    Value::Array(std::iter::once(Value::Null).chain(rows).collect())
}

/// Two parts of completions' log probabilities, the prompt's first, as one.
pub fn join_logprobs(mut first: Value, second: &Value) -> Value {
    for key in ["tokens", "token_logprobs", "top_logprobs", "text_offset"] {
        if let (Some(a), Some(b)) = (
            first.get_mut(key).and_then(Value::as_array_mut),
            second.get(key).and_then(Value::as_array),
        ) {
            a.extend(b.iter().cloned());
        }
    }
    first
}
