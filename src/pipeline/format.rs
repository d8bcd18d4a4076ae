//! Prompt formats: the seed's techniques for telling a completion model whose turn it is.
//!
//! | format | prompt | natural stop |
//! |---|---|---|
//! | `raw` | the text as given | none |
//! | `transcript` | `user: …\nAI: …\nuser: …\nAI:` (prefixes configurable) | `"\nuser:"` |
//! | `separator` | `question\n- - -\n` (separator configurable) | `"\n- - -"` |
//! | `chat` | the model's own `tokenizer.chat_template` (ChatML for SmolLM2) | none: the end token |
//!
//! A format only *proposes* its natural stop; the caller decides whether to use it, so the run-on it
//! prevents can be seen too.

use serde::{Deserialize, Serialize};

use crate::Error;
use crate::pipeline::field::{Field, SettingsError};

/// One message of a conversation, as OpenAI's API writes it: a role (one of [`ROLES`]), its text, and for
/// function calling an assistant's `tool_calls` or a `tool` message's `tool_call_id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub role: String,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub content: String,
    /// An assistant message's function calls.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// A `tool` message: the id of the call it answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
}

fn null_as_empty<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(Option::<String>::deserialize(d)?.unwrap_or_default())
}

/// The roles a message may have. A role is checked against this list before it reaches a template, so a
/// role string can never inject template text.
pub const ROLES: [&str; 4] = ["system", "user", "assistant", "tool"];

impl Message {
    pub fn new(role: &str, content: &str) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
            tool_calls: Vec::new(),
            tool_call_id: None,
        }
    }
}

/// A function call, in an assistant message or parsed from a reply. On the wire it is OpenAI's
/// `{"id", "type": "function", "function": {"name", "arguments": "<JSON text>"}}`; `arguments` is kept
/// parsed, as the chat templates (and Hugging Face's and vLLM's renderers) hand it to `tojson`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "WireToolCall", into = "WireToolCall")]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    pub arguments: serde_json::Value,
}

impl ToolCall {
    /// OpenAI's shape, `arguments` as JSON text.
    pub fn to_openai(&self) -> serde_json::Value {
        serde_json::json!({
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": arguments_text(&self.arguments)},
        })
    }
}

/// `arguments` as OpenAI sends it: JSON text (a string stays as it is).
fn arguments_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[derive(Serialize, Deserialize)]
struct WireToolCall {
    #[serde(default)]
    id: String,
    #[serde(rename = "type", default = "function_type")]
    kind: String,
    function: WireFunction,
}

fn function_type() -> String {
    "function".into()
}

#[derive(Serialize, Deserialize)]
struct WireFunction {
    name: String,
    arguments: serde_json::Value,
}

impl TryFrom<WireToolCall> for ToolCall {
    type Error = String;

    fn try_from(w: WireToolCall) -> Result<Self, String> {
        if w.kind != "function" {
            return Err(format!(
                "tool call type {:?}: only \"function\" is supported",
                w.kind
            ));
        }
        let arguments = match w.function.arguments {
            serde_json::Value::String(s) => serde_json::from_str(&s)
                .map_err(|e| format!("function.arguments is not JSON text ({e}): {s:?}"))?,
            other => other,
        };
        Ok(Self {
            id: w.id,
            name: w.function.name,
            arguments,
        })
    }
}

impl From<ToolCall> for WireToolCall {
    fn from(c: ToolCall) -> Self {
        Self {
            id: c.id,
            kind: function_type(),
            function: WireFunction {
                name: c.name,
                arguments: arguments_text(&c.arguments).into(),
            },
        }
    }
}

/// How messages become prompt text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum PromptFormat {
    /// The concatenated message contents, as given.
    Raw,
    /// Role-prefixed turns, leaving off where the AI's turn begins.
    Transcript { user: String, ai: String },
    /// Each turn followed by a separator line; the answer comes after the last one.
    Separator { separator: String },
    /// The model's own chat template.
    Chat,
}

