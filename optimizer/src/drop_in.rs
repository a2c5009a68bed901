//! gradguard as a drop-in for candle code: [`Guarded`] is a
//! `candle_nn::Optimizer`, and [`GuardExt::guarded`] wraps an existing one in
//! one line.
//!
//! Through the trait, a guard is candle-style: `Optimizer::step(&mut opt,
//! &grads)` and `backward_step(&loss)` are [`Guarded::step_with`], so code
//! generic over `O: Optimizer` (candle's training examples) takes a guard
//! unchanged. A check at `Level::Deny` comes back as a `candle_core::Error`
//! that wraps [`Error::Denied`](crate::Error::Denied): read the anomaly with [`Error::denied_in`](crate::Error::denied_in).
//!
//! Method-call syntax prefers inherent methods, so on a `Guarded` value
//! `opt.step()` is the PyTorch-style inherent step (apply the guard's
//! buffers) and `opt.step(&grads)` does not compile: write
//! `Optimizer::step(&mut opt, &grads)` or `opt.step_with(&grads)`. Likewise
//! `Guarded::new(inner)` wraps an optimizer, while
//! `<Guarded<SGD> as Optimizer>::new(vars, config)` builds one.
//!
//! ```
//! use candle_core::{DType, Device, Tensor};
//! use candle_nn::{AdamW, Module, Optimizer, ParamsAdamW, VarBuilder, VarMap};
//! use gradguard::{Check, Error, GuardExt, Level};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let varmap = VarMap::new();
//! let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
//! let model = candle_nn::linear(3, 1, vb.pp("fc"))?;
//! // The one-line change: `.guarded(&varmap)` after the optimizer.
//! let mut opt = AdamW::new(varmap.all_vars(), ParamsAdamW::default())?
//!     .guarded(&varmap)
//!     .level(Check::Stale, Level::Deny);
//!
//! let x = Tensor::ones((2, 3), DType::F32, &Device::Cpu)?;
//! opt.backward_step(&model.forward(&x)?.sum_all()?)?;
//!
//! // The same store twice: the second step is refused.
//! let grads = model.forward(&x)?.sum_all()?.backward()?;
//! Optimizer::step(&mut opt, &grads)?;
//! let err = Optimizer::step(&mut opt, &grads).unwrap_err();
//! assert_eq!(Error::denied_in(&err).unwrap().check, Check::Stale);
//! # Ok(()) }
//! ```

use candle_core::backprop::GradStore;
use candle_core::Var;
use candle_nn::{Optimizer, VarMap};

use crate::guarded::Guarded;

impl<O: Optimizer> Optimizer for Guarded<O> {
    type Config = O::Config;

    /// Builds the inner optimizer from `vars` and watches the same variables
    /// (named `param0`, `param1`, ...; use [`Guarded::from_varmap`] for names).
    fn new(vars: Vec<Var>, config: O::Config) -> candle_core::Result<Self> {
        let inner = O::new(vars.clone(), config)?;
        Ok(Guarded::new(inner).with_vars(vars).exact())
    }

    /// [`Guarded::step_with`]; a refused step is a `candle_core::Error`
    /// wrapping [`Error::Denied`](crate::Error::Denied).
    fn step(&mut self, grads: &GradStore) -> candle_core::Result<()> {
        self.step_with(grads)
            .map(|_| ())
            .map_err(candle_core::Error::from)
    }

    fn learning_rate(&self) -> f64 {
        self.inner().learning_rate()
    }

    fn set_learning_rate(&mut self, lr: f64) {
        self.inner_mut().set_learning_rate(lr)
    }
}

/// Wraps any `candle_nn::Optimizer` in a guard, in one line.
pub trait GuardExt: Optimizer {
    /// `Guarded::new(self).with_varmap(varmap)`: watches every variable of
    /// `varmap` under its name.
    ///
    /// ```
    /// # use candle_nn::{Optimizer, VarMap, SGD};
    /// use gradguard::GuardExt;
    /// # fn main() -> candle_core::Result<()> {
    /// # let varmap = VarMap::new();
    /// let opt = SGD::new(varmap.all_vars(), 0.1)?.guarded(&varmap);
    /// # Ok(()) }
    /// ```
    fn guarded(self, varmap: &VarMap) -> Guarded<Self> {
        Guarded::new(self).with_varmap(varmap)
    }

    /// `Guarded::new(self)` watching exactly `vars`, the list this optimizer
    /// was built over, named from `varmap`: the one-line form for an
    /// optimizer over part of a `VarMap` (see [`Guarded::from_vars`]).
    /// Variables of `varmap` outside `vars` are never `missing`, and their
    /// gradients never reach the optimizer, even if it was built over more.
    ///
    /// ```
    /// # use candle_core::{DType, Device};
    /// # use candle_nn::{Optimizer, VarBuilder, VarMap, SGD};
    /// use gradguard::{vars_under, GuardExt};
    /// # fn main() -> candle_core::Result<()> {
    /// # let varmap = VarMap::new();
    /// # let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    /// # candle_nn::linear(2, 2, vb.pp("adapter"))?;
    /// # candle_nn::linear(2, 2, vb.pp("base"))?;
    /// let trainable = vars_under(&varmap, "adapter");
    /// let opt = SGD::new(trainable.clone(), 0.1)?.guarded_over(&trainable, &varmap);
    /// assert_eq!(opt.param_names(), ["adapter.bias", "adapter.weight"]);
    /// # Ok(()) }
    /// ```
    fn guarded_over(self, vars: &[Var], varmap: &VarMap) -> Guarded<Self> {
        // The guard cannot check that this optimizer was built over `vars`:
        // only watched gradients reach it, in both styles.
        Guarded::new(self)
            .with_vars(vars.iter().cloned())
            .with_varmap(varmap)
    }
}

impl<O: Optimizer> GuardExt for O {}
