//! Generation settings: what a user asks for, checked once.
//!
//! Every front end (the command line, a scenario file, an HTTP request) fills the same plain value,
//! [`UserSettings`]: raw and unchecked, stops as strings, the prompt format by name. One function,
//! [`UserSettings::validate`], turns it into the settings a generation runs with ([`GenerateParams`]) and
//! the [`PromptFormat`], or into a [`SettingsError`] whose [`Field`] is typed. Each front end then names
//! the field the way its user wrote it: the command line as its flag (`--stop-token-id`), a scenario as
//! its file, line and key (`scenarios/x.toml:12: stop.strings[1]`), the HTTP API as its JSON path
//! (`stop_token_ids[0]`).
//!
//! [`GenerateParams::validate`] is the last-line check `generate()` makes; [`UserSettings::validate`]
//! ends with it, so the two cannot disagree.
//!
//! ```
//! use stoplab::pipeline::field::Field;
//! use stoplab::pipeline::settings::UserSettings;
//!
//! let user = UserSettings { stops: vec!["\nuser:".into(), String::new()], ..UserSettings::default() };
//! let err = user.validate(Some(49152)).unwrap_err();
//! assert_eq!(err.field, Field::Stop { index: 1 });
//! ```

use std::collections::BTreeSet;

use crate::Error;
use crate::pipeline::field::{EndList, Field, SettingsError};
use crate::pipeline::format::PromptFormat;
use crate::pipeline::sampling::SamplingParams;
use crate::pipeline::stop::{StopError, StopSet};

/// Which end tokens count, on top of the model's set ([`crate::pipeline::tokenizer::Vocab::end_tokens`]): replace it,
/// then add to it and remove from it. `--ignore-eos` still switches whatever results off.
///
/// ```
/// use std::collections::BTreeSet;
/// use stoplab::pipeline::settings::EndTokenChoice;
///
/// // gpt-oss: keep <|return|> 200002, drop <|call|> 200012 (a model trained to stop only after calls).
/// let harmony = BTreeSet::from([199999, 200002, 200012]);
/// let choice = EndTokenChoice { remove: vec![200012], ..EndTokenChoice::default() };
/// assert_eq!(choice.apply(&harmony), BTreeSet::from([199999, 200002]));
/// let only = EndTokenChoice { replace: Some(vec![200002]), ..EndTokenChoice::default() };
/// assert_eq!(only.apply(&harmony), BTreeSet::from([200002]));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndTokenChoice {
    /// The set to use instead of the model's (None: the model's).
    #[serde(default)]
    pub replace: Option<Vec<u32>>,
    #[serde(default)]
    pub add: Vec<u32>,
    #[serde(default)]
    pub remove: Vec<u32>,
}

impl EndTokenChoice {
    /// Whether the model's own set is used unchanged.
    pub fn is_default(&self) -> bool {
        self.replace.is_none() && self.add.is_empty() && self.remove.is_empty()
    }

    /// The end set in force for a model whose own set is `model`.
    pub fn apply(&self, model: &BTreeSet<u32>) -> BTreeSet<u32> {
        let mut set = match &self.replace {
            Some(ids) => ids.iter().copied().collect(),
            None => model.clone(),
        };
        set.extend(&self.add);
        for id in &self.remove {
            set.remove(id);
        }
        set
    }

