//! `stoplab finetune`: train a LoRA adapter (here), or evaluate how models end their answers ([`eval`]).
//! Training itself and how it reads are [`stoplab::finetune`]'s.

pub mod eval;

use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use stoplab::fetch::{self, Progress};
use stoplab::finetune::Trainer;
use stoplab::finetune::data::RenderOptions;
use stoplab::finetune::model::LoraConfig;
use stoplab::finetune::report;
use stoplab::finetune::train::TrainOptions;

use crate::cli::args::model::{MODEL, ModelArg, own_help};
use crate::cli::args::values::unescape;
use crate::cli::finetune::eval::EvalArgs;
use crate::cli::output::Failure;

#[derive(Args, Debug)]
#[command(mut_arg(
    MODEL,
    own_help("The base model (as for `complete --model`; default: the default model)")
))]
pub struct FinetuneArgs {
    /// Training data: OpenAI's chat fine-tuning JSONL ({"messages": [...]} per line; function_call,
    /// tool_calls and function/tool results are understood).
    #[arg(long, value_name = "FILE", required_unless_present = "eval")]
    data: Option<PathBuf>,
    /// Where to write the adapter (safetensors).
    #[arg(long, value_name = "FILE", required_unless_present = "eval")]
    out: Option<PathBuf>,
    #[command(flatten)]
    model: ModelArg,
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
    #[command(flatten)]
    eval: EvalArgs,
}

pub fn run(args: FinetuneArgs) -> Result<(), Failure> {
    if args.eval.wanted() {
        return eval::run(&args.eval, &args.model);
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
    let path = fetch::resolve(args.model.name().as_deref(), Progress::Show)?;
    let t0 = Instant::now();
    let trainer = Trainer::open(&path)?;
    let render = RenderOptions {
        append_stop: args.append_stop.as_deref().map(unescape),
        mask_end_token: args.mask_end_token,
        max_tokens: args.max_len,
    };
    let mut examples = trainer.examples(&data, &render).map_err(Failure::as_is)?;
    let from_data = examples.len();
    for m in &args.mix {
        examples.extend(trainer.examples(m, &render).map_err(Failure::as_is)?);
    }
    let cfg = LoraConfig {
        rank: args.rank,
        alpha: args.alpha.unwrap_or(2.0 * args.rank as f64),
    };
    let lora = trainer.new_lora(cfg, args.seed)?;
    let load_s = t0.elapsed().as_secs_f64();
    eprintln!(
        "stoplab: {}",
        report::before(&examples, from_data, &data, &lora, load_s)
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
            eprintln!("{}", report::step(r, args.steps, rate));
        }
        if stop.load(Ordering::SeqCst) {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })?;
    bar.finish_and_clear();
    let settings = report::settings(&data, &args.mix, &render, &opts, &summary);
    trainer.save(&out, &lora, settings)?;
    eprintln!("stoplab: {}", report::after(&summary, &out));
    Ok(())
}
