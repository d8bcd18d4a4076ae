//! Several tokens per step: prompt-lookup speculation, and the same steps staged on a replay.
//!
//! A **drafter** guesses the next tokens: the n-gram drafter finds the last few tokens (the longest of
//! `ngram_max` down to `ngram_min` that occurred before) earlier in the prompt and the output so far and
//! proposes the `draft_tokens` that followed them there, as llama.cpp's `llama-lookup` and vLLM's `ngram`
//! speculation do; a replay's script drafter proposes the script's own next tokens, so `--tokens-per-step K`
//! stages steps of K tokens with no weights.
//!
//! A **step** feeds the last token and its draft in one forward pass over their positions (the prefill
//! path, [`Model::forward_all`]), which gives the model's proposal after each of them. The proposals are
//! taken in token order, each through [`Sequence::accept`] exactly as plain decoding takes one: the sampler
//! draws from it with the same random stream (greedy takes the argmax), and the stop engine judges the token.
//! While the drawn token equals the drafted one, the next proposal is valid and the walk goes on
//! (llama.cpp's sample-and-accept); the first token that differs, or the one after a wholly accepted draft,
//! ends the step and is fed with the next draft. So the tokens are the ones plain decoding draws, for any
//! seed, sampler settings and penalties, and:
//! - a stop string, an end token, a stop token id or `max_tokens` met inside the step ends the generation
//!   at that token, with `min_tokens` respected, because the stop engine sees the step's tokens one at a
//!   time, in order; the proposals after it are never drawn from, so the rest of the draft is not in the
//!   text, the ids, the log-probabilities or `usage`, and the sampler has not moved past it;
//! - the KV cache past the last kept position holds the rejected draft's entries, which the next step's
//!   feed overwrites (a position's entry depends only on the tokens before it).
//!
//! Drafting is paced by what it buys ([`Pacer`]): the step times the model's passes by how many positions
//! they feed, keeps a running rate at which drafted tokens are accepted, and drafts the number of tokens
//! (none included) with the most tokens expected per millisecond: on a machine where a pass of six rows
//! costs three single-token steps, a draft must be accepted at better than even odds to pay. A text that
//! does not copy its context stops drafting and decodes at plain speed; the first draft found, and one
//! after every [`PROBE_AFTER`] plain steps, is tried short to check whether the text has begun to copy.
//! In a batch ([`Batch`](super::batch::Batch)) every sequence's draft rides in the step's one pass, and
//! the pacer weighs the whole pass: a draft makes every sequence's step longer, so it pays only where it
//! is accepted well.

use crate::Error;
use crate::pipeline::model::{Model, Next};
use crate::pipeline::sequence::Sequence;
use crate::pipeline::settings::GenerateParams;
pub use crate::pipeline::settings::{Drafter, Speculation};
use crate::pipeline::tokenizer::Vocab;

use super::sink::{Outcome, Sink, StepReport};

/// Plain steps after which a short draft is tried even when the pacer expects no gain.
pub const PROBE_AFTER: usize = 16;

/// The most positions one sequence's step feeds (a longer draft is capped here).
const MAX_ROWS: usize = 16;

/// The most positions of a pass the pacer keeps times for (a batch's pass feeds every sequence's rows).
const MAX_PASS: usize = 64;

/// Decides how many tokens to draft from measured pass times and the running acceptance rate.
#[derive(Debug, Clone)]
pub struct Pacer {
    /// Milliseconds of a pass feeding `r` positions (index `r`), a running mean; None until measured.
    ms: [Option<f64>; MAX_PASS + 1],
    /// The chance a drafted token is drawn as drafted, given the ones before it were: (successes, trials)
    /// with a prior of 2 in 4.
    hits: f64,
    trials: f64,
    /// Plain steps since the last draft.
    idle: usize,
}

impl Default for Pacer {
    fn default() -> Self {
        Self {
            ms: [None; MAX_PASS + 1],
            hits: 2.0,
            trials: 4.0,
            // The first draft found is tried (short), whatever the prior says.
            idle: PROBE_AFTER,
        }
    }
}

impl Pacer {
    /// The acceptance rate so far.
    pub fn rate(&self) -> f64 {
        self.hits / self.trials
    }

