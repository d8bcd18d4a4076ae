//! stoplab's own llama forward pass for the CPU: one sequence, weights memory-mapped and used in place.
//!
//! Why not candle's `quantized_llama`: it concatenates the whole KV cache at every step (a per-token cost
//! that grows with the context), dequantizes the token embedding to a 113 MB f32 table, allocates every
//! intermediate tensor, and candle 0.11's Q4_1 dot product is the scalar reference loop. Here:
//!
//! * weights stay in the memory-mapped file; the tied output/embedding matrix stays Q8_0 (embedding rows are
//!   dequantized one token at a time);
//! * the KV cache is preallocated for the whole context as f16 (as llama.cpp keeps it) and written in place;
//!   pages are touched only as positions fill, so peak RSS follows the context used, not the context declared;
//! * matrix products quantize the activations once per row (Q8_1 for Q4_1 weights, Q8_0 for Q8_0 weights,
//!   as ggml does) and run AVX2 integer dot products (VNNI where available) over tiles of activation rows ×
//!   weight rows: in prefill each unpacked weight block serves 4 prompt rows, and each activation block
//!   2 weight rows; each dot product still adds its blocks in ggml's order, so results round as llama.cpp's;
//!   (A 512-bit variant that takes two blocks per instruction ran prefill 1.65x faster still, but it adds
//!   the blocks in another order, and that alone flipped a greedy id of llama.cpp's reference on a
//!   0.04-nat margin, so it is not used.)
//! * decode reads about 96 MB of weights per token, which makes it a memory-streaming problem: the kernel asks
//!   for the weights 8 KiB ahead of those it reads, since the hardware prefetcher stops at every 4 KiB page;
//! * attention takes the query heads that share a KV head together, so each cached row is read and widened
//!   from f16 once for all of them, and asks for the rows 64 positions ahead (at 1,024 positions the cache
//!   is 24 MB per token, read from memory as the weights are);
//! * norm, rope, attention and SwiGLU work on preallocated scratch buffers: no allocation per token;
//! * work is split over candle's persistent barrier pool (`CANDLE_NUM_THREADS` workers, set by `--threads`).
//!
//! Numerics follow ggml's CPU path (the same quantization of activations, f16 K/V), so the greedy ids agree
//! with llama.cpp's; `tests/llama_logits.rs` holds the logits to candle's reference implementation.

use std::fs::File;
use std::ops::Range;

use candle_core::quantized::GgmlDType;
use candle_core::quantized::gguf_file::Content;
use half::f16;

/// Block sizes and byte sizes of the quantized formats used here.
const QK: usize = 32;
const Q4_1_BYTES: usize = 20;
const Q8_0_BYTES: usize = 34;
/// Prompt tokens per forward chunk: bounds the scratch memory for long prompts.
const CHUNK: usize = 256;
/// Activation rows sharing one load of a weight block in prefill.
const TILE: usize = 4;
/// Weight rows per kernel call in prefill, in decode, and the most of either.
const WTILE: usize = 2;
const WTILE_DECODE: usize = 4;
const WTILE_MAX: usize = 4;
/// How far ahead of the weights being read decode asks for the next ones, in bytes (measured best of
/// 1, 2, 4, 8, 16 and 32 KiB on the default model: 8 and 16 KiB).
const PREFETCH: usize = 8192;
/// How many cached positions ahead attention asks for K and V rows (measured best of 8, 16, 32, 64 and 128
/// at 1,024 positions: 64).
const KV_AHEAD: usize = 64;
/// Weight rows per unit of parallel work.
const ROWS_PER_ITEM: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WType {
    Q4_1,
    Q8_0,
}

