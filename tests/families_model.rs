//! Qwen2.5-Coder-0.5B-Instruct (`qwen2`) and Gemma 3 270M (`gemma3`) on stoplab's own forward pass.
//!
//! * Greedy ids against llama.cpp's: for every prompt of the reference files
//!   (`../shared/reference/*-greedy.json`, measured with llama.cpp's `/completion` on the same files), the
//!   model is fed the reference's `prompt_ids` and then its own choices one at a time (as llama.cpp decodes),
//!   and its greedy ids must equal llama.cpp's up to the first step where llama.cpp's top two candidates were
//!   within 0.3 nats (`first_small_margin_index`; all of them when there is none). From that step on,
//!   different float rounding may rightly pick the other candidate, so the test stops there.
//! * Crafted headers: each architecture's own fields (key and value widths, the sliding window, the q/k
//!   norms, post-norms and biases) are checked against the tensors, and a file that contradicts them is an
//!   error naming the field, never a panic.
//!
//! The models are found by their manifest names through stoplab's fetch resolution, as a user's
//! `--model NAME` finds them (fetched into the cache on first use).

#[path = "common/reference.rs"]
mod reference;

use std::path::PathBuf;

use serde_json::Value;
use stoplab::model::{Backend, GgufLlama, Model, Next};

const QWEN: &str = "qwen2.5-coder-0.5b-instruct";
const GEMMA: &str = "gemma3-270m";

/// A reference file (see `common/reference.rs`), which holds a JSON array.
fn reference(file: &str) -> Vec<Value> {
    reference::json(file)
        .as_array()
        .unwrap_or_else(|| panic!("{file}: not a JSON array"))
        .clone()
}

fn model_path(name: &str) -> PathBuf {
    stoplab::fetch::resolve(Some(name), stoplab::fetch::Progress::Hide).unwrap_or_else(|e| {
        panic!(
            "model {name} is not available: {e}. It must be in models/manifest.toml; `stoplab fetch {name}` \
             downloads it into the cache"
        )
    })
}

fn ids(v: &Value, key: &str) -> Vec<u32> {
    v[key]
        .as_array()
        .unwrap_or_else(|| panic!("{key} is not an array"))
        .iter()
        .map(|x| x.as_u64().expect("a token id") as u32)
        .collect()
}

fn argmax(next: Next) -> u32 {
    match next {
        Next::Logits(l) => {
            // The first of equal maxima, as llama.cpp's greedy sampler takes it.
            let mut best = 0;
            for (i, &v) in l.iter().enumerate() {
                if v > l[best] {
                    best = i;
                }
            }
            best as u32
        }
        Next::Forced(_) => panic!("a real model gives logits"),
    }
}