    /// The time of a pass of `rows` positions: measured, else the nearest measured pass scaled by the
    /// prior (a row more costs 40 % of a single-token step), in the prior's units when none is measured.
    fn time(&self, rows: usize) -> f64 {
        let rows = rows.clamp(1, MAX_PASS);
        if let Some(t) = self.ms[rows] {
            return t;
        }
        let scale = |r: usize| 1.0 + 0.4 * (r - 1) as f64;
        let nearest = (1..=MAX_PASS)
            .filter_map(|r| self.ms[r].map(|t| (r, t)))
            .min_by_key(|&(r, _)| r.abs_diff(rows));
        match nearest {
            Some((r, t)) => t * scale(rows) / scale(r),
            None => scale(rows),
        }
    }

    /// How many of `available` drafted tokens to feed (0: a plain step), a short probe after
    /// [`PROBE_AFTER`] plain steps. Alone (`others` 0) it is the count with the most tokens expected per
    /// millisecond; in a batch's pass, where the other sequences feed `others` rows and are expected to
    /// keep `others_tokens` tokens, the count with the most tokens of the whole pass per millisecond.
    pub fn choose(&mut self, available: usize, others: usize, others_tokens: f64) -> usize {
        let available = available.min(MAX_ROWS - 1);
        if available == 0 {
            return 0;
        }
        let p = self.rate();
        let base = others + 1;
        let (mut best, mut best_rate) = (0, (others_tokens + 1.0) / self.time(base));
        let mut expected = 1.0;
        let mut term = 1.0;
        for k in 1..=available {
            term *= p;
            expected += term;
            let rate = (others_tokens + expected) / self.time(base + k);
            if rate > best_rate {
                (best, best_rate) = (k, rate);
            }
        }
        if best == 0 && self.idle >= PROBE_AFTER {
            best = available.min(2);
        }
        if best == 0 {
            self.idle += 1;
        } else {
            self.idle = 0;
        }
        best
    }

    /// The tokens a draft of `k` is expected to keep (the fed token's and the accepted drafted ones).
    pub fn expected(&self, k: usize) -> f64 {
        let p = self.rate();
        (0..=k).map(|i| p.powi(i as i32)).sum()
    }

    /// Records a pass of `rows` positions that took `ms`.
    pub fn timed(&mut self, rows: usize, ms: f64) {
        let slot = &mut self.ms[rows.clamp(1, MAX_PASS)];
        *slot = Some(match *slot {
            Some(t) => 0.8 * t + 0.2 * ms,
            None => ms,
        });
    }

    /// Records a draft of `drafted` tokens of which the first `accepted` were drawn as drafted (`ended`:
    /// the generation ended inside it, so the rest was not judged).
    pub fn judged(&mut self, drafted: usize, accepted: usize, ended: bool) {
        let trials = accepted + usize::from(accepted < drafted && !ended);
        // Forget: the text may change its nature (a copied list ends, prose begins).
        let keep = 0.7;
        self.hits = self.hits * keep + accepted as f64;
        self.trials = self.trials * keep + trials as f64;
    }
}

/// The n-gram drafter: the tokens that followed the most recent earlier occurrence of the history's last
/// `n` tokens, for the longest `n` from `max` down to `min` that has one.
pub fn ngram_draft(history: &[u32], max: usize, min: usize, k: usize) -> Vec<u32> {
    let len = history.len();
    for n in (min.max(1)..=max).rev() {
        if n >= len {
            continue;
        }
        let key = &history[len - n..];
        // The most recent occurrence that is followed by at least one token.
        if let Some(start) = (0..len - n).rev().find(|&i| &history[i..i + n] == key) {
            let from = start + n;
            return history[from..(from + k).min(len)].to_vec();
        }
    }
    Vec::new()
}

/// One generation's speculation: the tokens fed so far (the drafter's source), its [`Pacer`], its steps.
/// [`generate_speculative`] drives it for one sequence; a [`Batch`](super::batch::Batch) drives one per
/// sequence, all in the same pass.
#[derive(Debug, Clone)]
pub struct Speculator {
    spec: Speculation,
    /// The prompt and the tokens generated so far.
    history: Vec<u32>,
    prompt_len: usize,
    pacer: Pacer,
    steps: usize,
}

