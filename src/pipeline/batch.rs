//! Generation a step at a time, and many generations at once.
//!
//! A [`Sequence`] is one generation's state: its own sampler (seed included), stop engine and timings. It
//! takes the model's proposal for its next token ([`Sequence::accept`]) and answers which token to feed
//! next, so the caller decides when the model runs: [`generate`](super::generate::generate) feeds it one
//! sequence's tokens, a [`Batch`] feeds the tokens of all its running sequences through one
//! [`Model::decode`] per step. Whatever runs beside it, a sequence sees the same logits (the model computes
//! each row as it would alone) and makes the same choices, so its text is exactly what it would be alone.
//!
//! A [`Batch`] holds up to [`Model::slots`] sequences in the model's KV slots: a sequence joins between
//! steps (its prompt prefilled on its own, [`Batch::join`]), every step decodes one token of each running
//! sequence in one pass ([`Batch::step`]), and a finished or cancelled one leaves at once, freeing its
//! slot. A sequence may instead bring its own model (a replay script): it takes no slot and steps beside
//! the others.

use std::ops::ControlFlow;
use std::panic::{AssertUnwindSafe, catch_unwind};

use crate::Error;
use crate::pipeline::model::{Model, Next};
use crate::pipeline::tokenizer::Vocab;

use super::sequence::Sequence;
use super::settings::{Drafter, GenerateParams};
use super::sink::{Outcome, Sink, StepProbs, StepReport, TokenEvent};
use super::speculate::Speculator;

/// Where a running sequence's tokens are computed.
enum Place {
    /// In the batch's model, in this KV slot.
    Slot(usize),
    /// In a model of its own (a replay), stepped beside the batch.
    Own(Box<dyn Model + Send>),
}

struct Running<S> {
    seq: Sequence,
    place: Place,
    /// The token to feed next and its position.
    feed: (u32, usize),
    /// Its speculation, when it drafts: its draft is fed with its token, in the same pass.
    spec: Option<Speculator>,
    max_tokens: usize,
    sink: S,
}

/// Up to [`Model::slots`] sequences decoded together; `S` is each sequence's sink (and whatever its
/// caller keeps beside it).
pub struct Batch<S> {
    running: Vec<Running<S>>,
    free: Vec<usize>,
    /// Per KV slot, the prompt whose positions it holds (empty: unknown). A joining prompt that begins
    /// with the same tokens as one of them starts from a copy of those positions (prompt caching), where
    /// the model can copy them without changing a number ([`Model::copy_prefix`]).
    cached: Vec<Vec<u32>>,
    /// Prompt positions taken from the cache instead of computed, in all.
    reused: usize,
}

/// A sequence that left the batch: its sink, and how it ended.
pub type Done<S> = (S, Result<Outcome, Error>);

impl<S: Sink> Batch<S> {
    /// A batch over `slots` KV slots (the model's [`Model::slots`]).
    pub fn new(slots: usize) -> Self {
        Self {
            running: Vec::new(),
            free: (0..slots.max(1)).rev().collect(),
            cached: vec![Vec::new(); slots.max(1)],
            reused: 0,
        }
    }

    /// Prompt positions taken from another sequence's KV slot rather than computed, since the batch began.
    pub fn reused_positions(&self) -> usize {
        self.reused
    }

    /// The free slot whose cached prompt shares the longest beginning with `prompt` (the most recently
    /// freed among equals), taken out of the free list.
    fn take_slot(&mut self, prompt: &[u32]) -> Option<usize> {
        let best = (0..self.free.len())
            .rev()
            .max_by_key(|&i| common_prefix(&self.cached[self.free[i]], prompt))?;
        Some(self.free.remove(best))
    }

    /// The slot holding the longest beginning of `prompt`, and its length, at most all but the prompt's
    /// last token (whose logits are needed).
    fn prefix_source(&self, prompt: &[u32]) -> Option<(usize, usize)> {
        let limit = prompt.len().saturating_sub(1);
        (0..self.cached.len())
            .map(|s| (s, common_prefix(&self.cached[s], prompt).min(limit)))
            .filter(|&(_, n)| n > 0)
            .max_by_key(|&(_, n)| n)
    }

    /// Sequences running.
    pub fn len(&self) -> usize {
        self.running.len()
    }

    pub fn is_empty(&self) -> bool {
        self.running.is_empty()
    }

    /// Whether a sequence that needs a slot can join now.
    pub fn has_room(&self) -> bool {
        !self.free.is_empty()
    }

    /// The running sequences' sinks.
    pub fn sinks(&self) -> impl Iterator<Item = &S> {
        self.running.iter().map(|r| &r.sink)
    }

