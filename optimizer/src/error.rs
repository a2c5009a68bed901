//! The error type of the guard.

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
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