/// Runs every prompt of `file` on `name` and returns one line per prompt; fails on any prompt whose ids
/// leave llama.cpp's before its first near-tie.
fn greedy_agrees_with_llama_cpp(name: &str, file: &str) {
    let path = model_path(name);
    let mut model = GgufLlama::open(&path, Backend::Native).unwrap();
    assert_eq!(
        model.backend(),
        Backend::Native,
        "{name} must run on stoplab's own forward pass"
    );
    let mut report = Vec::new();
    let mut failures = Vec::new();
    for case in reference(file) {
        let prompt = ids(&case, "prompt_ids");
        let want = ids(&case, "tokens");
        let cap = case["first_small_margin_index"]
            .as_u64()
            .map_or(want.len(), |i| i as usize)
            .min(want.len());
        let case_name = case["name"].as_str().unwrap_or("?");
        let mut got = Vec::new();
        let mut next = argmax(model.forward(&prompt, 0).unwrap());
        let mut pos = prompt.len();
        while got.len() < cap {
            got.push(next);
            if got.len() == cap || next != want[got.len() - 1] {
                break;
            }
            next = argmax(model.forward(&[next], pos).unwrap());
            pos += 1;
        }
        let matched = got.iter().zip(&want).take_while(|(a, b)| a == b).count();
        report.push(format!(
            "{name} {case_name}: {matched} of {cap} ids checked agree ({} in the reference)",
            want.len()
        ));
        if matched < cap {
            failures.push(format!(
                "{name} {case_name}: step {matched} gave {} where llama.cpp gave {} (ids before the first \
                 near-tie: {cap}); got {:?}, want {:?}",
                got[matched],
                want[matched],
                got,
                &want[..cap]
            ));
        }
    }
    eprintln!("{}", report.join("\n"));
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn qwen2_greedy_ids_equal_llama_cpps_up_to_the_first_near_tie() {
    greedy_agrees_with_llama_cpp(QWEN, "qwen25-coder-0.5b-greedy.json");
}

#[test]
fn gemma3_greedy_ids_equal_llama_cpps_up_to_the_first_near_tie() {
    greedy_agrees_with_llama_cpp(GEMMA, "gemma3-270m-greedy.json");
}

/// candle's gemma3 computes a different function (SiLU for GELU): asked for it, stoplab refuses and says
/// why rather than generate from it.
#[test]
fn candles_backend_refuses_gemma3() {
    let Err(e) = GgufLlama::open(&model_path(GEMMA), Backend::Candle) else {
        panic!("candle's backend loaded gemma3");
    };
    let e = e.to_string();
    assert!(e.contains("gemma3") && e.contains("GELU"), "{e}");
}

/// Where each part of a GGUF header lies, for patching.
struct Header {
    /// Metadata: key, byte offset of the value, type.
    values: Vec<(String, usize, u32)>,
    /// Tensors: name, offset of the name's bytes, offset of its dims.
    tensors: Vec<(String, usize, usize)>,
    /// Where tensor data starts.
    data: usize,
}

fn parse(b: &[u8]) -> Header {
    fn u32_at(b: &[u8], at: &mut usize) -> u32 {
        let v = u32::from_le_bytes(b[*at..*at + 4].try_into().unwrap());
        *at += 4;
        v
    }
    fn u64_at(b: &[u8], at: &mut usize) -> u64 {
        let v = u64::from_le_bytes(b[*at..*at + 8].try_into().unwrap());
        *at += 8;
        v
    }
    fn skip(t: u32, at: &mut usize, b: &[u8]) {
        match t {
            0 | 1 | 7 => *at += 1,
            2 | 3 => *at += 2,
            4..=6 => *at += 4,
            10..=12 => *at += 8,
            8 => *at += u64_at(b, at) as usize,
            9 => {
                let it = u32_at(b, at);
                for _ in 0..u64_at(b, at) {
                    skip(it, at, b);
                }
            }
            _ => panic!("unknown GGUF value type {t}"),
        }
    }
    assert_eq!(&b[..4], b"GGUF");
    let mut at = 4;
    assert_eq!(u32_at(b, &mut at), 3, "GGUF version");
    let n_tensors = u64_at(b, &mut at);
    let n_kv = u64_at(b, &mut at);
    let mut values = Vec::new();
    let mut alignment = 32;
    for _ in 0..n_kv {
        let n = u64_at(b, &mut at) as usize;
        let key = String::from_utf8_lossy(&b[at..at + n]).into_owned();
        at += n;
        let t = u32_at(b, &mut at);
        if key == "general.alignment" {
            alignment = u32::from_le_bytes(b[at..at + 4].try_into().unwrap()) as usize;
        }
        values.push((key, at, t));
        skip(t, &mut at, b);
    }
    let mut tensors = Vec::new();
    for _ in 0..n_tensors {
        let n = u64_at(b, &mut at) as usize;
        let name_at = at;
        let name = String::from_utf8_lossy(&b[at..at + n]).into_owned();
        at += n;
        let nd = u32_at(b, &mut at) as usize;
        tensors.push((name, name_at, at));
        at += 8 * nd + 4 + 8;
    }
    Header {
        values,
        tensors,
        data: at.div_ceil(alignment) * alignment,
    }
}

impl Header {
    fn value(&self, key: &str) -> (usize, u32) {
        let v = self.values.iter().find(|v| v.0 == key);
        let (_, at, t) = v.unwrap_or_else(|| panic!("the file has no {key}"));
        (*at, *t)
    }

    fn tensor(&self, name: &str) -> (usize, usize) {
        let t = self.tensors.iter().find(|t| t.0 == name);
        let (_, name_at, dims) = t.unwrap_or_else(|| panic!("the file has no tensor {name}"));
        (*name_at, *dims)
    }
}

fn set_u32(b: &mut [u8], h: &Header, key: &str, v: u32) {
    let (at, t) = h.value(key);
    assert_eq!(t, 4, "{key} is a u32");
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn set_f32(b: &mut [u8], h: &Header, key: &str, v: f32) {
    let (at, t) = h.value(key);
    assert_eq!(t, 6, "{key} is an f32");
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

/// Sets the first dimension of a tensor (the length of a vector).
fn set_dim0(b: &mut [u8], h: &Header, tensor: &str, v: u64) {
    let (_, dims) = h.tensor(tensor);
    b[dims..dims + 8].copy_from_slice(&v.to_le_bytes());
}

/// Renames a tensor to a name of the same length.
fn rename(b: &mut [u8], h: &Header, tensor: &str, to: &str) {
    assert_eq!(tensor.len(), to.len());
    let (at, _) = h.tensor(tensor);
    b[at..at + to.len()].copy_from_slice(to.as_bytes());
}

fn set_string(b: &mut [u8], h: &Header, key: &str, to: &str) {
    let (at, t) = h.value(key);
    assert_eq!(t, 8, "{key} is a string");
    let n = u64::from_le_bytes(b[at..at + 8].try_into().unwrap()) as usize;
    assert_eq!(n, to.len());
    b[at + 8..at + 8 + n].copy_from_slice(to.as_bytes());
}

type Patch = Box<dyn Fn(&mut Vec<u8>, &Header)>;

/// Loads copies of `name`'s file with each patch applied to its header: each must be an error naming the
/// file and containing every string of its case. The copies hold the header and a sparse stretch of zeros
/// as long as the tensors (the checks run before any weight is read; the unpatched copy loads).
fn crafted_headers(name: &str, cases: Vec<(&str, Patch, &[&str])>) {
    let original = model_path(name);
    let len = std::fs::metadata(&original).unwrap().len();
    let bytes = std::fs::read(&original).unwrap();
    let h = parse(&bytes);
    let header = bytes[..h.data].to_vec();
    drop(bytes);
    let dir = tempfile::tempdir().unwrap();
    let write = |b: &[u8]| -> PathBuf {
        let path = dir.path().join("crafted.gguf");
        let f = std::fs::File::create(&path).unwrap();
        std::io::Write::write_all(&mut &f, b).unwrap();
        f.set_len(len).unwrap();
        path
    };
    // The control: the copy as it is loads (its weights are zeros).
    let path = write(&header);
    if let Err(e) = GgufLlama::open(&path, Backend::Native) {
        panic!("the unpatched copy of {name} does not load: {e}");
    }
    let mut failures = Vec::new();
    for (what, patch, want) in &cases {
        let mut b = header.clone();
        patch(&mut b, &h);
        let path = write(&b);
        let result = std::panic::catch_unwind(|| GgufLlama::open(&path, Backend::Native).err());
        match result {
            Err(_) => failures.push(format!("{what}: panicked")),
            Ok(None) => failures.push(format!("{what}: loaded")),
            Ok(Some(e)) => {
                let e = e.to_string();
                let missing: Vec<_> = want.iter().filter(|w| !e.contains(**w)).collect();
                if !missing.is_empty() || !e.contains(&path.display().to_string()) {
                    failures.push(format!("{what}: {e:?} (missing {missing:?} or the path)"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn crafted_gemma3_headers_are_errors_naming_the_field() {
    let cases: Vec<(&str, Patch, &[&str])> = vec![
        (
            "no key width",
            Box::new(|b, h| set_u32(b, h, "gemma3.attention.key_length", 0)),
            &["gemma3.attention.key_length is 0"],
        ),
        (
            "a key width the tensors do not have",
            Box::new(|b, h| set_u32(b, h, "gemma3.attention.key_length", 128)),
            &["value_length is 256", "key_length is 128"],
        ),
        (
            "key and value widths that the tensors do not have",
            Box::new(|b, h| {
                set_u32(b, h, "gemma3.attention.key_length", 128);
                set_u32(b, h, "gemma3.attention.value_length", 128);
            }),
            &["tensor blk.0.attn_q.weight has shape", "head dimension 128"],
        ),
        (
            "an odd head dimension",
            Box::new(|b, h| {
                set_u32(b, h, "gemma3.attention.key_length", 255);
                set_u32(b, h, "gemma3.attention.value_length", 255);
            }),
            &["head dimension is 255", "gemma3.attention.key_length"],
        ),
        (
            "KV heads that do not divide the heads",
            Box::new(|b, h| set_u32(b, h, "gemma3.attention.head_count_kv", 3)),
            &[
                "gemma3.attention.head_count 4 is not a multiple of gemma3.attention.head_count_kv 3",
            ],
        ),
        (
            "more KV heads than the tensors have",
            Box::new(|b, h| set_u32(b, h, "gemma3.attention.head_count_kv", 2)),
            &[
                "tensor blk.0.attn_k.weight has shape",
                "gemma3.attention.head_count_kv 2",
            ],
        ),
        (
            "no sliding window",
            Box::new(|b, h| set_u32(b, h, "gemma3.attention.sliding_window", 0)),
            &["gemma3.attention.sliding_window is 0"],
        ),
        (
            "a NaN epsilon",
            Box::new(|b, h| set_f32(b, h, "gemma3.attention.layer_norm_rms_epsilon", f32::NAN)),
            &["gemma3.attention.layer_norm_rms_epsilon is NaN"],
        ),
        (
            "a negative rope base",
            Box::new(|b, h| set_f32(b, h, "gemma3.rope.freq_base", -1.0)),
            &["gemma3.rope.freq_base is -1"],
        ),
        (
            "a q norm of the wrong width",
            Box::new(|b, h| set_dim0(b, h, "blk.2.attn_q_norm.weight", 128)),
            &["tensor blk.2.attn_q_norm.weight has shape [128]", "[256]"],
        ),
        (
            "a missing k norm",
            Box::new(|b, h| rename(b, h, "blk.4.attn_k_norm.weight", "blk.4.attn_k_xorm.weight")),
            &["tensor blk.4.attn_k_norm.weight is missing"],
        ),
        (
            "a missing post-attention norm",
            Box::new(|b, h| {
                rename(
                    b,
                    h,
                    "blk.7.post_attention_norm.weight",
                    "blk.7.post_attention_xorm.weight",
                )
            }),
            &["tensor blk.7.post_attention_norm.weight is missing"],
        ),
        (
            "a post-feed-forward norm of the wrong width",
            Box::new(|b, h| set_dim0(b, h, "blk.17.post_ffw_norm.weight", 320)),
            &[
                "tensor blk.17.post_ffw_norm.weight has shape [320]",
                "[640]",
            ],
        ),
        (
            "an architecture stoplab does not run",
            Box::new(|b, h| set_string(b, h, "general.architecture", "gemma2")),
            &["\"gemma2\"", "general.architecture"],
        ),
    ];
    crafted_headers(GEMMA, cases);
}

#[test]
fn crafted_qwen2_headers_are_errors_naming_the_field() {
    let cases: Vec<(&str, Patch, &[&str])> = vec![
        (
            "heads that do not divide the embedding",
            Box::new(|b, h| set_u32(b, h, "qwen2.attention.head_count", 13)),
            &["qwen2.embedding_length 896 is not a multiple of qwen2.attention.head_count 13"],
        ),
        (
            "KV heads that do not divide the heads",
            Box::new(|b, h| set_u32(b, h, "qwen2.attention.head_count_kv", 4)),
            &["qwen2.attention.head_count 14 is not a multiple of qwen2.attention.head_count_kv 4"],
        ),
        (
            "a missing q bias",
            Box::new(|b, h| rename(b, h, "blk.0.attn_q.bias", "blk.0.attn_q.bixs")),
            &["tensor blk.0.attn_q.bias is missing"],
        ),
        (
            "a k bias of the wrong width",
            Box::new(|b, h| set_dim0(b, h, "blk.5.attn_k.bias", 64)),
            &["tensor blk.5.attn_k.bias has shape [64]", "[128]"],
        ),
        (
            "an empty context",
            Box::new(|b, h| set_u32(b, h, "qwen2.context_length", 0)),
            &["qwen2.context_length is 0"],
        ),
        (
            "more blocks than the tensors",
            Box::new(|b, h| set_u32(b, h, "qwen2.block_count", 25)),
            &["qwen2.block_count is 25", "24 blocks"],
        ),
    ];
    crafted_headers(QWEN, cases);
}