impl PromptFormat {
    /// The names of the formats, in the order `--help` and error messages list them. The one place a
    /// format's name is written: [`from_name`](Self::from_name) and [`name`](Self::name) read it.
    pub const NAMES: [&'static str; 4] = ["raw", "transcript", "separator", "chat"];

    /// A format by name with its default settings (prefixes `user:` / `AI:`, separator `- - -`).
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "raw" => Self::Raw,
            "transcript" => Self::Transcript {
                user: "user:".into(),
                ai: "AI:".into(),
            },
            "separator" => Self::Separator {
                separator: "- - -".into(),
            },
            "chat" => Self::Chat,
            _ => return None,
        })
    }

    /// The older name of [`from_name`](Self::from_name).
    pub fn named(name: &str) -> Option<Self> {
        Self::from_name(name)
    }

    /// The format's name, as [`from_name`](Self::from_name) reads it.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Raw => Self::NAMES[0],
            Self::Transcript { .. } => Self::NAMES[1],
            Self::Separator { .. } => Self::NAMES[2],
            Self::Chat => Self::NAMES[3],
        }
    }

    /// The stop this format suggests, if any.
    pub fn natural_stop(&self) -> Option<String> {
        match self {
            Self::Raw | Self::Chat => None,
            Self::Transcript { user, .. } => Some(format!("\n{user}")),
            Self::Separator { separator } => Some(format!("\n{separator}")),
        }
    }

    /// Renders messages to prompt text. `template` is the model's chat template (needed by `chat`).
    pub fn render(&self, messages: &[Message], template: Option<&str>) -> Result<String, Error> {
        match self {
            Self::Raw => Ok(messages.iter().map(|m| m.content.as_str()).collect()),
            Self::Transcript { user, ai } => {
                let mut out = String::new();
                for m in messages {
                    match m.role.as_str() {
                        "system" => out.push_str(&format!("{}\n", m.content)),
                        "assistant" => out.push_str(&format!("{ai} {}\n", m.content)),
                        _ => out.push_str(&format!("{user} {}\n", m.content)),
                    }
                }
                out.push_str(ai);
                Ok(out)
            }
            Self::Separator { separator } => Ok(messages
                .iter()
                .map(|m| format!("{}\n{separator}\n", m.content))
                .collect()),
            Self::Chat => {
                let template = template.ok_or_else(|| {
                    SettingsError::new(
                        Field::Format,
                        "the model has no tokenizer.chat_template; use the transcript or raw format",
                    )
                })?;
                render_chat_template(template, messages)
            }
        }
    }
}

/// Renders a Hugging Face chat template (Jinja) with `add_generation_prompt`.
pub fn render_chat_template(template: &str, messages: &[Message]) -> Result<String, Error> {
    render_chat(template, messages, true)
}

/// Renders a Hugging Face chat template (Jinja); without `add_generation_prompt` the text ends after the last
/// message (what training data needs).
pub fn render_chat(
    template: &str,
    messages: &[Message],
    add_generation_prompt: bool,
) -> Result<String, Error> {
    ChatTemplate::new(template)?.render(
        messages,
        &ChatOptions {
            add_generation_prompt,
            ..ChatOptions::default()
        },
    )
}

/// How to render a conversation with [`ChatTemplate::render`].
#[derive(Debug, Clone, Copy)]
pub struct ChatOptions<'a> {
    /// OpenAI's `tools` (`{"type": "function", "function": {...}}` objects), handed to the template as they
    /// were given. Only a template with a tools branch takes them.
    pub tools: &'a [serde_json::Value],
    /// End with the header of the assistant's turn.
    pub add_generation_prompt: bool,
    /// vLLM's and Hugging Face's `continue_final_message`: the text ends where the last message's content
    /// ends (no end-of-turn after it), so the model continues that message.
    pub continue_final_message: bool,
}

impl Default for ChatOptions<'_> {
    fn default() -> Self {
        Self {
            tools: &[],
            add_generation_prompt: true,
            continue_final_message: false,
        }
    }
}

