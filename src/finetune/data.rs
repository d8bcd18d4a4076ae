//! Training data: OpenAI's chat fine-tuning JSONL, rendered through the model's chat template, with labels on
//! the assistant's tokens only.
//!
//! One conversation per line: `{"messages": [...]}` with `system`, `user` and `assistant` messages, assistant
//! `function_call` / `tool_calls`, and `function` / `tool` results; optional top-level `functions` / `tools`
//! (their JSON is appended to the system message) and per-message `"weight": 0` (an assistant message the
//! loss skips), as in OpenAI's format.
//!
//! The template is rendered message by message, so every token is known to belong to the template, to a
//! prompt message or to an assistant message. An assistant message is labelled with its content tokens (plus
//! `append_stop`, when set) and the end token the template closes it with; `mask_end_token` leaves that end
//! token out of the labels, the mistake that makes a fine-tuned model forget how to stop.

use std::path::Path;

use serde::Deserialize;
use serde_json::Value;

use crate::Error;
use crate::pipeline::format::{Message, render_chat};
use crate::pipeline::tokenizer::Vocab;

/// How conversations become training examples.
#[derive(Debug, Clone, Default)]
pub struct RenderOptions {
    /// Text added to the end of every assistant message (function calls included), e.g. "######".
    pub append_stop: Option<String>,
    /// Leave the template's end token after assistant messages out of the labels.
    pub mask_end_token: bool,
    /// Examples longer than this are cut (0: no limit).
    pub max_tokens: usize,
}

/// One conversation, tokenized: `labels[i]` is true where the token `tokens[i]` is trained on (predicted
/// from the tokens before it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Example {
    pub tokens: Vec<u32>,
    pub labels: Vec<bool>,
}

impl Example {
    pub fn labelled(&self) -> usize {
        self.labels.iter().filter(|&&l| l).count()
    }
}

