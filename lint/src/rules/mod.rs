//! The rules, one file each (docs, message, detection, tests), in code order.

use crate::facts::LoopFacts;
use crate::ir::Span;

pub mod gl001_missing_zero_grad;
pub mod gl002_zero_grad_outside_loop;
pub mod gl003_zero_grad_before_step;
pub mod gl004_accumulation_defeated;
pub mod gl005_optimizer_never_reset;
pub mod gl006_stale_grad_store;
pub mod gl007_grad_store_never_reset;
pub mod gl008_skipped_pass_applied;
pub mod gl009_stray_backward_pass;

/// A rule's identity and documentation (what `gradlint rule CODE` prints).
#[derive(Debug, Clone, Copy)]
pub struct Rule {
    /// `GL001` ... (contract).
    pub code: &'static str,
    /// `missing-zero-grad` ...
    pub name: &'static str,
    /// One line.
    pub summary: &'static str,
    /// What it does / Why is this bad? / Example / Use instead.
    pub docs: &'static str,
    /// Runs the rule on the facts of one (loop, updater).
    pub check: fn(&LoopFacts) -> Option<Violation>,
    /// Rules that, when enabled and reporting on the same facts, report
    /// the finding instead of this one (the more precise name for it).
    pub defers_to: &'static [&'static str],
}

/// One finding of a rule, before it is placed in a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Where to point.
    pub span: Span,
    /// What is wrong.
    pub message: String,
    /// The fix.
    pub help: String,
}

/// Every rule, in code order.
pub const ALL: [Rule; 9] = [
    gl001_missing_zero_grad::RULE,
    gl002_zero_grad_outside_loop::RULE,
    gl003_zero_grad_before_step::RULE,
    gl004_accumulation_defeated::RULE,
    gl005_optimizer_never_reset::RULE,
    gl006_stale_grad_store::RULE,
    gl007_grad_store_never_reset::RULE,
    gl008_skipped_pass_applied::RULE,
    gl009_stray_backward_pass::RULE,
];

/// The rule with this code (case-insensitive) or name.
pub fn find(code_or_name: &str) -> Option<Rule> {
    ALL.into_iter()
        .find(|r| r.code.eq_ignore_ascii_case(code_or_name) || r.name == code_or_name)
}
