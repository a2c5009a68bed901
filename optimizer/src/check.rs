//! The runtime lints: which checks exist, their levels, and the functions that
//! find each one in the ledger.

use std::fmt;
use std::str::FromStr;

use crate::ledger::ParamEntry;

/// A runtime lint run at every step. The names ([`Check::as_str`]) are the
/// `check` label of `gradguard_anomalies_total` and the `check` field of logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Check {
    /// A gradient holds more backward passes than declared: the missing `zero_grad`.
    Accumulated,
    /// `accumulation_steps = k > 1` was declared and a step came after fewer passes.
    ShortAccumulation,
    /// A gradient holds nothing newer than what the last step already applied.
    Stale,
    /// A trainable parameter got no gradient for this step.
    Missing,
    /// A gradient holds NaN or Inf (reads values; off unless enabled).
    NonFinite,
}

impl Check {
    /// Every check, in the order they are run and reported.
    pub const ALL: [Check; 5] = [
        Check::Accumulated,
        Check::ShortAccumulation,
        Check::Stale,
        Check::Missing,
        Check::NonFinite,
    ];

    /// The stable name: `accumulated`, `short_accumulation`, `stale`,
    /// `missing`, `nonfinite`.
    ///
    /// ```
    /// assert_eq!(gradguard::Check::ShortAccumulation.as_str(), "short_accumulation");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            Check::Accumulated => "accumulated",
            Check::ShortAccumulation => "short_accumulation",
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
                expected: "accumulated, short_accumulation, stale, missing, nonfinite",
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
pub struct Levels([Level; 5]);

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
pub struct Finding {
    /// The check.
    pub check: Check,
    /// Indices of the parameters concerned, ascending.
    pub params: Vec<usize>,
    /// Backward passes seen in the concerned gradients (the extreme value).
    pub generations: u32,
    /// Backward passes expected per step.
    pub expected: u32,
}

/// What the ledger-only checks look at for one step.
#[derive(Debug, Clone, Copy)]
pub struct StepView<'a> {
    /// Ledger entries, one per parameter.
    pub entries: &'a [ParamEntry],
    /// Whether each parameter is trainable (buffers are not).
    pub trainable: &'a [bool],
    /// Declared backward passes per step.
    pub accumulation_steps: u32,
}

impl StepView<'_> {
    fn select(&self, keep: impl Fn(&ParamEntry) -> bool) -> Vec<usize> {
        self.entries
            .iter()
            .zip(self.trainable)
            .enumerate()
            .filter(|(_, (e, &t))| t && keep(e))
            .map(|(i, _)| i)
            .collect()
    }

    fn fresh_counts(&self, params: &[usize]) -> Vec<u32> {
        params
            .iter()
            .filter_map(|&i| self.entries[i].held.map(|h| h.count))
            .collect()
    }

    /// Backward passes in the step: the most any fresh trainable gradient holds.
    pub fn generations(&self) -> u32 {
        let fresh = self.select(|e| e.held.is_some() && !e.is_stale());
        self.fresh_counts(&fresh).into_iter().max().unwrap_or(0)
    }
}

fn finding(check: Check, params: Vec<usize>, generations: u32, expected: u32) -> Option<Finding> {
    (!params.is_empty()).then_some(Finding {
        check,
        params,
        generations,
        expected,
    })
}

/// Fresh gradients holding more passes than declared.
pub fn accumulated(view: &StepView<'_>) -> Option<Finding> {
    let k = view.accumulation_steps;
    let params = view.select(|e| !e.is_stale() && e.held.is_some_and(|h| h.count > k));
    let seen = view.fresh_counts(&params).into_iter().max().unwrap_or(0);
    finding(Check::Accumulated, params, seen, k)
}

/// Fresh gradients holding fewer passes than declared (only when k > 1).
pub fn short_accumulation(view: &StepView<'_>) -> Option<Finding> {
    let k = view.accumulation_steps;
    if k <= 1 {
        return None;
    }
    let params = view.select(|e| !e.is_stale() && e.held.is_some_and(|h| h.count < k));
    let seen = view.fresh_counts(&params).into_iter().min().unwrap_or(0);
    finding(Check::ShortAccumulation, params, seen, k)
}

/// Gradients that hold only passes an earlier step already applied.
pub fn stale(view: &StepView<'_>) -> Option<Finding> {
    let params = view.select(ParamEntry::is_stale);
    finding(Check::Stale, params, 0, view.accumulation_steps)
}

/// Trainable parameters without any gradient.
pub fn missing(view: &StepView<'_>) -> Option<Finding> {
    let params = view.select(|e| e.held.is_none());
    finding(Check::Missing, params, 0, view.accumulation_steps)
}

/// Runs every ledger-only check, in [`Check::ALL`] order.
pub fn run(view: &StepView<'_>) -> Vec<Finding> {
    [accumulated, short_accumulation, stale, missing]
        .iter()
        .filter_map(|check| check(view))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::Ledger;

    fn view(ledger: &Ledger, trainable: &[bool], k: u32) -> Vec<Finding> {
        run(&StepView {
            entries: ledger.entries(),
            trainable,
            accumulation_steps: k,
        })
    }

    #[test]
    fn two_passes_with_k1_is_accumulated() {
        let mut l = Ledger::new(2);
        for _ in 0..2 {
            let g = l.next_generation();
            l.record(0, g);
            l.record(1, g);
        }
        let f = view(&l, &[true, true], 1);
        assert_eq!(
            f,
            vec![Finding {
                check: Check::Accumulated,
                params: vec![0, 1],
                generations: 2,
                expected: 1
            }]
        );
    }

    #[test]
    fn buffers_are_never_missing() {
        let mut l = Ledger::new(2);
        let g = l.next_generation();
        l.record(0, g);
        assert!(view(&l, &[true, false], 1).is_empty());
        assert_eq!(view(&l, &[true, true], 1)[0].check, Check::Missing);
    }

    #[test]
    fn short_accumulation_only_with_declared_accumulation() {
        let mut l = Ledger::new(1);
        let g = l.next_generation();
        l.record(0, g);
        assert!(view(&l, &[true], 1).is_empty());
        let f = view(&l, &[true], 4);
        assert_eq!(f[0].check, Check::ShortAccumulation);
        assert_eq!((f[0].generations, f[0].expected), (1, 4));
    }

    #[test]
    fn levels_default_to_the_design_table() {
        let levels = Levels::default();
        assert_eq!(levels.get(Check::Accumulated), Level::Warn);
        assert_eq!(levels.get(Check::NonFinite), Level::Allow);
        for c in Check::ALL {
            assert_eq!(c.as_str().parse::<Check>().unwrap(), c);
        }
    }
}
