//! The anchors a finding carries from its loop's facts: what a fix
//! ([`crate::fix`]) needs to know of the analysis beyond the finding's own
//! span. Made by the analysis, below the fixes, so that it needs no fix.

use crate::facts::LoopFacts;
use crate::ir::{Span, Updater};

/// What a fix needs to know beyond a finding's own span, taken from the
/// analysis of the loop the finding is in.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Anchors {
    /// The loop.
    pub loop_span: Option<Span>,
    /// Resets of the finding's updater outside the loop.
    pub resets_outside_loop: Vec<Span>,
    /// How many optimizers the loop steps.
    pub optimizers_in_loop: usize,
    /// The finding's updater: an optimizer, a manual update (over a loop's
    /// parameters, or of a named tensor), a Rust `GradStore`.
    pub updater: Option<Updater>,
    /// Whether the finding's loop is in another file (the files of the
    /// invocation analysed together): never fixed.
    pub elsewhere: bool,
}

/// The anchors of a finding made from `facts`.
pub fn anchors(facts: &LoopFacts) -> Anchors {
    Anchors {
        loop_span: Some(facts.loop_span),
        resets_outside_loop: facts.resets_outside_loop.clone(),
        optimizers_in_loop: facts.optimizers_in_loop,
        updater: Some(facts.updater.clone()),
        elsewhere: false,
    }
}
