//! stoplab's own llama forward pass for the CPU: one sequence, weights memory-mapped and used in place.
//!
//! Why not candle's `quantized_llama`: it concatenates the whole KV cache at every step (a per-token cost
//! that grows with the context), dequantizes the token embedding to a 113 MB f32 table, allocates every
//! intermediate tensor, and candle 0.11's Q4_1 dot product is the scalar reference loop. Here, by file:
//!
//! * [`weights`]: the file stays memory-mapped; the tied output/embedding matrix stays Q8_0 (embedding rows
//!   are dequantized one token at a time). Every header field the pass relies on is checked against the
//!   tensors it describes before anything is read.
//! * [`kv`]: the KV cache is preallocated for the whole context as f16 (as llama.cpp keeps it) and written
//!   in place; pages are touched only as positions fill, so peak RSS follows the context used.
//! * [`quant`]: matrix products quantize the activations once per row (Q8_1 for Q4_1 weights, Q8_0 for
//!   Q8_0 weights, as ggml does).
//! * [`matmul`]: products run over tiles of activation rows × weight rows (in prefill each unpacked weight
//!   block serves 4 prompt rows, and each activation block 2 weight rows); decode reads about 96 MB of
//!   weights per token, a memory-streaming problem, so it asks for the weights 8 KiB ahead of those it
//!   reads, since the hardware prefetcher stops at every 4 KiB page.
//! * [`attention`]: the query heads that share a KV head are taken together, so each cached row is read and
//!   widened from f16 once for all of them.
//! * [`kernels`]: the integer dot products and f16 attention loops, in scalar, AVX2 and AVX-512 sets chosen
//!   at run time by CPU feature detection, once, at load: a build without `-C target-cpu=native` runs the
//!   same kernels, and no build executes an instruction its CPU lacks. Every set adds in ggml's order and
//!   gives bit-identical sums, so results round as llama.cpp's whatever the CPU.
//! * [`parallel`]: work is split over candle's persistent barrier pool (`--threads` workers); workers write
//!   only through disjoint blocks of the output. `unsafe` lives in `kernels`, `parallel`, and the two
//!   mappings (`weights`, `kv`).
//!
//! Norm, rope, attention and SwiGLU work on preallocated scratch buffers: no allocation per token.
//! Numerics follow ggml's CPU path (the same quantization of activations, f16 K/V), so the greedy ids agree
//! with llama.cpp's; `tests/llama_logits.rs` holds the logits to candle's reference implementation.

mod attention;
mod kernels;
mod kv;
mod matmul;
mod parallel;
mod quant;
mod weights;

use std::fs::File;

use candle_core::quantized::gguf_file::Content;

use attention::attention;
use kv::KvCache;
use matmul::matmul_many;
use quant::{Act, quantize};
use weights::Weights;

pub use kernels::{Isa, Kernels};
pub use weights::unsupported;

/// Threads that run the forward pass (candle's barrier pool, started on the first call).
pub fn threads() -> usize {
    parallel::threads()
}

/// Checks the header fields any llama forward pass relies on (head counts, dimensions, block count against
/// the tensors, context length, epsilon), so that neither backend divides by zero or reads past a tensor.
/// Errors name the field.
pub fn check_header(content: &Content) -> Result<(), String> {
    weights::config(content).map(|_| ())
}

/// Prompt tokens per forward chunk: bounds the scratch memory for long prompts.
const CHUNK: usize = 256;

/// Model dimensions read from the GGUF metadata.
#[derive(Debug, Clone, Copy)]
pub struct Config {
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
    logits: Vec<f32>,
    /// Attention scores of one decode step split over several threads: `[head][position]`.
    scores: Vec<f32>,
}

/// The loaded model and its KV cache.
pub struct Llama {
    cfg: Config,
    weights: Weights,
    kv: KvCache,
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
            kv,
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

    /// Feeds `tokens` at positions `pos..` and returns the logits after the last one. The cache beyond
    /// `pos` is overwritten.
    pub fn forward(&mut self, tokens: &[u32], pos: usize) -> Result<&[f32], String> {
        let end = pos
            .checked_add(tokens.len())
            .filter(|&e| e <= self.cfg.context);
        if tokens.is_empty() || end.is_none() {
            return Err(format!(
                "positions {pos}..{pos}+{} are not inside the context of {}",
                tokens.len(),
                self.cfg.context
            ));
        }
        if let Some(&t) = tokens.iter().find(|&&t| t as usize >= self.cfg.vocab) {
            return Err(format!(
                "token id {t} is outside the model's vocabulary of {}",
                self.cfg.vocab
            ));
        }
        let mut at = pos;
        for chunk in tokens.chunks(CHUNK) {
            let last = at + chunk.len() == pos + tokens.len();
            let kernels = self.kernels;
            kernels.run(
                #[inline(always)]
                || self.forward_chunk(chunk, at, last),
            );
            at += chunk.len();
        }
        Ok(&self.scratch.logits)
    }

