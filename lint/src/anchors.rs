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
    /// The optimizer's own name (`opt_d`), when the updater is one.
    pub optimizer_name: Option<String>,
    /// GL009: the optimizer's own backward pass before which a reset
    /// clears the stray pass (the first one it meets).
    pub reset_before: Option<Span>,
    /// GL009: whether a reset there is certain to clear none of the
    /// optimizer's own passes.
    pub reset_before_certain: bool,
    /// A pile-up's first step: the one whose pass the finding's step
    /// applies again (the same step with one step in the loop); the reset
    /// belongs after it.
    pub applied_first: Option<Span>,
}

/// The anchors of a finding made from `facts`.
pub fn anchors(facts: &LoopFacts) -> Anchors {
    Anchors {
        loop_span: Some(facts.loop_span),
        resets_outside_loop: facts.resets_outside_loop.clone(),
        optimizers_in_loop: facts.optimizers_in_loop,
        updater: Some(facts.updater.clone()),
        elsewhere: false,
        optimizer_name: match &facts.updater {
            Updater::Optimizer(o) => Some(o.clone()),
            _ => None,
        },
        reset_before: facts.stray_pass.as_ref().and_then(|s| s.own_backward),
        reset_before_certain: facts
            .stray_pass
            .as_ref()
            .is_some_and(|s| s.reset_there_is_certain),
        applied_first: facts.pile_up_from,
    }
}