impl WType {
    fn block_bytes(self) -> usize {
        match self {
            Self::Q4_1 => Q4_1_BYTES,
            Self::Q8_0 => Q8_0_BYTES,
        }
    }
    /// The activation format its dot product takes.
    fn act(self) -> ActType {
        match self {
            Self::Q4_1 => ActType::Q8_1,
            Self::Q8_0 => ActType::Q8_0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ActType {
    Q8_0,
    Q8_1,
}

/// A quantized matrix of `rows` × `cols` (row-major, rows are output features) inside the mapped file.
#[derive(Debug, Clone, Copy)]
struct QMat {
    offset: usize,
    rows: usize,
    cols: usize,
    wtype: WType,
}

impl QMat {
    fn row_bytes(&self) -> usize {
        self.cols / QK * self.wtype.block_bytes()
    }
}

struct Layer {
    attn_norm: Vec<f32>,
    ffn_norm: Vec<f32>,
    wq: QMat,
    wk: QMat,
    wv: QMat,
    wo: QMat,
    gate: QMat,
    up: QMat,
    down: QMat,
}

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
    map: memmap2::Mmap,
    cfg: Config,
    embd: QMat,
    output: QMat,
    norm: Vec<f32>,
    layers: Vec<Layer>,
    /// Per layer, `[position][kv_head * head_dim]` as f16 bits, in anonymous mappings: pages become resident
    /// only as positions are written, so peak RSS follows the context used, not the 8192 declared.
    k_cache: Vec<KvMap>,
    v_cache: Vec<KvMap>,
    scratch: Scratch,
}

/// Why this forward pass cannot run a file (the caller falls back to candle's).
pub fn unsupported(content: &Content) -> Option<String> {
    for (name, info) in &content.tensor_infos {
        let ok = match info.ggml_dtype {
            GgmlDType::F32 => info.shape.rank() == 1,
            GgmlDType::Q4_1 | GgmlDType::Q8_0 => info.shape.rank() == 2,
            _ => false,
        };
        if !ok {
            return Some(format!(
                "tensor {name} is {:?} {:?}",
                info.ggml_dtype, info.shape
            ));
        }
    }
    let md = |k: &str| content.metadata.get(k);
    if md("llama.expert_count")
        .and_then(|v| v.to_u32().ok())
        .unwrap_or(0)
        > 1
    {
        return Some("mixture of experts".into());
    }
    if md("llama.rope.scaling.type").is_some() {
        return Some("rope scaling".into());
    }
    None
}

impl Llama {
    /// Maps the file and indexes its tensors. `content` is the file's header.
    pub fn load(file: &File, content: &Content) -> Result<Self, String> {
        if let Some(why) = unsupported(content) {
            return Err(why);
        }
        let md = |k: &str| {
            content
                .metadata
                .get(k)
                .ok_or_else(|| format!("metadata {k} is missing"))
        };
        let u = |k: &str| -> Result<usize, String> {
            md(k)?
                .to_u32()
                .map(|v| v as usize)
                .map_err(|e| format!("{k}: {e}"))
        };
        let f =
            |k: &str| -> Result<f32, String> { md(k)?.to_f32().map_err(|e| format!("{k}: {e}")) };
        let dim = u("llama.embedding_length")?;
        let n_head = u("llama.attention.head_count")?;
        let n_kv_head = u("llama.attention.head_count_kv")?;
        let head_dim = dim / n_head;
        let rope_dim = u("llama.rope.dimension_count").unwrap_or(head_dim);
        if rope_dim != head_dim || head_dim % 8 != 0 || n_head % n_kv_head != 0 {
            return Err(format!(
                "head layout not supported (head {head_dim}, rope {rope_dim}, {n_head}/{n_kv_head} heads)"
            ));
        }
        let mut cfg = Config {
            n_layer: u("llama.block_count")?,
            dim,
            n_head,
            n_kv_head,
            head_dim,
            ffn: u("llama.feed_forward_length")?,
            vocab: 0,
            context: u("llama.context_length")?,
            eps: f("llama.attention.layer_norm_rms_epsilon")?,
            rope_base: f("llama.rope.freq_base").unwrap_or(10_000.0),
        };
        // SAFETY: the mapping is read-only and the model file is not expected to change while it runs (as in
        // llama.cpp, which maps its weights the same way). A file truncated underneath would fault.
        let map = unsafe { memmap2::Mmap::map(file) }.map_err(|e| format!("cannot map: {e}"))?;
        let base = content.tensor_data_offset as usize;
        let mat = |name: &str, rows: usize, cols: usize| -> Result<QMat, String> {
            let info = content
                .tensor_infos
                .get(name)
                .ok_or_else(|| format!("tensor {name} is missing"))?;
            let wtype = match info.ggml_dtype {
                GgmlDType::Q4_1 => WType::Q4_1,
                GgmlDType::Q8_0 => WType::Q8_0,
                other => return Err(format!("tensor {name} is {other:?}")),
            };
            let dims = info.shape.dims();
            if dims != [rows, cols] || !cols.is_multiple_of(QK) {
                return Err(format!(
                    "tensor {name} has shape {dims:?}, expected [{rows}, {cols}]"
                ));
            }
            let m = QMat {
                offset: base + info.offset as usize,
                rows,
                cols,
                wtype,
            };
            if m.offset + rows * m.row_bytes() > map.len() {
                return Err(format!("tensor {name} runs past the end of the file"));
            }
            Ok(m)
        };
        let vec = |name: &str, len: usize| -> Result<Vec<f32>, String> {
            let info = content
                .tensor_infos
                .get(name)
                .ok_or_else(|| format!("tensor {name} is missing"))?;
            if info.ggml_dtype != GgmlDType::F32 || info.shape.elem_count() != len {
                return Err(format!("tensor {name} is not {len} f32"));
            }
            let at = base + info.offset as usize;
            let bytes = map
                .get(at..at + 4 * len)
                .ok_or_else(|| format!("tensor {name} runs past the end of the file"))?;
            Ok(bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect())
        };
        let embd_info = content
            .tensor_infos
            .get("token_embd.weight")
            .ok_or("tensor token_embd.weight is missing")?;
        cfg.vocab = embd_info.shape.dims()[0];
        let embd = mat("token_embd.weight", cfg.vocab, dim)?;
        let output = if content.tensor_infos.contains_key("output.weight") {
            mat("output.weight", cfg.vocab, dim)?
        } else {
            embd
        };
        let kv = n_kv_head * head_dim;
        let mut layers = Vec::with_capacity(cfg.n_layer);
        for i in 0..cfg.n_layer {
            let p = |s: &str| format!("blk.{i}.{s}.weight");
            layers.push(Layer {
                attn_norm: vec(&p("attn_norm"), dim)?,
                ffn_norm: vec(&p("ffn_norm"), dim)?,
                wq: mat(&p("attn_q"), dim, dim)?,
                wk: mat(&p("attn_k"), kv, dim)?,
                wv: mat(&p("attn_v"), kv, dim)?,
                wo: mat(&p("attn_output"), dim, dim)?,
                gate: mat(&p("ffn_gate"), cfg.ffn, dim)?,
                up: mat(&p("ffn_up"), cfg.ffn, dim)?,
                down: mat(&p("ffn_down"), dim, cfg.ffn)?,
            });
        }
        for (i, l) in layers.iter().enumerate() {
            // Matrices multiplied in one section share one quantized input.
            if l.wk.wtype != l.wq.wtype || l.wv.wtype != l.wq.wtype || l.up.wtype != l.gate.wtype {
                return Err(format!(
                    "block {i} mixes weight types within q/k/v or gate/up"
                ));
            }
        }
        let norm = vec("output_norm.weight", dim)?;
        let cache = || -> Result<Vec<KvMap>, String> {
            (0..cfg.n_layer)
                .map(|_| KvMap::new(cfg.context * kv))
                .collect()
        };
        Ok(Self {
            k_cache: cache()?,
            v_cache: cache()?,
            map,
            cfg,
            embd,
            output,
            norm,
            layers,
            scratch: Scratch::default(),
        })
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Feeds `tokens` at positions `pos..` and returns the logits after the last one. The cache beyond
    /// `pos` is overwritten; the caller checks that the positions fit the context.
    pub fn forward(&mut self, tokens: &[u32], pos: usize) -> &[f32] {
        assert!(
            pos + tokens.len() <= self.cfg.context,
            "positions past the context"
        );
        let mut at = pos;
        for chunk in tokens.chunks(CHUNK) {
            let last = at + chunk.len() == pos + tokens.len();
            self.forward_chunk(chunk, at, last);
            at += chunk.len();
        }
        &self.scratch.logits
    }

    fn forward_chunk(&mut self, tokens: &[u32], pos: usize, want_logits: bool) {
        let cfg = self.cfg;
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
        let map: &[u8] = &self.map;

        for (i, &t) in tokens.iter().enumerate() {
            let row = &map[self.embd.offset + t as usize * self.embd.row_bytes()..]
                [..self.embd.row_bytes()];
            dequant_q8_0(row, &mut s.x[i * dim..(i + 1) * dim]);
        }
        rope_table(&cfg, pos, b, &mut s.rope);

        for (l, layer) in self.layers.iter().enumerate() {
            // Attention.
            rms_norm(
                &s.x[..b * dim],
                &layer.attn_norm,
                cfg.eps,
                &mut s.xn[..b * dim],
            );
            quantize(&s.xn[..b * dim], dim, layer.wq.wtype.act(), &mut s.act);
            matmul_many(
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
            let kc = &mut self.k_cache[l][pos * kv..(pos + b) * kv];
            let vc = &mut self.v_cache[l][pos * kv..(pos + b) * kv];
            to_f16(&s.k[..b * kv], kc);
            to_f16(&s.v[..b * kv], vc);
            attention(
                &cfg,
                &s.q[..b * dim],
                &self.k_cache[l][..(pos + b) * kv],
                &self.v_cache[l][..(pos + b) * kv],
                pos,
                &mut s.att[..b * dim],
                &mut s.scores,
            );
            quantize(&s.att[..b * dim], dim, layer.wo.wtype.act(), &mut s.act);
            matmul_many(map, &mut [(&layer.wo, &mut s.xn[..b * dim])], &s.act, b);
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
            matmul_many(map, &mut [(&layer.down, &mut s.xn[..b * dim])], &s.act, b);
            add(&mut s.x[..b * dim], &s.xn[..b * dim]);
        }

        if want_logits {
            let last = &s.x[(b - 1) * dim..b * dim];
            rms_norm(last, &self.norm, cfg.eps, &mut s.xn[..dim]);
            quantize(&s.xn[..dim], dim, self.output.wtype.act(), &mut s.act);
            s.logits.resize(cfg.vocab, 0.0);
            matmul_many(map, &mut [(&self.output, &mut s.logits[..])], &s.act, 1);
        }
    }
}

/// A zero-filled `u16` array in an anonymous memory mapping.
struct KvMap(memmap2::MmapMut);

impl KvMap {
    fn new(len: usize) -> Result<Self, String> {
        memmap2::MmapMut::map_anon(len * 2)
            .map(Self)
            .map_err(|e| format!("cannot map the KV cache: {e}"))
    }
}

impl std::ops::Deref for KvMap {
    type Target = [u16];
    fn deref(&self) -> &[u16] {
        // SAFETY: the mapping is page-aligned, zero-filled and its length is even.
        unsafe { std::slice::from_raw_parts(self.0.as_ptr() as *const u16, self.0.len() / 2) }
    }
}

impl std::ops::DerefMut for KvMap {
    fn deref_mut(&mut self) -> &mut [u16] {
        // SAFETY: as above, and the mapping is borrowed mutably.
        unsafe { std::slice::from_raw_parts_mut(self.0.as_mut_ptr() as *mut u16, self.0.len() / 2) }
    }
}

fn grow(v: &mut Vec<f32>, n: usize) {
    if v.len() < n {
        v.resize(n, 0.0);
    }
}

fn add(x: &mut [f32], y: &[f32]) {
    for (a, b) in x.iter_mut().zip(y) {
        *a += b;
    }
}

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
fn rope(h: &mut [f32], table: &[(f32, f32)]) {
    for (pair, &(c, s)) in h.chunks_exact_mut(2).zip(table) {
        let (x0, x1) = (pair[0], pair[1]);
        pair[0] = x0 * c - x1 * s;
        pair[1] = x0 * s + x1 * c;
    }
}

fn to_f16(src: &[f32], dst: &mut [u16]) {
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = f16::from_f32(s).to_bits();
    }
}

fn f16_at(b: &[u8], at: usize) -> f32 {
    f16::from_bits(u16::from_le_bytes([b[at], b[at + 1]])).to_f32()
}

fn dequant_q8_0(row: &[u8], out: &mut [f32]) {
    for (blk, o) in row.chunks_exact(Q8_0_BYTES).zip(out.chunks_exact_mut(QK)) {
        let d = f16_at(blk, 0);
        for (o, &q) in o.iter_mut().zip(&blk[2..]) {
            *o = d * (q as i8) as f32;
        }
    }
}

/// Quantizes rows of `cols` values as ggml quantizes matmul activations (`quantize_row_q8_0/q8_1`): scale
/// amax/127 stored as f16, values rounded to nearest even, and for Q8_1 the f16 of scale × sum.
fn quantize(x: &[f32], cols: usize, t: ActType, out: &mut Act) {
    let rows = x.len() / cols;
    let nb = cols / QK;
    out.nb = nb;
    out.qs.clear();
    out.qs.resize(rows * nb * QK, 0);
    out.d.clear();
    out.d.resize(rows * nb, 0.0);
    out.s.clear();
    out.s.resize(rows * nb, 0.0);
    for r in 0..rows {
        for b in 0..nb {
            let xb = &x[r * cols + b * QK..][..QK];
            let qs = &mut out.qs[(r * nb + b) * QK..][..QK];
            let amax = xb.iter().fold(0f32, |m, v| m.max(v.abs()));
            let d = amax / 127.0;
            let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
            let mut sum = 0i32;
            for (q, &v) in qs.iter_mut().zip(xb) {
                let r = (v * id).round_ties_even() as i32;
                sum += r;
                *q = r as i8;
            }
            let d16 = f16::from_f32(d);
            out.d[r * nb + b] = d16.to_f32();
            if t == ActType::Q8_1 {
                out.s[r * nb + b] = f16::from_f32(d * sum as f32).to_f32();
            }
        }
    }
}

/// Quantized activation rows in the kernels' layout: the 8-bit values of a row contiguous (`nb` blocks of
/// 32), and per block the scale d and, for Q8_1, d × Σq (the f16 values ggml stores,
/// widened to f32 once here rather than in every dot product that reads them).
#[derive(Default)]
struct Act {
    qs: Vec<i8>,
    d: Vec<f32>,
    s: Vec<f32>,
    /// Blocks per row.
    nb: usize,
}

impl Act {
    /// Used by the AVX2 and scalar paths (and the tests).
    #[allow(dead_code)]
    fn row(&self, r: usize) -> ActRow<'_> {
        ActRow {
            qs: &self.qs[r * self.nb * QK..][..self.nb * QK],
            d: &self.d[r * self.nb..][..self.nb],
            s: &self.s[r * self.nb..][..self.nb],
        }
    }
}

/// One row of [`Act`].
#[derive(Clone, Copy)]
struct ActRow<'a> {
    qs: &'a [i8],
    d: &'a [f32],
    s: &'a [f32],
}

/// A destination pointer shared by workers that write disjoint elements.
#[derive(Clone, Copy)]
struct Out(*mut f32);
unsafe impl Send for Out {}
unsafe impl Sync for Out {}

impl Out {
    /// Through a method, so closures capture the whole `Out` (Sync), not its raw pointer field.
    fn at(self, i: usize) -> *mut f32 {
        // SAFETY: callers stay inside the slice the pointer was taken from.
        unsafe { self.0.add(i) }
    }
}

/// `out[r][n] = w[n] · act[r]` for each (weight, output) pair, `rows` activation rows, all pairs in one
/// parallel section. All weights take the same activation format and have the same number of columns.
fn matmul_many(map: &[u8], jobs: &mut [(&QMat, &mut [f32])], act: &Act, rows: usize) {
    let cols = jobs[0].0.cols;
    let at = jobs[0].0.wtype.act();
    debug_assert!(
        jobs.iter()
            .all(|(w, _)| w.cols == cols && w.wtype.act() == at)
    );
    assert_eq!(act.nb, cols / QK);
    assert_eq!(act.d.len(), rows * act.nb);
    // Work items: runs of ROWS_PER_ITEM weight rows, numbered across all jobs.
    let mut starts = Vec::with_capacity(jobs.len() + 1);
    let mut total = 0;
    let outs: Vec<(QMat, Out, usize)> = jobs
        .iter_mut()
        .map(|(w, o)| {
            assert!(o.len() >= rows * w.rows);
            starts.push(total);
            total += w.rows.div_ceil(ROWS_PER_ITEM);
            (**w, Out(o.as_mut_ptr()), w.rows)
        })
        .collect();
    // Decode (one activation row) reads each weight once: several weight rows per call keep more loads in
    // flight. Prefill shares each weight block between TILE activation rows.
    let wtile = if rows == 1 { WTILE_DECODE } else { WTILE };
    let work = |items: Range<usize>| {
        for item in items {
            let j = starts.partition_point(|&s| s <= item) - 1;
            let (w, out, n) = outs[j];
            let r0 = (item - starts[j]) * ROWS_PER_ITEM;
            let r1 = n.min(r0 + ROWS_PER_ITEM);
            let rb = w.row_bytes();
            let mut r = 0;
            while r < rows {
                let t = TILE.min(rows - r);
                let mut c = r0;
                while c < r1 {
                    let cn = wtile.min(r1 - c);
                    let wrows = &map[w.offset + c * rb..][..cn * rb];
                    if rows == 1 {
                        // Decode streams every weight once, and the hardware prefetcher stops at each 4 KiB
                        // page: asking for the bytes PREFETCH ahead keeps the memory bus busy (+80% decode
                        // speed measured here; see BENCHMARKS.md).
                        prefetch(
                            map.as_ptr().wrapping_add(w.offset + c * rb + PREFETCH),
                            cn * rb,
                        );
                    }
                    let mut d = [[0f32; TILE]; WTILE_MAX];
                    dot_tile(w.wtype, wrows, rb, act, r, t, cn, &mut d);
                    for (k, dk) in d[..cn].iter().enumerate() {
                        for (i, v) in dk[..t].iter().enumerate() {
                            // SAFETY: (row r + i, column c + k) belongs to this work item alone, and is
                            // inside the output slice (checked above).
                            unsafe { *out.at((r + i) * n + c + k) = *v };
                        }
                    }
                    c += cn;
                }
                r += t;
            }
        }
    };
    candle_core::utils::barrier_pool().execute_chunked(total, work);
}

/// Hints the cache lines of `len` bytes at `p` into the cache (a hint: never faults).
#[inline(always)]
fn prefetch(p: *const u8, len: usize) {
    #[cfg(target_arch = "x86_64")]
    for off in (0..len).step_by(64) {
        // SAFETY: a prefetch of any address is allowed and has no architectural effect.
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                p.wrapping_add(off) as *const i8,
            )
        };
    }
}