    fn check(&self, vocab_size: Option<usize>) -> Result<(), SettingsError> {
        let lists = [
            (
                EndList::Replace,
                self.replace.as_deref().unwrap_or_default(),
            ),
            (EndList::Add, &self.add[..]),
            (EndList::Remove, &self.remove[..]),
        ];
        for (list, ids) in lists {
            for (index, &id) in ids.iter().enumerate() {
                if let Some(n) = vocab_size
                    && id as usize >= n
                {
                    return Err(SettingsError::new(
                        Field::EndTokens { list, index },
                        format!("token id {id} is outside the vocabulary (0..{n})"),
                    ));
                }
                if list == EndList::Remove && self.add.contains(&id) {
                    return Err(SettingsError::new(
                        Field::EndTokens { list, index },
                        format!("token {id} is both added and removed; keep one of the two"),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// What a user asked for, before any check: every front end fills this, [`UserSettings::validate`] checks it.
#[derive(Debug, Clone, PartialEq)]
pub struct UserSettings {
    /// A name from [`PromptFormat::NAMES`].
    pub format: String,
    /// The transcript format's prefixes and the separator format's line (None: the format's default).
    pub user_prefix: Option<String>,
    pub ai_prefix: Option<String>,
    pub separator: Option<String>,
    /// Also stop on the format's natural stop.
    pub natural_stop: bool,
    pub stops: Vec<String>,
    pub stop_token_ids: Vec<u32>,
    pub include_stop: bool,
    /// With `include_stop`, the end token's name is kept at the end of the output too (vLLM's
    /// `skip_special_tokens: false`).
    pub end_token_text: bool,
    pub ignore_eos: bool,
    pub min_tokens: usize,
    pub max_tokens: usize,
    pub repetition: Option<RepetitionStop>,
    pub sampling: SamplingParams,
    /// Which end tokens count (the model's set by default).
    pub end_tokens: EndTokenChoice,
}

impl Default for UserSettings {
    fn default() -> Self {
        let d = GenerateParams::default();
        Self {
            format: PromptFormat::Raw.name().into(),
            user_prefix: None,
            ai_prefix: None,
            separator: None,
            natural_stop: false,
            stops: Vec::new(),
            stop_token_ids: d.stop_token_ids,
            include_stop: d.include_stop,
            end_token_text: d.end_token_text,
            ignore_eos: d.ignore_eos,
            min_tokens: d.min_tokens,
            max_tokens: d.max_tokens,
            repetition: d.repetition,
            sampling: d.sampling,
            end_tokens: d.end_tokens,
        }
    }
}

/// Checked settings: the prompt format and what the generation runs with.
#[derive(Debug, Clone)]
pub struct Settings {
    pub format: PromptFormat,
    pub params: GenerateParams,
}

impl UserSettings {
    /// Checks everything and builds the settings. `vocab_size`: the model's vocabulary, when it is known
    /// (None: token ids are checked later, by `generate()`, with the same rules and the same fields).
    pub fn validate(&self, vocab_size: Option<usize>) -> Result<Settings, SettingsError> {
        let mut format = PromptFormat::from_name(&self.format).ok_or_else(|| {
            SettingsError::new(
                Field::Format,
                format!(
                    "unknown format {:?}; use one of {}",
                    self.format,
                    PromptFormat::NAMES.join(", ")
                ),
            )
        })?;
        match &mut format {
            PromptFormat::Transcript { user, ai } => {
                if let Some(u) = &self.user_prefix {
                    user.clone_from(u);
                }
                if let Some(a) = &self.ai_prefix {
                    ai.clone_from(a);
                }
            }
            PromptFormat::Separator { separator } => {
                if let Some(s) = &self.separator {
                    separator.clone_from(s);
                }
            }
            PromptFormat::Raw | PromptFormat::Chat => {}
        }
        let mut stops = self.stops.clone();
        if self.natural_stop {
            match format.natural_stop() {
                Some(s) if !stops.contains(&s) => stops.push(s),
                Some(_) => {}
                None => {
                    return Err(SettingsError::new(
                        Field::NaturalStop,
                        format!(
                            "the {} format has no natural stop string (transcript and separator have one)",
                            format.name()
                        ),
                    ));
                }
            }
        }
        let stops = StopSet::new(stops).map_err(|e| match e {
            StopError::Empty { index } => {
                SettingsError::new(Field::Stop { index }, StopError::EMPTY)
            }
            StopError::Build(_) => SettingsError::new(Field::Stops, e.to_string()),
        })?;
        let params = GenerateParams {
            sampling: self.sampling.clone(),
            stops,
            stop_token_ids: self.stop_token_ids.clone(),
            include_stop: self.include_stop,
            end_token_text: self.end_token_text,
            ignore_eos: self.ignore_eos,
            min_tokens: self.min_tokens,
            max_tokens: self.max_tokens,
            repetition: self.repetition,
            end_tokens: self.end_tokens.clone(),
            speculation: None,
            reasoning: None,
        };
        params.check(vocab_size)?;
        if self.min_tokens > self.max_tokens {
            return Err(SettingsError::new(
                Field::MinTokens,
                format!(
                    "{} is more than the most tokens to generate ({}); lower it or raise max tokens",
                    self.min_tokens, self.max_tokens
                ),
            ));
        }
        Ok(Settings { format, params })
    }
}

/// Everything that decides how a generation runs and ends.
#[derive(Debug, Clone)]
pub struct GenerateParams {
    pub sampling: SamplingParams,
    pub stops: StopSet,
    pub stop_token_ids: Vec<u32>,
    /// Keep the matched stop string (or stop token's text) at the end of the output.
    pub include_stop: bool,
    /// With `include_stop`, keep the end token's name at the end of the output too, when it ends the
    /// generation (vLLM's `skip_special_tokens: false` with `include_stop_str_in_output`).
    pub end_token_text: bool,
    /// Do not end on the model's end tokens; they are generated and shown like any other token.
    pub ignore_eos: bool,
    pub min_tokens: usize,
    pub max_tokens: usize,
    /// Stop when the output starts repeating itself (off by default).
    pub repetition: Option<RepetitionStop>,
    /// Which end tokens count: the model's set, replaced, added to or removed from.
    pub end_tokens: EndTokenChoice,
    /// Several tokens per step (prompt lookup, or a replay's staged steps); None decodes one at a time.
    /// It changes how fast the tokens come, never which: see [`speculate`](crate::pipeline::speculate).
    pub speculation: Option<Speculation>,
    /// The reasoning part of the output (between its markers) and where the stops are armed; None: every
    /// byte is alike.
    pub reasoning: Option<Reasoning>,
}

/// Stop when the last `ngram` generated tokens have now occurred `count` times in the output (the earlier
/// occurrences may overlap). For a model that never emits its end token and loops: it ends the loop on
/// its first repeat instead of at `max_tokens`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepetitionStop {
    pub ngram: usize,
    #[serde(default = "RepetitionStop::default_count")]
    pub count: usize,
}

impl RepetitionStop {
    fn default_count() -> usize {
        2
    }

    /// Where the last `ngram` ids of `tokens` first occurred, if they now occur `count` times.
    pub fn check(&self, tokens: &[u32]) -> Option<usize> {
        let n = self.ngram;
        if n == 0 || tokens.len() < n {
            return None;
        }
        let tail = &tokens[tokens.len() - n..];
        let mut seen = 0;
        let mut first = None;
        for (i, w) in tokens.windows(n).enumerate() {
            if w == tail {
                seen += 1;
                first.get_or_insert(i);
            }
        }
        (seen >= self.count).then_some(first.unwrap_or(0))
    }
}

impl Default for GenerateParams {
    fn default() -> Self {
        Self {
            sampling: SamplingParams::default(),
            stops: StopSet::new(Vec::<String>::new()).expect("an empty stop set is valid"),
            stop_token_ids: Vec::new(),
            include_stop: false,
            end_token_text: false,
            ignore_eos: false,
            min_tokens: 0,
            max_tokens: 256,
            repetition: None,
            end_tokens: EndTokenChoice::default(),
            speculation: None,
            reasoning: None,
        }
    }
}

impl GenerateParams {
    /// Checks the settings against a vocabulary: the last-line check `generate()` makes. The errors are
    /// those of [`UserSettings::validate`], which ends with this check.
    pub fn validate(&self, vocab_size: usize) -> Result<(), SettingsError> {
        self.check(Some(vocab_size))
    }

    /// The end tokens in force for a model whose own set is `model` (before `ignore_eos`).
    pub fn end_set(&self, model: &BTreeSet<u32>) -> BTreeSet<u32> {
        self.end_tokens.apply(model)
    }

    fn check(&self, vocab_size: Option<usize>) -> Result<(), SettingsError> {
        if self.max_tokens == 0 {
            return Err(SettingsError::new(Field::MaxTokens, "must be at least 1"));
        }
        if let Some(r) = &self.repetition {
            if r.ngram == 0 {
                return Err(SettingsError::new(
                    Field::RepetitionNgram,
                    "must be at least 1 (the length of the repeated span, in tokens)",
                ));
            }
            if r.count < 2 {
                return Err(SettingsError::new(
                    Field::RepetitionCount,
                    format!(
                        "{} is below 2; it must be at least 2 (the span and one repeat)",
                        r.count
                    ),
                ));
            }
        }
        if let Some(vocab_size) = vocab_size {
            for (index, &id) in self.stop_token_ids.iter().enumerate() {
                if id as usize >= vocab_size {
                    return Err(SettingsError::new(
                        Field::StopTokenIds { index },
                        format!("token id {id} is outside the vocabulary (0..{vocab_size})"),
                    ));
                }
            }
        }
        self.end_tokens.check(vocab_size)?;
        self.sampling.validate(vocab_size)
    }
}

/// Where drafts come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drafter {
    /// The tokens that followed the last `max`..=`min` tokens where they last occurred before, in the
    /// prompt or the output (prompt lookup: [`speculate`](crate::pipeline::speculate)).
    Ngram { max: usize, min: usize },
    /// A replay's own next tokens: every step writes `draft_tokens + 1` tokens (`--tokens-per-step`).
    Script,
}

/// Speculative decoding's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Speculation {
    pub drafter: Drafter,
    /// Tokens drafted per step: a step feeds `draft_tokens + 1` positions.
    pub draft_tokens: usize,
}

impl Speculation {
    /// Prompt lookup's defaults: drafts of 5 tokens (a step of 6 positions: one pass of the kernels that
    /// round as one row does), looked up by the last 3, 2 or 1 tokens.
    pub const DRAFT_TOKENS: usize = 5;
    pub const NGRAM_MAX: usize = 3;
    pub const NGRAM_MIN: usize = 1;

    pub fn ngram() -> Self {
        Self {
            drafter: Drafter::Ngram {
                max: Self::NGRAM_MAX,
                min: Self::NGRAM_MIN,
            },
            draft_tokens: Self::DRAFT_TOKENS,
        }
    }

    /// Steps of `k` tokens on a replay.
    pub fn tokens_per_step(k: usize) -> Self {
        Self {
            drafter: Drafter::Script,
            draft_tokens: k.saturating_sub(1),
        }
    }

    /// The settings' own errors, named by their command-line flags.
    pub fn check(&self) -> Result<(), Error> {
        let bad = |field: &str, message: String| {
            Err(Error::Invalid {
                field: field.into(),
                message,
            })
        };
        match self.drafter {
            Drafter::Ngram { max, min } if min == 0 || max < min => bad(
                "--ngram-min",
                format!(
                    "{min} with --ngram-max {max}: the shortest n-gram is at least 1 and at most the longest"
                ),
            ),
            Drafter::Ngram { .. } if self.draft_tokens == 0 => bad(
                "--draft-tokens",
                "must be at least 1 (the tokens drafted per step)".into(),
            ),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VOCAB: usize = 100;

    fn field(user: UserSettings) -> Field {
        user.validate(Some(VOCAB)).unwrap_err().field
    }

    #[test]
    fn the_defaults_validate_to_the_default_params() {
        let s = UserSettings::default().validate(Some(VOCAB)).unwrap();
        let d = GenerateParams::default();
        assert_eq!(s.format, PromptFormat::Raw);
        assert_eq!(
            (s.params.max_tokens, s.params.min_tokens, &s.params.sampling),
            (d.max_tokens, d.min_tokens, &d.sampling)
        );
        assert!(s.params.stops.is_empty());
    }

    #[test]
    fn format_options_and_the_natural_stop_are_applied() {
        let s = UserSettings {
            format: "transcript".into(),
            user_prefix: Some("Q:".into()),
            natural_stop: true,
            stops: vec!["###".into()],
            ..UserSettings::default()
        }
        .validate(Some(VOCAB))
        .unwrap();
        assert_eq!(
            s.format,
            PromptFormat::Transcript {
                user: "Q:".into(),
                ai: "AI:".into()
            }
        );
        assert_eq!(s.params.stops.stops(), ["###", "\nQ:"]);
    }

    #[test]
    fn every_error_carries_its_typed_field() {
        let d = UserSettings::default;
        let with_sampling = |f: fn(&mut SamplingParams)| {
            let mut u = d();
            f(&mut u.sampling);
            u
        };
        let cases = [
            (
                UserSettings {
                    format: "xml".into(),
                    ..d()
                },
                Field::Format,
            ),
            (
                UserSettings {
                    stops: vec!["a".into(), "".into()],
                    ..d()
                },
                Field::Stop { index: 1 },
            ),
            (
                UserSettings {
                    natural_stop: true,
                    ..d()
                },
                Field::NaturalStop,
            ),
            (
                UserSettings {
                    stop_token_ids: vec![1, 100],
                    ..d()
                },
                Field::StopTokenIds { index: 1 },
            ),
            (
                UserSettings {
                    max_tokens: 0,
                    min_tokens: 0,
                    ..d()
                },
                Field::MaxTokens,
            ),
            (
                UserSettings {
                    min_tokens: 9,
                    max_tokens: 8,
                    ..d()
                },
                Field::MinTokens,
            ),
            (
                UserSettings {
                    repetition: Some(RepetitionStop { ngram: 0, count: 2 }),
                    ..d()
                },
                Field::RepetitionNgram,
            ),
            (
                UserSettings {
                    repetition: Some(RepetitionStop { ngram: 3, count: 1 }),
                    ..d()
                },
                Field::RepetitionCount,
            ),
            (with_sampling(|s| s.temperature = -1.0), Field::Temperature),
            (with_sampling(|s| s.top_p = 0.0), Field::TopP),
            (with_sampling(|s| s.min_p = 2.0), Field::MinP),
            (
                with_sampling(|s| s.repetition_penalty = 0.0),
                Field::RepetitionPenalty,
            ),
            (
                with_sampling(|s| s.frequency_penalty = f32::NAN),
                Field::FrequencyPenalty,
            ),
            (
                with_sampling(|s| s.presence_penalty = f32::INFINITY),
                Field::PresencePenalty,
            ),
            (
                with_sampling(|s| s.logit_bias = vec![(3, 1.0), (100, 1.0)]),
                Field::LogitBias { id: 100 },
            ),
            (
                with_sampling(|s| s.logit_bias = vec![(3, f32::NAN)]),
                Field::LogitBias { id: 3 },
            ),
            (
                UserSettings {
                    end_tokens: EndTokenChoice {
                        replace: Some(vec![1, 100]),
                        ..EndTokenChoice::default()
                    },
                    ..d()
                },
                Field::EndTokens {
                    list: EndList::Replace,
                    index: 1,
                },
            ),
            (
                UserSettings {
                    end_tokens: EndTokenChoice {
                        add: vec![100],
                        ..EndTokenChoice::default()
                    },
                    ..d()
                },
                Field::EndTokens {
                    list: EndList::Add,
                    index: 0,
                },
            ),
            (
                UserSettings {
                    end_tokens: EndTokenChoice {
                        add: vec![7],
                        remove: vec![3, 7],
                        ..EndTokenChoice::default()
                    },
                    ..d()
                },
                Field::EndTokens {
                    list: EndList::Remove,
                    index: 1,
                },
            ),
        ];
        for (user, want) in cases {
            assert_eq!(field(user), want);
        }
    }

    /// The last-line check in `generate()` refuses what the one validation refuses, with the same field:
    /// settings built by hand cannot slip past it.
    #[test]
    fn the_last_line_check_agrees_with_the_one_validation() {
        let ok = UserSettings::default()
            .validate(Some(VOCAB))
            .unwrap()
            .params;
        let cases: [(GenerateParams, Field); 4] = [
            (
                GenerateParams {
                    max_tokens: 0,
                    ..ok.clone()
                },
                Field::MaxTokens,
            ),
            (
                GenerateParams {
                    stop_token_ids: vec![100],
                    ..ok.clone()
                },
                Field::StopTokenIds { index: 0 },
            ),
            (
                GenerateParams {
                    repetition: Some(RepetitionStop { ngram: 2, count: 0 }),
                    ..ok.clone()
                },
                Field::RepetitionCount,
            ),
            (
                GenerateParams {
                    sampling: SamplingParams {
                        top_k: 0,
                        top_p: 1.5,
                        ..SamplingParams::default()
                    },
                    ..ok.clone()
                },
                Field::TopP,
            ),
        ];
        for (params, want) in cases {
            assert_eq!(params.validate(VOCAB).unwrap_err().field, want);
        }
        // Without a vocabulary, ids wait for generate(); with one, they are checked.
        let ids = UserSettings {
            stop_token_ids: vec![100],
            ..UserSettings::default()
        };
        assert!(ids.validate(None).is_ok());
        assert_eq!(field(ids), Field::StopTokenIds { index: 0 });
    }

    #[test]
    fn end_token_choice_replaces_then_adds_then_removes() {
        let model = BTreeSet::from([0, 2]);
        assert_eq!(EndTokenChoice::default().apply(&model), model);
        let c = EndTokenChoice {
            replace: Some(vec![5, 6]),
            add: vec![9],
            remove: vec![6],
        };
        assert_eq!(c.apply(&model), BTreeSet::from([5, 9]));
        let none = EndTokenChoice {
            replace: Some(vec![]),
            ..EndTokenChoice::default()
        };
        assert!(none.apply(&model).is_empty());
        assert_eq!(
            Field::EndTokens {
                list: EndList::Remove,
                index: 2
            }
            .to_string(),
            "end_tokens.remove[2]"
        );
    }

    #[test]
    fn repetition_stop_fires_on_the_counted_occurrence() {
        let r = RepetitionStop { ngram: 2, count: 2 };
        assert_eq!(r.check(&[1, 2, 3]), None);
        assert_eq!(r.check(&[1, 2, 3, 1, 2]), Some(0));
        let r3 = RepetitionStop { ngram: 2, count: 3 };
        assert_eq!(r3.check(&[1, 2, 3, 1, 2]), None);
        assert_eq!(r3.check(&[1, 2, 3, 1, 2, 1, 2]), Some(0));
        // Overlapping occurrences count: "7 7 7" holds "7 7" twice.
        assert_eq!(r.check(&[7, 7, 7]), Some(0));
    }
}

/// Where a stop is armed: in the answer, in the reasoning, or everywhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Scope {
    /// After the reasoning's close marker (and wherever no reasoning was opened).
    #[default]
    Answer,
    /// Between the open and the close marker.
    Reasoning,
    /// Everywhere: the text is scanned as if it had no markers.
    All,
}

impl Scope {
    pub const NAMES: [&str; 3] = ["answer", "reasoning", "all"];

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "answer" => Some(Self::Answer),
            "reasoning" => Some(Self::Reasoning),
            "all" => Some(Self::All),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Answer => "answer",
            Self::Reasoning => "reasoning",
            Self::All => "all",
        }
    }

    /// Whether a stop of this scope is armed in the reasoning (`true`) or the answer.
    pub fn covers(self, reasoning: bool) -> bool {
        match self {
            Self::All => true,
            Self::Answer => !reasoning,
            Self::Reasoning => reasoning,
        }
    }
}

/// What an end token does when the model chooses it inside the reasoning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EndInReasoning {
    /// It ends the generation, the answer never written (the bug, as most servers have it).
    #[default]
    Allow,
    /// The sampler may not choose it until the reasoning is closed (kekzl/imp PR #1990's answer).
    Mask,
    /// The close marker is written in its place and the generation goes on into the answer
    /// (tetherto/qvac PR #3389's answer); the close marker must be one token.
    Close,
    /// Allowed inside the reasoning, but the sampler may not choose it for this many tokens after the close
    /// marker, so the answer is not empty (sglang PR #36193's answer, with 1).
    BanAfterClose(usize),
}

impl EndInReasoning {
    /// The policies as they are written (`ban-after-close` alone is `ban-after-close:1`).
    pub const NAMES: [&str; 4] = ["allow", "mask", "close", "ban-after-close:N"];

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "allow" => Some(Self::Allow),
            "mask" => Some(Self::Mask),
            "close" => Some(Self::Close),
            "ban-after-close" => Some(Self::BanAfterClose(1)),
            _ => s
                .strip_prefix("ban-after-close:")
                .and_then(|n| n.parse().ok())
                .filter(|&n| n > 0)
                .map(Self::BanAfterClose),
        }
    }

