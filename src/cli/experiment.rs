//! `stoplab experiment`: the seed's techniques as scenarios, run and measured. Which scenarios run where,
//! the runs and the reports are [`stoplab::lab::experiment`]'s; this file picks the scenarios from the
//! flags, shows progress and prints.

use std::path::PathBuf;
use std::time::Instant;

use clap::{Arg, ArgAction, Args};
use indicatif::{ProgressBar, ProgressStyle};

use stoplab::lab::experiment::plan::{ChooseError, Plan, PlanError, Progress, choose, run_remote};
use stoplab::lab::experiment::report::{
    contrast_table, header, summary_line, table, to_json, write_report,
};
use stoplab::lab::experiment::run::RunOptions;
use stoplab::lab::experiment::scenario::ScenarioError;
use stoplab::pipeline::settings::{RepetitionStop, UserSettings};

use crate::cli::args::endpoint;
use crate::cli::args::model::{ADAPTER, MODEL, ModelArgs};
use crate::cli::args::speculate::NgramArgs;
use crate::cli::output::{Failure, pretty};

pub const EXAMPLES: &str = "Examples:
  stoplab experiment --quick                # each shipped scenario once, few tokens (< 1 min)
  stoplab experiment --report out/          # out/report.md, out/wasted.svg, out/report.json
  stoplab experiment --only 5a-broken-end-token --repeat-stop 8
  stoplab experiment --scenario my.toml --json   # your own (see --list, scenarios/*.toml)
  stoplab experiment --endpoint http://127.0.0.1:8081 --runs 100 --concurrency 8   # on a server

Wasted tokens are those generated after the answer was complete (the scenario's done.contains text was written).";

#[derive(Args, Debug)]
#[command(mut_arg(MODEL, several_models), mut_arg(ADAPTER, |a: Arg| a.help(
    "A LoRA adapter from `stoplab finetune`, applied on top of the quantized model"
)))]
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
    #[command(flatten)]
    patience: endpoint::Patience,
    /// On the local model: runs decoded together (continuous batching: one pass over the weights per step
    /// for all of them, runs of every scenario side by side; each run's text is what it would be alone).
    /// 1 runs them one after another.
    #[arg(long, value_name = "N", default_value_t = PARALLEL, conflicts_with = "endpoint",
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=256))]
    parallel: usize,
    /// On the local model: every run drafts by prompt lookup (each run's draft rides in the batch's step;
    /// the texts are the same as without). A replay scenario's own `[replay] tokens_per_step` stays.
    #[command(flatten)]
    speculate: NgramArgs,
    #[command(flatten)]
    model: ModelArgs,
}

/// Here `--model` may name several models (repeated, or comma-separated), each run side by side.
fn several_models(arg: Arg) -> Arg {
    arg.help(
        "The models to run on, side by side (repeatable, or comma-separated): GGUF files, names from \
         `stoplab fetch --list`, or hf:OWNER/REPO/FILE.gguf. Each runs the scenarios written for it (their \
         `model` key), or the seed's scenarios when none are. Without --model: the default model, or, with \
         --only, each named scenario on its own model",
    )
    .action(ArgAction::Append)
    .value_delimiter(',')
}

/// `--parallel`'s default: on 2 cores the default run's aggregate decode speed is best about there
/// (BENCHMARKS.md, "Continuous batching").
const PARALLEL: usize = 16;

pub fn run(args: ExperimentArgs) -> Result<(), Failure> {
    let bad_scenario = |e: ScenarioError| Failure::usage(e.to_string());
    let scenarios = choose(&args.scenario, &args.only).map_err(|e| match e {
        ChooseError::Scenario(e) => bad_scenario(e),
        e @ ChooseError::Unknown { .. } => Failure::usage(format!("--only: {e}")),
    })?;
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
    let speculation = args.speculate.speculation()?;
    if speculation.is_some() && args.endpoint.is_some() {
        return Err(Failure::usage(
            "--speculate runs on the local model; a server decides its own (stoplab serve --speculate ngram)",
        ));
    }
    let opts = RunOptions {
        quick: args.quick,
        repetition,
        runs: args.runs,
        speculation,
    };
    let models = args.model.model.names();
    let explicit = !args.only.is_empty() || !args.scenario.is_empty();
    let plan = if args.endpoint.is_some() {
        Plan::one(models.first().cloned(), scenarios.clone())
    } else {
        // A list without --model shows every shipped scenario, each with its model.
        Plan::new(scenarios.clone(), models, explicit || args.list)
    };
    if args.list {
        for line in plan.list(&opts) {
            say!("{line}");
        }
        return Ok(());
    }

    let total = plan.total_runs(&opts);
    let bar = ProgressBar::new(total as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} runs  {elapsed_precise}  {msg}")
            .expect("a valid template"),
    );
    let progress = |p: Progress| match p {
        Progress::Now(what) => bar.set_message(what),
        Progress::Run => bar.inc(1),
    };
    let start = Instant::now();
    let ran = match &args.endpoint {
        Some(url) => {
            let client = endpoint::client(
                url,
                args.api_key.clone(),
                models.first().cloned(),
                &args.patience,
            )?;
            let model = models.first().map(String::as_str);
            run_remote(
                &client,
                model,
                &scenarios,
                &opts,
                args.concurrency.max(1),
                &progress,
            )
        }
        None => plan.run_local(&args.model.options(false), &opts, args.parallel, &progress),
    }
    .map_err(|e| match e {
        PlanError::Load(e) => Failure::from(e),
        PlanError::Scenario(e) => bad_scenario(e),
        PlanError::Run { file, error } => Failure::from(error).with_context(&file),
    })?;
    let reports = ran.reports;
    bar.finish_and_clear();
    let wall_s = start.elapsed().as_secs_f64();
    let json = to_json(&reports, &opts, wall_s);

    // The report first: a reader that stops reading stdout early must not cost the files.
    if let Some(dir) = &args.report {
        let parallel = args.endpoint.is_none().then_some(args.parallel);
        let header = header(
            &ran.labels,
            total,
            reports.len(),
            wall_s,
            opts.quick,
            parallel,
        );
        write_report(dir, &reports, &scenarios, &json, &header)
            .map_err(|e| Failure::other(format!("--report {}: {e}", dir.display())))?;
    }
    if args.json {
        say!("{}", pretty(&json));
    } else {
        say!("{}", table(&reports).trim_end_matches('\n'));
        let contrasts = contrast_table(&reports);
        if !contrasts.is_empty() {
            say!("\n{}", contrasts.trim_end_matches('\n'));
        }
        say!("{}", summary_line(total, reports.len(), wall_s, opts.quick));
        if let Some(dir) = &args.report {
            say!("report written to {}", dir.join("report.md").display());
        }
    }
    Ok(())
}