/// Dot products of `cn` weight rows (`rb` bytes each, consecutive in `w`) with the `t` activation rows
/// `r..r + t`: `out[k][i] = w[k] · act[r + i]`.
#[allow(clippy::too_many_arguments)]
fn dot_tile(
    wt: WType,
    w: &[u8],
    rb: usize,
    act: &Act,
    r: usize,
    t: usize,
    cn: usize,
    out: &mut [[f32; TILE]; WTILE_MAX],
) {
    assert!(
        (1..=TILE).contains(&t)
            && (1..=WTILE_MAX).contains(&cn)
            && w.len() >= cn * rb
            && rb == act.nb * wt.block_bytes()
            && (r + t) * act.nb <= act.d.len()
    );
    #[cfg(all(
        target_arch = "x86_64",
        target_feature = "avx2",
        target_feature = "fma"
    ))]
    {
        // SAFETY: the target features are enabled at compile time; the weight rows hold act.nb whole
        // blocks each and the activation rows are inside `act` (asserted above).
        unsafe { avx2::dot_tile(wt, w, rb, act, r, t, cn, out) }
    }
    #[cfg(not(all(
        target_arch = "x86_64",
        target_feature = "avx2",
        target_feature = "fma"
    )))]
    {
        for k in 0..cn {
            for i in 0..t {
                out[k][i] = dot_scalar(wt, &w[k * rb..(k + 1) * rb], act.row(r + i));
            }
        }
    }
}

