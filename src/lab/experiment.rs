//! Experiments: the seed's techniques as scenario files, run several times, measured.
//!
//! A scenario (TOML) gives a prompt format and messages, sampling settings, stop settings, how many runs
//! (seeds), and what "done" means: the texts whose appearance completes the answer. Every token generated
//! after that point is *wasted*, the cost the seed complains about; the report also counts run-on turns
//! that reached the output and repeated n-grams. The shipped scenarios are compiled into the library
//! ([`shipped`]), so the binary works anywhere.
//!
//! ```toml
//! name = "transcript-stop"
//! title = "Transcript, stop \"\\nuser:\""
//!
//! [prompt]
//! format = "transcript"            # raw | transcript | separator | chat
//! messages = [
//!   { role = "user", content = "What is the capital of France?" },
//!   { role = "assistant", content = "Paris." },
//!   { role = "user", content = "What is the capital of Germany?" },
//! ]
//!
//! [sampling]                       # as `SamplingParams`; logit_bias = [[2, -inf]]
//! temperature = 0.6
//!
//! [stop]
//! strings = ["\nuser:"]
//! max_tokens = 96
//! # repetition = { ngram = 8, count = 2 }
//!
//! [runs]
//! runs = 3                         # seeds seed, seed+1, ...
//!
//! [done]
//! contains = ["Berlin"]            # the answer is complete once the model has written any of these
//! ```

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::format::{Message, PromptFormat};
use crate::generate::{GenerateParams, RepetitionStop, TokenEvent};
use crate::pipeline::settings::{Field, Settings, SettingsError, UserSettings};
use crate::sampling::SamplingParams;
use crate::{Engine, Error};

/// The scenarios that ship with stoplab: (file name, TOML text).
pub const SHIPPED: &[(&str, &str)] = &[
    (
        "scenarios/1-transcript-nostop.toml",
        include_str!("../../scenarios/1-transcript-nostop.toml"),
    ),
    (
        "scenarios/2-transcript-stop.toml",
        include_str!("../../scenarios/2-transcript-stop.toml"),
    ),
    (
        "scenarios/3a-separator-nostop.toml",
        include_str!("../../scenarios/3a-separator-nostop.toml"),
    ),
    (
        "scenarios/3b-separator-stop.toml",
        include_str!("../../scenarios/3b-separator-stop.toml"),
    ),
    (
        "scenarios/4-chat-end-token.toml",
        include_str!("../../scenarios/4-chat-end-token.toml"),
    ),
    (
        "scenarios/5a-broken-end-token.toml",
        include_str!("../../scenarios/5a-broken-end-token.toml"),
    ),
    (
        "scenarios/5b-broken-end-token-repetition-stop.toml",
        include_str!("../../scenarios/5b-broken-end-token-repetition-stop.toml"),
    ),
    (
        "scenarios/6-remedy-custom-stop.toml",
        include_str!("../../scenarios/6-remedy-custom-stop.toml"),
    ),
    (
        "scenarios/7a-function-call-nostop.toml",
        include_str!("../../scenarios/7a-function-call-nostop.toml"),
    ),
    (
        "scenarios/7b-function-call-stop.toml",
        include_str!("../../scenarios/7b-function-call-stop.toml"),
    ),
];

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
    prompt: PromptSpec,
    #[serde(default)]
    sampling: SamplingParams,
    #[serde(default)]
    stop: StopSpec,
    #[serde(default)]
    runs: RunsSpec,
    done: DoneSpec,
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
            ignore_eos: raw.stop.ignore_eos,
            min_tokens: raw.stop.min_tokens,
            max_tokens: raw.stop.max_tokens,
            repetition: raw.stop.repetition,
            sampling: raw.sampling.clone(),
        };
        let Settings { format, params } = settings
            .validate(None)
            .map_err(|e| settings_error(file, src, &settings, e))?;
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

    /// The settings of run `i` (its seed; in quick mode, fewer tokens).
    pub fn run_params(&self, i: usize, opts: &RunOptions) -> GenerateParams {
        let mut p = self.params.clone();
        p.sampling.seed = self.seed + i as u64;
        if opts.quick {
            p.max_tokens = p.max_tokens.min(self.quick_max_tokens);
        }
        if let Some(r) = opts.repetition {
            p.repetition = Some(r);
        }
        p
    }

    /// How many runs this scenario makes.
    pub fn run_count(&self, opts: &RunOptions) -> usize {
        if opts.quick {
            self.quick_runs.min(self.runs)
        } else {
            self.runs
        }
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

/// All shipped scenarios, parsed.
pub fn shipped() -> Result<Vec<Scenario>, ScenarioError> {
    SHIPPED.iter().map(|(f, s)| Scenario::parse(f, s)).collect()
}

/// How to run.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunOptions {
    /// Fewer runs and tokens (`quick_runs`, `quick_max_tokens`): a smoke test.
    pub quick: bool,
    /// Use this repetition stop in every scenario.
    pub repetition: Option<RepetitionStop>,
}

