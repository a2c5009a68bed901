//! The error type of the guard, and its way through `candle_core::Error`.

use crate::report::Anomaly;

/// What a guarded call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A check at level `Deny` fired; the step was refused and nothing changed.
    #[error("step {step} denied: {0}", step = .0.step)]
    Denied(Anomaly),
    /// The guard knows no parameter, so it cannot tell which gradients to keep.
    #[error(
        "gradguard knows no parameters: register them with with_varmap(&varmap), with_vars(vars) or with_named_vars(pairs) before backward() or step()"
    )]
    NoParameters,
    /// An error from candle (a shape mismatch, a device error, ...).
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

impl Error {
    /// The anomaly of a refused step.
    pub fn anomaly(&self) -> Option<&Anomaly> {
        match self {
            Error::Denied(a) => Some(a),
            _ => None,
        }
    }

    /// The gradguard error inside a `candle_core::Error`, as returned by the
    /// guard's `candle_nn::Optimizer` methods (`step`, `backward_step`),
    /// through any context or backtrace candle added.
    ///
    /// ```
    /// # use gradguard::{Anomaly, Check, Error, Level, Watched};
    /// let anomaly = Anomaly {
    ///     check: Check::Stale, level: Level::Deny, step: 3, optimizer: "m".into(),
    ///     params: vec!["fc.weight".into()], passes: 1, reapplied: 1, declared: None,
    ///     watched: Watched::VarMap,
    /// };
    /// let err: candle_core::Error = Error::Denied(anomaly.clone()).into();
    /// assert_eq!(Error::denied_in(&err), Some(&anomaly));
    /// ```
    pub fn in_candle(err: &candle_core::Error) -> Option<&Error> {
        match err {
            candle_core::Error::WrappedContext { wrapped, .. } => wrapped.downcast_ref::<Error>(),
            candle_core::Error::WithBacktrace { inner, .. }
            | candle_core::Error::Context { inner, .. }
            | candle_core::Error::WithPath { inner, .. } => Error::in_candle(inner),
            _ => None,
        }
    }

    /// The anomaly of a step refused inside a `candle_core::Error`: the
    /// `Deny` of the guard's `candle_nn::Optimizer::step`.
    pub fn denied_in(err: &candle_core::Error) -> Option<&Anomaly> {
        Error::in_candle(err).and_then(Error::anomaly)
    }
}

impl From<Error> for candle_core::Error {
    /// A candle error stays itself; a gradguard error is wrapped so that
    /// [`Error::in_candle`] (or `downcast_ref` on the wrapped error) finds it.
    fn from(err: Error) -> Self {
        match err {
            Error::Candle(e) => e,
            other => {
                let context = other.to_string();
                candle_core::Error::WrappedContext {
                    wrapped: Box::new(other),
                    context,
                }
            }
        }
    }
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
