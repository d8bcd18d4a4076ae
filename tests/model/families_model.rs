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

use crate::common::gguf::{Header, parse, rename, set_dim, set_f32, set_string, set_u32};
use crate::common::reference;

use std::path::PathBuf;

use serde_json::Value;
use stoplab::pipeline::model::{Backend, GgufLlama, Model, Next};

const QWEN: &str = "qwen2.5-coder-0.5b-instruct";
const GEMMA: &str = "gemma3-270m";

/// A reference file (see `common/reference.rs`), which holds a JSON array.
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
    let path = crate::common::model_path(Some(name));
    let mut model = GgufLlama::open(&path, Backend::Native).unwrap();
    assert_eq!(
        model.backend(),
        Backend::Native,
        "{name} must run on stoplab's own forward pass"
    );
    let mut report = Vec::new();
    let mut failures = Vec::new();
    for case in reference::array(file) {
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
    let Err(e) = GgufLlama::open(&crate::common::model_path(Some(GEMMA)), Backend::Candle) else {
        panic!("candle's backend loaded gemma3");
    };
    let e = e.to_string();
    assert!(e.contains("gemma3") && e.contains("GELU"), "{e}");
}

type Patch = Box<dyn Fn(&mut Vec<u8>, &Header)>;

/// Loads copies of `name`'s file with each patch applied to its header: each must be an error naming the
/// file and containing every string of its case. The copies hold the header and a sparse stretch of zeros
/// as long as the tensors (the checks run before any weight is read; the unpatched copy loads).
fn crafted_headers(name: &str, cases: Vec<(&str, Patch, &[&str])>) {
    let original = crate::common::model_path(Some(name));
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
            Box::new(|b, h| set_dim(b, h, "blk.2.attn_q_norm.weight", 0, 128)),
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
            Box::new(|b, h| set_dim(b, h, "blk.17.post_ffw_norm.weight", 0, 320)),
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
            Box::new(|b, h| set_dim(b, h, "blk.5.attn_k.bias", 0, 64)),
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