    /// Starts a generation: checks it, prefills its prompt (alone, between steps) in a free slot of
    /// `model`, or in `own` model when given, and takes its first token. Returns it as done when it
    /// finished at once or failed; otherwise it runs from the next [`Batch::step`]. Without a free slot
    /// (see [`Batch::has_room`]) it fails.
    #[allow(clippy::too_many_arguments)]
    pub fn join(
        &mut self,
        model: &mut dyn Model,
        own: Option<Box<dyn Model + Send>>,
        vocab: &Vocab,
        prompt: &[u32],
        params: &GenerateParams,
        mut sink: S,
    ) -> Option<Done<S>> {
        let mut place = match own {
            Some(m) => Place::Own(m),
            None => match self.take_slot(prompt) {
                Some(slot) => Place::Slot(slot),
                None => {
                    let e = Error::Backend("no free KV slot for another sequence".into());
                    return Some((sink, Err(e)));
                }
            },
        };
        let context = match &place {
            Place::Own(m) => m.context_length(),
            Place::Slot(_) => model.context_length(),
        };
        let source = match place {
            Place::Slot(slot) => {
                let source = self.prefix_source(prompt);
                self.cached[slot].clear();
                source
            }
            Place::Own(_) => None,
        };
        let cached = &mut self.cached;
        let reused = &mut self.reused;
        let scripted = matches!(&place, Place::Own(m) if m.script().is_some());
        let spec = match params.speculation {
            Some(s) if s.drafter == Drafter::Script && !scripted => {
                Some(Err(super::speculate::script_needed()))
            }
            Some(s) => Some(Speculator::new(s, prompt)),
            None => None,
        }
        .transpose();
        let result = spec
            .and_then(|spec| Sequence::new(vocab, prompt, params, context).map(|seq| (seq, spec)));
        let result = result.and_then(|(mut seq, spec)| {
            let scoring = sink.wants_prompt_probs();
            let (next, probs) = guarded(|| match &mut place {
                Place::Own(_) if scoring => Err(Error::Invalid {
                    field: "logprobs".into(),
                    message:
                        "a replayed generation has no model to give its prompt's probabilities"
                            .into(),
                }),
                Place::Own(m) => Ok((m.forward(prompt, 0)?, Vec::new())),
                Place::Slot(slot) if scoring => {
                    // Every prompt position's logits, in the prefill's one pass.
                    let (k, ends) = (sink.top_probs(), seq.end_tokens());
                    let mut probs = Vec::with_capacity(prompt.len() - 1);
                    let mut last = Vec::new();
                    let mut i = 0;
                    model.forward_each(*slot, prompt, 0, &mut |logits| {
                        i += 1;
                        match prompt.get(i) {
                            Some(&id) => probs.push(StepProbs::with_top(logits, id, ends, k)),
                            None => last = logits.to_vec(),
                        }
                    })?;
                    cached[*slot] = prompt.to_vec();
                    Ok((Next::Logits(last), probs))
                }
                Place::Slot(slot) => {
                    let n = match source {
                        Some((from, n)) if model.copy_prefix(from, *slot, n)? => n,
                        _ => 0,
                    };
                    let next = model.forward_in(*slot, &prompt[n..], n)?;
                    *reused += n;
                    cached[*slot] = prompt.to_vec();
                    Ok((next, Vec::new()))
                }
            })?;
            if sink.prompt(probs)?.is_break() {
                seq.end_at_prompt();
                return Ok((seq, spec, None));
            }
            let feed = seq.accept(next, vocab, &mut sink)?;
            Ok((seq, spec, feed))
        });
        match result {
            Ok((seq, spec, Some(feed))) => {
                self.running.push(Running {
                    seq,
                    place,
                    feed,
                    spec,
                    max_tokens: params.max_tokens,
                    sink,
                });
                None
            }
            Ok((seq, _, None)) => {
                self.release(&place);
                Some((sink, Ok(seq.outcome())))
            }
            Err(e) => {
                self.release(&place);
                Some((sink, Err(e)))
            }
        }
    }

    fn release(&mut self, place: &Place) {
        if let Place::Slot(s) = place {
            self.free.push(*s);
        }
    }

    /// Ends the running sequences whose sink `gone` says nobody reads any more (`Cancelled`), at once.
    pub fn cancel_where(&mut self, gone: impl Fn(&S) -> bool) -> Vec<Done<S>> {
        let mut done = Vec::new();
        let mut i = 0;
        while i < self.running.len() {
            if gone(&self.running[i].sink) {
                let r = self.running.swap_remove(i);
                self.release(&r.place);
                done.push((r.sink, Ok(r.seq.outcome())));
            } else {
                i += 1;
            }
        }
        done
    }

