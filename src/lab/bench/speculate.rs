//! `stoplab bench decode --speculate ngram`: prompt-lookup speculation against plain decoding, on a shipped
//! set of prompts whose answers copy from their context (a transcript that repeats its turns, a code edit,
//! a JSON echo, a quoted passage) and a set of ordinary chat questions.
//!
//! Each prompt is generated greedy, as a user gets it (to its end token, at most `tokens` tokens: past its
//! end a small model starts repeating itself, which a drafter copies, so the end is not ignored), plain and
//! speculative in turn (alternated, so both see the same machine), `runs` times after `warmup` unreported
//! rounds. A run is timed from the prompt's feed to the last token, prefill included (as `llama-lookup`
//! reports its whole generation), and both runs must give the same ids: a speculative run that did not would
//! be a bug, and is an error here.

use std::ops::ControlFlow;
use std::time::Instant;

use serde_json::{Value, json};

use crate::pipeline::generate::generate;
use crate::pipeline::model::Model;
use crate::pipeline::settings::GenerateParams;
use crate::pipeline::sink::{Sink, StepReport, TokenEvent};
use crate::pipeline::speculate::Speculation;
use crate::pipeline::tokenizer::Vocab;
use crate::{Error, pipeline::format::Message};

/// A prompt of a set: a name, and the user's message (rendered with the model's chat template when it
/// has one, else as a transcript).
pub struct Prompt {
    pub name: &'static str,
    pub message: &'static str,
}

/// Prompts whose answers copy from their context: where an n-gram drafter is accepted.
pub const COPY: &[Prompt] = &[
    Prompt {
        name: "transcript",
        message: "Here is a transcript. Write it out again exactly, line by line.\n\n\
user: What time does the library open?\nAI: The library opens at nine in the morning.\n\
user: And when does it close?\nAI: It closes at six in the evening, and at noon on Saturdays.\n\
user: Can I borrow books without a card?\nAI: No, you need a library card; you can get one at the front desk.",
    },
    Prompt {
        name: "code-edit",
        message: "Rename the variable `total` to `sum` in this function and return the whole function:\n\n\
def average(values):\n    total = 0\n    for value in values:\n        total = total + value\n    \
if len(values) == 0:\n        return 0\n    return total / len(values)\n",
    },
    Prompt {
        name: "json-echo",
        message: "Return this JSON object unchanged, with \"active\" set to false:\n\n\
{\"id\": 4182, \"name\": \"Ada Lovelace\", \"email\": \"ada@example.com\", \"active\": true, \
\"roles\": [\"admin\", \"editor\"], \"address\": {\"city\": \"London\", \"street\": \"12 St James's Square\"}}",
    },
    Prompt {
        name: "quote",
        message: "Quote this passage word for word:\n\n\"It was the best of times, it was the worst of times, \
it was the age of wisdom, it was the age of foolishness, it was the epoch of belief, it was the epoch of \
incredulity, it was the season of Light, it was the season of Darkness.\"",
    },
];

/// Ordinary questions: the drafter finds little to copy.
pub const CHAT: &[Prompt] = &[
    Prompt {
        name: "capital",
        message: "What is the capital of France, and what is it known for?",
    },
    Prompt {
        name: "advice",
        message: "Give me three tips for sleeping better.",
    },
    Prompt {
        name: "explain",
        message: "Explain in a few sentences why the sky is blue.",
    },
    Prompt {
        name: "story",
        message: "Write the opening of a short story about a lighthouse keeper.",
    },
];

/// One prompt's figures: tokens per second plain and speculative (medians over the runs), and how much of
/// what was drafted was accepted.
pub struct Row {
    pub set: &'static str,
    pub name: &'static str,
    pub prompt_tokens: usize,
    /// The prompt's ids (a peer is given the same ones: `benches/peer/lookup.py`).
    pub prompt_ids: Vec<u32>,
    /// Tokens generated (to the end token or the limit).
    pub generated: usize,
    pub plain: f64,
    pub speculative: f64,
    pub drafted: usize,
    pub accepted: usize,
    pub steps: usize,
}

impl Row {
    pub fn ratio(&self) -> f64 {
        self.speculative / self.plain
    }
}

#[derive(Default)]
struct Count {
    drafted: usize,
    accepted: usize,
    steps: usize,
}

