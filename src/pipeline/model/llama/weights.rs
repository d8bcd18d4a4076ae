//! The weights: the model file memory-mapped and read in place (on x86-64, the layers' matrices and the
//! output matrix repacked at load, 8 rows at a time, for the tile kernels), and the tensor index built from its
//! header. Every header field the forward pass relies on is checked against the tensors it describes
//! before anything is read: a corrupt or hostile file is an error naming the field, never a panic, an
//! out-of-bounds read or garbage output.

use std::fs::File;

use candle_core::quantized::GgmlDType;
use candle_core::quantized::gguf_file::Content;

use super::quant::{QK, WType, dequant_q4_1, dequant_q8_0};
use super::{Arch, Config, Swa};

/// A quantized matrix of `rows` × `cols` (row-major, rows are output features) inside the mapped file,
/// or, repacked at load ([`WType::repacked`]), in [`Weights::packed`].
#[derive(Debug, Clone, Copy)]
pub(super) struct QMat {
    /// Byte offset in the file, or in [`Weights::packed`] for a repacked matrix (checked: `offset + rows *
    /// row_bytes()` is inside it).
    pub(super) offset: usize,
    pub(super) rows: usize,
    pub(super) cols: usize,
    pub(super) wtype: WType,
}

impl Weights {
    /// The bytes of matrix `m`'s rows.
    pub(super) fn bytes(&self, m: &QMat) -> &[u8] {
        let store: &[u8] = if m.wtype.repacked() {
            &self.packed
        } else {
            &self.map
        };
        &store[m.offset..][..m.rows * m.row_bytes()]
    }
}

impl QMat {
    pub(super) fn row_bytes(&self) -> usize {
        self.wtype.row_bytes(self.cols)
    }

    /// Row `r` to f32 (an embedding lookup).
    #[inline(always)]
    pub(super) fn dequant_row(&self, map: &[u8], r: usize, out: &mut [f32]) {
        let rb = self.row_bytes();
        let row = &map[self.offset + r * rb..][..rb];
        match self.wtype {
            WType::Q8_0 => dequant_q8_0(row, out),
            WType::Q4_1 => dequant_q4_1(row, out),
            t => super::quant::dequant_row(t, row, out),
        }
    }
}

pub(super) struct Layer {
    pub(super) attn_norm: Vec<f32>,
    pub(super) ffn_norm: Vec<f32>,
    /// qwen2: the biases of q, k and v.
    pub(super) bias: Option<[Vec<f32>; 3]>,
    /// gemma3: the per-head RMS norms of q and k (`head_dim` each), applied before rope.
    pub(super) qk_norm: Option<[Vec<f32>; 2]>,
    /// gemma3: the RMS norms of the attention and feed-forward outputs, before each residual add.
    pub(super) post_norm: Option<[Vec<f32>; 2]>,
    pub(super) wq: QMat,
    pub(super) wk: QMat,
    pub(super) wv: QMat,
    pub(super) wo: QMat,
    pub(super) gate: QMat,
    pub(super) up: QMat,
    pub(super) down: QMat,
}

/// The mapped file and where each tensor lies in it.
pub(super) struct Weights {
    pub(super) map: memmap2::Mmap,
    /// The layers' matrices and the output matrix, repacked 8 rows at a time for the tile kernels (read
    /// from the file without mapping their pages, so the process holds them once).
    pub(super) packed: Vec<u8>,
    pub(super) embd: QMat,
    pub(super) output: QMat,
    pub(super) norm: Vec<f32>,
    pub(super) layers: Vec<Layer>,
}

