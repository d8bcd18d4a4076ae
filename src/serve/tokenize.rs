//! `POST /tokenize` and `POST /detokenize`: text or a conversation to token ids and back, in vLLM's and
//! llama.cpp's shapes; `GET /tokenizer_info`: the tokenizer's special tokens and template in vLLM's shape,
//! so a client with no copy of the tokenizer (lm-evaluation-harness's `tokenizer_backend=remote`) can
//! borrow the server's.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use serde_json::{Value, json};

use crate::serve::error::ApiError;
use crate::serve::fields::{Fields, Served};
use crate::serve::http::{blocking, json_response, read_body};
use crate::serve::openai::{chat, completions};
use crate::serve::request::Endpoint;
use crate::serve::state::AppState;

/// The two routes, to merge into the server's router.
pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/tokenize", post(tokenize))
        .route("/detokenize", post(detokenize))
        .route("/tokenizer_info", get(tokenizer_info))
}

/// vLLM's `GET /tokenizer_info`: the special tokens as text (`bos_token`, `eos_token`, `pad_token`), whether
/// a text prompt gets the BOS, the chat template, the context (`model_max_length`); beside them the
/// vocabulary's size and its end-of-generation ids.
async fn tokenizer_info(State(state): State<Arc<AppState>>) -> Response {
    let s = &state.served;
    let v = &s.vocab;
    let text = |id: Option<u32>| {
        id.and_then(|id| v.token_bytes(id))
            .map(|b| String::from_utf8_lossy(b).into_owned())
    };
    json_response(
        StatusCode::OK,
        &json!({
            "tokenizer_class": v.kind(),
            "bos_token": text(v.bos()),
            "eos_token": text(v.eos()),
            "pad_token": Value::Null,
            "add_bos_token": v.add_bos(),
            "chat_template": v.chat_template(),
            "model_max_length": s.context,
            "vocab_size": v.len(),
            "end_token_ids": v.end_tokens(),
        }),
    )
}

/// Text or a conversation to token ids, in two servers' shapes:
/// * llama.cpp's: `{"content", "parse_special" (default true), "with_pieces"}` → `{"tokens": [ids]}`, or with
///   `with_pieces` `{"tokens": [{"id", "piece"}]}`, the piece a string, or its bytes where it is not UTF-8;
/// * vLLM's: `{"prompt"}` or `{"messages", "tools", "add_generation_prompt" (default true),
///   "continue_final_message"}`, with `return_token_strs` → `{"count", "max_model_len", "tokens",
///   "token_strs"}` (the vocabulary's pieces, or null).
///
/// `add_special` / `add_special_tokens` change nothing: the ids are the text's, with no BOS (a generation
/// from a text prompt adds the BOS where the model asks for one).
async fn tokenize(State(state): State<Arc<AppState>>, req: Request) -> Result<Response, ApiError> {
    let b = read_body(&state.served.limits, req).await?;
    let st = state.clone();
    let body = blocking(move || tokenize_body(&b, &st.served)).await?;
    Ok(json_response(StatusCode::OK, &body))
}

fn tokenize_body(b: &[u8], served: &Served) -> Result<Value, ApiError> {
    let f = Fields::parse(b)?;
    f.check_model(served)?;
    let vocab = &served.vocab;
    let parse_special = f.get::<bool>("parse_special")?.unwrap_or(true);
    if let Some(content) = f.get::<String>("content")? {
        let ids = vocab.encode(&content, parse_special)?;
        if !f.get::<bool>("with_pieces")?.unwrap_or(false) {
            return Ok(json!({ "tokens": ids }));
        }
        let tokens: Vec<Value> = ids
            .iter()
            .map(|&id| {
                let bytes = vocab.token_bytes(id).unwrap_or_default();
                let piece = match std::str::from_utf8(bytes) {
                    Ok(s) => json!(s),
                    Err(_) => json!(bytes),
                };
                json!({"id": id, "piece": piece})
            })
            .collect();
        return Ok(json!({ "tokens": tokens }));
    }
    let endpoint = if f.get::<Value>("messages")?.is_some() {
        Endpoint::Chat
    } else {
        Endpoint::Completions
    };
    let (ids, _) = match endpoint {
        Endpoint::Chat => chat::prompt(&f, served, &chat::tools(&f)?, parse_special, false)?,
        Endpoint::Completions => completions::prompt(&f, vocab, parse_special, false)?,
    };
    let token_strs = f
        .get::<bool>("return_token_strs")?
        .unwrap_or(false)
        .then(|| {
            ids.iter()
                .map(|&id| vocab.piece(id).unwrap_or_default().to_string())
                .collect::<Vec<_>>()
        });
    Ok(json!({
        "count": ids.len(),
        "max_model_len": served.context,
        "tokens": ids,
        "token_strs": token_strs,
    }))
}

/// `{"tokens": [ids]}` to text.
async fn detokenize(
    State(state): State<Arc<AppState>>,
    req: Request,
) -> Result<Response, ApiError> {
    let b = read_body(&state.served.limits, req).await?;
    let f = Fields::parse(&b)?;
    f.check_model(&state.served)?;
    let ids: Vec<u32> = f
        .get("tokens")?
        .ok_or_else(|| ApiError::invalid("tokens", "is required"))?;
    let vocab = &state.served.vocab;
    for &id in &ids {
        vocab.check_id(id, "tokens")?;
    }
    let text = vocab.decode(&ids)?;
    // Both servers are asked with `{"tokens"}`: the text under vLLM's key and llama.cpp's.
    Ok(json_response(
        StatusCode::OK,
        &json!({"prompt": text, "content": text}),
    ))
}
