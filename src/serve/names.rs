//! How the HTTP routes name a setting: its JSON path in the request body.
//!
//! An error of the one validation ([`UserSettings::validate`]) carries a typed [`Field`]; a route names it as
//! its client wrote it (`stop[1]`, `max_completion_tokens`, `logit_bias.17`, the playground's
//! `logit_bias[0]`), so the 400's `param` is the field to fix.

use crate::pipeline::field::Field;
use crate::pipeline::settings::UserSettings;

/// How one request names its settings.
#[derive(Debug, Clone)]
pub struct Names {
    /// Where the prompt came from: `prompt`, or `messages`.
    pub prompt: &'static str,
    /// `max_tokens`, or chat's `max_completion_tokens` when the request used it.
    pub max: &'static str,
    /// `stop` was one string rather than an array: its errors name `stop`.
    pub single_stop: bool,
    /// The playground's fields; None: OpenAI's.
    playground: Option<Playground>,
}

/// What the playground's names need from its request. Unlike OpenAI's routes it has the prompt format's
/// settings as fields of their own, and `logit_bias` as `[id, bias]` pairs.
#[derive(Debug, Clone)]
struct Playground {
    /// The request's own stops; a later one is the format's natural stop.
    stops: usize,
    /// `logit_bias`'s ids in the order of its pairs: an error names the pair by its index.
    bias: Vec<u32>,
}

impl Default for Names {
    fn default() -> Self {
        Self::openai("prompt", "max_tokens", false)
    }
}

impl Names {
    /// An OpenAI route's request (`logit_bias` as `{"id": bias}`).
    pub fn openai(prompt: &'static str, max: &'static str, single_stop: bool) -> Self {
        Self {
            prompt,
            max,
            single_stop,
            playground: None,
        }
    }

    /// A playground request, whose settings are `user`.
    pub fn playground(user: &UserSettings, single_stop: bool) -> Self {
        Self {
            prompt: "messages",
            max: "max_tokens",
            single_stop,
            playground: Some(Playground {
                stops: user.stops.len(),
                bias: user.sampling.logit_bias.iter().map(|b| b.0).collect(),
            }),
        }
    }

    pub fn json_path(&self, field: Field) -> String {
        let playground = self.playground.as_ref();
        match field {
            Field::Prompt => self.prompt.into(),
            // OpenAI's routes have no format options: a request's prompt is rendered by its route.
            Field::Format
            | Field::UserPrefix
            | Field::AiPrefix
            | Field::Separator
            | Field::NaturalStop
                if playground.is_none() =>
            {
                self.prompt.into()
            }
            Field::Format => "format".into(),
            Field::UserPrefix => "user_prefix".into(),
            Field::AiPrefix => "ai_prefix".into(),
            Field::Separator => "separator".into(),
            Field::NaturalStop => "natural_stop".into(),
            // The format's natural stop comes after the request's own.
            Field::Stop { index } if playground.is_some_and(|p| index >= p.stops) => {
                "natural_stop".into()
            }
            Field::Stop { .. } | Field::Stops if self.single_stop => "stop".into(),
            Field::Stop { index } => format!("stop[{index}]"),
            Field::Stops => "stop".into(),
            Field::StopTokenIds { index } => format!("stop_token_ids[{index}]"),
            Field::MaxTokens => self.max.into(),
            Field::MinTokens => "min_tokens".into(),
            Field::RepetitionNgram => "repetition_stop.ngram".into(),
            Field::RepetitionCount => "repetition_stop.count".into(),
            Field::ReasoningMarkers => "reasoning_markers".into(),
            Field::Temperature => "temperature".into(),
            Field::TopK => "top_k".into(),
            Field::TopP => "top_p".into(),
            Field::MinP => "min_p".into(),
            Field::RepetitionPenalty => "repetition_penalty".into(),
            Field::FrequencyPenalty => "frequency_penalty".into(),
            Field::PresencePenalty => "presence_penalty".into(),
            Field::LogitBias { id } => match playground {
                None => format!("logit_bias.{id}"),
                Some(p) => match p.bias.iter().position(|&b| b == id) {
                    Some(i) => format!("logit_bias[{i}]"),
                    None => "logit_bias".into(),
                },
            },
            Field::Seed => "seed".into(),
            Field::EndTokens { list, index } => format!("end_tokens.{}[{index}]", list.name()),
        }
    }
}
