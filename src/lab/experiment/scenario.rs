//! Scenario files: TOML in, a checked [`Scenario`] or a [`ScenarioError`] at the file, line and key out.
//! The generation settings go through the one validation ([`UserSettings::validate`]); its typed fields
//! are named here as the file writes them (`stop.strings[1]`), at the line the TOML parser's spans give.

use std::path::Path;

use serde::Deserialize;

use crate::pipeline::field::{Field, SettingsError};
use crate::pipeline::format::{Message, PromptFormat};
use crate::pipeline::sampling::SamplingParams;
use crate::pipeline::settings::{
    EndInReasoning, GenerateParams, Reasoning, RepetitionStop, Scope, Speculation,
};
use crate::pipeline::settings::{EndTokenChoice, Settings, UserSettings};

use super::rules::StepRule;

/// A scenario file that could not be used: the file, the line and the field at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {field}: {message}")]
pub struct ScenarioError {
    pub file: String,
    /// 1-based; 0 when the error has no place in the file.
    pub line: usize,
    pub field: String,
    pub message: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    name: String,
    title: String,
    #[serde(default)]
    about: String,
    /// The model the scenario is written for (a manifest name); none: the default model.
    #[serde(default)]
    model: Option<String>,
    prompt: PromptSpec,
    #[serde(default)]
    sampling: SamplingParams,
    #[serde(default)]
    stop: StopSpec,
    #[serde(default)]
    runs: RunsSpec,
    done: DoneSpec,
    /// Replay this text instead of running the model (special tokens parsed): a weight-free vocabulary's
    /// scenario (`--model gpt-oss-vocab`).
    #[serde(default)]
    replay: Option<ReplaySpec>,
    /// Reasoning markers and the stops' scope (`--reasoning-markers`, `--stop-scope`, `--end-in-reasoning`).
    #[serde(default)]
    reasoning: ReasoningSpec,
}

/// `[reasoning]`: absent keys take the command line's defaults (the vocabulary's markers, scope answer).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReasoningSpec {
    /// "OPEN,CLOSE", or "none".
    pub markers: Option<String>,
    pub stop_scope: Option<String>,
    pub end_in_reasoning: Option<String>,
}

