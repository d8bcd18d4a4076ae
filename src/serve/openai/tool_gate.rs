//! While a chat request offers tools, its streamed reply is gated: text goes out as content until it could
//! be a function call, then is held to the end, when the whole reply is read for calls.

/// Where a chat reply's text may go while tools are offered: it streams as content until it could be a
/// function call. A reply that begins (after whitespace) with `{`, `[` or a ``` fence is held whole, and so
/// is everything from a `<tool_call>` tag on; at the end the whole reply is read for calls
/// ([`parse_tool_calls`](crate::pipeline::format::parse_tool_calls)) and what was held goes out as calls or as text. The streamed content thus equals
/// the unstreamed `content`.
#[derive(Debug, Default)]
pub struct ToolGate {
    /// Undecided (only whitespace so far), streaming content, or holding everything.
    state: GateState,
    /// What is held back: at the end, read for calls or sent as text.
    pub held: String,
    /// The content streamed so far.
    pub sent: String,
}

#[derive(Debug, Default, PartialEq)]
enum GateState {
    #[default]
    Undecided,
    Content,
    Holding,
}

const TOOL_OPEN: &str = "<tool_call>";

impl ToolGate {
    /// Takes released text; returns what may be streamed as content now.
    pub fn push(&mut self, text: &str) -> String {
        let out = self.release(text);
        self.sent.push_str(&out);
        out
    }

    fn release(&mut self, text: &str) -> String {
        self.held.push_str(text);
        if self.state == GateState::Undecided {
            let t = self.held.trim_start();
            if t.is_empty() {
                return String::new();
            }
            self.state = if t.starts_with(['{', '[', '`']) {
                GateState::Holding
            } else {
                GateState::Content
            };
        }
        if self.state != GateState::Content {
            return String::new();
        }
        if let Some(at) = self.held.find(TOOL_OPEN) {
            let out = self.held[..at].to_string();
            self.held.drain(..at);
            self.state = GateState::Holding;
            return out;
        }
        // Keep back a tail that may be the beginning of the tag.
        let keep = (1..TOOL_OPEN.len())
            .rev()
            .find(|&k| self.held.ends_with(&TOOL_OPEN[..k]))
            .unwrap_or(0);
        let out = self.held[..self.held.len() - keep].to_string();
        self.held.drain(..self.held.len() - keep);
        out
    }
}
