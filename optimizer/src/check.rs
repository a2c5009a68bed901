//! The runtime lints: which checks exist, their levels, and the one pass over
//! the ledger that finds them.

use std::fmt;
use std::str::FromStr;

use crate::ledger::ParamEntry;

/// A runtime lint run at every step. The names ([`Check::as_str`]) are the
/// `check` label of `gradguard_anomalies_total` and the `check` field of logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Check {
    /// A step applies a backward pass that an earlier step already applied
    /// (no reset between the two steps): the missing `zero_grad`.
    Accumulated,
    /// `accumulation_steps(k)` was declared and a step came after fewer than
    /// `k` backward passes since the last reset.
    ShortAccumulation,
    /// `accumulation_steps(k)` was declared and a step came after more than
    /// `k` backward passes since the last reset.
    ExcessAccumulation,
    /// A gradient holds nothing newer than what the last step already applied.
    Stale,
    /// A trainable parameter got no gradient for this step.
    Missing,
    /// A gradient holds NaN or Inf (reads values; off unless enabled).
    NonFinite,
}

impl Check {
    /// Every check, in the order they are run and reported.
    pub const ALL: [Check; 6] = [
        Check::Accumulated,
        Check::ShortAccumulation,
        Check::ExcessAccumulation,
        Check::Stale,
        Check::Missing,
        Check::NonFinite,
    ];

    /// The stable name: `accumulated`, `short_accumulation`,
    /// `excess_accumulation`, `stale`, `missing`, `nonfinite`.
    ///
    /// ```
    /// assert_eq!(gradguard::Check::ShortAccumulation.as_str(), "short_accumulation");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            Check::Accumulated => "accumulated",
            Check::ShortAccumulation => "short_accumulation",
            Check::ExcessAccumulation => "excess_accumulation",
            Check::Stale => "stale",
            Check::Missing => "missing",
            Check::NonFinite => "nonfinite",
        }
    }

    /// The level a check has until [`crate::Guarded::level`] changes it.
    pub fn default_level(self) -> Level {
        match self {
            Check::NonFinite => Level::Allow,
            _ => Level::Warn,
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error of parsing an unknown check or level name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} `{name}`; expected one of: {expected}")]
pub struct ParseNameError {
    kind: &'static str,
    name: String,
    expected: &'static str,
}

impl FromStr for Check {
    type Err = ParseNameError;

    /// Parses a check by its stable name.
    ///
    /// ```
    /// use gradguard::Check;
    /// assert_eq!("stale".parse::<Check>().unwrap(), Check::Stale);
    /// assert!("stail".parse::<Check>().is_err());
    /// ```
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Check::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| ParseNameError {
                kind: "check",
                name: s.to_string(),
                expected: "accumulated, short_accumulation, excess_accumulation, stale, missing, nonfinite",
            })
    }
}

/// What a check does when it fires, like a rustc lint level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Level {
    /// Count it in metrics and the [`crate::StepReport`]; log nothing.
    Allow,
    /// Count it and log a WARN (rate-limited); the step goes on.
    Warn,
    /// Refuse the step with [`crate::Error::Denied`]; nothing is changed.
    Deny,
}

impl Level {
    /// `allow`, `warn` or `deny`.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Allow => "allow",
            Level::Warn => "warn",
            Level::Deny => "deny",
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Level {
    type Err = ParseNameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "allow" => Ok(Level::Allow),
            "warn" => Ok(Level::Warn),
            "deny" => Ok(Level::Deny),
            _ => Err(ParseNameError {
                kind: "level",
                name: s.to_string(),
                expected: "allow, warn, deny",
            }),
        }
    }
}

/// The level of every check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Levels([Level; Check::ALL.len()]);

impl Default for Levels {
    fn default() -> Self {
        Self(Check::ALL.map(Check::default_level))
    }
}

impl Levels {
    /// The level of `check`.
    pub fn get(&self, check: Check) -> Level {
        self.0[check.index()]
    }

    /// Sets the level of `check`.
    pub fn set(&mut self, check: Check, level: Level) {
        self.0[check.index()] = level;
    }
}

/// A check that fired: which parameters (by index) and the pass counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Finding {
    /// The check.
    pub check: Check,
    /// Indices of the parameters concerned, ascending.
    pub params: Vec<usize>,
    /// Backward passes: held by the concerned gradients (the most), or, for
    /// the count checks, counted for the whole guard since the last reset.
    pub passes: u32,
    /// Of those, the passes an earlier step already applied (the most).
    pub reapplied: u32,
}

/// What the ledger-only checks look at for one step.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StepView<'a> {
    /// Ledger entries, one per parameter, holding what this step applies.
    pub entries: &'a [ParamEntry],
    /// Whether each parameter is trainable (buffers are not).
    pub trainable: &'a [bool],
    /// Declared backward passes per step (`accumulation_steps`), if any.
    pub declared: Option<u32>,
    /// Backward passes (calls) since the last reset, for the whole guard.
    pub passes: u32,
}

