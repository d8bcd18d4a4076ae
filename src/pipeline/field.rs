//! The names of the generation settings and the error that points at one: the ground floor that
//! [`settings`](super::settings), [`format`](super::format) and [`sampling`](super::sampling) share. A
//! [`SettingsError`]'s [`Field`] is typed; each front end names it the way its user wrote it.

/// A setting, independent of how a front end spells it. Indices are 0-based positions in the user's list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// The prompt (or the conversation) as a whole.
    Prompt,
    Format,
    UserPrefix,
    AiPrefix,
    Separator,
    NaturalStop,
    /// One stop string.
    Stop {
        index: usize,
    },
    /// The stop strings as a set (they could not be compiled together).
    Stops,
    StopTokenIds {
        index: usize,
    },
    MaxTokens,
    MinTokens,
    /// The repetition stop's span length.
    RepetitionNgram,
    /// The repetition stop's number of occurrences.
    RepetitionCount,
    /// The reasoning's open and close markers.
    ReasoningMarkers,
    Temperature,
    TopK,
    TopP,
    MinP,
    RepetitionPenalty,
    FrequencyPenalty,
    PresencePenalty,
    /// The bias of one token id.
    LogitBias {
        id: u32,
    },
    Seed,
    /// One id of the user's end-token choice ([`EndTokenChoice`](crate::pipeline::settings::EndTokenChoice)): which list, and where in it.
    EndTokens {
        list: EndList,
        index: usize,
    },
}

/// The lists of an end-token choice ([`EndTokenChoice`](crate::pipeline::settings::EndTokenChoice)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndList {
    Replace,
    Add,
    Remove,
}

impl EndList {
    pub fn name(self) -> &'static str {
        match self {
            Self::Replace => "replace",
            Self::Add => "add",
            Self::Remove => "remove",
        }
    }
}

impl std::fmt::Display for Field {
    /// The library's own name (the path of the field in [`UserSettings`](crate::pipeline::settings::UserSettings)); front ends use their own.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Prompt => f.write_str("prompt"),
            Self::Format => f.write_str("format"),
            Self::UserPrefix => f.write_str("user_prefix"),
            Self::AiPrefix => f.write_str("ai_prefix"),
            Self::Separator => f.write_str("separator"),
            Self::NaturalStop => f.write_str("natural_stop"),
            Self::Stop { index } => write!(f, "stops[{index}]"),
            Self::Stops => f.write_str("stops"),
            Self::StopTokenIds { index } => write!(f, "stop_token_ids[{index}]"),
            Self::MaxTokens => f.write_str("max_tokens"),
            Self::MinTokens => f.write_str("min_tokens"),
            Self::RepetitionNgram => f.write_str("repetition.ngram"),
            Self::RepetitionCount => f.write_str("repetition.count"),
            Self::ReasoningMarkers => f.write_str("reasoning.markers"),
            Self::Temperature => f.write_str("temperature"),
            Self::TopK => f.write_str("top_k"),
            Self::TopP => f.write_str("top_p"),
            Self::MinP => f.write_str("min_p"),
            Self::RepetitionPenalty => f.write_str("repetition_penalty"),
            Self::FrequencyPenalty => f.write_str("frequency_penalty"),
            Self::PresencePenalty => f.write_str("presence_penalty"),
            Self::LogitBias { id } => write!(f, "logit_bias[{id}]"),
            Self::Seed => f.write_str("seed"),
            Self::EndTokens { list, index } => write!(f, "end_tokens.{}[{index}]", list.name()),
        }
    }
}

/// A setting that cannot be used: which one, and why (the message says what would fix it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct SettingsError {
    pub field: Field,
    pub message: String,
}

impl SettingsError {
    pub fn new(field: Field, message: impl Into<String>) -> Self {
        Self {
            field,
            message: message.into(),
        }
    }
}