impl Sink for Count {
    fn token(&mut self, _: &TokenEvent<'_>) -> Result<ControlFlow<()>, Error> {
        Ok(ControlFlow::Continue(()))
    }
    fn step(&mut self, r: &StepReport) -> Result<(), Error> {
        self.drafted += r.drafted.len();
        self.accepted += r.accepted;
        self.steps += 1;
        Ok(())
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Turns a conversation into prompt ids (the model's chat template, or a transcript).
pub type Render<'a> = dyn Fn(&[Message]) -> Result<Vec<u32>, Error> + 'a;

/// What each prompt runs: the speculation measured, tokens generated, measured runs after `warmup`.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    pub spec: Speculation,
    pub tokens: usize,
    pub runs: usize,
    pub warmup: usize,
}

/// Measures every prompt of `sets` (name, prompts) on `model`; `render` turns a message into prompt ids.
pub fn measure(
    model: &mut dyn Model,
    vocab: &Vocab,
    render: &Render<'_>,
    sets: &[(&'static str, &'static [Prompt])],
    plan: Plan,
    progress: &mut dyn FnMut(&str),
) -> Result<Vec<Row>, Error> {
    let Plan {
        spec,
        tokens,
        runs,
        warmup,
    } = plan;
    let plain = GenerateParams {
        max_tokens: tokens,
        ..Default::default()
    };
    let speculative = GenerateParams {
        speculation: Some(spec),
        ..plain.clone()
    };
    let mut rows = Vec::new();
    for &(set, prompts) in sets {
        for p in prompts {
            let prompt = render(&[Message::new("user", p.message)])?;
            let (mut a, mut b) = (Vec::new(), Vec::new());
            let mut count = Count::default();
            let mut generated = 0;
            for round in 0..warmup + runs {
                let t0 = Instant::now();
                let o1 = generate(model, vocab, &prompt, &plain, &mut Count::default())?;
                let t1 = t0.elapsed().as_secs_f64();
                let mut c = Count::default();
                let t0 = Instant::now();
                let o2 = generate(model, vocab, &prompt, &speculative, &mut c)?;
                let t2 = t0.elapsed().as_secs_f64();
                if o1.tokens != o2.tokens {
                    return Err(Error::Backend(format!(
                        "{set}/{}: speculation gave other ids than plain decoding",
                        p.name
                    )));
                }
                if round >= warmup {
                    a.push(o1.tokens.len() as f64 / t1);
                    b.push(o2.tokens.len() as f64 / t2);
                }
                count = c;
                generated = o1.tokens.len();
            }
            let row = Row {
                set,
                name: p.name,
                prompt_tokens: prompt.len(),
                prompt_ids: prompt.clone(),
                generated,
                plain: median(a),
                speculative: median(b),
                drafted: count.drafted,
                accepted: count.accepted,
                steps: count.steps,
            };
            progress(&format!(
                "{set}/{}: {:.1} → {:.1} tok/s ({:.2}x), {} of {} drafted accepted",
                row.name,
                row.plain,
                row.speculative,
                row.ratio(),
                row.accepted,
                row.drafted
            ));
            rows.push(row);
        }
    }
    Ok(rows)
}

/// The geometric mean of the rows' ratios in `set`.
pub fn mean_ratio(rows: &[Row], set: &str) -> Option<f64> {
    let r: Vec<f64> = rows
        .iter()
        .filter(|r| r.set == set)
        .map(Row::ratio)
        .collect();
    (!r.is_empty()).then(|| (r.iter().map(|x| x.ln()).sum::<f64>() / r.len() as f64).exp())
}

/// The rows as a table, then each set's geometric mean ratio.
pub fn text(rows: &[Row]) -> String {
    let mut s = String::from(
        "set   prompt        prompt  tokens  plain tok/s  speculative tok/s  ratio  accepted/drafted  steps\n",
    );
    for r in rows {
        s.push_str(&format!(
            "{:<5} {:<13} {:>6}  {:>6}  {:>11.1}  {:>17.1}  {:>5.2}  {:>7}/{:<8}  {:>5}\n",
            r.set,
            r.name,
            r.prompt_tokens,
            r.generated,
            r.plain,
            r.speculative,
            r.ratio(),
            r.accepted,
            r.drafted,
            r.steps
        ));
    }
    for set in ["copy", "chat"] {
        if let Some(m) = mean_ratio(rows, set) {
            s.push_str(&format!("{set}: {m:.2}x plain decoding (geometric mean)\n"));
        }
    }
    s
}

pub fn to_json(rows: &[Row]) -> Value {
    json!({
        "rows": rows.iter().map(|r| json!({
            "set": r.set, "prompt": r.name, "prompt_tokens": r.prompt_tokens, "prompt_ids": r.prompt_ids,
            "generated": r.generated,
            "plain_tokens_per_s": r.plain, "speculative_tokens_per_s": r.speculative,
            "ratio": r.ratio(), "drafted": r.drafted, "accepted": r.accepted, "steps": r.steps,
        })).collect::<Vec<_>>(),
        "copy_ratio": mean_ratio(rows, "copy"),
        "chat_ratio": mean_ratio(rows, "chat"),
    })
}
