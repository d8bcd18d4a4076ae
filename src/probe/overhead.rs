//! What stop matching costs a server: time per generated token with 0, 4, 64, 1,024 stops on the same greedy
//! request, alternated round by round, so that a server whose matching grows with the number of stops shows it.
//!
//! The stops are drawn from the bench corpus so that none occurs in the server's own greedy output (fetched
//! first); every request must then write the same number of tokens, which is checked. The time per token is
//! the server's own decode timing where it reports one (llama.cpp's `timings`), else the request's wall time
//! over its tokens (prefill and HTTP included: the same for every stop count, so the ratios still compare).
//! [`table`] and [`to_json`] are how `stoplab bench overhead --endpoint` shows the rows.

use std::time::Instant;

use serde::Serialize;
use serde_json::{Value, json};

use crate::Error;
use crate::client::{Client, Reply, clip};
use crate::lab::bench::{CORPUS, never_matching_stops};

/// The request every round sends, with its stops.
pub const PROMPT: &str = "user: Tell me about the number 7.\nAI:";

/// One stop count's timings.
#[derive(Debug, Clone, Serialize)]
pub struct OverheadRow {
    pub stops: usize,
    /// Milliseconds per generated token, one per round (empty when the server refused the request).
    pub ms_per_token: Vec<f64>,
    pub median_ms: f64,
    /// Median over the 0-stop row's median (1.0 for that row).
    pub ratio: f64,
    /// Whether the times are the server's own decode timings rather than wall time.
    pub server_timing: bool,
    /// The server's answer when it refused this many stops.
    pub refused: Option<String>,
}

fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// One answered request: ms per token, tokens, text, whether the timing is the server's.
type Timed = (f64, u64, String, bool);

/// Sends one request: the answer, or the server's refusal as text.
fn timed(client: &Client, body: &Value) -> Result<Result<Timed, String>, Error> {
    let t0 = Instant::now();
    let reply = client
        .post("/v1/completions", body)
        .map_err(|e| Error::Invalid {
            field: "URL".into(),
            message: e.to_string(),
        })?;
    let wall = t0.elapsed().as_secs_f64() * 1e3;
    let v = match reply {
        Reply::Refused { status, body } => return Ok(Err(format!("{status}: {}", clip(&body)))),
        Reply::Ok(mut v) => v.pop().unwrap_or_default(),
    };
    let text = v
        .pointer("/choices/0/text")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let tokens = v
        .pointer("/usage/completion_tokens")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    let server = v
        .pointer("/timings/predicted_ms")
        .and_then(Value::as_f64)
        .zip(v.pointer("/timings/predicted_n").and_then(Value::as_f64))
        .filter(|&(_, n)| n > 0.0);
    Ok(Ok(match server {
        Some((ms, n)) => (ms / n, tokens, text, true),
        None => (wall / tokens.max(1) as f64, tokens, text, false),
    }))
}

/// Runs `rounds` rounds over `counts` stops, `max_tokens` tokens each (end tokens ignored).
pub fn measure(
    client: &Client,
    counts: &[usize],
    rounds: usize,
    max_tokens: usize,
    mut progress: impl FnMut(usize, usize),
) -> Result<Vec<OverheadRow>, Error> {
    let body = |stops: &[String]| {
        let mut b = json!({
            "prompt": PROMPT, "max_tokens": max_tokens, "temperature": 0, "seed": 1, "ignore_eos": true,
        });
        if !stops.is_empty() {
            b["stop"] = json!(stops);
        }
        client.with_model(b)
    };
    let (_, tokens, text, _) = timed(client, &body(&[]))?.map_err(|e| Error::Invalid {
        field: "URL".into(),
        message: format!("a plain greedy request was refused ({e})"),
    })?;
    if tokens == 0 {
        return Err(Error::Invalid {
            field: "URL".into(),
            message: "the server reported no completion_tokens in usage; cannot time per token"
                .into(),
        });
    }
    let most = counts.iter().copied().max().unwrap_or(0);
    let pool = never_matching_stops(CORPUS.as_bytes(), &[text.as_bytes()], most, 0x0e4d);
    let mut rows: Vec<OverheadRow> = counts
        .iter()
        .map(|&stops| OverheadRow {
            stops,
            ms_per_token: Vec::new(),
            median_ms: f64::NAN,
            ratio: f64::NAN,
            server_timing: false,
            refused: None,
        })
        .collect();
    for round in 0..rounds {
        for row in rows.iter_mut().filter(|r| r.refused.is_none()) {
            progress(round, row.stops);
            match timed(client, &body(&pool[..row.stops]))? {
                Err(refusal) => row.refused = Some(refusal),
                Ok((ms, n, t, server)) => {
                    if n != tokens || t != text {
                        return Err(Error::Invalid {
                            field: "URL".into(),
                            message: format!(
                                "with {} stops the server wrote {n} tokens ({t:?}), without them {tokens} \
                                 ({text:?}): greedy decoding should repeat itself",
                                row.stops
                            ),
                        });
                    }
                    row.ms_per_token.push(ms);
                    row.server_timing = server;
                }
            }
        }
    }
    for row in &mut rows {
        row.median_ms = median(&row.ms_per_token);
    }
    let base = rows
        .iter()
        .find(|r| r.stops == 0)
        .map_or(f64::NAN, |r| r.median_ms);
    for row in &mut rows {
        row.ratio = row.median_ms / base;
    }
    Ok(rows)
}

/// The run as one JSON document: where, what was asked, and every row.
pub fn to_json(client: &Client, tokens: usize, rounds: usize, rows: &[OverheadRow]) -> Value {
    json!({
        "endpoint": client.base(),
        "prompt": PROMPT,
        "tokens": tokens,
        "rounds": rounds,
        "requests": client.sent(),
        "rows": rows,
    })
}

/// The terminal table: per stop count the median time per token, its ratio to no stops, and every round.
pub fn table(rows: &[OverheadRow], tokens: usize, rounds: usize) -> String {
    let mut table = format!(
        "{tokens} tokens per request (greedy, end tokens ignored), {rounds} rounds, stops that never match; {}\n{:>6}{:>14}{:>10}  {}\n",
        if rows.iter().any(|r| r.server_timing) {
            "the server's own decode timings"
        } else {
            "wall time per token"
        },
        "stops",
        "ms/token",
        "ratio",
        "per round"
    );
    for r in rows {
        match &r.refused {
            Some(why) if r.ms_per_token.is_empty() => {
                table.push_str(&format!("{:>6}  refused: {why}\n", r.stops));
            }
            _ => table.push_str(&format!(
                "{:>6}{:>14.3}{:>10.3}  {}\n",
                r.stops,
                r.median_ms,
                r.ratio,
                r.ms_per_token
                    .iter()
                    .map(|x| format!("{x:.3}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            )),
        }
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
    }
}
