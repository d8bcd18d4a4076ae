//! `POST /v1/completions`: a `prompt` (text or token ids) continued as it is, OpenAI's legacy API.
//!
//! Its own fields: `prompt`, `echo`, `logprobs` (an integer: alternatives per token), and a default of 16
//! tokens; the rest it reads as chat does ([`shared`]). Its choices carry `text`, and log probabilities
//! in its shape ([`logprobs_json`]).

use serde_json::{Value, json};

use crate::pipeline::tokenizer::Vocab;
use crate::serve::error::ApiError;
use crate::serve::fields::{Fields, Served, kind, typed};
use crate::serve::names::Names;
use crate::serve::openai::logprobs::TokenLogprob;
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
    if echo && top_probs.is_some() {
        return Err(ApiError::unsupported(
            "echo",
            "with logprobs would need the prompt's log probabilities, which are not computed; drop one of them",
        ));
    }
    // No tools here, but a tool_choice that would force a call is refused all the same.
    shared::tool_choice(f, &[])?;
    let (prompt, text) = prompt(f, &served.vocab, true, true)?;
    let fitted = Fitted::new(prompt, "prompt", served)?;
    let (max_field, max) = shared::max_tokens(f, Endpoint::Completions)?;
    let max_tokens = match max {
        Some(m) => fitted.check_max(m, max_field)?,
        // OpenAI's legacy completions default to 16 tokens.
        None => 16.min(fitted.room()),
    };
    let (user, single_stop) =
        shared::settings(f, Endpoint::Completions, max_tokens, &served.limits)?;
    let names = Names::openai("prompt", max_field, single_stop);
    let checked = fitted.validate(&user, &names, f)?;
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
