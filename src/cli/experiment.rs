//! `stoplab experiment`: the seed's techniques as scenarios, run and measured.

use std::path::PathBuf;
use std::time::Instant;

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use std::time::Duration;

use stoplab::experiment::{self, RunOptions, Scenario};
use stoplab::pipeline::settings::UserSettings;
use stoplab::probe::client::{Client, ClientOptions};
use stoplab::{Engine, RepetitionStop};

use super::Failure;

pub const EXAMPLES: &str = "Examples:
  stoplab experiment --quick                # each shipped scenario once, few tokens (< 1 min)
  stoplab experiment --report out/          # out/report.md, out/wasted.svg, out/report.json
  stoplab experiment --only 5a-broken-end-token --repeat-stop 8
  stoplab experiment --scenario my.toml --json   # your own (see --list, scenarios/*.toml)
  stoplab experiment --endpoint http://127.0.0.1:8081 --runs 100 --concurrency 8   # on a server

Wasted tokens are those generated after the answer was complete (the scenario's done.contains text was written).";

#[derive(Args, Debug)]
pub struct ExperimentArgs {
    /// Each scenario's quick_runs (1) and quick_max_tokens (24): a smoke test.
    #[arg(long)]
    quick: bool,
    /// Run these scenario files instead of the shipped ones (`--scenario my/*.toml`).
    #[arg(long, value_name = "FILE", num_args = 1..)]
    scenario: Vec<PathBuf>,
    /// Run only the scenarios with this name (repeatable).
    #[arg(long, value_name = "NAME")]
    only: Vec<String>,
    /// List the scenarios and exit.
    #[arg(long)]
    list: bool,
    /// Print the results as JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Write report.md, wasted.svg and report.json into DIR.
    #[arg(long, value_name = "DIR")]
    report: Option<PathBuf>,
    /// Use a repetition stop of N tokens in every scenario.
    #[arg(long, value_name = "N")]
    repeat_stop: Option<usize>,
    /// With --repeat-stop: occurrences of the span that end the generation.
    #[arg(long, value_name = "K", default_value_t = 2, requires = "repeat_stop")]
    repeat_stop_count: usize,
    /// Runs per scenario instead of each scenario's own count.
    #[arg(long, value_name = "N")]
    runs: Option<usize>,
    /// Run on an OpenAI-compatible server instead of the local model: chat scenarios through
    /// /v1/chat/completions (the server's template), the others through /v1/completions. --model is then
    /// the request's `model` field.
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
    /// With --endpoint: runs in flight at once.
    #[arg(long, default_value_t = 4, requires = "endpoint")]
    concurrency: usize,
    /// On the local model: runs decoded together (continuous batching: one pass over the weights per step
    /// for all of them, runs of every scenario side by side; each run's text is what it would be alone).
    /// 1 runs them one after another.
    #[arg(long, value_name = "N", default_value_t = PARALLEL, conflicts_with = "endpoint",
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=256))]
    parallel: usize,
    #[command(flatten)]
    model: super::ModelArgs,
}

/// `--parallel`'s default: on 2 cores the default run's aggregate decode speed is best about there
/// (BENCHMARKS.md, "Continuous batching").
const PARALLEL: usize = 16;

