//! A differentiable llama forward for training LoRA adapters: frozen base weights (dequantized from the GGUF),
//! LoRA `A`/`B` on the q and v projections as candle `Var`s.
//!
//! Built from primitive ops only. candle 0.11.1's fused `rms_norm`, `softmax_last_dim`, `rope_i`/`rope`,
//! `layer_norm` and `sdpa` have no backward and drop the gradient silently; the finite-difference test in
//! `tests/model/finetune.rs` guards against one creeping back in. The rope is the interleaved one (pairs of
//! neighbouring dimensions), which is what GGUF's permuted q/k weights expect.
//!
//! Frozen matmuls go through `FrozenLinear`, a custom op whose backward returns only the input's gradient:
//! candle's own matmul backward also computes the (unused) gradient of the frozen weight, which for the
//! 49,152 x 576 output layer costs as much as the forward.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, D, DType, Device, Layout, Shape, Tensor, Var};

use crate::Error;

type Result<T> = candle_core::Result<T>;

/// The shape of a llama model.
#[derive(Debug, Clone, PartialEq)]
pub struct LlamaConfig {
    pub vocab: usize,
    pub dim: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub ffn: usize,
    pub rope_base: f32,
    pub eps: f64,
}

impl LlamaConfig {
    pub fn head_dim(&self) -> usize {
        self.dim / self.n_heads
    }
    pub fn kv_dim(&self) -> usize {
        self.n_kv_heads * self.head_dim()
    }
}

/// `x @ W^T` for a frozen `W`: the backward gives the input's gradient only.
struct FrozenLinear {
    w: Tensor,
}

impl CustomOp1 for FrozenLinear {
    fn name(&self) -> &'static str {
        "frozen-linear"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let (start, end) = layout
            .contiguous_offsets()
            .ok_or_else(|| candle_core::Error::Msg("frozen-linear: input not contiguous".into()))?;
        let dev = Device::Cpu;
        let x = match storage {
            CpuStorage::F32(v) => Tensor::from_slice(&v[start..end], layout.shape(), &dev)?,
            CpuStorage::F64(v) => Tensor::from_slice(&v[start..end], layout.shape(), &dev)?,
            other => candle_core::bail!("frozen-linear: unsupported dtype {:?}", other.dtype()),
        };
        let y = x.matmul(&self.w.t()?)?;
        let shape = y.shape().clone();
        let flat = y.flatten_all()?;
        let out = match flat.dtype() {
            DType::F64 => CpuStorage::F64(flat.to_vec1::<f64>()?),
            _ => CpuStorage::F32(flat.to_vec1::<f32>()?),
        };
        Ok((out, shape))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(grad_res.matmul(&self.w)?))
    }
}

/// `x` (rows, in) times the frozen `w` (out, in) transposed.
fn linear(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op1(FrozenLinear { w: w.clone() })
}

/// One transformer block's frozen weights, `(out, in)` like the GGUF's.
#[derive(Clone)]
pub struct Block {
    pub attn_norm: Tensor,
    pub wq: Tensor,
    pub wk: Tensor,
    pub wv: Tensor,
    pub wo: Tensor,
    pub ffn_norm: Tensor,
    pub w_gate: Tensor,
    pub w_up: Tensor,
    pub w_down: Tensor,
}

/// The frozen base model in f32 (or f64 for gradient checks).
pub struct Base {
    pub cfg: LlamaConfig,
    pub embed: Tensor,
    pub blocks: Vec<Block>,
    pub norm: Tensor,
    /// None: tied to `embed`.
    pub output: Option<Tensor>,
}

/// LoRA settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoraConfig {
    pub rank: usize,
    pub alpha: f64,
}

impl LoraConfig {
    pub fn scale(&self) -> f64 {
        self.alpha / self.rank as f64
    }
}

/// LoRA factors of one block: `W + scale * B @ A` for the q and v projections.
pub struct LoraBlock {
    pub q_a: Var,
    pub q_b: Var,
    pub v_a: Var,
    pub v_b: Var,
}

