//! The conversation of `chat` and `trace --chat`, from their flags: a system message, earlier turns from a
//! file, the user's message.

use std::path::PathBuf;

use stoplab::pipeline::format::{Message, parse_messages};

use crate::cli::args::values::unescape;
use crate::cli::output::Failure;

/// The messages in order; a conversation with no turn but the system's is refused.
pub fn chat_messages(
    message: Option<String>,
    system: Option<String>,
    messages: Option<PathBuf>,
) -> Result<Vec<Message>, Failure> {
    let mut all = Vec::new();
    if let Some(s) = system {
        all.push(Message::new("system", &unescape(&s)));
    }
    if let Some(path) = messages {
        let json = std::fs::read_to_string(&path)
            .map_err(|e| Failure::usage(format!("--messages {}: {e}", path.display())))?;
        all.extend(parse_messages(
            &json,
            &format!("--messages {}", path.display()),
        )?);
    }
    if let Some(m) = message {
        all.push(Message::new("user", &unescape(&m)));
    }
    if all.iter().all(|m| m.role == "system") {
        return Err(Failure::usage("chat: give a MESSAGE or --messages FILE"));
    }
    Ok(all)
}
