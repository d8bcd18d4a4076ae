//! stoplab's own forward pass for the CPU: weights memory-mapped and used in place, one sequence or several
//! side by side (one KV slot each, [`slots`]).
//!
//! Three architectures share the pass ([`Arch`]): `llama` (SmolLM2), `qwen2` (Qwen2.5: q/k/v biases, NEOX
//! rope) and `gemma3` (Gemma 3: embeddings scaled by √dim, per-head q/k RMS norms before rope, RMS norms
//! after attention and after the feed-forward, GELU(tanh)-gated feed-forward through ggml's f16 table,
//! keys 256 wide over an embedding of 640, and sliding-window layers with their own rope base). Each
//! follows llama.cpp's graph for that architecture (`src/models/{llama,qwen2,gemma3}.cpp`) and ggml's CPU
//! numerics, so the greedy ids agree with llama.cpp's (`tests/model/families_model.rs`, `tests/model/real_model.rs`).
//!
//! Why not candle's `quantized_llama`: it concatenates the whole KV cache at every step (a per-token cost
//! that grows with the context), dequantizes the token embedding to a 113 MB f32 table, allocates every
//! intermediate tensor, and candle 0.11's Q4_1 dot product is the scalar reference loop. Here, by file:
//!
//! * [`weights`]: the file stays memory-mapped; the tied output/embedding matrix stays quantized (embedding
//!   rows are dequantized one token at a time). Every header field the pass relies on is checked against the
//!   tensors it describes before anything is read.
//! * [`kv`]: the KV cache is preallocated for the whole context as f16 (as llama.cpp keeps it) and written
//!   in place; pages are touched only as positions fill, so peak RSS follows the context used.
//! * [`quant`]: the weight formats (Q4_1, Q5_0, Q8_0, Q4_K, Q6_K, as ggml lays them out, and each repacked
//!   8 rows at a time, which is how the layers' and output matrices are multiplied on x86-64); matrix
//!   products quantize the activations once per row into the format the weights pair with (Q8_1, Q8_0, Q8_K).
//! * [`matmul`]: products split the weight rows into units of parallel work and hand each to a kernel tile
//!   ([`kernels`] `shape`): a repacked tile is a group of 8 weight rows, each a lane of the products,
//!   against the one activation row in decode (each weight read once, the next weights asked for 8 KiB
//!   ahead inside the kernels, spread among the arithmetic: the hardware prefetcher stops at every 4 KiB
//!   page) and 4 activation rows in prefill and batched decode (8 with the AVX-512 set's 32 registers).
//! * [`slots`]: several sequences in one step, each in its own KV slot: the weights are read once for all
//!   of them, and every row is computed as it would be alone.
//! * [`attention`]: the query heads that share a KV head are taken together (up to 8), so each cached row is
//!   read and widened from f16 once for all of them.
//! * [`kernels`]: the integer dot products and f16 attention loops, in scalar, AVX2 and AVX-512 sets chosen
//!   at run time by CPU feature detection, once, at load: a build without `-C target-cpu=native` runs the
//!   same kernels, and no build executes an instruction its CPU lacks. Every set gives bit-identical sums,
//!   so results do not depend on the CPU: ggml's order for Q4_K and Q6_K, and for Q4_1, Q5_0 and Q8_0 one
//!   float chain per output (llama.cpp's vec_dot keeps 8 lanes; the ids agree up to near-ties).
//! * [`parallel`]: work is split over candle's persistent barrier pool (`--threads` workers); workers write
//!   only through disjoint blocks of the output. `unsafe` lives in `kernels`, `parallel`, and the two
//!   mappings (`weights`, `kv`).
//!
//! Norm, rope, attention and SwiGLU work on preallocated scratch buffers: no allocation per token.
//! Numerics follow ggml's CPU path (the same quantization of activations, f16 K/V), so the greedy ids agree
//! with llama.cpp's; `tests/model/llama_logits.rs` holds the logits to candle's reference implementation.

mod attention;
mod kernels;
mod kv;
mod matmul;
mod parallel;
mod quant;
mod slots;
mod weights;

use std::fs::File;

use candle_core::quantized::gguf_file::Content;

use attention::{attention, attention_each};
use kv::KvCache;
use matmul::matmul_many;
use quant::Act;
use weights::Weights;

