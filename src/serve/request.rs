//! Requests in, validated requests or errors out: parse, don't validate.
//!
//! A request body becomes a [`GenRequest`] (everything checked: types, ranges, the vocabulary, the context)
//! or an [`ApiError`] that names the field by its JSON path (`stop[1]`, `messages[2].content`). The
//! generation settings go through the one validation ([`UserSettings::validate`]), as the command line's
//! and the scenario files' do; this module only reads the JSON and applies the API's own conventions
//! (OpenAI's defaults, `top_k` -1, `logit_bias` -100..100, the server's limits).

use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::Error;
use crate::pipeline::field::SettingsError;
use crate::pipeline::format::{ChatOptions, ChatTemplate, Message, PromptFormat, ROLES, ToolCall};
use crate::pipeline::sampling::SamplingParams;
use crate::pipeline::settings::GenerateParams;
use crate::pipeline::settings::UserSettings;
use crate::pipeline::tokenizer::Vocab;

use crate::serve::config::Limits;
use crate::serve::error::ApiError;
use crate::serve::names::Names;

/// What the server knows about its model, for checking requests before they queue.
#[derive(Debug, Clone)]
pub struct Served {
    pub vocab: Arc<Vocab>,
    /// The model's context length in tokens (prompt plus generated).
    pub context: usize,
    /// The names a request's `model` may use; the first is the one `/v1/models` lists.
    pub model_ids: Vec<String>,
    /// False when started without weights: every generation request must carry `replay`.
    pub weights: bool,
    pub limits: Limits,
    /// The model's chat template, compiled once; `Err` says why there is none (no template, or one that
    /// does not compile), for the chat route's 400.
    pub template: Result<Arc<ChatTemplate>, String>,
}

impl Served {
    /// What a server knows of its model; compiles the chat template.
    pub fn new(
        vocab: Arc<Vocab>,
        context: usize,
        model_ids: Vec<String>,
        weights: bool,
        limits: Limits,
    ) -> Self {
        let template = match vocab.chat_template() {
            None => Err(
                "the model has no tokenizer.chat_template; use /v1/completions with a prompt"
                    .into(),
            ),
            Some(t) => ChatTemplate::new(t)
                .map(Arc::new)
                .map_err(|e| format!("{e} (use /v1/completions with a prompt)")),
        };
        Self {
            vocab,
            context,
            model_ids,
            weights,
            limits,
            template,
        }
    }
}

/// The most alternatives per token `logprobs` / `top_logprobs` may ask for (OpenAI's bound; vLLM's default
/// `max_logprobs`).
pub const MAX_TOP_LOGPROBS: usize = 20;

/// Which generation route a request came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Completions,
    Chat,
}

/// A generation request, fully checked: it can only fail for reasons of the model or the environment.
#[derive(Debug, Clone)]
pub struct GenRequest {
    pub endpoint: Endpoint,
    pub prompt: Vec<u32>,
    pub replay: Option<Vec<u32>>,
    pub params: GenerateParams,
    pub stream: bool,
    pub include_usage: bool,
    /// Choices to generate (`n`), one after another.
    pub n: usize,
    /// Alternatives per token to compute probabilities for (`logprobs` / `top_logprobs`); None: none.
    pub top_probs: Option<usize>,
    /// Completions' `echo`: the prompt's text, which each choice's text begins with.
    pub echo: Option<String>,
    /// Chat with `tools` (and `tool_choice` not "none"): the tools a reply is read for calls of.
    pub tools: Vec<Value>,
    /// `parallel_tool_calls`: false keeps only a reply's first call.
    pub parallel_tool_calls: bool,
}

impl GenRequest {
    /// The seed of choice `i`: the request's seed plus `i`, as vLLM seeds the copies of a request with `n`
    /// (so choice 0 is the text an `n` = 1 request gives).
    pub fn choice_seed(&self, i: usize) -> u64 {
        self.params.sampling.seed.wrapping_add(i as u64)
    }
}

/// A request body's fields, read one at a time with the field's name in every error.
#[derive(Debug)]
pub struct Fields(Map<String, Value>);