/// Why this forward pass cannot run a file (for a llama, the caller falls back to candle's; the other
/// architectures have no fallback).
pub fn unsupported(content: &Content) -> Option<String> {
    for (name, info) in &content.tensor_infos {
        let ok = match info.ggml_dtype {
            GgmlDType::F32 => info.shape.rank() == 1,
            t => WType::from_ggml(t).is_some() && info.shape.rank() == 2,
        };
        if !ok {
            return Some(format!(
                "tensor {name} is {:?} {:?}",
                info.ggml_dtype, info.shape
            ));
        }
    }
    // A header that `config` refuses is not a question of support.
    let cfg = config(content).ok()?;
    let key = |k: &str| format!("{}.{k}", cfg.arch.name());
    let md = |k: &str| content.metadata.get(&key(k));
    if md("expert_count")
        .and_then(|v| v.to_u32().ok())
        .unwrap_or(0)
        > 1
    {
        return Some("mixture of experts".into());
    }
    if md("rope.scaling.type").is_some() {
        return Some("rope scaling".into());
    }
    // Soft-capping of attention scores or logits (Gemma 2 has it; Gemma 3 does not).
    for k in ["attn_logit_softcapping", "final_logit_softcapping"] {
        if md(k).and_then(|v| v.to_f32().ok()).unwrap_or(0.0) != 0.0 {
            return Some(format!("{} (soft-capping)", key(k)));
        }
    }
    // The layout the kernels take.
    let rope_dim = md("rope.dimension_count")
        .and_then(|v| v.to_u32().ok())
        .map_or(cfg.head_dim, |d| d as usize);
    if rope_dim != cfg.head_dim
        || !cfg.head_dim.is_multiple_of(16)
        || !cfg.dim.is_multiple_of(QK)
        || !cfg.ffn.is_multiple_of(QK)
    {
        return Some(format!(
            "head layout (head dimension {}, rope dimension {rope_dim}, embedding {}, feed-forward {})",
            cfg.head_dim, cfg.dim, cfg.ffn
        ));
    }
    None
}

