//! `stoplab bench overhead`: the matcher's share of real decoding, on the local model
//! ([`stoplab::lab::bench::overhead`]) or on a server ([`stoplab::probe::overhead`]).

use std::path::PathBuf;

use clap::Args;

use stoplab::LoadedModel;
use stoplab::lab::bench::overhead::{self, NOTE, Overhead, header};

use crate::cli::args::endpoint;
use crate::cli::args::model::{MODEL, ModelArg, own_help};
use crate::cli::args::values::unescape;
use crate::cli::output::{Failure, emit_json, pretty, table};

#[derive(Args)]
#[command(mut_arg(
    MODEL,
    own_help(
        "A GGUF file or model name (default: the default model); with --endpoint, the request's `model`"
    )
))]
pub struct OverheadArgs {
    /// Numbers of never-matching stop strings, one generation each.
    #[arg(long, value_delimiter = ',', default_value = "0,4,64,1024")]
    stops: Vec<usize>,
    /// Tokens to generate (end tokens are ignored, so every generation has exactly this many).
    #[arg(long, short = 'n', default_value_t = 256)]
    tokens: usize,
    /// The user message (chat format, greedy decoding).
    #[arg(
        long,
        default_value = "Write a long story about a lighthouse keeper and the sea."
    )]
    prompt: String,
    /// Print the measurements as one JSON document on stdout (the table goes to stderr).
    #[arg(long)]
    json: bool,
    /// Write the measurements as JSON to FILE (the table still prints).
    #[arg(long, value_name = "FILE")]
    json_out: Option<PathBuf>,
    #[command(flatten)]
    model: ModelArg,
    /// Measure an OpenAI-compatible server instead of the local model: the same greedy request with each
    /// number of stops, alternated round by round (its own timings where it reports them, else wall time).
    #[arg(long, value_name = "URL")]
    endpoint: Option<String>,
    /// With --endpoint: sent as `Authorization: Bearer KEY`.
    #[arg(
        long,
        env = "OPENAI_API_KEY",
        hide_env_values = true,
        requires = "endpoint"
    )]
    api_key: Option<String>,
    /// With --endpoint: rounds over the stop counts.
    #[arg(long, default_value_t = 5, requires = "endpoint")]
    rounds: usize,
    #[command(flatten)]
    patience: endpoint::Patience,
}

pub fn run(args: OverheadArgs) -> Result<(), Failure> {
    if args.tokens < 2 {
        return Err(Failure::usage("--tokens: must be at least 2"));
    }
    if let Some(url) = &args.endpoint {
        return endpoint(url, &args);
    }
    let mut engine = LoadedModel::load(&args.model.options(false))?;
    let bench = Overhead::prepare(&mut engine, &unescape(&args.prompt))?;
    table(args.json, &format!("{}\n", header(args.tokens)))?;
    let max_stops = args.stops.iter().copied().max().unwrap_or(0);
    let mut baseline = bench.baseline(args.tokens, max_stops)?;
    let mut rows = Vec::new();
    for &n in &args.stops {
        let row = baseline.row(n)?;
        table(args.json, &format!("{}\n", row.line()))?;
        rows.push(row);
    }
    table(args.json, &format!("{NOTE}\n"))?;
    if args.json || args.json_out.is_some() {
        let doc = overhead::to_json(&engine.path, args.tokens, &args.prompt, &rows);
        emit_json(&doc, args.json, args.json_out.as_deref())?;
    }
    Ok(())
}

/// `--endpoint URL`: the same request with 0..N never-matching stops on a server.
fn endpoint(url: &str, args: &OverheadArgs) -> Result<(), Failure> {
    if args.rounds == 0 {
        return Err(Failure::usage("--rounds: must be at least 1"));
    }
    let client = endpoint::client(url, args.api_key.clone(), args.model.name(), &args.patience)?;
    let rows = stoplab::probe::overhead::measure(
        &client,
        &args.stops,
        args.rounds,
        args.tokens,
        |r, n| eprint!("\rround {}/{}, {n} stops   ", r + 1, args.rounds),
    )?;
    eprintln!();
    let json = stoplab::probe::overhead::to_json(&client, args.tokens, args.rounds, &rows);
    let text = stoplab::probe::overhead::table(&rows, args.tokens, args.rounds);
    if let Some(path) = &args.json_out {
        std::fs::write(path, pretty(&json))
            .map_err(|e| Failure::usage(format!("--json-out {}: {e}", path.display())))?;
    }
    if args.json {
        eprint!("{text}");
        say!("{}", pretty(&json));
    } else {
        say!("{}", text.trim_end());
    }
    Ok(())
}
