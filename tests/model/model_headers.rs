//! Hostile and broken GGUF files, fed to the built binary: each is an error (exit status 1) that names the
//! file and the header field or tensor at fault, never a panic, never output from a model that cannot be
//! right. The files are the default model with one header field (or one weight) patched.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::gguf::{Header, parse, set_dim, set_f32, set_offset, set_type, set_u32};

fn default_model() -> PathBuf {
    crate::common::model_path(None)
}

/// Runs `stoplab complete` on `model` and returns (exit code, stderr, stdout).
fn run(model: &Path) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_stoplab"))
        .args(["complete", "--threads", "1", "--max-tokens", "4", "--model"])
        .arg(model)
        .arg("Once upon a time")
        .env_remove("STOPLAB_BACKEND")
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

type Patch = Box<dyn Fn(&mut Vec<u8>, &Header)>;

#[test]
fn broken_headers_are_errors_naming_the_file_and_the_field() {
    let original = std::fs::read(default_model()).unwrap();
    let h = parse(&original);
    let size = original.len() as u64;
    let data = h.data as u64;
    let q_off = h.tensor_offset(&original, "blk.0.attn_q.weight");
    let cases: Vec<(&str, Patch, &[&str])> = vec![
        (
            "no attention heads",
            Box::new(|b, h| set_u32(b, h, "llama.attention.head_count", 0)),
            &["llama.attention.head_count is 0"],
        ),
        (
            "no KV heads",
            Box::new(|b, h| set_u32(b, h, "llama.attention.head_count_kv", 0)),
            &["llama.attention.head_count_kv is 0"],
        ),
        (
            "heads that do not divide the embedding",
            Box::new(|b, h| set_u32(b, h, "llama.attention.head_count", 7)),
            &["llama.embedding_length", "llama.attention.head_count 7"],
        ),
        (
            "KV heads that do not divide the heads",
            Box::new(|b, h| set_u32(b, h, "llama.attention.head_count_kv", 2)),
            &["llama.attention.head_count_kv 2"],
        ),
        (
            "a head dimension the tensors do not have",
            Box::new(|b, h| {
                set_u32(b, h, "llama.attention.head_count", 3);
                set_u32(b, h, "llama.attention.head_count_kv", 3);
            }),
            &[
                "tensor blk.0.attn_k.weight has shape",
                "llama.attention.head_count 3",
            ],
        ),
        (
            "a rope over no dimensions",
            Box::new(|b, h| set_u32(b, h, "llama.rope.dimension_count", 0)),
            &["llama.rope.dimension_count is 0", "head dimension is 64"],
        ),
        (
            "a rope over part of the head",
            Box::new(|b, h| set_u32(b, h, "llama.rope.dimension_count", 32)),
            &["llama.rope.dimension_count is 32", "head dimension is 64"],
        ),
        (
            "an empty context",
            Box::new(|b, h| set_u32(b, h, "llama.context_length", 0)),
            &["llama.context_length is 0"],
        ),
        (
            "no blocks",
            Box::new(|b, h| set_u32(b, h, "llama.block_count", 0)),
            &["llama.block_count is 0"],
        ),
        (
            "fewer blocks than the tensors",
            Box::new(|b, h| set_u32(b, h, "llama.block_count", 29)),
            &["llama.block_count is 29", "30 blocks"],
        ),
        (
            "more blocks than the tensors",
            Box::new(|b, h| set_u32(b, h, "llama.block_count", 31)),
            &["llama.block_count is 31", "30 blocks"],
        ),
        (
            "no embedding dimension",
            Box::new(|b, h| set_u32(b, h, "llama.embedding_length", 0)),
            &["llama.embedding_length is 0"],
        ),
        (
            "a NaN epsilon",
            Box::new(|b, h| set_f32(b, h, "llama.attention.layer_norm_rms_epsilon", f32::NAN)),
            &["llama.attention.layer_norm_rms_epsilon is NaN"],
        ),
        (
            "an embedding with fewer rows than the tokenizer has tokens",
            Box::new(|b, h| set_dim(b, h, "token_embd.weight", 1, 1000)),
            &["token_embd.weight", "49152 tokens"],
        ),
        (
            "an unsupported embedding type whose size runs into other tensors (F16)",
            Box::new(|b, h| set_type(b, h, "token_embd.weight", 1)),
            &["token_embd.weight"],
        ),
        (
            "an offset that overflows",
            Box::new(|b, h| set_offset(b, h, "blk.0.attn_q.weight", u64::MAX - 8)),
            &["tensor blk.0.attn_q.weight", "overflow"],
        ),
        (
            "an offset that wraps around to the start of the data",
            Box::new(move |b, h| {
                set_offset(b, h, "blk.0.attn_q.weight", (u64::MAX - data) + 1 + 64)
            }),
            &["tensor blk.0.attn_q.weight", "overflow"],
        ),
        (
            "an offset past the end of the file",
            Box::new(move |b, h| set_offset(b, h, "blk.0.attn_q.weight", size * 2)),
            &["tensor blk.0.attn_q.weight", "past the end of the file"],
        ),
        (
            "two tensors at one offset",
            Box::new(move |b, h| set_offset(b, h, "blk.0.attn_k.weight", q_off)),
            &["blk.0.attn_k.weight", "blk.0.attn_q.weight", "overlap"],
        ),
        (
            "a truncated file",
            Box::new(|b, _| b.truncate(b.len() / 2)),
            &["truncated"],
        ),
        (
            "a truncated header",
            Box::new(|b, _| b.truncate(5000)),
            &["header is corrupt or truncated"],
        ),
        (
            "a string whose length says 2^60 bytes (candle would try to allocate it)",
            Box::new(|b, h| {
                let (at, ty) = h.value("general.architecture");
                assert_eq!(ty, 8);
                b[at..at + 8].copy_from_slice(&(1u64 << 60).to_le_bytes());
            }),
            &["general.architecture", "are left in the file"],
        ),
        (
            "an array of 2^29 strings in a 98 MB file",
            Box::new(|b, h| {
                let (at, ty) = h.value("tokenizer.ggml.tokens");
                assert_eq!(ty, 9);
                b[at + 4..at + 12].copy_from_slice(&(1u64 << 29).to_le_bytes());
            }),
            &["tokenizer.ggml.tokens", "536870912 elements"],
        ),
        (
            "a metadata count the file cannot hold",
            Box::new(|b, _| b[16..24].copy_from_slice(&(u64::MAX / 2).to_le_bytes())),
            &["metadata entries", "cannot hold"],
        ),
        (
            "a tensor count the file cannot hold",
            Box::new(|b, _| b[8..16].copy_from_slice(&(u64::MAX / 2).to_le_bytes())),
            &["tensors", "cannot hold"],
        ),
        (
            "a file full of zeros",
            Box::new(|b, _| b.iter_mut().for_each(|v| *v = 0)),
            &["not a GGUF file"],
        ),
        (
            "a NaN weight scale (the data, not the header)",
            Box::new(|b, h| {
                // The first Q8_0 block of the tied embedding/output matrix: its f16 scale.
                let t = h.tensor("token_embd.weight");
                let (ty, off) = (t.ty, t.offset);
                assert_eq!(u32::from_le_bytes(b[ty..ty + 4].try_into().unwrap()), 8);
                let at = h.data + u64::from_le_bytes(b[off..off + 8].try_into().unwrap()) as usize;
                b[at..at + 2].copy_from_slice(&0x7E00u16.to_le_bytes());
            }),
            &["logit of NaN (token 0)"],
        ),
    ];
    let dir = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for (what, patch, want) in &cases {
        let path = dir.path().join("broken.gguf");
        let mut bytes = original.clone();
        patch(&mut bytes, &h);
        std::fs::write(&path, &bytes).unwrap();
        let (code, stderr, stdout) = run(&path);
        let names_file = stderr.contains(&path.display().to_string());
        let missing: Vec<&&str> = want.iter().filter(|w| !stderr.contains(**w)).collect();
        if code != Some(1)
            || !names_file
            || !missing.is_empty()
            || stderr.contains("panicked")
            || !stdout.is_empty()
        {
            failures.push(format!(
                "{what}: exit {code:?}, stdout {stdout:?}, stderr {stderr:?} (missing {missing:?})"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The unpatched copy runs: the table above fails for the patches, not for the copy.
#[test]
fn the_unpatched_copy_runs() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.gguf");
    std::fs::copy(default_model(), &path).unwrap();
    let (code, stderr, stdout) = run(&path);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(!stdout.is_empty());
}

/// `STOPLAB_BACKEND` is read in one place, and a value that names no backend is an error, not the default.
#[test]
fn an_unknown_backend_is_refused() {
    let out = Command::new(env!("CARGO_BIN_EXE_stoplab"))
        .args(["complete", "--threads", "1", "--max-tokens", "2", "Hi"])
        .env("STOPLAB_BACKEND", "bogus")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("STOPLAB_BACKEND=\"bogus\""), "{stderr}");
    assert!(out.stdout.is_empty());
}
