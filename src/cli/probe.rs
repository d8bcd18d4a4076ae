//! `stoplab probe URL`: judge a server's stop handling against stoplab's reference.

use std::io::Write;
use std::path::PathBuf;

use clap::{Arg, Args};

use stoplab::probe::report::{self, Tally};
use stoplab::probe::{self, Api, ProbeOptions, ProbeResult};

use crate::cli::args::endpoint;
use crate::cli::args::model::{MODEL, ModelArg, own_help};
use crate::cli::output::{Failure, pretty};

pub const EXAMPLES: &str = "Examples:
  stoplab serve &  stoplab probe http://127.0.0.1:8080        # stoplab's own server
  stoplab probe http://127.0.0.1:8081 --only held-at-length    # one probe (see --list)
  stoplab probe https://api.example.com/v1 --model NAME --api-key KEY --report out/
Exit status: 0 when every supported probe passed, 1 when one failed, 2 on a usage error.";

#[derive(Args, Debug)]
#[command(mut_arg(MODEL, remote_model))]
pub struct ProbeArgs {
    /// The server: http://HOST:PORT or https://..., with or without /v1.
    #[arg(required_unless_present = "list")]
    url: Option<String>,
    #[command(flatten)]
    model: ModelArg,
    /// Sent as `Authorization: Bearer KEY`.
    #[arg(long, env = "OPENAI_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Run only these probes (comma-separated or repeated; see --list).
    #[arg(long, value_delimiter = ',', value_name = "PROBE")]
    only: Vec<String>,
    /// The endpoints to probe.
    #[arg(long, value_enum, default_value = "both")]
    api: ApiChoice,
    /// Tokens of greedy output fetched first; no request asks for more (keep it small on a hosted API).
    #[arg(long, default_value_t = 48)]
    max_tokens: usize,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 2)]
    concurrency: usize,
    #[command(flatten)]
    patience: endpoint::Patience,
    /// Use the server's greedy output even where it takes a grammar (llama.cpp's `grammar`) that could fix
    /// the text.
    #[arg(long)]
    no_grammar: bool,
    /// Print the whole run as JSON on stdout instead of the table.
    #[arg(long)]
    json: bool,
    /// Also write probe.md and probe.json into DIR.
    #[arg(long, value_name = "DIR")]
    report: Option<PathBuf>,
    /// Fields sent with every request, a JSON object (as the OpenAI clients' extra_body): a server's own
    /// switches, e.g. '{"reasoning_markers": "<think>,</think>"}' for stoplab serving a model without
    /// reasoning markers of its own. The probes' own fields win.
    #[arg(long, value_name = "JSON")]
    extra_body: Option<String>,
    /// List the probes and what each checks.
    #[arg(long)]
    list: bool,
}

/// Here `--model` is only the requests' `model` field, so neither `-m` nor `STOPLAB_MODEL` (a local model)
/// sets it.
fn remote_model(arg: Arg) -> Arg {
    own_help("The `model` field of each request")(arg)
        .short(None)
        .env(None)
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum ApiChoice {
    Completions,
    Chat,
    Both,
}

pub fn run(args: ProbeArgs) -> Result<(), Failure> {
    if args.list {
        for p in probe::PROBES {
            println!("{:<22} {}", p.name, p.what);
        }
        return Ok(());
    }
    let url = args.url.clone().unwrap_or_default();
    if args.max_tokens == 0 {
        return Err(Failure::usage("--max-tokens: must be at least 1"));
    }
    let client = endpoint::client(
        &url,
        args.api_key.clone(),
        args.model.name(),
        &args.patience,
    )?;
    let opts = ProbeOptions {
        only: args.only.clone(),
        apis: match args.api {
            ApiChoice::Completions => vec![Api::Completions],
            ApiChoice::Chat => vec![Api::Chat],
            ApiChoice::Both => vec![Api::Completions, Api::Chat],
        },
        max_tokens: args.max_tokens,
        concurrency: args.concurrency.max(1),
        grammar: !args.no_grammar,
        extra_body: match args.extra_body.as_deref() {
            None => serde_json::json!({}),
            Some(s) => match serde_json::from_str::<serde_json::Value>(s) {
                Ok(v @ serde_json::Value::Object(_)) => v,
                Ok(_) => {
                    return Err(Failure::usage(
                        "--extra-body: give a JSON object, {\"field\": value}",
                    ));
                }
                Err(e) => return Err(Failure::usage(format!("--extra-body: not JSON: {e}"))),
            },
        },
    };
    probe::check_only(&opts.only).map_err(|e| Failure::usage(e.to_string()))?;
    eprintln!(
        "stoplab: probing {} with at most {} requests of at most {} tokens each",
        client.base(),
        probe::planned_requests(&opts),
        args.max_tokens
    );
    let json = args.json;
    let done = std::sync::atomic::AtomicUsize::new(0);
    let progress = |r: &ProbeResult| {
        let n = done.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        let _ = writeln!(
            std::io::stderr().lock(),
            "[{n}] {} {}: {}",
            r.probe,
            r.api.name(),
            r.verdict.name()
        );
    };
    let results = probe::run(&client, &opts, &progress).map_err(|e| match e {
        stoplab::Error::Invalid { field, message } if field == "--only" => {
            Failure::usage(format!("--only: {message}"))
        }
        stoplab::Error::Invalid { field, message } => Failure::other(format!("{field}: {message}")),
        e => Failure::from(e),
    })?;
    let requests = client.sent();
    let tally = Tally::of(&results);
    if json {
        println!(
            "{}",
            pretty(&report::to_json(client.base(), requests, &results))
        );
    } else {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{}", report::header());
        for r in &results {
            let _ = writeln!(out, "{}", report::row(r));
        }
        let _ = writeln!(out, "\n{} ({requests} requests)", tally.line());
    }
    if let Some(dir) = &args.report {
        let write = |name: &str, text: String| {
            std::fs::create_dir_all(dir)
                .and_then(|_| std::fs::write(dir.join(name), text))
                .map_err(|e| Failure::from(stoplab::Error::Output(e)))
        };
        write(
            "probe.md",
            report::markdown(client.base(), requests, &results),
        )?;
        write(
            "probe.json",
            pretty(&report::to_json(client.base(), requests, &results)),
        )?;
        eprintln!("stoplab: wrote {}", dir.join("probe.md").display());
    }
    if tally.fail > 0 {
        return Err(Failure::other(format!("{} probe(s) failed", tally.fail)));
    }
    Ok(())
}
