//! `--speculate ngram` and its sizes: taken by the generating commands and by `bench decode`.

use clap::Args;

use stoplab::pipeline::speculate::{Drafter, Speculation};

use crate::cli::output::Failure;

#[derive(Args, Debug)]
pub struct NgramArgs {
    /// Several tokens per step: `ngram` drafts the tokens that followed the last few tokens where they
    /// occurred before (in the prompt or the output: prompt lookup, as llama.cpp's `llama-lookup` and
    /// vLLM's `ngram`), and one forward pass checks the draft. The tokens are the ones plain decoding
    /// gives, for any seed and sampler settings; a stop inside an accepted draft ends the text at its token.
    #[arg(long, value_name = "MODE", value_parser = ["ngram"], help_heading = "Speculation")]
    pub speculate: Option<String>,
    /// Tokens drafted per step, at most (a step feeds this many plus one positions).
    #[arg(long, value_name = "K", default_value_t = Speculation::DRAFT_TOKENS, requires = "speculate",
          help_heading = "Speculation")]
    draft_tokens: usize,
    /// The longest n-gram looked up (then shorter ones, down to --ngram-min).
    #[arg(long, value_name = "N", default_value_t = Speculation::NGRAM_MAX, requires = "speculate",
          help_heading = "Speculation")]
    ngram_max: usize,
    /// The shortest n-gram looked up.
    #[arg(long, value_name = "N", default_value_t = Speculation::NGRAM_MIN, requires = "speculate",
          help_heading = "Speculation")]
    ngram_min: usize,
}

impl NgramArgs {
    /// The speculation asked for, checked; None without --speculate.
    pub fn speculation(&self) -> Result<Option<Speculation>, Failure> {
        if self.speculate.is_none() {
            return Ok(None);
        }
        let spec = Speculation {
            drafter: Drafter::Ngram {
                max: self.ngram_max,
                min: self.ngram_min,
            },
            draft_tokens: self.draft_tokens,
        };
        spec.check()?;
        Ok(Some(spec))
    }
}
