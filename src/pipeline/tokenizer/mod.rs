//! The tokenizer and vocabulary: built from a GGUF file's own metadata (`tokenizer.ggml.*`), or from a
//! weight-free tiktoken-style vocabulary (gpt-oss, Llama 3, Qwen3; see [`rank`]).
//!
//! | `tokenizer.ggml.model` / source | encoder | families |
//! |---|---|---|
//! | `gpt2`, pre `smollm`/`starcoder` | `tokenizers` BPE, digits split, GPT-2 regex | SmolLM2 |
//! | `gpt2`, pre `qwen2` | `tokenizers` BPE, llama.cpp's qwen2 regex (one digit per token), no normalization | Qwen2.5 |
//! | `llama` | [`spm`]: SentencePiece BPE by scores, byte fallback, user-defined tokens first | Gemma 3 |
//! | a quicktok `.vocab` + `.special` | [`rank`]: tiktoken rank BPE with the family's regex | gpt-oss, Llama 3, Qwen3 |
//!
//! A `tokenizer.json` given instead replaces only the encoder. Decoding is exact and byte-level: every id
//! maps to the bytes it stands for, so the stop engine sees the generated text byte for byte, half a UTF-8
//! character included; special tokens stand for their text.
//!
//! # Special tokens in the text (`parse_special`)
//! With `parse_special` (prompts, `--replay`, `tokenize` by default), a special token spelled in the text
//! becomes its one id: control, user-defined and unknown tokens, and the tokens llama.cpp forces to control
//! because their spelling is on its end-of-generation list. That last group is `</s>`: a NORMAL token in
//! Qwen2.5's file (128247) and a user-defined HTML tag in Gemma 3's (212). stoplab parses it as one token
//! as llama.cpp does, so a prompt gives the same ids in both; it does **not** make it an end token (see
//! [`ends`]). Without `parse_special` everything is spelled with ordinary tokens; for `llama` (SentencePiece)
//! files, user-defined tokens (newline and space runs, HTML tags) are still matched first, as llama.cpp
//! does, because they are how that vocabulary writes those characters.
//!
//! # Beginning of sequence
//! [`Vocab::add_bos`] says whether the file asks for its BOS before a text prompt (Gemma 3: `<bos>` 2).
//! [`Vocab::encode_prompt`] adds it, once: a prompt that already starts with it is left as it is.

pub mod ends;
pub mod rank;
pub mod spm;

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;

use candle_core::quantized::gguf_file::{Content, Value};
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, PreTokenizerWrapper, SplitDelimiterBehavior, Tokenizer};

use crate::Error;
pub use ends::{EndSet, EndToken, Extra};

/// GGUF token types (llama.cpp's `llama_token_type`).
const TOKEN_TYPE_NORMAL: i32 = 1;
const TOKEN_TYPE_UNKNOWN: i32 = 2;
const TOKEN_TYPE_CONTROL: i32 = 3;
const TOKEN_TYPE_USER_DEFINED: i32 = 4;
const TOKEN_TYPE_BYTE: i32 = 6;

/// llama.cpp's `qwen2` pre-tokenizer regex (`src/llama-vocab.cpp`): GPT-4's shape with one digit per token.
const QWEN2_REGEX: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// How text becomes ids.
#[derive(Clone)]
enum Encoder {
    /// The `tokenizers` crate: byte-level BPE from GGUF merges, or a tokenizer.json.
    Hf {
        parse_special: Arc<Tokenizer>,
        plain: Arc<Tokenizer>,
    },
    Spm(Arc<spm::Spm>),
    Rank(Arc<rank::RankBpe>),
}

/// A model's vocabulary: how to encode text, and the bytes and kind of every token id.
#[derive(Clone)]
pub struct Vocab {
    // Shared, so that a clone (the engine keeps one beside the file's) does not copy two BPE tables: about
    // 20 MB of peak RSS for the default model.
    encoder: Encoder,
    pieces: Vec<String>,
    bytes: Vec<Vec<u8>>,
    special: Vec<bool>,
    ends: EndSet,
    end_tokens: BTreeSet<u32>,
    bos: Option<u32>,
    eos: Option<u32>,
    add_bos: bool,
    chat_template: Option<String>,
    /// What built the encoder, for `tokenize --end-tokens` and `trace` (e.g. "gguf gpt2, pre qwen2").
    kind: String,
    notes: Vec<String>,
    /// [`Vocab::reasoning_markers`], found once when the vocabulary is built (each lookup of a token that
    /// is not there scans the whole vocabulary, and every request asks).
    reasoning: Option<(&'static str, &'static str)>,
}

