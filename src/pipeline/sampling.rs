//! From logits to one token id: bias, penalties, temperature, truncation, a seeded draw.
//!
//! The order is vLLM's (and so what OpenAI-style clients expect): logit bias, then repetition / frequency /
//! presence penalties, then temperature, then top-k, top-p and min-p on the tempered distribution, then a draw
//! from a seeded generator. Temperature 0 is greedy: the highest logit, the lowest id on a tie.
//! The same seed and settings give the same tokens.

use std::collections::HashMap;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use crate::Error;
use crate::pipeline::field::{Field, SettingsError};

/// Sampling settings. The defaults are greedy decoding.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SamplingParams {
    /// 0 = greedy.
    pub temperature: f32,
    /// 0 = off.
    pub top_k: usize,
    /// 1 = off.
    pub top_p: f32,
    /// 0 = off.
    pub min_p: f32,
    /// 1 = off. Divides positive logits and multiplies negative ones of every token seen in prompt or output.
    pub repetition_penalty: f32,
    /// Subtracted once per earlier occurrence in the output (OpenAI's `frequency_penalty`).
    pub frequency_penalty: f32,
    /// Subtracted once if the token occurred in the output (OpenAI's `presence_penalty`).
    pub presence_penalty: f32,
    /// Added to a token's logit; `-inf` bans it.
    pub logit_bias: Vec<(u32, f32)>,
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            repetition_penalty: 1.0,
            frequency_penalty: 0.0,
            presence_penalty: 0.0,
            logit_bias: Vec::new(),
            seed: 0,
        }
    }
}

impl SamplingParams {
    /// Checks ranges (and, when the vocabulary is known, the ids of `logit_bias`); the error names the field.
    pub fn validate(&self, vocab_size: Option<usize>) -> Result<(), SettingsError> {
        let bad = |field: Field, message: String| Err(SettingsError::new(field, message));
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return bad(
                Field::Temperature,
                format!("{} is not a finite number >= 0", self.temperature),
            );
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad(Field::TopP, format!("{} is not in (0, 1]", self.top_p));
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return bad(Field::MinP, format!("{} is not in [0, 1]", self.min_p));
        }
        if !(self.repetition_penalty > 0.0 && self.repetition_penalty.is_finite()) {
            return bad(
                Field::RepetitionPenalty,
                format!("{} is not a finite number > 0", self.repetition_penalty),
            );
        }
        for (field, v) in [
            (Field::FrequencyPenalty, self.frequency_penalty),
            (Field::PresencePenalty, self.presence_penalty),
        ] {
            if !v.is_finite() {
                return bad(field, format!("{v} is not a finite number"));
            }
        }
        // Every id outside the vocabulary is named, not only the first (the field names the first).
        if let Some(vocab_size) = vocab_size {
            let outside: Vec<u32> = self
                .logit_bias
                .iter()
                .map(|&(id, _)| id)
                .filter(|&id| id as usize >= vocab_size)
                .collect();
            match outside[..] {
                [] => {}
                [id] => {
                    return bad(
                        Field::LogitBias { id },
                        format!("token id {id} is outside the vocabulary (0..{vocab_size})"),
                    );
                }
                [first, ..] => {
                    let list: Vec<String> = outside.iter().map(u32::to_string).collect();
                    return bad(
                        Field::LogitBias { id: first },
                        format!(
                            "token ids {} are outside the vocabulary (0..{vocab_size})",
                            list.join(", ")
                        ),
                    );
                }
            }
        }
        for &(id, bias) in &self.logit_bias {
            if bias.is_nan() || bias == f32::INFINITY {
                return bad(
                    Field::LogitBias { id },
                    format!("bias {bias} for token {id} must be a number or -inf"),
                );
            }
        }
        Ok(())
    }
}

/// The sampler of one generation: settings plus what it has seen.
#[derive(Debug)]
pub struct Sampler {
    params: SamplingParams,
    rng: StdRng,
    /// Occurrences in the output, for frequency and presence penalties.
    output_counts: HashMap<u32, u32>,
    /// Every id in prompt or output, for the repetition penalty.
    seen: std::collections::HashSet<u32>,
}