/// The reference dot product, block by block as ggml's generic code does it.
#[allow(dead_code)]
fn dot_scalar(wt: WType, w: &[u8], x: ActRow) -> f32 {
    let mut sum = 0f32;
    let xq = x.qs.chunks_exact(QK);
    match wt {
        WType::Q4_1 => {
            for (b, (wb, xq)) in w.chunks_exact(Q4_1_BYTES).zip(xq).enumerate() {
                let mut si = 0i32;
                for j in 0..QK / 2 {
                    let q = wb[4 + j];
                    si += (q & 0x0F) as i32 * xq[j] as i32;
                    si += (q >> 4) as i32 * xq[j + QK / 2] as i32;
                }
                sum += si as f32 * f16_at(wb, 0) * x.d[b] + f16_at(wb, 2) * x.s[b];
            }
        }
        WType::Q8_0 => {
            for (b, (wb, xq)) in w.chunks_exact(Q8_0_BYTES).zip(xq).enumerate() {
                let si: i32 = wb[2..]
                    .iter()
                    .zip(xq)
                    .map(|(&a, &b)| a as i8 as i32 * b as i32)
                    .sum();
                sum += si as f32 * f16_at(wb, 0) * x.d[b];
            }
        }
    }
    sum
}

/// A per-thread buffer of attention scores.
fn with_scores<R>(n: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    thread_local! {
        static SCORES: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    SCORES.with(|s| {
        let mut s = s.borrow_mut();
        if s.len() < n {
            s.resize(n, 0.0);
        }
        f(&mut s[..n])
    })
}

/// Causal attention of the `q` rows (positions `pos..`) over the cache, one work item per (row, KV head):
/// the query heads that share a KV head read each cached K and V row once between them.
fn attention(
    cfg: &Config,
    q: &[f32],
    kc: &[u16],
    vc: &[u16],
    pos: usize,
    out: &mut [f32],
    scores: &mut Vec<f32>,
) {
    let group = cfg.n_head / cfg.n_kv_head;
    // One decode row on several threads: the KV heads alone (3 for the default model) would not share out
    // evenly, so split the work by phase instead (same numbers).
    let split = q.len() == cfg.dim && candle_core::utils::barrier_pool().n_workers() > 0;
    macro_rules! run {
        ($g:literal) => {
            if split {
                attention_decode_split::<$g>(cfg, q, kc, vc, pos, out, scores)
            } else {
                attention_groups::<$g>(cfg, q, kc, vc, pos, out)
            }
        };
    }
    match group {
        1 => run!(1),
        2 => run!(2),
        3 => run!(3),
        4 => run!(4),
        // Larger groups: heads handled G = 1 at a time (the same numbers, more reads of the cache).
        _ => run!(1),
    }
}

/// Decode attention in three parallel phases, each one split evenly whatever the number of KV heads:
/// scores by (KV head, run of positions); softmax by query head; the weighted sum of V by (KV head, half of
/// the head's dimensions). Every value is computed with the same operations in the same order as in
/// `attention_groups`, so the results are identical.
fn attention_decode_split<const G: usize>(
    cfg: &Config,
    q: &[f32],
    kc: &[u16],
    vc: &[u16],
    pos: usize,
    out: &mut [f32],
    scores: &mut Vec<f32>,
) {
    const RUN: usize = 128;
    let hd = cfg.head_dim;
    let kv = cfg.n_kv_head * hd;
    let group = cfg.n_head / cfg.n_kv_head;
    let scale = 1.0 / (hd as f32).sqrt();
    let n = pos + 1;
    let per_kv = group / G;
    let units = cfg.n_head / G;
    // The scores, then one inverse sum per head.
    scores.resize(cfg.n_head * (n + 1), 0.0);
    let sp = Out(scores.as_mut_ptr());
    let ip = Out(sp.at(cfg.n_head * n));
    let pool = candle_core::utils::barrier_pool();
    let runs = n.div_ceil(RUN);
    pool.execute_chunked(units * runs, |items| {
        for item in items {
            let (u, run) = (item / runs, item % runs);
            let h0 = u * G;
            let koff = (u / per_kv) * hd;
            let qh = &q[h0 * hd..][..G * hd];
            let mut d = [0f32; G];
            for t in run * RUN..n.min((run + 1) * RUN) {
                prefetch(
                    kc.as_ptr().wrapping_add((t + KV_AHEAD) * kv + koff) as *const u8,
                    2 * hd,
                );
                dots_f16::<G>(qh, &kc[t * kv + koff..][..hd], &mut d);
                for (j, &v) in d.iter().enumerate() {
                    // SAFETY: (head h0 + j, position t) belongs to this item alone, inside `scores`.
                    unsafe { *sp.at((h0 + j) * n + t) = v * scale };
                }
            }
        }
    });
    pool.execute_chunked(cfg.n_head, |heads| {
        for h in heads {
            // SAFETY: head h's row of scores and its inverse sum belong to this item alone.
            let sc = unsafe { std::slice::from_raw_parts_mut(sp.at(h * n), n) };
            // SAFETY: as above.
            unsafe { *ip.at(h) = softmax_weights(sc) };
        }
    });
    let (scores, inv) = scores.split_at(cfg.n_head * n);
    let half = hd / 2;
    let halves = if half.is_multiple_of(8) { 2 } else { 1 };
    let width = hd / halves;
    let op = Out(out.as_mut_ptr());
    pool.execute_chunked(units * halves, |items| {
        for item in items {
            let (u, part) = (item / halves, item % halves);
            let h0 = u * G;
            let koff = (u / per_kv) * hd + part * width;
            let mut a = [0f32; G];
            with_scores(G * width, |o| {
                o.fill(0.0);
                for t in 0..n {
                    for j in 0..G {
                        a[j] = scores[(h0 + j) * n + t] * inv[h0 + j];
                    }
                    let ahead = (t + KV_AHEAD) * kv + koff;
                    prefetch(vc.as_ptr().wrapping_add(ahead) as *const u8, 2 * width);
                    axpys_f16::<G>(&a, &vc[t * kv + koff..][..width], o);
                }
                for j in 0..G {
                    for (c, &v) in o[j * width..(j + 1) * width].iter().enumerate() {
                        // SAFETY: (head h0 + j, this part of its dimensions) belongs to this item alone.
                        unsafe { *op.at((h0 + j) * hd + part * width + c) = v };
                    }
                }
            });
        }
    });
}

/// `attention` with the query heads taken G at a time (G divides the group of heads per KV head).
fn attention_groups<const G: usize>(
    cfg: &Config,
    q: &[f32],
    kc: &[u16],
    vc: &[u16],
    pos: usize,
    out: &mut [f32],
) {
    let (dim, hd) = (cfg.dim, cfg.head_dim);
    let kv = cfg.n_kv_head * hd;
    let group = cfg.n_head / cfg.n_kv_head;
    let rows = q.len() / dim;
    let scale = 1.0 / (hd as f32).sqrt();
    let per_row = cfg.n_head / G;
    let out_ptr = Out(out.as_mut_ptr());
    let work = |items: Range<usize>| {
        for item in items {
            // Heads h0..h0 + G, consecutive in q and out, all reading KV head h0 / group.
            let (i, h0) = (item / per_row, item % per_row * G);
            let n = pos + i + 1;
            let qh = &q[i * dim + h0 * hd..][..G * hd];
            let koff = (h0 / group) * hd;
            // SAFETY: each (row, heads) slice of the output belongs to one work item.
            let o =
                unsafe { std::slice::from_raw_parts_mut(out_ptr.at(i * dim + h0 * hd), G * hd) };
            with_scores(G * n, |sc| {
                // sc[j * n + t]: head h0 + j, position t.
                let mut d = [0f32; G];
                for t in 0..n {
                    // The rows of one KV head are 2 * kv bytes apart: ask for them a few ahead, since
                    // the hardware prefetcher stops at each page (see PREFETCH).
                    prefetch(
                        kc.as_ptr().wrapping_add((t + KV_AHEAD) * kv + koff) as *const u8,
                        2 * hd,
                    );
                    dots_f16::<G>(qh, &kc[t * kv + koff..][..hd], &mut d);
                    for (j, &v) in d.iter().enumerate() {
                        sc[j * n + t] = v * scale;
                    }
                }
                let mut inv = [0f32; G];
                for (j, sc) in sc.chunks_exact_mut(n).enumerate() {
                    inv[j] = softmax_weights(sc);
                }
                o.fill(0.0);
                let mut a = [0f32; G];
                for t in 0..n {
                    for j in 0..G {
                        a[j] = sc[j * n + t] * inv[j];
                    }
                    prefetch(
                        vc.as_ptr().wrapping_add((t + KV_AHEAD) * kv + koff) as *const u8,
                        2 * hd,
                    );
                    axpys_f16::<G>(&a, &vc[t * kv + koff..][..hd], o);
                }
            });
        }
    };
    candle_core::utils::barrier_pool().execute_chunked(rows * per_row, work);
}

/// Replaces one head's scores by exp(score − max) and returns 1 / their sum: the softmax, with the division
/// left to the weighted sum of V. Both attention paths call it, so they round alike.
fn softmax_weights(sc: &mut [f32]) -> f32 {
    let max = sc.iter().fold(f32::NEG_INFINITY, |m, &s| m.max(s));
    let mut sum = 0f32;
    for s in sc.iter_mut() {
        *s = (*s - max).exp();
        sum += *s;
    }
    1.0 / sum
}

/// `out[j] = q[j] · k` for the G query heads in `q` (each `k.len()` long) and one cached f16 K row; each
/// sum in the same order as a single dot product, so grouping changes no result.
#[inline(always)]
fn dots_f16<const G: usize>(q: &[f32], k: &[u16], out: &mut [f32; G]) {
    let hd = k.len();
    assert!(q.len() == G * hd && hd.is_multiple_of(8));
    #[cfg(all(
        target_arch = "x86_64",
        target_feature = "avx2",
        target_feature = "fma",
        target_feature = "f16c"
    ))]
    {
        // SAFETY: features enabled at compile time; the lengths are asserted above.
        unsafe { avx2::dots_f16::<G>(q, k, out) }
    }
    #[cfg(not(all(
        target_arch = "x86_64",
        target_feature = "avx2",
        target_feature = "fma",
        target_feature = "f16c"
    )))]
    for (o, q) in out.iter_mut().zip(q.chunks_exact(hd)) {
        *o = q
            .iter()
            .zip(k)
            .map(|(&x, &y)| x * f16::from_bits(y).to_f32())
            .sum();
    }
}

