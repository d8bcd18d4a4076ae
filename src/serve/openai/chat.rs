//! `POST /v1/chat/completions`: `messages` rendered with the model's own chat template, and a reply read
//! for tool calls when `tools` are offered.
//!
//! Its own fields: `messages` (read by `messages.rs`), `tools`, `parallel_tool_calls`, vLLM's
//! `add_generation_prompt` and `continue_final_message`, `logprobs` (a boolean) with `top_logprobs`,
//! `max_completion_tokens`, and no default length (the model runs until it stops or the context is full);
//! the rest it reads as completions does ([`shared`]). Its choices carry a `message` ([`message`]),
//! streamed as deltas ([`delta`]), and log probabilities in its shape ([`logprobs_json`]).

use serde_json::{Value, json};

use crate::Error;
use crate::pipeline::field::SettingsError;
use crate::pipeline::format::{ChatOptions, ToolReply};
use crate::pipeline::tokenizer::Vocab;
use crate::serve::error::ApiError;
use crate::serve::fields::{Fields, Served};
use crate::serve::messages;
use crate::serve::names::Names;
use crate::serve::openai::logprobs::TokenLogprob;
use crate::serve::openai::shared::{self, Head};
use crate::serve::openai::unsupported;
use crate::serve::request::{Endpoint, Fitted, GenRequest};

/// Reads and checks a chat body (its `model` already checked), in this order, the first error being the
/// one answered: unsupported fields, `n` and streaming, `logprobs`, `tools` and `tool_choice`, the
/// messages rendered and their fit in the context, `max_completion_tokens` / `max_tokens`, then the
/// settings and `replay` ([`Fitted::validate`]).
pub fn request(f: &Fields, served: &Served) -> Result<GenRequest, ApiError> {
    unsupported::check(f, Endpoint::Chat)?;
    let head = Head::read(f, &served.limits)?;
    let top_probs = logprobs(f)?;
    let tools = tools(f)?;
    let parallel_tool_calls = f.get::<bool>("parallel_tool_calls")?.unwrap_or(true);
    let read_calls = shared::tool_choice(f, &tools)?;
    let (prompt, _) = prompt(f, served, &tools, true, true)?;
    let fitted = Fitted::new(prompt, "messages", served)?;
    let (max_field, max) = shared::max_tokens(f, Endpoint::Chat)?;
    let max_tokens = match max {
        Some(m) => fitted.check_max(m, max_field)?,
        // Chat runs until the model stops or the context is full.
        None => fitted.room(),
    };
    let (user, single_stop) = shared::settings(f, Endpoint::Chat, max_tokens, &served.limits)?;
    let names = Names::openai("messages", max_field, single_stop);
    let checked = fitted.validate(&user, &names, f)?;
    Ok(GenRequest {
        endpoint: Endpoint::Chat,
        prompt: checked.prompt,
        replay: checked.replay,
        params: checked.params,
        stream: head.stream,
        include_usage: head.include_usage,
        n: head.n,
        top_probs,
        echo: None,
        tools: if read_calls { tools } else { Vec::new() },
        parallel_tool_calls,
        return_token_ids: head.return_token_ids,
        prompt_top: None,
        prompt_logprobs: None,
        score_only: false,
    })
}

/// `logprobs` (a boolean) with `top_logprobs`, as the number of alternatives to compute; None when not
/// asked.
fn logprobs(f: &Fields) -> Result<Option<usize>, ApiError> {
    let on = f.get::<bool>("logprobs")?.unwrap_or(false);
    let top = f.get::<i64>("top_logprobs")?;
    match (on, top) {
        (false, Some(_)) => Err(ApiError::invalid(
            "top_logprobs",
            "needs \"logprobs\": true",
        )),
        (false, None) => Ok(None),
        (true, top) => Ok(Some(shared::alternatives(
            "top_logprobs",
            top.unwrap_or(0),
        )?)),
    }
}

/// OpenAI's `tools`: `{"type": "function", "function": {"name", "description", "parameters"}}` objects,
/// handed to the template as given.
pub fn tools(f: &Fields) -> Result<Vec<Value>, ApiError> {
    let list: Vec<Value> = f.get("tools")?.unwrap_or_default();
    for (i, t) in list.iter().enumerate() {
        let at = format!("tools[{i}]");
        if t.get("type").and_then(Value::as_str) != Some("function") {
            return Err(ApiError::invalid(
                &format!("{at}.type"),
                "only \"function\" tools are supported",
            ));
        }
        match t
            .get("function")
            .and_then(|f| f.get("name"))
            .and_then(Value::as_str)
        {
            Some(name) if !name.is_empty() => {}
            _ => {
                return Err(ApiError::invalid(
                    &format!("{at}.function.name"),
                    "is required: the function's name",
                ));
            }
        }
    }
    Ok(list)
}