impl StepView<'_> {
    /// Runs every ledger-only check in one pass over the entries, in
    /// [`Check::ALL`] order, and counts the backward passes the step applies:
    /// the most any fresh trainable gradient holds (0 when nothing is new).
    /// A clean step allocates nothing.
    pub fn run(&self) -> (Vec<Finding>, u32) {
        let count_off = self.declared.is_some_and(|k| self.passes != k);
        let (mut accumulated, mut stale, mut missing, mut fresh) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let (mut acc_passes, mut acc_reapplied, mut stale_passes, mut applied) = (0, 0, 0, 0);
        for (i, (entry, &trainable)) in self.entries.iter().zip(self.trainable).enumerate() {
            if !trainable {
                continue;
            }
            let Some(held) = entry.held else {
                missing.push(i);
                continue;
            };
            if held.is_stale() {
                stale.push(i);
                stale_passes = stale_passes.max(held.passes);
                continue;
            }
            applied = applied.max(held.passes);
            if count_off {
                fresh.push(i);
            }
            if held.reapplies() {
                accumulated.push(i);
                acc_passes = acc_passes.max(held.passes);
                acc_reapplied = acc_reapplied.max(held.reapplied);
            }
        }
        let mut findings = Vec::new();
        findings.extend(finding(
            Check::Accumulated,
            accumulated,
            acc_passes,
            acc_reapplied,
        ));
        if let Some(k) = self.declared {
            let check = if self.passes < k {
                Some(Check::ShortAccumulation)
            } else if self.passes > k {
                Some(Check::ExcessAccumulation)
            } else {
                None
            };
            findings.extend(check.and_then(|c| finding(c, fresh, self.passes, 0)));
        }
        findings.extend(finding(Check::Stale, stale, stale_passes, stale_passes));
        findings.extend(finding(Check::Missing, missing, 0, 0));
        (findings, applied)
    }
}

fn finding(check: Check, params: Vec<usize>, passes: u32, reapplied: u32) -> Option<Finding> {
    (!params.is_empty()).then_some(Finding {
        check,
        params,
        passes,
        reapplied,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::Ledger;

    fn ledger(n: usize) -> Ledger {
        let mut l = Ledger::default();
        l.resize(n);
        l
    }

    /// One backward pass reaching the parameters in `params`.
    fn pass(l: &mut Ledger, params: &[usize]) {
        let g = l.next_generation();
        for &p in params {
            l.record(p, g, false);
        }
        l.count_pass();
    }

    fn checks(l: &Ledger, trainable: &[bool], declared: Option<u32>) -> Vec<Finding> {
        StepView {
            entries: l.entries(),
            trainable,
            declared,
            passes: l.passes_since_reset(),
        }
        .run()
        .0
    }

    #[test]
    fn a_pass_applied_again_with_a_new_one_is_accumulated() {
        let mut l = ledger(2);
        pass(&mut l, &[0, 1]);
        l.mark_applied();
        pass(&mut l, &[0, 1]);
        assert_eq!(
            checks(&l, &[true, true], None),
            vec![Finding {
                check: Check::Accumulated,
                params: vec![0, 1],
                passes: 2,
                reapplied: 1
            }]
        );
    }

    #[test]
    fn several_losses_and_an_auxiliary_head_before_one_step_are_clean() {
        let mut l = ledger(2);
        pass(&mut l, &[0, 1]);
        pass(&mut l, &[0]);
        assert!(checks(&l, &[true, true], None).is_empty());
        // Declared: two backward calls for the whole guard, although
        // parameter 1 got only one of them.
        assert!(checks(&l, &[true, true], Some(2)).is_empty());
    }

    #[test]
    fn count_checks_need_a_declared_k() {
        let mut l = ledger(1);
        pass(&mut l, &[0]);
        let f = checks(&l, &[true], Some(4));
        assert_eq!((f[0].check, f[0].passes), (Check::ShortAccumulation, 1));
        for _ in 0..4 {
            pass(&mut l, &[0]);
        }
        assert!(checks(&l, &[true], None).is_empty());
        let f = checks(&l, &[true], Some(4));
        assert_eq!((f[0].check, f[0].passes), (Check::ExcessAccumulation, 5));
    }

    #[test]
    fn buffers_are_never_missing() {
        let mut l = ledger(2);
        pass(&mut l, &[0]);
        assert!(checks(&l, &[true, false], None).is_empty());
        assert_eq!(checks(&l, &[true, true], None)[0].check, Check::Missing);
    }

    #[test]
    fn a_step_without_a_new_pass_is_stale() {
        let mut l = ledger(1);
        pass(&mut l, &[0]);
        l.mark_applied();
        let f = checks(&l, &[true], None);
        assert_eq!(f[0].check, Check::Stale);
        assert_eq!((f[0].passes, f[0].reapplied), (1, 1));
    }

    #[test]
    fn levels_default_to_the_design_table() {
        let levels = Levels::default();
        assert_eq!(levels.get(Check::Accumulated), Level::Warn);
        assert_eq!(levels.get(Check::ExcessAccumulation), Level::Warn);
        assert_eq!(levels.get(Check::NonFinite), Level::Allow);
        for c in Check::ALL {
            assert_eq!(c.as_str().parse::<Check>().unwrap(), c);
        }
    }
}
