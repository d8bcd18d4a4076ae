//! How a model ends its answers: held-out questions and function-call prompts, generated greedily.
//!
//! Per model the report gives the share of answers that end by themselves (the end token), that end on the
//! custom stop sequence (the stop string matched, or the text ends with it before the end token), that run to
//! `max_tokens`, that repeat themselves (an 8-token run occurring twice), that still show the sequence in the
//! returned text; the wasted tokens (the whole output of runs that hit `max_tokens`, plus the stop-sequence
//! tokens cut from stopped runs); and the accuracy (an accepted answer appears as a whole word in the returned
//! text; for a function-call prompt, the right function's name).
//!
//! An evaluation file is JSONL: `{"messages": [...], "answers": ["Paris"], "kind": "question"}` or
//! `"kind": "function_call"`, with `functions`/`tools` as in the training data; the messages stop where the
//! assistant's turn begins.

use std::collections::HashSet;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::data::{ChatMessage, Conversation};
use crate::pipeline::format::{Message, PromptFormat};
use crate::pipeline::settings::GenerateParams;
use crate::pipeline::sink::Discard;
use crate::pipeline::stop::FinishReason;
use crate::{Error, LoadedModel};

/// One held-out prompt.
#[derive(Debug, Clone)]
pub struct EvalItem {
    pub messages: Vec<Message>,
    pub answers: Vec<String>,
    pub function_call: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EvalLine {
    messages: Vec<ChatMessage>,
    #[serde(default)]
    functions: Option<Vec<serde_json::Value>>,
    #[serde(default)]
    tools: Option<Vec<serde_json::Value>>,
    answers: Vec<String>,
    #[serde(default)]
    kind: Option<String>,
}

/// Reads an evaluation file; errors name the file and line.
pub fn read_items(path: &Path) -> Result<Vec<EvalItem>, Error> {
    let source = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| Error::Invalid {
        field: source.clone(),
        message: format!("cannot read: {e}"),
    })?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let what = format!("{source} line {}", n + 1);
        let bad = |message: String| Error::Invalid {
            field: what.clone(),
            message,
        };
        let l: EvalLine = serde_json::from_str(line).map_err(|e| {
            bad(format!(
                "{e}; expected {{\"messages\": [...], \"answers\": [...], \"kind\": \"question\"}}"
            ))
        })?;
        let function_call = match l.kind.as_deref() {
            None | Some("question") => false,
            Some("function_call") => true,
            Some(k) => return Err(bad(format!("unknown kind {k:?} (question, function_call)"))),
        };
        let conv = Conversation {
            messages: l.messages,
            functions: l.functions,
            tools: l.tools,
            parallel_tool_calls: None,
        };
        if conv.messages.is_empty() {
            return Err(bad("holds no messages".into()));
        }
        out.push(EvalItem {
            messages: conv
                .template_messages(None)
                .into_iter()
                .map(|(m, _)| m)
                .collect(),
            answers: l.answers,
            function_call,
        });
    }
    if out.is_empty() {
        return Err(Error::Invalid {
            field: source,
            message: "holds no evaluation prompts".into(),
        });
    }
    Ok(out)
}

/// How one prompt was answered.
#[derive(Debug, Clone, Serialize)]
pub struct ItemResult {
    pub text: String,
    pub finish: String,
    pub tokens: usize,
    pub function_call: bool,
    pub ended_by_itself: bool,
    pub hit_max: bool,
    pub ended_on_marker: bool,
    pub shows_marker: bool,
    pub repeats: bool,
    pub wasted: usize,
    pub correct: bool,
}

/// Whether some `n`-token run occurs twice.
pub fn repeats(tokens: &[u32], n: usize) -> bool {
    let mut seen = HashSet::new();
    tokens.windows(n).any(|w| !seen.insert(w))
}

/// Whether `word` occurs in `text` (case-insensitive) with no letter or digit right before or after it.
pub fn contains_word(text: &str, word: &str) -> bool {
    let (text, word) = (text.to_lowercase(), word.to_lowercase());
    if word.is_empty() {
        return false;
    }
    text.match_indices(&word).any(|(i, _)| {
        let before = text[..i].chars().next_back();
        let after = text[i + word.len()..].chars().next();
        !before.is_some_and(char::is_alphanumeric) && !after.is_some_and(char::is_alphanumeric)
    })
}