/// The model's dimensions from the header, each checked against the others and the tensors' names and
/// shapes: the checks any forward pass of these architectures needs (both backends run them before
/// reading a weight). Errors name the metadata key or tensor at fault.
pub(super) fn config(content: &Content) -> Result<Config, String> {
    let arch = match content.metadata.get("general.architecture") {
        None => return Err("metadata general.architecture is missing".into()),
        Some(v) => {
            let name = v
                .to_string()
                .map_err(|e| format!("metadata general.architecture: {e}"))?;
            Arch::from_name(name).ok_or_else(|| {
                format!(
                    "metadata general.architecture is {name:?}; stoplab's forward pass runs {}",
                    Arch::ALL.map(|a| a.name()).join(", ")
                )
            })?
        }
    };
    let a = arch.name();
    let key = |k: &str| format!("{a}.{k}");
    let md = |k: &str| {
        content
            .metadata
            .get(&key(k))
            .ok_or_else(|| format!("metadata {} is missing", key(k)))
    };
    let u = |k: &str| -> Result<usize, String> {
        md(k)?
            .to_u32()
            .map(|v| v as usize)
            .map_err(|e| format!("metadata {}: {e}", key(k)))
    };
    let positive = |k: &str, what: &str| -> Result<usize, String> {
        match u(k)? {
            0 => Err(format!(
                "metadata {} is 0: a {a} model has at least one {what} (the file is corrupt)",
                key(k)
            )),
            v => Ok(v),
        }
    };
    let f = |k: &str, default: Option<f32>| -> Result<f32, String> {
        let v = match (md(k), default) {
            (Err(_), Some(d)) => d,
            (m, _) => m?
                .to_f32()
                .map_err(|e| format!("metadata {}: {e}", key(k)))?,
        };
        if !(v.is_finite() && v > 0.0) {
            return Err(format!(
                "metadata {} is {v}: it must be a positive number (the file is corrupt)",
                key(k)
            ));
        }
        Ok(v)
    };
    let dim = positive("embedding_length", "embedding dimension")?;
    let n_head = positive("attention.head_count", "attention head")?;
    let n_kv_head = positive("attention.head_count_kv", "KV head")?;
    // The head dimension: declared (Gemma 3's heads are 256 wide over an embedding of 640), else the
    // embedding shared out between the heads, as llama.cpp takes it.
    let head_dim = if md("attention.key_length").is_ok() {
        let k = positive("attention.key_length", "value per attention head")?;
        if md("attention.value_length").is_ok() {
            let v = positive("attention.value_length", "value per attention head")?;
            if v != k {
                return Err(format!(
                    "metadata {} is {v} but {} is {k}: this forward pass needs keys and values of \
                     one width",
                    key("attention.value_length"),
                    key("attention.key_length")
                ));
            }
        }
        k
    } else {
        if !dim.is_multiple_of(n_head) {
            return Err(format!(
                "metadata {} {dim} is not a multiple of {} {n_head} (the file is corrupt)",
                key("embedding_length"),
                key("attention.head_count")
            ));
        }
        dim / n_head
    };
    if !head_dim.is_multiple_of(2) {
        return Err(format!(
            "the head dimension is {head_dim} ({}): rope rotates pairs, so it must be even (the file \
             is corrupt)",
            if md("attention.key_length").is_ok() {
                key("attention.key_length")
            } else {
                format!(
                    "{} / {}",
                    key("embedding_length"),
                    key("attention.head_count")
                )
            }
        ));
    }
    if !n_head.is_multiple_of(n_kv_head) {
        return Err(format!(
            "metadata {} {n_head} is not a multiple of {} {n_kv_head} (the file is corrupt)",
            key("attention.head_count"),
            key("attention.head_count_kv")
        ));
    }
    let q_dim = n_head.checked_mul(head_dim).ok_or_else(|| {
        format!(
            "metadata {}: the query width overflows",
            key("attention.head_count")
        )
    })?;
    let ffn = positive("feed_forward_length", "feed-forward unit")?;
    let n_layer = positive("block_count", "block")?;
    // The blocks the file holds tensors for must be the ones the header counts.
    let blocks = content
        .tensor_infos
        .keys()
        .filter_map(|name| {
            name.strip_prefix("blk.")?
                .split('.')
                .next()?
                .parse::<usize>()
                .ok()
        })
        .max()
        .map_or(0, |b| b + 1);
    if blocks != n_layer {
        return Err(format!(
            "metadata {} is {n_layer} but the file has tensors for {blocks} blocks \
             (the file is corrupt)",
            key("block_count")
        ));
    }
    // The shapes the header's dimensions give every tensor (types are the backend's concern).
    let vocab = match content
        .tensor_infos
        .get("token_embd.weight")
        .map(|t| t.shape.dims())
    {
        Some([rows, cols]) if *rows > 0 && *cols == dim => *rows,
        Some(dims) => {
            return Err(format!(
                "tensor token_embd.weight has shape {dims:?}, but {} makes it \
                 [vocabulary, {dim}] (the file is corrupt)",
                key("embedding_length")
            ));
        }
        None => return Err("tensor token_embd.weight is missing".into()),
    };
    let kv = n_kv_head * head_dim;
    // (name, shape, required)
    let mut want: Vec<(String, Vec<usize>, bool)> = vec![
        ("output.weight".into(), vec![vocab, dim], false),
        ("output_norm.weight".into(), vec![dim], true),
    ];
    for i in 0..n_layer {
        let mut push = |t: &str, shape: Vec<usize>| {
            want.push((format!("blk.{i}.{t}"), shape, true));
        };
        for (t, shape) in [
            ("attn_norm.weight", vec![dim]),
            ("ffn_norm.weight", vec![dim]),
            ("attn_q.weight", vec![q_dim, dim]),
            ("attn_k.weight", vec![kv, dim]),
            ("attn_v.weight", vec![kv, dim]),
            ("attn_output.weight", vec![dim, q_dim]),
            ("ffn_gate.weight", vec![ffn, dim]),
            ("ffn_up.weight", vec![ffn, dim]),
            ("ffn_down.weight", vec![dim, ffn]),
        ] {
            push(t, shape);
        }
        match arch {
            Arch::Llama => {}
            Arch::Qwen2 => {
                push("attn_q.bias", vec![q_dim]);
                push("attn_k.bias", vec![kv]);
                push("attn_v.bias", vec![kv]);
            }
            Arch::Gemma3 => {
                push("attn_q_norm.weight", vec![head_dim]);
                push("attn_k_norm.weight", vec![head_dim]);
                push("post_attention_norm.weight", vec![dim]);
                push("post_ffw_norm.weight", vec![dim]);
            }
        }
    }
    let header = format!(
        "{} {dim}, {} {n_head}, {} {n_kv_head}, head dimension {head_dim}, {} {ffn}",
        key("embedding_length"),
        key("attention.head_count"),
        key("attention.head_count_kv"),
        key("feed_forward_length")
    );
    for (name, shape, required) in &want {
        match content.tensor_infos.get(name) {
            Some(t) if t.shape.dims() == shape.as_slice() => {}
            Some(t) => {
                return Err(format!(
                    "tensor {name} has shape {:?}, but the header makes it {shape:?} ({header}): \
                     the file is corrupt",
                    t.shape.dims()
                ));
            }
            None if !required => {}
            None => {
                return Err(format!(
                    "tensor {name} is missing (a {a} model has one in every block)"
                ));
            }
        }
    }
    // Sliding-window attention (Gemma 3): every layer but each sixth attends to the last `window`
    // positions, with its own rope base. The file gives the window; llama.cpp fixes the pattern (6) and
    // the sliding layers' base (10,000) for gemma3, and so does this pass unless the file says otherwise.
    let swa = match arch {
        Arch::Gemma3 => Some(Swa {
            window: positive("attention.sliding_window", "position in the sliding window")?,
            pattern: 6,
            rope_base: f("rope.freq_base_swa", Some(10_000.0))?,
        }),
        _ => None,
    };
    // Rope rotates the whole head in both backends (candle's tables are `rope.dimension_count / 2` wide and
    // must match the head's pairs), so a declared rope width must be the head dimension. Checked after the
    // tensors' shapes, where a wrong head count shows first.
    if md("rope.dimension_count").is_ok() {
        let rope_dim = u("rope.dimension_count")?;
        if rope_dim != head_dim {
            return Err(format!(
                "metadata {} is {rope_dim} but the head dimension is {head_dim}: rope must rotate the \
                 whole head (the file is corrupt, or uses partial rope, which stoplab does not run)",
                key("rope.dimension_count")
            ));
        }
    }
    Ok(Config {
        arch,
        n_layer,
        dim,
        n_head,
        n_kv_head,
        head_dim,
        ffn,
        vocab,
        context: positive("context_length", "position of context")?,
        eps: f("attention.layer_norm_rms_epsilon", None)?,
        rope_base: f("rope.freq_base", Some(10_000.0))?,
        swa,
    })
}