pub fn run(args: ExperimentArgs) -> Result<(), Failure> {
    let bad_scenario = |e: experiment::ScenarioError| Failure::usage(e.to_string());
    let mut scenarios: Vec<Scenario> = if args.scenario.is_empty() {
        experiment::shipped().map_err(bad_scenario)?
    } else {
        args.scenario
            .iter()
            .map(|p| Scenario::load(p))
            .collect::<Result<_, _>>()
            .map_err(bad_scenario)?
    };
    if !args.only.is_empty() {
        if let Some(missing) = args
            .only
            .iter()
            .find(|n| !scenarios.iter().any(|s| &s.name == *n))
        {
            let names: Vec<&str> = scenarios.iter().map(|s| s.name.as_str()).collect();
            return Err(Failure::usage(format!(
                "--only: no scenario named {missing:?}; there are {}",
                names.join(", ")
            )));
        }
        scenarios.retain(|s| args.only.contains(&s.name));
    }
    // The override is checked by the one validation, so its errors name these flags.
    let repetition = args.repeat_stop.map(|ngram| RepetitionStop {
        ngram,
        count: args.repeat_stop_count,
    });
    UserSettings {
        repetition,
        ..UserSettings::default()
    }
    .validate(None)
    .map_err(Failure::from_settings)?;
    if args.runs == Some(0) {
        return Err(Failure::usage("--runs: must be at least 1"));
    }
    let opts = RunOptions {
        quick: args.quick,
        repetition,
        runs: args.runs,
    };
    if args.list {
        for s in &scenarios {
            say!(
                "{:<40} {:>2} runs  {}  ({})",
                s.name,
                s.run_count(&opts),
                s.title,
                s.file
            );
        }
        return Ok(());
    }

    let total: usize = scenarios.iter().map(|s| s.run_count(&opts)).sum();
    let bar = ProgressBar::new(total as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} runs  {elapsed_precise}  {msg}")
            .expect("a valid template"),
    );
    let start = Instant::now();
    let mut reports = Vec::new();
    let model_label;
    if let Some(url) = &args.endpoint {
        let client = Client::new(ClientOptions {
            url: url.clone(),
            api_key: args.api_key.clone(),
            model: args.model.model.clone(),
            timeout: Duration::from_secs(300),
            retries: 3,
        })
        .map_err(|e| Failure::usage(format!("--endpoint: {e}")))?;
        model_label = format!(
            "{} at {}",
            args.model.model.as_deref().unwrap_or("the served model"),
            client.base()
        );
        for s in &scenarios {
            bar.set_message(s.name.clone());
            let report = experiment::remote::run_scenario_remote(
                &client,
                s,
                &opts,
                args.concurrency.max(1),
                &|_| bar.inc(1),
            )
            .map_err(|e| Failure::from(e).with_context(&s.file))?;
            reports.push(report);
        }
    } else {
        let mut engine = Engine::load(&args.model.options(false))?;
        for s in &scenarios {
            s.check(engine.vocab.len()).map_err(bad_scenario)?;
        }
        model_label = format!("`{}`", engine.path.display());
        bar.set_message(format!("{} at once", args.parallel));
        let results =
            experiment::run_scenarios(&mut engine, &scenarios, &opts, args.parallel, &mut |_, _| {
                bar.inc(1)
            });
        for (s, report) in scenarios.iter().zip(results) {
            reports.push(report.map_err(|e| Failure::from(e).with_context(&s.file))?);
        }
    }
    bar.finish_and_clear();
    let wall_s = start.elapsed().as_secs_f64();
    let json = experiment::to_json(&reports, &opts, wall_s);

    // The report first: a reader that stops reading stdout early must not cost the files.
    if let Some(dir) = &args.report {
        let threads = if args.endpoint.is_some() {
            "the server's".to_string()
        } else {
            format!("{}, {} runs decoded together", stoplab::model::threads(), args.parallel)
        };
        let header = format!(
            "Model {model_label}; {} runs of {} scenarios in {wall_s:.1} s wall time{}; threads: {threads}.",
            total,
            reports.len(),
            if opts.quick { " (--quick)" } else { "" },
        );
        experiment::write_report(dir, &reports, &scenarios, &json, &header).map_err(|e| {
            Failure {
                usage: false,
                message: format!("--report {}: {e}", dir.display()),
            }
        })?;
    }
    if args.json {
        say!(
            "{}",
            serde_json::to_string_pretty(&json).expect("JSON values serialise")
        );
    } else {
        say!("{}", experiment::table(&reports).trim_end_matches('\n'));
        say!(
            "{} runs of {} scenarios in {wall_s:.1} s{}; wasted = tokens generated after the answer was complete",
            total,
            reports.len(),
            if opts.quick { " (quick)" } else { "" }
        );
        if let Some(dir) = &args.report {
            say!("report written to {}", dir.join("report.md").display());
        }
    }
    Ok(())
}
