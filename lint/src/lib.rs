//! # gradlint
//!
//! A static linter for gradient-reset bugs (the missing `zero_grad` and its
//! cousins) in PyTorch (Python) and Rust (candle, gradguard, tch-rs) training
//! code. It lowers each file to a small model of gradient events inside the
//! control flow ([`ir`]), builds the graph of every loop ([`cfg`](mod@cfg)), computes
//! the facts of each optimizer's gradient life cycle ([`facts`]) and runs the
//! rules ([`rules`]) on them.
//!
//! ```
//! let source = "
//! for x, y in loader:
//!     loss = loss_fn(model(x), y)
//!     loss.backward()
//!     optimizer.step()
//! ";
//! let found = gradlint::lint_source("train.py", source, gradlint::Language::Python).unwrap();
//! assert_eq!(found[0].code, "GL001");
//! assert_eq!((found[0].line, found[0].column), (5, 5));
//! ```

#![warn(missing_docs)]

pub mod anchors;
pub mod assumptions;
pub mod cfg;
pub mod config;
pub mod diagnostic;
pub mod facts;
pub mod file;
pub mod fix;
pub mod frontend;
pub mod ir;
pub mod notebook;
pub mod output;
pub mod project;
pub mod rules;
#[cfg(test)]
mod test_support;
pub mod walk;

use std::path::Path;

pub use diagnostic::{Diagnostic, LineIndex};
use ir::Span;
use rules::Rule;

/// The crate's README (its crates.io page, and the PyPI page it generates),
/// run as doc-tests: any Rust code block in it must compile and run.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

/// The languages gradlint reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Language {
    /// `.py`, `.pyi`, and the code cells of `.ipynb` notebooks
    Python,
    /// `.rs`
    Rust,
}

impl Language {
    /// By file extension.
    ///
    /// ```
    /// use gradlint::Language;
    /// use std::path::Path;
    /// assert_eq!(Language::of(Path::new("src/train.py")), Some(Language::Python));
    /// assert_eq!(Language::of(Path::new("nb.ipynb")), Some(Language::Python));
    /// assert_eq!(Language::of(Path::new("main.rs")), Some(Language::Rust));
    /// assert_eq!(Language::of(Path::new(".py")), None);
    /// assert_eq!(Language::of(Path::new("data.txt")), None);
    /// ```
    pub fn of(path: &Path) -> Option<Self> {
        Self::of_name(path.file_name()?)
    }

    /// By the extension of a file's name (`Path::extension`'s reading, on
    /// the bytes: asked of every entry of a walked tree).
    pub fn of_name(name: &std::ffi::OsStr) -> Option<Self> {
        let name = name.as_encoded_bytes();
        // A name that starts with its only dot (`.py`) has no extension.
        let dot = name.iter().rposition(|&b| b == b'.').filter(|&d| d > 0)?;
        match &name[dot + 1..] {
            b"py" | b"pyi" | b"ipynb" => Some(Language::Python),
            b"rs" => Some(Language::Rust),
            _ => None,
        }
    }
}

/// A file that could not be linted: unreadable, not UTF-8, too large, or
/// not parseable. The other files are still linted.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FileError {
    /// The file.
    pub path: String,
    /// In a notebook: the cell of a syntax error (1-based, among all cells).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cell: Option<usize>,
    /// 1-based position of a syntax error, when there is one.
    pub line: Option<usize>,
    /// 1-based column of a syntax error.
    pub column: Option<usize>,
    /// What went wrong.
    pub message: String,
}

/// Lints one file's text with every rule. `path` is only used in the
/// diagnostics.
pub fn lint_source(
    path: &str,
    source: &str,
    language: Language,
) -> Result<Vec<Diagnostic>, FileError> {
    lint_source_with(path, source, language, &|_| true)
}

/// Lints one file's text with the rules `enabled` accepts (by code). A rule
/// defers to another only when that one is enabled (as in ruff).
pub fn lint_source_with(
    path: &str,
    source: &str,
    language: Language,
    enabled: &dyn Fn(&str) -> bool,
) -> Result<Vec<Diagnostic>, FileError> {
    let index = LineIndex::new(source);
    let program = match language {
        Language::Python => frontend::python::lower(source).map_err(|e| (e.message, e.offset)),
        Language::Rust => frontend::rust::lower(source).map_err(|e| (e.message, e.offset)),
    }
    .map_err(|(message, offset)| {
        let (line, column) = index.location(offset);
        FileError {
            path: path.to_string(),
            cell: None,
            line: Some(line),
            column: Some(column),
            message: format!("syntax error: {message}"),
        }
    })?;

    Ok(check(path, &index, &program, enabled, &|_| None, true))
}

/// Another file of the invocation, where findings of its code reached
/// from the file being analysed are placed.
pub(crate) type Foreign<'f> = dyn Fn(usize) -> Option<(&'f str, &'f LineIndex)> + 'f;

