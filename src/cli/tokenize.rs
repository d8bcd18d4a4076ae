//! `stoplab tokenize`: ids and pieces, how a stop string falls across tokens, single-token candidates, the
//! end set. What each part says is [`stoplab::lab::tokenize`]'s; this file reads the flags and prints the
//! parts in order.

use clap::Args;

use stoplab::LoadedModel;
use stoplab::lab::inspect::{find_single, pieces};
use stoplab::lab::tokenize::{
    EndTokens, StopReport, pieces_json, pieces_lines, single_json, single_lines,
};
use stoplab::pipeline::field::Field;
use stoplab::pipeline::stop::{StopError, StopSet};

use crate::cli::args::model::{FILE_OR_NAME, MODEL, ModelArg, TOKENIZER, TokenizerArg, own_help};
use crate::cli::args::values::{text, unescape};
use crate::cli::output::{Failure, flag, pretty};

pub const EXAMPLES: &str = "Examples:
  stoplab tokenize 'What is the capital of Germany?<|im_end|>'   # <|im_end|> is one token
  stoplab tokenize --no-special '<|im_end|>'           # ... or spelled out in text tokens
  stoplab tokenize --stop '\\nuser:' --stop '######'    # tokens of a stop, and its carriers
  stoplab tokenize --find-single '#'                   # the longest one-token '#' runs
  stoplab tokenize --end-tokens                        # the end set, each id's reasons, llama.cpp's rule
  stoplab tokenize --model gpt-oss-vocab --end-tokens  # a weight-free family's end set";

#[derive(Args, Debug)]
#[command(
    mut_arg(MODEL, own_help(FILE_OR_NAME)),
    mut_arg(
        TOKENIZER,
        own_help("A tokenizer.json to use instead of the GGUF's tokenizer")
    )
)]
pub struct TokenizeArgs {
    /// Text to tokenize (escapes such as \n are interpreted; a leading hyphen is taken as written).
    #[arg(allow_hyphen_values = true, value_parser = text)]
    text: Option<String>,
    /// Do not parse special tokens: "<|im_end|>" in TEXT is spelled out in ordinary tokens.
    #[arg(long)]
    no_special: bool,
    /// A stop string to analyse: its tokens, and the vocabulary entries that carry its first or last bytes
    /// inside a longer token (repeatable).
    #[arg(long, short, value_name = "S", allow_hyphen_values = true, value_parser = text)]
    stop: Vec<String>,
    /// List vocabulary tokens made only of these characters, longest first.
    #[arg(long, value_name = "CHARS", allow_hyphen_values = true, value_parser = text)]
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
    #[command(flatten)]
    model: ModelArg,
    #[command(flatten)]
    tokenizer: TokenizerArg,
}

pub fn run(args: TokenizeArgs) -> Result<(), Failure> {
    if args.text.is_none() && args.stop.is_empty() && args.find_single.is_none() && !args.end_tokens
    {
        return Err(Failure::usage(
            "tokenize: give a TEXT, --stop S, --find-single CHARS or --end-tokens",
        ));
    }
    let texts: Vec<String> = args.stop.iter().map(|s| unescape(s)).collect();
    // The one rule for stop strings (an empty one is refused), named as every command names it.
    if let Err(StopError::Empty { index }) = StopSet::new(texts.iter().cloned()) {
        return Err(Failure::usage(format!(
            "{}: {}",
            flag(Field::Stop { index }),
            StopError::EMPTY
        )));
    }
    let engine = LoadedModel::load(&stoplab::LoadOptions {
        tokenizer: args.tokenizer.tokenizer.clone(),
        ..args.model.options(true)
    })?;
    let vocab = &engine.vocab;
    // With --json, the parts are gathered into one document; as text, each is printed once computed.
    let mut doc = serde_json::Map::new();
    if let Some(text) = &args.text {
        let list = pieces(vocab, &unescape(text), !args.no_special)?;
        if args.json {
            doc.insert("tokens".into(), pieces_json(&list));
        } else {
            for line in pieces_lines(&list, !args.no_special) {
                say!("{line}");
            }
        }
    }
    let mut stops = Vec::new();
    for stop in texts {
        let report = StopReport::new(vocab, &stop)?;
        if args.json {
            stops.push(report.to_json(args.limit));
        } else {
            for line in report.lines(args.limit) {
                say!("{line}");
            }
        }
    }
    if !stops.is_empty() {
        doc.insert("stops".into(), stops.into());
    }
    if let Some(chars) = &args.find_single {
        let chars = unescape(chars);
        let found = find_single(vocab, &chars);
        if args.json {
            doc.insert("single".into(), single_json(&chars, &found, args.limit));
        } else {
            for line in single_lines(&chars, &found, args.limit) {
                say!("{line}");
            }
        }
    }
    if args.end_tokens {
        let ends = EndTokens::of(vocab)?;
        if args.json {
            doc.insert("end_tokens".into(), ends.to_json(args.limit));
        } else {
            for line in ends.lines(args.limit) {
                say!("{line}");
            }
        }
    }
    if args.json {
        say!("{}", pretty(&serde_json::Value::Object(doc)));
    }
    Ok(())
}