/// A model's chat template, compiled once: rendered as Hugging Face renders it (Jinja with `trim_blocks`
/// and `lstrip_blocks`, `tojson` as Python's `json.dumps` with keys in the order given and no ASCII
/// escaping), which gave prompts byte-identical to llama.cpp's for Qwen2.5's tools branch.
pub struct ChatTemplate {
    env: minijinja::Environment<'static>,
    tools: bool,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("tools", &self.tools)
            .finish_non_exhaustive()
    }
}

fn template_error(e: minijinja::Error) -> Error {
    Error::Invalid {
        field: "chat_template".into(),
        message: format!("the model's chat template cannot be rendered: {e}"),
    }
}

impl ChatTemplate {
    /// Compiles a template (its syntax errors name `chat_template`).
    pub fn new(source: &str) -> Result<Self, Error> {
        let mut env = minijinja::Environment::new();
        env.set_syntax(
            minijinja::syntax::SyntaxConfig::builder()
                .trim_blocks(true)
                .lstrip_blocks(true)
                .build()
                .map_err(template_error)?,
        );
        env.add_function(
            "raise_exception",
            |msg: String| -> Result<String, minijinja::Error> {
                Err(minijinja::Error::new(
                    minijinja::ErrorKind::InvalidOperation,
                    msg,
                ))
            },
        );
        env.add_filter("tojson", tojson);
        env.add_template_owned("chat", source.to_string())
            .map_err(template_error)?;
        let tools = env
            .get_template("chat")
            .map_err(template_error)?
            .undeclared_variables(false)
            .contains("tools");
        Ok(Self { env, tools })
    }

    /// Whether the template reads `tools` (Qwen2.5's does; SmolLM2's does not).
    pub fn has_tools(&self) -> bool {
        self.tools
    }

    /// Renders a conversation. Tools need a template with a tools branch: without one they are an error
    /// naming `tools` rather than a prompt that drops them.
    pub fn render(&self, messages: &[Message], opts: &ChatOptions<'_>) -> Result<String, Error> {
        // Tool turns without a tools branch are rendered as the template renders any role (fine-tuning data
        // does this); a front end that takes OpenAI's tool messages refuses them with [`Self::has_tools`].
        if !self.tools && !opts.tools.is_empty() {
            return Err(Error::Invalid {
                field: "tools".into(),
                message: "the model's chat template has no tools branch, so it cannot show the model \
                          functions or their results; use a model whose template takes tools (qwen2.5-coder-0.5b-instruct)"
                    .into(),
            });
        }
        if opts.continue_final_message && opts.add_generation_prompt {
            return Err(Error::Invalid {
                field: "continue_final_message".into(),
                message: "cannot be set together with add_generation_prompt: the last message is either continued \
                          or followed by a new assistant turn"
                    .into(),
            });
        }
        let tools: Vec<minijinja::Value> = opts.tools.iter().map(json_value).collect();
        let tools = (!tools.is_empty()).then(|| minijinja::Value::from(tools));
        let text = self
            .env
            .get_template("chat")
            .and_then(|t| {
                t.render(minijinja::context! {
                    messages => chat_messages(messages),
                    tools => tools,
                    add_generation_prompt => opts.add_generation_prompt,
                })
            })
            .map_err(template_error)?;
        if !opts.continue_final_message {
            return Ok(text);
        }
        // As Hugging Face does: cut the text after the last occurrence of the final message's content.
        let last = messages.last().map(|m| m.content.as_str()).unwrap_or("");
        let cut = [last, last.trim_end()]
            .into_iter()
            .filter(|c| !c.trim().is_empty())
            .find_map(|c| text.rfind(c).map(|at| at + c.len()));
        match cut {
            Some(end) => Ok(text[..end].to_string()),
            None => Err(Error::Invalid {
                field: "continue_final_message".into(),
                message: "the final message's content does not appear in the rendered chat (it is empty, or the \
                          template drops it), so there is nothing to continue"
                    .into(),
            }),
        }
    }
}