/// One run of a scenario.
#[derive(Debug, Clone, Serialize)]
pub struct RunResult {
    pub seed: u64,
    /// `FinishReason::kind` and `describe`.
    pub finish: String,
    pub finish_detail: String,
    pub finish_reason: String,
    pub tokens: usize,
    /// Index of the token that completed the answer, if it was written.
    pub answered_at: Option<usize>,
    /// Tokens generated after that one.
    pub wasted: Option<usize>,
    pub run_on_turns: usize,
    pub repeated_ngrams: usize,
    pub decode_ms: f64,
    pub prefill_ms: f64,
    pub text: String,
}

/// A scenario's runs, summarised.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioReport {
    pub name: String,
    pub title: String,
    pub file: String,
    pub about: String,
    pub runs: usize,
    /// Finish kind → number of runs.
    pub finishes: BTreeMap<String, usize>,
    pub tokens_mean: f64,
    pub tokens_max: usize,
    /// Runs in which the answer was written.
    pub answered: usize,
    /// Over answered runs.
    pub wasted_mean: f64,
    pub wasted_max: usize,
    pub run_on_turns_mean: f64,
    pub repeated_ngrams_mean: f64,
    pub ngram: usize,
    pub decode_ms: f64,
    pub decode_tokens_per_s: f64,
    pub results: Vec<RunResult>,
}

/// Counts non-overlapping occurrences of each marker in `text`.
pub fn count_markers(text: &str, markers: &[String]) -> usize {
    markers
        .iter()
        .map(|m| text.matches(m.as_str()).count())
        .sum()
}

/// Token n-grams that repeat an earlier one: all windows minus distinct windows.
pub fn repeated_ngrams(tokens: &[u32], n: usize) -> usize {
    if n == 0 || tokens.len() < n {
        return 0;
    }
    let distinct: std::collections::HashSet<&[u32]> = tokens.windows(n).collect();
    tokens.windows(n).count() - distinct.len()
}

/// Runs one scenario `run_count` times; `on_run` sees each result as it comes.
pub fn run_scenario(
    engine: &mut Engine,
    sc: &Scenario,
    opts: &RunOptions,
    on_run: &mut dyn FnMut(&RunResult),
) -> Result<ScenarioReport, Error> {
    sc.check(engine.vocab.len()).map_err(|e| Error::Invalid {
        field: format!("{}:{}: {}", e.file, e.line, e.field),
        message: e.message,
    })?;
    let (_, prompt) = engine.prompt(&sc.format, &sc.messages)?;
    let longest = sc.done.iter().map(String::len).max().unwrap_or(0);
    let mut results = Vec::new();
    for i in 0..sc.run_count(opts) {
        let params = sc.run_params(i, opts);
        let mut written: Vec<u8> = Vec::new();
        let mut answered_at = None;
        let mut sink = |ev: &TokenEvent<'_>| {
            let from = written.len().saturating_sub(longest.saturating_sub(1));
            written.extend_from_slice(ev.bytes);
            if answered_at.is_none()
                && sc
                    .done
                    .iter()
                    .any(|d| contains(&written[from..], d.as_bytes()))
            {
                answered_at = Some(ev.index);
            }
            ControlFlow::Continue(())
        };
        let outcome = engine.generate(&prompt, None, &params, &mut sink)?;
        let result = RunResult {
            seed: params.sampling.seed,
            finish: outcome.finish.kind().into(),
            finish_detail: outcome.finish.describe(),
            finish_reason: outcome.finish.openai().into(),
            tokens: outcome.tokens.len(),
            answered_at,
            wasted: answered_at.map(|a| outcome.tokens.len() - a - 1),
            run_on_turns: count_markers(&outcome.text, &sc.turn_markers),
            repeated_ngrams: repeated_ngrams(&outcome.tokens, sc.ngram),
            decode_ms: outcome.timings.decode_ms,
            prefill_ms: outcome.timings.prefill_ms,
            text: outcome.text,
        };
        on_run(&result);
        results.push(result);
    }
    Ok(summarise(sc, results))
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn mean(xs: impl Iterator<Item = f64>) -> f64 {
    let (n, sum) = xs.fold((0usize, 0.0), |(n, s), x| (n + 1, s + x));
    if n == 0 { 0.0 } else { sum / n as f64 }
}

