//! How a training run reads: the line before it ([`before`]), a step where no progress bar shows
//! ([`step`]), the line after it ([`after`]), and what the adapter file records of it ([`settings`]).

use std::path::{Path, PathBuf};

use crate::finetune::data::{Example, RenderOptions};
use crate::finetune::model::Lora;
use crate::finetune::train::{StepReport, TrainOptions, TrainSummary};

/// The examples (the first `from_data` of them from `data`, the rest mixed in), their labelled tokens, the
/// adapter's shape, and how long loading the base model took.
pub fn before(
    examples: &[Example],
    from_data: usize,
    data: &Path,
    lora: &Lora,
    load_s: f64,
) -> String {
    format!(
        "{} conversations ({} from {}, {} mixed in), {} labelled tokens; LoRA rank {} alpha {} on q,v: \
         {} trainable parameters; loaded in {:.1}s",
        examples.len(),
        from_data,
        data.display(),
        examples.len() - from_data,
        examples.iter().map(|e| e.labelled()).sum::<usize>(),
        lora.cfg.rank,
        lora.cfg.alpha,
        lora.parameter_count(),
        load_s
    )
}

/// One step of `steps`, at `rate` tokens per second so far.
pub fn step(r: &StepReport, steps: usize, rate: f64) -> String {
    format!(
        "step {}/{}: loss {:.3}, {:.1}s, {rate:.0} tok/s",
        r.step, steps, r.loss, r.step_s
    )
}

/// The run done (or interrupted), and where its adapter went.
pub fn after(summary: &TrainSummary, adapter: &Path) -> String {
    format!(
        "{} {} steps in {:.1}s ({:.0} tok/s), loss {:.3} -> {:.3}; adapter written to {}",
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
        adapter.display()
    )
}

/// The `settings` an adapter records: the data, how it was rendered, and the steps actually done.
pub fn settings(
    data: &Path,
    mix: &[PathBuf],
    render: &RenderOptions,
    opts: &TrainOptions,
    summary: &TrainSummary,
) -> Vec<(String, String)> {
    let mix: Vec<String> = mix.iter().map(|m| m.display().to_string()).collect();
    let mut settings = vec![
        ("data".to_string(), data.display().to_string()),
        ("mix".to_string(), mix.join(",")),
        (
            "append_stop".to_string(),
            render.append_stop.clone().unwrap_or_default(),
        ),
        (
            "mask_end_token".to_string(),
            render.mask_end_token.to_string(),
        ),
        ("steps".to_string(), summary.steps_done.to_string()),
        ("batch".to_string(), opts.batch.to_string()),
        ("lr".to_string(), opts.lr.to_string()),
        ("seed".to_string(), opts.seed.to_string()),
    ];
    if summary.interrupted {
        settings.push(("interrupted".into(), "true".into()));
    }
    settings
}