/// Maps the file and indexes its tensors, checking each one's type and place against `cfg` and the file.
pub(super) fn load(file: &File, content: &Content, cfg: &Config) -> Result<Weights, String> {
    // SAFETY: the mapping is read-only and the model file is not expected to change while it runs (as in
    // llama.cpp, which maps its weights the same way). A file truncated underneath would fault.
    let map = unsafe { memmap2::Mmap::map(file) }.map_err(|e| format!("cannot map: {e}"))?;
    let index = Index {
        content,
        file_len: map.len(),
    };
    let dim = cfg.dim;
    let embd = index.mat("token_embd.weight", cfg.vocab, dim)?;
    let mut output = if content.tensor_infos.contains_key("output.weight") {
        index.mat("output.weight", cfg.vocab, dim)?
    } else {
        embd
    };
    let (kv, q_dim, hd) = (cfg.n_kv_head * cfg.head_dim, cfg.q_dim(), cfg.head_dim);
    let mut layers = Vec::with_capacity(cfg.n_layer);
    for i in 0..cfg.n_layer {
        let p = |s: &str| format!("blk.{i}.{s}.weight");
        let vec = |s: &str| index.vec(&map, &p(s), dim);
        let vec_of = |name: String, len| index.vec(&map, &name, len);
        let mat = |s: &str, rows, cols| index.mat(&p(s), rows, cols);
        let l = Layer {
            attn_norm: vec("attn_norm")?,
            ffn_norm: vec("ffn_norm")?,
            bias: match cfg.arch {
                Arch::Qwen2 => Some([
                    vec_of(format!("blk.{i}.attn_q.bias"), q_dim)?,
                    vec_of(format!("blk.{i}.attn_k.bias"), kv)?,
                    vec_of(format!("blk.{i}.attn_v.bias"), kv)?,
                ]),
                _ => None,
            },
            qk_norm: match cfg.arch {
                Arch::Gemma3 => {
                    Some([vec_of(p("attn_q_norm"), hd)?, vec_of(p("attn_k_norm"), hd)?])
                }
                _ => None,
            },
            post_norm: match cfg.arch {
                Arch::Gemma3 => Some([vec("post_attention_norm")?, vec("post_ffw_norm")?]),
                _ => None,
            },
            wq: mat("attn_q", q_dim, dim)?,
            wk: mat("attn_k", kv, dim)?,
            wv: mat("attn_v", kv, dim)?,
            wo: mat("attn_output", dim, q_dim)?,
            gate: mat("ffn_gate", cfg.ffn, dim)?,
            up: mat("ffn_up", cfg.ffn, dim)?,
            down: mat("ffn_down", dim, cfg.ffn)?,
        };
        // Matrices multiplied in one section share one quantized input, so they must take the same
        // activation format (Q5_0 and Q8_0 weights both take Q8_0 activations).
        let act = l.wq.wtype.act();
        if l.wk.wtype.act() != act
            || l.wv.wtype.act() != act
            || l.up.wtype.act() != l.gate.wtype.act()
        {
            return Err(format!(
                "block {i} mixes weight types that take different activation formats within q/k/v \
                 ({:?}/{:?}/{:?}) or gate/up ({:?}/{:?})",
                l.wq.wtype, l.wk.wtype, l.wv.wtype, l.gate.wtype, l.up.wtype
            ));
        }
        layers.push(l);
    }
    let norm = index.vec(&map, "output_norm.weight", dim)?;
    // Sized once, so that the repacked matrices are not copied as the buffer grows.
    let repacked = layers
        .iter()
        .flat_map(|l| [&l.wq, &l.wk, &l.wv, &l.wo, &l.gate, &l.up, &l.down])
        .chain([&output])
        .filter_map(|m| Some(m.rows * repacking(m)?.0.row_bytes(m.cols)))
        .sum();
    let mut packed = Vec::with_capacity(repacked);
    for l in &mut layers {
        for m in [
            &mut l.wq,
            &mut l.wk,
            &mut l.wv,
            &mut l.wo,
            &mut l.gate,
            &mut l.up,
            &mut l.down,
        ] {
            repack(file, &map, m, &mut packed)?;
        }
    }
    // The output matrix too (a tied one is repacked apart from the embedding rows, which stay in the map
    // for the look-ups): decode reads it every step.
    repack(file, &map, &mut output, &mut packed)?;
    Ok(Weights {
        map,
        packed,
        embd,
        output,
        norm,
        layers,
    })
}