/// How a chat request renders: vLLM's `add_generation_prompt` (default true) and `continue_final_message`.
fn chat_options(f: &Fields) -> Result<(bool, bool), ApiError> {
    let cont = f.get::<bool>("continue_final_message")?.unwrap_or(false);
    let add = f.get::<bool>("add_generation_prompt")?.unwrap_or(!cont);
    if add && cont {
        return Err(ApiError::invalid(
            "continue_final_message",
            "cannot be true together with add_generation_prompt: the last message is either continued or \
             followed by a new assistant turn",
        ));
    }
    Ok((add, cont))
}

/// Renders a chat request's messages (and tools) with the model's template.
fn render(f: &Fields, served: &Served, tools: &[Value]) -> Result<String, ApiError> {
    let msgs = messages::messages(f)?;
    let (add_generation_prompt, continue_final_message) = chat_options(f)?;
    let template = served
        .template
        .as_ref()
        .map_err(|e| ApiError::invalid("messages", e))?;
    if !template.has_tools()
        && msgs
            .iter()
            .any(|m| !m.tool_calls.is_empty() || m.role == "tool")
    {
        return Err(ApiError::invalid(
            "tools",
            "the model's chat template has no tools branch, so it cannot show the model tool calls or their \
             results; use a model whose template takes tools (qwen2.5-coder-0.5b-instruct)",
        ));
    }
    template
        .render(
            &msgs,
            &ChatOptions {
                tools,
                add_generation_prompt,
                continue_final_message,
            },
        )
        .map_err(|e| match e {
            Error::Invalid { field, message }
                if field == "tools" || field == "continue_final_message" =>
            {
                ApiError::invalid(&field, message)
            }
            Error::Invalid { message, .. } | Error::Settings(SettingsError { message, .. }) => {
                ApiError::invalid(
                    "messages",
                    format!("{message} (or use /v1/completions with a prompt)"),
                )
            }
            other => other.into(),
        })
}

/// Renders and tokenizes the messages (and tools) with the model's template (also for `/tokenize`): the
/// ids and the text. With `generate`, the text gets the model's BOS when its file asks for one (special
/// tokens are parsed).
pub fn prompt(
    f: &Fields,
    served: &Served,
    tools: &[Value],
    parse_special: bool,
    generate: bool,
) -> Result<(Vec<u32>, String), ApiError> {
    let vocab = &*served.vocab;
    let text = render(f, served, tools)?;
    let ids = if generate {
        vocab.encode_prompt(&text)?
    } else {
        vocab.encode(&text, parse_special)?
    };
    Ok((ids, text))
}

/// Log probabilities in chat's shape: per token its text, log probability, bytes and alternatives.
pub fn logprobs_json(entries: &[TokenLogprob], vocab: &Vocab) -> Value {
    let entry = |bytes: &[u8], lp: f32| json!({"token": String::from_utf8_lossy(bytes), "logprob": lp, "bytes": bytes});
    json!({"content": entries.iter().map(|e| {
        let mut v = entry(&e.bytes, e.logprob);
        v["top_logprobs"] = e.top.iter().map(|&(id, lp)| {
            entry(vocab.token_bytes(id).unwrap_or_default(), lp)
        }).collect::<Vec<_>>().into();
        v
    }).collect::<Vec<_>>()})
}

/// What a streamed chunk's choice carries besides its index (completions' chunks take only the text).
pub enum Delta<'a> {
    /// Chat's first chunk of a choice: the role.
    Role,
    Text(&'a str),
    Calls(&'a ToolReply),
    Nothing,
}

/// A reply as chat's `message`: its content, and the calls read from it when it made some.
pub fn message(text: &str, calls: Option<&ToolReply>) -> Value {
    match calls {
        Some(c) => json!({
            "role": "assistant",
            "content": c.content,
            "tool_calls": c.calls.iter().map(|c| c.to_openai()).collect::<Vec<_>>(),
        }),
        None => json!({"role": "assistant", "content": text}),
    }
}

/// A streamed chunk's `delta`; each call carries its index.
pub fn delta(delta: &Delta<'_>) -> Value {
    match delta {
        // The role's chunk carries no content yet: null, as llama.cpp's server sends it.
        Delta::Role => json!({"role": "assistant", "content": null}),
        Delta::Text(t) => json!({"content": t}),
        Delta::Calls(c) => {
            json!({"tool_calls": c.calls.iter().enumerate().map(|(i, call)| {
                let mut v = call.to_openai();
                v["index"] = i.into();
                v
            }).collect::<Vec<_>>()})
        }
        Delta::Nothing => json!({}),
    }
}