impl Speculator {
    /// Checks the settings; `prompt` is the drafter's first source.
    pub fn new(spec: Speculation, prompt: &[u32]) -> Result<Self, Error> {
        spec.check()?;
        Ok(Self {
            spec,
            history: prompt.to_vec(),
            prompt_len: prompt.len(),
            pacer: Pacer::default(),
            steps: 0,
        })
    }

    /// The draft to feed after `feed` (the token just drawn and its position): at most the settings'
    /// `draft_tokens`, the context's room after it and the tokens `max_tokens` still allows, and as many
    /// as the pacer finds worth it (`others`, `others_tokens`: see [`Pacer::choose`]). A replay's script
    /// drafter ([`Drafter::Script`], `script` given) writes the script's next tokens, unpaced.
    pub fn draft(
        &mut self,
        feed: (u32, usize),
        context: usize,
        max_tokens: usize,
        script: Option<&[u32]>,
        others: usize,
        others_tokens: f64,
    ) -> Vec<u32> {
        let (id, pos) = feed;
        self.history.push(id);
        let generated = self.history.len() - self.prompt_len;
        let room = context
            .saturating_sub(pos + 1)
            .min(max_tokens.saturating_sub(generated + 1))
            .min(self.spec.draft_tokens);
        match self.spec.drafter {
            _ if room == 0 => Vec::new(),
            Drafter::Ngram { max, min } => {
                let mut d = ngram_draft(&self.history, max, min, room);
                d.truncate(self.pacer.choose(d.len(), others, others_tokens));
                d
            }
            Drafter::Script => {
                let s = script.unwrap_or_default();
                s[generated.min(s.len())..(generated + room).min(s.len())].to_vec()
            }
        }
    }

    /// The tokens a draft of `k` is expected to keep (for the next sequence's [`Speculator::draft`]).
    pub fn expected(&self, k: usize) -> f64 {
        self.pacer.expected(k)
    }

    /// Records the time of the pass that fed this step (`rows` positions in all, this sequence's and its
    /// companions').
    pub fn timed(&mut self, rows: usize, ms: f64) {
        self.pacer.timed(rows, ms);
    }

    /// Takes a step's proposals (after the fed token and after each drafted one) in token order through
    /// `seq`, as plain decoding takes one, while the drawn token equals the drafted one; reports the step
    /// to `sink`. Returns the next feed, or None when the generation ended in this step.
    pub fn take(
        &mut self,
        seq: &mut Sequence,
        draft: &[u32],
        proposals: Vec<Next>,
        vocab: &Vocab,
        sink: &mut dyn Sink,
    ) -> Result<Option<(u32, usize)>, Error> {
        let mut report = StepReport {
            index: self.steps,
            drafted: draft.to_vec(),
            accepted: 0,
            discarded: Vec::new(),
        };
        self.steps += 1;
        let mut next = None;
        for (j, proposal) in proposals.into_iter().enumerate() {
            match seq.accept(proposal, vocab, sink)? {
                None => {
                    // The generation ended at this step's token j (drawn as drafted or not): the draft
                    // after it is discarded.
                    let kept = j + usize::from(
                        j < draft.len() && seq.last_token() == draft.get(j).copied(),
                    );
                    report.accepted = kept.min(draft.len());
                    report.discarded = draft[report.accepted..].to_vec();
                    break;
                }
                Some((t, _)) if j < draft.len() && t == draft[j] => {
                    // Accepted: drawn as drafted, fed already; the next proposal follows it.
                    self.history.push(t);
                }
                Some(fed) => {
                    report.accepted = j;
                    next = Some(fed);
                    break;
                }
            }
        }
        if !draft.is_empty() {
            self.pacer
                .judged(draft.len(), report.accepted, next.is_none());
        }
        sink.step(&report)?;
        Ok(next)
    }
}