/// The summary of a scenario's results.
pub fn summarise(sc: &Scenario, results: Vec<RunResult>) -> ScenarioReport {
    let mut finishes = BTreeMap::new();
    for r in &results {
        *finishes.entry(r.finish.clone()).or_insert(0) += 1;
    }
    let decode_ms: f64 = results.iter().map(|r| r.decode_ms).sum();
    let decode_tokens: usize = results.iter().map(|r| r.tokens.saturating_sub(1)).sum();
    ScenarioReport {
        name: sc.name.clone(),
        title: sc.title.clone(),
        file: sc.file.clone(),
        about: sc.about.clone(),
        runs: results.len(),
        finishes,
        tokens_mean: mean(results.iter().map(|r| r.tokens as f64)),
        tokens_max: results.iter().map(|r| r.tokens).max().unwrap_or(0),
        answered: results.iter().filter(|r| r.answered_at.is_some()).count(),
        wasted_mean: mean(results.iter().filter_map(|r| r.wasted).map(|w| w as f64)),
        wasted_max: results.iter().filter_map(|r| r.wasted).max().unwrap_or(0),
        run_on_turns_mean: mean(results.iter().map(|r| r.run_on_turns as f64)),
        repeated_ngrams_mean: mean(results.iter().map(|r| r.repeated_ngrams as f64)),
        ngram: sc.ngram,
        decode_ms,
        decode_tokens_per_s: if decode_ms > 0.0 {
            decode_tokens as f64 * 1e3 / decode_ms
        } else {
            0.0
        },
        results,
    }
}

fn finishes_label(r: &ScenarioReport) -> String {
    r.finishes
        .iter()
        .map(|(k, n)| format!("{k}×{n}"))
        .collect::<Vec<_>>()
        .join(" ")
}

const COLUMNS: [&str; 9] = [
    "scenario",
    "runs",
    "finish",
    "tokens mean/max",
    "answered",
    "wasted mean/max",
    "run-on turns",
    "repeated n-grams",
    "decode s (tok/s)",
];

fn cells(r: &ScenarioReport) -> [String; 9] {
    [
        r.name.clone(),
        r.runs.to_string(),
        finishes_label(r),
        format!("{:.1} / {}", r.tokens_mean, r.tokens_max),
        format!("{}/{}", r.answered, r.runs),
        if r.answered > 0 {
            format!("{:.1} / {}", r.wasted_mean, r.wasted_max)
        } else {
            "-".into()
        },
        format!("{:.1}", r.run_on_turns_mean),
        format!("{:.1} ({}-grams)", r.repeated_ngrams_mean, r.ngram),
        format!("{:.1} ({:.0})", r.decode_ms / 1e3, r.decode_tokens_per_s),
    ]
}

