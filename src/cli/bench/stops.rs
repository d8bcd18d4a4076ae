//! `stoplab bench stops`: the strategies compared ([`stoplab::lab::bench::stops`]).

use std::path::PathBuf;
use std::time::Instant;

use clap::Args;

use stoplab::LoadedModel;
use stoplab::lab::bench::stops::{self, StopsOptions};

use crate::cli::args::model::{MODEL, ModelArg, own_help};
use crate::cli::output::{Failure, emit_json, table, write_file};

#[derive(Args)]
#[command(mut_arg(
    MODEL,
    own_help(
        "A GGUF file or model name whose tokenizer makes the token streams (default: the default model)"
    )
))]
pub struct StopsArgs {
    /// Numbers of stop strings, one column each.
    #[arg(long, value_delimiter = ',', default_value = "1,4,16,64,256,1024")]
    stops: Vec<usize>,
    /// Generation length (tokens) of the stops table.
    #[arg(long, default_value_t = 1024)]
    tokens: usize,
    /// Generation lengths (tokens) of the second table, measured at --length-stops stops.
    #[arg(long, value_delimiter = ',', default_value = "64,1024,8192")]
    lengths: Vec<usize>,
    /// Number of stops of the lengths table.
    #[arg(long, default_value_t = 4)]
    length_stops: usize,
    /// Measuring time per cell, in milliseconds (the fastest of 5 rounds counts).
    #[arg(long, default_value_t = 200)]
    ms: u64,
    /// A cell whose first pass over the stream takes longer than this many milliseconds is skipped (full
    /// rescan grows with stops × length²).
    #[arg(long, default_value_t = 500)]
    max_pass_ms: u64,
    /// Print every measurement as one JSON document on stdout (the tables go to stderr).
    #[arg(long)]
    json: bool,
    /// Write every measurement as JSON to FILE (the tables still print).
    #[arg(long, value_name = "FILE")]
    json_out: Option<PathBuf>,
    /// Write an SVG chart of ns/token against the number of stops, one line per strategy.
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<PathBuf>,
    #[command(flatten)]
    model: ModelArg,
}

pub fn run(args: StopsArgs) -> Result<(), Failure> {
    if args.stops.is_empty() || args.stops.contains(&0) {
        return Err(Failure::usage(
            "--stops: give one or more numbers of stops, each at least 1",
        ));
    }
    if args.tokens < 8 || args.lengths.iter().any(|&n| n < 8) {
        return Err(Failure::usage(
            "--tokens, --lengths: generations must be at least 8 tokens",
        ));
    }
    if args.length_stops == 0 {
        return Err(Failure::usage("--length-stops: must be at least 1"));
    }
    let started = Instant::now();
    let engine = LoadedModel::load(&args.model.options(true))?;
    let report = stops::run(
        &engine.vocab,
        &StopsOptions {
            stops: args.stops,
            tokens: args.tokens,
            lengths: args.lengths,
            length_stops: args.length_stops,
            ms: args.ms,
            max_pass_ms: args.max_pass_ms,
        },
    )?;
    table(args.json, &report.tables())?;
    eprintln!("[{:.1} s]", started.elapsed().as_secs_f64());
    if args.json || args.json_out.is_some() {
        emit_json(
            &report.to_json(&engine.path),
            args.json,
            args.json_out.as_deref(),
        )?;
    }
    if let Some(path) = &args.plot {
        write_file(path, &report.chart())?;
    }
    Ok(())
}