/// A JSON value as a template sees it, object keys in their order.
fn json_value(v: &serde_json::Value) -> minijinja::Value {
    use serde_json::Value as J;
    match v {
        J::Null => minijinja::Value::from(()),
        J::Bool(b) => (*b).into(),
        J::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => i.into(),
            (_, Some(u), _) => u.into(),
            (_, _, f) => f.unwrap_or(f64::NAN).into(),
        },
        J::String(s) => s.as_str().into(),
        J::Array(a) => a.iter().map(json_value).collect::<Vec<_>>().into(),
        J::Object(map) => minijinja::Value::from_object(JsonObject(map.clone())),
    }
}

/// A JSON object that keeps its key order (minijinja's own maps sort their keys).
#[derive(Debug)]
struct JsonObject(serde_json::Map<String, serde_json::Value>);

impl minijinja::value::Object for JsonObject {
    fn repr(self: &std::sync::Arc<Self>) -> minijinja::value::ObjectRepr {
        minijinja::value::ObjectRepr::Map
    }

    fn get_value(self: &std::sync::Arc<Self>, key: &minijinja::Value) -> Option<minijinja::Value> {
        self.0.get(key.as_str()?).map(json_value)
    }

    fn enumerate(self: &std::sync::Arc<Self>) -> minijinja::value::Enumerator {
        let keys: Vec<minijinja::Value> = self.0.keys().map(|k| k.as_str().into()).collect();
        minijinja::value::Enumerator::Values(keys)
    }
}

/// Jinja's `tojson` as Hugging Face defines it: Python's `json.dumps(x, ensure_ascii=False)` (`", "` and
/// `": "` between items, keys in their order), or with `indent`.
fn tojson(
    value: &minijinja::Value,
    kwargs: minijinja::value::Kwargs,
) -> Result<minijinja::Value, minijinja::Error> {
    let indent: Option<usize> = kwargs.get("indent")?;
    kwargs.assert_all_used()?;
    let mut out = String::new();
    dumps(value, indent, 0, &mut out)?;
    Ok(minijinja::Value::from_safe_string(out))
}

fn dumps(
    v: &minijinja::Value,
    indent: Option<usize>,
    depth: usize,
    out: &mut String,
) -> Result<(), minijinja::Error> {
    use minijinja::value::ValueKind as K;
    let newline = |out: &mut String, depth: usize| {
        if let Some(n) = indent {
            out.push('\n');
            out.push_str(&" ".repeat(n * depth));
        }
    };
    let sep = if indent.is_some() { "," } else { ", " };
    match v.kind() {
        K::Undefined | K::None => out.push_str("null"),
        K::Bool => out.push_str(if v.is_true() { "true" } else { "false" }),
        K::Number => match (v.as_i64(), f64::try_from(v.clone())) {
            (Some(i), _) if !v.to_string().contains(['.', 'e', 'E']) => {
                out.push_str(&i.to_string())
            }
            (_, Ok(f)) if f.is_finite() => out.push_str(&serde_json::Value::from(f).to_string()),
            (_, Ok(f)) => out.push_str(if f.is_nan() {
                "NaN"
            } else if f > 0.0 {
                "Infinity"
            } else {
                "-Infinity"
            }),
            _ => out.push_str(&v.to_string()),
        },
        K::String => {
            out.push_str(&serde_json::Value::from(v.as_str().unwrap_or_default()).to_string())
        }
        K::Seq | K::Iterable => {
            let items: Vec<minijinja::Value> = v.try_iter()?.collect();
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(sep);
                }
                newline(out, depth + 1);
                dumps(item, indent, depth + 1, out)?;
            }
            if !items.is_empty() {
                newline(out, depth);
            }
            out.push(']');
        }
        K::Map => {
            let keys: Vec<minijinja::Value> = v.try_iter()?.collect();
            out.push('{');
            for (i, key) in keys.iter().enumerate() {
                if i > 0 {
                    out.push_str(sep);
                }
                newline(out, depth + 1);
                let name = key.as_str().map_or_else(|| key.to_string(), str::to_string);
                out.push_str(&serde_json::Value::from(name).to_string());
                out.push_str(": ");
                dumps(&v.get_item(key)?, indent, depth + 1, out)?;
            }
            if !keys.is_empty() {
                newline(out, depth);
            }
            out.push('}');
        }
        _ => out.push_str(&serde_json::Value::from(v.to_string()).to_string()),
    }
    Ok(())
}

