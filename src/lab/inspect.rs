//! How text falls into tokens, and why a stop string cannot be matched on token ids.
//!
//! A stop string is a byte sequence. The model writes tokens, and a token may carry the first bytes of a stop
//! after some other text (`".\n"` carries the `"\n"` of `"\nuser:"`), or its last bytes followed by more
//! (`":)"`), so the tokens of a stop seldom appear as the ids [`crate::pipeline::tokenizer::Vocab::encode`] gives for it.
//! [`stop_carriers`] lists those vocabulary entries; [`find_single`] finds long single-token strings, the
//! seed's suggestion for a custom stop that costs one token to write; [`other_specials`] sorts the special
//! tokens that end nothing. [`crate::lab::tokenize`] words these facts for `stoplab tokenize`.

use crate::Error;
use crate::pipeline::tokenizer::Vocab;

/// One token of an encoded text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Piece {
    pub id: u32,
    pub bytes: Vec<u8>,
    pub special: bool,
}

/// Encodes `text` and returns each token with its bytes.
pub fn pieces(vocab: &Vocab, text: &str, parse_special: bool) -> Result<Vec<Piece>, Error> {
    vocab
        .encode(text, parse_special)?
        .into_iter()
        .map(|id| {
            Ok(Piece {
                id,
                bytes: vocab
                    .token_bytes(id)
                    .ok_or(Error::UnknownToken {
                        id,
                        vocab: vocab.len(),
                    })?
                    .to_vec(),
                special: vocab.is_special(id),
            })
        })
        .collect()
}

/// A vocabulary entry that carries part of a stop string together with other bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Carrier {
    pub id: u32,
    pub bytes: Vec<u8>,
    /// How many bytes of the stop it carries.
    pub carries: usize,
}

/// How a stop string relates to the vocabulary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StopCarriers {
    /// The ids the tokenizer gives the stop on its own.
    pub ids: Vec<u32>,
    /// Tokens that end with the stop's first bytes after other text (`X + stop[..k]`).
    pub heads: Vec<Carrier>,
    /// Tokens that begin with the stop's last bytes and go on (`stop[j..] + Y`).
    pub tails: Vec<Carrier>,
    /// Tokens that hold the whole stop and more.
    pub inside: Vec<Carrier>,
}

/// Lists the (non-special) vocabulary entries that can carry `stop`'s first or last bytes inside a longer
/// token, most bytes carried first, then by id (lower ids are earlier merges: more common).
pub fn stop_carriers(vocab: &Vocab, stop: &str) -> Result<StopCarriers, Error> {
    let s = stop.as_bytes();
    let ids = vocab.encode(stop, false)?;
    let (mut heads, mut tails, mut inside) = (Vec::new(), Vec::new(), Vec::new());
    for id in 0..vocab.len() as u32 {
        if vocab.is_special(id) {
            continue;
        }
        let t = vocab.token_bytes(id).unwrap_or_default();
        if t.is_empty() || t == s {
            continue;
        }
        let carrier = |carries| Carrier {
            id,
            bytes: t.to_vec(),
            carries,
        };
        if t.len() > s.len() && t.windows(s.len()).any(|w| w == s) {
            inside.push(carrier(s.len()));
            continue;
        }
        // Longest proper prefix of the stop that the token ends with, after at least one other byte.
        if let Some(k) = (1..s.len().min(t.len()))
            .rev()
            .find(|&k| t.ends_with(&s[..k]))
        {
            heads.push(carrier(k));
        }
        // Longest proper suffix of the stop that the token begins with, followed by at least one byte.
        if let Some(k) = (1..s.len().min(t.len()))
            .rev()
            .find(|&k| t.starts_with(&s[s.len() - k..]))
        {
            tails.push(carrier(k));
        }
    }
    for list in [&mut heads, &mut tails, &mut inside] {
        list.sort_by_key(|c| (std::cmp::Reverse(c.carries), c.id));
    }
    Ok(StopCarriers {
        ids,
        heads,
        tails,
        inside,
    })
}

/// Non-special tokens made only of characters in `chars`, longest (in characters) first, then by id.
pub fn find_single(vocab: &Vocab, chars: &str) -> Vec<(u32, String)> {
    let mut found: Vec<(u32, String)> = (0..vocab.len() as u32)
        .filter(|&id| !vocab.is_special(id))
        .filter_map(|id| {
            let text = std::str::from_utf8(vocab.token_bytes(id)?).ok()?;
            (!text.is_empty() && text.chars().all(|c| chars.contains(c)))
                .then(|| (id, text.to_string()))
        })
        .collect();
    found.sort_by_key(|(id, t)| (std::cmp::Reverse(t.chars().count()), *id));
    found
}

/// The special tokens outside the end set, in id order: those the model writes or reads (turn and channel
/// markers), and how many placeholders there are besides (reserved, unused, padding), only counted.
pub fn other_specials(vocab: &Vocab) -> (Vec<(u32, String)>, usize) {
    let end_ids = vocab.end_tokens();
    let placeholder = |t: &str| {
        let t = t.to_ascii_lowercase();
        t.contains("reserved") || t.contains("unused") || t.starts_with("[pad")
    };
    let (mut structure, mut placeholders) = (Vec::new(), 0usize);
    for id in (0..vocab.len() as u32).filter(|&i| vocab.is_special(i) && !end_ids.contains(&i)) {
        let text = String::from_utf8_lossy(vocab.token_bytes(id).unwrap_or_default()).into_owned();
        if placeholder(&text) {
            placeholders += 1;
        } else {
            structure.push((id, text));
        }
    }
    (structure, placeholders)
}