    /// One decode step of every running sequence: the ones in slots in one pass ([`Model::decode`], or
    /// [`Model::decode_rows`] when some feed a draft with their token), the ones with their own model
    /// beside it. Returns those that finished (or failed: a failure of the shared pass fails every
    /// sequence in it).
    pub fn step(&mut self, model: &mut dyn Model, vocab: &Vocab) -> Vec<Done<S>> {
        let batched: Vec<usize> = (0..self.running.len())
            .filter(|&i| matches!(self.running[i].place, Place::Slot(_)))
            .collect();
        let drafts = self.drafts(model, &batched);
        let mut nexts: Vec<Option<Result<Vec<Next>, Error>>> =
            (0..self.running.len()).map(|_| None).collect();
        if !batched.is_empty() {
            let t0 = std::time::Instant::now();
            let result = if drafts.iter().all(Vec::is_empty) {
                let steps: Vec<(usize, u32, usize)> = batched
                    .iter()
                    .map(|&i| {
                        (
                            self.slot_of(i),
                            self.running[i].feed.0,
                            self.running[i].feed.1,
                        )
                    })
                    .collect();
                guarded(|| model.decode(&steps))
                    .map(|out| out.into_iter().map(|next| vec![next]).collect::<Vec<_>>())
            } else {
                let rows: Vec<Vec<u32>> = batched
                    .iter()
                    .map(|&i| [&[self.running[i].feed.0][..], &drafts[i]].concat())
                    .collect();
                let steps: Vec<(usize, &[u32], usize)> = batched
                    .iter()
                    .zip(&rows)
                    .map(|(&i, r)| (self.slot_of(i), &r[..], self.running[i].feed.1))
                    .collect();
                guarded(|| model.decode_rows(&steps))
            };
            let ms = t0.elapsed().as_secs_f64() * 1e3;
            let fed = batched.len() + batched.iter().map(|&i| drafts[i].len()).sum::<usize>();
            for &i in &batched {
                if let Some(sp) = &mut self.running[i].spec {
                    sp.timed(fed, ms);
                }
            }
            match result {
                Ok(out) if out.len() == batched.len() => {
                    for (&i, next) in batched.iter().zip(out) {
                        nexts[i] = Some(Ok(next));
                    }
                }
                Ok(out) => {
                    let msg = format!(
                        "the model answered {} of {} sequences in a step",
                        out.len(),
                        batched.len()
                    );
                    for &i in &batched {
                        nexts[i] = Some(Err(Error::Backend(msg.clone())));
                    }
                }
                Err(e) => {
                    let msg = e.to_string();
                    let mut first = Some(e);
                    for &i in &batched {
                        let e = first.take().unwrap_or_else(|| Error::Backend(msg.clone()));
                        nexts[i] = Some(Err(e));
                    }
                }
            }
        }
        for (i, r) in self.running.iter_mut().enumerate() {
            if let Place::Own(m) = &mut r.place {
                let (t, pos) = r.feed;
                let tokens = [&[t][..], &drafts[i]].concat();
                nexts[i] = Some(guarded(|| m.forward_all(0, &tokens, pos)));
            }
        }
        // Take each step's proposals; walk backwards so swap_remove keeps the unvisited indices.
        let mut done = Vec::new();
        for i in (0..self.running.len()).rev() {
            let next = nexts[i].take().expect("every running sequence was stepped");
            let r = &mut self.running[i];
            let result = next.and_then(|proposals| match &mut r.spec {
                Some(sp) => sp.take(&mut r.seq, &drafts[i], proposals, vocab, &mut r.sink),
                None => match proposals.into_iter().next() {
                    Some(next) => r.seq.accept(next, vocab, &mut r.sink),
                    None => Err(Error::Backend("the model gave no proposal".into())),
                },
            });
            match result {
                Ok(Some(feed)) => r.feed = feed,
                Ok(None) => {
                    let r = self.running.swap_remove(i);
                    self.release(&r.place);
                    done.push((r.sink, Ok(r.seq.outcome())));
                }
                Err(e) => {
                    let r = self.running.swap_remove(i);
                    self.release(&r.place);
                    done.push((r.sink, Err(e)));
                }
            }
        }
        done
    }

    /// The KV slot of running sequence `i` (one that has a slot).
    fn slot_of(&self, i: usize) -> usize {
        match self.running[i].place {
            Place::Slot(slot) => slot,
            Place::Own(_) => {
                unreachable!("only sequences in slots are fed through the batch's pass")
            }
        }
    }