impl std::fmt::Debug for Vocab {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vocab")
            .field("kind", &self.kind)
            .field("size", &self.pieces.len())
            .field("end_tokens", &self.end_tokens)
            .finish_non_exhaustive()
    }
}

fn md<'a>(ct: &'a Content, key: &str) -> Option<&'a Value> {
    ct.metadata.get(key)
}

fn md_u32(ct: &Content, key: &str) -> Option<u32> {
    md(ct, key).and_then(|v| {
        v.to_u32()
            .ok()
            .or_else(|| v.to_i32().ok().map(|x| x as u32))
    })
}

fn md_bool(ct: &Content, key: &str) -> Option<bool> {
    md(ct, key).and_then(|v| v.to_bool().ok())
}

fn md_str(ct: &Content, key: &str) -> Option<String> {
    md(ct, key).and_then(|v| v.to_string().ok()).cloned()
}

fn md_strings(ct: &Content, key: &str, file: &Path) -> Result<Vec<String>, Error> {
    let bad = |why: &str| Error::Model {
        path: file.to_path_buf(),
        message: format!("metadata {key} {why}"),
    };
    let list = md(ct, key)
        .ok_or_else(|| bad("is missing"))?
        .to_vec()
        .map_err(|_| bad("is not an array"))?;
    list.iter()
        .map(|v| {
            v.to_string()
                .cloned()
                .map_err(|_| bad("holds a non-string"))
        })
        .collect()
}

