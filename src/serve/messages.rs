//! A conversation as OpenAI's API writes it, read: the `messages` of a chat request, a playground request
//! and vLLM's `/tokenize`.

use serde_json::Value;

use crate::pipeline::format::{Message, ROLES, ToolCall};
use crate::serve::error::ApiError;
use crate::serve::fields::{Fields, kind, typed};

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