    /// Each running sequence's draft for this step (empty for one that does not speculate). The ones in
    /// slots draft in turn, each pacer told the rows the others feed in the same pass.
    fn drafts(&mut self, model: &dyn Model, batched: &[usize]) -> Vec<Vec<u32>> {
        let mut drafts = vec![Vec::new(); self.running.len()];
        let (mut rows, mut kept) = (0usize, 0.0f64);
        for (n, &i) in batched.iter().enumerate() {
            let rest = batched.len() - n - 1;
            let r = &mut self.running[i];
            if let Some(sp) = &mut r.spec {
                let d = sp.draft(
                    r.feed,
                    model.context_length(),
                    r.max_tokens,
                    None,
                    rows + rest,
                    kept + rest as f64,
                );
                kept += sp.expected(d.len());
                drafts[i] = d;
            } else {
                kept += 1.0;
            }
            rows += 1 + drafts[i].len();
        }
        for (i, r) in self.running.iter_mut().enumerate() {
            if let (Place::Own(m), Some(sp)) = (&r.place, &mut r.spec) {
                drafts[i] = sp.draft(r.feed, m.context_length(), r.max_tokens, m.script(), 0, 0.0);
            }
        }
        drafts
    }
}

/// How many tokens `a` and `b` begin with alike.
fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// Runs a model call, turning a panic in the backend into an error.
fn guarded<T>(f: impl FnOnce() -> Result<T, Error>) -> Result<T, Error> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        Err(Error::Backend(format!("the model panicked: {what}")))
    })
}

/// Runs every job to its end through one [`Batch`] over `model`'s slots: jobs join in order as slots free
/// up. Returns each job's sink and result, in the order of `jobs`. Each result is the one
/// [`generate`](super::generate::generate) gives for the job alone.
pub fn generate_all<S: Sink>(
    model: &mut dyn Model,
    vocab: &Vocab,
    jobs: Vec<(Vec<u32>, GenerateParams, S)>,
) -> Vec<Done<S>> {
    generate_all_with(model, vocab, jobs, &mut |_, _, _| {})
}

/// [`generate_all`], telling `on_done` of each job as it ends (its index, sink and result).
#[allow(clippy::type_complexity)]
pub fn generate_all_with<S: Sink>(
    model: &mut dyn Model,
    vocab: &Vocab,
    jobs: Vec<(Vec<u32>, GenerateParams, S)>,
    on_done: &mut dyn FnMut(usize, &S, &Result<Outcome, Error>),
) -> Vec<Done<S>> {
    let n = jobs.len();
    let mut batch: Batch<Tagged<usize, S>> = Batch::new(model.slots());
    let mut out: Vec<Option<Done<S>>> = (0..n).map(|_| None).collect();
    let mut put = |done: Vec<Done<Tagged<usize, S>>>, out: &mut Vec<Option<Done<S>>>| {
        for (t, r) in done {
            on_done(t.tag, &t.sink, &r);
            out[t.tag] = Some((t.sink, r));
        }
    };
    let mut pending = jobs.into_iter().enumerate();
    loop {
        while batch.has_room() {
            let Some((i, (prompt, params, sink))) = pending.next() else {
                break;
            };
            let sink = Tagged { tag: i, sink };
            if let Some(d) = batch.join(model, None, vocab, &prompt, &params, sink) {
                put(vec![d], &mut out);
            }
        }
        if batch.is_empty() {
            break;
        }
        let done = batch.step(model, vocab);
        put(done, &mut out);
    }
    out.into_iter()
        .map(|d| d.expect("every job ends"))
        .collect()
}

/// A sink with a tag riding along (which job, which choice).
pub struct Tagged<T, S> {
    pub tag: T,
    pub sink: S,
}

impl<T, S: Sink> Sink for Tagged<T, S> {
    fn token(&mut self, event: &TokenEvent<'_>) -> Result<ControlFlow<()>, Error> {
        self.sink.token(event)
    }

    fn wants_probs(&self) -> bool {
        self.sink.wants_probs()
    }

    fn top_probs(&self) -> usize {
        self.sink.top_probs()
    }

    fn wants_prompt_probs(&self) -> bool {
        self.sink.wants_prompt_probs()
    }

    fn prompt(&mut self, probs: Vec<StepProbs>) -> Result<ControlFlow<()>, Error> {
        self.sink.prompt(probs)
    }

    fn step(&mut self, report: &StepReport) -> Result<(), Error> {
        self.sink.step(report)
    }
}