/// Runs the rules `enabled` accepts on a lowered file. A finding whose span
/// lies in another file of the invocation (a step or reset in a method of a
/// class defined there) is placed in that file, by `foreign`; it carries no
/// fix anchors (its loop is in this file), and is dropped when `foreign`
/// does not know the file. `low`: whether findings only a turned reading
/// shows (all `low`) are wanted; finding them runs the rules again.
pub(crate) fn check(
    path: &str,
    index: &LineIndex,
    program: &ir::Program,
    enabled: &dyn Fn(&str) -> bool,
    foreign: &Foreign<'_>,
    low: bool,
) -> Vec<Diagnostic> {
    let active: Vec<Rule> = rules::ALL.into_iter().filter(|r| enabled(r.code)).collect();
    let by_function = fired_by_function(program, &active, None);
    let found = once_each(&by_function);
    let keys: Vec<assumptions::Key> = found.iter().map(|(r, v, _)| (r.code, v.span)).collect();
    // A turned reading changes few functions: the others' findings are kept.
    let run = |p: &ir::Program, changed: Option<&[bool]>| {
        let fired = fired_by_function(p, &active, changed.map(|c| (c, by_function.as_slice())));
        once_each(&fired)
            .into_iter()
            .map(|(r, v, a)| ((r.code, v.span), (r, v, a)))
            .collect()
    };
    let (weights, extra) = assumptions::weigh(program, &keys, &run, low);
    let found = found
        .into_iter()
        .zip(weights)
        .chain(extra)
        .map(|((rule, v, anchors), weight)| (rule, v, anchors, weight));
    let mut out: Vec<Diagnostic> = found
        .filter_map(|(rule, v, anchors, weight)| {
            let weighed = |d: &mut Diagnostic| {
                d.confidence = weight.confidence();
                d.assumptions = weight
                    .guesses
                    .iter()
                    .map(|g| diagnostic::Assumption::placed(g, index))
                    .collect();
            };
            let Some(file) = v.span.foreign_file() else {
                let mut d = diagnostic(path, index, rule, v.span, v.message, v.help);
                d.anchors = anchors;
                weighed(&mut d);
                return (!diagnostic::is_suppressed(index, d.line, d.code)).then_some(d);
            };
            // In another file: placed there, with no fix (its loop is here).
            let (other, other_index) = foreign(file)?;
            let base = (file + 1) * ir::FOREIGN_BASE;
            let span = Span::new(v.span.start - base, v.span.end - base);
            let loop_line = anchors.loop_span.map(|s| index.location(s.start).0);
            let help = match loop_line {
                Some(l) => format!("{} (The loop that runs it is at {path}:{l}.)", v.help),
                None => v.help,
            };
            let mut d = diagnostic(other, other_index, rule, span, v.message, help);
            d.anchors.elsewhere = true;
            weighed(&mut d);
            (!diagnostic::is_suppressed(other_index, d.line, d.code)).then_some(d)
        })
        .collect();
    out.sort_by_key(|d| (d.path.clone(), d.line, d.column, d.code));
    out
}

fn diagnostic(
    path: &str,
    index: &LineIndex,
    rule: Rule,
    span: Span,
    message: String,
    help: String,
) -> Diagnostic {
    let (line, column) = index.location(span.start);
    let (end_line, end_column) = index.location(span.end);
    Diagnostic {
        code: rule.code,
        rule: rule.name,
        path: path.to_string(),
        cell: None,
        line,
        column,
        end_line,
        end_column,
        message,
        help,
        span,
        anchors: anchors::Anchors::default(),
        confidence: assumptions::Confidence::High,
        assumptions: Vec::new(),
    }
}

/// A finding: its rule, what it says, and where its fix would go.
type Fired = (Rule, rules::Violation, anchors::Anchors);

/// The findings of the `active` rules in each function of a lowered file,
/// in order (a rule deferring to another that reports on the same facts is
/// dropped). With `kept`, a function not marked changed keeps the findings
/// given for it.
fn fired_by_function(
    program: &ir::Program,
    active: &[Rule],
    kept: Option<(&[bool], &[Vec<Fired>])>,
) -> Vec<Vec<Fired>> {
    program
        .functions
        .iter()
        .enumerate()
        .map(|(i, function)| {
            if let Some((changed, before)) = kept {
                if !changed[i] {
                    return before[i].clone();
                }
            }
            let mut out = Vec::new();
            for f in facts::of_function(program, function) {
                let fired: Vec<(Rule, rules::Violation)> = active
                    .iter()
                    .filter_map(|rule| (rule.check)(&f).map(|v| (*rule, v)))
                    .collect();
                for (rule, v) in &fired {
                    if fired.iter().any(|(r, _)| rule.defers_to.contains(&r.code)) {
                        continue;
                    }
                    out.push((*rule, v.clone(), anchors::anchors(&f)));
                }
            }
            out
        })
        .collect()
}

/// Every finding once: a finding is reported by its innermost loop, the
/// first function that reports a place (a pile-up under any rule counts as
/// one).
fn once_each(by_function: &[Vec<Fired>]) -> Vec<Fired> {
    let pile_up = |c: &str| matches!(c, "GL001" | "GL002" | "GL005" | "GL007");
    let mut found: Vec<Fired> = Vec::new();
    for (rule, v, anchors) in by_function.iter().flatten() {
        let dup = found.iter().position(|(r, w, _)| {
            w.span == v.span && (r.code == rule.code || (pile_up(r.code) && pile_up(rule.code)))
        });
        match dup {
            None => found.push((*rule, v.clone(), anchors.clone())),
            // A step with no reset in its own loop (a critic's inner loop)
            // that the loop around steps beside optimizers it resets: that
            // loop names the bug, one optimizer never reset.
            Some(i) if found[i].0.code == "GL001" && rule.code == "GL005" => {
                found[i] = (*rule, v.clone(), anchors.clone());
            }
            Some(_) => {}
        }
    }
    found
}
