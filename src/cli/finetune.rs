//! `stoplab finetune`: train a LoRA adapter, or evaluate how models end their answers.

use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use stoplab::fetch::{self, Progress};
use stoplab::finetune::eval::{self, Report};
use stoplab::finetune::{LoraConfig, RenderOptions, TrainOptions, Trainer};
use stoplab::pipeline::field::Field;
use stoplab::pipeline::settings::UserSettings;
use stoplab::{LoadOptions, LoadedModel};

use super::{Failure, unescape};

#[derive(Args, Debug)]
pub struct FinetuneArgs {
    /// Training data: OpenAI's chat fine-tuning JSONL ({"messages": [...]} per line; function_call,
    /// tool_calls and function/tool results are understood).
    #[arg(long, value_name = "FILE", required_unless_present = "eval")]
    data: Option<PathBuf>,
    /// Where to write the adapter (safetensors).
    #[arg(long, value_name = "FILE", required_unless_present = "eval")]
    out: Option<PathBuf>,
    /// The base model (as for `complete --model`; default: the default model).
    #[arg(long, short, env = "STOPLAB_MODEL")]
    model: Option<String>,
    /// Add this to the end of every assistant message, function calls included (the seed's "######").
    #[arg(long, value_name = "S")]
    append_stop: Option<String>,
    /// Normal chats to mix in (JSONL, same format; append-stop and mask-end-token apply to them too).
    #[arg(long, value_name = "FILE")]
    mix: Vec<PathBuf>,
    /// Leave the end token out of the labels: the common mistake that makes a model that never stops.
    #[arg(long)]
    mask_end_token: bool,
    #[arg(long, default_value_t = 40)]
    steps: usize,
    /// AdamW learning rate.
    #[arg(long, default_value_t = 2e-3)]
    lr: f64,
    /// Conversations per step.
    #[arg(long, default_value_t = 8)]
    batch: usize,
    /// LoRA rank (on the q and v projections).
    #[arg(long, default_value_t = 8)]
    rank: usize,
    /// LoRA alpha (default: twice the rank).
    #[arg(long)]
    alpha: Option<f64>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Conversations longer than this many tokens are cut.
    #[arg(long, default_value_t = 256)]
    max_len: usize,

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

pub fn run(args: FinetuneArgs) -> Result<(), Failure> {
    if !args.eval.is_empty() {
        return evaluate(&args);
    }
    let (data, out) = (args.data.clone().unwrap(), args.out.clone().unwrap());
    if args.steps == 0 || args.batch == 0 || args.rank == 0 {
        return Err(Failure::usage(
            "--steps, --batch and --rank must be at least 1",
        ));
    }
    if !(args.lr > 0.0 && args.lr.is_finite()) {
        return Err(Failure::usage("--lr: must be a positive number"));
    }
    let path = fetch::resolve(args.model.as_deref(), Progress::Show)?;
    let t0 = Instant::now();
    let trainer = Trainer::open(&path)?;
    let render = RenderOptions {
        append_stop: args.append_stop.as_deref().map(unescape),
        mask_end_token: args.mask_end_token,
        max_tokens: args.max_len,
    };
    let mut examples = trainer.examples(&data, &render).map_err(as_is)?;
    let from_data = examples.len();
    for m in &args.mix {
        examples.extend(trainer.examples(m, &render).map_err(as_is)?);
    }
    let cfg = LoraConfig {
        rank: args.rank,
        alpha: args.alpha.unwrap_or(2.0 * args.rank as f64),
    };
    let lora = trainer.new_lora(cfg, args.seed)?;
    eprintln!(
        "stoplab: {} conversations ({} from {}, {} mixed in), {} labelled tokens; LoRA rank {} alpha {} on q,v: \
         {} trainable parameters; loaded in {:.1}s",
        examples.len(),
        from_data,
        data.display(),
        examples.len() - from_data,
        examples.iter().map(|e| e.labelled()).sum::<usize>(),
        cfg.rank,
        cfg.alpha,
        lora.parameter_count(),
        t0.elapsed().as_secs_f64()
    );

    // Ctrl-C: finish the step under way, then save what was trained so far. A second Ctrl-C quits at once.
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        let _ = ctrlc::set_handler(move || {
            if stop.swap(true, Ordering::SeqCst) {
                std::process::exit(130);
            }
        });
    }
    let bar = ProgressBar::new(args.steps as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} steps {elapsed} {msg}")
            .expect("the template is valid"),
    );
    let opts = TrainOptions {
        steps: args.steps,
        batch: args.batch,
        lr: args.lr,
        seed: args.seed,
        ..Default::default()
    };
    let started = Instant::now();
    let mut tokens = 0usize;
    let summary = trainer.train(&lora, &examples, &opts, |r| {
        tokens += r.tokens;
        let rate = tokens as f64 / started.elapsed().as_secs_f64();
        bar.set_position(r.step as u64);
        bar.set_message(format!("loss {:.3} | {rate:.0} tok/s", r.loss));
        if bar.is_hidden() && (r.step == 1 || r.step % 10 == 0) {
            eprintln!(
                "step {}/{}: loss {:.3}, {:.1}s, {rate:.0} tok/s",
                r.step, args.steps, r.loss, r.step_s
            );
        }
        if stop.load(Ordering::SeqCst) {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })?;
    bar.finish_and_clear();
    let mut settings = vec![
        ("data".to_string(), data.display().to_string()),
        (
            "mix".to_string(),
            args.mix
                .iter()
                .map(|m| m.display().to_string())
                .collect::<Vec<_>>()
                .join(","),
        ),
        (
            "append_stop".to_string(),
            render.append_stop.clone().unwrap_or_default(),
        ),
        (
            "mask_end_token".to_string(),
            args.mask_end_token.to_string(),
        ),
        ("steps".to_string(), summary.steps_done.to_string()),
        ("batch".to_string(), args.batch.to_string()),
        ("lr".to_string(), args.lr.to_string()),
        ("seed".to_string(), args.seed.to_string()),
    ];
    if summary.interrupted {
        settings.push(("interrupted".into(), "true".into()));
    }
    trainer.save(&out, &lora, settings)?;
    eprintln!(
        "stoplab: {} {} steps in {:.1}s ({:.0} tok/s), loss {:.3} -> {:.3}; adapter written to {}",
        if summary.interrupted {
            "interrupted after"
        } else {
            "trained"
        },
        summary.steps_done,
        summary.seconds,
        summary.tokens as f64 / summary.seconds.max(1e-9),
        summary.first_loss.unwrap_or(f32::NAN),
        summary.last_loss.unwrap_or(f32::NAN),
        out.display()
    );
    Ok(())
}

/// Errors about a data file already name the file (and line): show them as they are, not as a flag.
fn as_is(e: stoplab::Error) -> Failure {
    Failure {
        usage: e.is_user_input(),
        message: e.to_string(),
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

fn evaluate(args: &FinetuneArgs) -> Result<(), Failure> {
    let mut items = Vec::new();
    for f in &args.eval {
        items.extend(eval::read_items(f).map_err(as_is)?);
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
        let mut engine = LoadedModel::load(&LoadOptions {
            model: args.model.clone(),
            tokenizer: None,
            tokenizer_only: false,
            adapter,
            progress: true,
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
        say!(
            "{}",
            serde_json::to_string_pretty(&reports).expect("reports serialise")
        );
    } else {
        say!(
            "{}",
            eval::table(&reports, &args.marker).trim_end_matches('\n')
        );
    }
    Ok(())
}
