//! `stoplab tokenize`: ids and pieces, how a stop string falls across tokens, single-token candidates.

use std::path::PathBuf;

use clap::Args;
use serde_json::json;

use stoplab::lab::inspect::{Carrier, find_single, pieces, stop_carriers};
use stoplab::lab::trace::escape;
use stoplab::{LoadOptions, LoadedModel};

use super::{Failure, unescape};

pub const EXAMPLES: &str = "Examples:
  stoplab tokenize 'What is the capital of Germany?<|im_end|>'   # <|im_end|> is one token
  stoplab tokenize --no-special '<|im_end|>'           # ... or spelled out in text tokens
  stoplab tokenize --stop '\\nuser:' --stop '######'    # tokens of a stop, and its carriers
  stoplab tokenize --find-single '#'                   # the longest one-token '#' runs
  stoplab tokenize --end-tokens                        # the end set, each id's reasons, llama.cpp's rule
  stoplab tokenize --model gpt-oss-vocab --end-tokens  # a weight-free family's end set";

#[derive(Args, Debug)]
pub struct TokenizeArgs {
    /// Text to tokenize (escapes such as \n are interpreted; a leading hyphen is taken as written).
    #[arg(allow_hyphen_values = true, value_parser = super::text)]
    text: Option<String>,
    /// Do not parse special tokens: "<|im_end|>" in TEXT is spelled out in ordinary tokens.
    #[arg(long)]
    no_special: bool,
    /// A stop string to analyse: its tokens, and the vocabulary entries that carry its first or last bytes
    /// inside a longer token (repeatable).
    #[arg(long, short, value_name = "S", allow_hyphen_values = true, value_parser = super::text)]
    stop: Vec<String>,
    /// List vocabulary tokens made only of these characters, longest first.
    #[arg(long, value_name = "CHARS", allow_hyphen_values = true, value_parser = super::text)]
    find_single: Option<String>,
    /// List the tokens that end a generation, with the reasons for each, whether plain text can spell the
    /// same bytes, and the ids llama.cpp's spelling rule adds (and why stoplab does not).
    #[arg(long)]
    end_tokens: bool,
    /// Most entries to list per group.
    #[arg(long, default_value_t = 12)]
    limit: usize,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    /// A GGUF file or model name (default: the default model).
    #[arg(long, short, env = "STOPLAB_MODEL")]
    model: Option<String>,
    /// A tokenizer.json to use instead of the GGUF's tokenizer.
    #[arg(long, value_name = "FILE")]
    tokenizer: Option<PathBuf>,
}

fn carriers_json(list: &[Carrier], limit: usize) -> serde_json::Value {
    json!({
        "count": list.len(),
        "first": list.iter().take(limit).map(|c| json!({
            "id": c.id, "token": String::from_utf8_lossy(&c.bytes), "carries": c.carries,
        })).collect::<Vec<_>>(),
    })
}

