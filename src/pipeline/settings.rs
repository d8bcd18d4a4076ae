//! Generation settings: everything that decides how a generation runs and ends, checked once.

use crate::Error;
use crate::sampling::SamplingParams;
use crate::stop::StopSet;

/// Everything that decides how a generation runs and ends.
#[derive(Debug, Clone)]
pub struct GenerateParams {
    pub sampling: SamplingParams,
    pub stops: StopSet,
    pub stop_token_ids: Vec<u32>,
    /// Keep the matched stop string (or stop token's text) at the end of the output.
    pub include_stop: bool,
    /// Do not end on the model's end tokens; they are generated and shown like any other token.
    pub ignore_eos: bool,
    pub min_tokens: usize,
    pub max_tokens: usize,
    /// Stop when the output starts repeating itself (off by default).
    pub repetition: Option<RepetitionStop>,
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
            ignore_eos: false,
            min_tokens: 0,
            max_tokens: 256,
            repetition: None,
        }
    }
}

impl GenerateParams {
    /// Checks the settings against a vocabulary; errors name the field.
    pub fn validate(&self, vocab_size: usize) -> Result<(), Error> {
        if self.max_tokens == 0 {
            return Err(Error::Invalid {
                field: "max_tokens".into(),
                message: "must be at least 1".into(),
            });
        }
        if let Some(r) = &self.repetition
            && (r.ngram == 0 || r.count < 2)
        {
            return Err(Error::Invalid {
                field: "repetition".into(),
                message: format!(
                    "ngram {} and count {}: ngram must be at least 1 and count at least 2",
                    r.ngram, r.count
                ),
            });
        }
        for &id in &self.stop_token_ids {
            if id as usize >= vocab_size {
                return Err(Error::Invalid {
                    field: "stop_token_ids".into(),
                    message: format!("token id {id} is outside the vocabulary (0..{vocab_size})"),
                });
            }
        }
        self.sampling.validate(vocab_size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
