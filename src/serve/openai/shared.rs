//! What OpenAI's two generation routes read alike: how many choices and how they go out, whether a reply
//! is read for tool calls, `max_tokens` under either of its names, and the sampling and stop settings
//! (with OpenAI's defaults and conventions: temperature 1, `top_k` -1, penalties within -2..2, the seed 0
//! unless given, so a repeated request gives the same text).

use serde_json::Value;

use crate::pipeline::format::PromptFormat;
use crate::pipeline::sampling::SamplingParams;
use crate::pipeline::settings::UserSettings;
use crate::serve::config::Limits;
use crate::serve::error::ApiError;
use crate::serve::fields::{self, BiasForm, Fields, count, count_at_least_one, kind, typed};
use crate::serve::request::Endpoint;

/// The most alternatives per token `logprobs` / `top_logprobs` may ask for (OpenAI's bound; vLLM's default
/// `max_logprobs`).
pub const MAX_TOP_LOGPROBS: usize = 20;

/// How many choices, and how they go out.
#[derive(Debug, Clone, Copy)]
pub struct Head {
    /// `n`: 1 up to the server's `max_n`.
    pub n: usize,
    pub stream: bool,
    /// `stream_options.include_usage`, which needs `stream`.
    pub include_usage: bool,
    /// vLLM's `return_token_ids`: each choice (or chunk) lists the ids its text carries, by the ledger.
    pub return_token_ids: bool,
}

impl Head {
    pub fn read(f: &Fields, limits: &Limits) -> Result<Self, ApiError> {
        let n = match f.get::<i64>("n")? {
            None => 1,
            Some(n) if n < 1 => {
                return Err(ApiError::invalid(
                    "n",
                    format!("{n} is below 1; ask for at least one choice"),
                ));
            }
            Some(n) if n as usize > limits.max_n => {
                return Err(ApiError::invalid(
                    "n",
                    format!(
                        "{n} choices asked; at most {} are allowed (stoplab serve --max-n)",
                        limits.max_n
                    ),
                ));
            }
            Some(n) => n as usize,
        };
        let stream = f.get::<bool>("stream")?.unwrap_or(false);
        let include_usage = match f.raw("stream_options") {
            None => false,
            Some(_) if !stream => {
                return Err(ApiError::invalid(
                    "stream_options",
                    "is only allowed with \"stream\": true",
                ));
            }
            Some(Value::Object(o)) => o
                .get("include_usage")
                .filter(|v| !v.is_null())
                .map(|v| typed::<bool>(v, "stream_options.include_usage"))
                .transpose()?
                .unwrap_or(false),
            Some(other) => {
                return Err(ApiError::invalid(
                    "stream_options",
                    format!("expected an object, got {}", kind(other)),
                ));
            }
        };
        let return_token_ids = f.get::<bool>("return_token_ids")?.unwrap_or(false);
        Ok(Self {
            n,
            return_token_ids,
            stream,
            include_usage,
        })
    }
}

/// `logprobs` / `top_logprobs` as a number of alternatives: 0 up to [`MAX_TOP_LOGPROBS`].
pub fn alternatives(name: &str, n: i64) -> Result<usize, ApiError> {
    if !(0..=MAX_TOP_LOGPROBS as i64).contains(&n) {
        return Err(ApiError::invalid(
            name,
            format!("{n} is outside 0..{MAX_TOP_LOGPROBS}"),
        ));
    }
    Ok(n as usize)
}

/// `tool_choice`: whether a reply is read for calls of `tools` (`auto`, the default, when there are any;
/// never with `none`). A choice that forces a call is refused on either route: there is no constrained
/// decoding to force one with.
pub fn tool_choice(f: &Fields, tools: &[Value]) -> Result<bool, ApiError> {
    match f.raw("tool_choice") {
        None => Ok(!tools.is_empty()),
        Some(Value::String(c)) if c == "auto" => Ok(!tools.is_empty()),
        Some(Value::String(c)) if c == "none" => Ok(false),
        Some(_) => Err(ApiError::unsupported(
            "tool_choice",
            "only \"auto\" and \"none\" are implemented: stoplab cannot force a call (no constrained decoding)",
        )),
    }
}

