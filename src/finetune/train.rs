//! The training loop: seeded batches, AdamW on the LoRA factors.

use std::ops::ControlFlow;
use std::time::Instant;

use candle_core::backprop::GradStore;
use candle_nn::{AdamW, Optimizer, ParamsAdamW};

use super::data::Example;
use super::model::{Base, Batch, Lora, SplitMix};
use crate::Error;

/// Optimiser settings.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    pub steps: usize,
    pub batch: usize,
    pub lr: f64,
    pub weight_decay: f64,
    pub seed: u64,
}

impl Default for TrainOptions {
    fn default() -> Self {
        Self {
            steps: 40,
            batch: 8,
            lr: 2e-3,
            weight_decay: 0.0,
            seed: 0,
        }
    }
}

/// One finished step, for progress reports.
#[derive(Debug, Clone, Copy)]
pub struct StepReport {
    /// 1-based.
    pub step: usize,
    pub loss: f32,
    /// Tokens fed in this step (padding excluded) and of those, labelled.
    pub tokens: usize,
    pub labelled: usize,
    pub step_s: f64,
}

/// What a training run did.
#[derive(Debug, Clone)]
pub struct TrainSummary {
    pub steps_done: usize,
    pub first_loss: Option<f32>,
    pub last_loss: Option<f32>,
    pub tokens: usize,
    pub seconds: f64,
    /// Stopped early by the callback (Ctrl-C).
    pub interrupted: bool,
}

/// Picks examples for each step: a seeded shuffle, walked in order, reshuffled after each pass.
pub struct Batches {
    order: Vec<usize>,
    next: usize,
    rng: SplitMix,
}

impl Batches {
    pub fn new(n: usize, seed: u64) -> Self {
        let mut b = Self {
            order: (0..n).collect(),
            next: n,
            rng: SplitMix::new(seed ^ 0x5EED),
        };
        b.reshuffle();
        b
    }

    fn reshuffle(&mut self) {
        for i in (1..self.order.len()).rev() {
            let j = self.rng.below(i + 1);
            self.order.swap(i, j);
        }
        self.next = 0;
    }

    pub fn take(&mut self, k: usize) -> Vec<usize> {
        let mut out = Vec::with_capacity(k);
        while out.len() < k.min(self.order.len()) {
            if self.next == self.order.len() {
                self.reshuffle();
            }
            out.push(self.order[self.next]);
            self.next += 1;
        }
        out
    }
}

/// Trains `lora` on `examples`. `on_step` sees every step and may stop the run (`Break`); what was trained so
/// far stays in `lora`.
pub fn train(
    base: &Base,
    lora: &Lora,
    examples: &[Example],
    pad: u32,
    opts: &TrainOptions,
    mut on_step: impl FnMut(&StepReport) -> ControlFlow<()>,
) -> Result<TrainSummary, Error> {
    let be = |e: candle_core::Error| Error::Backend(e.to_string());
    if examples.is_empty() {
        return Err(Error::Invalid {
            field: "data".into(),
            message: "no examples to train on".into(),
        });
    }
    let vars = lora.vars();
    let mut opt = AdamW::new(
        vars.clone(),
        ParamsAdamW {
            lr: opts.lr,
            weight_decay: opts.weight_decay,
            ..Default::default()
        },
    )
    .map_err(be)?;
    let mut batches = Batches::new(examples.len(), opts.seed);
    let start = Instant::now();
    let mut summary = TrainSummary {
        steps_done: 0,
        first_loss: None,
        last_loss: None,
        tokens: 0,
        seconds: 0.0,
        interrupted: false,
    };
    for step in 1..=opts.steps {
        let t0 = Instant::now();
        let picked: Vec<&Example> = batches
            .take(opts.batch)
            .into_iter()
            .map(|i| &examples[i])
            .collect();
        // One conversation at a time, gradients summed: no padding, and only one conversation's graph in
        // memory at once (a padded batch of 8 x 256 tokens held about 10 GB of activations).
        let total: usize = picked.iter().map(|e| e.labelled()).sum();
        let mut grads: Option<GradStore> = None;
        let mut loss = 0f64;
        let mut fed = 0;
        for ex in &picked {
            let batch = Batch::new(&[*ex], pad).map_err(be)?;
            let weight = batch.labelled() as f64 / total as f64;
            let l = (base.loss(&batch, Some(lora)).map_err(be)? * weight).map_err(be)?;
            let g = l.backward().map_err(be)?;
            loss += l
                .to_dtype(candle_core::DType::F64)
                .and_then(|l| l.to_scalar::<f64>())
                .map_err(be)?;
            fed += batch.tokens_fed;
            grads = Some(match grads {
                None => g,
                Some(mut acc) => {
                    for v in &vars {
                        if let Some(new) = g.get(v.as_tensor()) {
                            let sum = match acc.get(v.as_tensor()) {
                                Some(old) => (old + new).map_err(be)?,
                                None => new.clone(),
                            };
                            acc.insert(v.as_tensor(), sum);
                        }
                    }
                    acc
                }
            });
        }
        if let Some(g) = &grads {
            opt.step(g).map_err(be)?;
        }
        let loss = loss as f32;
        summary.steps_done = step;
        summary.first_loss.get_or_insert(loss);
        summary.last_loss = Some(loss);
        summary.tokens += fed;
        let report = StepReport {
            step,
            loss,
            tokens: fed,
            labelled: total,
            step_s: t0.elapsed().as_secs_f64(),
        };
        if on_step(&report).is_break() {
            summary.interrupted = step < opts.steps;
            break;
        }
    }
    summary.seconds = start.elapsed().as_secs_f64();
    Ok(summary)
}
