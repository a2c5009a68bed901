//! [`Guarded`]: any `candle_nn::Optimizer`, with a gradient ledger checked at
//! every step.

use std::time::Instant;

use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor, TensorId, Var};
use candle_nn::{Optimizer, VarMap};

use crate::check::{self, Check, Finding, Level, Levels, StepView};
use crate::error::{Error, Result};
use crate::ledger::{GenSpan, Ledger, ParamEntry};
use crate::params::Params;
use crate::report::{Anomaly, StepReport};
use crate::telemetry::{self, Registration};
use crate::warnings::{self, WarnLimiter};

/// A sampling interval: run on steps `every, 2*every, ...`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Every(u64);

impl Every {
    fn due(self, step: u64) -> bool {
        self.0 > 0 && step.is_multiple_of(self.0)
    }
}

/// An optimizer that numbers every backward pass and checks, at every step,
/// which passes each parameter's gradient holds.
///
/// Two gradient styles, as in PyTorch:
/// - [`backward`](Guarded::backward) / [`step`](Guarded::step) /
///   [`zero_grad`](Guarded::zero_grad): gradients add up in the guard until
///   `zero_grad`, like `loss.backward()` into `.grad`;
/// - [`step_with`](Guarded::step_with): applies one `GradStore` once, like
///   `torch.autograd.grad`.
///
/// ```
/// use candle_core::{Device, Tensor, DType};
/// use candle_nn::{Optimizer, SGD, VarMap, VarBuilder, Module};
/// use gradguard::{Check, Guarded, Level};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let varmap = VarMap::new();
/// let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
/// let model = candle_nn::linear(2, 1, vb.pp("fc"))?;
/// let mut opt = Guarded::new(SGD::new(varmap.all_vars(), 0.1)?)
///     .with_varmap(&varmap)
///     .level(Check::Accumulated, Level::Deny)
///     .name("demo");
///
/// let x = Tensor::new(&[[1f32, 2.]], &Device::Cpu)?;
/// let loss = model.forward(&x)?.sqr()?.sum_all()?;
/// opt.backward(&loss)?;
/// assert!(opt.step()?.is_clean());
///
/// // The missing zero_grad: a second pass adds to the first one.
/// let loss = model.forward(&x)?.sqr()?.sum_all()?;
/// opt.backward(&loss)?;
/// let err = opt.step().unwrap_err();
/// assert_eq!(err.anomaly().unwrap().check, Check::Accumulated);
/// assert_eq!(err.anomaly().unwrap().params, ["fc.bias", "fc.weight"]);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Guarded<O: Optimizer> {
    inner: O,
    name: String,
    params: Params,
    ledger: Ledger,
    /// The guard's gradient buffers (PyTorch's `.grad`), parameters only.
    grads: Vec<Option<Tensor>>,
    /// The gradient tensor each parameter last got from `step_with`.
    last_applied_ids: Vec<Option<TensorId>>,
    accumulation_steps: u32,
    average: bool,
    levels: Levels,
    nonfinite_every: Option<Every>,
    norm_every: Option<Every>,
    steps: u64,
    limiter: WarnLimiter,
    series: Registration,
}

impl<O: Optimizer> Guarded<O> {
    /// Wraps `inner`. Register the parameters next, with
    /// [`with_varmap`](Self::with_varmap), [`with_vars`](Self::with_vars) or
    /// [`with_named_vars`](Self::with_named_vars).
    pub fn new(inner: O) -> Self {
        telemetry::describe_metrics();
        Self {
            inner,
            name: "default".to_string(),
            params: Params::default(),
            ledger: Ledger::new(0),
            grads: Vec::new(),
            last_applied_ids: Vec::new(),
            accumulation_steps: 1,
            average: false,
            levels: Levels::default(),
            nonfinite_every: None,
            norm_every: None,
            steps: 0,
            limiter: WarnLimiter::default(),
            series: Registration::default(),
        }
    }

    /// Watches every variable of `varmap`, under its name. Names whose last
    /// segment is `running_mean`, `running_var` or `num_batches_tracked`
    /// (BatchNorm statistics) and integer variables are buffers: never
    /// `missing`. Declare other buffers with [`buffers`](Self::buffers).
    pub fn with_varmap(self, varmap: &VarMap) -> Self {
        let mut pairs: Vec<(String, Var)> = varmap
            .data()
            .lock()
            .map(|data| data.iter().map(|(n, v)| (n.clone(), v.clone())).collect())
            .unwrap_or_default();
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
        self.with_named_vars(pairs)
    }

    /// Watches `vars`, named `param0`, `param1`, ... in that order.
    pub fn with_vars(self, vars: impl IntoIterator<Item = Var>) -> Self {
        let start = self.params.len();
        let named = vars
            .into_iter()
            .enumerate()
            .map(|(i, v)| (format!("param{}", start + i), v));
        self.with_named_vars(named)
    }

