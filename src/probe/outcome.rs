//! What a probe finds ([`Outcome`]) and the small helpers the probes share: the stock outcomes, where a
//! stop may be drawn from the baseline text, and how text is quoted in a report. The ground floor of
//! `probes.rs` (the classic stop probes) and `ledger.rs` (the stream ledger's).

use serde_json::{Value, json};

use super::{Baseline, Verdict};
use crate::lab::trace::escape;

/// What one probe found.
pub(super) struct Outcome {
    pub(super) verdict: Verdict,
    pub(super) sent: Value,
    pub(super) got: String,
    pub(super) expected: String,
    pub(super) note: String,
}

impl Outcome {
    /// The server refused the request: it lacks what the probe tests.
    pub(super) fn refused(sent: Value, status: u16, body: &str) -> Self {
        Self::unsupported(
            sent,
            format!("refused ({status}): {}", crate::client::clip(body)),
        )
    }

    /// The request got no answer at all.
    pub(super) fn no_answer(sent: Value, e: String) -> Self {
        Self {
            verdict: Verdict::Fail,
            sent,
            got: e,
            expected: String::new(),
            note: "no answer".into(),
        }
    }

    pub(super) fn unsupported(sent: Value, note: impl Into<String>) -> Self {
        Self {
            verdict: Verdict::Unsupported,
            sent,
            got: String::new(),
            expected: String::new(),
            note: note.into(),
        }
    }
}

/// Char boundaries of `s`, end included.
pub(super) fn bounds(s: &str) -> Vec<usize> {
    s.char_indices()
        .map(|(i, _)| i)
        .chain(std::iter::once(s.len()))
        .collect()
}

/// `stop` first occurs in `text` at `at`, so the probe tests what it says.
pub(super) fn first_at(text: &str, stop: &str, at: usize) -> bool {
    !stop.is_empty() && text.find(stop) == Some(at)
}

/// A text quoted as `trace` quotes it.
pub(super) fn show(s: &str) -> String {
    format!("\"{}\"", escape(s.as_bytes()))
}

/// A probe the baseline text gives nothing to test: n/a, with why.
pub(super) fn no_stop(note: &str) -> Outcome {
    Outcome {
        verdict: Verdict::NotApplicable,
        sent: json!({}),
        got: String::new(),
        expected: String::new(),
        note: format!("the greedy output gave no place for this probe: {note}"),
    }
}

/// (piece index, start, end) of every piece, by byte offsets in the baseline text.
pub(super) fn spans(b: &Baseline) -> impl Iterator<Item = (usize, usize, usize)> + '_ {
    b.pieces
        .iter()
        .enumerate()
        .map(|(i, p)| (i, b.starts[i], b.starts[i] + p.len()))
}
