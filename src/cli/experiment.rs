//! `stoplab experiment`: the seed's techniques as scenarios, run and measured.

use std::path::PathBuf;
use std::time::Instant;

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use std::time::Duration;

use stoplab::client::{Client, ClientOptions};
use stoplab::lab::experiment::{self, RunOptions, Scenario};
use stoplab::pipeline::settings::RepetitionStop;
use stoplab::pipeline::settings::UserSettings;
use stoplab::{LoadOptions, LoadedModel};

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
    /// The models to run on, side by side (repeatable, or comma-separated): GGUF files, names from
    /// `stoplab fetch --list`, or hf:OWNER/REPO/FILE.gguf. Each runs the scenarios written for it (their
    /// `model` key), or the seed's scenarios when none are. Without --model: the default model, or, with
    /// --only, each named scenario on its own model.
    #[arg(
        long,
        short,
        env = "STOPLAB_MODEL",
        value_delimiter = ',',
        help_heading = "Model"
    )]
    model: Vec<String>,
    /// A tokenizer.json to use instead of the tokenizer built from the GGUF metadata.
    #[arg(long, value_name = "FILE", help_heading = "Model")]
    tokenizer: Option<PathBuf>,
    /// A LoRA adapter from `stoplab finetune`, applied on top of the quantized model.
    #[arg(long, value_name = "FILE", help_heading = "Model")]
    adapter: Option<PathBuf>,
}

/// Which scenarios run on which model: `(model as named, None for the default; its scenarios)`.
fn plan(
    scenarios: Vec<Scenario>,
    models: &[String],
    explicit: bool,
) -> Vec<(Option<String>, Vec<Scenario>)> {
    let default = stoplab::fetch::Manifest::builtin().default;
    let is_default = |m: &Option<String>| m.as_deref().is_none_or(|m| m == default);
    if models.is_empty() {
        if !explicit {
            // The default run: the seed's scenarios, on the default model.
            let mine = scenarios
                .into_iter()
                .filter(|s| is_default(&s.model))
                .collect();
            return vec![(None, mine)];
        }
        // Named scenarios (--only, --scenario): each on the model it was written for.
        let mut groups: Vec<(Option<String>, Vec<Scenario>)> = Vec::new();
        for s in scenarios {
            let key = s.model.clone().filter(|m| *m != default);
            match groups.iter_mut().find(|(m, _)| *m == key) {
                Some((_, list)) => list.push(s),
                None => groups.push((key, vec![s])),
            }
        }
        return groups;
    }
    models
        .iter()
        .map(|m| {
            let written: Vec<Scenario> = scenarios
                .iter()
                .filter(|s| {
                    s.model.as_deref() == Some(m.as_str()) || (m == &default && s.model.is_none())
                })
                .cloned()
                .collect();
            let list = if written.is_empty() {
                // A model with no scenarios of its own gets the seed's (those written for no model).
                scenarios
                    .iter()
                    .filter(|s| s.model.is_none())
                    .cloned()
                    .collect()
            } else {
                written
            };
            (Some(m.clone()), list)
        })
        .collect()
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
    let explicit = !args.only.is_empty() || !args.scenario.is_empty();
    let plan = if args.endpoint.is_some() {
        vec![(args.model.first().cloned(), scenarios.clone())]
    } else {
        // A list without --model shows every shipped scenario, each with its model.
        plan(scenarios.clone(), &args.model, explicit || args.list)
    };
    if args.list {
        for (model, list) in &plan {
            let model = model.as_deref().unwrap_or("the default model");
            for s in list {
                say!(
                    "{:<40} {:>2} runs  {}  ({}; {model})",
                    s.name,
                    opts.runs_of(s),
                    s.title,
                    s.file
                );
            }
        }
        return Ok(());
    }

    let total: usize = plan
        .iter()
        .flat_map(|(_, l)| l)
        .map(|s| opts.runs_of(s))
        .sum();
    let bar = ProgressBar::new(total as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} runs  {elapsed_precise}  {msg}")
            .expect("a valid template"),
    );
    let start = Instant::now();
    let mut reports = Vec::new();
    let mut labels = Vec::new();
    if let Some(url) = &args.endpoint {
        let client = Client::new(ClientOptions {
            url: url.clone(),
            api_key: args.api_key.clone(),
            model: args.model.first().cloned(),
            timeout: Duration::from_secs(300),
            retries: 3,
        })
        .map_err(|e| Failure::usage(format!("--endpoint: {e}")))?;
        labels.push(format!(
            "{} at {}",
            args.model
                .first()
                .map_or("the served model", String::as_str),
            client.base()
        ));
        for s in &scenarios {
            bar.set_message(s.name.clone());
            let mut report = experiment::remote::run_scenario_remote(
                &client,
                s,
                &opts,
                args.concurrency.max(1),
                &|_| bar.inc(1),
            )
            .map_err(|e| Failure::from(e).with_context(&s.file))?;
            report.model = args.model.first().cloned().unwrap_or_default();
            reports.push(report);
        }
    } else {
        for (model, list) in &plan {
            if list.is_empty() {
                continue;
            }
            // Replay scenarios need no weights (a weight-free vocabulary has none).
            let replay_only = list.iter().all(|s| s.replay.is_some());
            let mut engine = LoadedModel::load(&LoadOptions {
                model: model.clone(),
                tokenizer: args.tokenizer.clone(),
                adapter: args.adapter.clone(),
                tokenizer_only: replay_only,
                progress: true,
            })?;
            for s in list {
                s.check(engine.vocab.len()).map_err(bad_scenario)?;
            }
            let name = model
                .clone()
                .unwrap_or_else(|| stoplab::fetch::Manifest::builtin().default);
            labels.push(format!("`{name}` ({})", engine.path.display()));
            bar.set_message(format!("{name}: {} at once", args.parallel));
            let results =
                experiment::run_scenarios(&mut engine, list, &opts, args.parallel, &mut |_, _| {
                    bar.inc(1)
                });
            for (s, report) in list.iter().zip(results) {
                let mut report = report.map_err(|e| Failure::from(e).with_context(&s.file))?;
                report.model = name.clone();
                reports.push(report);
            }
        }
    }
    let model_label = labels.join(", ");
    bar.finish_and_clear();
    let wall_s = start.elapsed().as_secs_f64();
    let json = experiment::to_json(&reports, &opts, wall_s);

    // The report first: a reader that stops reading stdout early must not cost the files.
    if let Some(dir) = &args.report {
        let threads = if args.endpoint.is_some() {
            "the server's".to_string()
        } else {
            format!(
                "{}, {} runs decoded together",
                stoplab::pipeline::model::threads(),
                args.parallel
            )
        };
        let header = format!(
            "{} {model_label}; {} runs of {} scenarios in {wall_s:.1} s wall time{}; threads: {threads}.",
            if labels.len() > 1 { "Models" } else { "Model" },
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
