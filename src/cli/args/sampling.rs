//! The "Sampling" flags of the generating commands, and how they become [`SamplingParams`].

use clap::Args;

use stoplab::pipeline::sampling::SamplingParams;

#[derive(Args, Debug)]
pub struct SamplingArgs {
    /// 0 is greedy (the default: reproducible).
    #[arg(
        allow_negative_numbers = true,
        long,
        short,
        default_value_t = 0.0,
        help_heading = "Sampling"
    )]
    temperature: f32,
    /// Keep only the k most likely tokens (0: off).
    #[arg(long, default_value_t = 0, help_heading = "Sampling")]
    top_k: usize,
    /// Keep the smallest set of tokens whose probability adds up to p (1: off).
    #[arg(
        allow_negative_numbers = true,
        long,
        default_value_t = 1.0,
        help_heading = "Sampling"
    )]
    top_p: f32,
    /// Drop tokens less likely than min-p times the most likely one (0: off).
    #[arg(
        allow_negative_numbers = true,
        long,
        default_value_t = 0.0,
        help_heading = "Sampling"
    )]
    min_p: f32,
    /// Penalise every token already in prompt or output (1: off; 1.1 is typical).
    #[arg(
        allow_negative_numbers = true,
        long,
        default_value_t = 1.0,
        help_heading = "Sampling"
    )]
    repetition_penalty: f32,
    /// Subtract this from a token's logit per earlier occurrence in the output.
    #[arg(
        long,
        default_value_t = 0.0,
        allow_negative_numbers = true,
        help_heading = "Sampling"
    )]
    frequency_penalty: f32,
    /// Subtract this from a token's logit if it occurred in the output.
    #[arg(
        long,
        default_value_t = 0.0,
        allow_negative_numbers = true,
        help_heading = "Sampling"
    )]
    presence_penalty: f32,
    /// Add BIAS to token ID's logit (repeatable); -inf bans it. `--logit-bias 2=-inf` keeps SmolLM2 from
    /// ending its turn.
    #[arg(long, value_name = "ID=BIAS", value_parser = parse_bias, allow_hyphen_values = true, help_heading = "Sampling")]
    logit_bias: Vec<(u32, f32)>,
    /// Random seed for sampling.
    #[arg(long, default_value_t = 0, help_heading = "Sampling")]
    seed: u64,
}

impl SamplingArgs {
    /// The sampling these flags ask for, unchecked (the settings' one validation checks it).
    pub fn params(&self) -> SamplingParams {
        SamplingParams {
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            min_p: self.min_p,
            repetition_penalty: self.repetition_penalty,
            frequency_penalty: self.frequency_penalty,
            presence_penalty: self.presence_penalty,
            logit_bias: self.logit_bias.clone(),
            seed: self.seed,
        }
    }
}

/// `--logit-bias ID=BIAS`, where BIAS may be `-inf`.
fn parse_bias(s: &str) -> Result<(u32, f32), String> {
    let (id, bias) = s.split_once('=').ok_or("expected ID=BIAS, e.g. 2=-inf")?;
    let id = id
        .trim()
        .parse::<u32>()
        .map_err(|_| format!("token id {id:?} is not a number"))?;
    let bias = match bias.trim() {
        "-inf" | "-infinity" => f32::NEG_INFINITY,
        b => b
            .parse::<f32>()
            .map_err(|_| format!("bias {b:?} is not a number or -inf"))?,
    };
    if bias.is_nan() || bias == f32::INFINITY {
        return Err(format!("bias {bias} must be a finite number or -inf"));
    }
    Ok((id, bias))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bias_parses_minus_infinity() {
        assert_eq!(parse_bias("2=-inf").unwrap(), (2, f32::NEG_INFINITY));
        assert_eq!(parse_bias("17=1.5").unwrap(), (17, 1.5));
        assert!(parse_bias("x=1").is_err());
        assert!(parse_bias("2").is_err());
    }
}