impl Fields {
    /// Parses a body that must be a JSON object.
    pub fn parse(body: &[u8]) -> Result<Self, ApiError> {
        let value: Value = serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_body(format!("malformed JSON in the request body: {e}")))?;
        match value {
            Value::Object(map) => Ok(Self(map)),
            other => Err(ApiError::bad_body(format!(
                "the request body must be a JSON object, not {}",
                kind(&other)
            ))),
        }
    }

    fn raw(&self, name: &str) -> Option<&Value> {
        self.0.get(name).filter(|v| !v.is_null())
    }

    /// A field of type `T`; absent and `null` are `None`; any other type is an error naming the field.
    pub fn get<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>, ApiError> {
        self.raw(name).map(|v| typed(v, name)).transpose()
    }

    /// Checks `model` against the served names: an unknown model is 404, as OpenAI answers.
    pub fn check_model(&self, served: &Served) -> Result<(), ApiError> {
        match self.get::<String>("model")? {
            Some(m) if !served.model_ids.contains(&m) => Err(ApiError::not_found(
                format!(
                    "model: `{m}` does not exist; this server serves `{}`",
                    served.model_ids[0]
                ),
                "model_not_found",
            )),
            _ => Ok(()),
        }
    }
}

fn typed<T: DeserializeOwned>(v: &Value, name: &str) -> Result<T, ApiError> {
    serde_json::from_value(v.clone()).map_err(|e| ApiError::invalid(name, e))
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Reads a chat request's `messages`: `{"role", "content"}` objects, content a string or an array of
/// `{"type": "text", "text"}` parts. The role must be one of [`ROLES`] (`developer`, OpenAI's newer name
/// for system, is read as `system`), so no role string reaches the template as text; user, system and tool
/// messages need content; an assistant needs content or `tool_calls`; a tool message its `tool_call_id`.
pub fn messages(f: &Fields) -> Result<Vec<Message>, ApiError> {
    let list: Vec<Value> = f
        .get("messages")?
        .ok_or_else(|| ApiError::invalid("messages", "is required"))?;
    if list.is_empty() {
        return Err(ApiError::invalid(
            "messages",
            "is empty; give at least one message",
        ));
    }
    let mut out = Vec::with_capacity(list.len());
    for (i, m) in list.iter().enumerate() {
        let at = format!("messages[{i}]");
        let obj = m.as_object().ok_or_else(|| {
            ApiError::invalid(&at, format!("expected an object, got {}", kind(m)))
        })?;
        let role_at = format!("{at}.role");
        let role: String = obj
            .get("role")
            .filter(|r| !r.is_null())
            .map(|r| typed(r, &role_at))
            .transpose()?
            .ok_or_else(|| ApiError::invalid(&role_at, "is required"))?;
        let role = match role.as_str() {
            "developer" => "system".to_string(),
            r if ROLES.contains(&r) => role,
            r => {
                return Err(ApiError::invalid(
                    &role_at,
                    format!(
                        "unknown role {}; expected one of {} (developer is read as system)",
                        serde_json::Value::from(r),
                        ROLES.join(", ")
                    ),
                ));
            }
        };
        let content_at = format!("{at}.content");
        let content = match obj.get("content") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Array(parts)) => {
                let mut text = String::new();
                for (j, p) in parts.iter().enumerate() {
                    let at = format!("{content_at}[{j}]");
                    match (p.get("type").and_then(Value::as_str), p.get("text")) {
                        (Some("text"), Some(Value::String(t))) => text.push_str(t),
                        _ => {
                            return Err(ApiError::invalid(
                                &at,
                                "only {\"type\": \"text\", \"text\": \"...\"} parts are supported",
                            ));
                        }
                    }
                }
                Some(text)
            }
            Some(other) => {
                return Err(ApiError::invalid(
                    &content_at,
                    format!(
                        "expected a string or an array of text parts, got {}",
                        kind(other)
                    ),
                ));
            }
        };
        let tool_calls: Vec<ToolCall> = match obj.get("tool_calls").filter(|v| !v.is_null()) {
            None => Vec::new(),
            Some(_) if role != "assistant" => {
                return Err(ApiError::invalid(
                    &format!("{at}.tool_calls"),
                    format!("only an assistant message has tool calls, not a {role} message"),
                ));
            }
            Some(Value::Array(calls)) => calls
                .iter()
                .enumerate()
                .map(|(j, c)| typed(c, &format!("{at}.tool_calls[{j}]")))
                .collect::<Result<_, _>>()?,
            Some(other) => {
                return Err(ApiError::invalid(
                    &format!("{at}.tool_calls"),
                    format!("expected an array of calls, got {}", kind(other)),
                ));
            }
        };
        let tool_call_id = match obj.get("tool_call_id").filter(|v| !v.is_null()) {
            Some(v) => Some(typed::<String>(v, &format!("{at}.tool_call_id"))?),
            None if role == "tool" => {
                return Err(ApiError::invalid(
                    &format!("{at}.tool_call_id"),
                    "is required in a tool message: the id of the call it answers",
                ));
            }
            None => None,
        };
        let content = match content {
            Some(c) => c,
            None if role == "assistant" && !tool_calls.is_empty() => String::new(),
            None => {
                return Err(ApiError::invalid(
                    &content_at,
                    format!(
                        "is required in a {role} message{}",
                        if role == "assistant" {
                            " (or tool_calls)"
                        } else {
                            ""
                        }
                    ),
                ));
            }
        };
        out.push(Message {
            role,
            content,
            tool_calls,
            tool_call_id,
        });
    }
    Ok(out)
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
pub fn render_chat(f: &Fields, served: &Served, tools: &[Value]) -> Result<String, ApiError> {
    let msgs = messages(f)?;
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

/// Tokenizes a completion request's `prompt`: a string, a one-string array, or an array of token ids.
/// Also gives the prompt's text (the ids decoded), for `echo`.
fn completion_prompt(
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
        Value::Array(a) if a.iter().all(Value::is_number) => {
            let ids: Vec<u32> = typed(prompt, "prompt")?;
            for &id in &ids {
                vocab.check_id(id, "prompt")?;
            }
            let text = vocab.decode(&ids)?;
            (ids, text)
        }
        other => {
            return Err(ApiError::invalid(
                "prompt",
                format!(
                    "expected a string or an array of token ids, got {} (one prompt per request: n is 1)",
                    kind(other)
                ),
            ));
        }
    };
    Ok(ids)
}

