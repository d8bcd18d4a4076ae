//! Writing a trained LoRA as an adapter file, and reading one back into a trainable [`Lora`]. The file
//! format and applying an adapter to a model live with the model loader
//! ([`pipeline::model::adapter`](crate::pipeline::model::adapter)).

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Tensor};

use super::model::{Lora, LoraBlock, LoraConfig};
use crate::Error;
use crate::pipeline::model::adapter::{Adapter, AdapterInfo, FORMAT, invalid};

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

/// Puts an adapter's tensors back into a trainable [`Lora`] (to continue training or compare).
pub fn to_lora(adapter: &Adapter, n_layers: usize) -> Result<Lora, Error> {
    let var = |name: String| -> Result<candle_core::Var, Error> {
        let t = adapter.factor(&name)?;
        candle_core::Var::from_tensor(t).map_err(|e| Error::Backend(e.to_string()))
    };
    let blocks = (0..n_layers)
        .map(|i| {
            Ok(LoraBlock {
                q_a: var(format!("blk.{i}.attn_q.lora_a"))?,
                q_b: var(format!("blk.{i}.attn_q.lora_b"))?,
                v_a: var(format!("blk.{i}.attn_v.lora_a"))?,
                v_b: var(format!("blk.{i}.attn_v.lora_b"))?,
            })
        })
        .collect::<Result<Vec<_>, Error>>()?;
    Ok(Lora {
        cfg: LoraConfig {
            rank: adapter.info.rank,
            alpha: adapter.info.alpha,
        },
        blocks,
    })
}