impl Vocab {
    /// Builds the vocabulary from GGUF metadata; `tokenizer_json`, when given, replaces the encoder.
    pub fn from_gguf(
        ct: &Content,
        file: &Path,
        tokenizer_json: Option<&Path>,
    ) -> Result<Self, Error> {
        let bad = |message: String| Error::Model {
            path: file.to_path_buf(),
            message,
        };
        let kind = md_str(ct, "tokenizer.ggml.model").unwrap_or_default();
        let spm = kind == "llama";
        if kind != "gpt2" && !spm && tokenizer_json.is_none() {
            return Err(bad(format!(
                "tokenizer.ggml.model is {kind:?}; stoplab builds byte-level BPE (\"gpt2\") and SentencePiece \
                 (\"llama\") tokenizers from GGUF metadata. Put the model's tokenizer.json beside it or pass \
                 --tokenizer PATH"
            )));
        }
        let pieces = md_strings(ct, "tokenizer.ggml.tokens", file)?;
        let types: Vec<i32> =
            match md(ct, "tokenizer.ggml.token_type").and_then(|v| v.to_vec().ok()) {
                Some(list) => list.iter().map(|v| v.to_i32().unwrap_or(1)).collect(),
                None => vec![TOKEN_TYPE_NORMAL; pieces.len()],
            };
        let type_of = |i: usize| types.get(i).copied().unwrap_or(TOKEN_TYPE_NORMAL);
        let special: Vec<bool> = (0..pieces.len())
            .map(|i| matches!(type_of(i), TOKEN_TYPE_CONTROL | TOKEN_TYPE_USER_DEFINED))
            .collect();
        // Tokens llama.cpp forces to control by their spelling (`</s>` in Qwen2.5 and Gemma 3): parsed as
        // one token with parse_special, like llama.cpp, but never an end token (see `ends`).
        let forced: Vec<u32> = pieces
            .iter()
            .enumerate()
            .filter(|(i, p)| {
                type_of(*i) != TOKEN_TYPE_CONTROL
                    && ends::LLAMA_CPP_EOG_SPELLINGS.contains(&p.as_str())
            })
            .map(|(i, _)| i as u32)
            .collect();
        let byte_of = unicode_to_byte();
        let bytes: Vec<Vec<u8>> = pieces
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let t = type_of(i);
                if matches!(t, TOKEN_TYPE_CONTROL | TOKEN_TYPE_USER_DEFINED) {
                    p.as_bytes().to_vec()
                } else if spm {
                    match (t, spm::byte_piece(p)) {
                        (TOKEN_TYPE_BYTE, Some(b)) => vec![b],
                        _ => p.replace('\u{2581}', " ").into_bytes(),
                    }
                } else {
                    p.chars()
                        .map(|c| byte_of.get(&c).copied().unwrap_or(b'?'))
                        .collect()
                }
            })
            .collect();

        let mut notes = Vec::new();
        let pre = md_str(ct, "tokenizer.ggml.pre");
        let mut kind_label = format!(
            "GGUF tokenizer.ggml.model {kind}{}",
            pre.as_deref()
                .map(|p| format!(", pre {p}"))
                .unwrap_or_default()
        );
        let encoder = match (tokenizer_json, spm) {
            (None, true) => {
                let scores: Vec<f32> =
                    match md(ct, "tokenizer.ggml.scores").and_then(|v| v.to_vec().ok()) {
                        Some(list) => list.iter().map(|v| v.to_f32().unwrap_or(0.0)).collect(),
                        None => return Err(bad("metadata tokenizer.ggml.scores is missing (a SentencePiece vocabulary needs its scores)".into())),
                    };
                let mut specials: Vec<(String, u32, bool)> = pieces
                    .iter()
                    .enumerate()
                    .filter_map(|(i, p)| match type_of(i) {
                        TOKEN_TYPE_USER_DEFINED if !forced.contains(&(i as u32)) => {
                            Some((p.clone(), i as u32, true))
                        }
                        TOKEN_TYPE_CONTROL | TOKEN_TYPE_UNKNOWN | TOKEN_TYPE_USER_DEFINED => {
                            Some((p.clone(), i as u32, false))
                        }
                        _ => None,
                    })
                    .collect();
                specials.extend(
                    forced
                        .iter()
                        .filter(|&&i| type_of(i as usize) == TOKEN_TYPE_NORMAL)
                        .map(|&i| (pieces[i as usize].clone(), i, false)),
                );
                let space_prefix = md_bool(ct, "tokenizer.ggml.add_space_prefix").unwrap_or(true);
                Encoder::Spm(Arc::new(spm::Spm::new(
                    &pieces,
                    scores,
                    specials,
                    space_prefix,
                )))
            }
            (Some(path), _) => {
                kind_label = format!("tokenizer.json {}", path.display());
                let t = Tokenizer::from_file(path).map_err(|e| Error::Model {
                    path: path.to_path_buf(),
                    message: format!("cannot read tokenizer.json: {e}"),
                })?;
                hf_encoder(t, &pieces, &special, &forced, &bad)?
            }
            (None, false) => {
                let merges = md_strings(ct, "tokenizer.ggml.merges", file)?;
                let merges = merges
                    .iter()
                    .map(|m| {
                        m.split_once(' ')
                            .map(|(a, b)| (a.to_string(), b.to_string()))
                            .ok_or_else(|| {
                                bad(format!("tokenizer.ggml.merges entry {m:?} has no space"))
                            })
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                let vocab: tokenizers::models::bpe::Vocab = pieces
                    .iter()
                    .enumerate()
                    .map(|(i, p)| (p.clone(), i as u32))
                    .collect();
                let bpe = BPE::builder()
                    .vocab_and_merges(vocab, merges)
                    .build()
                    .map_err(|e| bad(format!("cannot build the BPE tokenizer: {e}")))?;
                let mut t = Tokenizer::new(bpe);
                let byte_level = ByteLevel::new(false, true, true);
                let pre_tok: PreTokenizerWrapper = match pre.as_deref() {
                    // llama.cpp splits every digit on its own before the GPT-2 regex for these.
                    Some("smollm") | Some("starcoder") => Sequence::new(vec![
                        PreTokenizerWrapper::Digits(Digits::new(true)),
                        PreTokenizerWrapper::ByteLevel(byte_level),
                    ])
                    .into(),
                    Some("qwen2") => {
                        let split = Split::new(
                            SplitPattern::Regex(QWEN2_REGEX.into()),
                            SplitDelimiterBehavior::Isolated,
                            false,
                        )
                        .map_err(|e| bad(format!("cannot build the qwen2 pre-tokenizer: {e}")))?;
                        Sequence::new(vec![
                            PreTokenizerWrapper::Split(split),
                            PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, true, false)),
                        ])
                        .into()
                    }
                    Some("default") | Some("gpt-2") | Some("gpt2") | None => byte_level.into(),
                    Some(other) => {
                        notes.push(format!(
                            "pre-tokenizer {other:?} is not built in; using GPT-2's. Ids may differ from llama.cpp's; \
                             pass --tokenizer tokenizer.json for exact ids"
                        ));
                        byte_level.into()
                    }
                };
                t.with_pre_tokenizer(Some(pre_tok));
                t.with_decoder(Some(ByteLevel::default()));
                hf_encoder(t, &pieces, &special, &forced, &bad)?
            }
        };

        let n = pieces.len() as u32;
        let declared = |key: &str| md_u32(ct, &format!("tokenizer.ggml.{key}")).filter(|&i| i < n);
        let bos = declared("bos_token_id");
        let eos = declared("eos_token_id");
        let add_bos = md_bool(ct, "tokenizer.ggml.add_bos_token").unwrap_or(false) && bos.is_some();
        let is_control: Vec<bool> = (0..pieces.len())
            .map(|i| type_of(i) == TOKEN_TYPE_CONTROL)
            .collect();
        let ends = ends::from_file(ends::FileFacts {
            pieces: &pieces,
            control: &is_control,
            declared: [
                ("tokenizer.ggml.eos_token_id", eos),
                ("tokenizer.ggml.eot_token_id", declared("eot_token_id")),
                ("tokenizer.ggml.eom_token_id", declared("eom_token_id")),
            ],
            fim: [
                declared("fim_pad_token_id"),
                declared("fim_rep_token_id").or_else(|| declared("fim_repo_token_id")),
                declared("fim_sep_token_id"),
            ],
            family: &[],
        });
        for &i in &forced {
            notes.push(format!(
                "{:?} {i} is a {} token spelled like an end token: llama.cpp forces it to control and ends on it; \
                 stoplab parses it as one token in special-token text but does not end on it",
                pieces[i as usize],
                if type_of(i as usize) == TOKEN_TYPE_USER_DEFINED { "user-defined" } else { "NORMAL" }
            ));
        }
        let chat_template = md_str(ct, "tokenizer.chat_template");
        Ok(Self {
            encoder,
            pieces,
            bytes,
            special,
            end_tokens: ends.ids(),
            ends,
            bos,
            eos,
            add_bos,
            chat_template,
            kind: kind_label,
            notes,
            reasoning: None,
        }
        .with_reasoning_markers())
    }

    /// A weight-free vocabulary from quicktok-v1's files (`--model gpt-oss-vocab` and the like): rank BPE
    /// with the encoding's pre-tokenizer, and the family's end set ([`ends::family_facts`]).
    pub fn from_tiktoken(files: &crate::fetch::VocabFiles) -> Result<Self, Error> {
        Self::from_tiktoken_files(&files.name, &files.encoding, &files.vocab, &files.special)
    }

    /// [`Vocab::from_tiktoken`] on explicit paths.
    pub fn from_tiktoken_files(
        name: &str,
        encoding: &str,
        vocab: &Path,
        special: &Path,
    ) -> Result<Self, Error> {
        let files = rank::TiktokenFiles::read(vocab, special)?;
        let encoder = rank::RankBpe::new(encoding, &files)?;
        let mut pieces = Vec::with_capacity(files.bytes.len());
        let mut bytes = Vec::with_capacity(files.bytes.len());
        let mut special_flags = Vec::with_capacity(files.bytes.len());
        let size = files.bytes.len().max(
            files
                .specials
                .iter()
                .map(|s| s.0 as usize + 1)
                .max()
                .unwrap_or(0),
        );
        let by_id: HashMap<u32, &str> = files
            .specials
            .iter()
            .map(|(i, t)| (*i, t.as_str()))
            .collect();
        for i in 0..size {
            if let Some(t) = by_id.get(&(i as u32)) {
                pieces.push(t.to_string());
                bytes.push(t.as_bytes().to_vec());
                special_flags.push(true);
            } else {
                let b = files.bytes.get(i).cloned().flatten().unwrap_or_default();
                pieces.push(String::from_utf8_lossy(&b).into_owned());
                bytes.push(b);
                special_flags.push(false);
            }
        }
        let family = ends::family_facts(encoding);
        let id_of = |text: &str| by_id.iter().find(|(_, t)| **t == text).map(|(i, _)| *i);
        let ends = ends::from_file(ends::FileFacts {
            pieces: &pieces,
            control: &special_flags,
            declared: [("", None), ("", None), ("", None)],
            fim: [
                id_of("<|fim_pad|>"),
                id_of("<|repo_name|>"),
                id_of("<|file_sep|>"),
            ],
            family: family.ends,
        });
        Ok(Self {
            encoder: Encoder::Rank(Arc::new(encoder)),
            end_tokens: ends.ids(),
            ends,
            bos: family.bos.and_then(id_of),
            eos: family
                .turn_end
                .and_then(id_of)
                .or_else(|| family.ends.first().map(|e| e.0)),
            add_bos: family.add_bos,
            chat_template: family.chat_template.map(String::from),
            kind: format!("tiktoken-style rank BPE, encoding {encoding} ({name}, no weights)"),
            notes: Vec::new(),
            pieces,
            bytes,
            special: special_flags,
            reasoning: None,
        }
        .with_reasoning_markers())
    }

    /// Encodes text. With `parse_special`, "<|im_end|>" in the text becomes that one special token;
    /// without, it is spelled out in ordinary tokens.
    pub fn encode(&self, text: &str, parse_special: bool) -> Result<Vec<u32>, Error> {
        match &self.encoder {
            Encoder::Hf {
                parse_special: p,
                plain,
            } => {
                let t = if parse_special { p } else { plain };
                let enc = t
                    .encode(text, false)
                    .map_err(|e| Error::Tokenizer(e.to_string()))?;
                Ok(enc.get_ids().to_vec())
            }
            Encoder::Spm(s) => Ok(s.encode(text, parse_special)),
            Encoder::Rank(r) => r.encode(text, parse_special),
        }
    }

    /// Encodes a text prompt for generation: special tokens parsed, and the BOS first when the file asks
    /// for it ([`Vocab::add_bos`]) and the text does not already begin with it.
    pub fn encode_prompt(&self, text: &str) -> Result<Vec<u32>, Error> {
        let mut ids = self.encode(text, true)?;
        if self.add_bos
            && let Some(bos) = self.bos
            && ids.first() != Some(&bos)
        {
            ids.insert(0, bos);
        }
        Ok(ids)
    }

    /// The bytes a token stands for (special tokens: their text).
    pub fn token_bytes(&self, id: u32) -> Option<&[u8]> {
        self.bytes.get(id as usize).map(Vec::as_slice)
    }

    /// Decodes ids to text, special tokens written out, invalid UTF-8 replaced.
    pub fn decode(&self, ids: &[u32]) -> Result<String, Error> {
        let mut out = Vec::new();
        for &id in ids {
            out.extend_from_slice(self.token_bytes(id).ok_or(Error::UnknownToken {
                id,
                vocab: self.len(),
            })?);
        }
        Ok(String::from_utf8_lossy(&out).into_owned())
    }

    /// The vocabulary entry as the file writes it (byte-level pieces use GPT-2's printable alphabet,
    /// SentencePiece pieces `▁` for a space).
    pub fn piece(&self, id: u32) -> Option<&str> {
        self.pieces.get(id as usize).map(String::as_str)
    }

    /// The id of a token given by its exact text (a special token's spelling, or an ordinary token's
    /// bytes), if one token has it.
    pub fn token_id(&self, text: &str) -> Option<u32> {
        if let Some(i) = self.pieces.iter().position(|p| p == text)
            && (self.is_special(i as u32) || self.bytes[i] == text.as_bytes())
        {
            return Some(i as u32);
        }
        self.bytes
            .iter()
            .position(|b| b == text.as_bytes())
            .map(|i| i as u32)
    }

    /// The reasoning markers the vocabulary declares: Qwen3's `<think>` and `</think>`, when both are
    /// special tokens of it; harmony's analysis channel against its final one (gpt-oss: the reasoning
    /// opens with `<|channel|>analysis<|message|>` and closes with the framing that ends that message and
    /// opens the final answer's, `<|end|><|start|>assistant<|channel|>final<|message|>`, so neither field of
    /// a chat reply shows the framing); None for a vocabulary without them.
    pub fn reasoning_markers(&self) -> Option<(&'static str, &'static str)> {
        self.reasoning
    }

    /// Sets [`Vocab::reasoning`] from the tokens the vocabulary has; the constructors' last step.
    fn with_reasoning_markers(mut self) -> Self {
        self.reasoning = self.find_reasoning_markers();
        self
    }

    fn find_reasoning_markers(&self) -> Option<(&'static str, &'static str)> {
        let special = |t: &str| self.token_id(t).is_some_and(|id| self.is_special(id));
        if special("<think>") && special("</think>") {
            return Some(("<think>", "</think>"));
        }
        let harmony = ["<|channel|>", "<|message|>", "<|end|>", "<|start|>"];
        harmony.iter().all(|t| special(t)).then_some((
            "<|channel|>analysis<|message|>",
            "<|end|><|start|>assistant<|channel|>final<|message|>",
        ))
    }

    pub fn is_special(&self, id: u32) -> bool {
        self.special.get(id as usize).copied().unwrap_or(false)
    }

    pub fn len(&self) -> usize {
        self.pieces.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pieces.is_empty()
    }

    /// The ids that end a generation, by stoplab's rule ([`ends`]). For SmolLM2: 0 `<|endoftext|>` and
    /// 2 `<|im_end|>`.
    pub fn end_tokens(&self) -> &BTreeSet<u32> {
        &self.end_tokens
    }

    /// The end set with each id's reasons, and how llama.cpp's spelling rule differs.
    pub fn end_set(&self) -> &EndSet {
        &self.ends
    }

    pub fn bos(&self) -> Option<u32> {
        self.bos
    }

    pub fn eos(&self) -> Option<u32> {
        self.eos
    }

    /// Whether a text prompt gets the BOS first (`tokenizer.ggml.add_bos_token`).
    pub fn add_bos(&self) -> bool {
        self.add_bos
    }

    pub fn chat_template(&self) -> Option<&str> {
        self.chat_template.as_deref()
    }

    /// What the encoder was built from, in words.
    pub fn kind(&self) -> &str {
        &self.kind
    }

    /// Warnings found while building the tokenizer, for the command line to show.
    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    /// Checks that an id belongs to this vocabulary; `what` names the field for the message.
    pub fn check_id(&self, id: u32, what: &str) -> Result<(), Error> {
        if (id as usize) < self.len() {
            Ok(())
        } else {
            Err(Error::Invalid {
                field: what.to_string(),
                message: format!(
                    "token id {id} is outside the vocabulary (0..{})",
                    self.len()
                ),
            })
        }
    }
}