pub use kernels::{Isa, KERNEL_FORMATS, Kernels, kernel_rate};
pub use slots::Seg;
pub use weights::unsupported;

/// Threads that run the forward pass (candle's barrier pool, started on the first call).
pub fn threads() -> usize {
    parallel::threads()
}

/// Checks the header fields a forward pass of the file's architecture relies on (head counts and widths,
/// dimensions, block count, each tensor's shape including biases and extra norms, sliding window, context
/// length, epsilon), so that neither backend divides by zero or reads past a tensor. Errors name the field.
pub fn check_header(content: &Content) -> Result<(), String> {
    weights::config(content).map(|_| ())
}

/// Prompt tokens per forward chunk: bounds the scratch memory for long prompts.
const CHUNK: usize = 256;

/// The architectures this pass runs: llama's block, and two variations on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// Llama (SmolLM2): adjacent-pair rope, SwiGLU.
    Llama,
    /// Qwen2 (Qwen2.5): llama plus q/k/v biases, NEOX rope (the two halves of a head rotated together).
    Qwen2,
    /// Gemma 3: embeddings × √dim, per-head q/k RMS norms before rope, RMS norms after attention and after
    /// the feed-forward (before each residual add), GELU(tanh)-gated feed-forward, NEOX rope, and
    /// sliding-window layers with their own rope base.
    Gemma3,
}

impl Arch {
    pub const ALL: [Arch; 3] = [Arch::Llama, Arch::Qwen2, Arch::Gemma3];

    /// `general.architecture`, and the prefix of the architecture's metadata keys.
    pub fn name(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Qwen2 => "qwen2",
            Arch::Gemma3 => "gemma3",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.name() == name)
    }

    /// Rope rotates the pairs (i, i + head_dim/2) (GGML's NEOX mode) rather than adjacent pairs.
    fn neox(self) -> bool {
        self != Arch::Llama
    }
}

/// Sliding-window attention: the layers it applies to see only the last `window` positions.
#[derive(Debug, Clone, Copy)]
pub struct Swa {
    pub window: usize,
    /// Every `pattern`-th layer (the last of each group) attends globally; the others slide.
    pub pattern: usize,
    /// The sliding layers' rope base.
    pub rope_base: f32,
}

/// Model dimensions read from the GGUF metadata.
#[derive(Debug, Clone, Copy)]
pub struct Config {
    pub arch: Arch,
    pub n_layer: usize,
    pub dim: usize,
    pub n_head: usize,
    pub n_kv_head: usize,
    pub head_dim: usize,
    pub ffn: usize,
    pub vocab: usize,
    pub context: usize,
    pub eps: f32,
    pub rope_base: f32,
    pub swa: Option<Swa>,
}

impl Config {
    /// Width of the query (and attention output) rows: `n_head × head_dim`, which need not be `dim`.
    pub fn q_dim(&self) -> usize {
        self.n_head * self.head_dim
    }

    /// The attention window of layer `l` (None: all positions), as llama.cpp's pattern: a layer slides
    /// unless `l % pattern == pattern - 1`.
    pub fn window(&self, l: usize) -> Option<usize> {
        let s = self.swa?;
        (l % s.pattern < s.pattern - 1).then_some(s.window)
    }
}

/// Which rows of a forward chunk get logits.
#[derive(Clone, Copy)]
enum Logits {
    None,
    /// The last row's (a prompt chunk).
    Last,
    /// Every row's (a batched decode step: one row per sequence; [`Llama::forward_rows`]).
    All,
}

/// Growable scratch buffers, reused across calls.
#[derive(Default)]
struct Scratch {
    x: Vec<f32>,
    xn: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    att: Vec<f32>,
    gate: Vec<f32>,
    up: Vec<f32>,
    act: Act,
    rope: Vec<(f32, f32)>,
    /// The rope table of the sliding-window layers (their own base).
    rope_swa: Vec<(f32, f32)>,
    logits: Vec<f32>,
    /// Attention scores of one decode step split over several threads: `[head][position]`.
    scores: Vec<f32>,
}

/// The loaded model and its KV caches: one per slot ([`Llama::set_slots`]; one slot of the whole context
/// after loading).
pub struct Llama {
    cfg: Config,
    weights: Weights,
    kv: Vec<KvCache>,
    /// Positions each slot's cache holds (the model's context unless [`Llama::set_slots`] said less).
    slot_context: usize,
    kernels: Kernels,
    scratch: Scratch,
}

