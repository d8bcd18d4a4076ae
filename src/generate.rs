//! The generation loop: model → sampler → token → stop engine → sink.
//!
//! The loop knows nothing of stdout, HTTP or JSON; the caller brings a [`Sink`] that receives one
//! [`TokenEvent`] per generated token and may end the generation early.
//!
//! Per token, in this order:
//! 1. an id in the model's end-of-generation set ends the generation (unless `ignore_eos`);
//! 2. an id in `stop_token_ids` ends it;
//! 3. otherwise the token's bytes join the text and go through the stop-string scanner; a completed stop
//!    ends the generation and the text is cut at the stop's first byte (or after its last, with
//!    `include_stop`);
//! 4. with a [`RepetitionStop`] set, the last `ngram` tokens occurring `count` times end it (the text is
//!    kept: it was released already);
//! 5. `max_tokens` and the context length end it last.
//!
//! No stop of any kind counts on the first `min_tokens` tokens (end tokens and stop token ids are also kept
//! out of the sampler's choice until then). Text reaches the sink as soon as it can no longer be part of a
//! stop and never splits a UTF-8 character; the concatenated event texts always equal [`Outcome::text`].

use std::ops::ControlFlow;
use std::time::Instant;

use crate::Error;
use crate::model::{Model, Next};
use crate::sampling::{Sampler, SamplingParams};
use crate::stop::{StopMatch, StopSet};
use crate::tokenizer::Vocab;

/// Everything that decides how a generation runs and ends.
#[derive(Debug, Clone)]
pub struct GenerateParams {
    pub sampling: SamplingParams,
    pub stops: StopSet,
    pub stop_token_ids: Vec<u32>,
    /// Keep the matched stop string (or stop token's text) at the end of the output.
    pub include_stop: bool,
    /// Do not end on the model's end tokens; they are generated and shown like any other token.
    pub ignore_eos: bool,
    pub min_tokens: usize,
    pub max_tokens: usize,
    /// Stop when the output starts repeating itself (off by default).
    pub repetition: Option<RepetitionStop>,
}

/// Stop when the last `ngram` generated tokens have now occurred `count` times in the output (the earlier
/// occurrences may overlap). For a model that never emits its end token and loops: it ends the loop on
/// its first repeat instead of at `max_tokens`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepetitionStop {
    pub ngram: usize,
    #[serde(default = "RepetitionStop::default_count")]
    pub count: usize,
}

impl RepetitionStop {
    fn default_count() -> usize {
        2
    }

    /// Where the last `ngram` ids of `tokens` first occurred, if they now occur `count` times.
    pub fn check(&self, tokens: &[u32]) -> Option<usize> {
        let n = self.ngram;
        if n == 0 || tokens.len() < n {
            return None;
        }
        let tail = &tokens[tokens.len() - n..];
        let mut seen = 0;
        let mut first = None;
        for (i, w) in tokens.windows(n).enumerate() {
            if w == tail {
                seen += 1;
                first.get_or_insert(i);
            }
        }
        (seen >= self.count).then_some(first.unwrap_or(0))
    }
}

impl Default for GenerateParams {
    fn default() -> Self {
        Self {
            sampling: SamplingParams::default(),
            stops: StopSet::new(Vec::<String>::new()).expect("an empty stop set is valid"),
            stop_token_ids: Vec::new(),
            include_stop: false,
            ignore_eos: false,
            min_tokens: 0,
            max_tokens: 256,
            repetition: None,
        }
    }
}

impl GenerateParams {
    /// Checks the settings against a vocabulary; errors name the field.
    pub fn validate(&self, vocab_size: usize) -> Result<(), Error> {
        if self.max_tokens == 0 {
            return Err(Error::Invalid {
                field: "max_tokens".into(),
                message: "must be at least 1".into(),
            });
        }
        if let Some(r) = &self.repetition
            && (r.ngram == 0 || r.count < 2)
        {
            return Err(Error::Invalid {
                field: "repetition".into(),
                message: format!(
                    "ngram {} and count {}: ngram must be at least 1 and count at least 2",
                    r.ngram, r.count
                ),
            });
        }
        for &id in &self.stop_token_ids {
            if id as usize >= vocab_size {
                return Err(Error::Invalid {
                    field: "stop_token_ids".into(),
                    message: format!("token id {id} is outside the vocabulary (0..{vocab_size})"),
                });
            }
        }
        self.sampling.validate(vocab_size)
    }
}

