//! The seed's three training loops, each driven through a [`Guarded`] SGD.

use std::collections::BTreeMap;

use candle_core::{DType, Tensor, D};
use candle_nn::{Optimizer, VarMap, SGD};
use gradguard::{Check, Error, Guarded, StepReport};

use crate::data::Mnist;
use crate::model::Model;

/// How a run gets its gradients: the seed's M1 and M2, and the fix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GradStyle {
    /// M1: fresh gradients every step, `step_with(&loss.backward()?)`
    /// (the analogue of `torch.autograd.grad`).
    Fresh,
    /// M2: `backward` + `step`, never `zero_grad` (the seed's bug).
    NoZeroGrad,
    /// M3: `backward` + `step` + `zero_grad` (the fix).
    ZeroGrad,
}

impl GradStyle {
    /// A short description for tables.
    pub fn describe(self) -> &'static str {
        match self {
            GradStyle::Fresh => "step_with(&loss.backward())",
            GradStyle::NoZeroGrad => "backward + step, no zero_grad",
            GradStyle::ZeroGrad => "backward + step + zero_grad",
        }
    }
}

/// One model being trained, with what gradguard saw.
pub struct Run {
    /// `m1`, `m2`, `m3`: also the guard's `optimizer` label.
    pub name: String,
    /// The gradient style.
    pub style: GradStyle,
    /// The model.
    pub model: Model,
    /// Its variables.
    pub varmap: VarMap,
    /// The guarded SGD.
    pub opt: Guarded<SGD>,
    /// Test accuracy after each epoch, in [0, 1].
    pub accuracy: Vec<f64>,
    /// Anomalies counted, by check.
    pub anomalies: BTreeMap<Check, u64>,
    /// The first step at which a check fired, and which.
    pub first_flagged: Option<(u64, Check)>,
}

impl Run {
    /// A run of `model` with plain SGD at `lr`, guarded; `configure` sets the
    /// guard's levels and options.
    pub fn new(
        name: &str,
        style: GradStyle,
        model: Model,
        varmap: VarMap,
        lr: f64,
        configure: impl FnOnce(Guarded<SGD>) -> Guarded<SGD>,
    ) -> candle_core::Result<Self> {
        let opt = Guarded::new(SGD::new(varmap.all_vars(), lr)?)
            .with_varmap(&varmap)
            .name(name);
        Ok(Self {
            name: name.to_string(),
            style,
            model,
            varmap,
            opt: configure(opt),
            accuracy: Vec::new(),
            anomalies: BTreeMap::new(),
            first_flagged: None,
        })
    }

    fn note(&mut self, report: &StepReport) {
        for a in &report.anomalies {
            *self.anomalies.entry(a.check).or_default() += 1;
            self.first_flagged.get_or_insert((a.step, a.check));
        }
    }

    /// One training step on a batch, in this run's style.
    pub fn train_step(
        &mut self,
        images: &Tensor,
        labels: &Tensor,
    ) -> gradguard::Result<StepReport> {
        let logits = self.model.forward_t(images, true)?;
        let loss = candle_nn::loss::cross_entropy(&logits, labels)?;
        let result = match self.style {
            GradStyle::Fresh => self.opt.step_with(&loss.backward()?),
            GradStyle::NoZeroGrad | GradStyle::ZeroGrad => {
                self.opt.backward(&loss)?;
                self.opt.step()
            }
        };
        if self.style == GradStyle::ZeroGrad {
            self.opt.zero_grad();
        }
        match result {
            Ok(report) => {
                self.note(&report);
                Ok(report)
            }
            Err(Error::Denied(a)) => {
                *self.anomalies.entry(a.check).or_default() += 1;
                self.first_flagged.get_or_insert((a.step, a.check));
                Err(Error::Denied(a))
            }
            Err(e) => Err(e),
        }
    }

    /// One epoch over the training set in file order, `batch` images a step;
    /// `on_step` is called after each step.
    pub fn train_epoch(
        &mut self,
        data: &Mnist,
        batch: usize,
        mut on_step: impl FnMut(&StepReport),
    ) -> gradguard::Result<()> {
        let n = data.train_len();
        let mut start = 0;
        while start < n {
            let len = batch.min(n - start);
            let x = data.train_images.narrow(0, start, len)?;
            let y = data.train_labels.narrow(0, start, len)?;
            let report = self.train_step(&x, &y)?;
            on_step(&report);
            start += len;
        }
        Ok(())
    }

    /// Test accuracy in [0, 1], BatchNorm in eval mode; recorded in `accuracy`.
    pub fn evaluate(&mut self, data: &Mnist) -> candle_core::Result<f64> {
        let n = data.test_len();
        let mut correct = 0f64;
        let mut start = 0;
        while start < n {
            let len = 1000.min(n - start);
            let x = data.test_images.narrow(0, start, len)?;
            let y = data.test_labels.narrow(0, start, len)?;
            let pred = self.model.forward_t(&x, false)?.argmax(D::Minus1)?;
            correct += pred
                .eq(&y)?
                .to_dtype(DType::F64)?
                .sum_all()?
                .to_scalar::<f64>()?;
            start += len;
        }
        let acc = if n == 0 { 0.0 } else { correct / n as f64 };
        self.accuracy.push(acc);
        Ok(acc)
    }

    /// Steps per epoch at `batch` for `n` images.
    pub fn steps_per_epoch(n: usize, batch: usize) -> usize {
        n.div_ceil(batch.max(1))
    }
}