/// Runs one generation of `model` from `prompt`, several tokens per step. `script` is the replay's, for
/// [`Drafter::Script`].
pub fn generate_speculative(
    model: &mut dyn Model,
    vocab: &Vocab,
    prompt: &[u32],
    params: &GenerateParams,
    spec: &Speculation,
    script: Option<&[u32]>,
    sink: &mut dyn Sink,
) -> Result<Outcome, Error> {
    let mut spec_state = Speculator::new(*spec, prompt)?;
    if spec.drafter == Drafter::Script && script.is_none() {
        return Err(script_needed());
    }
    let mut seq = Sequence::new(vocab, prompt, params, model.context_length())?;
    let first = model.forward(prompt, 0)?;
    let Some(mut feed) = seq.accept(first, vocab, sink)? else {
        return Ok(seq.outcome());
    };
    loop {
        let draft = spec_state.draft(
            feed,
            model.context_length(),
            params.max_tokens,
            script,
            0,
            0.0,
        );
        let (id, pos) = feed;
        let t0 = std::time::Instant::now();
        let proposals = if draft.is_empty() {
            vec![model.forward(&[id], pos)?]
        } else {
            let mut tokens = Vec::with_capacity(draft.len() + 1);
            tokens.push(id);
            tokens.extend_from_slice(&draft);
            model.forward_all(0, &tokens, pos)?
        };
        spec_state.timed(draft.len() + 1, t0.elapsed().as_secs_f64() * 1e3);
        match spec_state.take(&mut seq, &draft, proposals, vocab, sink)? {
            Some(f) => feed = f,
            None => return Ok(seq.outcome()),
        }
    }
}

/// The error of `--tokens-per-step` without a replay to stage.
pub fn script_needed() -> Error {
    Error::Invalid {
        field: "--tokens-per-step".into(),
        message: "stages steps of a replay: give --replay (prompt lookup is --speculate ngram)"
            .into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_drafter_copies_what_followed_the_longest_recent_match() {
        // "a b c d" then "a b": the longest match is "a b", followed by "c d".
        let h = [1, 2, 3, 4, 9, 1, 2];
        assert_eq!(ngram_draft(&h, 3, 1, 5), vec![3, 4, 9, 1, 2]);
        assert_eq!(ngram_draft(&h, 3, 1, 2), vec![3, 4]);
        // The most recent occurrence wins.
        let h = [7, 1, 5, 7, 1, 6, 7, 1];
        assert_eq!(ngram_draft(&h, 2, 1, 1), vec![6]);
        // No earlier occurrence of even one token: nothing.
        assert!(ngram_draft(&[1, 2, 3], 3, 1, 4).is_empty());
        assert!(ngram_draft(&[], 3, 1, 4).is_empty());
        assert!(ngram_draft(&[5], 3, 1, 4).is_empty());
    }

    #[test]
    fn the_pacer_drafts_when_drafts_are_accepted_and_stops_when_they_are_not() {
        let mut p = Pacer::default();
        // Measured: a row more costs half a single-token step.
        for rows in 1..=6 {
            p.timed(rows, 10.0 + 5.0 * (rows - 1) as f64);
        }
        for _ in 0..10 {
            p.judged(5, 5, false);
        }
        assert!(p.rate() > 0.8);
        assert_eq!(p.choose(5, 0, 0.0), 5, "accepted drafts: draft all");
        for _ in 0..10 {
            p.judged(5, 0, false);
        }
        assert!(p.rate() < 0.3);
        let plain = (0..PROBE_AFTER)
            .map(|_| p.choose(5, 0, 0.0))
            .collect::<Vec<_>>();
        assert!(plain.iter().all(|&k| k == 0), "{plain:?}");
        assert_eq!(
            p.choose(5, 0, 0.0),
            2,
            "a probe after {PROBE_AFTER} plain steps"
        );
        assert_eq!(p.choose(0, 0, 0.0), 0);
    }

    #[test]
    fn bad_settings_name_their_flag() {
        let s = Speculation {
            drafter: Drafter::Ngram { max: 1, min: 2 },
            draft_tokens: 3,
        };
        assert!(s.check().unwrap_err().to_string().contains("--ngram"));
        let s = Speculation {
            draft_tokens: 0,
            ..Speculation::ngram()
        };
        assert!(
            s.check()
                .unwrap_err()
                .to_string()
                .contains("--draft-tokens")
        );
    }
}
