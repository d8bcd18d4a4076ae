//! A generated chat vocabulary for the server tests without weights: a GGUF file of metadata only (no
//! tensors) laid out like SmolLM2's, so the replay tier serves the OpenAI API with no model in the cache.
//!
//! * ids 0 `<|endoftext|>`, 1 `<|im_start|>`, 2 `<|im_end|>`: control tokens, as in SmolLM2 (BOS 1, EOS 2;
//!   the end set {0, 2});
//! * then one token per byte (GPT-2's byte-level pieces), so every text and every UTF-8 cut encodes;
//! * then [`CHATML_WORDS`], each one token through byte-level BPE merges (with the prefixes the merges
//!   build): the few words the tests need as single tokens, as SmolLM2 has them (" Berlin" for a stop that
//!   ends inside a token, " one" " two" for `stop_token_ids`, " Hi" " more" " ab" for the counts of the
//!   end-token and `min_tokens` tests, "Hi" " there" for a vocabulary's own piece "Ġthere");
//! * `tokenizer.chat_template`: SmolLM2's ChatML template ([`CHATML_TEMPLATE`], no tools branch).
//!
//! The file is written once per test process into cargo's scratch directory for integration tests
//! (`CARGO_TARGET_TMPDIR`) as `stoplab-test-chatml.gguf`: its stem is the model-name alias a server gives
//! it, as "SmolLM2-135M-Instruct.Q4_1" is the default model's.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use candle_core::quantized::gguf_file::{self, Value};
use stoplab::pipeline::model::GgufFile;

use super::piece;

/// The file's stem (a server's alias for the model) and its `general.name`.
pub const CHATML_NAME: &str = "stoplab-test-chatml";

/// The control tokens, at SmolLM2's ids.
pub const CHATML_SPECIALS: [&str; 3] = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"];

/// Words that encode as one token each (after the 256 byte tokens, with their BPE prefixes).
pub const CHATML_WORDS: &[&str] = &[
    " Berlin", " one", " two", " three", " Hi", " more", " ab", " there", "Hi", "ab",
];

/// SmolLM2-135M-Instruct's chat template (its GGUF's `tokenizer.chat_template`), verbatim.
pub const CHATML_TEMPLATE: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

/// The context length the file declares (SmolLM2's).
pub const CHATML_CONTEXT: u32 = 8192;

/// The generated vocabulary's path, written (and checked) on first use.
pub fn chatml_vocab() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{CHATML_NAME}.gguf"));
        // Written beside it and renamed over it: test binaries running at once never read half a file.
        let tmp = dir.join(format!("{CHATML_NAME}.{}.tmp", std::process::id()));
        let words = write_chatml(&tmp);
        std::fs::rename(&tmp, &path).unwrap();
        check(&path, &words);
        path
    })
}

/// Writes the file; returns each word with its id.
fn write_chatml(path: &Path) -> Vec<(String, u32)> {
    let mut tokens: Vec<String> = CHATML_SPECIALS.iter().map(|s| s.to_string()).collect();
    let mut types = vec![3i32; CHATML_SPECIALS.len()];
    tokens.extend((0..=255u8).map(|b| piece(&[b])));
    types.extend(std::iter::repeat_n(1, 256));
    // Each word is built left to right: "Ġ"+"o" -> "Ġo", "Ġo"+"n" -> "Ġon", ... Words with a leading
    // space merge first, so a word's own first pair outranks a pair inside a spaced word ("ĠHi" is not
    // "Ġ" + "Hi").
    let mut ordered: Vec<&str> = CHATML_WORDS.to_vec();
    ordered.sort_by_key(|w| !w.starts_with(' '));
    let mut merges: Vec<String> = Vec::new();
    for w in ordered {
        let chars: Vec<char> = piece(w.as_bytes()).chars().collect();
        for k in 1..chars.len() {
            let left: String = chars[..k].iter().collect();
            let merged: String = chars[..=k].iter().collect();
            let merge = format!("{left} {}", chars[k]);
            if !merges.contains(&merge) {
                merges.push(merge);
            }
            if !tokens.contains(&merged) {
                tokens.push(merged);
                types.push(1);
            }
        }
    }
    let words = CHATML_WORDS
        .iter()
        .map(|w| {
            let p = piece(w.as_bytes());
            let id = tokens.iter().position(|t| *t == p).unwrap() as u32;
            (w.to_string(), id)
        })
        .collect();
    let strings =
        |list: &[String]| Value::Array(list.iter().map(|t| Value::String(t.clone())).collect());
    let md: Vec<(&str, Value)> = vec![
        ("general.architecture", Value::String("llama".into())),
        ("general.type", Value::String("model".into())),
        ("general.name", Value::String(CHATML_NAME.into())),
        ("llama.context_length", Value::U32(CHATML_CONTEXT)),
        ("tokenizer.ggml.add_space_prefix", Value::Bool(false)),
        ("tokenizer.ggml.add_bos_token", Value::Bool(false)),
        ("tokenizer.ggml.model", Value::String("gpt2".into())),
        ("tokenizer.ggml.pre", Value::String("smollm".into())),
        ("tokenizer.ggml.tokens", strings(&tokens)),
        (
            "tokenizer.ggml.token_type",
            Value::Array(types.iter().map(|&t| Value::I32(t)).collect()),
        ),
        ("tokenizer.ggml.merges", strings(&merges)),
        ("tokenizer.ggml.bos_token_id", Value::U32(1)),
        ("tokenizer.ggml.eos_token_id", Value::U32(2)),
        ("tokenizer.ggml.unknown_token_id", Value::U32(0)),
        ("tokenizer.ggml.padding_token_id", Value::U32(2)),
        (
            "tokenizer.chat_template",
            Value::String(CHATML_TEMPLATE.into()),
        ),
    ];
    let md_refs: Vec<(&str, &Value)> = md.iter().map(|(k, v)| (*k, v)).collect();
    let mut f = std::fs::File::create(path).unwrap();
    gguf_file::write(&mut f, &md_refs, &[]).unwrap();
    words
}

/// The file reads back as the vocabulary the tests rely on: SmolLM2's special ids and end set, each word
/// one token, the template.
fn check(path: &Path, words: &[(String, u32)]) {
    let vocab = GgufFile::open(path, None).unwrap().vocab;
    for (i, s) in CHATML_SPECIALS.iter().enumerate() {
        assert_eq!(vocab.encode(s, true).unwrap(), [i as u32], "{s}");
    }
    assert_eq!(
        vocab.end_tokens().iter().copied().collect::<Vec<_>>(),
        [0, 2],
        "SmolLM2's end set: <|endoftext|> and <|im_end|>"
    );
    assert_eq!(vocab.eos(), Some(2));
    for (w, id) in words {
        assert_eq!(vocab.encode(w, false).unwrap(), [*id], "{w:?} is one token");
    }
    assert_eq!(
        vocab.encode(" Berlin.\nuser:", false).unwrap().len(),
        8,
        "\" Berlin\" then a token per byte"
    );
    assert_eq!(vocab.chat_template(), Some(CHATML_TEMPLATE));
}
