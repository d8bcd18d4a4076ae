//! `stoplab finetune --eval`: how models end their answers to held-out prompts (the runs and the table are
//! [`stoplab::finetune::eval`]'s).

use std::path::PathBuf;
use std::time::Instant;

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use stoplab::LoadedModel;
use stoplab::finetune::eval::{self, Report};
use stoplab::pipeline::field::Field;
use stoplab::pipeline::settings::UserSettings;

use crate::cli::args::model::ModelArg;
use crate::cli::args::values::unescape;
use crate::cli::output::{Failure, pretty};

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// Evaluate instead of training: held-out prompts (JSONL with "answers" and "kind"; repeatable).
    #[arg(long, value_name = "FILE", help_heading = "Evaluation")]
    eval: Vec<PathBuf>,
    /// A model to evaluate: LABEL (the base model), LABEL=ADAPTER, or LABEL=ADAPTER@STOP to call it with a stop
    /// string (repeatable; default: the base model alone).
    #[arg(long, value_name = "SPEC", help_heading = "Evaluation")]
    compare: Vec<String>,
    /// The custom stop sequence the report looks for.
    #[arg(long, default_value = "######", help_heading = "Evaluation")]
    marker: String,
    /// Most tokens per answer.
    #[arg(long, default_value_t = 96, help_heading = "Evaluation")]
    max_tokens: usize,
    /// Print the reports (with every answer) as JSON.
    #[arg(long, help_heading = "Evaluation")]
    json: bool,
}

impl EvalArgs {
    /// Whether to evaluate rather than train (--eval given).
    pub fn wanted(&self) -> bool {
        !self.eval.is_empty()
    }
}

/// LABEL, LABEL=ADAPTER or LABEL=ADAPTER@STOP.
fn parse_spec(spec: &str) -> Result<(String, Option<PathBuf>, Vec<String>), Failure> {
    let (label, rest) = match spec.split_once('=') {
        Some((l, r)) => (l, Some(r)),
        None => (spec, None),
    };
    if label.is_empty() {
        return Err(Failure::usage(format!(
            "--compare {spec:?}: give a label, e.g. remedy=remedy.safetensors@######"
        )));
    }
    let (adapter, stops) = match rest {
        None => (None, vec![]),
        Some(r) => match r.split_once('@') {
            Some((a, s)) => ((!a.is_empty()).then(|| PathBuf::from(a)), vec![unescape(s)]),
            None => ((!r.is_empty()).then(|| PathBuf::from(r)), vec![]),
        },
    };
    Ok((label.to_string(), adapter, stops))
}

/// Evaluates the base `model` and each --compare spec on it.
pub fn run(args: &EvalArgs, model: &ModelArg) -> Result<(), Failure> {
    let mut items = Vec::new();
    for f in &args.eval {
        items.extend(eval::read_items(f).map_err(Failure::as_is)?);
    }
    let specs: Vec<String> = if args.compare.is_empty() {
        vec!["base".into()]
    } else {
        args.compare.clone()
    };
    let mut reports = Vec::new();
    for spec in &specs {
        let (label, adapter, stops) = parse_spec(spec)?;
        let started = Instant::now();
        let mut engine = LoadedModel::load(&stoplab::LoadOptions {
            adapter,
            ..model.options(false)
        })?;
        let params = UserSettings {
            stops: stops.clone(),
            max_tokens: args.max_tokens,
            ..UserSettings::default()
        }
        .validate(None)
        .map_err(|e| match e.field {
            // The stops come from the --compare spec, not from a --stop flag.
            Field::Stop { .. } | Field::Stops => {
                Failure::usage(format!("--compare {spec:?}: the stop {}", e.message))
            }
            _ => Failure::from_settings(e),
        })?
        .params;
        let bar = ProgressBar::new(items.len() as u64);
        bar.set_style(
            ProgressStyle::with_template("{bar:30} {pos}/{len} prompts {elapsed} {msg}")
                .expect("the template is valid"),
        );
        bar.set_message(label.clone());
        let results = eval::run_items(&mut engine, &items, &params, &args.marker, |i, _| {
            bar.set_position(i as u64 + 1)
        })?;
        bar.finish_and_clear();
        eprintln!(
            "stoplab: evaluated {label} on {} prompts in {:.1}s",
            items.len(),
            started.elapsed().as_secs_f64()
        );
        reports.push(Report::new(&label, stops, results));
    }
    if args.json {
        say!("{}", pretty(&reports));
    } else {
        say!(
            "{}",
            eval::table(&reports, &args.marker).trim_end_matches('\n')
        );
    }
    Ok(())
}