fn chat_messages(messages: &[Message]) -> minijinja::Value {
    let list: Vec<minijinja::Value> = messages
        .iter()
        .map(|m| {
            let mut map = serde_json::Map::new();
            map.insert("role".into(), m.role.clone().into());
            // An assistant turn that only calls functions has no content (None, as OpenAI sends it).
            if m.content.is_empty() && !m.tool_calls.is_empty() {
                map.insert("content".into(), serde_json::Value::Null);
            } else {
                map.insert("content".into(), m.content.clone().into());
            }
            if !m.tool_calls.is_empty() {
                let calls = m
                    .tool_calls
                    .iter()
                    .map(|c| {
                        serde_json::json!({
                            "id": c.id,
                            "type": "function",
                            "function": {"name": c.name, "arguments": c.arguments},
                        })
                    })
                    .collect();
                map.insert("tool_calls".into(), serde_json::Value::Array(calls));
            }
            if let Some(id) = &m.tool_call_id {
                map.insert("tool_call_id".into(), id.clone().into());
            }
            json_value(&serde_json::Value::Object(map))
        })
        .collect();
    minijinja::Value::from(list)
}

/// A reply read for function calls: the text before the calls (None when there is none) and the calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolReply {
    pub content: Option<String>,
    pub calls: Vec<ToolCall>,
}

/// Reads a reply written after `tools` were offered as function calls, the way the model wrote them:
/// `<tool_call>{...}</tool_call>` blocks (Qwen's template asks for them; text before the first is the
/// content), or, as Qwen2.5 answers in practice, a bare JSON object `{"name": ..., "arguments": {...}}` (or
/// several, or an array of them, or any of these in a ``` fence) as the whole reply. A call must name one of
/// `tools`; anything else (prose, JSON that is not a call, a call cut off by `max_tokens`) is `None`: the
/// reply is text. Calls get ids `call_{id}_{i}`.
pub fn parse_tool_calls(text: &str, tools: &[serde_json::Value], id: &str) -> Option<ToolReply> {
    let names: Vec<&str> = tools
        .iter()
        .filter_map(|t| t.get("function")?.get("name")?.as_str())
        .collect();
    let call = |v: &serde_json::Value, i: usize| -> Option<ToolCall> {
        let obj = v.as_object()?;
        let name = obj.get("name")?.as_str()?;
        if !names.contains(&name) {
            return None;
        }
        let arguments = match obj.get("arguments").or_else(|| obj.get("parameters")) {
            None => serde_json::json!({}),
            Some(serde_json::Value::String(s)) => serde_json::from_str(s).ok()?,
            Some(a @ serde_json::Value::Object(_)) => a.clone(),
            Some(_) => return None,
        };
        Some(ToolCall {
            id: format!("call_{id}_{i}"),
            name: name.to_string(),
            arguments,
        })
    };
    const OPEN: &str = "<tool_call>";
    const CLOSE: &str = "</tool_call>";
    if let Some(first) = text.find(OPEN) {
        let before = &text[..first];
        let mut calls = Vec::new();
        for block in text[first..].split(OPEN).skip(1) {
            let body = block.split(CLOSE).next().unwrap_or(block);
            let v: serde_json::Value = serde_json::from_str(body.trim()).ok()?;
            calls.push(call(&v, calls.len())?);
        }
        return Some(ToolReply {
            content: (!before.trim().is_empty()).then(|| before.to_string()),
            calls,
        });
    }
    let mut body = text.trim();
    if let Some(inner) = body.strip_prefix("```") {
        let inner = inner.strip_suffix("```")?;
        body = inner.strip_prefix("json").unwrap_or(inner).trim();
    }
    if !body.starts_with(['{', '[']) {
        return None;
    }
    let mut calls = Vec::new();
    for v in serde_json::Deserializer::from_str(body).into_iter::<serde_json::Value>() {
        match v.ok()? {
            serde_json::Value::Array(items) => {
                for item in &items {
                    calls.push(call(item, calls.len())?);
                }
            }
            other => calls.push(call(&other, calls.len())?),
        }
    }
    (!calls.is_empty()).then_some(ToolReply {
        content: None,
        calls,
    })
}