/// Repacks a matrix whose format the tile kernels repack ([`WType::repacking`]: Q4_1, Q5_0, Q4_K, Q6_K) and whose rows
/// come in whole groups of 8 into `packed`, and points `m` there; other matrices stay in the map. The rows
/// are read from the file (on Unix) rather than through the map, so that their pages are not kept as well.
/// Only on x86-64: elsewhere the scalar set alone runs, and it reads the file's layout faster (it unpacks a
/// repacked row before its product).
fn repack(file: &File, map: &[u8], m: &mut QMat, packed: &mut Vec<u8>) -> Result<(), String> {
    let Some((to, repack)) = repacking(m) else {
        return Ok(());
    };
    let (rb, group_out) = (m.row_bytes(), 8 * to.row_bytes(m.cols));
    let (group, nb) = (8 * rb, m.cols / m.wtype.block_len());
    let start = packed.len();
    packed.resize(start + m.rows / 8 * group_out, 0);
    // Read a run of groups per system call (about 256 KiB), then repack it group by group.
    let per_read = (256 * 1024 / group).max(1);
    let mut src = vec![0u8; per_read * group];
    for (c, dst) in packed[start..].chunks_mut(per_read * group_out).enumerate() {
        let (at, src) = (
            m.offset + c * per_read * group,
            &mut src[..dst.len() / group_out * group],
        );
        #[cfg(unix)]
        std::os::unix::fs::FileExt::read_exact_at(file, src, at as u64)
            .map_err(|e| format!("cannot read the weights at byte {at}: {e}"))?;
        #[cfg(not(unix))]
        {
            let _ = file;
            src.copy_from_slice(&map[at..at + src.len()]);
        }
        for (src, dst) in src.chunks_exact(group).zip(dst.chunks_exact_mut(group_out)) {
            repack(src, nb, dst);
        }
    }
    #[cfg(unix)]
    let _ = map;
    m.wtype = to;
    m.offset = start;
    Ok(())
}

