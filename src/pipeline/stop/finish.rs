//! Why a generation finished, in the words of each audience: OpenAI's `finish_reason`, vLLM's
//! `stop_reason`, and a sentence for people.

/// Why a generation finished. Finishing is an outcome, not an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FinishReason {
    /// The model emitted one of its end-of-generation tokens.
    EndToken { id: u32 },
    /// A stop string completed; `offset` is the byte offset of its first byte in the generated text.
    StopString {
        index: usize,
        stop: String,
        offset: usize,
    },
    /// A token id from `stop_token_ids` was generated.
    StopToken { id: u32 },
    /// `max_tokens` were generated.
    Length,
    /// Prompt plus generated tokens filled the model's context.
    ContextFull,
    /// The last `ngram` tokens occurred for the `count`th time; the first occurrence began at token `first`.
    Repetition {
        ngram: usize,
        count: usize,
        first: usize,
    },
    /// The sink asked to stop (a client went away, a pipe closed).
    Cancelled,
}

impl FinishReason {
    /// OpenAI's `finish_reason`: `stop` or `length` (`cancelled` for a generation its consumer abandoned).
    pub fn openai(&self) -> &'static str {
        match self {
            Self::EndToken { .. }
            | Self::StopString { .. }
            | Self::StopToken { .. }
            | Self::Repetition { .. } => "stop",
            Self::Length | Self::ContextFull => "length",
            Self::Cancelled => "cancelled",
        }
    }

    /// vLLM's `stop_reason`: the matched stop string, or the id of the `stop_token_ids` token that stopped
    /// it; null when the model's own end token ended it (as vLLM answers) or a limit did.
    pub fn stop_reason(&self) -> serde_json::Value {
        match self {
            Self::StopToken { id } => (*id).into(),
            Self::StopString { stop, .. } => stop.clone().into(),
            Self::Repetition { .. } => "repetition".into(),
            _ => serde_json::Value::Null,
        }
    }

    /// A short human description for summaries and traces.
    pub fn describe(&self) -> String {
        match self {
            Self::EndToken { id } => format!("end token {id}"),
            Self::StopString { stop, offset, .. } => {
                format!("stop string {stop:?} at byte {offset}")
            }
            Self::StopToken { id } => format!("stop token {id}"),
            Self::Length => "max tokens reached".into(),
            Self::ContextFull => "context full".into(),
            Self::Cancelled => "cancelled".into(),
            Self::Repetition {
                ngram,
                count,
                first,
            } => format!(
                "repetition: the last {ngram} tokens occurred {count} times, first at token {first}"
            ),
        }
    }

    /// A stable one-word name of the variant, for tables and JSON.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::EndToken { .. } => "end_token",
            Self::StopString { .. } => "stop_string",
            Self::StopToken { .. } => "stop_token",
            Self::Length => "length",
            Self::ContextFull => "context_full",
            Self::Cancelled => "cancelled",
            Self::Repetition { .. } => "repetition",
        }
    }
}