impl Sampler {
    pub fn new(params: SamplingParams, prompt: &[u32]) -> Self {
        let rng = StdRng::seed_from_u64(params.seed);
        let seen = if params.repetition_penalty != 1.0 {
            prompt.iter().copied().collect()
        } else {
            Default::default()
        };
        Self {
            params,
            rng,
            output_counts: HashMap::new(),
            seen,
        }
    }

    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// Records a generated token (for the penalties).
    pub fn accept(&mut self, id: u32) {
        *self.output_counts.entry(id).or_default() += 1;
        if self.params.repetition_penalty != 1.0 {
            self.seen.insert(id);
        }
    }

    /// Picks the next token. `banned` ids get `-inf` first (end tokens before `min_tokens`).
    pub fn sample(&mut self, logits: &mut [f32], banned: &[u32]) -> Result<u32, Error> {
        let p = &self.params;
        for &(id, bias) in &p.logit_bias {
            if let Some(l) = logits.get_mut(id as usize) {
                *l += bias;
            }
        }
        for &id in banned {
            if let Some(l) = logits.get_mut(id as usize) {
                *l = f32::NEG_INFINITY;
            }
        }
        if p.repetition_penalty != 1.0 {
            for &id in &self.seen {
                if let Some(l) = logits.get_mut(id as usize) {
                    *l = if *l > 0.0 {
                        *l / p.repetition_penalty
                    } else {
                        *l * p.repetition_penalty
                    };
                }
            }
        }
        if p.frequency_penalty != 0.0 || p.presence_penalty != 0.0 {
            for (&id, &n) in &self.output_counts {
                if let Some(l) = logits.get_mut(id as usize) {
                    *l -= n as f32 * p.frequency_penalty + p.presence_penalty;
                }
            }
        }
        let best = argmax(logits).ok_or_else(|| Error::Invalid {
            field: "logit_bias".into(),
            message:
                "every token is banned (all logits are -inf); lift a ban or allow the end token"
                    .into(),
        })?;
        if p.temperature == 0.0 {
            return Ok(best);
        }
        // Tempered weights (the largest is 1), then vLLM's filters in order: top-k, top-p over what top-k
        // kept, min-p relative to the most likely token. Only as much is sorted as top-p needs.
        let max = logits[best as usize];
        let mut cands: Vec<(f32, u32)> = logits
            .iter()
            .enumerate()
            .filter(|(_, l)| l.is_finite())
            .map(|(i, &l)| (((l - max) / p.temperature).exp(), i as u32))
            .collect();
        if p.top_k > 0 && p.top_k < cands.len() {
            cands.select_nth_unstable_by(p.top_k - 1, by_weight);
            cands.truncate(p.top_k);
        }
        if p.top_p < 1.0 {
            let target = p.top_p * cands.iter().map(|c| c.0).sum::<f32>();
            let mut sorted = 64.min(cands.len());
            loop {
                sort_prefix(&mut cands, sorted);
                if sorted == cands.len()
                    || cands[..sorted].iter().map(|c| c.0).sum::<f32>() >= target
                {
                    break;
                }
                sorted = (sorted * 4).min(cands.len());
            }
            let mut acc = 0.0;
            let keep = cands[..sorted]
                .iter()
                .position(|c| {
                    acc += c.0;
                    acc >= target
                })
                .map_or(sorted, |i| i + 1);
            cands.truncate(keep);
        }
        if p.min_p > 0.0 {
            // The most likely token has weight 1 and survives every filter.
            cands.retain(|c| c.0 >= p.min_p);
        }
        let kept = &cands[..];
        let mass: f32 = kept.iter().map(|c| c.0).sum();
        let mut r = self.rng.random::<f32>() * mass;
        for c in kept {
            if r < c.0 {
                return Ok(c.1);
            }
            r -= c.0;
        }
        Ok(kept.last().map_or(best, |c| c.1))
    }
}