/// `y[j] += a[j] × x` for the G heads' outputs in `y` (each `x.len()` long) and one cached f16 V row.
#[inline(always)]
fn axpys_f16<const G: usize>(a: &[f32; G], x: &[u16], y: &mut [f32]) {
    let hd = x.len();
    assert!(y.len() == G * hd && hd.is_multiple_of(8));
    #[cfg(all(
        target_arch = "x86_64",
        target_feature = "avx2",
        target_feature = "fma",
        target_feature = "f16c"
    ))]
    {
        // SAFETY: as in dots_f16.
        unsafe { avx2::axpys_f16::<G>(a, x, y) }
    }
    #[cfg(not(all(
        target_arch = "x86_64",
        target_feature = "avx2",
        target_feature = "fma",
        target_feature = "f16c"
    )))]
    for (&a, y) in a.iter().zip(y.chunks_exact_mut(hd)) {
        for (y, &x) in y.iter_mut().zip(x) {
            *y += a * f16::from_bits(x).to_f32();
        }
    }
}

#[cfg(all(
    target_arch = "x86_64",
    target_feature = "avx2",
    target_feature = "fma"
))]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{Act, Q4_1_BYTES, Q8_0_BYTES, QK, TILE, WTILE_MAX, WType, f16_at};

    #[inline(always)]
    unsafe fn hsum(v: __m256) -> f32 {
        unsafe {
            let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
            let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
            let s = _mm_add_ss(s, _mm_movehdup_ps(s));
            _mm_cvtss_f32(s)
        }
    }

    /// Sums of u8 × i8 products in 8 lanes of i32, as floats: one VNNI instruction where the CPU has it.
    #[inline(always)]
    unsafe fn mul_sum_us8(a: __m256i, b: __m256i) -> __m256 {
        #[cfg(all(target_feature = "avx512vnni", target_feature = "avx512vl"))]
        unsafe {
            _mm256_cvtepi32_ps(_mm256_dpbusd_epi32(_mm256_setzero_si256(), a, b))
        }
        #[cfg(not(all(target_feature = "avx512vnni", target_feature = "avx512vl")))]
        unsafe {
            let p16 = _mm256_maddubs_epi16(a, b);
            _mm256_cvtepi32_ps(_mm256_madd_epi16(p16, _mm256_set1_epi16(1)))
        }
    }

    /// See `super::dot_tile`: instantiates the kernel for the tile's shape.
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn dot_tile(
        wt: WType,
        w: &[u8],
        rb: usize,
        act: &Act,
        r: usize,
        t: usize,
        cn: usize,
        out: &mut [[f32; TILE]; WTILE_MAX],
    ) {
        macro_rules! dispatch {
            ($k:ident) => {
                match (t, cn) {
                    (4, 2) => $k::<4, 2>(w, rb, act, r, out),
                    (3, 2) => $k::<3, 2>(w, rb, act, r, out),
                    (2, 2) => $k::<2, 2>(w, rb, act, r, out),
                    (1, 4) => $k::<1, 4>(w, rb, act, r, out),
                    _ => {
                        // Tails: one weight row at a time.
                        for k in 0..cn {
                            let mut o = [[0f32; TILE]; WTILE_MAX];
                            let wk = &w[k * rb..(k + 1) * rb];
                            match t {
                                1 => $k::<1, 1>(wk, rb, act, r, &mut o),
                                2 => $k::<2, 1>(wk, rb, act, r, &mut o),
                                3 => $k::<3, 1>(wk, rb, act, r, &mut o),
                                _ => $k::<4, 1>(wk, rb, act, r, &mut o),
                            }
                            out[k] = o[0];
                        }
                    }
                }
            };
        }
        unsafe {
            match wt {
                WType::Q4_1 => dispatch!(q4_1_best),
                WType::Q8_0 => dispatch!(q8_0),
            }
        }
    }

    #[cfg(not(all(
        target_feature = "avx512f",
        target_feature = "avx512bw",
        target_feature = "avx512vl",
        target_feature = "avx512dq",
        target_feature = "avx512vbmi",
        target_feature = "avx512vnni"
    )))]
    use self::q4_1 as q4_1_best;
    #[cfg(all(
        target_feature = "avx512f",
        target_feature = "avx512bw",
        target_feature = "avx512vl",
        target_feature = "avx512dq",
        target_feature = "avx512vbmi",
        target_feature = "avx512vnni"
    ))]
    use self::q4_1_x2 as q4_1_best;

    /// Q4_1 weights (C rows of `rb` bytes at `w`) · Q8_1 activations (rows r..r + R). Each weight block is
    /// unpacked once for R activation rows and each activation block loaded once for C weight rows; every
    /// dot product sums its blocks in ggml's order (`ggml_vec_dot_q4_1_q8_1`: 8 lanes, block after block,
    /// the min terms apart). The results are bit-identical to the one-row kernel this replaced (greedy
    /// outputs depend on it: the min terms once summed with a fused multiply-add changed 11 of 30
    /// evaluation answers).
    #[inline(always)]
    #[allow(dead_code)] // on AVX-512 machines only the test of q4_1_x2 calls it
    pub(super) unsafe fn q4_1<const R: usize, const C: usize>(
        w: &[u8],
        rb: usize,
        act: &Act,
        r: usize,
        out: &mut [[f32; TILE]; WTILE_MAX],
    ) {
        unsafe {
            let nb = act.nb;
            let m4 = _mm_set1_epi8(0x0F);
            let mut acc = [[_mm256_setzero_ps(); R]; C];
            let mut summ = [[0f32; R]; C];
            let (qs, d, s) = (act.qs.as_ptr(), act.d.as_ptr(), act.s.as_ptr());
            for b in 0..nb {
                let mut xq = [_mm256_setzero_si256(); R];
                let (mut xd, mut xs) = ([0f32; R], [0f32; R]);
                for i in 0..R {
                    let at = (r + i) * nb + b;
                    xq[i] = _mm256_loadu_si256(qs.add(at * QK) as *const __m256i);
                    xd[i] = *d.add(at);
                    xs[i] = *s.add(at);
                }
                for k in 0..C {
                    let o = k * rb + b * Q4_1_BYTES;
                    let (dw, mw) = (f16_at(w, o), f16_at(w, o + 2));
                    let q = _mm_loadu_si128(w.as_ptr().add(o + 4) as *const __m128i);
                    let lo = _mm_and_si128(q, m4);
                    let hi = _mm_and_si128(_mm_srli_epi16(q, 4), m4);
                    let qw = _mm256_set_m128i(hi, lo);
                    for i in 0..R {
                        let dd = _mm256_set1_ps(dw * xd[i]);
                        acc[k][i] = _mm256_fmadd_ps(dd, mul_sum_us8(qw, xq[i]), acc[k][i]);
                        summ[k][i] += mw * xs[i];
                    }
                }
            }
            for k in 0..C {
                for i in 0..R {
                    out[k][i] = hsum(acc[k][i]) + summ[k][i];
                }
            }
        }
    }

    /// `q4_1` with 512-bit integer work: two blocks per unpack and per VNNI instruction, their float
    /// accumulation still block after block in 8 lanes (the two halves added in turn), so the results are
    /// bit-identical to `q4_1`'s (a test holds them to it). Decode is mostly this loop: the weights come
    /// prefetched, so its instruction count sets the pace.
    #[cfg(all(
        target_feature = "avx512f",
        target_feature = "avx512bw",
        target_feature = "avx512vl",
        target_feature = "avx512dq",
        target_feature = "avx512vbmi",
        target_feature = "avx512vnni"
    ))]
    #[inline(always)]
    pub(super) unsafe fn q4_1_x2<const R: usize, const C: usize>(
        w: &[u8],
        rb: usize,
        act: &Act,
        r: usize,
        out: &mut [[f32; TILE]; WTILE_MAX],
    ) {
        unsafe {
            let nb = act.nb;
            let m4 = _mm512_set1_epi8(0x0F);
            // Two raw blocks (bytes 0..40: d, m and 16 bytes of nibbles, each) to [the first block's 16
            // bytes of nibbles twice, the second's twice]; the shift and mask below then leave the low
            // nibbles of a block in its first 16 bytes and the high ones in the next 16, as `q4_1` has them.
            let mut sb = [0u8; 64];
            for (j, v) in sb.iter_mut().enumerate() {
                *v = (if j < 32 { 4 } else { 24 } + j % 16) as u8;
            }
            let shuf = _mm512_loadu_si512(sb.as_ptr() as *const __m512i);
            // The f16 words of the blocks' d (0 and 10), each over 8 lanes, and of their m (1 and 11).
            let dsel = _mm256_setr_epi16(0, 0, 0, 0, 0, 0, 0, 0, 10, 10, 10, 10, 10, 10, 10, 10);
            let msel = _mm256_setr_epi16(1, 11, 1, 11, 1, 11, 1, 11, 1, 11, 1, 11, 1, 11, 1, 11);
            let pair = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
            let mut acc = [[_mm256_setzero_ps(); R]; C];
            let mut summ = [[_mm_setzero_ps(); R]; C];
            let (qs, d, s) = (act.qs.as_ptr(), act.d.as_ptr(), act.s.as_ptr());
            let mut b = 0;
            while b + 1 < nb {
                let mut xq = [_mm512_setzero_si512(); R];
                let mut xd = [_mm512_setzero_ps(); R];
                let mut xs = [_mm_setzero_ps(); R];
                for i in 0..R {
                    let at = (r + i) * nb + b;
                    xq[i] = _mm512_loadu_si512(qs.add(at * QK) as *const __m512i);
                    let d2 = _mm_castpd_ps(_mm_load_sd(d.add(at) as *const f64));
                    xd[i] = _mm512_permutexvar_ps(pair, _mm512_castps128_ps512(d2));
                    xs[i] = _mm_castpd_ps(_mm_load_sd(s.add(at) as *const f64));
                }
                for k in 0..C {
                    let p = w.as_ptr().add(k * rb + b * Q4_1_BYTES);
                    // The pair's 40 bytes read as 64: a plain load while that stays inside the row, a
                    // masked one at its end (only there: masked loads do not train the prefetcher).
                    let raw = if b + 3 < nb {
                        _mm512_loadu_si512(p as *const __m512i)
                    } else {
                        _mm512_maskz_loadu_epi8((1 << 40) - 1, p as *const i8)
                    };
                    let z = _mm512_permutexvar_epi8(shuf, raw);
                    let z = _mm512_mask_blend_epi64(0b1100_1100, z, _mm512_srli_epi16(z, 4));
                    let q = _mm512_and_si512(z, m4);
                    let raw = _mm512_castsi512_si256(raw);
                    let dw = _mm512_cvtph_ps(_mm256_permutexvar_epi16(dsel, raw));
                    let mw =
                        _mm_cvtph_ps(_mm256_castsi256_si128(_mm256_permutexvar_epi16(msel, raw)));
                    for i in 0..R {
                        let dot = _mm512_dpbusd_epi32(_mm512_setzero_si512(), q, xq[i]);
                        let pr = _mm512_cvtepi32_ps(dot);
                        let sc = _mm512_mul_ps(dw, xd[i]);
                        let a = _mm256_fmadd_ps(
                            _mm512_castps512_ps256(sc),
                            _mm512_castps512_ps256(pr),
                            acc[k][i],
                        );
                        acc[k][i] = _mm256_fmadd_ps(
                            _mm512_extractf32x8_ps::<1>(sc),
                            _mm512_extractf32x8_ps::<1>(pr),
                            a,
                        );
                        let m = _mm_mul_ps(mw, xs[i]);
                        let t = _mm_add_ss(summ[k][i], m);
                        summ[k][i] = _mm_add_ss(t, _mm_movehdup_ps(m));
                    }
                }
                b += 2;
            }
            if b < nb {
                // An odd row's last block, as `q4_1` does it.
                let m4 = _mm_set1_epi8(0x0F);
                for k in 0..C {
                    let o = k * rb + b * Q4_1_BYTES;
                    let (dw, mw) = (f16_at(w, o), f16_at(w, o + 2));
                    let q = _mm_loadu_si128(w.as_ptr().add(o + 4) as *const __m128i);
                    let lo = _mm_and_si128(q, m4);
                    let hi = _mm_and_si128(_mm_srli_epi16(q, 4), m4);
                    let qw = _mm256_set_m128i(hi, lo);
                    for i in 0..R {
                        let at = (r + i) * nb + b;
                        let xq = _mm256_loadu_si256(qs.add(at * QK) as *const __m256i);
                        let dd = _mm256_set1_ps(dw * *d.add(at));
                        acc[k][i] = _mm256_fmadd_ps(dd, mul_sum_us8(qw, xq), acc[k][i]);
                        summ[k][i] = _mm_add_ss(summ[k][i], _mm_set_ss(mw * *s.add(at)));
                    }
                }
            }
            for k in 0..C {
                for i in 0..R {
                    out[k][i] = hsum(acc[k][i]) + _mm_cvtss_f32(summ[k][i]);
                }
            }
        }
    }

    /// Q8_0 weights · Q8_0 activations, as `q4_1` (`ggml_vec_dot_q8_0_q8_0`: the weight's signs moved onto
    /// the activations, so the unsigned × signed product applies).
    #[inline(always)]
    unsafe fn q8_0<const R: usize, const C: usize>(
        w: &[u8],
        rb: usize,
        act: &Act,
        r: usize,
        out: &mut [[f32; TILE]; WTILE_MAX],
    ) {
        unsafe {
            let nb = act.nb;
            let mut acc = [[_mm256_setzero_ps(); R]; C];
            let (qs, d) = (act.qs.as_ptr(), act.d.as_ptr());
            for b in 0..nb {
                let mut xq = [_mm256_setzero_si256(); R];
                let mut xd = [0f32; R];
                for i in 0..R {
                    let at = (r + i) * nb + b;
                    xq[i] = _mm256_loadu_si256(qs.add(at * QK) as *const __m256i);
                    xd[i] = *d.add(at);
                }
                for k in 0..C {
                    let o = k * rb + b * Q8_0_BYTES;
                    let dw = f16_at(w, o);
                    let qw = _mm256_loadu_si256(w.as_ptr().add(o + 2) as *const __m256i);
                    let aw = _mm256_sign_epi8(qw, qw);
                    for i in 0..R {
                        let sx = _mm256_sign_epi8(xq[i], qw);
                        let dd = _mm256_set1_ps(dw * xd[i]);
                        acc[k][i] = _mm256_fmadd_ps(dd, mul_sum_us8(aw, sx), acc[k][i]);
                    }
                }
            }
            for k in 0..C {
                for i in 0..R {
                    out[k][i] = hsum(acc[k][i]);
                }
            }
        }
    }

    #[cfg(target_feature = "f16c")]
    #[inline(always)]
    pub unsafe fn dots_f16<const G: usize>(q: &[f32], k: &[u16], out: &mut [f32; G]) {
        unsafe {
            let hd = k.len();
            let mut acc = [_mm256_setzero_ps(); G];
            for c in (0..hd).step_by(8) {
                let kv = _mm256_cvtph_ps(_mm_loadu_si128(k.as_ptr().add(c) as *const __m128i));
                for (j, acc) in acc.iter_mut().enumerate() {
                    *acc = _mm256_fmadd_ps(_mm256_loadu_ps(q.as_ptr().add(j * hd + c)), kv, *acc);
                }
            }
            for (o, acc) in out.iter_mut().zip(acc) {
                *o = hsum(acc);
            }
        }
    }

    #[cfg(target_feature = "f16c")]
    #[inline(always)]
    pub unsafe fn axpys_f16<const G: usize>(a: &[f32; G], x: &[u16], y: &mut [f32]) {
        unsafe {
            let hd = x.len();
            let av = a.map(|a| _mm256_set1_ps(a));
            for c in (0..hd).step_by(8) {
                let xv = _mm256_cvtph_ps(_mm_loadu_si128(x.as_ptr().add(c) as *const __m128i));
                for (j, av) in av.iter().enumerate() {
                    let p = y.as_mut_ptr().add(j * hd + c);
                    _mm256_storeu_ps(p, _mm256_fmadd_ps(*av, xv, _mm256_loadu_ps(p)));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Random weight rows (f16 scale, f16 min for Q4_1, random quant bytes) of `cols` columns.
    fn random_weights(
        wt: WType,
        rows: usize,
        cols: usize,
        rnd: &mut impl FnMut() -> f32,
    ) -> Vec<u8> {
        let mut w = Vec::new();
        for _ in 0..rows * cols / QK {
            let start = w.len();
            w.extend_from_slice(&f16::from_f32(rnd() * 0.1).to_bits().to_le_bytes());
            if wt == WType::Q4_1 {
                w.extend_from_slice(&f16::from_f32(rnd()).to_bits().to_le_bytes());
            }
            while w.len() - start < wt.block_bytes() {
                w.push((rnd() * 127.0) as i8 as u8);
            }
        }
        w
    }

    /// Every SIMD kernel and tile shape agrees with the block-by-block reference, for rows of an even and
    /// an odd number of blocks.
    #[test]
    fn simd_dots_match_the_scalar_reference() {
        let mut g = crate::rng::SplitMix::new(12345);
        let mut rnd = || g.uniform() as f32;
        let close = |g: f32, want: f32| (g - want).abs() <= 1e-4 * want.abs().max(1.0);
        for cols in [128, 160] {
            let x: Vec<f32> = (0..cols * TILE).map(|_| rnd()).collect();
            for wt in [WType::Q4_1, WType::Q8_0] {
                let rb = cols / QK * wt.block_bytes();
                let w = random_weights(wt, WTILE_MAX, cols, &mut rnd);
                let mut act = Act::default();
                quantize(&x, cols, wt.act(), &mut act);
                let want =
                    |k: usize, i: usize| dot_scalar(wt, &w[k * rb..(k + 1) * rb], act.row(i));
                for t in 1..=TILE {
                    for cn in 1..=WTILE_MAX {
                        for r in [0, TILE - t] {
                            let mut got = [[0f32; TILE]; WTILE_MAX];
                            dot_tile(wt, &w[..cn * rb], rb, &act, r, t, cn, &mut got);
                            for k in 0..cn {
                                for i in 0..t {
                                    let (g, e) = (got[k][i], want(k, r + i));
                                    assert!(
                                        close(g, e),
                                        "{wt:?} {cols} cols, tile {t}x{cn} at {r}, ({k}, {i}): {g} vs {e}"
                                    );
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// The 512-bit Q4_1 kernel gives bit for bit what the 256-bit one gives (the same sums in the same
    /// order): greedy outputs, and so the agreement with llama.cpp's ids, depend on it.
    #[cfg(all(
        target_arch = "x86_64",
        target_feature = "avx2",
        target_feature = "fma",
        target_feature = "avx512f",
        target_feature = "avx512bw",
        target_feature = "avx512vl",
        target_feature = "avx512dq",
        target_feature = "avx512vbmi",
        target_feature = "avx512vnni"
    ))]
    #[test]
    fn q4_1_kernels_agree_bit_for_bit() {
        let mut g = crate::rng::SplitMix::new(777);
        let mut rnd = || g.uniform() as f32;
        for cols in [96, 128, 576, 1536] {
            let rb = cols / QK * Q4_1_BYTES;
            let x: Vec<f32> = (0..cols * TILE).map(|_| rnd() * 3.0).collect();
            let w = random_weights(WType::Q4_1, 2, cols, &mut rnd);
            let mut act = Act::default();
            quantize(&x, cols, ActType::Q8_1, &mut act);
            let (mut a, mut b) = ([[0f32; TILE]; WTILE_MAX], [[0f32; TILE]; WTILE_MAX]);
            // SAFETY: the features are enabled at compile time; two whole weight rows, four activation rows.
            unsafe {
                avx2::q4_1::<4, 2>(&w, rb, &act, 0, &mut a);
                avx2::q4_1_x2::<4, 2>(&w, rb, &act, 0, &mut b);
            }
            for k in 0..2 {
                for i in 0..TILE {
                    assert_eq!(
                        a[k][i].to_bits(),
                        b[k][i].to_bits(),
                        "{cols} cols ({k}, {i})"
                    );
                }
            }
        }
    }

    /// Decode attention split by phase (used with several threads) gives bit for bit what the one-pass
    /// version gives, for every head grouping.
    #[test]
    fn split_decode_attention_is_bit_identical() {
        let mut g = crate::rng::SplitMix::new(99);
        let mut rnd = || g.uniform() as f32;
        for (n_head, n_kv_head) in [(9, 3), (8, 8), (8, 4), (8, 2), (16, 2)] {
            let cfg = Config {
                n_layer: 1,
                dim: n_head * 64,
                n_head,
                n_kv_head,
                head_dim: 64,
                ffn: 0,
                vocab: 0,
                context: 512,
                eps: 1e-5,
                rope_base: 10_000.0,
            };
            let pos = 300;
            let kv = n_kv_head * 64;
            let q: Vec<f32> = (0..cfg.dim).map(|_| rnd()).collect();
            let cache = |r: &mut dyn FnMut() -> f32| -> Vec<u16> {
                (0..(pos + 1) * kv)
                    .map(|_| f16::from_f32(r() * 2.0).to_bits())
                    .collect()
            };
            let (kc, vc) = (cache(&mut rnd), cache(&mut rnd));
            let (mut a, mut b) = (vec![0f32; cfg.dim], vec![0f32; cfg.dim]);
            let mut scores = Vec::new();
            macro_rules! both {
                ($g:literal) => {{
                    attention_groups::<$g>(&cfg, &q, &kc, &vc, pos, &mut a);
                    attention_decode_split::<$g>(&cfg, &q, &kc, &vc, pos, &mut b, &mut scores);
                }};
            }
            match n_head / n_kv_head {
                1 => both!(1),
                2 => both!(2),
                3 => both!(3),
                4 => both!(4),
                _ => both!(1),
            }
            assert!(a.iter().any(|&v| v != 0.0));
            for (i, (x, y)) in a.iter().zip(&b).enumerate() {
                assert_eq!(
                    x.to_bits(),
                    y.to_bits(),
                    "{n_head}/{n_kv_head} heads, element {i}"
                );
            }
        }
    }

    #[test]
    fn q8_1_sum_is_scale_times_sum_of_quants() {
        let x: Vec<f32> = (0..32).map(|i| i as f32 - 10.0).collect();
        let mut act = Act::default();
        quantize(&x, 32, ActType::Q8_1, &mut act);
        let d = act.d[0];
        let sum: i32 = act.qs[..32].iter().map(|&q| q as i32).sum();
        let s = d * sum as f32;
        let got = act.s[0];
        assert!((got - s).abs() <= 1e-3 * s.abs(), "{got} vs {s}");
        assert_eq!(act.nb, 1);
        assert!((d - 21.0 / 127.0).abs() < 1e-3);
    }
}
