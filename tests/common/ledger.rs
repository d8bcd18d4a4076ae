//! The stream ledger's rules, checked on one request to a running server (the replay tier's property test
//! and the model tier's real models use it): (a) the streamed chunks of a choice add up to the unstreamed
//! choice; (b) each chunk's `token_ids` spell its text exactly, the last chunk's may run on into the cut
//! stop, for a token the stop cut in the middle, or by the end token's name; (c) one log-probability
//! per id, the same token, in the same order; (d) nothing of a choice after the chunk that ends it; (e)
//! `usage.completion_tokens` counts every generated token: the ids carried plus the ids withheld.

use std::collections::BTreeMap;

use serde_json::{Value, json};
use stoplab::pipeline::tokenizer::Vocab;

use super::{post, stream};

/// Fails the check with a message (a test's `prop_assert!` without proptest).
macro_rules! ensure {
    ($cond:expr, $($fmt:tt)*) => {
        if !$cond {
            return Err(format!($($fmt)*));
        }
    };
}

macro_rules! ensure_eq {
    ($a:expr, $b:expr $(,)?) => {
        ensure_eq!($a, $b, "")
    };
    ($a:expr, $b:expr, $($fmt:tt)*) => {
        if $a != $b {
            return Err(format!("{:?} != {:?}: {}", $a, $b, format!($($fmt)*)));
        }
    };
}

pub fn ids_of(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap_or_else(|| panic!("an array of ids, got {v}"))
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

/// The bytes `ids` spell, a special token by its name (the text holds it so, Gemma's user-defined "\n"
/// included); the end token that ends a choice spells its name past the text, as the last chunk may.
pub fn spell(vocab: &Vocab, ids: &[u32]) -> Vec<u8> {
    ids.iter()
        .flat_map(|&id| vocab.token_bytes(id).unwrap().to_vec())
        .collect()
}

pub fn text_of(choice: &Value) -> String {
    choice["text"]
        .as_str()
        .or_else(|| choice["message"]["content"].as_str())
        .or_else(|| choice["delta"]["content"].as_str())
        .unwrap_or("")
        .to_string()
}

/// The per-token entries of a choice's or chunk's logprobs, as (token text) in order.
pub fn logprob_tokens(lp: &Value) -> Vec<String> {
    if let Some(tokens) = lp["tokens"].as_array() {
        assert_eq!(
            lp["token_logprobs"].as_array().map(Vec::len),
            Some(tokens.len())
        );
        return tokens.iter().map(|t| t.as_str().unwrap().into()).collect();
    }
    lp["content"]
        .as_array()
        .map(|c| {
            c.iter()
                .map(|e| e["token"].as_str().unwrap().into())
                .collect()
        })
        .unwrap_or_default()
}

/// Sends `body` (with `logprobs` and `return_token_ids` set by the caller) to `path`, unstreamed and then
/// streamed, and holds both answers to the rules (a)-(e); `n` is the number of choices asked for.
pub fn check(
    h: &stoplab::serve::Handle,
    vocab: &Vocab,
    path: &str,
    body: &Value,
    n: usize,
) -> Result<(), String> {
    let whole = post(h, path, body);
    ensure_eq!(whole.status, 200, "{:?}", whole.body);
    let choices = whole.body["choices"].as_array().unwrap().clone();
    ensure_eq!(choices.len(), n);
    let mut generated = 0;
    for choice in &choices {
        let ids = ids_of(&choice["token_ids"]);
        let withheld = ids_of(&choice["withheld_token_ids"]);
        generated += ids.len() + withheld.len();
        let text = text_of(choice);
        // (b) for the whole choice: the carried ids spell the text (then at most the rest of a cut token).
        // A character cut at the finish is released as U+FFFD, as its lossy spelling reads.
        let spelled = String::from_utf8_lossy(&spell(vocab, &ids)).into_owned();
        ensure!(
            spelled.starts_with(&text),
            "ids {:?} spell {:?}, not the text {:?}",
            ids,
            spelled,
            text
        );
        // (c) one entry per carried id, the same tokens.
        let lp = logprob_tokens(&choice["logprobs"]);
        let want: Vec<String> = ids
            .iter()
            .map(|&id| String::from_utf8_lossy(vocab.token_bytes(id).unwrap()).into_owned())
            .collect();
        ensure_eq!(&lp, &want, "logprobs and ids disagree");
    }
    // (e)
    ensure_eq!(
        whole.body["usage"]["completion_tokens"].as_u64(),
        Some(generated as u64)
    );

    let mut sbody = body.clone();
    sbody["stream"] = true.into();
    sbody["stream_options"] = json!({"include_usage": true});
    let events = stream(h, path, &sbody);
    let mut texts: BTreeMap<usize, String> = BTreeMap::new();
    let mut ids: BTreeMap<usize, Vec<u32>> = BTreeMap::new();
    let mut ended: BTreeMap<usize, bool> = BTreeMap::new();
    let mut streamed_total = 0;
    for e in &events {
        let Some(list) = e["choices"].as_array() else {
            continue;
        };
        if list.is_empty() {
            streamed_total = e["usage"]["completion_tokens"].as_u64().unwrap() as usize;
            continue;
        }
        let chunk = &list[0];
        let index = chunk["index"].as_u64().unwrap() as usize;
        // (d)
        ensure!(
            !ended.get(&index).copied().unwrap_or(false),
            "choice {} has a chunk after its finish: {}",
            index,
            e
        );
        let text = text_of(chunk);
        let chunk_ids = if chunk["token_ids"].is_null() {
            Vec::new()
        } else {
            ids_of(&chunk["token_ids"])
        };
        let last = !chunk["finish_reason"].is_null();
        // (b) per chunk.
        let spelled = String::from_utf8_lossy(&spell(vocab, &chunk_ids)).into_owned();
        if last {
            ensure!(spelled.starts_with(&text), "last chunk {}", chunk);
        } else {
            ensure_eq!(
                spelled.as_str(),
                text.as_str(),
                "chunk {} ids spell another text",
                chunk
            );
        }
        // (c) per chunk.
        let lp = logprob_tokens(&chunk["logprobs"]);
        ensure_eq!(lp.len(), chunk_ids.len(), "chunk {}", chunk);
        texts.entry(index).or_default().push_str(&text);
        ids.entry(index).or_default().extend(&chunk_ids);
        if last {
            ended.insert(index, true);
            ensure_eq!(
                ids_of(&chunk["withheld_token_ids"]),
                ids_of(&choices[index]["withheld_token_ids"])
            );
        }
    }
    for (i, choice) in choices.iter().enumerate() {
        // (a)
        ensure_eq!(texts.get(&i).cloned().unwrap_or_default(), text_of(choice));
        ensure_eq!(
            ids.get(&i).cloned().unwrap_or_default(),
            ids_of(&choice["token_ids"])
        );
        ensure!(
            ended.get(&i).copied().unwrap_or(false),
            "choice {} never ended",
            i
        );
    }
    ensure_eq!(streamed_total, generated);
    Ok(())
}
