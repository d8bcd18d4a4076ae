//! What the page shows before it runs anything: the served model (`GET /v1/stoplab/info`) and the shipped
//! scenarios with their settings (`GET /v1/stoplab/scenarios`).

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Value, json};

use crate::lab::trace::escape;
use crate::pipeline::format::PromptFormat;
use crate::pipeline::tokenizer::Vocab;
use crate::serve::error::ApiError;
use crate::serve::http::json_response;
use crate::serve::state::AppState;

/// A token's bytes as the page shows them.
pub fn token_text(vocab: &Vocab, id: u32) -> Value {
    let bytes = vocab.token_bytes(id).unwrap_or_default();
    json!({
        "id": id,
        "token": String::from_utf8_lossy(bytes),
        "token_esc": escape(bytes),
        "special": vocab.is_special(id),
    })
}

pub async fn info(State(state): State<Arc<AppState>>) -> Response {
    let s = &state.served;
    let end_tokens: Vec<Value> = s
        .vocab
        .end_tokens()
        .iter()
        .map(|&id| token_text(&s.vocab, id))
        .collect();
    json_response(
        StatusCode::OK,
        &json!({
            "model": s.model_ids[0],
            "context": s.context,
            "weights": s.weights,
            "end_tokens": end_tokens,
            "formats": PromptFormat::NAMES,
            "chat_template": s.vocab.chat_template().is_some(),
            "version": env!("CARGO_PKG_VERSION"),
        }),
    )
}

/// An `f32` setting as the file wrote it (0.3, not the 0.30000001192092896 its widening to f64 prints).
fn f32_json(x: f32) -> Value {
    x.to_string()
        .parse::<f64>()
        .map_or(Value::Null, Value::from)
}

/// A logit bias as JSON: `-inf` (a ban) as the string "-inf", which JSON numbers cannot hold.
fn bias_json(bias: f32) -> Value {
    if bias == f32::NEG_INFINITY {
        "-inf".into()
    } else {
        f32_json(bias)
    }
}

pub async fn scenarios() -> Result<Response, ApiError> {
    let all = crate::lab::experiment::shipped()
        .map_err(|e| ApiError::internal(format!("a shipped scenario does not parse: {e}")))?;
    let list: Vec<Value> = all
        .iter()
        .map(|sc| {
            let s = &sc.settings;
            let p = &s.sampling;
            json!({
                "file": sc.file,
                "name": sc.name,
                "title": sc.title,
                "about": sc.about,
                "format": s.format,
                "user_prefix": s.user_prefix,
                "ai_prefix": s.ai_prefix,
                "separator": s.separator,
                "natural_stop": s.natural_stop,
                "messages": sc.messages,
                "stops": s.stops,
                "stop_token_ids": s.stop_token_ids,
                "include_stop": s.include_stop,
                "ignore_eos": s.ignore_eos,
                "min_tokens": s.min_tokens,
                "max_tokens": s.max_tokens,
                "repetition": s.repetition,
                "temperature": f32_json(p.temperature),
                "top_k": p.top_k,
                "top_p": f32_json(p.top_p),
                "min_p": f32_json(p.min_p),
                "repetition_penalty": f32_json(p.repetition_penalty),
                "frequency_penalty": f32_json(p.frequency_penalty),
                "presence_penalty": f32_json(p.presence_penalty),
                "logit_bias": p.logit_bias.iter().map(|&(id, b)| json!([id, bias_json(b)])).collect::<Vec<_>>(),
                "seed": sc.seed,
                "done": sc.done,
            })
        })
        .collect();
    Ok(json_response(StatusCode::OK, &json!({ "scenarios": list })))
}
