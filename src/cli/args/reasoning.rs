//! `--reasoning-markers`, `--stop-scope`, `--end-in-reasoning`: where the reasoning is and what the stops do
//! inside it (the generating commands).

use clap::Args;

use stoplab::pipeline::settings::{EndInReasoning, Reasoning, Scope};
use stoplab::pipeline::tokenizer::Vocab;

use crate::cli::args::values::unescape;
use crate::cli::output::Failure;

#[derive(Args, Debug)]
pub struct ReasoningArgs {
    /// The markers around the reasoning, OPEN,CLOSE (special tokens or plain text; escapes are read):
    /// between them stop strings and stop token ids of another --stop-scope are not armed. Default: the
    /// vocabulary's own (<think>,</think> where both are special tokens: Qwen3; harmony's
    /// <|channel|>analysis<|message|> against <|end|><|start|>assistant<|channel|>final<|message|>:
    /// gpt-oss), none for the others;
    /// `none` turns them off. A prompt whose last marker is OPEN starts inside the reasoning.
    #[arg(
        long,
        value_name = "OPEN,CLOSE",
        allow_hyphen_values = true,
        help_heading = "Reasoning"
    )]
    reasoning_markers: Option<String>,
    /// Where stop strings and stop token ids are armed when there are markers: answer (the default, as
    /// vLLM's 2025 fix: a stop meant for the answer does not end the thinking), reasoning, or all (the
    /// text scanned as if it had no markers).
    #[arg(long, value_name = "SCOPE", value_parser = Scope::NAMES, help_heading = "Reasoning")]
    stop_scope: Option<String>,
    /// An end token inside the reasoning: allow (it ends the generation there, the answer never written:
    /// the default, what the model chose), mask (the sampler may not choose it until the close marker) or
    /// close (the close marker is written in its place and the model goes on into the answer; trace shows
    /// p(end) there) or ban-after-close:N (allowed inside, but not for the N tokens after the close
    /// marker, so the answer is not empty: sglang's answer with N = 1). A replay writes its tokens as
    /// given, so every policy but allow is refused with --replay.
    #[arg(long, value_name = "POLICY", value_parser = EndInReasoning::parse_or_explain, help_heading = "Reasoning")]
    end_in_reasoning: Option<EndInReasoning>,
    /// The reasoning budget: after N tokens inside the reasoning the close marker is written, and the
    /// trace shows what the model does next (a second close marker in the answer is reported).
    #[arg(long, value_name = "N", help_heading = "Reasoning")]
    max_reasoning_tokens: Option<usize>,
}

impl ReasoningArgs {
    /// The reasoning settings asked for on `vocab`; None without markers.
    pub fn reasoning(&self, vocab: &Vocab, replaying: bool) -> Result<Option<Reasoning>, Failure> {
        let given = self.reasoning_markers.as_deref().map(unescape);
        let markers = Reasoning::from_markers(given.as_deref(), vocab.reasoning_markers())
            .map_err(Failure::from_settings)?;
        let Some(mut r) = markers else {
            if self.stop_scope.is_some()
                || self.end_in_reasoning.is_some()
                || self.max_reasoning_tokens.is_some()
            {
                return Err(Failure::usage(
                    "--stop-scope, --end-in-reasoning and --max-reasoning-tokens need reasoning markers: this \
                     vocabulary declares none; give --reasoning-markers OPEN,CLOSE",
                ));
            }
            return Ok(None);
        };
        if let Some(s) = self.stop_scope.as_deref().and_then(Scope::parse) {
            r.stop_scope = s;
        }
        if let Some(e) = self.end_in_reasoning {
            if e.needs_sampler() && replaying {
                return Err(Failure::usage(format!(
                    "--end-in-reasoning {} acts on the sampler's choice, and a replay samples nothing: it \
                     writes its tokens as given (use allow, or run the model)",
                    e.name()
                )));
            }
            r.end_in_reasoning = e;
        }
        if let Some(n) = self.max_reasoning_tokens {
            if replaying {
                return Err(Failure::usage(
                    "--max-reasoning-tokens writes the close marker in place of the model's choice, and a \
                     replay writes its tokens as given (run the model)",
                ));
            }
            r.max_tokens = Some(n);
        }
        Ok(Some(r))
    }
}