/// Renders and tokenizes a prompt for either route (also used by `/tokenize`): the ids and the text. With
/// `generate`, a text prompt gets the model's BOS when its file asks for one (special tokens are parsed).
pub fn prompt_ids(
    f: &Fields,
    endpoint: Endpoint,
    served: &Served,
    tools: &[Value],
    parse_special: bool,
    generate: bool,
) -> Result<(Vec<u32>, String), ApiError> {
    let vocab = &*served.vocab;
    match endpoint {
        Endpoint::Completions => completion_prompt(f, vocab, parse_special, generate),
        Endpoint::Chat => {
            let text = render_chat(f, served, tools)?;
            let ids = if generate {
                vocab.encode_prompt(&text)?
            } else {
                vocab.encode(&text, parse_special)?
            };
            Ok((ids, text))
        }
    }
}

/// Request fields of OpenAI's API (and output-changing ones of vLLM's and llama.cpp's) that stoplab does
/// not implement: each is refused by name when set to anything but its default, never silently ignored.
/// Fields that change nothing here (`user`, `metadata`, `store`, `service_tier`, `prompt_cache_key`,
/// `safety_identifier`, `add_special_tokens` / `add_special`, `skip_special_tokens`,
/// `spaces_between_special_tokens`, `stream_options.include_obfuscation`) are accepted and ignored.
fn unsupported(f: &Fields, endpoint: Endpoint) -> Result<(), ApiError> {
    let set = |name: &str| f.raw(name).is_some();
    let refuse = |name: &str, why: &str| Err(ApiError::unsupported(name, why));
    if let Some(v) = f.raw("suffix")
        && v.as_str() != Some("")
    {
        return refuse(
            "suffix",
            "insertion (fill-in-the-middle) is not implemented; leave suffix out",
        );
    }
    if let Some(b) = f.get::<i64>("best_of")?
        && b > 1
    {
        return refuse(
            "best_of",
            "is not implemented (it would rank candidates by log probability); use n to get several choices",
        );
    }
    if endpoint == Endpoint::Chat && f.get::<bool>("echo")?.unwrap_or(false) {
        return refuse(
            "echo",
            "is a completions field; vLLM's chat echo is not implemented",
        );
    }
    for name in ["functions", "function_call"] {
        if set(name) {
            return refuse(
                name,
                "is OpenAI's deprecated form of tools; send tools and tool_choice",
            );
        }
    }
    if let Some(rf) = f.raw("response_format")
        && rf.get("type").and_then(Value::as_str) != Some("text")
    {
        return refuse(
            "response_format",
            "only {\"type\": \"text\"} is implemented (no constrained decoding)",
        );
    }
    if let Some(m) = f.raw("modalities")
        && *m != serde_json::json!(["text"])
    {
        return refuse("modalities", "only [\"text\"] is implemented");
    }
    for (name, why) in [
        ("audio", "audio output is not implemented"),
        ("prediction", "predicted outputs are not implemented"),
        (
            "reasoning_effort",
            "the served model has no reasoning setting",
        ),
        ("verbosity", "the served model has no verbosity setting"),
        ("web_search_options", "web search is not implemented"),
        (
            "grammar",
            "grammars (llama.cpp) are not implemented: stoplab does no constrained decoding",
        ),
        (
            "json_schema",
            "JSON schemas (llama.cpp) are not implemented: stoplab does no constrained decoding",
        ),
        (
            "structured_outputs",
            "structured outputs (vLLM) are not implemented",
        ),
        ("guided_json", "guided decoding (vLLM) is not implemented"),
        ("guided_regex", "guided decoding (vLLM) is not implemented"),
        ("guided_choice", "guided decoding (vLLM) is not implemented"),
        (
            "guided_grammar",
            "guided decoding (vLLM) is not implemented",
        ),
        (
            "chat_template",
            "the model's own chat template is always used",
        ),
        (
            "chat_template_kwargs",
            "the model's own chat template is rendered without extra variables",
        ),
        (
            "prompt_logprobs",
            "the prompt's log probabilities are not computed",
        ),
        (
            "truncate_prompt_tokens",
            "prompts are never truncated; shorten the prompt",
        ),
        ("n_predict", "is llama.cpp's name; send max_tokens"),
        ("typical_p", "typical sampling is not implemented"),
        ("mirostat", "mirostat sampling is not implemented"),
    ] {
        // A value that asks for nothing (false, 0, an empty object; typical_p 1) is the default: accepted.
        let inert = |v: &Value| match v {
            Value::Bool(b) => !b,
            Value::Number(n) => {
                n.as_f64() == Some(0.0) || (name == "typical_p" && n.as_f64() == Some(1.0))
            }
            Value::String(s) => s.is_empty(),
            Value::Array(a) => a.is_empty(),
            Value::Object(o) => o.is_empty(),
            Value::Null => true,
        };
        if f.raw(name).is_some_and(|v| !inert(v)) {
            return refuse(name, why);
        }
    }
    if f.get::<bool>("use_beam_search")?.unwrap_or(false) {
        return refuse("use_beam_search", "beam search is not implemented");
    }
    Ok(())
}

