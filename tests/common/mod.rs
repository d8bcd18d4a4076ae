//! Test helpers: a small synthetic GGUF vocabulary (no weights) and ways to run the loop on replays;
//! `chatml` writes a chat vocabulary (no weights) a server can load; `http` starts servers and talks to them.
#![allow(dead_code)]

pub mod browser;
mod chatml;
pub mod gguf;
mod http;
pub mod ledger;
pub mod reference;
pub mod scoring;
mod venv;
#[allow(unused_imports)]
pub use chatml::*;
#[allow(unused_imports)]
pub use http::*;
#[allow(unused_imports)]
pub use venv::venv;

use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::{self, Value};
use stoplab::pipeline::generate::generate;
use stoplab::pipeline::model::{GgufFile, Replay};
use stoplab::pipeline::settings::GenerateParams;
use stoplab::pipeline::sink::{Discard, Outcome, TokenEvent};
use stoplab::pipeline::stop::StopSet;
use stoplab::pipeline::tokenizer::Vocab;

pub const END: u32 = 2;

/// The cached file of model `name` (the manifest's default when `None`); panics saying how to fetch it.
pub fn model_path(name: Option<&str>) -> PathBuf {
    stoplab::fetch::resolve(name, stoplab::fetch::Progress::Hide).unwrap_or_else(|e| {
        panic!(
            "model {} is not available: {e}. `stoplab fetch {}` (or tests/run.sh) downloads it into the cache",
            name.unwrap_or("(the default)"),
            name.unwrap_or("")
        )
    })
}

/// Control tokens first (0 and 2 end a turn, 1 and 3 do not), then one token per byte, then `words`.
pub const SPECIALS: [&str; 4] = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<tool>"];

/// GPT-2's byte-to-printable-character table.
pub fn byte_char(b: u8) -> char {
    let printable = |b: u32| {
        (0x21..=0x7E).contains(&b) || (0xA1..=0xAC).contains(&b) || (0xAE..=0xFF).contains(&b)
    };
    if printable(b as u32) {
        return char::from_u32(b as u32).unwrap();
    }
    let n = (0..b as u32).filter(|&x| !printable(x)).count() as u32;
    char::from_u32(256 + n).unwrap()
}

pub fn piece(raw: &[u8]) -> String {
    raw.iter().map(|&b| byte_char(b)).collect()
}

/// A vocabulary written as a real GGUF file (metadata only) and read back through `GgufFile::open`.
pub struct TestVocab {
    pub vocab: Vocab,
    pub words: Vec<Vec<u8>>,
    _dir: tempfile::TempDir,
    pub path: PathBuf,
}

impl TestVocab {
    pub fn new(words: &[&str]) -> Self {
        Self::with_bytes(
            &words
                .iter()
                .map(|w| w.as_bytes().to_vec())
                .collect::<Vec<_>>(),
        )
    }

    pub fn with_bytes(words: &[Vec<u8>]) -> Self {
        let mut tokens: Vec<String> = SPECIALS.iter().map(|s| s.to_string()).collect();
        let mut types = vec![3i32; SPECIALS.len()];
        tokens.extend((0..=255u8).map(|b| piece(&[b])));
        types.extend(std::iter::repeat_n(1, 256));
        for w in words {
            tokens.push(piece(w));
            types.push(1);
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vocab.gguf");
        write_gguf(&path, "llama", &tokens, &types);
        let vocab = GgufFile::open(&path, None).unwrap().vocab;
        Self {
            vocab,
            words: words.to_vec(),
            _dir: dir,
            path,
        }
    }

    /// The id of a word given to `new`, or of a single byte, or of a special token.
    pub fn id(&self, word: &str) -> u32 {
        if let Some(i) = SPECIALS.iter().position(|s| *s == word) {
            return i as u32;
        }
        if let Some(i) = self.words.iter().position(|w| w == word.as_bytes()) {
            return (SPECIALS.len() + 256 + i) as u32;
        }
        assert_eq!(word.len(), 1, "{word:?} is not in the test vocabulary");
        self.byte(word.as_bytes()[0])
    }

    pub fn byte(&self, b: u8) -> u32 {
        (SPECIALS.len() + b as usize) as u32
    }

    pub fn ids(&self, words: &[&str]) -> Vec<u32> {
        words.iter().map(|w| self.id(w)).collect()
    }

    /// Runs the loop on a replay of `script` and records every event.
    pub fn run(&self, script: Vec<u32>, params: &GenerateParams) -> (Outcome, Vec<Event>) {
        let mut model = Replay::new(script, END, self.vocab.len(), 4096);
        let mut events = Vec::new();
        let mut sink = |e: &TokenEvent<'_>| {
            events.push(Event::from(e));
            std::ops::ControlFlow::Continue(())
        };
        let out = generate(
            &mut model,
            &self.vocab,
            &[self.byte(b'>')],
            params,
            &mut sink,
        )
        .unwrap();
        (out, events)
    }

    pub fn outcome(&self, script: Vec<u32>, params: &GenerateParams) -> Outcome {
        let mut model = Replay::new(script, END, self.vocab.len(), 4096);
        generate(
            &mut model,
            &self.vocab,
            &[self.byte(b'>')],
            params,
            &mut Discard,
        )
        .unwrap()
    }
}

/// An owned copy of a `TokenEvent`.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub id: u32,
    pub text: String,
    pub held: Vec<u8>,
    pub end_token: bool,
    pub finished: bool,
    /// With reasoning markers: whether the text after the token is inside the reasoning.
    pub reasoning: Option<bool>,
}

impl From<&TokenEvent<'_>> for Event {
    fn from(e: &TokenEvent<'_>) -> Self {
        Self {
            id: e.id,
            text: e.text.to_string(),
            held: e.held.to_vec(),
            end_token: e.end_token,
            finished: e.finish.is_some(),
            reasoning: e.reasoning,
        }
    }
}

pub fn write_gguf(path: &Path, arch: &str, tokens: &[String], types: &[i32]) {
    let md: Vec<(&str, Value)> = vec![
        ("general.architecture", Value::String(arch.into())),
        ("llama.context_length", Value::U32(4096)),
        ("tokenizer.ggml.model", Value::String("gpt2".into())),
        ("tokenizer.ggml.pre", Value::String("smollm".into())),
        (
            "tokenizer.ggml.tokens",
            Value::Array(tokens.iter().map(|t| Value::String(t.clone())).collect()),
        ),
        (
            "tokenizer.ggml.token_type",
            Value::Array(types.iter().map(|&t| Value::I32(t)).collect()),
        ),
        ("tokenizer.ggml.merges", Value::Array(vec![])),
        ("tokenizer.ggml.bos_token_id", Value::U32(1)),
        ("tokenizer.ggml.eos_token_id", Value::U32(END)),
        ("tokenizer.ggml.unknown_token_id", Value::U32(0)),
    ];
    let md_refs: Vec<(&str, &Value)> = md.iter().map(|(k, v)| (*k, v)).collect();
    let mut f = std::fs::File::create(path).unwrap();
    gguf_file::write(&mut f, &md_refs, &[]).unwrap();
}

pub fn stops(list: &[&str]) -> StopSet {
    StopSet::new(list.iter().copied()).unwrap()
}