impl Llama {
    /// Maps the file and indexes its tensors. `content` is the file's header. Errors name the header field
    /// or tensor at fault.
    pub fn load(file: &File, content: &Content) -> Result<Self, String> {
        if let Some(why) = unsupported(content) {
            return Err(why);
        }
        let cfg = weights::config(content)?;
        let weights = weights::load(file, content, &cfg)?;
        let kv = KvCache::new(cfg.n_layer, cfg.context, cfg.n_kv_head * cfg.head_dim)?;
        Ok(Self {
            cfg,
            weights,
            kv: vec![kv],
            slot_context: cfg.context,
            kernels: Kernels::detect(),
            scratch: Scratch::default(),
        })
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The kernel set in use (the best this CPU runs, unless set).
    pub fn kernels(&self) -> Kernels {
        self.kernels
    }

    /// Runs on another kernel set (they give the same results; for tests and benchmarks).
    pub fn set_kernels(&mut self, kernels: Kernels) {
        self.kernels = kernels;
    }

    /// Feeds `tokens` at positions `pos..` of the sequence in KV slot `slot` and returns the logits after
    /// the last one. The slot's cache beyond `pos` is overwritten.
    pub fn forward_in(
        &mut self,
        slot: usize,
        tokens: &[u32],
        pos: usize,
    ) -> Result<&[f32], String> {
        self.check_feed(slot, tokens, pos)?;
        let mut at = pos;
        for chunk in tokens.chunks(CHUNK) {
            let last = at + chunk.len() == pos + tokens.len();
            let logits = if last { Logits::Last } else { Logits::None };
            self.run_chunk(slot, chunk, at, logits);
            at += chunk.len();
        }
        Ok(&self.scratch.logits)
    }

    /// [`Llama::forward_in`] that hands the logits after *every* token to `each`, in order (`vocab` values
    /// each): the distribution each next token was drawn from, for a prompt's log probabilities or to
    /// verify several tokens in one pass. Each row's numbers are those the decode path gives it, fed one
    /// token at a time: the rows are computed together, except that a model with Q6_K matrices takes them
    /// a few at a time (see [`slots::Q6_K_SAME_AS_ONE_ROW`]), where its products round as one row's do.
    pub fn forward_rows(
        &mut self,
        slot: usize,
        tokens: &[u32],
        pos: usize,
        each: &mut dyn FnMut(&[f32]),
    ) -> Result<(), String> {
        self.check_feed(slot, tokens, pos)?;
        let vocab = self.cfg.vocab;
        let per_pass = if self.has_q6_k() {
            slots::Q6_K_SAME_AS_ONE_ROW
        } else {
            CHUNK
        };
        let mut at = pos;
        for chunk in tokens.chunks(per_pass) {
            self.run_chunk(slot, chunk, at, Logits::All);
            for row in self.scratch.logits[..chunk.len() * vocab].chunks_exact(vocab) {
                each(row);
            }
            at += chunk.len();
        }
        Ok(())
    }

    /// Checks a feed of `tokens` at `pos..` of `slot`: inside the slot's context, a slot that exists, ids
    /// inside the vocabulary.
    fn check_feed(&self, slot: usize, tokens: &[u32], pos: usize) -> Result<(), String> {
        let end = pos
            .checked_add(tokens.len())
            .filter(|&e| e <= self.slot_context);
        if tokens.is_empty() || end.is_none() {
            return Err(format!(
                "positions {pos}..{pos}+{} are not inside the context of {}",
                tokens.len(),
                self.slot_context
            ));
        }
        if slot >= self.kv.len() {
            return Err(format!(
                "KV slot {slot} does not exist: the model holds {} sequences",
                self.kv.len()
            ));
        }
        if let Some(&t) = tokens.iter().find(|&&t| t as usize >= self.cfg.vocab) {
            return Err(format!(
                "token id {t} is outside the model's vocabulary of {}",
                self.cfg.vocab
            ));
        }
        Ok(())
    }

    /// One chunk of one sequence's tokens at `pos..`, on the kernel set in use.
    fn run_chunk(&mut self, slot: usize, chunk: &[u32], pos: usize, logits: Logits) {
        let seg = Seg {
            slot,
            pos,
            rows: chunk.len(),
        };
        let kernels = self.kernels;
        kernels.run(
            #[inline(always)]
            || self.forward_chunk(chunk, &[seg], logits),
        );
    }

    /// The rows of `tokens`, in order, are the segments `segs` (each the next `rows` tokens of the sequence
    /// in its slot, from its `pos`): every matrix product takes all of them at once, attention runs per
    /// segment against its own slot's cache. Each row's numbers are those it would have alone.
    #[inline(always)]
    fn forward_chunk(&mut self, tokens: &[u32], segs: &[Seg], want_logits: Logits) {
        let cfg = self.cfg;
        let kernels = self.kernels;
        let b = tokens.len();
        let (dim, kv, ffn) = (cfg.dim, cfg.n_kv_head * cfg.head_dim, cfg.ffn);
        let (qd, hd) = (cfg.q_dim(), cfg.head_dim);
        let s = &mut self.scratch;
        grow(&mut s.x, b * dim);
        grow(&mut s.xn, b * dim);
        grow(&mut s.q, b * qd);
        grow(&mut s.k, b * kv);
        grow(&mut s.v, b * kv);
        grow(&mut s.att, b * qd);
        grow(&mut s.gate, b * ffn);
        grow(&mut s.up, b * ffn);
        let w = &self.weights;
        let map: &[u8] = &w.map;

        for (i, &t) in tokens.iter().enumerate() {
            w.embd
                .dequant_row(map, t as usize, &mut s.x[i * dim..(i + 1) * dim]);
        }
        if cfg.arch == Arch::Gemma3 {
            // llama.cpp scales by sqrtf(n_embd), in f32.
            let scale = (dim as f32).sqrt();
            for v in &mut s.x[..b * dim] {
                *v *= scale;
            }
        }
        s.rope.clear();
        s.rope_swa.clear();
        for seg in segs {
            rope_table(cfg.rope_base, hd, seg.pos, seg.rows, &mut s.rope);
            if let Some(swa) = cfg.swa {
                rope_table(swa.rope_base, hd, seg.pos, seg.rows, &mut s.rope_swa);
            }
        }
        let rope_fn: fn(&mut [f32], &[(f32, f32)]) = if cfg.arch.neox() { rope_neox } else { rope };

        for (l, layer) in w.layers.iter().enumerate() {
            let window = cfg.window(l);
            // Attention.
            rms_norm(
                &s.x[..b * dim],
                &layer.attn_norm,
                cfg.eps,
                &mut s.xn[..b * dim],
            );
            kernels.quantize(&s.xn[..b * dim], dim, layer.wq.wtype.act(), &mut s.act);
            matmul_many(
                kernels,
                w,
                &mut [
                    (&layer.wq, &mut s.q[..b * qd]),
                    (&layer.wk, &mut s.k[..b * kv]),
                    (&layer.wv, &mut s.v[..b * kv]),
                ],
                &s.act,
                b,
            );
            if let Some([bq, bk, bv]) = &layer.bias {
                add_rows(&mut s.q[..b * qd], bq);
                add_rows(&mut s.k[..b * kv], bk);
                add_rows(&mut s.v[..b * kv], bv);
            }
            if let Some([nq, nk]) = &layer.qk_norm {
                rms_norm_in_place(&mut s.q[..b * qd], nq, cfg.eps);
                rms_norm_in_place(&mut s.k[..b * kv], nk, cfg.eps);
            }
            let table = if window.is_some() {
                &s.rope_swa
            } else {
                &s.rope
            };
            for i in 0..b {
                let r = &table[i * hd / 2..(i + 1) * hd / 2];
                for h in s.q[i * qd..(i + 1) * qd].chunks_exact_mut(hd) {
                    rope_fn(h, r);
                }
                for h in s.k[i * kv..(i + 1) * kv].chunks_exact_mut(hd) {
                    rope_fn(h, r);
                }
            }
            if segs.len() > 1 && segs.iter().all(|g| g.rows == 1) {
                // A batched decode step: every sequence's one row in one parallel section.
                for (r, seg) in segs.iter().enumerate() {
                    let (k, v) = (&s.k[r * kv..(r + 1) * kv], &s.v[r * kv..(r + 1) * kv]);
                    self.kv[seg.slot].write(l, seg.pos, k, v);
                }
                let caches: Vec<(&[u16], &[u16], usize)> = segs
                    .iter()
                    .map(|seg| {
                        let (kc, vc) = self.kv[seg.slot].rows(l, seg.pos + 1);
                        (kc, vc, seg.pos)
                    })
                    .collect();
                attention_each(
                    kernels,
                    &cfg,
                    &s.q[..b * qd],
                    &caches,
                    window,
                    &mut s.att[..b * qd],
                );
            } else {
                let mut r0 = 0;
                for seg in segs {
                    let (pos, r) = (seg.pos, r0..r0 + seg.rows);
                    let cache = &mut self.kv[seg.slot];
                    cache.write(
                        l,
                        pos,
                        &s.k[r.start * kv..r.end * kv],
                        &s.v[r.start * kv..r.end * kv],
                    );
                    let (kc, vc) = cache.rows(l, pos + seg.rows);
                    attention(
                        kernels,
                        &cfg,
                        &s.q[r.start * qd..r.end * qd],
                        kc,
                        vc,
                        pos,
                        window,
                        &mut s.att[r.start * qd..r.end * qd],
                        &mut s.scores,
                    );
                    r0 = r.end;
                }
            }
            kernels.quantize(&s.att[..b * qd], qd, layer.wo.wtype.act(), &mut s.act);
            matmul_many(
                kernels,
                w,
                &mut [(&layer.wo, &mut s.xn[..b * dim])],
                &s.act,
                b,
            );
            if let Some([post_attn, _]) = &layer.post_norm {
                rms_norm_in_place(&mut s.xn[..b * dim], post_attn, cfg.eps);
            }
            add(&mut s.x[..b * dim], &s.xn[..b * dim]);

            // Feed-forward (SwiGLU, or GELU-gated for Gemma).
            rms_norm(
                &s.x[..b * dim],
                &layer.ffn_norm,
                cfg.eps,
                &mut s.xn[..b * dim],
            );
            kernels.quantize(&s.xn[..b * dim], dim, layer.gate.wtype.act(), &mut s.act);
            matmul_many(
                kernels,
                w,
                &mut [
                    (&layer.gate, &mut s.gate[..b * ffn]),
                    (&layer.up, &mut s.up[..b * ffn]),
                ],
                &s.act,
                b,
            );
            if cfg.arch == Arch::Gemma3 {
                // GELU-gated as ggml's CPU `geglu`, its f16 table looked up.
                kernels.geglu(&mut s.gate[..b * ffn], &s.up[..b * ffn], gelu_table());
            } else {
                for (g, u) in s.gate[..b * ffn]
                    .chunks_exact_mut(ffn)
                    .zip(s.up[..b * ffn].chunks_exact(ffn))
                {
                    kernels.swiglu(g, u);
                }
            }
            kernels.quantize(&s.gate[..b * ffn], ffn, layer.down.wtype.act(), &mut s.act);
            matmul_many(
                kernels,
                w,
                &mut [(&layer.down, &mut s.xn[..b * dim])],
                &s.act,
                b,
            );
            if let Some([_, post_ffw]) = &layer.post_norm {
                rms_norm_in_place(&mut s.xn[..b * dim], post_ffw, cfg.eps);
            }
            add(&mut s.x[..b * dim], &s.xn[..b * dim]);
        }

        let rows = match want_logits {
            Logits::None => return,
            Logits::Last => (b - 1)..b,
            Logits::All => 0..b,
        };
        let n = rows.len();
        rms_norm(
            &s.x[rows.start * dim..rows.end * dim],
            &w.norm,
            cfg.eps,
            &mut s.xn[..n * dim],
        );
        kernels.quantize(&s.xn[..n * dim], dim, w.output.wtype.act(), &mut s.act);
        s.logits.resize(n * cfg.vocab, 0.0);
        matmul_many(
            kernels,
            w,
            &mut [(&w.output, &mut s.logits[..n * cfg.vocab])],
            &s.act,
            n,
        );
    }
}

#[inline(always)]
fn grow(v: &mut Vec<f32>, n: usize) {
    if v.len() < n {
        v.resize(n, 0.0);
    }
}

#[inline(always)]
fn add(x: &mut [f32], y: &[f32]) {
    for (a, b) in x.iter_mut().zip(y) {
        *a += b;
    }
}

#[inline(always)]
fn rms_norm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let dim = w.len();
    for (row, o) in x.chunks_exact(dim).zip(out.chunks_exact_mut(dim)) {
        let scale = rms_scale(row, eps);
        for ((o, &v), &w) in o.iter_mut().zip(row).zip(w) {
            *o = v * scale * w;
        }
    }
}

