//! # gradguard
//!
//! Catches the missing `zero_grad` and its cousins in candle training loops.
//!
//! [`Guarded`] wraps any [`candle_nn::Optimizer`] (SGD, AdamW, your own). It
//! numbers every backward pass (a *generation*), keeps a [`ledger`] of which
//! generations each parameter's gradient holds, and at every step runs the
//! [`Check`]s: `accumulated`, `short_accumulation`, `stale`, `missing` and
//! `nonfinite`, each at a [`Level`] (`Allow`, `Warn`, `Deny`), like rustc's
//! lints. A denied step returns [`Error::Denied`] and changes nothing.
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
mod error;
#[cfg(feature = "prometheus")]
pub mod exporter;
mod guarded;
pub mod ledger;
#[cfg(feature = "logging")]
pub mod logging;
mod params;
mod report;
pub mod telemetry;
mod warnings;

pub use check::{Check, Level, Levels};
pub use error::{Error, Result};
pub use guarded::Guarded;
pub use params::DEFAULT_BUFFER_NAMES;
pub use report::{Anomaly, StepReport};
pub use telemetry::describe_metrics;