    /// Watches `(name, var)` pairs.
    pub fn with_named_vars<S: Into<String>>(
        mut self,
        pairs: impl IntoIterator<Item = (S, Var)>,
    ) -> Self {
        for (name, var) in pairs {
            self.params.push(name.into(), var);
        }
        let n = self.params.len();
        self.ledger = Ledger::new(n);
        self.grads = vec![None; n];
        self.last_applied_ids = vec![None; n];
        self
    }

    /// Declares parameters (by full name) that never get gradients, such as
    /// running statistics of a custom layer: they are never `missing`.
    pub fn buffers<I, S>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.params.add_buffers(names);
        self
    }

    /// Declares how many backward passes each step should hold (default 1).
    /// More is `accumulated`; fewer, when `k > 1`, is `short_accumulation`.
    pub fn accumulation_steps(mut self, k: u32) -> Self {
        self.accumulation_steps = k.max(1);
        self
    }

    /// Sets the level of one check.
    pub fn level(mut self, check: Check, level: Level) -> Self {
        self.levels.set(check, level);
        self
    }

    /// Sets the level of every check.
    pub fn level_all(mut self, level: Level) -> Self {
        for check in Check::ALL {
            self.levels.set(check, level);
        }
        self
    }

    /// Names the guard: the `optimizer` label of metrics and field of logs.
    /// Its counter series exist at 0 from here (an unnamed guard's from its
    /// first use, under `default`); name a guard once, before using it.
    pub fn name(mut self, name: &str) -> Self {
        self.name = name.to_string();
        self.series.named(&self.name, self.inner.learning_rate());
        self
    }

    /// Divides accumulated gradients by their pass count at each step
    /// (a mean instead of PyTorch's sum). Off by default.
    pub fn average_accumulated(mut self, on: bool) -> Self {
        self.average = on;
        self
    }

    /// Enables the `nonfinite` check every `every` steps (0 turns it off).
    /// It reads gradient values, which syncs the device: one small transfer
    /// per checked step.
    pub fn check_nonfinite(mut self, every: u64) -> Self {
        self.nonfinite_every = (every > 0).then_some(Every(every));
        self
    }

    /// Samples the global gradient norm every `every` steps into
    /// [`StepReport::grad_norm`] and `gradguard_grad_norm` (0 turns it off).
    pub fn sample_grad_norm(mut self, every: u64) -> Self {
        self.norm_every = (every > 0).then_some(Every(every));
        self
    }

    /// The guard's name.
    pub fn optimizer_name(&self) -> &str {
        &self.name
    }

    /// The wrapped optimizer.
    pub fn inner(&self) -> &O {
        &self.inner
    }

    /// The wrapped optimizer, mutable.
    pub fn inner_mut(&mut self) -> &mut O {
        &mut self.inner
    }

    /// Unwraps the optimizer.
    pub fn into_inner(self) -> O {
        self.inner
    }

    /// The inner optimizer's learning rate.
    pub fn learning_rate(&self) -> f64 {
        self.inner.learning_rate()
    }

    /// Sets the inner optimizer's learning rate.
    pub fn set_learning_rate(&mut self, lr: f64) {
        self.inner.set_learning_rate(lr)
    }

    /// Steps applied so far.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// Backward passes numbered so far.
    pub fn generation(&self) -> u64 {
        self.ledger.generation()
    }

    /// The level of `check`.
    pub fn level_of(&self, check: Check) -> Level {
        self.levels.get(check)
    }

    /// The watched parameters' names, in ledger order.
    pub fn param_names(&self) -> &[String] {
        self.params.names()
    }

    /// The ledger entry of a parameter.
    pub fn ledger_entry(&self, var: &Var) -> Option<ParamEntry> {
        self.params
            .index_of(var.id())
            .map(|i| self.ledger.entries()[i])
    }

    /// The gradient the guard holds for `var` (PyTorch's `p.grad`).
    pub fn grad(&self, var: &Var) -> Option<&Tensor> {
        self.params
            .index_of(var.id())
            .and_then(|i| self.grads[i].as_ref())
    }

    fn require_params(&self) -> Result<()> {
        if self.params.is_empty() {
            Err(Error::NoParameters)
        } else {
            Ok(())
        }
    }

    /// Like `loss.backward()` in PyTorch: computes the gradients of `loss` and
    /// adds those of the watched parameters into the guard's buffers.
    /// Returns the pass's generation.
    pub fn backward(&mut self, loss: &Tensor) -> Result<u64> {
        self.require_params()?;
        let span = tracing::debug_span!(
            target: "gradguard",
            "backward",
            optimizer = %self.name,
            generation = self.ledger.generation() + 1
        );
        let _enter = span.enter();
        let grads = loss.backward()?;
        self.accumulate(grads)
    }

    /// Adds one backward pass's gradients (a `GradStore` from
    /// `loss.backward()`) into the guard's buffers. Gradients of anything but
    /// the watched parameters (the input batch, activations) are dropped.
    /// Returns the pass's generation.
    pub fn accumulate(&mut self, grads: GradStore) -> Result<u64> {
        self.require_params()?;
        self.series.used(&self.name, self.inner.learning_rate());
        // Sum first, then commit: an error leaves buffers and ledger untouched.
        let mut sums = Vec::new();
        for (i, var) in self.params.vars().iter().enumerate() {
            if let Some(g) = grads.get(var) {
                let sum = match &self.grads[i] {
                    Some(old) => old.add(g)?.detach(),
                    None => g.detach(),
                };
                sums.push((i, sum));
            }
        }
        let generation = self.ledger.next_generation();
        for (i, sum) in sums {
            self.grads[i] = Some(sum);
            self.ledger.record(i, generation);
        }
        telemetry::backward_pass(&self.name);
        Ok(generation)
    }

    /// Like `optimizer.zero_grad()`: drops every held gradient.
    pub fn zero_grad(&mut self) {
        let span = tracing::debug_span!(target: "gradguard", "zero_grad", optimizer = %self.name);
        let _enter = span.enter();
        self.series.used(&self.name, self.inner.learning_rate());
        self.grads.iter_mut().for_each(|g| *g = None);
        self.ledger.clear();
        telemetry::zero_grad(&self.name);
    }

    /// Like `optimizer.step()`: checks the held gradients, then applies them
    /// through the inner optimizer. They stay held until
    /// [`zero_grad`](Self::zero_grad). A `Deny` check refuses the step and
    /// changes nothing.
    pub fn step(&mut self) -> Result<StepReport> {
        self.require_params()?;
        self.series.used(&self.name, self.inner.learning_rate());
        let start = Instant::now();
        let step = self.steps + 1;
        let span = self.step_span(step);
        let _enter = span.enter();

        let view = StepView {
            entries: self.ledger.entries(),
            trainable: self.params.trainable(),
            accumulation_steps: self.accumulation_steps,
        };
        let generations = view.generations();
        span.record("generations", generations);
        let findings = check::run(&view);
        let held: Vec<(usize, Tensor)> = self
            .grads
            .iter()
            .enumerate()
            .filter_map(|(i, g)| g.clone().map(|g| (i, g)))
            .collect();
        let (findings, grad_norm) = self.sample_values(step, findings, &held)?;
        let anomalies = self.judge(step, findings)?;

        let mut store = GradStore::default();
        for (i, grad) in held {
            let count = self.ledger.entries()[i].held.map_or(1, |h| h.count);
            let grad = if self.average && count > 1 {
                (grad / f64::from(count))?
            } else {
                grad
            };
            store.insert(self.params.vars()[i].as_tensor(), grad);
        }
        self.inner.step(&store)?;
        self.ledger.mark_applied();
        Ok(self.finish_step(start, generations, anomalies, grad_norm))
    }

    /// Like an update with `torch.autograd.grad`: checks `grads` and applies
    /// exactly this store once. Passing the same store again (the same
    /// gradient tensors) is `stale`. The guard's own buffers are not used.
    pub fn step_with(&mut self, grads: &GradStore) -> Result<StepReport> {
        self.require_params()?;
        self.series.used(&self.name, self.inner.learning_rate());
        let start = Instant::now();
        let step = self.steps + 1;
        let span = self.step_span(step);
        let _enter = span.enter();

        // The store is one pass; it is new unless every gradient in it was
        // applied before.
        let ids: Vec<Option<TensorId>> = self
            .params
            .vars()
            .iter()
            .map(|v| grads.get(v).map(Tensor::id))
            .collect();
        let new: Vec<bool> = ids
            .iter()
            .zip(&self.last_applied_ids)
            .map(|(id, last)| id.is_some() && id != last)
            .collect();
        let fresh = new.contains(&true);
        let generation = self.ledger.generation() + u64::from(fresh);
        let entries: Vec<ParamEntry> = (0..ids.len())
            .map(|i| {
                let mut e = self.ledger.entries()[i];
                e.held = if new[i] {
                    Some(GenSpan::single(generation))
                } else if ids[i].is_some() {
                    e.applied.map(GenSpan::single)
                } else {
                    None
                };
                e
            })
            .collect();
        let view = StepView {
            entries: &entries,
            trainable: self.params.trainable(),
            accumulation_steps: 1,
        };
        let generations = view.generations();
        span.record("generations", generations);
        let findings = check::run(&view);
        let held: Vec<(usize, Tensor)> = self
            .params
            .vars()
            .iter()
            .enumerate()
            .filter_map(|(i, v)| grads.get(v).map(|g| (i, g.clone())))
            .collect();
        let (findings, grad_norm) = self.sample_values(step, findings, &held)?;
        let anomalies = self.judge(step, findings)?;

        self.inner.step(grads)?;
        if fresh {
            self.ledger.next_generation();
            telemetry::backward_pass(&self.name);
        }
        for i in (0..ids.len()).filter(|&i| new[i]) {
            let e = self.ledger.entry_mut(i);
            e.applied = Some(generation);
            e.ever_had_grad = true;
        }
        for (last, id) in self.last_applied_ids.iter_mut().zip(ids) {
            if id.is_some() {
                *last = id;
            }
        }
        Ok(self.finish_step(start, generations, anomalies, grad_norm))
    }

    fn step_span(&self, step: u64) -> tracing::Span {
        tracing::info_span!(
            target: "gradguard",
            "step",
            optimizer = %self.name,
            step,
            generations = tracing::field::Empty,
            lr = self.inner.learning_rate()
        )
    }

    /// Reads gradient values when the `nonfinite` check or norm sampling is
    /// due this step: one device transfer for all parameters.
    fn sample_values(
        &self,
        step: u64,
        mut findings: Vec<Finding>,
        held: &[(usize, Tensor)],
    ) -> Result<(Vec<Finding>, Option<f64>)> {
        let want_nonfinite = self.nonfinite_every.is_some_and(|e| e.due(step));
        let want_norm = self.norm_every.is_some_and(|e| e.due(step));
        if !(want_nonfinite || want_norm) || held.is_empty() {
            return Ok((findings, None));
        }
        let mut scalars = Vec::with_capacity(held.len() * 2);
        for (_, g) in held {
            let g = g.to_dtype(DType::F32)?;
            // g - g is 0 for a finite value and NaN for NaN or ±Inf: the sum
            // is NaN exactly when some element is not finite.
            scalars.push(g.sub(&g)?.sum_all()?);
            scalars.push(g.sqr()?.sum_all()?);
        }
        let values = Tensor::stack(&scalars, 0)?.to_vec1::<f32>()?;
        let mut bad = Vec::new();
        let mut sq = 0f64;
        for (k, (i, _)) in held.iter().enumerate() {
            if !values[2 * k].is_finite() && self.params.trainable()[*i] {
                bad.push(*i);
            }
            sq += f64::from(values[2 * k + 1]);
        }
        if want_nonfinite && !bad.is_empty() {
            findings.push(Finding {
                check: Check::NonFinite,
                params: bad,
                generations: 0,
                expected: 0,
            });
        }
        let norm = want_norm.then(|| sq.sqrt());
        if let Some(norm) = norm {
            telemetry::grad_norm(&self.name, norm);
        }
        Ok((findings, norm))
    }

    /// Turns findings into anomalies: counts, logs, and refuses the step with
    /// the first `Deny` one.
    fn judge(&mut self, step: u64, findings: Vec<Finding>) -> Result<Vec<Anomaly>> {
        let anomalies: Vec<Anomaly> = findings
            .iter()
            .map(|f| Anomaly {
                check: f.check,
                level: self.levels.get(f.check),
                step,
                optimizer: self.name.clone(),
                params: self.params.names_of(&f.params),
                generations: f.generations,
                expected: f.expected,
            })
            .collect();
        for (a, f) in anomalies.iter().zip(&findings) {
            telemetry::anomaly(&self.name, a.check);
            let how = self.limiter.admit(a);
            warnings::emit(a, how);
            if a.check == Check::Missing && a.level != Level::Allow {
                let never: Vec<String> = f
                    .params
                    .iter()
                    .filter(|&&i| !self.ledger.entries()[i].ever_had_grad)
                    .map(|&i| self.params.names()[i].clone())
                    .collect();
                self.limiter.never_received(a, never);
            }
        }
        match anomalies.iter().find(|a| a.level == Level::Deny) {
            Some(denied) => Err(Error::Denied(denied.clone())),
            None => Ok(anomalies),
        }
    }

    fn finish_step(
        &mut self,
        start: Instant,
        generations: u32,
        anomalies: Vec<Anomaly>,
        grad_norm: Option<f64>,
    ) -> StepReport {
        self.steps += 1;
        telemetry::step(
            &self.name,
            generations,
            start.elapsed(),
            self.inner.learning_rate(),
        );
        StepReport {
            step: self.steps,
            generations,
            anomalies,
            grad_norm,
        }
    }
}