/// 1 / √(mean(x²) + eps), the sum taken in double as ggml takes it, in 16 partial sums (value j into sum
/// j mod 16, then the 16 in order: vector lanes rather than one chain of dependent adds, 4 cycles a value;
/// the double sum of a row rounds to the same f32 mean unless it lies within about 1e-16 of a rounding
/// boundary).
#[inline(always)]
fn rms_scale(row: &[f32], eps: f32) -> f32 {
    let mut part = [0f64; 16];
    let chunks = row.chunks_exact(16);
    let rest = chunks.remainder();
    for c in chunks {
        for (p, &v) in part.iter_mut().zip(c) {
            *p += (v as f64) * (v as f64);
        }
    }
    for (p, &v) in part.iter_mut().zip(rest) {
        *p += (v as f64) * (v as f64);
    }
    let sum: f64 = part.iter().sum();
    1.0 / ((sum / row.len() as f64) as f32 + eps).sqrt()
}

/// Appends cos/sin per position and rotated pair for positions `pos..pos + b`, computed as ggml does
/// (theta scaled step by step, in f32).
#[inline(always)]
fn rope_table(base: f32, head_dim: usize, pos: usize, b: usize, out: &mut Vec<(f32, f32)>) {
    let half = head_dim / 2;
    let scale = base.powf(-2.0 / head_dim as f32);
    for i in 0..b {
        let mut theta = (pos + i) as f32;
        for _ in 0..half {
            out.push((theta.cos(), theta.sin()));
            theta *= scale;
        }
    }
}

