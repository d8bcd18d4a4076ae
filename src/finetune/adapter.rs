//! LoRA adapter files: safetensors with the settings and the base model's identity in the metadata, and
//! applying one on top of the quantized model.
//!
//! Applying needs no f32 copy of the whole model: only the adapted projections (q and v of each block) become
//! f32 tensors holding `W + (alpha / rank) * B @ A`; every other tensor stays quantized. The modified GGUF is
//! written to memory and loaded from there, so any loader that reads a GGUF `Content` and a reader works.

use std::collections::HashMap;
use std::io::{Cursor, Read, Seek};
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::{self, Content};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Device, Tensor};

use super::model::{Lora, LoraConfig};
use crate::Error;

/// The format tag written into every adapter's metadata.
pub const FORMAT: &str = "stoplab-lora-1";

/// What an adapter was made from and how.
#[derive(Debug, Clone, PartialEq)]
pub struct AdapterInfo {
    pub rank: usize,
    pub alpha: f64,
    /// Projections adapted, e.g. ["attn_q", "attn_v"].
    pub targets: Vec<String>,
    /// sha256 (hex) of the base GGUF file.
    pub base_sha256: String,
    /// The base GGUF's file name, for messages.
    pub base_file: String,
    /// Training settings, free-form (`append_stop`, `mask_end_token`, `steps`, `lr`, ...), kept for reports.
    pub settings: Vec<(String, String)>,
}

/// A loaded adapter: its settings and tensors by name (`blk.N.attn_q.lora_a`, ...).
#[derive(Debug, Clone)]
pub struct Adapter {
    pub info: AdapterInfo,
    pub tensors: HashMap<String, Tensor>,
    pub path: PathBuf,
}

fn invalid(path: &Path, message: impl Into<String>) -> Error {
    Error::Invalid {
        field: format!("adapter {}", path.display()),
        message: message.into(),
    }
}

/// Writes an adapter file.
pub fn save(path: &Path, lora: &Lora, info: &AdapterInfo) -> Result<(), Error> {
    let mut meta: HashMap<String, String> = HashMap::new();
    meta.insert("format".into(), FORMAT.into());
    meta.insert("rank".into(), info.rank.to_string());
    meta.insert("alpha".into(), info.alpha.to_string());
    meta.insert("targets".into(), info.targets.join(","));
    meta.insert("base_sha256".into(), info.base_sha256.clone());
    meta.insert("base_file".into(), info.base_file.clone());
    for (k, v) in &info.settings {
        meta.insert(format!("train.{k}"), v.clone());
    }
    let named: Vec<(String, Tensor)> = lora
        .named()
        .into_iter()
        .map(|(n, t)| Ok((n, t.to_dtype(DType::F32)?)))
        .collect::<candle_core::Result<_>>()
        .map_err(|e| Error::Backend(e.to_string()))?;
    // Write beside the destination, then rename: an interrupted save never leaves half a file.
    let tmp = path.with_extension("safetensors.partial");
    safetensors::serialize_to_file(named.iter().map(|(n, t)| (n.as_str(), t)), Some(meta), &tmp)
        .map_err(|e| invalid(path, format!("cannot write: {e}")))?;
    std::fs::rename(&tmp, path).map_err(|e| invalid(path, format!("cannot write: {e}")))?;
    Ok(())
}

