//! Several sequences at once: one KV cache per *slot*, and a decode step that feeds one token of each
//! running sequence through a single pass.
//!
//! Decoding one sequence is memory-bound: every token reads all the weights (about 96 MB for the default
//! model) to multiply them by one activation row. A step of N sequences multiplies the same weights by N
//! rows (the products already take several rows for prefill), so the weights are read once for all of them;
//! attention runs per sequence against its own slot's cache and position. Every row is computed with the
//! same operations in the same order as alone, so a sequence's logits do not depend on its companions
//! (`tests/model/batch_model.rs` holds the batched ids to `generate`'s).

use super::kernels::{BATCHED_ROWS, Kernels};
use super::kv::KvCache;
use super::quant::WType;
use super::{Llama, Logits};

/// The rows of one sequence in a forward chunk: `rows` tokens at positions `pos..` of the sequence in KV
/// slot `slot`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seg {
    pub slot: usize,
    pub pos: usize,
    pub rows: usize,
}

/// Activation rows a Q6_K product may take and still round as one row does. The kernels switch Q6_K
/// products of [`BATCHED_ROWS`] rows or more to llama.cpp's tiled form, which rounds differently from the
/// one-row form a sequence decoded alone gets; a decode step of a model with Q6_K matrices is therefore
/// split into passes of at most this many sequences.
pub(super) const Q6_K_SAME_AS_ONE_ROW: usize = BATCHED_ROWS - 1;

impl Llama {
    /// Replaces the KV caches by `slots` caches of `context` positions each (at most the model's context):
    /// `slots` sequences can then be kept at once. Memory is reserved, not used: a cache's pages become
    /// resident only as its positions are written. Sequences held before are forgotten.
    pub fn set_slots(&mut self, slots: usize, context: usize) -> Result<(), String> {
        if slots == 0 {
            return Err("at least one KV slot is needed".into());
        }
        let context = context.min(self.cfg.context);
        if context < 2 {
            return Err(format!(
                "a KV slot of {context} positions leaves no room to generate; give each slot at least 2"
            ));
        }
        let row = self.cfg.n_kv_head * self.cfg.head_dim;
        self.kv = (0..slots)
            .map(|_| KvCache::new(self.cfg.n_layer, context, row))
            .collect::<Result<_, _>>()?;
        self.slot_context = context;
        Ok(())
    }

    /// KV slots (sequences the model can hold at once).
    pub fn slots(&self) -> usize {
        self.kv.len()
    }

    /// Positions each slot holds.
    pub fn slot_context(&self) -> usize {
        self.slot_context
    }

    /// One decode step of several sequences: `steps[i] = (slot, token, pos)` feeds `token` at `pos` of the
    /// sequence in `slot` (each slot at most once). Returns the logits of every step, `vocab` values each,
    /// in the order of `steps`.
    pub fn decode(&mut self, steps: &[(usize, u32, usize)]) -> Result<Vec<f32>, String> {
        let rows: Vec<[u32; 1]> = steps.iter().map(|s| [s.1]).collect();
        let segs: Vec<(usize, &[u32], usize)> = steps
            .iter()
            .zip(&rows)
            .map(|(&(slot, _, pos), t)| (slot, &t[..], pos))
            .collect();
        self.decode_rows(&segs)
    }