/// Rotates adjacent pairs (llama's "normal" rope; the GGUF conversion permuted q and k for it).
#[inline(always)]
fn rope(h: &mut [f32], table: &[(f32, f32)]) {
    for (pair, &(c, s)) in h.chunks_exact_mut(2).zip(table) {
        let (x0, x1) = (pair[0], pair[1]);
        pair[0] = x0 * c - x1 * s;
        pair[1] = x0 * s + x1 * c;
    }
}

/// Rotates the pairs (i, i + head_dim/2) by the i-th angle (GGML's NEOX mode, used by Qwen2 and Gemma 3).
#[inline(always)]
fn rope_neox(h: &mut [f32], table: &[(f32, f32)]) {
    let (lo, hi) = h.split_at_mut(h.len() / 2);
    for ((x0, x1), &(c, s)) in lo.iter_mut().zip(hi.iter_mut()).zip(table) {
        let (a, b) = (*x0, *x1);
        *x0 = a * c - b * s;
        *x1 = a * s + b * c;
    }
}

/// Adds `bias` to every row of `x` (rows of `bias.len()`).
#[inline(always)]
fn add_rows(x: &mut [f32], bias: &[f32]) {
    for row in x.chunks_exact_mut(bias.len()) {
        add(row, bias);
    }
}