/// `stop`: a string or an array of strings, within the server's limits (their contents are checked with
/// the other settings). Also says whether it was a single string, which is how its errors are named.
fn stops(f: &Fields, limits: &Limits) -> Result<(Vec<String>, bool), ApiError> {
    let (list, single): (Vec<String>, bool) = match f.raw("stop") {
        None => (Vec::new(), false),
        Some(Value::String(s)) => (vec![s.clone()], true),
        Some(v @ Value::Array(_)) => (typed(v, "stop")?, false),
        Some(other) => {
            return Err(ApiError::invalid(
                "stop",
                format!(
                    "expected a string or an array of strings, got {}",
                    kind(other)
                ),
            ));
        }
    };
    if list.len() > limits.max_stops {
        return Err(ApiError::invalid(
            "stop",
            format!(
                "{} stop strings given; at most {} are allowed (stoplab serve --max-stops)",
                list.len(),
                limits.max_stops
            ),
        ));
    }
    for (i, s) in list.iter().enumerate() {
        if s.len() > limits.max_stop_bytes {
            let at = if single {
                "stop".into()
            } else {
                format!("stop[{i}]")
            };
            return Err(ApiError::invalid(
                &at,
                format!(
                    "{} bytes; at most {} are allowed (stoplab serve --max-stop-bytes)",
                    s.len(),
                    limits.max_stop_bytes
                ),
            ));
        }
    }
    Ok((list, single))
}

/// `logit_bias`: `{"token id": bias}`, bias from -100 to 100; -100 bans the token (the ids are checked
/// against the vocabulary with the other settings).
fn logit_bias(f: &Fields) -> Result<Vec<(u32, f32)>, ApiError> {
    let Some(map) = f.get::<Map<String, Value>>("logit_bias")? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::with_capacity(map.len());
    for (key, value) in &map {
        let at = format!("logit_bias.{key}");
        let id: u32 = key
            .trim()
            .parse()
            .map_err(|_| ApiError::invalid(&at, format!("key {key:?} is not a token id")))?;
        let bias: f64 = typed(value, &at)?;
        if !(-100.0..=100.0).contains(&bias) {
            return Err(ApiError::invalid(
                &at,
                format!("bias {bias} for token {id} is outside -100..100"),
            ));
        }
        let bias = if bias <= -100.0 {
            f32::NEG_INFINITY
        } else {
            bias as f32
        };
        out.push((id, bias));
    }
    Ok(out)
}

