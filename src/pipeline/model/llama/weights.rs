//! The weights: the model file memory-mapped and read in place, and the tensor index built from its
//! header. Every header field the forward pass relies on is checked against the tensors it describes
//! before anything is read: a corrupt or hostile file is an error naming the field, never a panic, an
//! out-of-bounds read or garbage output.

use std::fs::File;

use candle_core::quantized::GgmlDType;
use candle_core::quantized::gguf_file::Content;

use super::Config;
use super::quant::{QK, WType, dequant_q4_1, dequant_q8_0};

/// A quantized matrix of `rows` × `cols` (row-major, rows are output features) inside the mapped file.
#[derive(Debug, Clone, Copy)]
pub(super) struct QMat {
    /// Byte offset in the file (checked: `offset + rows * row_bytes()` is inside it).
    pub(super) offset: usize,
    pub(super) rows: usize,
    pub(super) cols: usize,
    pub(super) wtype: WType,
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
    pub(super) embd: QMat,
    pub(super) output: QMat,
    pub(super) norm: Vec<f32>,
    pub(super) layers: Vec<Layer>,
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
    // The layout the kernels take (a header that `config` refuses is not a question of support).
    let cfg = config(content).ok()?;
    let rope_dim = md("llama.rope.dimension_count")
        .and_then(|v| v.to_u32().ok())
        .map_or(cfg.head_dim, |d| d as usize);
    if rope_dim != cfg.head_dim
        || !cfg.head_dim.is_multiple_of(8)
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

/// The model's dimensions from the header, each checked against the others and the tensors' names: the
/// checks any llama forward pass needs (both backends run them before reading a weight).
pub(super) fn config(content: &Content) -> Result<Config, String> {
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
            .map_err(|e| format!("metadata {k}: {e}"))
    };
    let positive = |k: &str, what: &str| -> Result<usize, String> {
        match u(k)? {
            0 => Err(format!(
                "metadata {k} is 0: a llama model has at least one {what} (the file is corrupt)"
            )),
            v => Ok(v),
        }
    };
    let f = |k: &str, default: Option<f32>| -> Result<f32, String> {
        let v = match (md(k), default) {
            (Err(_), Some(d)) => d,
            (m, _) => m?.to_f32().map_err(|e| format!("metadata {k}: {e}"))?,
        };
        if !(v.is_finite() && v > 0.0) {
            return Err(format!(
                "metadata {k} is {v}: it must be a positive number (the file is corrupt)"
            ));
        }
        Ok(v)
    };
    let dim = positive("llama.embedding_length", "embedding dimension")?;
    let n_head = positive("llama.attention.head_count", "attention head")?;
    let n_kv_head = positive("llama.attention.head_count_kv", "KV head")?;
    if !dim.is_multiple_of(n_head) {
        return Err(format!(
            "metadata llama.embedding_length {dim} is not a multiple of llama.attention.head_count \
             {n_head} (the file is corrupt)"
        ));
    }
    if !n_head.is_multiple_of(n_kv_head) {
        return Err(format!(
            "metadata llama.attention.head_count {n_head} is not a multiple of \
             llama.attention.head_count_kv {n_kv_head} (the file is corrupt)"
        ));
    }
    let head_dim = dim / n_head;
    let ffn = positive("llama.feed_forward_length", "feed-forward unit")?;
    let n_layer = positive("llama.block_count", "block")?;
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
            "metadata llama.block_count is {n_layer} but the file has tensors for {blocks} blocks \
             (the file is corrupt)"
        ));
    }
    // The shapes the header's dimensions give every matrix (types are the backend's concern).
    let vocab = match content
        .tensor_infos
        .get("token_embd.weight")
        .map(|t| t.shape.dims())
    {
        Some([rows, cols]) if *rows > 0 && *cols == dim => *rows,
        Some(dims) => {
            return Err(format!(
                "tensor token_embd.weight has shape {dims:?}, but llama.embedding_length makes it \
                 [vocabulary, {dim}] (the file is corrupt)"
            ));
        }
        None => return Err("tensor token_embd.weight is missing".into()),
    };
    let kv = n_kv_head * head_dim;
    let mut want: Vec<(String, [usize; 2])> = vec![("output.weight".into(), [vocab, dim])];
    for i in 0..n_layer {
        for (t, shape) in [
            ("attn_q", [dim, dim]),
            ("attn_k", [kv, dim]),
            ("attn_v", [kv, dim]),
            ("attn_output", [dim, dim]),
            ("ffn_gate", [ffn, dim]),
            ("ffn_up", [ffn, dim]),
            ("ffn_down", [dim, ffn]),
        ] {
            want.push((format!("blk.{i}.{t}.weight"), shape));
        }
    }
    for (name, shape) in &want {
        match content.tensor_infos.get(name) {
            Some(t) if t.shape.dims() == shape => {}
            Some(t) => {
                return Err(format!(
                    "tensor {name} has shape {:?}, but the header makes it {shape:?} \
                     (llama.embedding_length {dim}, llama.attention.head_count {n_head}, \
                     llama.attention.head_count_kv {n_kv_head}, llama.feed_forward_length {ffn}): \
                     the file is corrupt",
                    t.shape.dims()
                ));
            }
            None if name == "output.weight" => {}
            None => return Err(format!("tensor {name} is missing")),
        }
    }
    Ok(Config {
        n_layer,
        dim,
        n_head,
        n_kv_head,
        head_dim,
        ffn,
        vocab,
        context: positive("llama.context_length", "position of context")?,
        eps: f("llama.attention.layer_norm_rms_epsilon", None)?,
        rope_base: f("llama.rope.freq_base", Some(10_000.0))?,
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
    let output = if content.tensor_infos.contains_key("output.weight") {
        index.mat("output.weight", cfg.vocab, dim)?
    } else {
        embd
    };
    let kv = cfg.n_kv_head * cfg.head_dim;
    let mut layers = Vec::with_capacity(cfg.n_layer);
    for i in 0..cfg.n_layer {
        let p = |s: &str| format!("blk.{i}.{s}.weight");
        let vec = |s: &str| index.vec(&map, &p(s), dim);
        let mat = |s: &str, rows, cols| index.mat(&p(s), rows, cols);
        let l = Layer {
            attn_norm: vec("attn_norm")?,
            ffn_norm: vec("ffn_norm")?,
            wq: mat("attn_q", dim, dim)?,
            wk: mat("attn_k", kv, dim)?,
            wv: mat("attn_v", kv, dim)?,
            wo: mat("attn_output", dim, dim)?,
            gate: mat("ffn_gate", cfg.ffn, dim)?,
            up: mat("ffn_up", cfg.ffn, dim)?,
            down: mat("ffn_down", dim, cfg.ffn)?,
        };
        // Matrices multiplied in one section share one quantized input.
        if l.wk.wtype != l.wq.wtype || l.wv.wtype != l.wq.wtype || l.up.wtype != l.gate.wtype {
            return Err(format!(
                "block {i} mixes weight types within q/k/v or gate/up"
            ));
        }
        layers.push(l);
    }
    let norm = index.vec(&map, "output_norm.weight", dim)?;
    Ok(Weights {
        map,
        embd,
        output,
        norm,
        layers,
    })
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
        let wtype = match info.ggml_dtype {
            GgmlDType::Q4_1 => WType::Q4_1,
            GgmlDType::Q8_0 => WType::Q8_0,
            other => {
                return Err(format!(
                    "tensor {name} is {other:?}; this forward pass reads Q4_1 and Q8_0 matrices"
                ));
            }
        };
        let dims = info.shape.dims();
        if dims != [rows, cols] || !cols.is_multiple_of(QK) {
            return Err(format!(
                "tensor {name} has shape {dims:?}, but the header's dimensions make it [{rows}, {cols}]"
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
                "tensor {name} is {:?} {:?}, expected {len} F32 values (llama.embedding_length)",
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