/// A trainable LoRA adapter.
pub struct Lora {
    pub cfg: LoraConfig,
    pub blocks: Vec<LoraBlock>,
}

pub use crate::rng::SplitMix;

fn uniform_tensor(
    rng: &mut SplitMix,
    shape: (usize, usize),
    bound: f64,
    dtype: DType,
) -> Result<Tensor> {
    let data: Vec<f64> = (0..shape.0 * shape.1)
        .map(|_| rng.uniform() * bound)
        .collect();
    Tensor::from_vec(data, shape, &Device::Cpu)?.to_dtype(dtype)
}

impl Lora {
    /// The usual start: `A` uniform in ±1/sqrt(in), `B` zero, so the adapter starts as the identity.
    pub fn new(base: &Base, cfg: LoraConfig, seed: u64) -> Result<Self> {
        Self::init(base, cfg, seed, 0.0)
    }

    /// `B` random too (scaled by `b_bound`): for tests, where a zero `B` would hide `A`'s gradient.
    pub fn init(base: &Base, cfg: LoraConfig, seed: u64, b_bound: f64) -> Result<Self> {
        let c = &base.cfg;
        let dtype = base.embed.dtype();
        let mut rng = SplitMix::new(seed);
        let a_bound = 1.0 / (c.dim as f64).sqrt();
        let blocks = (0..c.n_layers)
            .map(|_| {
                Ok(LoraBlock {
                    q_a: Var::from_tensor(&uniform_tensor(
                        &mut rng,
                        (cfg.rank, c.dim),
                        a_bound,
                        dtype,
                    )?)?,
                    q_b: Var::from_tensor(&uniform_tensor(
                        &mut rng,
                        (c.dim, cfg.rank),
                        b_bound,
                        dtype,
                    )?)?,
                    v_a: Var::from_tensor(&uniform_tensor(
                        &mut rng,
                        (cfg.rank, c.dim),
                        a_bound,
                        dtype,
                    )?)?,
                    v_b: Var::from_tensor(&uniform_tensor(
                        &mut rng,
                        (c.kv_dim(), cfg.rank),
                        b_bound,
                        dtype,
                    )?)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { cfg, blocks })
    }

    /// Every trainable tensor, in a fixed order.
    pub fn vars(&self) -> Vec<Var> {
        self.blocks
            .iter()
            .flat_map(|b| [b.q_a.clone(), b.q_b.clone(), b.v_a.clone(), b.v_b.clone()])
            .collect()
    }

    /// Named tensors as the adapter file stores them.
    pub fn named(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        for (i, b) in self.blocks.iter().enumerate() {
            out.push((format!("blk.{i}.attn_q.lora_a"), b.q_a.as_tensor().clone()));
            out.push((format!("blk.{i}.attn_q.lora_b"), b.q_b.as_tensor().clone()));
            out.push((format!("blk.{i}.attn_v.lora_a"), b.v_a.as_tensor().clone()));
            out.push((format!("blk.{i}.attn_v.lora_b"), b.v_b.as_tensor().clone()));
        }
        out
    }

    pub fn parameter_count(&self) -> usize {
        self.vars().iter().map(|v| v.elem_count()).sum()
    }
}

/// A batch of examples, padded to the same length.
pub struct Batch {
    /// (batch, len) token ids.
    pub tokens: Tensor,
    /// Rows of the flattened (batch * len) positions whose next token is trained on.
    pub positions: Tensor,
    /// The token each of those positions must predict.
    pub targets: Tensor,
    /// Number of tokens fed (padding excluded).
    pub tokens_fed: usize,
}

impl Batch {
    /// Pads examples (with `pad`) into one batch.
    pub fn new(examples: &[&super::data::Example], pad: u32) -> Result<Self> {
        let len = examples.iter().map(|e| e.tokens.len()).max().unwrap_or(1);
        let mut ids = Vec::with_capacity(examples.len() * len);
        let mut positions = Vec::new();
        let mut targets = Vec::new();
        let mut fed = 0;
        for (row, e) in examples.iter().enumerate() {
            fed += e.tokens.len();
            ids.extend_from_slice(&e.tokens);
            ids.extend(std::iter::repeat_n(pad, len - e.tokens.len()));
            for i in 1..e.tokens.len() {
                if e.labels[i] {
                    positions.push((row * len + i - 1) as u32);
                    targets.push(e.tokens[i]);
                }
            }
        }
        if targets.is_empty() {
            candle_core::bail!("the batch has no labelled token");
        }
        let n = targets.len();
        Ok(Self {
            tokens: Tensor::from_vec(ids, (examples.len(), len), &Device::Cpu)?,
            positions: Tensor::from_vec(positions, n, &Device::Cpu)?,
            targets: Tensor::from_vec(targets, (n, 1), &Device::Cpu)?,
            tokens_fed: fed,
        })
    }

    pub fn labelled(&self) -> usize {
        self.targets.dims()[0]
    }
}

impl Base {
    /// Random weights for a configuration (tests and gradient checks).
    pub fn random(cfg: LlamaConfig, seed: u64, dtype: DType) -> Result<Self> {
        let mut rng = SplitMix::new(seed);
        let mut w = |out: usize, inp: usize| {
            uniform_tensor(&mut rng, (out, inp), 1.0 / (inp as f64).sqrt(), dtype)
        };
        let ones = |n: usize| -> Result<Tensor> {
            Tensor::ones(n, DType::F64, &Device::Cpu)?.to_dtype(dtype)
        };
        let mut blocks = Vec::new();
        for _ in 0..cfg.n_layers {
            blocks.push(Block {
                attn_norm: ones(cfg.dim)?,
                wq: w(cfg.dim, cfg.dim)?,
                wk: w(cfg.kv_dim(), cfg.dim)?,
                wv: w(cfg.kv_dim(), cfg.dim)?,
                wo: w(cfg.dim, cfg.dim)?,
                ffn_norm: ones(cfg.dim)?,
                w_gate: w(cfg.ffn, cfg.dim)?,
                w_up: w(cfg.ffn, cfg.dim)?,
                w_down: w(cfg.dim, cfg.ffn)?,
            });
        }
        let embed = w(cfg.vocab, cfg.dim)?.affine(3.0, 0.0)?;
        let norm = ones(cfg.dim)?;
        Ok(Self {
            cfg,
            embed,
            blocks,
            norm,
            output: None,
        })
    }

    /// Dequantizes a llama GGUF into f32 weights.
    pub fn from_gguf<R: std::io::Read + std::io::Seek>(
        content: &candle_core::quantized::gguf_file::Content,
        reader: &mut R,
    ) -> std::result::Result<Self, Error> {
        let md = |key: &str| {
            content
                .metadata
                .get(key)
                .ok_or_else(|| Error::Backend(format!("GGUF metadata {key} is missing")))
        };
        let md_usize = |key: &str| -> std::result::Result<usize, Error> {
            md(key)?
                .to_u32()
                .map(|v| v as usize)
                .map_err(|e| Error::Backend(format!("GGUF metadata {key}: {e}")))
        };
        let vocab = content
            .tensor_infos
            .get("token_embd.weight")
            .map(|t| t.shape.dims()[0])
            .ok_or_else(|| Error::Backend("GGUF has no token_embd.weight".into()))?;
        let cfg = LlamaConfig {
            vocab,
            dim: md_usize("llama.embedding_length")?,
            n_layers: md_usize("llama.block_count")?,
            n_heads: md_usize("llama.attention.head_count")?,
            n_kv_heads: md_usize("llama.attention.head_count_kv")?,
            ffn: md_usize("llama.feed_forward_length")?,
            rope_base: md("llama.rope.freq_base")
                .and_then(|v| v.to_f32().map_err(|e| Error::Backend(e.to_string())))
                .unwrap_or(10000.0),
            eps: md("llama.attention.layer_norm_rms_epsilon")
                .and_then(|v| v.to_f32().map_err(|e| Error::Backend(e.to_string())))
                .unwrap_or(1e-5) as f64,
        };
        let dev = Device::Cpu;
        let mut get = |name: &str| -> std::result::Result<Tensor, Error> {
            content
                .tensor(reader, name, &dev)
                .and_then(|q| q.dequantize(&dev))
                .map_err(|e| {
                    Error::Backend(format!(
                        "{name}: {}",
                        crate::pipeline::model::candle_message(&e)
                    ))
                })
        };
        let embed = get("token_embd.weight")?;
        let norm = get("output_norm.weight")?;
        let output = if content.tensor_infos.contains_key("output.weight") {
            Some(get("output.weight")?)
        } else {
            None
        };
        let mut blocks = Vec::new();
        for i in 0..cfg.n_layers {
            let p = format!("blk.{i}");
            blocks.push(Block {
                attn_norm: get(&format!("{p}.attn_norm.weight"))?,
                wq: get(&format!("{p}.attn_q.weight"))?,
                wk: get(&format!("{p}.attn_k.weight"))?,
                wv: get(&format!("{p}.attn_v.weight"))?,
                wo: get(&format!("{p}.attn_output.weight"))?,
                ffn_norm: get(&format!("{p}.ffn_norm.weight"))?,
                w_gate: get(&format!("{p}.ffn_gate.weight"))?,
                w_up: get(&format!("{p}.ffn_up.weight"))?,
                w_down: get(&format!("{p}.ffn_down.weight"))?,
            });
        }
        Ok(Self {
            cfg,
            embed,
            blocks,
            norm,
            output,
        })
    }

    fn rms_norm(&self, x: &Tensor, w: &Tensor) -> Result<Tensor> {
        let ms = x.sqr()?.mean_keepdim(D::Minus1)?;
        let inv = (ms + self.cfg.eps)?.sqrt()?.recip()?;
        x.broadcast_mul(&inv)?.broadcast_mul(w)
    }

    /// cos and sin tables (len, head_dim / 2).
    fn rope_tables(&self, len: usize) -> Result<(Tensor, Tensor)> {
        let hd = self.cfg.head_dim();
        let inv: Vec<f64> = (0..hd)
            .step_by(2)
            .map(|i| 1.0 / (self.cfg.rope_base as f64).powf(i as f64 / hd as f64))
            .collect();
        let mut angles = Vec::with_capacity(len * hd / 2);
        for p in 0..len {
            angles.extend(inv.iter().map(|f| p as f64 * f));
        }
        let dtype = self.embed.dtype();
        let a = Tensor::from_vec(angles, (len, hd / 2), &Device::Cpu)?;
        Ok((a.cos()?.to_dtype(dtype)?, a.sin()?.to_dtype(dtype)?))
    }

    /// Interleaved rope on (b, heads, len, head_dim).
    fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
        let (b, h, t, d) = x.dims4()?;
        let x = x.reshape((b, h, t, d / 2, 2))?;
        let x0 = x.narrow(4, 0, 1)?;
        let x1 = x.narrow(4, 1, 1)?;
        let cos = cos.reshape((t, d / 2, 1))?;
        let sin = sin.reshape((t, d / 2, 1))?;
        let r0 = (x0.broadcast_mul(&cos)? - x1.broadcast_mul(&sin)?)?;
        let r1 = (x0.broadcast_mul(&sin)? + x1.broadcast_mul(&cos)?)?;
        Tensor::cat(&[r0, r1], 4)?.reshape((b, h, t, d))
    }

    /// Final-norm hidden states, (batch * len, dim).
    pub fn hidden(&self, tokens: &Tensor, lora: Option<&Lora>) -> Result<Tensor> {
        let c = &self.cfg;
        let (b, t) = tokens.dims2()?;
        let (hd, nh, nkv) = (c.head_dim(), c.n_heads, c.n_kv_heads);
        let rep = nh / nkv;
        let n = b * t;
        let mut x = self.embed.index_select(&tokens.flatten_all()?, 0)?;
        let (cos, sin) = self.rope_tables(t)?;
        let mask: Vec<f32> = (0..t * t)
            .map(|i| {
                if i % t > i / t {
                    f32::NEG_INFINITY
                } else {
                    0.0
                }
            })
            .collect();
        let mask = Tensor::from_vec(mask, (t, t), &Device::Cpu)?.to_dtype(self.embed.dtype())?;
        let scale = 1.0 / (hd as f64).sqrt();
        for (i, blk) in self.blocks.iter().enumerate() {
            let h = self.rms_norm(&x, &blk.attn_norm)?;
            let mut q = linear(&h, &blk.wq)?;
            let k = linear(&h, &blk.wk)?;
            let mut v = linear(&h, &blk.wv)?;
            if let Some(l) = lora {
                let lb = &l.blocks[i];
                let s = l.cfg.scale();
                q = (q + (h.matmul(&lb.q_a.t()?)?.matmul(&lb.q_b.t()?)? * s)?)?;
                v = (v + (h.matmul(&lb.v_a.t()?)?.matmul(&lb.v_b.t()?)? * s)?)?;
            }
            let q = q.reshape((b, t, nh, hd))?.transpose(1, 2)?;
            let k = k.reshape((b, t, nkv, hd))?.transpose(1, 2)?;
            let v = v.reshape((b, t, nkv, hd))?.transpose(1, 2)?;
            let q = Self::rope(&q.contiguous()?, &cos, &sin)?;
            let k = Self::rope(&k.contiguous()?, &cos, &sin)?;
            // Query head j reads key/value head j / rep.
            let k = k
                .unsqueeze(2)?
                .broadcast_as((b, nkv, rep, t, hd))?
                .reshape((b, nh, t, hd))?;
            let v = v
                .contiguous()?
                .unsqueeze(2)?
                .broadcast_as((b, nkv, rep, t, hd))?
                .reshape((b, nh, t, hd))?;
            let att = (q.matmul(&k.t()?)? * scale)?.broadcast_add(&mask)?;
            // Softmax from primitives; the max is only a shift, so it needs no gradient.
            let m = att.max_keepdim(D::Minus1)?.detach();
            let e = att.broadcast_sub(&m)?.exp()?;
            let p = e.broadcast_div(&e.sum_keepdim(D::Minus1)?)?;
            let y = p
                .matmul(&v.contiguous()?)?
                .transpose(1, 2)?
                .reshape((n, c.dim))?;
            x = (x + linear(&y, &blk.wo)?)?;
            let h = self.rms_norm(&x, &blk.ffn_norm)?;
            let g = linear(&h, &blk.w_gate)?.silu()?;
            let u = linear(&h, &blk.w_up)?;
            x = (x + linear(&(g * u)?, &blk.w_down)?)?;
        }
        self.rms_norm(&x, &self.norm)
    }

    /// Logits for some rows of the hidden states.
    pub fn logits(&self, hidden: &Tensor) -> Result<Tensor> {
        linear(hidden, self.output.as_ref().unwrap_or(&self.embed))
    }

    /// Logits at every position, (batch, len, vocab).
    pub fn all_logits(&self, tokens: &Tensor, lora: Option<&Lora>) -> Result<Tensor> {
        let (b, t) = tokens.dims2()?;
        self.logits(&self.hidden(tokens, lora)?)?
            .reshape((b, t, self.cfg.vocab))
    }

    /// Mean cross-entropy over the batch's labelled positions.
    pub fn loss(&self, batch: &Batch, lora: Option<&Lora>) -> Result<Tensor> {
        let h = self.hidden(&batch.tokens, lora)?;
        // The output layer only where a label is: most of a conversation is prompt.
        let logits = self.logits(&h.index_select(&batch.positions, 0)?)?;
        let m = logits.max_keepdim(D::Minus1)?.detach();
        let z = logits.broadcast_sub(&m)?;
        let lse = z.exp()?.sum_keepdim(D::Minus1)?.log()?;
        let logp = z.broadcast_sub(&lse)?;
        logp.gather(&batch.targets, 1)?.mean_all()?.neg()
    }
}
