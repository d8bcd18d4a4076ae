//! SentencePiece-style BPE by scores (GGUF `tokenizer.ggml.model = llama`), as llama.cpp's
//! `llm_tokenizer_spm` runs it: Gemma 3's tokenizer.
//!
//! * The text is cut at special tokens first ([`partition`]): control, user-defined and unknown tokens (and
//!   the tokens llama.cpp forces to control by their spelling), longest first, so Gemma's newline and space
//!   runs and HTML tags (`\n\n` 108, two spaces 138, `<b>` 200) are matched on the raw text before any merge.
//! * In each remaining piece of text every space becomes `▁` (no space prefix when `add_space_prefix` is
//!   false, as in Gemma 3), the text is split into UTF-8 characters, and the adjacent pair whose
//!   concatenation is a vocabulary entry with the highest score is merged, again and again (ties: the
//!   leftmost pair), exactly llama.cpp's priority queue.
//! * A final symbol that is not in the vocabulary (a character the vocabulary lacks) is written as its
//!   bytes, `<0xNN>` tokens (byte fallback).
//!
//! This is implemented here rather than through the `tokenizers` crate's BPE: that needs merges derived
//! from the scores (every split of all 262,144 pieces, ranked by the score of the whole), and its ranks
//! only approximate llama.cpp's "best score, then leftmost" order; the direct loop is short and exact.

use std::collections::{BinaryHeap, HashMap};

/// The SentencePiece encoder: piece texts (with `▁` for spaces), scores and the byte tokens.
#[derive(Debug)]
pub struct Spm {
    /// Piece text → id (the last id wins on a duplicate, as in llama.cpp's `token_to_id`).
    ids: HashMap<String, u32>,
    scores: Vec<f32>,
    /// `<0xNN>` for each byte, when the vocabulary has it.
    byte_ids: [Option<u32>; 256],
    /// Special tokens matched on the raw text, longest first: (text, id, matched even when special tokens
    /// are not parsed). llama.cpp matches user-defined tokens either way; control tokens only when asked.
    specials: Vec<(String, u32, bool)>,
    add_space_prefix: bool,
}

/// One symbol of the merge loop: a byte range of the text, linked to its neighbours.
#[derive(Clone, Copy)]
struct Symbol {
    start: usize,
    len: usize,
    prev: Option<usize>,
    next: Option<usize>,
}

/// A candidate merge, ordered as llama.cpp's queue: higher score first, then the leftmost.
#[derive(PartialEq)]
struct Bigram {
    score: f32,
    left: usize,
    right: usize,
    size: usize,
}

impl Eq for Bigram {}

impl Ord for Bigram {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.score
            .total_cmp(&other.score)
            .then_with(|| other.left.cmp(&self.left))
    }
}

impl PartialOrd for Bigram {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Spm {
    /// `specials`: (text, id, always matched) for every token cut out of the raw text before merging.
    pub fn new(
        pieces: &[String],
        scores: Vec<f32>,
        mut specials: Vec<(String, u32, bool)>,
        add_space_prefix: bool,
    ) -> Self {
        let mut ids = HashMap::with_capacity(pieces.len());
        let mut byte_ids = [None; 256];
        for (i, p) in pieces.iter().enumerate() {
            ids.insert(p.clone(), i as u32);
            if let Some(b) = byte_piece(p) {
                byte_ids[b as usize] = Some(i as u32);
            }
        }
        specials.retain(|s| !s.0.is_empty());
        // Longest first, as llama.cpp sorts its special-token cache; the id keeps the order stable.
        specials.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.1.cmp(&b.1)));
        Self {
            ids,
            scores,
            byte_ids,
            specials,
            add_space_prefix,
        }
    }

    /// Encodes text; with `parse_special`, control tokens spelled in the text become their ids too.
    pub fn encode(&self, text: &str, parse_special: bool) -> Vec<u32> {
        let mut out = Vec::new();
        let mut prev_special = true;
        for frag in partition(text, &self.specials, parse_special) {
            match frag {
                Fragment::Token(id) => {
                    out.push(id);
                    prev_special = true;
                }
                Fragment::Text(t) => {
                    let mut s = String::with_capacity(t.len() + 3);
                    if self.add_space_prefix && prev_special {
                        s.push(' ');
                    }
                    s.push_str(t);
                    self.encode_piece(&s.replace(' ', "\u{2581}"), &mut out);
                    prev_special = false;
                }
            }
        }
        out
    }

    fn score_of(&self, text: &str) -> Option<f32> {
        let id = *self.ids.get(text)?;
        Some(self.scores.get(id as usize).copied().unwrap_or(0.0))
    }

    /// llama.cpp's `llm_tokenizer_spm_session::tokenize` on one piece of text (spaces already `▁`).
    fn encode_piece(&self, text: &str, out: &mut Vec<u32>) {
        let mut symbols: Vec<Symbol> = Vec::with_capacity(text.len());
        for (i, (start, c)) in text.char_indices().enumerate() {
            let len = c.len_utf8();
            symbols.push(Symbol {
                start,
                len,
                prev: i.checked_sub(1),
                next: (start + len < text.len()).then_some(i + 1),
            });
        }
        let mut queue = BinaryHeap::new();
        let try_add = |queue: &mut BinaryHeap<Bigram>, symbols: &[Symbol], l: usize, r: usize| {
            let (a, b) = (symbols[l], symbols[r]);
            let size = a.len + b.len;
            if let Some(score) = self.score_of(&text[a.start..a.start + size]) {
                queue.push(Bigram {
                    score,
                    left: l,
                    right: r,
                    size,
                });
            }
        };
        for i in 1..symbols.len() {
            try_add(&mut queue, &symbols, i - 1, i);
        }
        while let Some(bg) = queue.pop() {
            let (l, r) = (symbols[bg.left], symbols[bg.right]);
            // One side was merged into something else since this pair was queued.
            if l.len == 0 || r.len == 0 || l.len + r.len != bg.size {
                continue;
            }
            symbols[bg.left].len += r.len;
            symbols[bg.right].len = 0;
            symbols[bg.left].next = r.next;
            if let Some(n) = r.next {
                symbols[n].prev = Some(bg.left);
            }
            if let Some(p) = symbols[bg.left].prev {
                try_add(&mut queue, &symbols, p, bg.left);
            }
            if let Some(n) = symbols[bg.left].next {
                try_add(&mut queue, &symbols, bg.left, n);
            }
        }
        let mut i = if symbols.is_empty() { None } else { Some(0) };
        while let Some(k) = i {
            let s = symbols[k];
            let piece = &text[s.start..s.start + s.len];
            match self.ids.get(piece) {
                Some(&id) => out.push(id),
                // Only a single character can be missing (every merge made a vocabulary entry): its bytes.
                None => out.extend(piece.bytes().filter_map(|b| self.byte_ids[b as usize])),
            }
            i = s.next;
        }
    }
}

