//! A trace: one row per generated token, as the stop machinery saw it.
//!
//! A [`Tracer`] is a [`Sink`]: put it where the CLI would put stdout and it records, for each token, its id and
//! bytes, whether its id is an end token, the bytes the stop engine holds back after it (and the prefix of which
//! stop they are), the text it released, and on the last row the event that ended the generation together with
//! the bytes that were generated but never released (a matched stop string, cut).
//!
//! ```
//! use stoplab::pipeline::stop::StopSet;
//! use stoplab::lab::trace::escape;
//!
//! assert_eq!(escape(b"\nuser:"), r"\nuser:");
//! assert_eq!(escape(&[0xE2, 0x82]), r"\xe2\x82"); // half a character
//! let stops = StopSet::new(["\nuser:"]).unwrap();
//! let held = stoplab::lab::trace::held_for(b"\nuser", stops.stops()).unwrap();
//! assert_eq!((held.bytes, held.of), (5, 6));
//! ```

use crate::pipeline::sink::Forced;
use crate::pipeline::stop::engine::Marker;
use std::ops::ControlFlow;

use serde_json::{Value, json};

use crate::Error;
use crate::pipeline::settings::GenerateParams;
use crate::pipeline::sink::{Sink, StepReport, Token, TokenEvent};
use crate::pipeline::stop::FinishReason;
pub use crate::pipeline::stop::{HeldFor, held_for};
use crate::pipeline::tokenizer::Vocab;

/// Bytes as a reader can see them: printable text as is, `\n` `\t` `\r` `\\` `\"` escaped, other control
/// characters as `\u{..}`, and bytes that are not (yet) valid UTF-8 as `\xNN`.
pub fn escape(bytes: &[u8]) -> String {
    let mut out = String::new();
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\n' => out.push_str("\\n"),
                '\t' => out.push_str("\\t"),
                '\r' => out.push_str("\\r"),
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// The end tokens that were in force, as one line: each id with its text, and what the user's choice
/// (`--end-token`, `--add-end-token`, `--no-end-token`, `--ignore-eos`) changed in the model's set.
pub fn end_set_line(vocab: &Vocab, params: &GenerateParams) -> String {
    let name = |id: u32| format!("{id} {}", escape(vocab.token_bytes(id).unwrap_or_default()));
    let list = |ids: &mut dyn Iterator<Item = u32>| {
        let v: Vec<String> = ids.map(name).collect();
        if v.is_empty() {
            "none".to_string()
        } else {
            v.join(", ")
        }
    };
    let model = vocab.end_tokens();
    let in_force = params.end_set(model);
    let mut changes = Vec::new();
    if params.end_tokens.replace.is_some() {
        changes.push(format!(
            "replacing the model's {{{}}}",
            list(&mut model.iter().copied())
        ));
    }
    let added: Vec<u32> = in_force.difference(model).copied().collect();
    let removed: Vec<u32> = model.difference(&in_force).copied().collect();
    if params.end_tokens.replace.is_none() {
        if !added.is_empty() {
            changes.push(format!("added {}", list(&mut added.into_iter())));
        }
        if !removed.is_empty() {
            changes.push(format!("removed {}", list(&mut removed.into_iter())));
        }
    }
    let how = if changes.is_empty() {
        "the model's set".to_string()
    } else {
        changes.join("; ")
    };
    if params.ignore_eos {
        format!(
            "end tokens in force: none (--ignore-eos; the set would be {{{}}}, {how})",
            list(&mut in_force.into_iter())
        )
    } else {
        format!(
            "end tokens in force: {{{}}} ({how})",
            list(&mut in_force.into_iter())
        )
    }
}

/// The token as shown: quoted escaped text, or a special token's name unquoted.
pub fn label(row: &Token) -> String {
    if row.special {
        String::from_utf8_lossy(&row.bytes).into_owned()
    } else {
        format!("\"{}\"", escape(&row.bytes))
    }
}

/// One JSON line of `stoplab trace --jsonl` (the released text's key is `emitted`, as it always was).
pub fn row_json(row: &Token) -> Value {
    let mut json = json!({
        "index": row.index,
        "id": row.id,
        "token": String::from_utf8_lossy(&row.bytes),
        "special": row.special,
        "end_token": row.end_token,
        "held": String::from_utf8_lossy(&row.held),
        "held_for": row.held_for.as_ref().map(|h| json!({
            "stop": h.stop, "index": h.index, "bytes": h.bytes, "of": h.of,
        })),
        "emitted": row.text,
        "carries": row.carried.clone().collect::<Vec<_>>(),
        "spells": row.spelled,
        "reasoning": row.reasoning,
        "marker": row.marker.map(|m| match m {
            Marker::Opened => "opened",
            Marker::Closed => "closed",
            Marker::ClosedAgain => "closed_again",
        }),
        "forced": row.forced.map(|f| match f {
            Forced::EndInReasoning { p_end } => json!({"why": "end_in_reasoning", "p_end": p_end}),
            Forced::Budget { tokens } => json!({"why": "budget", "tokens": tokens}),
            Forced::EndMasked { p_end, after_close } => json!({
                "why": if after_close { "end_banned_after_close" } else { "end_masked_in_reasoning" },
                "p_end": p_end,
            }),
        }),
        "p_end": row.probs.as_ref().map(|p| p.end),
        "p": row.probs.as_ref().map(|p| p.chosen),
        "top": row.probs.as_ref().map(|p| p.top.iter().map(|&(id, p)| json!({"id": id, "p": p})).collect::<Vec<_>>()),
        "finish": row.finish.as_ref().map(|f| json!({
            "finish_reason": f.openai(),
            "stop_reason": f.stop_reason(),
            "kind": f.kind(),
            "describe": f.describe(),
            "cut": String::from_utf8_lossy(row.cut_bytes()),
            "stop_began_at": row.cut.as_ref().map(|c| c.began_at),
            "withheld": row.withheld.clone().collect::<Vec<_>>(),
        })),
    });
    if std::str::from_utf8(&row.bytes).is_err() {
        json["token_hex"] = row
            .bytes
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
            .into();
    }
    json
}

type OnRow<'a> = Box<dyn FnMut(&Token) -> ControlFlow<()> + 'a>;
type OnStep<'a> = Box<dyn FnMut(&StepReport) + 'a>;

/// A sink that records a [`Token`] per token and hands each to `on_row` as soon as it is complete.
pub struct Tracer<'a> {
    special: Box<dyn Fn(u32) -> bool + 'a>,
    on_row: OnRow<'a>,
    on_step: Option<OnStep<'a>>,
    pub rows: Vec<Token>,
}