/// Generates an answer for every item with `params` and judges it; `marker` is the custom stop sequence.
pub fn run_items(
    engine: &mut LoadedModel,
    items: &[EvalItem],
    params: &GenerateParams,
    marker: &str,
    mut progress: impl FnMut(usize, &ItemResult),
) -> Result<Vec<ItemResult>, Error> {
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let (_, prompt) = engine.prompt(&PromptFormat::Chat, &item.messages)?;
        let o = engine.generate(&prompt, None, params, &mut Discard)?;
        let ended_by_itself = matches!(o.finish, FinishReason::EndToken { .. });
        let hit_max = matches!(o.finish, FinishReason::Length | FinishReason::ContextFull);
        let on_stop = matches!(&o.finish, FinishReason::StopString { stop, .. } if stop == marker);
        let ended_on_marker = on_stop || (ended_by_itself && o.text.trim_end().ends_with(marker));
        let wasted = if hit_max {
            o.tokens.len()
        } else if on_stop {
            // The tokens that wrote nothing but the cut stop.
            o.cut.as_ref().map_or(0, |c| c.tokens)
        } else {
            0
        };
        let r = ItemResult {
            correct: item.answers.iter().any(|a| contains_word(&o.text, a)),
            shows_marker: o.text.contains(marker),
            repeats: repeats(&o.tokens, 8),
            text: o.text,
            finish: o.finish.describe(),
            tokens: o.tokens.len(),
            function_call: item.function_call,
            ended_by_itself,
            hit_max,
            ended_on_marker,
            wasted,
        };
        progress(i, &r);
        out.push(r);
    }
    Ok(out)
}

/// Shares over one kind of prompt (questions or function calls).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Shares {
    pub n: usize,
    pub ended_by_itself: f64,
    pub ended_on_marker: f64,
    pub hit_max: f64,
    pub repeats: f64,
    /// Ran to max_tokens or repeated: the seed's symptom.
    pub runaway: f64,
    pub shows_marker: f64,
    pub accuracy: f64,
    pub wasted_tokens: usize,
    pub mean_tokens: f64,
}

impl Shares {
    pub fn of(results: &[&ItemResult]) -> Self {
        let n = results.len();
        if n == 0 {
            return Self::default();
        }
        let share = |f: &dyn Fn(&ItemResult) -> bool| {
            results.iter().filter(|r| f(r)).count() as f64 / n as f64
        };
        Self {
            n,
            ended_by_itself: share(&|r| r.ended_by_itself),
            ended_on_marker: share(&|r| r.ended_on_marker),
            hit_max: share(&|r| r.hit_max),
            repeats: share(&|r| r.repeats),
            runaway: share(&|r| r.hit_max || r.repeats),
            shows_marker: share(&|r| r.shows_marker),
            accuracy: share(&|r| r.correct),
            wasted_tokens: results.iter().map(|r| r.wasted).sum(),
            mean_tokens: results.iter().map(|r| r.tokens).sum::<usize>() as f64 / n as f64,
        }
    }
}

/// One model's report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub label: String,
    pub stops: Vec<String>,
    pub questions: Shares,
    pub function_calls: Shares,
    pub items: Vec<ItemResult>,
}

impl Report {
    pub fn new(label: &str, stops: Vec<String>, items: Vec<ItemResult>) -> Self {
        let q: Vec<&ItemResult> = items.iter().filter(|r| !r.function_call).collect();
        let f: Vec<&ItemResult> = items.iter().filter(|r| r.function_call).collect();
        Self {
            label: label.into(),
            stops,
            questions: Shares::of(&q),
            function_calls: Shares::of(&f),
            items,
        }
    }
}

/// A Markdown table of reports, one row per model and kind of prompt.
pub fn table(reports: &[Report], marker: &str) -> String {
    let mut s = format!(
        "| model | stop | prompts | end token | ends on {marker:?} | max_tokens | repeats | shows {marker:?} | \
         accuracy | wasted tokens | mean tokens |\n|---|---|---|---|---|---|---|---|---|---|---|\n"
    );
    let pct = |x: f64| format!("{:.0}%", x * 100.0);
    for r in reports {
        for (kind, sh) in [
            ("questions", &r.questions),
            ("function calls", &r.function_calls),
        ] {
            if sh.n == 0 {
                continue;
            }
            s.push_str(&format!(
                "| {} | {} | {} {kind} | {} | {} | {} | {} | {} | {} | {} | {:.1} |\n",
                r.label,
                if r.stops.is_empty() {
                    "none".to_string()
                } else {
                    format!("{:?}", r.stops)
                },
                sh.n,
                pct(sh.ended_by_itself),
                pct(sh.ended_on_marker),
                pct(sh.hit_max),
                pct(sh.repeats),
                pct(sh.shows_marker),
                pct(sh.accuracy),
                sh.wasted_tokens,
                sh.mean_tokens,
            ));
        }
    }
    s
}