/// Reads messages from JSON: an array of `{"role", "content"}` or an object with a `messages` array.
pub fn parse_messages(json: &str, source: &str) -> Result<Vec<Message>, Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum File {
        List(Vec<Message>),
        Object { messages: Vec<Message> },
    }
    let file: File = serde_json::from_str(json).map_err(|e| Error::Invalid {
        field: source.into(),
        message: format!("{e}; expected [{{\"role\": \"user\", \"content\": \"...\"}}, ...] or {{\"messages\": [...]}}"),
    })?;
    let messages = match file {
        File::List(m) | File::Object { messages: m } => m,
    };
    if messages.is_empty() {
        return Err(Error::Invalid {
            field: source.into(),
            message: "holds no messages".into(),
        });
    }
    Ok(messages)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transcript_leaves_off_where_the_ai_turn_begins() {
        let f = PromptFormat::from_name("transcript").unwrap();
        let msgs = [
            Message::new("user", "What is the capital of France?"),
            Message::new("assistant", "Paris."),
            Message::new("user", "What is the capital of Germany?"),
        ];
        assert_eq!(
            f.render(&msgs, None).unwrap(),
            "user: What is the capital of France?\nAI: Paris.\nuser: What is the capital of Germany?\nAI:"
        );
        assert_eq!(f.natural_stop().as_deref(), Some("\nuser:"));
    }

    #[test]
    fn separator_puts_the_line_after_each_turn() {
        let f = PromptFormat::from_name("separator").unwrap();
        assert_eq!(
            f.render(&[Message::new("user", "2+2?")], None).unwrap(),
            "2+2?\n- - -\n"
        );
        assert_eq!(f.natural_stop().as_deref(), Some("\n- - -"));
    }

    #[test]
    fn every_name_maps_to_its_format_and_back() {
        for name in PromptFormat::NAMES {
            assert_eq!(PromptFormat::from_name(name).unwrap().name(), name);
        }
        assert_eq!(PromptFormat::from_name("xml"), None);
    }

    #[test]
    fn chat_template_renders_chatml() {
        let t = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}\
                 {% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";
        let out = render_chat_template(t, &[Message::new("user", "Hi!")]).unwrap();
        assert_eq!(
            out,
            "<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn tojson_writes_what_pythons_json_dumps_writes() {
        let t =
            ChatTemplate::new("{{ tools[0] | tojson }}|{{ tools[0] | tojson(indent=2) }}").unwrap();
        let tool =
            serde_json::json!({"b": [1, 2.5, null], "a": {"é": "x\"y\n"}, "e": {}, "t": true});
        let out = t.render(
            &[],
            &ChatOptions {
                tools: std::slice::from_ref(&tool),
                add_generation_prompt: false,
                ..ChatOptions::default()
            },
        );
        // A template that reads `tools` takes them; keys keep their order, nothing is ASCII-escaped.
        assert_eq!(
            out.unwrap(),
            "{\"b\": [1, 2.5, null], \"a\": {\"é\": \"x\\\"y\\n\"}, \"e\": {}, \"t\": true}|{\n  \"b\": [\n    1,\n    2.5,\n    null\n  ],\n  \"a\": {\n    \"é\": \"x\\\"y\\n\"\n  },\n  \"e\": {},\n  \"t\": true\n}"
        );
    }

    #[test]
    fn a_template_without_a_tools_branch_refuses_tools_and_tool_turns() {
        let t =
            ChatTemplate::new("{% for m in messages %}{{ m.role }}:{{ m.content }}\n{% endfor %}")
                .unwrap();
        assert!(!t.has_tools());
        let tools = [serde_json::json!({"type": "function", "function": {"name": "f"}})];
        let opts = ChatOptions {
            tools: &tools,
            ..ChatOptions::default()
        };
        let err = t.render(&[Message::new("user", "Hi")], &opts).unwrap_err();
        assert!(err.to_string().starts_with("tools: "), "{err}");
        assert_eq!(
            t.render(&[Message::new("user", "Hi")], &ChatOptions::default())
                .unwrap(),
            "user:Hi\n"
        );
    }

    #[test]
    fn replies_are_read_for_calls_the_way_the_model_wrote_them() {
        let tools = [serde_json::json!({"type": "function", "function": {"name": "get_weather"}})];
        let call = |text: &str| parse_tool_calls(text, &tools, "x");
        let one = call(r#"{"name": "get_weather", "arguments": {"city": "Paris"}}"#).unwrap();
        assert_eq!(one.content, None);
        assert_eq!(
            one.calls,
            [ToolCall {
                id: "call_x_0".into(),
                name: "get_weather".into(),
                arguments: serde_json::json!({"city": "Paris"}),
            }]
        );
        // Tags, text before them, two calls, the last closing tag cut off.
        let two = call(
            "Checking.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"A\"}}\n</tool_call>\n\
             <tool_call>\n{\"name\": \"get_weather\", \"arguments\": \"{\\\"city\\\": \\\"B\\\"}\"}",
        )
        .unwrap();
        assert_eq!(two.content.as_deref(), Some("Checking.\n"));
        assert_eq!(two.calls[1].arguments, serde_json::json!({"city": "B"}));
        assert_eq!(two.calls[1].id, "call_x_1");
        // A fence, an array, several objects.
        assert!(call("```json\n{\"name\": \"get_weather\", \"arguments\": {}}\n```").is_some());
        assert_eq!(
            call(r#"[{"name": "get_weather", "arguments": {}}, {"name": "get_weather", "arguments": {}}]"#)
                .unwrap()
                .calls
                .len(),
            2
        );
        // Not calls: prose, unknown names, cut-off JSON, arguments that are not an object.
        for text in [
            "It is sunny.",
            r#"{"name": "get_time", "arguments": {}}"#,
            r#"{"name": "get_weather", "arguments": {"ci"#,
            r#"{"name": "get_weather", "arguments": 5}"#,
            r#"{"temp": 21}"#,
            "<tool_call>not json</tool_call>",
        ] {
            assert_eq!(call(text), None, "{text}");
        }
    }

    #[test]
    fn tool_calls_read_and_write_openais_shape() {
        let m: Message =
            serde_json::from_value(serde_json::json!({"role": "assistant", "content": null,
            "tool_calls": [{"id": "c1", "type": "function",
                            "function": {"name": "f", "arguments": "{\"a\": 1}"}}]}))
            .unwrap();
        assert_eq!(m.content, "");
        assert_eq!(m.tool_calls[0].arguments, serde_json::json!({"a": 1}));
        let back = serde_json::to_value(&m.tool_calls[0]).unwrap();
        assert_eq!(back["function"]["arguments"], "{\"a\":1}");
        assert!(
            serde_json::from_value::<ToolCall>(
                serde_json::json!({"function": {"name": "f", "arguments": "{a"}})
            )
            .is_err()
        );
    }

    #[test]
    fn malformed_messages_name_the_source() {
        let err = parse_messages("[{\"role\": 1}]", "msgs.json").unwrap_err();
        assert!(err.to_string().contains("msgs.json"), "{err}");
    }
}