/// RMS-normalizes each `w.len()`-wide row of `x` in place (Gemma's per-head q/k norms and post-norms).
#[inline(always)]
fn rms_norm_in_place(x: &mut [f32], w: &[f32], eps: f32) {
    let dim = w.len();
    for row in x.chunks_exact_mut(dim) {
        let scale = rms_scale(row, eps);
        for (v, &w) in row.iter_mut().zip(w) {
            *v = *v * scale * w;
        }
    }
}

/// ggml's `ggml_table_gelu_f16`: for every f16 value, its GELU computed in f32 and rounded to f16; one
/// more entry (0) so that a 4-byte read at the last one stays inside (the SIMD sets' gathers).
fn gelu_table() -> &'static [u16] {
    static TABLE: std::sync::OnceLock<Vec<u16>> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        const GELU_COEF_A: f32 = 0.044715;
        const SQRT_2_OVER_PI: f32 = 0.797_884_6;
        (0..=u16::MAX)
            .map(|i| {
                let x = half::f16::from_bits(i).to_f32();
                let y = 0.5 * x * (1.0 + (SQRT_2_OVER_PI * x * (1.0 + GELU_COEF_A * x * x)).tanh());
                half::f16::from_f32(y).to_bits()
            })
            .chain([0])
            .collect()
    })
}