/// The most tokens to generate as asked, and the field that asked: chat's newer `max_completion_tokens`
/// wins over `max_tokens`, as in OpenAI's API (both are read, and must be at least 1, on either route).
pub fn max_tokens(
    f: &Fields,
    endpoint: Endpoint,
) -> Result<(&'static str, Option<usize>), ApiError> {
    Ok(
        match (
            endpoint,
            count_at_least_one(f, "max_completion_tokens")?,
            count_at_least_one(f, "max_tokens")?,
        ) {
            (Endpoint::Chat, Some(m), _) => ("max_completion_tokens", Some(m)),
            (_, _, Some(m)) => ("max_tokens", Some(m)),
            _ => ("max_tokens", None),
        },
    )
}

/// The settings as the request gave them, `max_tokens` already decided, for the one validation; also
/// whether `stop` was a single string (its errors are then named `stop`).
pub fn settings(
    f: &Fields,
    endpoint: Endpoint,
    max_tokens: usize,
    limits: &Limits,
) -> Result<(UserSettings, bool), ApiError> {
    let min_tokens = count(f, "min_tokens")?.unwrap_or(0);
    let top_k = match f.get::<i64>("top_k")? {
        None | Some(-1) => 0,
        Some(k) if k < 0 => {
            return Err(ApiError::invalid(
                "top_k",
                format!("{k} is not -1 (off) or >= 0"),
            ));
        }
        Some(k) => k as usize,
    };
    let penalty = |name: &str| -> Result<f32, ApiError> {
        let v = f.get::<f32>(name)?.unwrap_or(0.0);
        if !(-2.0..=2.0).contains(&v) {
            return Err(ApiError::invalid(name, format!("{v} is outside -2..2")));
        }
        Ok(v)
    };
    let seed = match f.raw("seed") {
        None => 0,
        Some(v) => match (v.as_u64(), v.as_i64()) {
            (Some(s), _) => s,
            (None, Some(s)) => s as u64,
            _ => {
                return Err(ApiError::invalid(
                    "seed",
                    format!("expected an integer, got {v}"),
                ));
            }
        },
    };
    let (stops, single_stop) = fields::stops(f, limits)?;
    let user = UserSettings {
        format: match endpoint {
            Endpoint::Completions => PromptFormat::Raw.name(),
            Endpoint::Chat => PromptFormat::Chat.name(),
        }
        .into(),
        stops,
        stop_token_ids: f.get("stop_token_ids")?.unwrap_or_default(),
        include_stop: f.get("include_stop_str_in_output")?.unwrap_or(false),
        // vLLM's: special tokens other than the end token are always in the text here; `false` also keeps
        // the end token's name, where `include_stop_str_in_output` keeps what ended the generation.
        end_token_text: !f.get("skip_special_tokens")?.unwrap_or(true),
        ignore_eos: f.get("ignore_eos")?.unwrap_or(false),
        min_tokens,
        max_tokens,
        repetition: f.get("repetition_stop")?,
        // stoplab's: which end tokens count ({"replace": [ids], "add": [ids], "remove": [ids]}).
        end_tokens: f.get("end_tokens")?.unwrap_or_default(),
        sampling: SamplingParams {
            // OpenAI's default temperature; the default seed makes a repeated request give the same text.
            temperature: f.get("temperature")?.unwrap_or(1.0),
            top_k,
            top_p: f.get("top_p")?.unwrap_or(1.0),
            min_p: f.get("min_p")?.unwrap_or(0.0),
            repetition_penalty: f.get("repetition_penalty")?.unwrap_or(1.0),
            frequency_penalty: penalty("frequency_penalty")?,
            presence_penalty: penalty("presence_penalty")?,
            logit_bias: fields::logit_bias(f, BiasForm::Map)?,
            seed,
        },
        ..UserSettings::default()
    };
    Ok((user, single_stop))
}