/// The terminal table.
pub fn table(reports: &[ScenarioReport]) -> String {
    let rows: Vec<[String; 9]> = reports.iter().map(cells).collect();
    let mut width = COLUMNS.map(|c| c.chars().count());
    for r in &rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: &[String]| {
        cells
            .iter()
            .zip(&width)
            .enumerate()
            .map(|(i, (c, &w))| {
                let pad = " ".repeat(w - c.chars().count());
                if i == 0 || i == 2 {
                    format!("{c}{pad}")
                } else {
                    format!("{pad}{c}")
                }
            })
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    let mut out = line(&COLUMNS.map(String::from));
    out.push('\n');
    for r in &rows {
        out.push_str(&line(r));
        out.push('\n');
    }
    out
}

/// The JSON of `stoplab experiment --json`.
pub fn to_json(reports: &[ScenarioReport], opts: &RunOptions, wall_s: f64) -> serde_json::Value {
    serde_json::json!({
        "quick": opts.quick,
        "repetition_override": opts.repetition,
        "wall_s": wall_s,
        "scenarios": reports,
    })
}

fn md_escape(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', "\\n")
}

/// The Markdown report: the table, then each scenario with its settings and a sample output.
pub fn markdown(reports: &[ScenarioReport], scenarios: &[Scenario], header: &str) -> String {
    let mut out = String::from("# stoplab experiment\n\n");
    if !header.is_empty() {
        out.push_str(header);
        out.push_str("\n\n");
    }
    out.push_str("Wasted tokens: tokens generated after the answer was complete (`done.contains`), over the runs that wrote the answer.\n\n");
    out.push_str("![wasted tokens per scenario](wasted.svg)\n\n");
    out.push_str(&format!("| {} |\n", COLUMNS.join(" | ")));
    out.push_str(&format!("|{}\n", "---|".repeat(COLUMNS.len())));
    for r in reports {
        let c = cells(r).map(|c| md_escape(&c));
        out.push_str(&format!("| {} |\n", c.join(" | ")));
    }
    for r in reports {
        out.push_str(&format!("\n## {}: {}\n\n", r.name, r.title));
        if !r.about.is_empty() {
            out.push_str(&r.about);
            out.push_str("\n\n");
        }
        if let Some(sc) = scenarios.iter().find(|s| s.name == r.name) {
            let p = &sc.params;
            out.push_str(&format!(
                "- file `{}`; format `{}`; stops {:?}; max_tokens {}; temperature {}; logit_bias {:?}; repetition stop {}\n",
                sc.file,
                sc.format.name(),
                p.stops.stops(),
                p.max_tokens,
                p.sampling.temperature,
                p.sampling.logit_bias,
                p.repetition
                    .map_or("off".to_string(), |r| format!("ngram {} count {}", r.ngram, r.count)),
            ));
            out.push_str(&format!(
                "- done when the model has written any of {:?}\n",
                sc.done
            ));
        }
        if let Some(first) = r.results.first() {
            let text: String = first.text.chars().take(400).collect();
            let more = if first.text.chars().count() > 400 {
                "…"
            } else {
                ""
            };
            out.push_str(&format!(
                "\nRun 1 (seed {}): {}; {} tokens; answer complete at token {}.\n\n```text\n{}{more}\n```\n",
                first.seed,
                first.finish_detail,
                first.tokens,
                first.answered_at.map_or("-".to_string(), |a| a.to_string()),
                text.replace("```", "`\u{200b}``"),
            ));
        }
    }
    out
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A horizontal bar chart: mean generated tokens (grey) and mean wasted tokens (red) per scenario.
pub fn svg_chart(reports: &[ScenarioReport]) -> String {
    let (left, bar_w, row_h, top) = (300.0, 420.0, 30.0, 40.0);
    let width = left + bar_w + 120.0;
    let height = top + row_h * reports.len() as f64 + 40.0;
    let max = reports
        .iter()
        .map(|r| r.tokens_mean.max(r.wasted_mean))
        .fold(1.0, f64::max);
    let scale = bar_w / max;
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" \
         viewBox=\"0 0 {width} {height}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <title>Wasted tokens per scenario</title>\n\
         <rect x=\"0\" y=\"0\" width=\"{width}\" height=\"{height}\" fill=\"white\"/>\n\
         <text x=\"10\" y=\"20\" font-size=\"14\" font-weight=\"bold\">Tokens per run: generated (grey) and wasted after the answer (red)</text>\n"
    );
    for (i, r) in reports.iter().enumerate() {
        let y = top + row_h * i as f64;
        let gen_w = r.tokens_mean * scale;
        let waste_w = r.wasted_mean * scale;
        out.push_str(&format!(
            "<g>\n<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>\n\
             <rect x=\"{left}\" y=\"{}\" width=\"{gen_w:.1}\" height=\"10\" fill=\"#bbbbbb\"/>\n\
             <rect x=\"{left}\" y=\"{}\" width=\"{waste_w:.1}\" height=\"10\" fill=\"#d62728\"/>\n\
             <text x=\"{:.1}\" y=\"{}\">{:.1} / {:.1}</text>\n</g>\n",
            left - 8.0,
            y + 14.0,
            xml_escape(&r.name),
            y + 2.0,
            y + 13.0,
            left + gen_w.max(waste_w) + 6.0,
            y + 14.0,
            r.wasted_mean,
            r.tokens_mean,
        ));
    }
    out.push_str(&format!(
        "<text x=\"{left}\" y=\"{}\" fill=\"#555555\">labels: wasted / generated, mean over runs</text>\n</svg>\n",
        height - 12.0
    ));
    out
}

/// Writes `report.md`, `wasted.svg` and `report.json` into `dir`.
pub fn write_report(
    dir: &Path,
    reports: &[ScenarioReport],
    scenarios: &[Scenario],
    json: &serde_json::Value,
    header: &str,
) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("report.md"), markdown(reports, scenarios, header))?;
    std::fs::write(dir.join("wasted.svg"), svg_chart(reports))?;
    std::fs::write(
        dir.join("report.json"),
        serde_json::to_string_pretty(json).expect("JSON values serialise"),
    )?;
    Ok(())
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

    #[test]
    fn repeated_ngrams_count_repeats_not_distinct() {
        assert_eq!(repeated_ngrams(&[1, 2, 1, 2, 1, 2], 2), 3);
        assert_eq!(repeated_ngrams(&[1, 2, 3], 2), 0);
    }
}
