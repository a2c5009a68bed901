//! What a step found: [`Anomaly`] and [`StepReport`].

use std::fmt;

use crate::check::{Check, Level};
use crate::params::Watched;

/// One check that fired at one step, with the names of the parameters concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Anomaly {
    /// Which check fired.
    pub check: Check,
    /// The level it had (a `Deny` anomaly refused the step).
    pub level: Level,
    /// The step it concerns (1-based; a refused step keeps its number).
    pub step: u64,
    /// The guard's name (the `optimizer` label).
    pub optimizer: String,
    /// Names of the parameters concerned, in the guard's parameter order.
    pub params: Vec<String>,
    /// Backward passes: for `accumulated` and `stale`, the most held by one
    /// of the concerned gradients; for `short_accumulation` and
    /// `excess_accumulation`, the backward calls counted for the whole guard
    /// since the last reset; 0 for `missing` and `nonfinite`.
    pub passes: u32,
    /// Of those passes, the most that an earlier step already applied
    /// (`accumulated`, `stale`; 0 otherwise).
    pub reapplied: u32,
    /// The declared backward passes per step (`accumulation_steps(k)`), if
    /// declared.
    pub declared: Option<u32>,
    /// How the guard learned its parameters: a `missing` parameter of a
    /// whole `VarMap` may be one the optimizer does not train at all.
    pub watched: Watched,
}

impl Anomaly {
    /// The fix to apply, in one sentence.
    pub fn help(&self) -> &'static str {
        match self.check {
            Check::Accumulated => "call zero_grad() after step()",
            Check::ShortAccumulation => {
                "step only after accumulation_steps backward passes, or lower accumulation_steps"
            }
            Check::ExcessAccumulation => {
                "step after every accumulation_steps backward passes and call zero_grad() after step(), or raise accumulation_steps"
            }
            Check::Stale => {
                "run backward before each step(), and pass each GradStore to step_with() only once"
            }
            Check::Missing => match self.watched {
                Watched::List => {
                    "the optimizer trains these parameters: use them in the loss (not detached), drop them from the optimizer's list, or declare them as buffers"
                }
                Watched::VarMap => {
                    "if the optimizer trains them, use them in the loss (not detached) or declare them as buffers; if it does not (a target network, frozen layers, a teacher), the guard watches more than the optimizer trains: build it over the optimizer's list with Guarded::from_vars(vars, &varmap, config) or opt.guarded_over(&vars, &varmap)"
                }
            },
            Check::NonFinite => {
                "lower the learning rate, clip gradients, or look for log(0) or a division by zero in the loss"
            }
        }
    }

    /// The names of the parameters, shortened to the first few for a log line.
    pub fn params_summary(&self) -> String {
        const SHOWN: usize = 4;
        let mut s = self.params[..self.params.len().min(SHOWN)].join(", ");
        if self.params.len() > SHOWN {
            s.push_str(&format!(", and {} more", self.params.len() - SHOWN));
        }
        s
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

impl fmt::Display for Anomaly {
    /// The message: what happened, to which parameters, and the fix.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.params.len();
        let p = plural(n);
        let (g, r) = (self.passes, self.reapplied);
        let k = self.declared.unwrap_or(1);
        let es = |c: u32| if c == 1 { "" } else { "es" };
        match self.check {
            Check::Accumulated => write!(
                f,
                "accumulated gradients: {n} parameter{p} hold gradients from {g} backward pass{}, {r} of which an earlier step already applied",
                es(g)
            )?,
            Check::ShortAccumulation => write!(
                f,
                "short accumulation: {g} backward pass{} since the last reset, declared {k}",
                es(g)
            )?,
            Check::ExcessAccumulation => write!(
                f,
                "excess accumulation: {g} backward pass{} since the last reset, declared {k}",
                es(g)
            )?,
            Check::Stale => write!(
                f,
                "stale gradients: {n} parameter{p} hold only gradients that an earlier step already applied"
            )?,
            Check::Missing => write!(f, "missing gradients: {n} parameter{p} got no gradient for this step")?,
            Check::NonFinite => write!(f, "non-finite gradients: {n} parameter{p} hold NaN or Inf")?,
        }
        write!(
            f,
            " (step {}, {}); {}",
            self.step,
            self.params_summary(),
            self.help()
        )
    }
}

/// The outcome of one applied step.
#[derive(Debug, Clone, PartialEq)]
pub struct StepReport {
    /// The step number (1-based).
    pub step: u64,
    /// Backward passes in the applied gradients: the most that any gradient
    /// with something new held (0 when the step applied nothing new).
    pub passes: u32,
    /// Checks that fired at `Allow` or `Warn` (a `Deny` one refuses the step).
    pub anomalies: Vec<Anomaly>,
    /// The global L2 norm of the applied gradients, when sampled this step.
    pub grad_norm: Option<f64>,
}

impl StepReport {
    /// True when no check fired.
    pub fn is_clean(&self) -> bool {
        self.anomalies.is_empty()
    }

    /// The anomaly of `check`, if it fired.
    pub fn anomaly(&self, check: Check) -> Option<&Anomaly> {
        self.anomalies.iter().find(|a| a.check == check)
    }
}
