//! The "Stopping" flags of the generating commands: stop strings and ids, end tokens, lengths, repetition.

use clap::Args;

use stoplab::pipeline::settings::{EndTokenChoice, RepetitionStop};
use stoplab::pipeline::tokenizer::Vocab;

use crate::cli::args::values::{text, unescape};
use crate::cli::output::Failure;

#[derive(Args, Debug)]
pub struct StopArgs {
    /// Also stop on the format's natural stop ("\nuser:" for transcript, "\n- - -" for separator).
    #[arg(long, help_heading = "Stopping")]
    pub natural_stop: bool,
    /// Stop when the output contains this string (repeatable; escapes like \n are interpreted). The earliest
    /// match wins. The stop string is cut from the output unless --include-stop. A value that begins with a
    /// hyphen (`--stop "- - -"`) is taken as written.
    #[arg(
        long,
        short,
        value_name = "S",
        allow_hyphen_values = true,
        value_parser = text,
        help_heading = "Stopping"
    )]
    pub stop: Vec<String>,
    /// Stop when this token id is generated (repeatable).
    #[arg(long, value_name = "ID", help_heading = "Stopping")]
    pub stop_token_id: Vec<u32>,
    /// Keep the matched stop string (or stop token's text) in the output.
    #[arg(long, help_heading = "Stopping")]
    pub include_stop: bool,
    /// Do not stop on the model's end tokens (stop strings and stop token ids still work).
    #[arg(long, help_heading = "Stopping")]
    pub ignore_eos: bool,
    /// End only on these tokens instead of the model's end set (repeatable): an id or the token's exact
    /// text, e.g. --end-token '<|return|>'. `stoplab tokenize --end-tokens` lists the set and its reasons.
    #[arg(long, value_name = "TOKEN", help_heading = "Stopping")]
    end_token: Vec<String>,
    /// Also end on this token (repeatable): an id or its text, e.g. --add-end-token '<|file_sep|>'.
    #[arg(long, value_name = "TOKEN", help_heading = "Stopping")]
    add_end_token: Vec<String>,
    /// Do not end on this token of the set (repeatable): an id or its text, e.g. --no-end-token '<|call|>'.
    #[arg(long, value_name = "TOKEN", help_heading = "Stopping")]
    no_end_token: Vec<String>,
    /// Most tokens to generate.
    #[arg(long, short = 'n', default_value_t = 256, help_heading = "Stopping")]
    pub max_tokens: usize,
    /// No stop of any kind before this many tokens.
    #[arg(long, default_value_t = 0, help_heading = "Stopping")]
    pub min_tokens: usize,
    /// Stop when the last N generated tokens repeat an earlier span of the output (off by default; 8 is a
    /// reasonable N). Reported as stop_reason "repetition" (finish_reason stays "stop").
    #[arg(long, value_name = "N", help_heading = "Stopping")]
    repeat_stop: Option<usize>,
    /// With --repeat-stop: how many occurrences of the span end the generation (2: the first repeat).
    #[arg(
        long,
        value_name = "K",
        default_value_t = 2,
        requires = "repeat_stop",
        help_heading = "Stopping"
    )]
    repeat_stop_count: usize,
}

impl StopArgs {
    /// The stop strings, escapes interpreted.
    pub fn stops(&self) -> Vec<String> {
        self.stop.iter().map(|s| unescape(s)).collect()
    }

    /// --repeat-stop and --repeat-stop-count.
    pub fn repetition(&self) -> Option<RepetitionStop> {
        self.repeat_stop.map(|ngram| RepetitionStop {
            ngram,
            count: self.repeat_stop_count,
        })
    }

    /// --end-token, --add-end-token, --no-end-token as ids (a value is an id, or a token's exact text).
    pub fn end_choice(&self, vocab: &Vocab) -> Result<EndTokenChoice, Failure> {
        let ids = |flag: &str, values: &[String]| -> Result<Vec<u32>, Failure> {
            values
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    let v = unescape(v);
                    v.trim().parse::<u32>().ok().or_else(|| vocab.token_id(&v)).ok_or_else(|| {
                        Failure::usage(format!(
                            "{flag} #{}: {v:?} is not a token of this vocabulary; give a token id or a token's \
                             exact text (`stoplab tokenize --end-tokens` lists the end tokens)",
                            i + 1
                        ))
                    })
                })
                .collect()
        };
        Ok(EndTokenChoice {
            replace: if self.end_token.is_empty() {
                None
            } else {
                Some(ids("--end-token", &self.end_token)?)
            },
            add: ids("--add-end-token", &self.add_end_token)?,
            remove: ids("--no-end-token", &self.no_end_token)?,
        })
    }
}