impl Adapter {
    /// Reads an adapter file; errors name the file and what is wrong with it.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let bytes = std::fs::read(path).map_err(|e| invalid(path, format!("cannot read: {e}")))?;
        let (_, header) = safetensors::SafeTensors::read_metadata(&bytes)
            .map_err(|e| invalid(path, format!("not a safetensors file: {e}")))?;
        let meta = header.metadata().clone().unwrap_or_default();
        let get = |k: &str| {
            meta.get(k).cloned().ok_or_else(|| {
                invalid(
                    path,
                    format!("metadata {k:?} is missing; not a stoplab adapter"),
                )
            })
        };
        if get("format")? != FORMAT {
            return Err(invalid(
                path,
                format!("format {:?} is not {FORMAT:?}", meta.get("format")),
            ));
        }
        let rank = get("rank")?
            .parse()
            .map_err(|_| invalid(path, "metadata rank is not a number"))?;
        let alpha = get("alpha")?
            .parse()
            .map_err(|_| invalid(path, "metadata alpha is not a number"))?;
        let mut settings: Vec<(String, String)> = meta
            .iter()
            .filter_map(|(k, v)| k.strip_prefix("train.").map(|k| (k.to_string(), v.clone())))
            .collect();
        settings.sort();
        let info = AdapterInfo {
            rank,
            alpha,
            targets: get("targets")?.split(',').map(str::to_string).collect(),
            base_sha256: get("base_sha256")?,
            base_file: get("base_file")?,
            settings,
        };
        let tensors = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu)
            .map_err(|e| invalid(path, format!("cannot read its tensors: {e}")))?;
        Ok(Self {
            info,
            tensors,
            path: path.to_path_buf(),
        })
    }

    /// Refuses an adapter trained on another model file.
    pub fn check_base(&self, sha256: &str, file: &str) -> Result<(), Error> {
        if self.info.base_sha256 != sha256 {
            return Err(invalid(
                &self.path,
                format!(
                    "was trained on {} (sha256 {}), not on this model {file} (sha256 {sha256}); \
                     use it with that model (--model) or train a new adapter for this one",
                    self.info.base_file, self.info.base_sha256
                ),
            ));
        }
        Ok(())
    }

    /// A training setting recorded in the metadata.
    pub fn setting(&self, key: &str) -> Option<&str> {
        self.info
            .settings
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn factor(&self, name: &str) -> Result<&Tensor, Error> {
        self.tensors
            .get(name)
            .ok_or_else(|| invalid(&self.path, format!("tensor {name} is missing")))
    }

    /// The low-rank update `(alpha / rank) * B @ A` of one projection (`attn_q` or `attn_v`) of block `i`.
    pub fn delta(&self, block: usize, target: &str) -> Result<Option<Tensor>, Error> {
        if !self.info.targets.iter().any(|t| t == target) {
            return Ok(None);
        }
        let a = self.factor(&format!("blk.{block}.{target}.lora_a"))?;
        let b = self.factor(&format!("blk.{block}.{target}.lora_b"))?;
        let scale = LoraConfig {
            rank: self.info.rank,
            alpha: self.info.alpha,
        }
        .scale();
        let d = b
            .matmul(a)
            .and_then(|d| d * scale)
            .map_err(|e| invalid(&self.path, format!("blk.{block}.{target}: {e}")))?;
        Ok(Some(d))
    }

    /// Puts the adapter's tensors back into a trainable [`Lora`] (to continue training or compare).
    pub fn to_lora(&self, n_layers: usize) -> Result<Lora, Error> {
        let var = |name: String| -> Result<candle_core::Var, Error> {
            let t = self.factor(&name)?;
            candle_core::Var::from_tensor(t).map_err(|e| Error::Backend(e.to_string()))
        };
        let blocks = (0..n_layers)
            .map(|i| {
                Ok(super::model::LoraBlock {
                    q_a: var(format!("blk.{i}.attn_q.lora_a"))?,
                    q_b: var(format!("blk.{i}.attn_q.lora_b"))?,
                    v_a: var(format!("blk.{i}.attn_v.lora_a"))?,
                    v_b: var(format!("blk.{i}.attn_v.lora_b"))?,
                })
            })
            .collect::<Result<Vec<_>, Error>>()?;
        Ok(Lora {
            cfg: LoraConfig {
                rank: self.info.rank,
                alpha: self.info.alpha,
            },
            blocks,
        })
    }
}

/// Writes a GGUF to memory with the adapted projections replaced by f32 `W + delta`; every other tensor is
/// copied as it is (still quantized). The result loads like the original file.
pub fn adapted_gguf<R: Read + Seek>(
    content: &Content,
    reader: &mut R,
    adapter: &Adapter,
) -> Result<Vec<u8>, Error> {
    let dev = Device::Cpu;
    let backend = |e: candle_core::Error| invalid(&adapter.path, format!("applying: {e}"));
    let mut names: Vec<&String> = content.tensor_infos.keys().collect();
    // Keep the file's own tensor order (by offset), as llama.cpp writes it.
    names.sort_by_key(|n| content.tensor_infos[*n].offset);
    let mut tensors: Vec<(String, QTensor)> = Vec::with_capacity(names.len());
    let mut applied = 0;
    for name in names {
        let q = content.tensor(reader, name, &dev).map_err(backend)?;
        let target = name
            .strip_prefix("blk.")
            .and_then(|r| r.split_once('.'))
            .and_then(|(i, rest)| Some((i.parse::<usize>().ok()?, rest.strip_suffix(".weight")?)));
        let q = match target {
            Some((i, t)) if t == "attn_q" || t == "attn_v" => match adapter.delta(i, t)? {
                Some(d) => {
                    let w = q.dequantize(&dev).map_err(backend)?;
                    if w.dims() != d.dims() {
                        return Err(invalid(
                            &adapter.path,
                            format!(
                                "{name} is {:?} but the adapter's update is {:?}: made for another architecture",
                                w.dims(),
                                d.dims()
                            ),
                        ));
                    }
                    applied += 1;
                    QTensor::quantize(&(w + d).map_err(backend)?, GgmlDType::F32)
                        .map_err(backend)?
                }
                None => q,
            },
            _ => q,
        };
        tensors.push((name.clone(), q));
    }
    let expected = adapter.tensors.len() / 2;
    if applied != expected {
        return Err(invalid(
            &adapter.path,
            format!(
                "has updates for {expected} projections but the model has {applied} of them: made for another architecture"
            ),
        ));
    }
    let metadata: Vec<(&str, &gguf_file::Value)> = content
        .metadata
        .iter()
        .map(|(k, v)| (k.as_str(), v))
        .collect();
    let refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let mut out = Cursor::new(Vec::new());
    gguf_file::write(&mut out, &metadata, &refs).map_err(backend)?;
    Ok(out.into_inner())
}