/// The repacked format of `m` and its repacking, if the tile kernels repack it: a format they repack, in
/// whole groups of 8 rows, on x86-64.
fn repacking(m: &QMat) -> Option<(WType, super::quant::Repack)> {
    let r = m.wtype.repacking()?;
    (cfg!(target_arch = "x86_64") && m.rows.is_multiple_of(8)).then_some(r)
}

/// Tensor look-ups with their shape, type and place in the file checked.
struct Index<'a> {
    content: &'a Content,
    file_len: usize,
}

impl Index<'_> {
    /// Where `name`'s `bytes` bytes lie in the file.
    fn span(&self, name: &str, bytes: usize) -> Result<usize, String> {
        let info = &self.content.tensor_infos[name];
        let past = || {
            format!(
                "tensor {name}: its offset {} (after the header's {}) and size {bytes} run past the end \
                 of the file ({} bytes); the file is corrupt or truncated",
                info.offset, self.content.tensor_data_offset, self.file_len
            )
        };
        let start = self
            .content
            .tensor_data_offset
            .checked_add(info.offset)
            .and_then(|s| usize::try_from(s).ok())
            .ok_or_else(past)?;
        match start.checked_add(bytes) {
            Some(end) if end <= self.file_len => Ok(start),
            _ => Err(past()),
        }
    }

    fn info(&self, name: &str) -> Result<&candle_core::quantized::gguf_file::TensorInfo, String> {
        self.content
            .tensor_infos
            .get(name)
            .ok_or_else(|| format!("tensor {name} is missing"))
    }

    /// A `rows` × `cols` quantized matrix.
    fn mat(&self, name: &str, rows: usize, cols: usize) -> Result<QMat, String> {
        let info = self.info(name)?;
        let wtype = WType::from_ggml(info.ggml_dtype).ok_or_else(|| {
            format!(
                "tensor {name} is {:?}; this forward pass reads Q4_1, Q5_0, Q8_0, Q4_K and Q6_K matrices",
                info.ggml_dtype
            )
        })?;
        let dims = info.shape.dims();
        if dims != [rows, cols] {
            return Err(format!(
                "tensor {name} has shape {dims:?}, but the header's dimensions make it [{rows}, {cols}]"
            ));
        }
        if !cols.is_multiple_of(wtype.block_len()) {
            return Err(format!(
                "tensor {name}: its rows of {cols} values do not fill whole {wtype:?} blocks of {}",
                wtype.block_len()
            ));
        }
        let mut m = QMat {
            offset: 0,
            rows,
            cols,
            wtype,
        };
        let bytes = rows
            .checked_mul(m.row_bytes())
            .ok_or_else(|| format!("tensor {name}: its size overflows"))?;
        m.offset = self.span(name, bytes)?;
        Ok(m)
    }

    /// A vector of `len` f32.
    fn vec(&self, map: &[u8], name: &str, len: usize) -> Result<Vec<f32>, String> {
        let info = self.info(name)?;
        if info.ggml_dtype != GgmlDType::F32 || info.shape.dims() != [len] {
            return Err(format!(
                "tensor {name} is {:?} {:?}, expected {len} F32 values (from the header's dimensions)",
                info.ggml_dtype,
                info.shape.dims()
            ));
        }
        let at = self.span(name, 4 * len)?;
        Ok(map[at..at + 4 * len]
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect())
    }
}