impl<'a> Tracer<'a> {
    /// `is_special` tells special tokens apart (`|id| vocab.is_special(id)`); `on_row` sees each row.
    pub fn new(
        is_special: impl Fn(u32) -> bool + 'a,
        on_row: impl FnMut(&Token) -> ControlFlow<()> + 'a,
    ) -> Self {
        Self {
            special: Box::new(is_special),
            on_row: Box::new(on_row),
            on_step: None,
            rows: Vec::new(),
        }
    }

    /// Also shows each step of speculative decoding, after its rows.
    pub fn with_steps(mut self, on_step: impl FnMut(&StepReport) + 'a) -> Self {
        self.on_step = Some(Box::new(on_step));
        self
    }
}

impl Sink for Tracer<'_> {
    fn token(&mut self, ev: &TokenEvent<'_>) -> Result<ControlFlow<()>, Error> {
        let row = ev.to_token((self.special)(ev.id));
        let flow = (self.on_row)(&row);
        self.rows.push(row);
        Ok(flow)
    }

    fn wants_probs(&self) -> bool {
        true
    }

    fn step(&mut self, report: &StepReport) -> Result<(), Error> {
        if let Some(f) = &mut self.on_step {
            f(report);
        }
        Ok(())
    }
}

/// A step of speculative decoding as `trace` prints it under its rows: what was drafted, how much the
/// model's draws accepted, the rejected rest, and what the finish discarded.
pub fn render_step(r: &StepReport, vocab: &Vocab) -> String {
    let list = |ids: &[u32]| {
        let t: Vec<String> = ids.iter().map(|&id| token_shown(vocab, id)).collect();
        format!("[{}]", t.join(" "))
    };
    if r.drafted.is_empty() {
        return format!("   step {}: no draft (one token)", r.index);
    }
    let mut s = format!(
        "   step {}: drafted {} {}: {} accepted",
        r.index,
        r.drafted.len(),
        list(&r.drafted),
        r.accepted
    );
    let rejected = r.rejected();
    if !rejected.is_empty() {
        s.push_str(&format!(", rejected {}", list(rejected)));
    }
    if !r.discarded.is_empty() {
        s.push_str(&format!(
            ", discarded after the finish {} (never in the output, the ids or usage)",
            list(&r.discarded)
        ));
    }
    s
}

