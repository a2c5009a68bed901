//! The two phases: pretraining the base, then fine-tuning the adapters with
//! the base frozen, each through a guard that watches exactly what its
//! optimizer trains.

use std::collections::BTreeMap;

use candle_core::{Device, Tensor, Var};
use candle_nn::{AdamW, ParamsAdamW, VarMap};
use gradguard::{vars_matching, Check, Guarded, StepReport};

use crate::model::{is_adapter, Lm};
use crate::text::{Corpus, Rng};

/// Which variables a phase trains.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Every base variable; the adapters stay as they are (B = 0: no effect).
    Pretrain,
    /// The adapters only; the base is frozen.
    Finetune,
}

impl Phase {
    /// The variables the phase's optimizer is built over, sorted by name.
    pub fn vars(self, varmap: &VarMap) -> Vec<Var> {
        match self {
            Phase::Pretrain => vars_matching(varmap, |n| !is_adapter(n)),
            Phase::Finetune => vars_matching(varmap, is_adapter),
        }
    }

    /// A guarded AdamW over the phase's variables (the subset adoption:
    /// the rest of the `VarMap` is not watched, so never `missing`).
    pub fn optimizer(self, varmap: &VarMap, lr: f64) -> candle_core::Result<Guarded<AdamW>> {
        let params = ParamsAdamW {
            lr,
            weight_decay: 0.0,
            ..ParamsAdamW::default()
        };
        Guarded::<AdamW>::from_vars(self.vars(varmap), varmap, params)
    }
}

/// Whether the fine-tuning loop resets gradients after each step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reset {
    /// `zero_grad()` after every `step()`: correct.
    AfterStep,
    /// No `zero_grad()`: the bug, every step re-applies all earlier passes.
    Never,
}

/// What a run saw, for the summary table.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// Validation loss after each epoch (or after pretraining).
    pub val_loss: Vec<f64>,
    /// Anomalies counted by check.
    pub anomalies: BTreeMap<Check, u64>,
    /// The first flagged step and its check.
    pub first_flagged: Option<(u64, Check)>,
    /// Steps applied.
    pub steps: u64,
}

impl Outcome {
    fn record(&mut self, report: &StepReport) {
        for a in &report.anomalies {
            *self.anomalies.entry(a.check).or_default() += 1;
            self.first_flagged.get_or_insert((a.step, a.check));
        }
        self.steps = report.step;
    }
}

/// Mean loss over `batches` fixed validation batches.
pub fn validation_loss(
    model: &Lm,
    val: &Corpus,
    batches: usize,
    dev: &Device,
) -> candle_core::Result<f64> {
    let mut rng = Rng::new(99);
    let ctx = model.config().ctx;
    let mut total = 0.0;
    for _ in 0..batches {
        let (x, y) = val.batch(16, ctx, &mut rng, dev)?;
        total += model.loss(&x, &y)?.to_scalar::<f32>()? as f64;
    }
    Ok(total / batches as f64)
}

/// Pretrains the base on `text` for `steps` steps of `rows` windows, in
/// candle's style (a fresh `GradStore` each step through `step_with`).
pub fn pretrain(
    model: &Lm,
    opt: &mut Guarded<AdamW>,
    text: &Corpus,
    steps: usize,
    rows: usize,
    dev: &Device,
) -> Result<Outcome, gradguard::Error> {
    let mut rng = Rng::new(1);
    let mut outcome = Outcome::default();
    for _ in 0..steps {
        let (x, y) = text.batch(rows, model.config().ctx, &mut rng, dev)?;
        let grads = model.loss(&x, &y)?.backward()?;
        outcome.record(&opt.step_with(&grads)?);
    }
    Ok(outcome)
}

/// A fine-tuning run: `epochs` epochs of `micro_batches` micro-batches, a
/// step every `accumulation` of them and at the end of each epoch (a
/// shorter last window when `accumulation` does not divide
/// `micro_batches`), in PyTorch's style (backward, step, zero_grad).
#[derive(Debug, Clone)]
pub struct Finetune {
    /// Epochs.
    pub epochs: usize,
    /// Micro-batches per epoch.
    pub micro_batches: usize,
    /// Micro-batches per step, declared to the guard.
    pub accumulation: u32,
    /// Windows per micro-batch.
    pub rows: usize,
    /// Whether the loop resets gradients.
    pub reset: Reset,
}

impl Finetune {
    /// Runs the fine-tuning, calling `after_epoch` with each epoch's number.
    pub fn run(
        &self,
        model: &Lm,
        opt: &mut Guarded<AdamW>,
        train: &Corpus,
        val: &Corpus,
        dev: &Device,
        mut after_epoch: impl FnMut(usize, f64),
    ) -> Result<Outcome, gradguard::Error> {
        let mut rng = Rng::new(2);
        let mut outcome = Outcome::default();
        let k = self.accumulation as usize;
        for epoch in 1..=self.epochs {
            for micro in 0..self.micro_batches {
                let (x, y) = train.batch(self.rows, model.config().ctx, &mut rng, dev)?;
                // Each micro-batch's loss is scaled so a full window sums to
                // a mean (a short last window to a part of one).
                let loss = (model.loss(&x, &y)? / k as f64)?;
                opt.backward(&loss)?;
                let window_full = (micro + 1) % k == 0;
                let epoch_over = micro + 1 == self.micro_batches;
                if window_full || epoch_over {
                    outcome.record(&opt.step()?);
                    if self.reset == Reset::AfterStep {
                        opt.zero_grad();
                    }
                }
            }
            let loss = validation_loss(model, val, 4, dev)?;
            outcome.val_loss.push(loss);
            after_epoch(epoch, loss);
        }
        Ok(outcome)
    }
}

/// A copy of every variable's value, to start several runs from one state.
pub fn snapshot(varmap: &VarMap) -> candle_core::Result<Vec<(Var, Tensor)>> {
    let data = varmap.data().lock().expect("VarMap lock");
    data.values()
        .map(|v| Ok((v.clone(), v.as_tensor().copy()?)))
        .collect()
}

/// Puts the values of a [`snapshot`] back.
pub fn restore(state: &[(Var, Tensor)]) -> candle_core::Result<()> {
    for (var, value) in state {
        var.set(value)?;
    }
    Ok(())
}