/// `replay`: text (special tokens parsed) or token ids that the replay model writes instead of sampling.
fn replay(f: &Fields, vocab: &Vocab) -> Result<Option<Vec<u32>>, ApiError> {
    Ok(match f.raw("replay") {
        None => None,
        Some(Value::String(s)) => Some(vocab.encode(s, true)?),
        Some(v @ Value::Array(_)) => {
            let ids: Vec<u32> = typed(v, "replay")?;
            for &id in &ids {
                vocab.check_id(id, "replay")?;
            }
            Some(ids)
        }
        Some(other) => {
            return Err(ApiError::invalid(
                "replay",
                format!(
                    "expected a string or an array of token ids, got {}",
                    kind(other)
                ),
            ));
        }
    })
}

fn count(f: &Fields, name: &str) -> Result<Option<usize>, ApiError> {
    match f.get::<i64>(name)? {
        Some(n) if n < 0 => Err(ApiError::invalid(name, format!("{n} is negative"))),
        Some(n) => Ok(Some(n as usize)),
        None => Ok(None),
    }
}

/// Parses and checks a `/v1/completions` or `/v1/chat/completions` body.
pub fn generation(
    body: &[u8],
    endpoint: Endpoint,
    served: &Served,
) -> Result<GenRequest, ApiError> {
    let f = Fields::parse(body)?;
    f.check_model(served)?;
    let vocab = &*served.vocab;
    unsupported(&f, endpoint)?;
    let n = match f.get::<i64>("n")? {
        None => 1,
        Some(n) if n < 1 => {
            return Err(ApiError::invalid(
                "n",
                format!("{n} is below 1; ask for at least one choice"),
            ));
        }
        Some(n) if n as usize > served.limits.max_n => {
            return Err(ApiError::invalid(
                "n",
                format!(
                    "{n} choices asked; at most {} are allowed (stoplab serve --max-n)",
                    served.limits.max_n
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
    let top_probs = logprobs(&f, endpoint)?;
    let echo = endpoint == Endpoint::Completions && f.get::<bool>("echo")?.unwrap_or(false);
    if echo && top_probs.is_some() {
        return Err(ApiError::unsupported(
            "echo",
            "with logprobs would need the prompt's log probabilities, which are not computed; drop one of them",
        ));
    }
    let (tools, parallel_tool_calls) = match endpoint {
        Endpoint::Completions => (Vec::new(), true),
        Endpoint::Chat => (
            tools(&f)?,
            f.get::<bool>("parallel_tool_calls")?.unwrap_or(true),
        ),
    };
    let read_calls = match f.raw("tool_choice") {
        None => !tools.is_empty(),
        Some(Value::String(c)) if c == "auto" => !tools.is_empty(),
        Some(Value::String(c)) if c == "none" => false,
        Some(_) => {
            return Err(ApiError::unsupported(
                "tool_choice",
                "only \"auto\" and \"none\" are implemented: stoplab cannot force a call (no constrained decoding)",
            ));
        }
    };

    let (prompt, prompt_text) = prompt_ids(&f, endpoint, served, &tools, true, true)?;
    let prompt_field = match endpoint {
        Endpoint::Completions => "prompt",
        Endpoint::Chat => "messages",
    };
    let context = served.context;
    if prompt.is_empty() {
        return Err(ApiError::invalid(
            prompt_field,
            "is empty; give at least one token",
        ));
    }
    if prompt.len() >= context {
        return Err(ApiError::context_length(
            prompt_field,
            format!(
                "the prompt has {} tokens; the model's context is {context} tokens and at least one must be left to generate",
                prompt.len()
            ),
        ));
    }

    // Chat's newer name wins over the older one, as in OpenAI's API.
    let (max_field, max) = match (
        endpoint,
        count_at_least_one(&f, "max_completion_tokens")?,
        count_at_least_one(&f, "max_tokens")?,
    ) {
        (Endpoint::Chat, Some(m), _) => ("max_completion_tokens", Some(m)),
        (_, _, Some(m)) => ("max_tokens", Some(m)),
        _ => ("max_tokens", None),
    };
    let room = context - prompt.len();
    let max_tokens = match (max, endpoint) {
        (Some(m), _) if m > room => {
            return Err(ApiError::context_length(
                max_field,
                format!(
                    "the prompt has {} tokens and {max_field} asks for {m}: {} in all, beyond the model's context of \
                     {context} tokens; ask for at most {room} or shorten the prompt",
                    prompt.len(),
                    prompt.len() + m
                ),
            ));
        }
        (Some(m), _) => m,
        // OpenAI's legacy completions default to 16 tokens; chat runs until the model stops or the context is full.
        (None, Endpoint::Completions) => 16.min(room),
        (None, Endpoint::Chat) => room,
    };
    let min_tokens = count(&f, "min_tokens")?.unwrap_or(0);

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
    let (stops, single_stop) = stops(&f, &served.limits)?;
    let user = UserSettings {
        format: match endpoint {
            Endpoint::Completions => PromptFormat::Raw.name(),
            Endpoint::Chat => PromptFormat::Chat.name(),
        }
        .into(),
        stops,
        stop_token_ids: f.get("stop_token_ids")?.unwrap_or_default(),
        include_stop: f.get("include_stop_str_in_output")?.unwrap_or(false),
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
            logit_bias: logit_bias(&f)?,
            seed,
        },
        ..UserSettings::default()
    };
    let names = Names::openai(prompt_field, max_field, single_stop);
    let params = user
        .validate(Some(vocab.len()))
        .map_err(|e| ApiError::setting(&e, &names))?
        .params;

    let replay = replay(&f, vocab)?;
    if replay.is_none() && !served.weights {
        return Err(ApiError::invalid(
            "replay",
            "this server runs without weights (stoplab serve --replay-only): give `replay`, the text or \
             token ids the model should write",
        ));
    }
    Ok(GenRequest {
        endpoint,
        prompt,
        replay,
        params,
        stream,
        include_usage,
        n,
        top_probs,
        echo: echo.then_some(prompt_text),
        tools: if read_calls { tools } else { Vec::new() },
        parallel_tool_calls,
    })
}

/// Completions' `logprobs` (an integer: alternatives per token) or chat's `logprobs` (a boolean) with
/// `top_logprobs`, as the number of alternatives to compute; None when not asked.
fn logprobs(f: &Fields, endpoint: Endpoint) -> Result<Option<usize>, ApiError> {
    let bounded = |name: &str, n: i64| -> Result<usize, ApiError> {
        if !(0..=MAX_TOP_LOGPROBS as i64).contains(&n) {
            return Err(ApiError::invalid(
                name,
                format!("{n} is outside 0..{MAX_TOP_LOGPROBS}"),
            ));
        }
        Ok(n as usize)
    };
    match endpoint {
        Endpoint::Completions => f
            .get::<i64>("logprobs")?
            .map(|n| bounded("logprobs", n))
            .transpose(),
        Endpoint::Chat => {
            let on = f.get::<bool>("logprobs")?.unwrap_or(false);
            let top = f.get::<i64>("top_logprobs")?;
            match (on, top) {
                (false, Some(_)) => Err(ApiError::invalid(
                    "top_logprobs",
                    "needs \"logprobs\": true",
                )),
                (false, None) => Ok(None),
                (true, top) => Ok(Some(bounded("top_logprobs", top.unwrap_or(0))?)),
            }
        }
    }
}

fn count_at_least_one(f: &Fields, name: &str) -> Result<Option<usize>, ApiError> {
    match f.get::<i64>(name)? {
        Some(n) if n < 1 => Err(ApiError::invalid(
            name,
            format!("{n} is below 1; ask for at least one token"),
        )),
        Some(n) => Ok(Some(n as usize)),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use crate::serve::request::Fields;
    use axum::http::StatusCode;

    #[test]
    fn wrong_types_name_the_field() {
        let f = Fields::parse(br#"{"temperature": "hot", "stream": 1}"#).unwrap();
        let e = f.get::<f32>("temperature").unwrap_err();
        assert_eq!(e.param.as_deref(), Some("temperature"));
        assert!(e.message.starts_with("temperature: "), "{}", e.message);
        assert_eq!(
            f.get::<bool>("stream").unwrap_err().status,
            StatusCode::BAD_REQUEST
        );
    }

    #[test]
    fn a_body_that_is_not_an_object_is_refused() {
        assert!(
            Fields::parse(b"[1]")
                .unwrap_err()
                .message
                .contains("JSON object")
        );
        assert!(
            Fields::parse(b"{")
                .unwrap_err()
                .message
                .contains("malformed JSON")
        );
    }

    #[test]
    fn null_counts_as_absent() {
        let f = Fields::parse(br#"{"seed": null}"#).unwrap();
        assert_eq!(f.get::<u64>("seed").unwrap(), None);
    }
}
