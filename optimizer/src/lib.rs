//! # gradguard
//!
//! Catches the missing `zero_grad` and its cousins in candle training loops.
//!
//! [`Guarded`] wraps any [`candle_nn::Optimizer`] (SGD, AdamW, your own) and
//! is one itself, so existing code adopts it in one line
//! ([`GuardExt::guarded`]: `AdamW::new(varmap.all_vars(), params)?.guarded(&varmap)`)
//! and `backward_step` or code generic over `O: Optimizer` works unchanged
//! (see [`drop_in`] for how the trait's `step` relates to the PyTorch-style
//! inherent [`Guarded::step`]).
//!
//! The guard numbers every backward pass (its *generation*), keeps a
//! [`ledger`] of which passes each parameter's gradient holds and which a step
//! already applied, and at every step runs the [`Check`]s, each at a
//! [`Level`] (`Allow`, `Warn`, `Deny`), like rustc's lints:
//!
//! - `accumulated`: the step re-applies a pass an earlier step applied (the
//!   missing `zero_grad`); any number of passes since the last reset is fine;
//! - `short_accumulation` / `excess_accumulation`: only with
//!   [`Guarded::accumulation_steps`] declared, fewer / more backward calls
//!   than declared since the last reset, counted for the whole guard;
//! - `stale`: nothing new to apply (a step without backward, or a `GradStore`
//!   applied again, A then B then A);
//! - `missing`: a trainable parameter without a gradient;
//! - `nonfinite`: NaN or Inf, checked in the gradient's own dtype (off unless
//!   enabled).
//!
//! A denied step returns [`Error::Denied`] and changes nothing.
//!
//! The library only emits: `tracing` spans and WARN events (target
//! `gradguard`) and `metrics` counters, histograms and gauges (see
//! [`telemetry`]). Applications pick the subscriber and the recorder; the
//! `prometheus` and `logging` features hold helpers for that.
//!
//! ```
//! use candle_core::{DType, Device, Tensor};
//! use candle_nn::{Module, Optimizer, VarBuilder, VarMap, SGD};
//! use gradguard::{Check, Guarded};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let varmap = VarMap::new();
//! let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
//! let model = candle_nn::linear(3, 1, vb.pp("fc"))?;
//! let mut opt = Guarded::new(SGD::new(varmap.all_vars(), 0.1)?).with_varmap(&varmap);
//! let x = Tensor::ones((4, 3), DType::F32, &Device::Cpu)?;
//!
//! // candle style: fresh gradients each step.
//! let grads = model.forward(&x)?.sum_all()?.backward()?;
//! assert!(opt.step_with(&grads)?.is_clean());
//! // Passing the same store again applies the same gradients twice.
//! assert_eq!(opt.step_with(&grads)?.anomalies[0].check, Check::Stale);
//!
//! // PyTorch style: backward, step, zero_grad.
//! for _ in 0..3 {
//!     opt.backward(&model.forward(&x)?.sum_all()?)?;
//!     assert!(opt.step()?.is_clean());
//!     opt.zero_grad();
//! }
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

pub mod check;
pub mod drop_in;
mod error;
#[cfg(feature = "prometheus")]
pub mod exporter;
mod guarded;
pub mod ledger;
#[cfg(feature = "logging")]
pub mod logging;
mod params;
mod passes;
mod report;
pub mod telemetry;
mod warnings;

pub use check::{Check, Level, Levels};
pub use drop_in::GuardExt;
pub use error::{Error, Result};
pub use guarded::Guarded;
pub use params::{vars_matching, vars_under, Watched, DEFAULT_BUFFER_NAMES};
pub use passes::REMEMBERED_PASSES;
pub use report::{Anomaly, StepReport};
pub use telemetry::describe_metrics;

/// The code blocks of the crate's README (its crates.io page), compiled and
/// run as doc-tests so that the documentation cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
