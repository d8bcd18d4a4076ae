//! LoRA adapter files (written by [`finetune`](crate::finetune)): safetensors with the settings and the base
//! model's identity in the metadata, and applying one on top of the quantized model. Loading a model with an
//! adapter needs only this file, never the trainer.
//!
//! Applying needs no f32 copy of the whole model: only the adapted projections (q and v of each block) become
//! f32 tensors holding `W + (alpha / rank) * B @ A`; every other tensor stays quantized. The modified GGUF is
//! written to memory and loaded from there, so any loader that reads a GGUF `Content` and a reader works.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Cursor, Read, Seek};
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::{self, Content};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};

use crate::Error;
use crate::pipeline::model::GgufFile;

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

pub(crate) fn invalid(path: &Path, message: impl Into<String>) -> Error {
    Error::Invalid {
        field: format!("adapter {}", path.display()),
        message: message.into(),
    }
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

    pub fn factor(&self, name: &str) -> Result<&Tensor, Error> {
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
        let scale = self.info.alpha / self.info.rank as f64;
        let d = b
            .matmul(a)
            .and_then(|d| d * scale)
            .map_err(|e| invalid(&self.path, format!("blk.{block}.{target}: {e}")))?;
        Ok(Some(d))
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

/// Loads an adapter for the model file `file` (whose sha256 is `sha256`), refusing one made for another
/// model, and returns the adapted GGUF in memory.
pub fn adapted_model(file: &GgufFile, sha256: &str, adapter_path: &Path) -> Result<Vec<u8>, Error> {
    let adapter = Adapter::load(adapter_path)?;
    let name = file
        .path
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    adapter.check_base(sha256, &name)?;
    let mut reader = BufReader::new(File::open(&file.path).map_err(|e| Error::Model {
        path: file.path.clone(),
        message: e.to_string(),
    })?);
    adapted_gguf(&file.content, &mut reader, &adapter)
}