    #[inline(always)]
    fn forward_chunk(&mut self, tokens: &[u32], pos: usize, want_logits: bool) {
        let cfg = self.cfg;
        let kernels = self.kernels;
        let b = tokens.len();
        let (dim, kv, ffn) = (cfg.dim, cfg.n_kv_head * cfg.head_dim, cfg.ffn);
        let s = &mut self.scratch;
        grow(&mut s.x, b * dim);
        grow(&mut s.xn, b * dim);
        grow(&mut s.q, b * dim);
        grow(&mut s.k, b * kv);
        grow(&mut s.v, b * kv);
        grow(&mut s.att, b * dim);
        grow(&mut s.gate, b * ffn);
        grow(&mut s.up, b * ffn);
        let w = &self.weights;
        let map: &[u8] = &w.map;

        for (i, &t) in tokens.iter().enumerate() {
            w.embd
                .dequant_row(map, t as usize, &mut s.x[i * dim..(i + 1) * dim]);
        }
        rope_table(&cfg, pos, b, &mut s.rope);

        for (l, layer) in w.layers.iter().enumerate() {
            // Attention.
            rms_norm(
                &s.x[..b * dim],
                &layer.attn_norm,
                cfg.eps,
                &mut s.xn[..b * dim],
            );
            quantize(&s.xn[..b * dim], dim, layer.wq.wtype.act(), &mut s.act);
            matmul_many(
                kernels,
                map,
                &mut [
                    (&layer.wq, &mut s.q[..b * dim]),
                    (&layer.wk, &mut s.k[..b * kv]),
                    (&layer.wv, &mut s.v[..b * kv]),
                ],
                &s.act,
                b,
            );
            for i in 0..b {
                let r = &s.rope[i * cfg.head_dim / 2..(i + 1) * cfg.head_dim / 2];
                for h in s.q[i * dim..(i + 1) * dim].chunks_exact_mut(cfg.head_dim) {
                    rope(h, r);
                }
                for h in s.k[i * kv..(i + 1) * kv].chunks_exact_mut(cfg.head_dim) {
                    rope(h, r);
                }
            }
            self.kv.write(l, pos, &s.k[..b * kv], &s.v[..b * kv]);
            let (kc, vc) = self.kv.rows(l, pos + b);
            attention(
                kernels,
                &cfg,
                &s.q[..b * dim],
                kc,
                vc,
                pos,
                &mut s.att[..b * dim],
                &mut s.scores,
            );
            quantize(&s.att[..b * dim], dim, layer.wo.wtype.act(), &mut s.act);
            matmul_many(
                kernels,
                map,
                &mut [(&layer.wo, &mut s.xn[..b * dim])],
                &s.act,
                b,
            );
            add(&mut s.x[..b * dim], &s.xn[..b * dim]);

            // Feed-forward (SwiGLU).
            rms_norm(
                &s.x[..b * dim],
                &layer.ffn_norm,
                cfg.eps,
                &mut s.xn[..b * dim],
            );
            quantize(&s.xn[..b * dim], dim, layer.gate.wtype.act(), &mut s.act);
            matmul_many(
                kernels,
                map,
                &mut [
                    (&layer.gate, &mut s.gate[..b * ffn]),
                    (&layer.up, &mut s.up[..b * ffn]),
                ],
                &s.act,
                b,
            );
            for (g, u) in s.gate[..b * ffn].iter_mut().zip(&s.up[..b * ffn]) {
                *g = *g / (1.0 + (-*g).exp()) * u;
            }
            quantize(&s.gate[..b * ffn], ffn, layer.down.wtype.act(), &mut s.act);
            matmul_many(
                kernels,
                map,
                &mut [(&layer.down, &mut s.xn[..b * dim])],
                &s.act,
                b,
            );
            add(&mut s.x[..b * dim], &s.xn[..b * dim]);
        }

        if want_logits {
            let last = &s.x[(b - 1) * dim..b * dim];
            rms_norm(last, &w.norm, cfg.eps, &mut s.xn[..dim]);
            quantize(&s.xn[..dim], dim, w.output.wtype.act(), &mut s.act);
            s.logits.resize(cfg.vocab, 0.0);
            matmul_many(
                kernels,
                map,
                &mut [(&w.output, &mut s.logits[..])],
                &s.act,
                1,
            );
        }
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
        // ggml sums in double.
        let sum: f64 = row.iter().map(|&v| (v as f64) * (v as f64)).sum();
        let scale = 1.0 / ((sum / dim as f64) as f32 + eps).sqrt();
        for ((o, &v), &w) in o.iter_mut().zip(row).zip(w) {
            *o = v * scale * w;
        }
    }
}

/// cos/sin per position and rotated pair, computed as ggml does (theta scaled step by step, in f32).
#[inline(always)]
fn rope_table(cfg: &Config, pos: usize, b: usize, out: &mut Vec<(f32, f32)>) {
    let half = cfg.head_dim / 2;
    out.clear();
    let scale = cfg.rope_base.powf(-2.0 / cfg.head_dim as f32);
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