    /// [`Self::parse`], with an error that lists the policies.
    pub fn parse_or_explain(s: &str) -> Result<Self, String> {
        Self::parse(s).ok_or_else(|| {
            format!(
                "{s:?} is not a policy: allow, mask, close, or ban-after-close:N (N tokens, at least 1)"
            )
        })
    }

    pub fn name(self) -> String {
        match self {
            Self::Allow => "allow".into(),
            Self::Mask => "mask".into(),
            Self::Close => "close".into(),
            Self::BanAfterClose(n) => format!("ban-after-close:{n}"),
        }
    }

    /// Whether the policy acts on the sampler's choice: a replay, which samples nothing, cannot take it.
    pub fn needs_sampler(self) -> bool {
        self != Self::Allow
    }
}

/// The reasoning part of an output: the text between an open and a close marker (Qwen3's `<think>` and
/// `</think>`, or any text a model writes), where stop strings and stop token ids of another
/// [`Scope`] are not armed, and where an end token is handled by [`EndInReasoning`].
#[derive(Debug, Clone)]
pub struct Reasoning {
    pub open: String,
    pub close: String,
    /// The two markers, scanned on the generated bytes as stops are.
    pub markers: StopSet,
    /// Where the stop strings and stop token ids are armed.
    pub stop_scope: Scope,
    pub end_in_reasoning: EndInReasoning,
    /// The generation begins inside the reasoning: the prompt's last marker is the open one (a template
    /// that writes `<think>` for the model).
    pub starts_inside: bool,
    /// The reasoning budget: after this many tokens inside the reasoning, the close marker is written
    /// (`--max-reasoning-tokens`); the close marker must be one token.
    pub max_tokens: Option<usize>,
}