/// A message of OpenAI's fine-tuning format.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatMessage {
    pub role: String,
    #[serde(default)]
    pub content: Option<Value>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub function_call: Option<FunctionCall>,
    #[serde(default)]
    pub tool_calls: Option<Vec<ToolCall>>,
    #[serde(default)]
    pub tool_call_id: Option<String>,
    #[serde(default)]
    pub weight: Option<u8>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct FunctionCall {
    pub name: String,
    /// A JSON string in OpenAI's format; an object is accepted too.
    #[serde(default)]
    pub arguments: Value,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ToolCall {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    pub function: FunctionCall,
}

/// One line of a fine-tuning file.
#[derive(Debug, Clone, Deserialize)]
pub struct Conversation {
    pub messages: Vec<ChatMessage>,
    #[serde(default)]
    pub functions: Option<Vec<Value>>,
    #[serde(default)]
    pub tools: Option<Vec<Value>>,
    #[serde(default)]
    pub parallel_tool_calls: Option<bool>,
}

/// The text an assistant function call is written as: one JSON object per call, on its own line.
pub fn function_call_text(call: &FunctionCall) -> String {
    let args = match &call.arguments {
        Value::String(s) => serde_json::from_str::<Value>(s).unwrap_or_else(|_| s.clone().into()),
        Value::Null => Value::Object(Default::default()),
        other => other.clone(),
    };
    serde_json::json!({ "name": call.name, "arguments": args }).to_string()
}

/// A function of the `functions`/`tools` list as one short line, `name(arg: type, ...): description` (the
/// full JSON schema would triple the length of a short conversation).
pub fn function_signature(f: &Value) -> String {
    let f = f.get("function").unwrap_or(f);
    let name = f.get("name").and_then(Value::as_str).unwrap_or("?");
    let args: Vec<String> = f
        .pointer("/parameters/properties")
        .and_then(Value::as_object)
        .map(|props| {
            props
                .iter()
                .map(|(k, v)| match v.get("type").and_then(Value::as_str) {
                    Some(t) => format!("{k}: {t}"),
                    None => k.clone(),
                })
                .collect()
        })
        .unwrap_or_default();
    match f.get("description").and_then(Value::as_str) {
        Some(d) => format!("{name}({}): {d}", args.join(", ")),
        None => format!("{name}({})", args.join(", ")),
    }
}

fn content_text(content: &Option<Value>) -> String {
    match content {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        // Content parts: keep the text ones.
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(""),
        Some(other) => other.to_string(),
    }
}

impl Conversation {
    /// Parses one JSONL line; `what` names it in errors ("FILE line N").
    pub fn parse(line: &str, what: &str) -> Result<Self, Error> {
        let bad = |message: String| Error::Invalid {
            field: what.into(),
            message,
        };
        let conv: Conversation = serde_json::from_str(line).map_err(|e| {
            bad(format!(
                "{e}; expected {{\"messages\": [{{\"role\": \"user\", \"content\": \"...\"}}, ...]}}"
            ))
        })?;
        if conv.messages.is_empty() {
            return Err(bad("holds no messages".into()));
        }
        for (i, m) in conv.messages.iter().enumerate() {
            let known = ["system", "user", "assistant", "function", "tool"];
            if !known.contains(&m.role.as_str()) {
                return Err(bad(format!(
                    "message {}: unknown role {:?} (expected one of {known:?})",
                    i + 1,
                    m.role
                )));
            }
            if (m.function_call.is_some() || m.tool_calls.is_some()) && m.role != "assistant" {
                return Err(bad(format!(
                    "message {}: only assistant messages make function calls",
                    i + 1
                )));
            }
        }
        if conv.messages[0].role == "assistant" {
            return Err(bad(
                "the first message is the assistant's; start with a system or user message".into(),
            ));
        }
        Ok(conv)
    }

    /// The messages as the chat template sees them: function calls written out as text, the function list
    /// appended to the system message. `append_stop` goes at the end of every assistant message.
    pub fn template_messages(&self, append_stop: Option<&str>) -> Vec<(Message, Trained)> {
        let mut out = Vec::new();
        let mut listed: Vec<&Value> = Vec::new();
        listed.extend(self.functions.iter().flatten());
        listed.extend(self.tools.iter().flatten());
        let list_text = (!listed.is_empty()).then(|| {
            let lines: Vec<String> = listed.iter().map(|f| function_signature(f)).collect();
            format!(
                "You can call these functions by answering with a JSON object \
                 {{\"name\": ..., \"arguments\": {{...}}}}:\n{}",
                lines.join("\n")
            )
        });
        let mut list_pending = list_text.clone();
        for m in &self.messages {
            let mut text = content_text(&m.content);
            if m.role == "system"
                && let Some(list) = list_pending.take()
            {
                text = if text.is_empty() {
                    list
                } else {
                    format!("{text}\n\n{list}")
                };
            }
            let trained = if m.role == "assistant" {
                let mut calls: Vec<String> = Vec::new();
                calls.extend(m.function_call.iter().map(function_call_text));
                calls.extend(
                    m.tool_calls
                        .iter()
                        .flatten()
                        .map(|t| function_call_text(&t.function)),
                );
                for call in calls {
                    if !text.is_empty() {
                        text.push('\n');
                    }
                    text.push_str(&call);
                }
                if let Some(stop) = append_stop {
                    text.push_str(stop);
                }
                if m.weight == Some(0) {
                    Trained::No
                } else {
                    Trained::Yes
                }
            } else {
                Trained::No
            };
            let role = match m.role.as_str() {
                "function" => "tool",
                r => r,
            };
            out.push((Message::new(role, &text), trained));
        }
        // No system message to carry the function list: give it one of its own.
        if let Some(list) = list_pending {
            out.insert(0, (Message::new("system", &list), Trained::No));
        }
        out
    }

    /// Renders and tokenizes the conversation with labels on the assistant's tokens.
    pub fn to_example(
        &self,
        vocab: &Vocab,
        opts: &RenderOptions,
        what: &str,
    ) -> Result<Example, Error> {
        let template = vocab.chat_template().ok_or_else(|| Error::Invalid {
            field: "model".into(),
            message: "the model has no tokenizer.chat_template to render training data with".into(),
        })?;
        let msgs = self.template_messages(opts.append_stop.as_deref());
        let plain: Vec<Message> = msgs.iter().map(|(m, _)| m.clone()).collect();
        let not_prefix = || {
            Error::Invalid {
            field: what.into(),
            message: "the model's chat template does not render a conversation message by message \
                      (an earlier rendering is not a prefix of a later one); it cannot be used for training"
                .into(),
        }
        };
        let mut tokens = Vec::new();
        let mut labels = Vec::new();
        let mut push = |ids: Vec<u32>, label: bool, tokens: &mut Vec<u32>| {
            labels.extend(std::iter::repeat_n(label, ids.len()));
            tokens.extend(ids);
        };
        let mut done = String::new();
        for (i, (m, trained)) in msgs.iter().enumerate() {
            let full = render_chat(template, &plain[..=i], false)?;
            let chunk = full.strip_prefix(done.as_str()).ok_or_else(not_prefix)?;
            if *trained == Trained::Yes {
                let with_header = render_chat(template, &plain[..i], true)?;
                let header = with_header
                    .strip_prefix(done.as_str())
                    .ok_or_else(not_prefix)?;
                let rest = chunk.strip_prefix(header).ok_or_else(not_prefix)?;
                let tail = rest
                    .strip_prefix(m.content.as_str())
                    .ok_or_else(not_prefix)?;
                push(vocab.encode(header, true)?, false, &mut tokens);
                push(vocab.encode(&m.content, false)?, true, &mut tokens);
                // The template's closing text: its first end token is what teaches the model to stop.
                let mut end_seen = false;
                for id in vocab.encode(tail, true)? {
                    let first_end = !end_seen && vocab.end_tokens().contains(&id);
                    end_seen |= first_end;
                    push(vec![id], first_end && !opts.mask_end_token, &mut tokens);
                }
            } else {
                push(vocab.encode(chunk, true)?, false, &mut tokens);
            }
            done = full;
        }
        if opts.max_tokens > 0 && tokens.len() > opts.max_tokens {
            tokens.truncate(opts.max_tokens);
            labels.truncate(opts.max_tokens);
        }
        // The first token has nothing before it to be predicted from.
        if let Some(l) = labels.first_mut() {
            *l = false;
        }
        Ok(Example { tokens, labels })
    }
}

/// Whether a message is trained on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trained {
    Yes,
    No,
}

