//! The GGUF tokenizers of three families against llama.cpp (`../shared/reference`, `/tokenize` with
//! add_special false and parse_special true): SmolLM2 (gpt2, pre smollm), Qwen2.5-Coder (gpt2, pre qwen2)
//! and Gemma 3 (llama: SentencePiece by scores). The models are found by their manifest names, as a user's
//! `--model NAME` finds them (fetched on first use). Also: the end sets with their reasons against
//! llama.cpp's, `</s>`, and Gemma's BOS.

use crate::common::reference;
use std::collections::BTreeSet;

use stoplab::pipeline::model::GgufFile;
use stoplab::pipeline::tokenizer::Vocab;

const SMOLLM2: &str = "smollm2-135m-instruct";
const QWEN: &str = "qwen2.5-coder-0.5b-instruct";
const GEMMA: &str = "gemma3-270m";

fn vocab(name: &str) -> Vocab {
    // The default model is the manifest's unnamed default.
    let model = (name != SMOLLM2).then_some(name);
    let path = crate::common::model_path(model);
    GgufFile::open(&path, None)
        .unwrap_or_else(|e| panic!("{name}: {e}"))
        .vocab
}

fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

/// A string whose ids differ: (text, llama.cpp's ids, ours).
type Mismatch = (String, Vec<u32>, Vec<u32>);

/// Every string of a tokenize file, and those where the ids differ.
fn mismatches(vocab: &Vocab, file: &str) -> (usize, Vec<Mismatch>) {
    let cases = reference::json(file);
    let cases = cases.as_array().unwrap();
    let mut bad = Vec::new();
    for c in cases {
        let text = c["text"].as_str().unwrap();
        let want = ids(&c["ids"]);
        let got = vocab.encode(text, true).unwrap();
        if got != want {
            bad.push((text.to_string(), want, got));
        }
    }
    (cases.len(), bad)
}

#[test]
fn qwen25_gives_llama_cpps_ids_on_every_reference_string() {
    let v = vocab(QWEN);
    let (n, bad) = mismatches(&v, "qwen25-coder-0.5b-tokenize.json");
    assert!(n >= 150, "{n} strings");
    assert!(bad.is_empty(), "{} of {n} differ: {bad:#?}", bad.len());
    assert!(
        v.notes().iter().all(|n| !n.contains("not built in")),
        "{:?}",
        v.notes()
    );
}

#[test]
fn gemma3_gives_llama_cpps_ids_on_every_reference_string() {
    let v = vocab(GEMMA);
    let (n, bad) = mismatches(&v, "gemma3-270m-tokenize.json");
    assert!(n >= 150, "{n} strings");
    assert!(bad.is_empty(), "{} of {n} differ: {bad:#?}", bad.len());
}

#[test]
fn smollm2_still_gives_llama_cpps_ids_on_every_reference_string() {
    let v = vocab(SMOLLM2);
    let (n, bad) = mismatches(&v, "smollm2-tokenize.json");
    assert!(n >= 150, "{n} strings");
    assert!(bad.is_empty(), "{} of {n} differ: {bad:#?}", bad.len());
}

/// `</s>` is a NORMAL token in Qwen2.5's file and a user-defined HTML tag in Gemma 3's; llama.cpp forces
/// both to control. stoplab parses the spelling as that one token when special tokens are parsed (as
/// llama.cpp does), spells it out otherwise, and never ends on it.
#[test]
fn close_s_is_one_token_in_special_text_but_never_an_end_token() {
    let q = vocab(QWEN);
    assert_eq!(q.encode("</s>", true).unwrap(), [128247]);
    assert_eq!(q.encode("</s>", false).unwrap(), [522, 82, 29]);
    assert!(!q.end_tokens().contains(&128247));
    assert!(
        q.notes().iter().any(|n| n.contains("\"</s>\" 128247")),
        "{:?}",
        q.notes()
    );

    let g = vocab(GEMMA);
    assert_eq!(g.encode("</s>", true).unwrap(), [212]);
    let plain = g.encode("</s>", false).unwrap();
    assert_eq!(plain.len(), 3, "{plain:?}");
    assert_eq!(plain[0], 954);
    // `<s>` stays a user-defined token, matched either way, as in llama.cpp.
    assert_eq!(g.encode("<s>", false).unwrap(), [203]);
    assert!(!g.end_tokens().contains(&212));
}

fn set(ids: &[u32]) -> BTreeSet<u32> {
    ids.iter().copied().collect()
}

#[test]
fn end_sets_carry_reasons_and_differ_from_llama_cpp_as_documented() {
    // (model, stoplab's set, llama.cpp's set as its load log printed it)
    let cases: [(&str, &[u32], &[u32]); 3] = [
        (SMOLLM2, &[0, 2], &[0, 2, 4]),
        (
            QWEN,
            &[151643, 151645],
            &[128247, 151643, 151645, 151662, 151663, 151664],
        ),
        (GEMMA, &[1, 106], &[1, 106, 212]),
    ];
    for (name, ours, theirs) in cases {
        let v = vocab(name);
        let ends = v.end_set();
        assert_eq!(v.end_tokens(), &set(ours), "{name}");
        assert_eq!(ends.llama_cpp_ids(), set(theirs), "{name}");
        for t in &ends.tokens {
            assert!(!t.reasons.is_empty(), "{name}: {t:?}");
        }
        for e in &ends.llama_cpp_extra {
            assert!(
                e.why.contains("fill-in-the-middle") || e.why.contains("not a control token"),
                "{name}: {e:?}"
            );
        }
    }
    let q = vocab(QWEN);
    let eos = &q.end_set().tokens[1];
    assert_eq!(eos.id, 151645);
    assert!(
        eos.reasons
            .iter()
            .any(|r| r.contains("tokenizer.ggml.eos_token_id"))
    );
    assert!(eos.reasons.iter().any(|r| r.contains("ChatML")));
}

/// Gemma's file asks for `<bos>` before a text prompt; llama.cpp's `/completion` prepends it (the greedy
/// reference's `prompt_ids` start with 2). Once: a prompt that begins with `<bos>` keeps one.
#[test]
fn gemma_prompts_get_one_bos_as_llama_cpp_evaluates_them() {
    let g = vocab(GEMMA);
    assert!(g.add_bos());
    assert_eq!(g.bos(), Some(2));
    let cases = reference::json("gemma3-270m-greedy.json");
    for c in cases.as_array().unwrap() {
        let prompt = c["prompt"].as_str().unwrap();
        let want = ids(&c["prompt_ids"]);
        assert_eq!(g.encode_prompt(prompt).unwrap(), want, "{}", c["name"]);
        let once = g.encode_prompt(&format!("<bos>{prompt}")).unwrap();
        assert_eq!(once, want, "{}: <bos> doubled", c["name"]);
    }
    // Qwen's file does not ask for one.
    let q = vocab(QWEN);
    assert!(!q.add_bos());
    assert_eq!(
        q.encode_prompt("Hi").unwrap(),
        q.encode("Hi", true).unwrap()
    );
}