/// Why a generation finished. Finishing is an outcome, not an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FinishReason {
    /// The model emitted one of its end-of-generation tokens.
    EndToken { id: u32 },
    /// A stop string completed; `offset` is the byte offset of its first byte in the generated text.
    StopString {
        index: usize,
        stop: String,
        offset: usize,
    },
    /// A token id from `stop_token_ids` was generated.
    StopToken { id: u32 },
    /// `max_tokens` were generated.
    Length,
    /// Prompt plus generated tokens filled the model's context.
    ContextFull,
    /// The last `ngram` tokens occurred for the `count`th time; the first occurrence began at token `first`.
    Repetition {
        ngram: usize,
        count: usize,
        first: usize,
    },
    /// The sink asked to stop (a client went away, a pipe closed).
    Cancelled,
}

impl FinishReason {
    /// OpenAI's `finish_reason`: `stop` or `length` (`cancelled` for a generation its consumer abandoned).
    pub fn openai(&self) -> &'static str {
        match self {
            Self::EndToken { .. }
            | Self::StopString { .. }
            | Self::StopToken { .. }
            | Self::Repetition { .. } => "stop",
            Self::Length | Self::ContextFull => "length",
            Self::Cancelled => "cancelled",
        }
    }

    /// vLLM's `stop_reason`: the matched stop string, or the id of the token that stopped it, or null.
    pub fn stop_reason(&self) -> serde_json::Value {
        match self {
            Self::EndToken { id } | Self::StopToken { id } => (*id).into(),
            Self::StopString { stop, .. } => stop.clone().into(),
            Self::Repetition { .. } => "repetition".into(),
            _ => serde_json::Value::Null,
        }
    }

    /// A short human description for summaries and traces.
    pub fn describe(&self) -> String {
        match self {
            Self::EndToken { id } => format!("end token {id}"),
            Self::StopString { stop, offset, .. } => {
                format!("stop string {stop:?} at byte {offset}")
            }
            Self::StopToken { id } => format!("stop token {id}"),
            Self::Length => "max tokens reached".into(),
            Self::ContextFull => "context full".into(),
            Self::Cancelled => "cancelled".into(),
            Self::Repetition {
                ngram,
                count,
                first,
            } => format!(
                "repetition: the last {ngram} tokens occurred {count} times, first at token {first}"
            ),
        }
    }

    /// A stable one-word name of the variant, for tables and JSON.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::EndToken { .. } => "end_token",
            Self::StopString { .. } => "stop_string",
            Self::StopToken { .. } => "stop_token",
            Self::Length => "length",
            Self::ContextFull => "context_full",
            Self::Cancelled => "cancelled",
            Self::Repetition { .. } => "repetition",
        }
    }
}

/// Speeds of one generation.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct Timings {
    pub prompt_tokens: usize,
    pub prefill_ms: f64,
    pub prefill_tokens_per_s: f64,
    /// Tokens produced by decode steps (the first generated token comes out of the prefill).
    pub decode_tokens: usize,
    pub decode_ms: f64,
    pub decode_tokens_per_s: f64,
}

/// The result of one generation.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The generated text, stop string cut (unless `include_stop`).
    pub text: String,
    pub finish: FinishReason,
    /// Every generated id, the one that stopped the generation included (as llama.cpp counts them).
    pub tokens: Vec<u32>,
    pub prompt_tokens: usize,
    pub timings: Timings,
}

impl Outcome {
    /// The command line's and the server's JSON shape.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "text": self.text,
            "finish_reason": self.finish.openai(),
            "stop_reason": self.finish.stop_reason(),
            "finish": self.finish.describe(),
            "tokens": self.tokens,
            "usage": {
                "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.tokens.len(),
                "total_tokens": self.prompt_tokens + self.tokens.len(),
            },
            "timings": self.timings,
        })
    }
}

/// One generated token as the stop machinery saw it.
#[derive(Debug, Clone, Copy)]
pub struct TokenEvent<'a> {
    /// 0-based index among generated tokens.
    pub index: usize,
    pub id: u32,
    /// The bytes the token stands for.
    pub bytes: &'a [u8],
    /// The id is in the model's end-of-generation set.
    pub end_token: bool,
    /// Text released to the output by this token (possibly empty; possibly text held back earlier).
    pub text: &'a str,
    /// Bytes held back after this token because they may begin a stop string (or complete a character).
    pub held: &'a [u8],
    /// Set on the last token.
    pub finish: Option<&'a FinishReason>,
}