/// Reads a JSONL fine-tuning file. Errors name the file and line; an empty file is an error.
pub fn read_jsonl(path: &Path) -> Result<Vec<Conversation>, Error> {
    let field = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| Error::Invalid {
        field: field.clone(),
        message: format!("cannot read: {e}"),
    })?;
    parse_jsonl(&text, &field)
}

/// Parses JSONL text; `source` names it in errors.
pub fn parse_jsonl(text: &str, source: &str) -> Result<Vec<Conversation>, Error> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        out.push(Conversation::parse(
            line,
            &format!("{source} line {}", n + 1),
        )?);
    }
    if out.is_empty() {
        return Err(Error::Invalid {
            field: source.into(),
            message: "holds no conversations (expected one {\"messages\": [...]} object per line)"
                .into(),
        });
    }
    Ok(out)
}

/// Renders conversations to examples; conversations with nothing to train on are an error naming the line.
pub fn examples(
    convs: &[Conversation],
    vocab: &Vocab,
    opts: &RenderOptions,
    source: &str,
) -> Result<Vec<Example>, Error> {
    convs
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let what = format!("{source} conversation {}", i + 1);
            let ex = c.to_example(vocab, opts, &what)?;
            if ex.labelled() == 0 {
                return Err(Error::Invalid {
                    field: what,
                    message: "has no assistant message to train on".into(),
                });
            }
            Ok(ex)
        })
        .collect()
}