fn argmax(logits: &[f32]) -> Option<u32> {
    let mut best: Option<(u32, f32)> = None;
    for (i, &l) in logits.iter().enumerate() {
        if l > f32::NEG_INFINITY && best.is_none_or(|(_, b)| l > b) {
            best = Some((i as u32, l));
        }
    }
    best.map(|b| b.0)
}

/// Larger weight first; on a tie, the lower id.
fn by_weight(a: &(f32, u32), b: &(f32, u32)) -> std::cmp::Ordering {
    b.0.total_cmp(&a.0).then(a.1.cmp(&b.1))
}

/// Moves the `n` largest candidates to the front, in descending order.
fn sort_prefix(cands: &mut [(f32, u32)], n: usize) {
    if n < cands.len() {
        cands.select_nth_unstable_by(n, by_weight);
    }
    cands[..n].sort_unstable_by(by_weight);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logits() -> Vec<f32> {
        vec![1.0, 3.0, 2.0, 3.0, -1.0]
    }

    #[test]
    fn every_bias_id_outside_the_vocabulary_is_named() {
        let p = SamplingParams {
            logit_bias: vec![(3, 1.0), (100, 1.0), (7, 2.0), (200, -1.0)],
            ..SamplingParams::default()
        };
        let e = p.validate(Some(10)).unwrap_err();
        assert_eq!(e.field, Field::LogitBias { id: 100 });
        assert!(
            e.message.contains("token ids 100, 200 are outside"),
            "{e:?}"
        );
    }

    #[test]
    fn greedy_takes_the_lowest_id_among_equal_maxima() {
        let mut s = Sampler::new(SamplingParams::default(), &[]);
        assert_eq!(s.sample(&mut logits(), &[]).unwrap(), 1);
    }

    #[test]
    fn bias_to_minus_infinity_bans_a_token() {
        let params = SamplingParams {
            logit_bias: vec![(1, f32::NEG_INFINITY)],
            ..Default::default()
        };
        let mut s = Sampler::new(params, &[]);
        assert_eq!(s.sample(&mut logits(), &[]).unwrap(), 3);
    }

    #[test]
    fn banning_everything_is_an_error_not_a_panic() {
        let mut s = Sampler::new(SamplingParams::default(), &[]);
        let err = s.sample(&mut logits(), &[0, 1, 2, 3, 4]).unwrap_err();
        assert!(err.to_string().contains("every token is banned"), "{err}");
    }

    #[test]
    fn same_seed_same_draws_and_top_k_one_is_greedy() {
        let params = SamplingParams {
            temperature: 1.5,
            seed: 7,
            ..Default::default()
        };
        let draw = |params: &SamplingParams| {
            let mut s = Sampler::new(params.clone(), &[]);
            (0..50)
                .map(|_| s.sample(&mut logits(), &[]).unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(&params), draw(&params));
        assert!(
            draw(&params)
                .iter()
                .collect::<std::collections::HashSet<_>>()
                .len()
                > 2
        );
        let k1 = SamplingParams {
            top_k: 1,
            ..params.clone()
        };
        assert!(draw(&k1).iter().all(|&t| t == 1));
        let p = SamplingParams {
            top_p: 0.5,
            ..params.clone()
        };
        assert!(draw(&p).iter().all(|&t| t == 1 || t == 3));
        let m = SamplingParams {
            min_p: 0.9,
            ..params
        };
        assert!(draw(&m).iter().all(|&t| t == 1 || t == 3));
    }

    #[test]
    fn penalties_lower_repeated_tokens() {
        let params = SamplingParams {
            frequency_penalty: 1.5,
            ..Default::default()
        };
        let mut s = Sampler::new(params, &[]);
        s.accept(1);
        assert_eq!(s.sample(&mut logits(), &[]).unwrap(), 3);
        let params = SamplingParams {
            repetition_penalty: 2.0,
            ..Default::default()
        };
        let mut s = Sampler::new(params, &[1, 3]);
        assert_eq!(s.sample(&mut logits(), &[]).unwrap(), 2);
    }
}
