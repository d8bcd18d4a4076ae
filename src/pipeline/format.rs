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
use crate::pipeline::settings::{Field, SettingsError};

/// One message of a conversation, as OpenAI's API writes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

impl Message {
    pub fn new(role: &str, content: &str) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
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
    let bad = |e: minijinja::Error| Error::Invalid {
        field: "chat_template".into(),
        message: format!("the model's chat template cannot be rendered: {e}"),
    };
    let mut env = minijinja::Environment::new();
    env.add_function(
        "raise_exception",
        |msg: String| -> Result<String, minijinja::Error> {
            Err(minijinja::Error::new(
                minijinja::ErrorKind::InvalidOperation,
                msg,
            ))
        },
    );
    env.add_template("chat", template).map_err(bad)?;
    env.get_template("chat")
        .and_then(|t| t.render(minijinja::context! { messages => chat_messages(messages), add_generation_prompt => add_generation_prompt }))
        .map_err(bad)
}

fn chat_messages(messages: &[Message]) -> minijinja::Value {
    let list: Vec<minijinja::Value> = messages
        .iter()
        .map(|m| {
            let map: std::collections::BTreeMap<&str, minijinja::Value> = [
                ("role", m.role.as_str().into()),
                ("content", m.content.as_str().into()),
            ]
            .into();
            minijinja::Value::from(map)
        })
        .collect();
    minijinja::Value::from(list)
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
    fn malformed_messages_name_the_source() {
        let err = parse_messages("[{\"role\": 1}]", "msgs.json").unwrap_err();
        assert!(err.to_string().contains("msgs.json"), "{err}");
    }
}