    /// One step of several sequences, several positions each: `steps[i] = (slot, tokens, pos)` feeds
    /// `tokens` at `pos..` of the sequence in `slot` (each slot at most once; a step of speculative
    /// decoding feeds a token and its draft). Returns the logits after every fed token, `vocab` values
    /// each, the steps' rows in order. The weights are read once per pass for all the rows; a pass takes
    /// at most [`Q6_K_SAME_AS_ONE_ROW`] rows on a model with Q6_K matrices (a step's rows may then be
    /// split over passes), so every row's numbers are those it gets alone.
    pub fn decode_rows(&mut self, steps: &[(usize, &[u32], usize)]) -> Result<Vec<f32>, String> {
        let vocab = self.cfg.vocab;
        for (i, &(slot, tokens, pos)) in steps.iter().enumerate() {
            if slot >= self.kv.len() {
                return Err(format!(
                    "KV slot {slot} does not exist: the model holds {} sequences",
                    self.kv.len()
                ));
            }
            if steps[..i].iter().any(|s| s.0 == slot) {
                return Err(format!("KV slot {slot} is fed twice in one step"));
            }
            let end = pos.checked_add(tokens.len());
            if tokens.is_empty() || end.is_none_or(|e| e > self.slot_context) {
                return Err(format!(
                    "positions {pos}..{pos}+{} are not inside the context of {}",
                    tokens.len(),
                    self.slot_context
                ));
            }
            if let Some(&t) = tokens.iter().find(|&&t| t as usize >= vocab) {
                return Err(format!(
                    "token id {t} is outside the model's vocabulary of {vocab}"
                ));
            }
        }
        let per_pass = if self.has_q6_k() {
            Q6_K_SAME_AS_ONE_ROW
        } else {
            super::CHUNK
        }
        .max(1);
        let total: usize = steps.iter().map(|s| s.1.len()).sum();
        let mut out = Vec::with_capacity(total * vocab);
        // Fill passes of `per_pass` rows in order, a step's rows split where a pass is full.
        let (mut tokens, mut segs) = (Vec::new(), Vec::new());
        let mut flush = |me: &mut Self, tokens: &mut Vec<u32>, segs: &mut Vec<Seg>| {
            if tokens.is_empty() {
                return;
            }
            let kernels: Kernels = me.kernels;
            kernels.run(
                #[inline(always)]
                || me.forward_chunk(tokens, segs, Logits::All),
            );
            out.extend_from_slice(&me.scratch.logits[..tokens.len() * vocab]);
            tokens.clear();
            segs.clear();
        };
        for &(slot, step, pos) in steps {
            let mut at = 0;
            while at < step.len() {
                let take = (per_pass - tokens.len()).min(step.len() - at);
                tokens.extend_from_slice(&step[at..at + take]);
                segs.push(Seg {
                    slot,
                    pos: pos + at,
                    rows: take,
                });
                at += take;
                if tokens.len() == per_pass {
                    flush(self, &mut tokens, &mut segs);
                }
            }
        }
        flush(self, &mut tokens, &mut segs);
        Ok(out)
    }

    /// Copies positions `..n` of the sequence in slot `from` into slot `to`, so that a sequence whose
    /// tokens begin with the same `n` needs only the rest fed (prompt caching, as llama-server's). Done only
    /// where it changes no number: every row of a forward pass is then computed as in a whole prefill. A
    /// model with Q6_K matrices rounds a prompt's rows by how many it takes at once (see
    /// [`Q6_K_SAME_AS_ONE_ROW`]), so feeding the rest alone could change its numbers: it answers false and
    /// copies nothing.
    pub fn copy_prefix(&mut self, from: usize, to: usize, n: usize) -> Result<bool, String> {
        let slots = self.kv.len();
        if from >= slots || to >= slots {
            return Err(format!(
                "KV slots {from} and {to}: the model holds {slots} sequences"
            ));
        }
        if n > self.slot_context {
            return Err(format!(
                "{n} positions are more than a slot's context of {}",
                self.slot_context
            ));
        }
        if self.has_q6_k() {
            return Ok(false);
        }
        if from != to {
            let (src, dst) = if from < to {
                let (a, b) = self.kv.split_at_mut(to);
                (&a[from], &mut b[0])
            } else {
                let (a, b) = self.kv.split_at_mut(from);
                (&b[0], &mut a[to])
            };
            dst.copy_prefix_from(src, n);
        }
        Ok(true)
    }

    /// Whether a matrix is Q6_K: its products then round by how many rows they take at once.
    pub(super) fn has_q6_k(&self) -> bool {
        let w = &self.weights;
        let q6_k = |t: WType| matches!(t, WType::Q6_K | WType::Q6_K_X8);
        q6_k(w.output.wtype)
            || w.layers.iter().any(|l| {
                [&l.wq, &l.wk, &l.wv, &l.wo, &l.gate, &l.up, &l.down]
                    .iter()
                    .any(|m| q6_k(m.wtype))
            })
    }
}
