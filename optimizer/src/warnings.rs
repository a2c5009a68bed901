//! WARN events for anomalies, without flooding the log: the first occurrence
//! of a check is logged in full, later ones as summaries at 10, 100, 1000, ...
//! occurrences. Metrics count every occurrence regardless.

use std::collections::HashSet;

use crate::check::{Check, Level};
use crate::params::Watched;
use crate::report::Anomaly;

/// Decides which anomalies reach the log.
#[derive(Debug, Clone, Default)]
pub struct WarnLimiter {
    seen: [u64; Check::ALL.len()],
    /// Parameters already named in a `missing` warning: a newly missing
    /// parameter is a new problem and gets its own full warning.
    named_missing: HashSet<String>,
    /// Parameters already reported as never having received a gradient.
    named_never: HashSet<String>,
}

/// How an anomaly is logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Emission {
    /// A full WARN with every field.
    Full,
    /// A one-line summary: the check fired this many times so far.
    Summary(u64),
    /// Counted, not logged.
    Silent,
}

impl WarnLimiter {
    /// Counts `anomaly` and says how to log it.
    pub fn admit(&mut self, anomaly: &Anomaly) -> Emission {
        let i = Check::ALL
            .iter()
            .position(|&c| c == anomaly.check)
            .unwrap_or(0);
        self.seen[i] += 1;
        let n = self.seen[i];
        if anomaly.check == Check::Missing {
            let new = anomaly
                .params
                .iter()
                .filter(|p| self.named_missing.insert((*p).clone()))
                .count();
            if new > 0 {
                return Emission::Full;
            }
        }
        if n == 1 || anomaly.level == Level::Deny {
            Emission::Full
        } else if is_power_of_ten(n) {
            Emission::Summary(n)
        } else {
            Emission::Silent
        }
    }
}

impl WarnLimiter {
    /// Reports, once per parameter, those that have never received a
    /// gradient since the guard started: usually an unused layer or a
    /// detached graph, not a transient skip.
    pub fn never_received(&mut self, anomaly: &Anomaly, names: Vec<String>) {
        let new: Vec<String> = names
            .into_iter()
            .filter(|n| self.named_never.insert(n.clone()))
            .collect();
        if new.is_empty() {
            return;
        }
        tracing::warn!(
            target: "gradguard",
            check = anomaly.check.as_str(),
            step = anomaly.step,
            optimizer = %anomaly.optimizer,
            params = %new.join(","),
            "{} parameter{} never received a gradient since training started: {}; \
             it is not used in the loss, or its graph is detached (declare it with buffers() if it is a buffer){}",
            new.len(),
            if new.len() == 1 { " has" } else { "s have" },
            new.join(", "),
            match anomaly.watched {
                Watched::List => "",
                Watched::VarMap => "; or the optimizer does not train it and the guard watches the whole VarMap: \
                                    build the guard over the optimizer's list (Guarded::from_vars, guarded_over)",
            }
        );
    }
}

/// Reports variables added to the watched `VarMap` after the guard was built.
pub fn added_to_varmap(optimizer: &str, names: &[String]) {
    tracing::warn!(
        target: "gradguard",
        check = "registration",
        optimizer,
        params = %names.join(","),
        "{} variable{} added to the VarMap after the guard was built, now watched: {}; \
         the inner optimizer was built before {} and updates {} only if it was given {}: \
         build the model before the optimizer (or Guarded::from_varmap after the model)",
        names.len(),
        if names.len() == 1 { " was" } else { "s were" },
        names.join(", "),
        if names.len() == 1 { "it" } else { "them" },
        if names.len() == 1 { "it" } else { "them" },
        if names.len() == 1 { "it" } else { "them" },
    );
}

fn is_power_of_ten(mut n: u64) -> bool {
    while n >= 10 && n.is_multiple_of(10) {
        n /= 10;
    }
    n == 1
}

/// Logs `anomaly` as told (target `gradguard`, structured fields).
pub fn emit(anomaly: &Anomaly, how: Emission) {
    if anomaly.level == Level::Allow {
        return;
    }
    let denied = if anomaly.level == Level::Deny {
        "step denied: "
    } else {
        ""
    };
    match how {
        Emission::Full => tracing::warn!(
            target: "gradguard",
            check = anomaly.check.as_str(),
            step = anomaly.step,
            optimizer = %anomaly.optimizer,
            params = %anomaly.params.join(","),
            passes = anomaly.passes,
            reapplied = anomaly.reapplied,
            declared = anomaly.declared,
            level = anomaly.level.as_str(),
            "{denied}{anomaly}"
        ),
        Emission::Summary(count) => tracing::warn!(
            target: "gradguard",
            check = anomaly.check.as_str(),
            step = anomaly.step,
            optimizer = %anomaly.optimizer,
            occurrences = count,
            "{} seen {count} times so far (latest at step {}); {}",
            anomaly.check,
            anomaly.step,
            anomaly.help()
        ),
        Emission::Silent => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn anomaly(check: Check, params: &[&str]) -> Anomaly {
        Anomaly {
            check,
            level: Level::Warn,
            step: 2,
            optimizer: "t".into(),
            params: params.iter().map(|s| s.to_string()).collect(),
            passes: 2,
            reapplied: 1,
            declared: None,
            watched: crate::params::Watched::VarMap,
        }
    }

    #[test]
    fn repeats_are_summarised_at_powers_of_ten() {
        let mut l = WarnLimiter::default();
        let a = anomaly(Check::Accumulated, &["w"]);
        let kinds: Vec<_> = (0..100).map(|_| l.admit(&a)).collect();
        assert_eq!(kinds[0], Emission::Full);
        assert_eq!(kinds[9], Emission::Summary(10));
        assert_eq!(kinds[99], Emission::Summary(100));
        let logged = kinds.iter().filter(|k| **k != Emission::Silent).count();
        assert_eq!(logged, 3);
    }

    #[test]
    fn a_newly_missing_parameter_gets_its_own_warning() {
        let mut l = WarnLimiter::default();
        assert_eq!(l.admit(&anomaly(Check::Missing, &["a"])), Emission::Full);
        assert_eq!(l.admit(&anomaly(Check::Missing, &["a"])), Emission::Silent);
        assert_eq!(
            l.admit(&anomaly(Check::Missing, &["a", "b"])),
            Emission::Full
        );
    }
}
