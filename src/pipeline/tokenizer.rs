//! The tokenizer and vocabulary, built from a GGUF file's own metadata (`tokenizer.ggml.*`).
//!
//! Encoding goes through the `tokenizers` crate with the pipeline the GGUF names; a `tokenizer.json` given
//! instead replaces only the encoder. Decoding is exact and byte-level: every id maps to the bytes it stands
//! for, so the stop engine sees the generated text byte for byte, half a UTF-8 character included.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;

use candle_core::quantized::gguf_file::{Content, Value};
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::{AddedToken, PreTokenizerWrapper, Tokenizer};

use crate::Error;

/// GGUF token types (llama.cpp's `llama_token_type`).
const TOKEN_TYPE_CONTROL: i32 = 3;
const TOKEN_TYPE_USER_DEFINED: i32 = 4;

/// Texts that mark the end of a turn when they are control tokens of a vocabulary. The model's declared
/// `eos`/`eot`/`eom` ids come first; these catch the chat containers of models whose metadata names only one
/// of several end tokens (llama.cpp keeps the same list).
const END_OF_TURN_TEXTS: &[&str] = &[
    "<|endoftext|>",
    "<|im_end|>",
    "<|eot_id|>",
    "<|eom_id|>",
    "<|end|>",
    "<end_of_turn>",
    "<|end_of_text|>",
    "<end_of_utterance>",
    "<EOT>",
];

/// A model's vocabulary: how to encode text, and the bytes and kind of every token id.
#[derive(Clone)]
pub struct Vocab {
    // Shared, so that a clone (the engine keeps one beside the file's) does not copy two BPE tables: about
    // 20 MB of peak RSS for the default model.
    parse_special: Arc<Tokenizer>,
    plain: Arc<Tokenizer>,
    pieces: Vec<String>,
    bytes: Vec<Vec<u8>>,
    special: Vec<bool>,
    end_tokens: BTreeSet<u32>,
    bos: Option<u32>,
    eos: Option<u32>,
    chat_template: Option<String>,
    notes: Vec<String>,
}

impl std::fmt::Debug for Vocab {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vocab")
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
        let kind = md(ct, "tokenizer.ggml.model")
            .and_then(|v| v.to_string().ok())
            .cloned()
            .unwrap_or_default();
        if kind != "gpt2" && tokenizer_json.is_none() {
            return Err(bad(format!(
                "tokenizer.ggml.model is {kind:?}; stoplab builds byte-level BPE (\"gpt2\") tokenizers from GGUF \
                 metadata. Put the model's tokenizer.json beside it or pass --tokenizer PATH"
            )));
        }
        let pieces = md_strings(ct, "tokenizer.ggml.tokens", file)?;
        let types: Vec<i32> =
            match md(ct, "tokenizer.ggml.token_type").and_then(|v| v.to_vec().ok()) {
                Some(list) => list.iter().map(|v| v.to_i32().unwrap_or(1)).collect(),
                None => vec![1; pieces.len()],
            };
        let special: Vec<bool> = (0..pieces.len())
            .map(|i| {
                matches!(
                    types.get(i),
                    Some(&TOKEN_TYPE_CONTROL) | Some(&TOKEN_TYPE_USER_DEFINED)
                )
            })
            .collect();
        let byte_of = unicode_to_byte();
        let bytes = pieces
            .iter()
            .zip(&special)
            .map(|(p, &s)| {
                if s {
                    p.as_bytes().to_vec()
                } else {
                    p.chars()
                        .map(|c| byte_of.get(&c).copied().unwrap_or(b'?'))
                        .collect()
                }
            })
            .collect();

        let mut notes = Vec::new();
        let mut tokenizer = match tokenizer_json {
            Some(path) => Tokenizer::from_file(path).map_err(|e| Error::Model {
                path: path.to_path_buf(),
                message: format!("cannot read tokenizer.json: {e}"),
            })?,
            None => {
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
                let pre = md(ct, "tokenizer.ggml.pre")
                    .and_then(|v| v.to_string().ok())
                    .cloned();
                let byte_level = ByteLevel::new(false, true, true);
                let pre_tok: PreTokenizerWrapper = match pre.as_deref() {
                    // llama.cpp splits every digit on its own before the GPT-2 regex for these.
                    Some("smollm") | Some("starcoder") => Sequence::new(vec![
                        PreTokenizerWrapper::Digits(Digits::new(true)),
                        PreTokenizerWrapper::ByteLevel(byte_level),
                    ])
                    .into(),
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
                t
            }
        };
        let added: Vec<AddedToken> = pieces
            .iter()
            .zip(&special)
            .filter(|(_, s)| **s)
            .map(|(p, _)| AddedToken::from(p.clone(), true))
            .collect();
        tokenizer
            .add_special_tokens(added)
            .map_err(|e| bad(format!("cannot add the special tokens: {e}")))?;
        let parse_special = tokenizer.clone();
        let mut plain = tokenizer;
        plain.set_encode_special_tokens(true);

        let n = pieces.len() as u32;
        let bos = md_u32(ct, "tokenizer.ggml.bos_token_id").filter(|&i| i < n);
        let eos = md_u32(ct, "tokenizer.ggml.eos_token_id").filter(|&i| i < n);
        let mut end_tokens: BTreeSet<u32> = ["eos", "eot", "eom"]
            .iter()
            .filter_map(|k| md_u32(ct, &format!("tokenizer.ggml.{k}_token_id")))
            .filter(|&i| i < n)
            .collect();
        for (i, p) in pieces.iter().enumerate() {
            if special[i] && END_OF_TURN_TEXTS.contains(&p.as_str()) {
                end_tokens.insert(i as u32);
            }
        }
        let chat_template = md(ct, "tokenizer.chat_template")
            .and_then(|v| v.to_string().ok())
            .cloned();
        Ok(Self {
            parse_special: Arc::new(parse_special),
            plain: Arc::new(plain),
            pieces,
            bytes,
            special,
            end_tokens,
            bos,
            eos,
            chat_template,
            notes,
        })
    }

    /// Encodes text. With `parse_special`, "<|im_end|>" in the text becomes that one special token;
    /// without, it is spelled out in ordinary tokens.
    pub fn encode(&self, text: &str, parse_special: bool) -> Result<Vec<u32>, Error> {
        let t = if parse_special {
            &self.parse_special
        } else {
            &self.plain
        };
        let enc = t
            .encode(text, false)
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        Ok(enc.get_ids().to_vec())
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

    /// The vocabulary entry as the GGUF writes it (byte-level pieces use GPT-2's printable alphabet).
    pub fn piece(&self, id: u32) -> Option<&str> {
        self.pieces.get(id as usize).map(String::as_str)
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

    /// The ids that end a generation: the declared eos/eot/eom ids and the vocabulary's end-of-turn
    /// control tokens. For SmolLM2: 0 `<|endoftext|>` and 2 `<|im_end|>`.
    pub fn end_tokens(&self) -> &BTreeSet<u32> {
        &self.end_tokens
    }

    pub fn bos(&self) -> Option<u32> {
        self.bos
    }

    pub fn eos(&self) -> Option<u32> {
        self.eos
    }

    pub fn chat_template(&self) -> Option<&str> {
        self.chat_template.as_deref()
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
