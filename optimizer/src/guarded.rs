//! [`Guarded`]: any `candle_nn::Optimizer`, with a gradient ledger checked at
//! every step.

use std::collections::BTreeSet;
use std::fmt;
use std::time::Instant;

use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor, Var};
use candle_nn::{Optimizer, VarMap};

use crate::check::{Check, Finding, Level, Levels, StepView};
use crate::error::{Error, Result};
use crate::ledger::{self, Generation, Ledger, ParamEntry};
use crate::params::{Params, Watched};
use crate::passes::PassMemory;
use crate::report::{Anomaly, StepReport};
use crate::telemetry::{self, Series};
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
/// Both run one check pipeline. A guard is also a `candle_nn::Optimizer`
/// whose trait `step(&grads)` is `step_with` (see [`crate::drop_in`]), and
/// [`from_varmap`](Guarded::from_varmap) builds the inner optimizer from the
/// watched variables.
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
    /// The latest passes, recognised by their gradient tensors.
    memory: PassMemory,
    /// The guard's gradient buffers (PyTorch's `.grad`), parameters only.
    grads: Vec<Option<Tensor>>,
    /// The ledger entries a step checks, reused from step to step.
    scratch: Vec<ParamEntry>,
    /// The `VarMap` given to `with_varmap` on a guard with no list:
    /// variables added to it later are watched from the next call.
    varmap: Option<WatchedVarMap>,
    /// The parameters came as a list (the optimizer's own), not as a whole
    /// `VarMap`: `with_varmap` then only names them.
    listed: bool,
    /// The inner optimizer was built over exactly the watched list, so the
    /// caller's store can reach it as it is (it reads only its own variables).
    exact: bool,
    /// Declared backward passes per step, if declared.
    declared: Option<u32>,
    average: bool,
    levels: Levels,
    nonfinite_every: Option<Every>,
    norm_every: Option<Every>,
    steps: u64,
    limiter: WarnLimiter,
    series: Series,
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
            ledger: Ledger::default(),
            memory: PassMemory::default(),
            grads: Vec::new(),
            scratch: Vec::new(),
            varmap: None,
            listed: false,
            exact: false,
            declared: None,
            average: false,
            levels: Levels::default(),
            nonfinite_every: None,
            norm_every: None,
            steps: 0,
            limiter: WarnLimiter::default(),
            series: Series::default(),
        }
    }

    /// Builds the inner optimizer from every variable of `varmap` (as
    /// candle's `Optimizer::new(varmap.all_vars(), config)` does) and watches
    /// the same variables: one list of parameters for both.
    ///
    /// ```
    /// use candle_core::{DType, Device};
    /// use candle_nn::{AdamW, ParamsAdamW, VarBuilder, VarMap};
    /// use gradguard::Guarded;
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let varmap = VarMap::new();
    /// let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    /// let _model = candle_nn::linear(4, 2, vb.pp("fc"))?;
    /// let opt = Guarded::<AdamW>::from_varmap(&varmap, ParamsAdamW::default())?;
    /// assert_eq!(opt.param_names(), ["fc.bias", "fc.weight"]);
    /// # Ok(()) }
    /// ```
    pub fn from_varmap(varmap: &VarMap, config: O::Config) -> candle_core::Result<Self> {
        Ok(Self::new(O::new(varmap.all_vars(), config)?)
            .with_varmap(varmap)
            .exact())
    }

    /// Builds the inner optimizer over exactly `vars` (as
    /// `Optimizer::new(vars, config)` does) and watches exactly those, named
    /// from `varmap`: the adoption for an optimizer over part of a `VarMap`
    /// (an actor and its target network, a frozen base with trainable
    /// adapters, a student next to its teacher). Variables of `varmap`
    /// outside `vars` are not watched, so never `missing`; a variable of
    /// `vars` that `varmap` does not hold is named `param<i>`.
    ///
    /// ```
    /// use candle_core::{DType, Device, Module, Tensor};
    /// use candle_nn::{AdamW, ParamsAdamW, VarBuilder, VarMap};
    /// use gradguard::{vars_under, Check, Guarded, Level};
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let varmap = VarMap::new();
    /// let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    /// let actor = candle_nn::linear(4, 2, vb.pp("actor"))?;
    /// let _target = candle_nn::linear(4, 2, vb.pp("actor_target"))?; // never trained
    ///
    /// let mut opt = Guarded::<AdamW>::from_vars(
    ///     vars_under(&varmap, "actor"),
    ///     &varmap,
    ///     ParamsAdamW::default(),
    /// )?
    /// .level_all(Level::Deny);
    /// assert_eq!(opt.param_names(), ["actor.bias", "actor.weight"]);
    ///
    /// let x = Tensor::ones((1, 4), DType::F32, &Device::Cpu)?;
    /// opt.backward(&actor.forward(&x)?.sum_all()?)?;
    /// assert!(opt.step()?.is_clean()); // the target network is not `missing`
    /// # Ok(()) }
    /// ```
    pub fn from_vars(
        vars: Vec<Var>,
        varmap: &VarMap,
        config: O::Config,
    ) -> candle_core::Result<Self> {
        let inner = O::new(vars.clone(), config)?;
        Ok(Self::new(inner).with_vars(vars).with_varmap(varmap).exact())
    }

    /// Marks the inner optimizer as built over exactly the watched list.
    pub(crate) fn exact(mut self) -> Self {
        self.exact = true;
        self
    }

    /// On a guard with no parameters yet: watches every variable of
    /// `varmap`, under its name. On a guard built over a list
    /// ([`from_vars`](Self::from_vars), [`with_vars`](Self::with_vars),
    /// `Optimizer::new`): names the listed variables from `varmap` and
    /// watches nothing more.
    ///
    /// Names whose last segment is `running_mean`, `running_var` or
    /// `num_batches_tracked` (BatchNorm statistics) and integer variables
    /// are buffers: never `missing`. Declare other buffers with
    /// [`buffers`](Self::buffers).
    ///
    /// Watching a whole `VarMap`, variables added to it later (a layer built
    /// after the guard) are watched from the next `backward`, `accumulate`
    /// or step, with a warning: the inner optimizer was built before them and
    /// updates them only if it was given them.
    pub fn with_varmap(mut self, varmap: &VarMap) -> Self {
        let pairs = varmap_pairs(varmap);
        if self.listed {
            for (name, var) in pairs {
                self.params.rename(var.id(), name);
            }
            return self;
        }
        let seen = pairs.len();
        for (name, var) in pairs {
            self.params.push(name, var);
        }
        self.grow();
        self.varmap = Some(WatchedVarMap {
            varmap: varmap.clone(),
            seen,
        });
        self
    }

    /// How the guard learned its parameters: a list, or a whole `VarMap`.
    pub fn watched(&self) -> Watched {
        if self.listed && self.varmap.is_none() {
            Watched::List
        } else {
            Watched::VarMap
        }
    }

    /// Watches `vars`, named `param0`, `param1`, ... in that order (name them
    /// with [`with_varmap`](Self::with_varmap)).
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
        self.listed = true;
        for (name, var) in pairs {
            self.params.push(name.into(), var);
        }
        self.grow();
        self
    }

    /// Sizes the ledger and the buffers to the watched parameters.
    fn grow(&mut self) {
        let n = self.params.len();
        self.ledger.resize(n);
        self.grads.resize(n, None);
    }

    /// Watches the variables added to the `VarMap` since the last call.
    fn sync_varmap(&mut self) {
        let Some(watched) = &mut self.varmap else {
            return;
        };
        let len = watched.varmap.data().lock().map_or(0, |d| d.len());
        if len == watched.seen {
            return;
        }
        watched.seen = len;
        let added: Vec<(String, Var)> = varmap_pairs(&watched.varmap)
            .into_iter()
            .filter(|(_, v)| self.params.index_of(v.id()).is_none())
            .collect();
        if added.is_empty() {
            return;
        }
        let names: Vec<String> = added.iter().map(|(n, _)| n.clone()).collect();
        for (name, var) in added {
            self.params.push(name, var);
        }
        self.grow();
        warnings::added_to_varmap(&self.name, &names);
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

    /// Declares `k` backward passes per step, which turns on the count
    /// checks: a step after fewer than `k` backward passes since the last
    /// reset is `short_accumulation`, after more is `excess_accumulation`.
    ///
    /// `k` counts backward calls ([`backward`](Self::backward) or
    /// [`accumulate`](Self::accumulate)) for the whole guard since the last
    /// [`zero_grad`](Self::zero_grad), whichever parameters each reaches: a
    /// micro-batch with two losses and two backward calls is two passes (one
    /// if the losses are summed first). A [`step_with`](Self::step_with)
    /// store is one pass. Without a declaration any number of passes per
    /// step is fine; `accumulated` (a pass applied twice) runs either way.
    pub fn accumulation_steps(mut self, k: u32) -> Self {
        self.declared = Some(k.max(1));
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

    /// The generation of the newest backward pass (how many were numbered).
    pub fn generation(&self) -> u64 {
        self.ledger.generation()
    }

    /// Backward passes added to the buffers since the last `zero_grad`, for
    /// the whole guard (what `accumulation_steps(k)` is checked against).
    pub fn passes_since_reset(&self) -> u32 {
        self.ledger.passes_since_reset()
    }

    /// The declared backward passes per step, if declared.
    pub fn declared_accumulation_steps(&self) -> Option<u32> {
        self.declared
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

    /// Bytes of the guard's own bookkeeping: the ledger, the remembered
    /// passes and the parameter list (names included), not the gradient
    /// buffers (tensors the training holds anyway).
    pub fn bookkeeping_bytes(&self) -> usize {
        self.ledger.bytes()
            + self.scratch.capacity() * std::mem::size_of::<ParamEntry>()
            + self.memory.bytes()
            + self.params.bytes()
    }

    /// The gradient the guard holds for `var` (PyTorch's `p.grad`).
    pub fn grad(&self, var: &Var) -> Option<&Tensor> {
        self.params
            .index_of(var.id())
            .and_then(|i| self.grads[i].as_ref())
    }

    fn require_params(&mut self) -> Result<()> {
        self.sync_varmap();
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
        self.accumulate(&grads)
    }

    /// Adds one backward pass's gradients (a `GradStore` from
    /// `loss.backward()`) into the guard's buffers, like `backward` does.
    /// Gradients of anything but the watched parameters are dropped. The
    /// store is only read, so one pass can feed several guards. A store the
    /// guard saw before (among the latest [`REMEMBERED_PASSES`] passes) keeps
    /// its generation: adding it again after a step that applied it is
    /// `accumulated` or `stale`. Returns the pass's generation.
    ///
    /// [`REMEMBERED_PASSES`]: crate::REMEMBERED_PASSES
    pub fn accumulate(&mut self, grads: &GradStore) -> Result<u64> {
        self.require_params()?;
        self.series.used(&self.name, self.inner.learning_rate());
        let pass = self.read_pass(grads, false);
        // Sum first, then commit: an error leaves buffers and ledger untouched.
        let mut sums = Vec::with_capacity(pass.grads.len());
        for &(i, grad, _) in &pass.grads {
            let sum = match &self.grads[i] {
                Some(old) => old.add(grad)?.detach(),
                None => grad.detach(),
            };
            sums.push(sum);
        }
        let generation = pass.commit(&mut self.ledger, &mut self.memory, false);
        // A known pass is buffered once more per store, not once per
        // parameter it covers.
        let mut known_passes = BTreeSet::new();
        for (&(i, _, known), sum) in pass.grads.iter().zip(sums) {
            self.grads[i] = Some(sum);
            let (g, applied) = known.unwrap_or((generation, false));
            self.ledger.record(i, g, applied);
            if known.is_some() {
                known_passes.insert(g);
            }
        }
        for g in known_passes {
            self.memory.buffered(g);
        }
        self.ledger.count_pass();
        if pass.new {
            self.series.backward_pass();
        }
        Ok(generation)
    }

    /// The watched gradients of `grads`, each with the pass that made it when
    /// the guard saw it before; `applies` when a step applies the store.
    fn read_pass<'g>(&self, grads: &'g GradStore, applies: bool) -> PassRead<'g> {
        let mut read = PassRead {
            grads: Vec::with_capacity(self.params.len()),
            new: false,
            next: self.ledger.generation() + 1,
            only_watched: false,
        };
        for (i, var) in self.params.vars().iter().enumerate() {
            if let Some(g) = grads.get(var) {
                let known = self.memory.lookup(i, g.id());
                read.new |= known.is_none();
                read.grads.push((i, g, known));
            }
        }
        // A store with no watched gradient is still a (new) backward pass.
        read.new |= read.grads.is_empty();
        // Counting the store's other gradients walks all of it: only needed
        // when the inner optimizer may hold variables the guard does not.
        read.only_watched = applies && (self.exact || grads.get_ids().count() == read.grads.len());
        read
    }

    /// Like `optimizer.zero_grad()`: drops every held gradient and restarts
    /// the pass count.
    pub fn zero_grad(&mut self) {
        let span = tracing::debug_span!(target: "gradguard", "zero_grad", optimizer = %self.name);
        let _enter = span.enter();
        self.series.used(&self.name, self.inner.learning_rate());
        self.grads.iter_mut().for_each(|g| *g = None);
        self.ledger.clear();
        self.memory.buffers_cleared();
        self.series.zero_grad();
    }

    /// Like `optimizer.step()`: checks the held gradients, then applies them
    /// through the inner optimizer. They stay held until
    /// [`zero_grad`](Self::zero_grad). A `Deny` check refuses the step and
    /// changes nothing.
    ///
    /// This inherent method is what `opt.step()` calls. candle's trait method
    /// `Optimizer::step(&mut opt, &grads)` is [`step_with`](Self::step_with).
    pub fn step(&mut self) -> Result<StepReport> {
        self.require_params()?;
        self.series.used(&self.name, self.inner.learning_rate());
        // The buffers are lent to the pipeline (which never reads them
        // through `self`) and put back whatever the outcome.
        let buffers = std::mem::take(&mut self.grads);
        let held: Vec<(usize, &Tensor)> = buffers
            .iter()
            .enumerate()
            .filter_map(|(i, g)| g.as_ref().map(|g| (i, g)))
            .collect();
        let mut entries = std::mem::take(&mut self.scratch);
        entries.clear();
        entries.extend_from_slice(self.ledger.entries());
        let pending = Pending {
            entries: &entries,
            passes: self.ledger.passes_since_reset(),
            held,
            store: None,
        };
        let report = self.check_and_apply(pending);
        self.scratch = entries;
        self.grads = buffers;
        let report = report?;
        self.ledger.mark_applied();
        self.memory.buffers_applied();
        Ok(report)
    }

    /// Like an update with `torch.autograd.grad`: checks `grads` as one
    /// backward pass and applies exactly this store once, through the same
    /// checks as [`step`](Self::step). A store applied before (the same
    /// gradient tensors, among the latest [`REMEMBERED_PASSES`] passes; A, B,
    /// then A again) is `stale`. The guard's own buffers are not used.
    ///
    /// Only the watched parameters' gradients are applied, as with `step`:
    /// the guard's list of parameters is the one list, in both styles. A
    /// `GradStore` also holds gradients of the input batch and of any
    /// variable the guard was not told about, and cannot tell them apart, so
    /// register every trainable variable: [`with_varmap`](Self::with_varmap)
    /// and [`from_varmap`](Self::from_varmap) do. When the guard built the
    /// inner optimizer itself over exactly its list
    /// ([`from_vars`](Self::from_vars), [`from_varmap`](Self::from_varmap),
    /// `Optimizer::new`), the store reaches it as it is (it reads only its
    /// own variables' gradients); otherwise the guard builds a store of the
    /// watched gradients.
    ///
    /// [`REMEMBERED_PASSES`]: crate::REMEMBERED_PASSES
    pub fn step_with(&mut self, grads: &GradStore) -> Result<StepReport> {
        self.require_params()?;
        self.series.used(&self.name, self.inner.learning_rate());
        let pass = self.read_pass(grads, true);
        let mut entries = std::mem::take(&mut self.scratch);
        entries.clear();
        entries.extend(self.ledger.entries().iter().map(|e| e.applying(None)));
        for &(i, _, known) in &pass.grads {
            let (g, applied) = known.unwrap_or((pass.next, false));
            entries[i] = entries[i].applying(Some(ledger::single(g, applied)));
        }
        let pending = Pending {
            held: pass.grads.iter().map(|&(i, g, _)| (i, g)).collect(),
            entries: &entries,
            passes: 1,
            store: pass.only_watched.then_some(grads),
        };
        let report = self.check_and_apply(pending);
        self.scratch = entries;
        let report = report?;
        let generation = pass.commit(&mut self.ledger, &mut self.memory, true);
        for &(i, _, known) in &pass.grads {
            let (g, applied) = known.unwrap_or((generation, false));
            self.ledger.mark_applied_one(i, ledger::single(g, applied));
        }
        let known: BTreeSet<Generation> = pass
            .grads
            .iter()
            .filter_map(|(_, _, k)| k.map(|(g, _)| g))
            .collect();
        for g in known {
            let in_buffers = self.memory.applied(g);
            if in_buffers > 0 {
                for (i, _, k) in &pass.grads {
                    if k.is_some_and(|(kg, _)| kg == g) {
                        self.ledger.reapplied_in_buffer(*i, in_buffers);
                    }
                }
            }
        }
        if pass.new {
            self.series.backward_pass();
        }
        Ok(report)
    }

    /// The one check pipeline of `step` and `step_with`: ledger checks,
    /// averaging, value checks on what is applied, levels, then the inner
    /// optimizer's step.
    fn check_and_apply(&mut self, pending: Pending<'_>) -> Result<StepReport> {
        let start = Instant::now();
        let step = self.steps + 1;
        let span = self.step_span(step);
        let _enter = span.enter();

        let view = StepView {
            entries: pending.entries,
            trainable: self.params.trainable(),
            declared: self.declared,
            passes: pending.passes,
        };
        let (findings, passes) = view.run();
        span.record("passes", passes);

        // Averaged gradients are new tensors, kept here while the step runs.
        let averaged: Vec<(usize, Tensor)> = if self.average {
            pending
                .held
                .iter()
                .filter_map(|&(i, g)| {
                    let count = pending.entries[i].held.map_or(1, |h| h.passes);
                    (count > 1).then(|| Ok((i, (g / f64::from(count))?)))
                })
                .collect::<Result<_>>()?
        } else {
            Vec::new()
        };
        // Both lists ascend by parameter index: one cursor merges them.
        let mut applied = pending.held;
        let mut averages = averaged.iter().peekable();
        for slot in &mut applied {
            if let Some((_, g)) = averages.next_if(|(i, _)| *i == slot.0) {
                slot.1 = g;
            }
        }
        let (findings, grad_norm) = self.sample_values(step, findings, &applied)?;
        if let Some(norm) = grad_norm {
            self.series.grad_norm(norm);
        }
        let anomalies = self.judge(step, findings, pending.entries)?;

        match pending.store {
            Some(store) if averaged.is_empty() => self.inner.step(store)?,
            _ => {
                let mut store = GradStore::default();
                for (i, grad) in applied {
                    store.insert(self.params.vars()[i].as_tensor(), grad.clone());
                }
                self.inner.step(&store)?;
            }
        }
        Ok(self.finish_step(start, passes, anomalies, grad_norm))
    }

    fn step_span(&self, step: u64) -> tracing::Span {
        tracing::info_span!(
            target: "gradguard",
            "step",
            optimizer = %self.name,
            step,
            passes = tracing::field::Empty,
            lr = self.inner.learning_rate()
        )
    }

    /// Reads gradient values when the `nonfinite` check or norm sampling is
    /// due this step: one device transfer for all parameters. Each reduction
    /// runs in the gradient's own dtype and the norm's squares add up in F64,
    /// so a finite F64 gradient beyond F32's range stays finite.
    fn sample_values(
        &self,
        step: u64,
        mut findings: Vec<Finding>,
        applied: &[(usize, &Tensor)],
    ) -> Result<(Vec<Finding>, Option<f64>)> {
        let want_nonfinite = self.nonfinite_every.is_some_and(|e| e.due(step));
        let want_norm = self.norm_every.is_some_and(|e| e.due(step));
        if !(want_nonfinite || want_norm) || applied.is_empty() {
            return Ok((findings, None));
        }
        let mut scalars = Vec::with_capacity(applied.len() * 2);
        for (_, g) in applied {
            if want_nonfinite {
                // g - g is 0 for a finite value and NaN for NaN or ±Inf: the
                // sum is NaN exactly when some element is not finite.
                scalars.push(g.sub(g)?.sum_all()?.to_dtype(DType::F64)?);
            }
            if want_norm {
                scalars.push(g.to_dtype(DType::F64)?.sqr()?.sum_all()?);
            }
        }
        let values = Tensor::stack(&scalars, 0)?.to_vec1::<f64>()?;
        let per = usize::from(want_nonfinite) + usize::from(want_norm);
        let mut bad = Vec::new();
        let mut sq = 0f64;
        for (k, (i, _)) in applied.iter().enumerate() {
            let v = &values[k * per..(k + 1) * per];
            if want_nonfinite && !v[0].is_finite() && self.params.trainable()[*i] {
                bad.push(*i);
            }
            if want_norm {
                sq += v[per - 1];
            }
        }
        if want_nonfinite && !bad.is_empty() {
            findings.push(Finding {
                check: Check::NonFinite,
                params: bad,
                passes: 0,
                reapplied: 0,
            });
        }
        Ok((findings, want_norm.then(|| sq.sqrt())))
    }

    /// Turns findings into anomalies: counts, logs, and refuses the step with
    /// the first `Deny` one.
    fn judge(
        &mut self,
        step: u64,
        findings: Vec<Finding>,
        entries: &[ParamEntry],
    ) -> Result<Vec<Anomaly>> {
        let anomalies: Vec<Anomaly> = findings
            .iter()
            .map(|f| Anomaly {
                check: f.check,
                level: self.levels.get(f.check),
                step,
                optimizer: self.name.clone(),
                params: self.params.names_of(&f.params),
                passes: f.passes,
                reapplied: f.reapplied,
                declared: self.declared,
                watched: self.watched(),
            })
            .collect();
        for (a, f) in anomalies.iter().zip(&findings) {
            self.series.anomaly(a.check);
            let how = self.limiter.admit(a);
            warnings::emit(a, how);
            if a.check == Check::Missing && a.level != Level::Allow {
                let never: Vec<String> = f
                    .params
                    .iter()
                    .filter(|&&i| !entries[i].ever_had_grad)
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
        passes: u32,
        anomalies: Vec<Anomaly>,
        grad_norm: Option<f64>,
    ) -> StepReport {
        self.steps += 1;
        self.series
            .step(passes, start.elapsed(), self.inner.learning_rate());
        StepReport {
            step: self.steps,
            passes,
            anomalies,
            grad_norm,
        }
    }
}

/// What a step applies, for the shared pipeline.
struct Pending<'a> {
    /// Ledger entries holding what this step applies.
    entries: &'a [ParamEntry],
    /// Backward passes counted for the whole guard since the last reset.
    passes: u32,
    /// The gradients to apply, by parameter index.
    held: Vec<(usize, &'a Tensor)>,
    /// The caller's store, when it can reach the inner optimizer as it is.
    store: Option<&'a GradStore>,
}

/// The pass that made a gradient, and whether a step applied it, when the
/// guard saw that gradient before.
type Known = Option<(Generation, bool)>;

/// One `GradStore` as the guard reads it.
struct PassRead<'g> {
    /// Watched gradients: parameter index, tensor, and the pass that made it
    /// with whether a step applied it, when the guard saw it before.
    grads: Vec<(usize, &'g Tensor, Known)>,
    /// Whether the store holds something the guard has not seen: a new pass.
    new: bool,
    /// The generation a new pass gets.
    next: Generation,
    /// The store may reach the inner optimizer as it is: it holds no other
    /// gradients (of the input batch, constants, unwatched variables: a
    /// `GradStore` cannot tell these apart), or the inner optimizer was built
    /// over exactly the watched list and reads only those.
    only_watched: bool,
}

impl PassRead<'_> {
    /// Numbers the pass (when new) and remembers its gradient tensors.
    fn commit(&self, ledger: &mut Ledger, memory: &mut PassMemory, applied: bool) -> Generation {
        if !self.new {
            // Every gradient is a known one: the newest of their passes.
            return self
                .grads
                .iter()
                .filter_map(|(_, _, known)| known.map(|(g, _)| g))
                .max()
                .unwrap_or(self.next - 1);
        }
        let generation = ledger.next_generation();
        let new = self
            .grads
            .iter()
            .filter(|(_, _, known)| known.is_none())
            .map(|(i, g, _)| (*i, g.id()));
        memory.remember(generation, new, applied);
        generation
    }
}

/// The `VarMap` a guard watches, and how many variables it had when last read.
#[derive(Clone)]
struct WatchedVarMap {
    varmap: VarMap,
    seen: usize,
}

impl fmt::Debug for WatchedVarMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WatchedVarMap")
            .field("seen", &self.seen)
            .finish_non_exhaustive()
    }
}

/// The variables of `varmap`, sorted by name.
fn varmap_pairs(varmap: &VarMap) -> Vec<(String, Var)> {
    let mut pairs: Vec<(String, Var)> = varmap
        .data()
        .lock()
        .map(|data| data.iter().map(|(n, v)| (n.clone(), v.clone())).collect())
        .unwrap_or_default();
    pairs.sort_by(|a, b| a.0.cmp(&b.0));
    pairs
}
