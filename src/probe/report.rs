//! The probe results as a terminal table, JSON and a Markdown report.

use serde_json::{Value, json};

use super::{ProbeResult, Verdict};

/// Counts by verdict.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    pub pass: usize,
    pub fail: usize,
    pub unsupported: usize,
    pub not_applicable: usize,
    pub info: usize,
}

impl Tally {
    pub fn of(results: &[ProbeResult]) -> Self {
        let mut t = Self::default();
        for r in results {
            match r.verdict {
                Verdict::Pass => t.pass += 1,
                Verdict::Fail => t.fail += 1,
                Verdict::Unsupported => t.unsupported += 1,
                Verdict::NotApplicable => t.not_applicable += 1,
                Verdict::Info => t.info += 1,
            }
        }
        t
    }

    /// `N passed, N failed` (the line test runners close on), then the rest.
    pub fn line(&self) -> String {
        format!(
            "{} passed, {} failed, {} unsupported, {} n/a, {} info",
            self.pass, self.fail, self.unsupported, self.not_applicable, self.info
        )
    }
}

/// One line per result, for a terminal: probe, endpoint, verdict, the sentence that says why.
pub fn row(r: &ProbeResult) -> String {
    format!(
        "{:<22} {:<12} {:<12} {}",
        r.probe,
        r.api.name(),
        r.verdict.name(),
        r.note
    )
}

pub fn header() -> String {
    format!(
        "{:<22} {:<12} {:<12} {}",
        "probe", "endpoint", "verdict", "evidence"
    )
}

/// The whole run as JSON: the server, the request count, the tally and every result.
pub fn to_json(url: &str, requests: usize, results: &[ProbeResult]) -> Value {
    let t = Tally::of(results);
    json!({
        "url": url,
        "requests": requests,
        "passed": t.pass,
        "failed": t.fail,
        "unsupported": t.unsupported,
        "not_applicable": t.not_applicable,
        "info": t.info,
        "results": results,
    })
}

fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

/// A Markdown report: the tally, then a table with each probe's evidence.
pub fn markdown(url: &str, requests: usize, results: &[ProbeResult]) -> String {
    let t = Tally::of(results);
    let mut out = format!(
        "# stoplab probe: {url}\n\n{} ({requests} requests). Each probe fixed the text (a grammar where the \
         server takes one, else its greedy output fetched first), drew its stops from it, and judged the answer \
         with stoplab's reference.\n\n\
         | probe | endpoint | text | verdict | sent | got | expected | why |\n|---|---|---|---|---|---|---|---|\n",
        t.line()
    );
    for r in results {
        out.push_str(&format!(
            "| {} | {} | {} | {} | `{}` | {} | {} | {} |\n",
            r.probe,
            r.api.name(),
            r.method,
            r.verdict.name(),
            cell(&r.sent.to_string()),
            cell(&r.got),
            cell(&r.expected),
            cell(&r.note)
        ));
    }
    out
}