/// `<0xNN>`: the byte a byte-fallback piece stands for.
pub fn byte_piece(p: &str) -> Option<u8> {
    let hex = p.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

/// A piece of the text after the special tokens were cut out.
#[derive(Debug, PartialEq)]
pub enum Fragment<'a> {
    Text(&'a str),
    Token(u32),
}

/// llama.cpp's `tokenizer_st_partition`: each special token in turn (longest first) is cut out of every
/// piece of raw text left, leftmost occurrence first. `specials` must be sorted longest first; an entry
/// whose flag is false is matched only when `parse_special`.
pub fn partition<'a>(
    text: &'a str,
    specials: &[(String, u32, bool)],
    parse_special: bool,
) -> Vec<Fragment<'a>> {
    let mut frags = vec![Fragment::Text(text)];
    for (s, id, always) in specials {
        if !(parse_special || *always) || !text.contains(s.as_str()) {
            continue;
        }
        let mut next = Vec::with_capacity(frags.len() + 2);
        for f in frags {
            let Fragment::Text(mut t) = f else {
                next.push(f);
                continue;
            };
            while let Some(at) = t.find(s.as_str()) {
                if at > 0 {
                    next.push(Fragment::Text(&t[..at]));
                }
                next.push(Fragment::Token(*id));
                t = &t[at + s.len()..];
            }
            if !t.is_empty() {
                next.push(Fragment::Text(t));
            }
        }
        frags = next;
    }
    frags
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toy() -> Spm {
        // ids: 0 <0x61> 'a' byte, 1 ▁, 2 a, 3 b, 4 ab, 5 ▁a, 6 <0xC3>, 7 <0xA9>, 8 <b>
        let pieces: Vec<String> = [
            "<0x61>", "▁", "a", "b", "ab", "▁a", "<0xC3>", "<0xA9>", "<b>",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let scores = vec![0.0, -1.0, -2.0, -3.0, -4.0, -1.5, 0.0, 0.0, 0.0];
        Spm::new(&pieces, scores, vec![("<b>".into(), 8, true)], false)
    }

    #[test]
    fn merges_by_score_then_leftmost_and_falls_back_to_bytes() {
        let spm = toy();
        // "▁a" (-1.5) beats "ab" (-4): " ab" → ▁a, b.
        assert_eq!(spm.encode(" ab", true), [5, 3]);
        assert_eq!(spm.encode("ab", true), [4]);
        // é is not a piece: its two UTF-8 bytes.
        assert_eq!(spm.encode("é", true), [6, 7]);
        // User-defined tokens are cut out before merging.
        assert_eq!(spm.encode("a<b>b", false), [2, 8, 3]);
    }

    #[test]
    fn partition_takes_the_longest_special_first() {
        let specials = vec![("\n\n".to_string(), 2, true), ("\n".to_string(), 1, true)];
        assert_eq!(
            partition("a\n\n\nb", &specials, false),
            [
                Fragment::Text("a"),
                Fragment::Token(2),
                Fragment::Token(1),
                Fragment::Text("b")
            ]
        );
        let control = vec![("<eos>".to_string(), 1, false)];
        assert_eq!(
            partition("<eos>", &control, false),
            [Fragment::Text("<eos>")]
        );
        assert_eq!(partition("<eos>", &control, true), [Fragment::Token(1)]);
    }
}