/// The `tokenizers` encoder with the file's special tokens added (and the forced ones), in two modes.
fn hf_encoder(
    mut tokenizer: Tokenizer,
    pieces: &[String],
    special: &[bool],
    forced: &[u32],
    bad: &dyn Fn(String) -> Error,
) -> Result<Encoder, Error> {
    let added: Vec<AddedToken> = pieces
        .iter()
        .enumerate()
        .filter(|(i, _)| special[*i] || forced.contains(&(*i as u32)))
        .map(|(_, p)| AddedToken::from(p.clone(), true))
        .collect();
    tokenizer
        .add_special_tokens(added)
        .map_err(|e| bad(format!("cannot add the special tokens: {e}")))?;
    let parse_special = tokenizer.clone();
    let mut plain = tokenizer;
    plain.set_encode_special_tokens(true);
    Ok(Encoder::Hf {
        parse_special: Arc::new(parse_special),
        plain: Arc::new(plain),
    })
}

/// GPT-2's byte-to-printable-character table, inverted: byte-level BPE pieces spell each byte as one char.
fn unicode_to_byte() -> HashMap<char, u8> {
    let mut printable: Vec<u32> = (b'!' as u32..=b'~' as u32).collect();
    printable.extend(0xA1..=0xAC);
    printable.extend(0xAE..=0xFF);
    let mut map = HashMap::new();
    let mut extra = 0u32;
    for b in 0..=255u32 {
        let c = if printable.contains(&b) {
            b
        } else {
            extra += 1;
            255 + extra
        };
        map.insert(char::from_u32(c).expect("valid code point"), b as u8);
    }
    map
}