fn carriers_text(list: &[Carrier], limit: usize) -> String {
    list.iter()
        .take(limit)
        .map(|c| format!("{} \"{}\"", c.id, escape(&c.bytes)))
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn run(args: TokenizeArgs) -> Result<(), Failure> {
    if args.text.is_none() && args.stop.is_empty() && args.find_single.is_none() && !args.end_tokens
    {
        return Err(Failure::usage(
            "tokenize: give a TEXT, --stop S, --find-single CHARS or --end-tokens",
        ));
    }
    let engine = LoadedModel::load(&LoadOptions {
        model: args.model.clone(),
        tokenizer: args.tokenizer.clone(),
        adapter: None,
        tokenizer_only: true,
        progress: true,
    })?;
    let vocab = &engine.vocab;
    let mut doc = serde_json::Map::new();

    if let Some(text) = &args.text {
        let text = unescape(text);
        let list = pieces(vocab, &text, !args.no_special)?;
        if args.json {
            doc.insert(
                "tokens".into(),
                list.iter()
                    .map(|p| json!({"id": p.id, "piece": String::from_utf8_lossy(&p.bytes), "special": p.special}))
                    .collect::<Vec<_>>()
                    .into(),
            );
        } else {
            say!(
                "{} tokens ({} special tokens {}):",
                list.len(),
                list.iter().filter(|p| p.special).count(),
                if args.no_special {
                    "spelled out"
                } else {
                    "parsed"
                }
            );
            for p in &list {
                let label = if p.special {
                    format!("{}  (special)", String::from_utf8_lossy(&p.bytes))
                } else {
                    format!("\"{}\"", escape(&p.bytes))
                };
                say!("{:>6}  {label}", p.id);
            }
        }
    }

    let mut stops_json = Vec::new();
    for s in &args.stop {
        let stop = unescape(s);
        if stop.is_empty() {
            return Err(Failure::usage("--stop: an empty stop string"));
        }
        let c = stop_carriers(vocab, &stop)?;
        if args.json {
            stops_json.push(json!({
                "stop": stop,
                "ids": c.ids,
                "pieces": c.ids.iter().map(|&id| String::from_utf8_lossy(vocab.token_bytes(id).unwrap_or_default()).into_owned()).collect::<Vec<_>>(),
                "heads": carriers_json(&c.heads, args.limit),
                "tails": carriers_json(&c.tails, args.limit),
                "inside": carriers_json(&c.inside, args.limit),
            }));
            continue;
        }
        let spelled: Vec<String> = c
            .ids
            .iter()
            .map(|&id| {
                format!(
                    "{id} \"{}\"",
                    escape(vocab.token_bytes(id).unwrap_or_default())
                )
            })
            .collect();
        say!(
            "\nstop \"{}\": {} bytes, {} token{} on its own: {}",
            escape(stop.as_bytes()),
            stop.len(),
            c.ids.len(),
            if c.ids.len() == 1 { "" } else { "s" },
            spelled.join(", ")
        );
        say!(
            "  {} tokens end with its first bytes after other text, e.g. {}",
            c.heads.len(),
            carriers_text(&c.heads, args.limit)
        );
        say!(
            "  {} tokens begin with its last bytes and go on, e.g. {}",
            c.tails.len(),
            carriers_text(&c.tails, args.limit)
        );
        say!(
            "  {} tokens hold all of it and more{}{}",
            c.inside.len(),
            if c.inside.is_empty() { "" } else { ", e.g. " },
            carriers_text(&c.inside, args.limit)
        );
        say!(
            "  so the model can write it in many token sequences besides [{}]: stoplab matches stops on the \
             generated bytes, never on ids.",
            c.ids
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    if !stops_json.is_empty() {
        doc.insert("stops".into(), stops_json.into());
    }

    if let Some(chars) = &args.find_single {
        let chars = unescape(chars);
        let found = find_single(vocab, &chars);
        if args.json {
            doc.insert(
                "single".into(),
                json!({
                    "chars": chars,
                    "count": found.len(),
                    "tokens": found.iter().take(args.limit).map(|(id, t)| json!({"id": id, "token": t, "chars": t.chars().count()})).collect::<Vec<_>>(),
                }),
            );
        } else {
            say!(
                "\n{} tokens are made only of {:?}; longest first:",
                found.len(),
                chars
            );
            for (id, t) in found.iter().take(args.limit) {
                say!(
                    "{id:>6}  {:>3} chars  \"{}\"",
                    t.chars().count(),
                    escape(t.as_bytes())
                );
            }
        }
    }
    if args.end_tokens {
        let ends = vocab.end_set();
        // The other special tokens the model writes or reads (turn and channel markers), placeholders
        // (reserved, unused, padding) only counted.
        let end_ids = vocab.end_tokens();
        let placeholder = |t: &str| {
            let t = t.to_ascii_lowercase();
            t.contains("reserved") || t.contains("unused") || t.starts_with("[pad")
        };
        let (mut structure, mut placeholders) = (Vec::new(), 0usize);
        for id in (0..vocab.len() as u32).filter(|&i| vocab.is_special(i) && !end_ids.contains(&i))
        {
            let text =
                String::from_utf8_lossy(vocab.token_bytes(id).unwrap_or_default()).into_owned();
            if placeholder(&text) {
                placeholders += 1;
            } else {
                structure.push((id, text));
            }
        }
        let spelled = |text: &str| -> Result<Vec<u32>, Failure> { Ok(vocab.encode(text, false)?) };
        let piece = |id: u32| {
            String::from_utf8_lossy(vocab.token_bytes(id).unwrap_or_default()).into_owned()
        };
        let extra_json = |list: &[stoplab::pipeline::tokenizer::Extra]| {
            list.iter()
                .map(|e| json!({"id": e.id, "text": e.text, "why": e.why}))
                .collect::<Vec<_>>()
        };
        if args.json {
            let mut tokens = Vec::new();
            for t in &ends.tokens {
                let plain = spelled(&t.text)?;
                tokens.push(json!({
                    "id": t.id,
                    "text": t.text,
                    "reasons": t.reasons,
                    "plain_text_ids": plain,
                    "plain_text_pieces": plain.iter().map(|&i| piece(i)).collect::<Vec<_>>(),
                    "plain_text_is_this_token": plain == [t.id],
                }));
            }
            doc.insert(
                "end_tokens".into(),
                json!({
                    "tokenizer": vocab.kind(),
                    "rule": "declared eos/eot/eom ids, control tokens spelled as the end of a turn, document or tool call, and family facts (see the tokenizer::ends docs)",
                    "set": ends.ids(),
                    "tokens": tokens,
                    "llama_cpp_set": ends.llama_cpp_ids(),
                    "llama_cpp_extra": extra_json(&ends.llama_cpp_extra),
                    "llama_cpp_lacks": extra_json(&ends.llama_cpp_lacks),
                    "bos": vocab.bos(),
                    "add_bos": vocab.add_bos(),
                    "other_specials": structure.iter().take(args.limit).map(|(id, t)| json!({"id": id, "text": t})).collect::<Vec<_>>(),
                    "other_specials_count": structure.len(),
                    "placeholder_specials": placeholders,
                }),
            );
        } else {
            say!("tokenizer: {}", vocab.kind());
            if let Some(bos) = vocab.bos() {
                say!(
                    "beginning of sequence: {bos} {}{}",
                    piece(bos),
                    if vocab.add_bos() {
                        " (put before a text prompt, once)"
                    } else {
                        " (not added to prompts)"
                    }
                );
            }
            say!(
                "\n{} end token{} (stoplab's rule):",
                ends.tokens.len(),
                if ends.tokens.len() == 1 { "" } else { "s" }
            );
            for t in &ends.tokens {
                say!("{:>8}  {}", t.id, t.text);
                for r in &t.reasons {
                    say!("          - {r}");
                }
                let plain = spelled(&t.text)?;
                if plain == [t.id] {
                    say!("          - plain text produces this very token");
                } else {
                    say!(
                        "          - plain text spells the same bytes as {} ordinary token{} [{}]: that does not \
                         end a generation; a stop string {:?} catches both",
                        plain.len(),
                        if plain.len() == 1 { "" } else { "s" },
                        plain
                            .iter()
                            .map(|&i| format!(
                                "{i} \"{}\"",
                                escape(vocab.token_bytes(i).unwrap_or_default())
                            ))
                            .collect::<Vec<_>>()
                            .join(", "),
                        t.text
                    );
                }
            }
            say!(
                "\nother special tokens (not ends): {}{}{}",
                structure
                    .iter()
                    .take(args.limit)
                    .map(|(id, t)| format!("{id} \"{}\"", escape(t.as_bytes())))
                    .collect::<Vec<_>>()
                    .join(", "),
                if structure.len() > args.limit {
                    format!(", … ({} in all; --limit N shows more)", structure.len())
                } else {
                    String::new()
                },
                if placeholders > 0 {
                    format!("; and {placeholders} placeholders (reserved/unused/padding)")
                } else {
                    String::new()
                }
            );
            let theirs: Vec<String> = ends.llama_cpp_ids().iter().map(u32::to_string).collect();
            say!(
                "\nllama.cpp's rule (by spelling, plus FIM markers) gives {{{}}}.",
                theirs.join(", ")
            );
            if ends.llama_cpp_extra.is_empty() && ends.llama_cpp_lacks.is_empty() {
                say!("  the same set.");
            }
            for e in &ends.llama_cpp_extra {
                say!(
                    "  llama.cpp adds {:>6} {}: stoplab does not, because {}",
                    e.id,
                    e.text,
                    e.why
                );
            }
            for e in &ends.llama_cpp_lacks {
                say!("  llama.cpp lacks {:>6} {}: {}", e.id, e.text, e.why);
            }
            say!(
                "\nchoose per command: --end-token T (only these), --add-end-token T, --no-end-token T (an id or \
                 the token's text), and --ignore-eos."
            );
        }
    }

    if args.json {
        say!(
            "{}",
            serde_json::to_string_pretty(&serde_json::Value::Object(doc))
                .expect("JSON values serialise")
        );
    }
    Ok(())
}