/// Where generated tokens go. Return `ControlFlow::Break(())` to end the generation (`Cancelled`).
pub trait Sink {
    fn token(&mut self, event: &TokenEvent<'_>) -> ControlFlow<()>;
}

impl<F: FnMut(&TokenEvent<'_>) -> ControlFlow<()>> Sink for F {
    fn token(&mut self, event: &TokenEvent<'_>) -> ControlFlow<()> {
        self(event)
    }
}

/// A sink that ignores everything (for callers that only want the [`Outcome`]).
pub struct Discard;

impl Sink for Discard {
    fn token(&mut self, _: &TokenEvent<'_>) -> ControlFlow<()> {
        ControlFlow::Continue(())
    }
}

/// The generated bytes and how much of them has been released as text.
struct TextBuffer {
    bytes: Vec<u8>,
    sent: usize,
}

impl TextBuffer {
    /// Releases `bytes[sent..end]`, backing off to the last point where UTF-8 decoding cannot change
    /// when more bytes arrive (unless `last`): a complete character or a sequence already invalid.
    fn release(&mut self, end: usize, last: bool) -> String {
        let end = end.max(self.sent);
        let chunk = &self.bytes[self.sent..end];
        let take = if last {
            chunk.len()
        } else {
            utf8_settled(chunk)
        };
        let text = String::from_utf8_lossy(&chunk[..take]).into_owned();
        self.sent += take;
        text
    }
}

/// Length of the longest prefix of `bytes` whose lossy decoding is final: everything but a trailing
/// incomplete (still completable) UTF-8 sequence.
fn utf8_settled(bytes: &[u8]) -> usize {
    let tail = bytes.len().saturating_sub(3);
    for start in (tail..bytes.len()).rev() {
        let b = bytes[start];
        if b & 0xC0 != 0x80 {
            // A lead byte: is the sequence starting here incomplete but valid so far?
            let need = match b {
                0xC2..=0xDF => 2,
                0xE0..=0xEF => 3,
                0xF0..=0xF4 => 4,
                _ => return bytes.len(),
            };
            let have = bytes.len() - start;
            if have < need
                && std::str::from_utf8(&bytes[start..])
                    .err()
                    .is_some_and(|e| e.error_len().is_none())
            {
                return start;
            }
            return bytes.len();
        }
    }
    bytes.len()
}

/// Runs one generation of `model` from `prompt`.
pub fn generate(
    model: &mut dyn Model,
    vocab: &Vocab,
    prompt: &[u32],
    params: &GenerateParams,
    sink: &mut dyn Sink,
) -> Result<Outcome, Error> {
    params.validate(vocab.len())?;
    if prompt.is_empty() {
        return Err(Error::Invalid {
            field: "prompt".into(),
            message: "is empty; give at least one token".into(),
        });
    }
    let context = model.context_length();
    if prompt.len() >= context {
        return Err(Error::PromptTooLong {
            prompt: prompt.len(),
            context,
        });
    }
    if let Some(&id) = prompt.iter().find(|&&id| id as usize >= vocab.len()) {
        return Err(Error::UnknownToken {
            id,
            vocab: vocab.len(),
        });
    }

    let end_set = vocab.end_tokens();
    let stops = &params.stops;
    let mut scanner = stops.scanner();
    let mut sampler = Sampler::new(params.sampling.clone(), prompt);
    let banned_early: Vec<u32> = end_set
        .iter()
        .chain(&params.stop_token_ids)
        .copied()
        .collect();
    let mut buf = TextBuffer {
        bytes: Vec::new(),
        sent: 0,
    };
    let mut text = String::new();
    let mut tokens = Vec::new();
    let mut timings = Timings {
        prompt_tokens: prompt.len(),
        ..Default::default()
    };

    let t0 = Instant::now();
    let mut next = model.forward(prompt, 0)?;
    timings.prefill_ms = t0.elapsed().as_secs_f64() * 1e3;
    let decode_start = Instant::now();

    let finish = loop {
        let index = tokens.len();
        let id = match next {
            Next::Forced(id) => id,
            Next::Logits(mut logits) => {
                let banned = if index < params.min_tokens {
                    &banned_early[..]
                } else {
                    &[]
                };
                sampler.sample(&mut logits, banned)?
            }
        };
        let bytes = vocab.token_bytes(id).ok_or(Error::UnknownToken {
            id,
            vocab: vocab.len(),
        })?;
        sampler.accept(id);
        tokens.push(id);
        let may_stop = index >= params.min_tokens;
        let end_token = end_set.contains(&id);

        let finish;
        let released;
        if may_stop && end_token && !params.ignore_eos {
            finish = Some(FinishReason::EndToken { id });
            released = buf.release(buf.bytes.len(), true);
        } else if may_stop && params.stop_token_ids.contains(&id) {
            finish = Some(FinishReason::StopToken { id });
            if params.include_stop {
                buf.bytes.extend_from_slice(bytes);
            }
            released = buf.release(buf.bytes.len(), true);
        } else {
            buf.bytes.extend_from_slice(bytes);
            let scan = scanner.feed(bytes);
            match scan.matched {
                Some(StopMatch { stop, start, end }) if may_stop => {
                    let cut = if params.include_stop { end } else { start };
                    debug_assert!(buf.sent <= cut, "held-back bytes were released");
                    buf.bytes.truncate(cut.max(buf.sent));
                    finish = Some(FinishReason::StopString {
                        index: stop,
                        stop: stops.stops()[stop].clone(),
                        offset: start,
                    });
                    released = buf.release(buf.bytes.len(), true);
                }
                _ => {
                    let repeated = params
                        .repetition
                        .filter(|_| may_stop)
                        .and_then(|r| r.check(&tokens).map(|first| (r, first)));
                    finish = if let Some((r, first)) = repeated {
                        Some(FinishReason::Repetition {
                            ngram: r.ngram,
                            count: r.count,
                            first,
                        })
                    } else if tokens.len() >= params.max_tokens {
                        Some(FinishReason::Length)
                    } else if prompt.len() + tokens.len() >= context {
                        Some(FinishReason::ContextFull)
                    } else {
                        None
                    };
                    let safe = if finish.is_some() {
                        buf.bytes.len()
                    } else {
                        buf.bytes.len() - scan.hold
                    };
                    released = buf.release(safe, finish.is_some());
                }
            }
        }
        text.push_str(&released);
        let event = TokenEvent {
            index,
            id,
            bytes,
            end_token,
            text: &released,
            held: &buf.bytes[buf.sent..],
            finish: finish.as_ref(),
        };
        if sink.token(&event).is_break() && finish.is_none() {
            break FinishReason::Cancelled;
        }
        if let Some(f) = finish {
            break f;
        }
        next = model.forward(&[id], prompt.len() + index)?;
    };

    let decode_tokens = tokens.len().saturating_sub(1);
    timings.decode_tokens = decode_tokens;
    timings.decode_ms = decode_start.elapsed().as_secs_f64() * 1e3;
    timings.prefill_tokens_per_s = per_second(prompt.len(), timings.prefill_ms);
    timings.decode_tokens_per_s = per_second(decode_tokens, timings.decode_ms);
    Ok(Outcome {
        text,
        finish,
        tokens,
        prompt_tokens: prompt.len(),
        timings,
    })
}

fn per_second(n: usize, ms: f64) -> f64 {
    if ms > 0.0 { n as f64 * 1e3 / ms } else { 0.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settled_utf8_holds_only_a_completable_tail() {
        assert_eq!(utf8_settled(b"abc"), 3);
        assert_eq!(utf8_settled("aü".as_bytes()), 3);
        assert_eq!(utf8_settled(&"aü".as_bytes()[..2]), 1);
        assert_eq!(utf8_settled(&"a€".as_bytes()[..3]), 1);
        assert_eq!(utf8_settled(&[b'a', 0xFF]), 2);
        assert_eq!(utf8_settled(&[b'a', 0xE2, 0x28]), 3);
    }

    #[test]
    fn repetition_stop_fires_on_the_counted_occurrence() {
        let r = RepetitionStop { ngram: 2, count: 2 };
        assert_eq!(r.check(&[1, 2, 3]), None);
        assert_eq!(r.check(&[1, 2, 3, 1, 2]), Some(0));
        let r3 = RepetitionStop { ngram: 2, count: 3 };
        assert_eq!(r3.check(&[1, 2, 3, 1, 2]), None);
        assert_eq!(r3.check(&[1, 2, 3, 1, 2, 1, 2]), Some(0));
        // Overlapping occurrences count: "7 7 7" holds "7 7" twice.
        assert_eq!(r.check(&[7, 7, 7]), Some(0));
    }
}