impl Reasoning {
    /// Markers `open` and `close`, stops armed in the answer, end tokens allowed everywhere.
    pub fn new(open: &str, close: &str) -> Result<Self, SettingsError> {
        if open.is_empty() || close.is_empty() || open == close {
            return Err(SettingsError::new(
                Field::ReasoningMarkers,
                format!(
                    "{open:?} and {close:?}: give two different, non-empty markers (OPEN,CLOSE: <think>,</think>)"
                ),
            ));
        }
        let markers = StopSet::new([open, close])
            .map_err(|e| SettingsError::new(Field::ReasoningMarkers, e.to_string()))?;
        Ok(Self {
            open: open.into(),
            close: close.into(),
            markers,
            stop_scope: Scope::Answer,
            end_in_reasoning: EndInReasoning::Allow,
            starts_inside: false,
            max_tokens: None,
        })
    }

    /// The markers a front end was given: `"OPEN,CLOSE"`, `"none"` (no reasoning), or absent (`own`, the
    /// vocabulary's: [`Vocab::reasoning_markers`](crate::pipeline::tokenizer::Vocab::reasoning_markers)).
    pub fn from_markers(
        given: Option<&str>,
        own: Option<(&str, &str)>,
    ) -> Result<Option<Self>, SettingsError> {
        let (open, close) = match given {
            Some("none") => return Ok(None),
            Some(g) => g.split_once(',').ok_or_else(|| {
                SettingsError::new(
                    Field::ReasoningMarkers,
                    format!("{g:?}: give OPEN,CLOSE (e.g. <think>,</think>) or none"),
                )
            })?,
            None => match own {
                Some(m) => m,
                None => return Ok(None),
            },
        };
        Self::new(open, close).map(Some)
    }

    /// Whether a prompt whose text is `prompt` leaves the generation inside the reasoning: its last open
    /// marker comes after its last close marker.
    pub fn opened_by(&self, prompt: &str) -> bool {
        match (prompt.rfind(&self.open), prompt.rfind(&self.close)) {
            (Some(o), Some(c)) => o > c,
            (Some(_), None) => true,
            _ => false,
        }
    }
}
