//! Front ends: syntax trees to the [`crate::ir`] model.

pub mod conditions;
pub mod python;
pub mod rust;

/// A syntax error, with its byte offset.
#[derive(Debug, Clone)]
pub struct SyntaxError {
    /// What the parser said.
    pub message: String,
    /// Where.
    pub offset: usize,
}

/// Whether an expression's last name segment looks like an optimizer
/// (`optimizer`, `opt`, `opt_d`, `optimizerG`, `d_opt`, `self.optim`).
/// Schedulers and environments (`scheduler.step()`, `env.step()`) are not.
pub fn looks_like_optimizer(text: &str) -> bool {
    let last = text.rsplit('.').next().unwrap_or(text).to_ascii_lowercase();
    if last.contains("sched") || last.contains("scaler") || last.contains("swa") {
        return false;
    }
    if last.contains("optim") {
        return true;
    }
    let stem = last.trim_matches('_');
    let short = |s: &str| s.len() <= 2 && s.chars().all(|c| c.is_ascii_alphanumeric());
    stem == "opt"
        || stem
            .strip_prefix("opt")
            .is_some_and(|rest| short(rest.trim_start_matches('_')))
        || stem
            .strip_suffix("opt")
            .is_some_and(|rest| short(rest.trim_end_matches('_')))
}

/// Optimizer constructors by their last path segment.
pub const OPTIMIZER_TYPES: [&str; 20] = [
    "SGD",
    "Adam",
    "AdamW",
    "Adamax",
    "Adagrad",
    "Adadelta",
    "RMSprop",
    "RmsProp",
    "NAdam",
    "RAdam",
    "ASGD",
    "Rprop",
    "LBFGS",
    "SparseAdam",
    "Lion",
    "Adafactor",
    "LAMB",
    "Lamb",
    "Sgd",
    "Guarded",
];

#[cfg(test)]
mod tests {
    use super::looks_like_optimizer;

    #[test]
    fn optimizer_names() {
        for yes in [
            "optimizer",
            "opt",
            "opt_d",
            "optD",
            "self.optimizer",
            "g_opt",
            "optimizer_g",
            "self.optim",
        ] {
            assert!(looks_like_optimizer(yes), "{yes}");
        }
        for no in [
            "scheduler",
            "lr_scheduler",
            "env",
            "options",
            "optional",
            "scaler",
            "model",
            "step",
        ] {
            assert!(!looks_like_optimizer(no), "{no}");
        }
    }
}
