//! The stop rules that broke when servers began to accept several tokens per step, run on a replay staged
//! the same way, so a scenario can show stoplab's answer beside what each rule would have given
//! (`[replay] tokens_per_step` and `contrast` in a scenario file).
//!
//! Each rule takes the replayed tokens a step at a time (the first token alone, from the prompt's pass,
//! then `K` per step, as `--tokens-per-step K` stages them) and judges a step after all its tokens are in,
//! as the servers did:
//! - `one-token-window` (sglang PR #23802): the new text is searched for a stop only in a window sized for
//!   one token (the last token's text and the longest stop's length less one byte before it), so a stop
//!   completed earlier in the step is missed and the text runs on;
//! - `length-before-stop` (sglang #31599): the length limit is checked before the stop: a step that
//!   crosses `max_tokens` finishes as `length` with the ids up to the limit, the stop and the tokens after
//!   it included (`output_ids=[10,11,STOP,20,21,22]`, `max_new_tokens=5`);
//! - `cut-text-keep-ids` (vLLM PR #47616): the text is cut at the stop, but the ids (and their
//!   log-probabilities, and `usage`) keep the whole step, the tokens after the stop included.
//!
//! An end token ends every rule's answer where it stands, as it ends stoplab's.

use std::collections::BTreeSet;

use serde::Serialize;

use crate::Error;
use crate::pipeline::tokenizer::Vocab;

/// A buggy stop rule of multi-token steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StepRule {
    OneTokenWindow,
    LengthBeforeStop,
    CutTextKeepIds,
}

impl StepRule {
    pub const ALL: [StepRule; 3] = [
        StepRule::OneTokenWindow,
        StepRule::LengthBeforeStop,
        StepRule::CutTextKeepIds,
    ];

    pub fn name(self) -> &'static str {
        match self {
            StepRule::OneTokenWindow => "one-token-window",
            StepRule::LengthBeforeStop => "length-before-stop",
            StepRule::CutTextKeepIds => "cut-text-keep-ids",
        }
    }

    /// Where the rule was reported.
    pub fn source(self) -> &'static str {
        match self {
            StepRule::OneTokenWindow => "sglang PR #23802",
            StepRule::LengthBeforeStop => "sglang #31599",
            StepRule::CutTextKeepIds => "vLLM PR #47616",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.name() == name)
    }
}

/// An answer as a client sees it: the text, the finish, the ids it is given and `usage`'s count.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Answer {
    pub text: String,
    /// OpenAI's `finish_reason`.
    pub finish: String,
    pub ids: Vec<u32>,
    pub completion_tokens: usize,
}

/// What `rule` answers for the replay `stream` (the script, then the end token the replay writes) staged
/// `k` tokens per step, with the stop strings `stops`, the end tokens `ends` and the limit `max_tokens`.
pub fn apply(
    rule: StepRule,
    vocab: &Vocab,
    stream: &[u32],
    ends: &BTreeSet<u32>,
    stops: &[String],
    max_tokens: usize,
    k: usize,
) -> Result<Answer, Error> {
    let longest = stops.iter().map(String::len).max().unwrap_or(0);
    let text_of = |ids: &[u32]| -> Result<Vec<u8>, Error> {
        let mut out = Vec::new();
        for &id in ids.iter().filter(|id| !ends.contains(id)) {
            out.extend_from_slice(vocab.token_bytes(id).ok_or(Error::UnknownToken {
                id,
                vocab: vocab.len(),
            })?);
        }
        Ok(out)
    };
    let answer = |text: &[u8], finish: &str, ids: &[u32]| Answer {
        text: String::from_utf8_lossy(text).into_owned(),
        finish: finish.into(),
        ids: ids.to_vec(),
        completion_tokens: ids.len(),
    };
    // The first stop in `text[from..]`: where it begins and ends.
    let find = |text: &[u8], from: usize| -> Option<(usize, usize)> {
        stops
            .iter()
            .filter_map(|s| {
                text[from..]
                    .windows(s.len())
                    .position(|w| w == s.as_bytes())
                    .map(|i| (from + i, from + i + s.len()))
            })
            .min()
    };
    // The tokens through the one whose text completes byte `end`.
    let through = |ids: &[u32], end: usize| -> Result<usize, Error> {
        let mut n = 0;
        for (i, &id) in ids.iter().enumerate() {
            n += text_of(&[id])?.len();
            if n >= end {
                return Ok(i + 1);
            }
        }
        Ok(ids.len())
    };
    let mut ids: Vec<u32> = Vec::new();
    let mut at = 0;
    while at < stream.len() {
        let size = if at == 0 { 1 } else { k.max(1) };
        let step = &stream[at..(at + size).min(stream.len())];
        at += step.len();
        let before = ids.len();
        ids.extend_from_slice(step);
        if let Some(j) = step.iter().position(|id| ends.contains(id)) {
            // Within the limit, the end token ends it (and the rule that checks the length first, the
            // limit).
            ids.truncate(before + j + 1);
            if ids.len() <= max_tokens || rule != StepRule::LengthBeforeStop {
                let kept = ids.len().min(max_tokens);
                let finish = if ids.len() <= max_tokens {
                    "stop"
                } else {
                    "length"
                };
                let ids = &ids[..kept];
                return Ok(answer(&text_of(ids)?, finish, ids));
            }
        }
        let text = text_of(&ids)?;
        let over = ids.len() >= max_tokens;
        if rule == StepRule::LengthBeforeStop && over {
            let ids = &ids[..max_tokens];
            return Ok(answer(&text_of(ids)?, "length", ids));
        }
        let found = match rule {
            StepRule::OneTokenWindow => {
                let last = text_of(&ids[ids.len() - 1..])?.len();
                let window = (last + longest.saturating_sub(1)).min(text.len());
                find(&text, text.len() - window)
            }
            _ => find(&text, 0),
        };
        if let Some((start, end)) = found {
            let kept = match rule {
                // The ids through the stop's token: the rule's fault is elsewhere.
                StepRule::LengthBeforeStop => through(&ids, end)?,
                _ => ids.len(),
            };
            let mut a = answer(&text[..start], "stop", &ids[..kept]);
            a.completion_tokens = kept;
            return Ok(a);
        }
        if over {
            let ids = &ids[..max_tokens];
            return Ok(answer(&text_of(ids)?, "length", ids));
        }
    }
    Ok(answer(&text_of(&ids)?, "length", &ids))
}

/// A scenario's contrast: stoplab's answer beside the rule's.
#[derive(Debug, Clone, Serialize)]
pub struct Contrast {
    pub rule: StepRule,
    pub source: &'static str,
    pub tokens_per_step: usize,
    pub stoplab: Answer,
    pub rule_answer: Answer,
    /// The ids the rule gives after the ones stoplab gives (the tokens it leaked).
    pub leaked: usize,
}

impl Contrast {
    pub fn new(rule: StepRule, k: usize, stoplab: Answer, rule_answer: Answer) -> Self {
        let leaked = rule_answer.ids.len().saturating_sub(stoplab.ids.len());
        Self {
            rule,
            source: rule.source(),
            tokens_per_step: k,
            stoplab,
            rule_answer,
            leaked,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rule_has_a_name_that_parses_back() {
        for r in StepRule::ALL {
            assert_eq!(StepRule::parse(r.name()), Some(r));
        }
        assert_eq!(StepRule::parse("window"), None);
    }
}