/// A step as `trace --jsonl` writes it (a line of its own after the step's rows).
pub fn step_json(r: &StepReport) -> Value {
    json!({
        "step": r.index,
        "drafted": r.drafted,
        "accepted": r.accepted,
        "rejected": r.rejected(),
        "discarded": r.discarded,
    })
}

fn token_shown(vocab: &Vocab, id: u32) -> String {
    let bytes = vocab.token_bytes(id).unwrap_or_default();
    if vocab.is_special(id) {
        String::from_utf8_lossy(bytes).into_owned()
    } else {
        format!("\"{}\"", escape(bytes))
    }
}

/// ANSI colours for a terminal; [`Style::PLAIN`] when piped.
#[derive(Debug, Clone, Copy)]
pub struct Style {
    pub color: bool,
}

impl Style {
    pub const PLAIN: Self = Self { color: false };

    fn paint(&self, code: &str, s: &str) -> String {
        if self.color && !s.trim().is_empty() {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    }
}

fn pad(s: &str, width: usize) -> String {
    let n = s.chars().count();
    format!("{s}{}", " ".repeat(width.saturating_sub(n)))
}

/// The header line of the trace table.
pub fn header(style: Style) -> String {
    let h = format!(
        "{:>4} {:>6}  {}  {}  {:>6}  {}  {}  {}",
        "#",
        "id",
        pad("token", 16),
        "end",
        "p(end)",
        pad("held back (prefix of stop)", 32),
        pad("emitted", 16),
        "event"
    );
    style.paint("1", &h)
}

/// One row of the trace table: padding first, colour after, so columns line up either way.
pub fn render_row(row: &Token, style: Style) -> String {
    let token = pad(&label(row), 16);
    let token = if row.special {
        style.paint("36", &token)
    } else {
        token
    };
    let end = if row.end_token {
        style.paint("31;1", "END")
    } else {
        "   ".into()
    };
    let held = if row.held.is_empty() {
        String::new()
    } else {
        let what = match &row.held_for {
            Some(h) => format!("{}/{} of \"{}\"", h.bytes, h.of, escape(h.stop.as_bytes())),
            None => "unfinished character".into(),
        };
        format!("\"{}\" {what}", escape(&row.held))
    };
    let held = style.paint("33", &pad(&held, 32));
    let emitted = if row.text.is_empty() {
        pad("", 16)
    } else {
        style.paint(
            "32",
            &pad(&format!("\"{}\"", escape(row.text.as_bytes())), 16),
        )
    };
    let forced = match row.forced {
        Some(Forced::EndInReasoning { p_end }) => format!(
            "the model chose an end token (p(end) {}) inside the reasoning: the close marker is written instead; ",
            percent(p_end)
        ),
        Some(Forced::Budget { tokens }) => {
            format!("reasoning budget of {tokens} tokens spent: the close marker is written; ")
        }
        Some(Forced::EndMasked { p_end, after_close }) => format!(
            "the model's top choice was an end token (p(end) {}), kept out {}; ",
            percent(p_end),
            if after_close {
                "just after the close marker (ban-after-close)"
            } else {
                "inside the reasoning (mask)"
            }
        ),
        None => String::new(),
    };
    let marker = match row.marker {
        Some(Marker::Opened) => "reasoning begins",
        Some(Marker::Closed) => "reasoning ends: the answer begins",
        Some(Marker::ClosedAgain) => "a close marker in the answer (the reasoning was not open)",
        None => "",
    };
    let marker = format!("{forced}{marker}");
    let marker = marker.trim_end_matches("; ");
    let event = match &row.finish {
        None => style.paint("34", marker),
        Some(f) => {
            let mut s = format!("{} → finish_reason {}", f.describe(), f.openai());
            if !row.cut_bytes().is_empty() {
                s.push_str(&format!("; cut \"{}\"", escape(row.cut_bytes())));
            }
            if row.reasoning == Some(true) {
                s.push_str(" (inside the reasoning: no answer written)");
            }
            style.paint("35;1", &s)
        }
    };
    let p_end = row
        .probs
        .as_ref()
        .map_or_else(|| "-".to_string(), |p| percent(p.end));
    format!(
        "{:>4} {:>6}  {token}  {end}  {p_end:>6}  {held}  {emitted}  {event}",
        row.index, row.id
    )
    .trim_end()
    .to_string()
}

/// A probability as a short percentage: "31%", "2.4%", "0.07%", "<0.01%".
pub fn percent(p: f32) -> String {
    let x = f64::from(p) * 100.0;
    if x >= 9.95 {
        format!("{x:.0}%")
    } else if x >= 0.995 {
        format!("{x:.1}%")
    } else if x >= 0.01 {
        format!("{x:.2}%")
    } else {
        "<0.01%".into()
    }
}

/// A few sentences that say what the table shows, for someone seeing a trace for the first time.
pub fn explain(rows: &[Token]) -> Vec<String> {
    let Some(last) = rows.last() else {
        return Vec::new();
    };
    let output: String = rows.iter().map(|r| r.text.as_str()).collect();
    let reached = rows.iter().filter(|r| !r.text.is_empty()).count();
    let mut lines = vec![format!(
        "output: \"{}\" ({} tokens generated; {reached} of them released text)",
        escape(output.as_bytes()),
        rows.len()
    )];
    let Some(finish) = &last.finish else {
        return lines;
    };
    match finish {
        FinishReason::StopString { stop, .. } => {
            let began = last.cut.as_ref().map_or(last.index, |c| c.began_at);
            let span = last.index - began + 1;
            let label = |i: usize| rows.get(i).map_or(String::new(), label);
            lines.push(format!(
                "stop \"{}\" began in token {began} ({}) and was complete in token {} ({}), {span} token{} \
                 to write it: a stop is matched on bytes, so it is found the moment its last byte is generated, \
                 whatever tokens carry it.",
                escape(stop.as_bytes()),
                label(began),
                last.index,
                label(last.index),
                if span == 1 { "" } else { "s" }
            ));
            lines.push(format!(
                "from token {began} on, the bytes that could begin the stop were held back instead of emitted; \
                 the match cut them (\"{}\"), so none of the stop reached the output.",
                escape(last.cut_bytes())
            ));
        }
        FinishReason::EndToken { id } => lines.push(format!(
            "token {} (id {id}) is one of the model's end tokens: the generation ended on its id, before any \
             text, so its name is not in the output.",
            last.index
        )),
        FinishReason::StopToken { id } => lines.push(format!(
            "token {} (id {id}) is a stop token id: the generation ended on its id.",
            last.index
        )),
        FinishReason::Repetition { ngram, first, .. } => lines.push(format!(
            "tokens {}–{} repeat tokens {first}–{}: the repetition stop ended a loop the model would have \
             continued to max_tokens (OpenAI clients see finish_reason \"stop\", stop_reason \"repetition\").",
            (last.index + 1).saturating_sub(*ngram),
            last.index,
            first + ngram - 1
        )),
        FinishReason::Length | FinishReason::ContextFull => lines.push(
            "nothing stopped the model: it was cut off by the token limit, mid-thought (finish_reason \"length\")."
                .into(),
        ),
        FinishReason::Cancelled => lines.push("the reader went away.".into()),
    }
    let peak = rows
        .iter()
        .filter_map(|r| r.probs.as_ref().map(|p| (r.index, p.end)))
        .max_by(|a, b| a.1.total_cmp(&b.1));
    if let Some((at, p)) = peak {
        lines.push(format!(
            "p(end) is the probability the model gave its end tokens at each step: it peaked at {} at token {at}.",
            percent(p)
        ));
    }
    lines
}