impl ReasoningSpec {
    /// The reasoning settings on `vocab` (its own markers unless the file names some or "none"); the
    /// keys were checked when the file was read.
    pub fn on(&self, vocab: &crate::pipeline::tokenizer::Vocab) -> Option<Reasoning> {
        let mut r = Reasoning::from_markers(self.markers.as_deref(), vocab.reasoning_markers())
            .ok()
            .flatten()?;
        if let Some(s) = self.stop_scope.as_deref().and_then(Scope::parse) {
            r.stop_scope = s;
        }
        if let Some(e) = self
            .end_in_reasoning
            .as_deref()
            .and_then(EndInReasoning::parse)
        {
            r.end_in_reasoning = e;
        }
        Some(r)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplaySpec {
    text: String,
    /// Stage steps of this many tokens (`--tokens-per-step`).
    tokens_per_step: Option<usize>,
    /// A buggy rule of multi-token steps to show beside stoplab's answer ([`StepRule`]).
    contrast: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PromptSpec {
    format: String,
    user_prefix: Option<String>,
    ai_prefix: Option<String>,
    separator: Option<String>,
    messages: Vec<Message>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct StopSpec {
    strings: Vec<String>,
    token_ids: Vec<u32>,
    natural: bool,
    ignore_eos: bool,
    include_stop: bool,
    min_tokens: usize,
    max_tokens: usize,
    repetition: Option<RepetitionStop>,
    /// Which end tokens count: `replace`, `add`, `remove` (token ids).
    end_tokens: EndTokenChoice,
}

impl Default for StopSpec {
    fn default() -> Self {
        Self {
            strings: Vec::new(),
            token_ids: Vec::new(),
            natural: false,
            ignore_eos: false,
            include_stop: false,
            min_tokens: 0,
            max_tokens: 96,
            repetition: None,
            end_tokens: EndTokenChoice::default(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RunsSpec {
    runs: usize,
    seed: u64,
    quick_runs: usize,
    quick_max_tokens: usize,
}

impl Default for RunsSpec {
    fn default() -> Self {
        Self {
            runs: 3,
            seed: 0,
            quick_runs: 1,
            quick_max_tokens: 24,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DoneSpec {
    contains: Vec<String>,
    turn_markers: Option<Vec<String>>,
    #[serde(default = "default_ngram")]
    ngram: usize,
}

fn default_ngram() -> usize {
    4
}

/// A validated scenario, ready to run.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Where it came from (a shipped name or a path).
    pub file: String,
    pub name: String,
    pub title: String,
    pub about: String,
    /// The model the scenario is written for (None: the default model).
    pub model: Option<String>,
    pub format: PromptFormat,
    pub messages: Vec<Message>,
    /// The settings as the file wrote them (checked against a vocabulary by [`Scenario::check`]).
    pub settings: UserSettings,
    pub params: GenerateParams,
    pub runs: usize,
    pub seed: u64,
    pub quick_runs: usize,
    pub quick_max_tokens: usize,
    /// The answer is complete once the generated bytes contain any of these.
    pub done: Vec<String>,
    /// Strings that begin a further turn; counted in the output.
    pub turn_markers: Vec<String>,
    /// Length of the token n-grams counted as repeats.
    pub ngram: usize,
    /// Text the replay model writes instead of the model (`[replay] text`).
    pub replay: Option<String>,
    /// `[replay] tokens_per_step`: the replay is staged in steps of this many tokens.
    pub tokens_per_step: Option<usize>,
    /// `[replay] contrast`: the buggy rule whose answer the report shows beside stoplab's.
    pub contrast: Option<StepRule>,
    /// `[reasoning]`: applied on the model's vocabulary when the scenario runs.
    pub reasoning: ReasoningSpec,
    /// The file's text, for the lines of errors found later (token ids against a vocabulary).
    source: String,
}

/// 1-based line of a byte offset.
fn line_of(src: &str, offset: usize) -> usize {
    src[..offset.min(src.len())].matches('\n').count() + 1
}

/// The dotted key written on `line` (1-based): the last `[table]` header above it and the key before `=`.
fn key_at(src: &str, line: usize) -> Option<String> {
    let lines: Vec<&str> = src.lines().collect();
    let mut section = String::new();
    let mut key = None;
    for (i, l) in lines.iter().enumerate().take(line) {
        let t = l.trim();
        if t.starts_with('[') && !t.starts_with("[[") && t.ends_with(']') {
            section = t.trim_matches(|c| c == '[' || c == ']').trim().to_string();
            key = None;
        } else if let Some((k, _)) = t.split_once('=') {
            let k = k.trim();
            if !k.is_empty()
                && k.chars()
                    .all(|c| c.is_alphanumeric() || c == '_' || c == '-' || c == '.')
            {
                key = Some(k.to_string());
            }
        }
        if i + 1 == line && t.starts_with('[') && key.is_none() {
            return Some(section.clone());
        }
    }
    match (section.is_empty(), key) {
        (true, None) => None,
        (true, Some(k)) => Some(k),
        (false, Some(k)) => Some(format!("{section}.{k}")),
        (false, None) => Some(section),
    }
}

/// One step of a key path in a scenario file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seg {
    Key(&'static str),
    Index(usize),
}

/// The path as a person reads it: `stop.strings[1]`.
fn path_name(path: &[Seg]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) if out.is_empty() => out.push_str(k),
            Seg::Key(k) => {
                out.push('.');
                out.push_str(k);
            }
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// The 1-based line of `path` in the file, from the TOML parser's spans: the line of its key (or array
/// element), else of the nearest part of it that is written (a table header); 0 when none is.
fn line_of_path(src: &str, path: &[Seg]) -> usize {
    let Ok(root) = toml::de::DeTable::parse(src) else {
        return 0;
    };
    let mut line = 0;
    let mut table = Some(root.get_ref());
    let mut value: Option<&toml::de::DeValue<'_>> = None;
    for seg in path {
        let next = match *seg {
            Seg::Key(k) => table
                .and_then(|t| t.get_key_value(k))
                .map(|(key, v)| (key.span().start, v)),
            Seg::Index(i) => value
                .and_then(|v| v.as_array())
                .and_then(|a| a.get(i))
                .map(|v| (v.span().start, v)),
        };
        let Some((at, v)) = next else { break };
        line = line_of(src, at);
        value = Some(v.get_ref());
        table = v.get_ref().as_table();
    }
    line
}

/// A dotted key (`stop.max_tokens`) as a path.
fn dotted(field: &'static str) -> Vec<Seg> {
    field.split('.').map(Seg::Key).collect()
}

/// Where a scenario file writes a setting.
fn settings_path(field: Field, settings: &UserSettings) -> Vec<Seg> {
    use Seg::{Index, Key};
    let key = |section: &'static str, key: &'static str| vec![Key(section), Key(key)];
    match field {
        Field::Prompt => key("prompt", "messages"),
        Field::Format => key("prompt", "format"),
        Field::UserPrefix => key("prompt", "user_prefix"),
        Field::AiPrefix => key("prompt", "ai_prefix"),
        Field::Separator => key("prompt", "separator"),
        Field::NaturalStop => key("stop", "natural"),
        // The natural stop comes after the file's own strings.
        Field::Stop { index } if index >= settings.stops.len() => key("stop", "natural"),
        Field::Stop { index } => vec![Key("stop"), Key("strings"), Index(index)],
        Field::Stops => key("stop", "strings"),
        Field::StopTokenIds { index } => vec![Key("stop"), Key("token_ids"), Index(index)],
        Field::MaxTokens => key("stop", "max_tokens"),
        Field::MinTokens => key("stop", "min_tokens"),
        Field::RepetitionNgram => vec![Key("stop"), Key("repetition"), Key("ngram")],
        Field::RepetitionCount => vec![Key("stop"), Key("repetition"), Key("count")],
        Field::ReasoningMarkers => key("reasoning", "markers"),
        Field::Temperature => key("sampling", "temperature"),
        Field::TopK => key("sampling", "top_k"),
        Field::TopP => key("sampling", "top_p"),
        Field::MinP => key("sampling", "min_p"),
        Field::RepetitionPenalty => key("sampling", "repetition_penalty"),
        Field::FrequencyPenalty => key("sampling", "frequency_penalty"),
        Field::PresencePenalty => key("sampling", "presence_penalty"),
        Field::LogitBias { id } => {
            let mut path = key("sampling", "logit_bias");
            if let Some(i) = settings.sampling.logit_bias.iter().position(|b| b.0 == id) {
                path.push(Index(i));
            }
            path
        }
        Field::Seed => key("sampling", "seed"),
        Field::EndTokens { list, index } => {
            vec![
                Key("stop"),
                Key("end_tokens"),
                Key(list.name()),
                Index(index),
            ]
        }
    }
}

impl Scenario {
    /// Parses and validates a scenario file; errors name the file, the line and the field.
    pub fn parse(file: &str, src: &str) -> Result<Self, ScenarioError> {
        let raw: File = toml::from_str(src).map_err(|e| {
            let line = e.span().map_or(0, |s| line_of(src, s.start));
            let message = e.message().trim().to_string();
            // A missing field has no line of its own and serde names it; otherwise the key is the one
            // written on the line the error points at.
            let field = backticked(&message)
                .filter(|_| message.contains("missing field"))
                .or_else(|| key_at(src, line))
                .or_else(|| backticked(&message))
                .unwrap_or_else(|| "(file)".into());
            ScenarioError {
                file: file.into(),
                line,
                field,
                message,
            }
        })?;
        let bad = |field: &'static str, message: String| ScenarioError {
            file: file.into(),
            line: line_of_path(src, &dotted(field)),
            field: field.into(),
            message,
        };
        let p = &raw.prompt;
        if p.messages.is_empty() {
            return Err(bad("prompt.messages", "holds no messages".into()));
        }
        let settings = UserSettings {
            format: p.format.clone(),
            user_prefix: p.user_prefix.clone(),
            ai_prefix: p.ai_prefix.clone(),
            separator: p.separator.clone(),
            natural_stop: raw.stop.natural,
            stops: raw.stop.strings.clone(),
            stop_token_ids: raw.stop.token_ids.clone(),
            include_stop: raw.stop.include_stop,
            end_token_text: false,
            ignore_eos: raw.stop.ignore_eos,
            min_tokens: raw.stop.min_tokens,
            max_tokens: raw.stop.max_tokens,
            repetition: raw.stop.repetition,
            sampling: raw.sampling.clone(),
            end_tokens: raw.stop.end_tokens.clone(),
        };
        let Settings { format, mut params } = settings
            .validate(None)
            .map_err(|e| settings_error(file, src, &settings, e))?;
        if raw.model.as_deref() == Some("") {
            return Err(bad(
                "model",
                "is empty; name a model from `stoplab fetch --list`, or remove the key for the default model"
                    .into(),
            ));
        }
        if raw.runs.runs == 0 {
            return Err(bad("runs.runs", "must be at least 1".into()));
        }
        if raw.runs.quick_runs == 0 || raw.runs.quick_max_tokens == 0 {
            return Err(bad(
                "runs.quick_runs",
                "quick_runs and quick_max_tokens must be at least 1".into(),
            ));
        }
        if raw.done.contains.is_empty() || raw.done.contains.iter().any(String::is_empty) {
            return Err(bad(
                "done.contains",
                "give at least one non-empty text whose appearance completes the answer".into(),
            ));
        }
        if raw.done.ngram == 0 {
            return Err(bad("done.ngram", "must be at least 1".into()));
        }
        let replay = raw.replay.as_ref();
        let tokens_per_step = replay.and_then(|r| r.tokens_per_step);
        if let Some(k) = tokens_per_step {
            if !(1..=16).contains(&k) {
                return Err(bad(
                    "replay.tokens_per_step",
                    format!("{k} is outside 1..=16 (a step feeds this many positions)"),
                ));
            }
            params.speculation = Some(Speculation::tokens_per_step(k));
        }
        let contrast = match replay.and_then(|r| r.contrast.as_deref()) {
            None => None,
            Some(name) => match StepRule::parse(name) {
                Some(_) if tokens_per_step.unwrap_or(1) < 2 => {
                    return Err(bad(
                        "replay.contrast",
                        "a rule of multi-token steps needs steps of several tokens: set \
                         replay.tokens_per_step to 2 or more"
                            .into(),
                    ));
                }
                Some(rule) => Some(rule),
                None => {
                    return Err(bad(
                        "replay.contrast",
                        format!(
                            "unknown rule {name:?}; the rules are {}",
                            StepRule::ALL.map(StepRule::name).join(", ")
                        ),
                    ));
                }
            },
        };
        let rs = &raw.reasoning;
        if let Err(e) = Reasoning::from_markers(rs.markers.as_deref(), None) {
            return Err(bad("reasoning.markers", e.message));
        }
        if let Some(s) = rs
            .stop_scope
            .as_deref()
            .filter(|s| Scope::parse(s).is_none())
        {
            return Err(bad(
                "reasoning.stop_scope",
                format!("{s:?} is not one of {}", Scope::NAMES.join(", ")),
            ));
        }
        if let Some(e) = rs.end_in_reasoning.as_deref() {
            match EndInReasoning::parse(e) {
                None => {
                    return Err(bad(
                        "reasoning.end_in_reasoning",
                        format!("{e:?} is not one of {}", EndInReasoning::NAMES.join(", ")),
                    ));
                }
                Some(p) if p.needs_sampler() && raw.replay.is_some() => {
                    return Err(bad(
                        "reasoning.end_in_reasoning",
                        format!("{e:?} acts on the sampler's choice, and a replay samples nothing"),
                    ));
                }
                Some(_) => {}
            }
        }
        let turn_markers = raw
            .done
            .turn_markers
            .clone()
            .unwrap_or_else(|| match &format {
                PromptFormat::Transcript { user, .. } => vec![format!("\n{user}")],
                PromptFormat::Separator { separator } => vec![separator.clone()],
                PromptFormat::Chat => vec!["<|im_start|>".into()],
                PromptFormat::Raw => Vec::new(),
            });
        if turn_markers.iter().any(String::is_empty) {
            return Err(bad(
                "done.turn_markers",
                "an empty marker would count everywhere".into(),
            ));
        }
        Ok(Self {
            file: file.into(),
            name: raw.name,
            title: raw.title,
            about: raw.about.trim().to_string(),
            model: raw.model,
            format,
            messages: raw.prompt.messages,
            settings,
            params,
            runs: raw.runs.runs,
            seed: raw.runs.seed,
            quick_runs: raw.runs.quick_runs,
            quick_max_tokens: raw.runs.quick_max_tokens,
            done: raw.done.contains,
            turn_markers,
            ngram: raw.done.ngram,
            replay: raw.replay.map(|r| r.text),
            tokens_per_step,
            contrast,
            reasoning: raw.reasoning.clone(),
            source: src.into(),
        })
    }

    /// Checks the settings against a model's vocabulary (token ids in `stop.token_ids` and
    /// `sampling.logit_bias`); the error names the file, the line and the key, as parsing does.
    pub fn check(&self, vocab_size: usize) -> Result<(), ScenarioError> {
        self.settings
            .validate(Some(vocab_size))
            .map(drop)
            .map_err(|e| settings_error(&self.file, &self.source, &self.settings, e))
    }

    /// Reads and parses a scenario file from disk.
    pub fn load(path: &Path) -> Result<Self, ScenarioError> {
        let src = std::fs::read_to_string(path).map_err(|e| ScenarioError {
            file: path.display().to_string(),
            line: 0,
            field: "(file)".into(),
            message: e.to_string(),
        })?;
        Self::parse(&path.display().to_string(), &src)
    }
}

/// A settings error as a scenario file's user reads it: the file, the line and the key.
fn settings_error(
    file: &str,
    src: &str,
    settings: &UserSettings,
    e: SettingsError,
) -> ScenarioError {
    let path = settings_path(e.field, settings);
    ScenarioError {
        file: file.into(),
        line: line_of_path(src, &path),
        field: path_name(&path),
        message: e.message,
    }
}

fn backticked(s: &str) -> Option<String> {
    let a = s.find('`')?;
    let b = s[a + 1..].find('`')?;
    Some(s[a + 1..a + 1 + b].to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_on_a_line_is_found_with_its_table() {
        let src = "name = \"x\"\n[stop]\nmax_tokens = \"a\"\n";
        assert_eq!(key_at(src, 3).as_deref(), Some("stop.max_tokens"));
        assert_eq!(key_at(src, 1).as_deref(), Some("name"));
        assert_eq!(line_of_path(src, &dotted("stop.max_tokens")), 3);
        assert_eq!(
            line_of_path(src, &dotted("stop.min_tokens")),
            2,
            "the table's header"
        );
        assert_eq!(line_of_path(src, &dotted("runs.runs")), 0);
    }
}
