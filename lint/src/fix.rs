//! Automatic fixes: `--fix` rewrites what can be fixed with certainty,
//! `--unsafe-fixes` adds the fixes that need a reader's judgement, `--diff`
//! shows the edits without writing.
//!
//! A fix is computed from what a finding carries (its rule, its span, the
//! [`Anchors`] the analysis saw) and the file's text; it copies the
//! indentation, the optimizer's own name, the file's `zero_grad` arguments
//! (`set_to_none=...`) and its line endings. Every fix is checked before it is
//! kept: the new text must parse, and linting it must give the same findings
//! minus the one fixed (no new finding anywhere). Files are replaced
//! atomically (a temporary file in the same folder, then a rename), and a file
//! that does not parse is never touched.
//!
//! | rule | fix | applicability |
//! |---|---|---|
//! | GL001 | insert `opt.zero_grad()` on the line after the step | safe (one optimizer in the loop); unsafe with several, or when the step is in a helper the loop calls |
//! | GL001, manual update | `p.grad = None` after `p -= lr * p.grad` in its `for p in ...` loop; `w.grad = None` after a named tensor's update; `model.zero_grad()` after the loop holding an update with no loop over parameters (`fix/manual_update.rs`) | safe over `model.parameters()` (or a name with `param`) with no later read of a gradient, and for a tensor's plain update; unsafe otherwise |
//! | GL002 | move the reset to the top of the loop body (several resets outside: copy the nearest) | safe when the reset is before the loop and the step runs every iteration in the body; unsafe otherwise (reset after the loop: inserted after the step; step in a helper: to the top of the body) |
//! | GL003 | move the reset before the backward pass; with the pass out of sight, to the top of the loop body; in a helper, after its step | safe when both are in the same block, or the reset is in the body of a loop stepping one optimizer; unsafe otherwise |
//! | GL005 | insert the missing reset after the never-reset optimizer's step | unsafe (several optimizers) |
//! | GL009 | insert the optimizer's reset before its own backward pass (the first the stray pass meets) | safe when that pass and the step are statements of one block in the loop and none of the optimizer's own passes is pending there; unsafe otherwise |
//! | GL004, GL006, GL007, GL008 | none | |
//!
//! Fixes are computed one file at a time. A finding whose step (or reset)
//! lies in another file than its loop (found by analysing the files
//! together) carries no anchors: with `--unsafe-fixes` it is fixed from that
//! file's text alone (the reset after the step, in the file's own names; a
//! GL003 reset moved after its step), and the check lints the files
//! together again.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

mod manual_update;

pub use crate::anchors::{anchors, Anchors};
use crate::config::Config;
use crate::ir::{Span, Updater};
use crate::walk::{self, Report};
use crate::{lint_source, Diagnostic, FileError, Language};

/// Whether a fix may be applied with `--fix` alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applicability {
    /// Certain: applied by `--fix`.
    Safe,
    /// Needs a reader's judgement: applied only with `--unsafe-fixes`.
    Unsafe,
}

/// Replace the bytes `start..end` with `text`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edit {
    /// First byte replaced.
    pub start: usize,
    /// One past the last byte replaced (`start` for an insertion).
    pub end: usize,
    /// The new text.
    pub text: String,
}

/// The edits that fix one finding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fix {
    /// Safe or unsafe.
    pub applicability: Applicability,
    /// Non-overlapping edits.
    pub edits: Vec<Edit>,
}

/// The fixes gradlint knows for `finding` in `source`, best first (the
/// first that passes the check is kept).
pub fn fixes_of(source: &str, language: Language, finding: &Diagnostic) -> Vec<Fix> {
    if finding.anchors.elsewhere {
        return Vec::new();
    }
    let text = Text { source, language };
    let manual = match &finding.anchors.updater {
        Some(u @ (Updater::Manual | Updater::Tensor(_))) => Some(u),
        _ => None,
    };
    match (finding.code, manual) {
        ("GL001", Some(updater)) => manual_update::fixes(&text, finding, updater),
        ("GL001", None) => {
            insert_reset_after_step(&text, finding, finding.anchors.optimizers_in_loop > 1)
                .into_iter()
                .collect()
        }
        ("GL002", _) => move_reset_into_loop(&text, finding),
        ("GL003", _) => move_reset_before_backward(&text, finding)
            .into_iter()
            .collect(),
        // After the step; else (when another loss's pass would then reach
        // the step, GL009) before the backward pass above the step.
        ("GL005", _) => insert_reset_after_step(&text, finding, true)
            .into_iter()
            .chain(insert_reset_before_backward_above_step(&text, finding))
            .collect(),
        ("GL009", _) => insert_reset_before_own_backward(&text, finding)
            .into_iter()
            .collect(),
        _ => Vec::new(),
    }
}

/// Applies non-overlapping edits.
pub fn apply(source: &str, edits: &[Edit]) -> String {
    let mut sorted: Vec<&Edit> = edits.iter().collect();
    sorted.sort_by_key(|e| std::cmp::Reverse((e.start, e.end)));
    let mut out = source.to_string();
    for e in sorted {
        out.replace_range(e.start..e.end, &e.text);
    }
    out
}

/// The outcome of fixing one file's text.
#[derive(Debug, Clone)]
pub struct Fixed {
    /// The new text (the old one when nothing was fixed).
    pub source: String,
    /// Findings fixed.
    pub fixed: usize,
    /// Findings that remain, placed in the new text.
    pub remaining: Vec<Diagnostic>,
}

/// Fixes what can be fixed in one file's text, one finding at a time, each
/// checked: the result parses and its findings are the previous ones minus
/// the one fixed. `shown` says which findings to fix (by rule and
/// confidence, as the report shows them); unsafe fixes only with
/// `unsafe_fixes`. A file that does not parse is an error and is not changed.
pub fn fix_source(
    path: &str,
    source: &str,
    language: Language,
    unsafe_fixes: bool,
    shown: &dyn Fn(&Diagnostic) -> bool,
) -> Result<Fixed, FileError> {
    let mut current = source.to_string();
    let mut findings = lint_source(path, &current, language)?;
    let mut fixed = 0;
    'rounds: loop {
        for finding in findings.iter().filter(|d| shown(d)) {
            for fix in fixes_of(&current, language, finding) {
                if fix.applicability == Applicability::Unsafe && !unsafe_fixes {
                    continue;
                }
                let candidate = apply(&current, &fix.edits);
                let before = (current.as_str(), findings.as_slice());
                if let Some(after) = verify(path, before, &candidate, language, finding) {
                    current = candidate;
                    findings = after;
                    fixed += 1;
                    continue 'rounds;
                }
            }
        }
        break;
    }
    Ok(Fixed {
        source: current,
        fixed,
        remaining: findings,
    })
}

/// The findings of `candidate` when it parses and they are the findings
/// `before` (of the text before) minus `fixed`. Findings are compared by rule
/// and message, since positions move; a step that piles up is one finding
/// whether it is GL001 or GL005 (resetting one of two optimizers turns the
/// other's GL001 into GL005), compared by the step's text.
fn verify(
    path: &str,
    before: (&str, &[Diagnostic]),
    candidate: &str,
    language: Language,
    fixed: &Diagnostic,
) -> Option<Vec<Diagnostic>> {
    let after = lint_source(path, candidate, language).ok()?;
    let (text, found) = before;
    let identity = |d: &Diagnostic, text: &str| -> (&'static str, String) {
        match d.code {
            "GL001" | "GL005" => (
                "pile-up",
                text.get(d.span.start..d.span.end).unwrap_or("").to_string(),
            ),
            code => (code, d.message.clone()),
        }
    };
    let mut expected: HashMap<(&str, String), i64> = HashMap::new();
    for d in found {
        *expected.entry(identity(d, text)).or_default() += 1;
    }
    *expected.entry(identity(fixed, text)).or_default() -= 1;
    for d in &after {
        *expected.entry(identity(d, candidate)).or_default() -= 1;
    }
    expected.values().all(|&n| n == 0).then_some(after)
}

/// One file changed (or to be changed) by fixes.
#[derive(Debug, Clone)]
pub struct FileFix {
    /// The file, as given or found.
    pub path: PathBuf,
    /// Its text before.
    pub before: String,
    /// Its text after.
    pub after: String,
    /// Findings fixed in it.
    pub fixed: usize,
}

impl FileFix {
    /// The edits as a unified diff (`--- a/path`, `+++ b/path`).
    pub fn unified_diff(&self) -> String {
        let name = self.path.display().to_string();
        similar::TextDiff::from_lines(&self.before, &self.after)
            .unified_diff()
            .context_radius(3)
            .header(&format!("a/{name}"), &format!("b/{name}"))
            .to_string()
    }
}

/// Lints and fixes every file under `paths`. With `write`, changed files are
/// replaced atomically; otherwise nothing is written (`--diff`). The report
/// holds the findings that remain (or would remain) and the count fixed.
pub fn fix_paths(
    paths: &[PathBuf],
    config: &Config,
    unsafe_fixes: bool,
    write: bool,
) -> (Report, Vec<FileFix>) {
    let (files, mut errors) = walk::collect(paths, config);
    let pool = rayon::ThreadPoolBuilder::new()
        .stack_size(64 * 1024 * 1024)
        .build()
        .expect("thread pool");
    let shown = |d: &Diagnostic| config.shows(d);
    // Fixes are made one file at a time; the findings of the files analysed
    // together (a step in another file than its loop) are fixed after, with
    // `--unsafe-fixes` only.
    let (results, together) = pool.install(|| {
        let results: Vec<FileOutcome> = files
            .par_iter()
            .map(|p| fix_file(p, unsafe_fixes, write, &shown))
            .collect();
        (results, crate::project::lint_files(&files, config))
    });
    let mut diagnostics = Vec::new();
    let mut changed = Vec::new();
    let mut fixed = 0;
    for (r, t) in results.into_iter().zip(together) {
        match r {
            Ok((d, Some(f))) => {
                diagnostics.extend(d.into_iter().filter(|d| config.shows(d)));
                let elsewhere = t.unwrap_or_default().into_iter();
                diagnostics.extend(elsewhere.filter(|d| d.anchors.elsewhere));
                fixed += f.fixed;
                changed.push(f);
            }
            Ok((d, None)) => diagnostics.extend(t.unwrap_or(d)),
            Err(e) => errors.push(e),
        }
    }
    // Findings placed in another file than their loop, with
    // `--unsafe-fixes`: fixed in that file, each checked against the files
    // analysed together.
    let elsewhere = |d: &Diagnostic| d.anchors.elsewhere && config.shows(d);
    if unsafe_fixes && diagnostics.iter().any(elsewhere) {
        let outcome = pool.install(|| fix_elsewhere(&files, config, &mut changed, write));
        fixed += outcome.fixed;
        errors.extend(outcome.errors);
        let touched = |d: &Diagnostic| outcome.touched.iter().any(|p| Path::new(&d.path) == p);
        diagnostics.retain(|d| !touched(d));
        diagnostics.extend(outcome.found.into_iter().filter(touched));
    }
    diagnostics.retain(|d| config.shows(d));
    walk::sort_and_dedup(&mut diagnostics);
    errors.sort_by(|a, b| a.path.cmp(&b.path));
    changed.sort_by(|a, b| a.path.cmp(&b.path));
    let report = Report {
        diagnostics,
        errors,
        files: files.len(),
        fixed: Some(fixed),
    };
    (report, changed)
}

/// What fixing the findings placed in another file than their loop did.
struct ElsewhereOutcome {
    /// Findings fixed.
    fixed: usize,
    /// The files changed.
    touched: Vec<PathBuf>,
    /// The findings of all files (of the rules enabled, whatever their
    /// confidence), linted together after the fixes.
    found: Vec<Diagnostic>,
    /// Files that could not be written.
    errors: Vec<FileError>,
}

/// Fixes, one at a time, the findings placed in another file than their
/// loop (a step in a method of a class defined there): in that file, in its
/// own names (`self.optimizer.zero_grad()` after `self.optimizer.step()`),
/// always unsafe (the method may serve other callers). Each fix is checked
/// as every fix is, but against the files analysed together: the new text
/// parses, and linting all files again gives the same findings minus the
/// one fixed. `changed` holds the files already fixed one by one (their new
/// texts are read from there); the files changed here join it.
fn fix_elsewhere(
    files: &[PathBuf],
    config: &Config,
    changed: &mut Vec<FileFix>,
    write: bool,
) -> ElsewhereOutcome {
    let mut sources: crate::project::Sources = changed
        .iter()
        .map(|f| (f.path.clone(), f.after.clone()))
        .collect();
    let lint_all = |sources: &crate::project::Sources| -> Vec<Diagnostic> {
        crate::project::lint_files_with(files, config, sources)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|d| config.enabled(d.code))
            .collect()
    };
    let mut found = lint_all(&sources);
    let mut fixes_by_file: Vec<(PathBuf, usize)> = Vec::new();
    'rounds: loop {
        for finding in found
            .iter()
            .filter(|d| d.anchors.elsewhere && config.shows(d))
        {
            let path = PathBuf::from(&finding.path);
            let notebook = path.extension().is_some_and(|e| e == "ipynb");
            if notebook || Language::of(&path) != Some(Language::Python) {
                continue;
            }
            let current = match sources.get(&path) {
                Some(t) => t.clone(),
                None => match std::fs::read_to_string(&path) {
                    Ok(t) => t,
                    Err(_) => continue,
                },
            };
            for fix in elsewhere_fixes(&current, Language::Python, finding) {
                let candidate = apply(&current, &fix.edits);
                if lint_source(&finding.path, &candidate, Language::Python).is_err() {
                    continue;
                }
                let mut next = sources.clone();
                next.insert(path.clone(), candidate);
                let after = lint_all(&next);
                if same_findings_minus(&found, &after, finding) {
                    sources = next;
                    found = after;
                    match fixes_by_file.iter_mut().find(|(p, _)| *p == path) {
                        Some((_, n)) => *n += 1,
                        None => fixes_by_file.push((path, 1)),
                    }
                    continue 'rounds;
                }
            }
        }
        break;
    }
    let mut errors = Vec::new();
    let mut touched = Vec::new();
    for (path, n) in &fixes_by_file {
        let after = sources[path].clone();
        let name = path.display().to_string();
        if write {
            if let Err(e) = write_atomically(path, &after) {
                errors.push(FileError {
                    path: name,
                    line: None,
                    column: None,
                    cell: None,
                    message: format!("cannot write the fixed file (left unchanged): {e}"),
                });
                continue;
            }
        }
        match changed.iter_mut().find(|f| f.path == *path) {
            Some(f) => {
                f.after = after;
                f.fixed += n;
            }
            None => changed.push(FileFix {
                path: path.clone(),
                before: std::fs::read_to_string(path).unwrap_or_default(),
                after,
                fixed: *n,
            }),
        }
        touched.push(path.clone());
    }
    // A file that could not be written keeps its findings.
    if !errors.is_empty() {
        found = lint_all(
            &changed
                .iter()
                .map(|f| (f.path.clone(), f.after.clone()))
                .collect(),
        );
    }
    ElsewhereOutcome {
        fixed: fixes_by_file
            .iter()
            .filter(|(p, _)| touched.contains(p))
            .map(|(_, n)| n)
            .sum(),
        touched,
        found,
        errors,
    }
}

/// Whether `after` is `before` without `fixed`, findings compared by file,
/// rule and message (positions move).
fn same_findings_minus(before: &[Diagnostic], after: &[Diagnostic], fixed: &Diagnostic) -> bool {
    let key = |d: &Diagnostic| (d.path.clone(), d.code, d.message.clone());
    let mut count: HashMap<(String, &str, String), i64> = HashMap::new();
    for d in before {
        *count.entry(key(d)).or_default() += 1;
    }
    *count.entry(key(fixed)).or_default() -= 1;
    for d in after {
        *count.entry(key(d)).or_default() -= 1;
    }
    count.values().all(|&n| n == 0)
}

/// The fixes of a finding placed in another file than its loop, made from
/// that file's text alone: the reset after an optimizer's step (GL001,
/// GL002, GL005), a reset moved after its step (GL003). Unsafe.
fn elsewhere_fixes(source: &str, language: Language, finding: &Diagnostic) -> Vec<Fix> {
    let text = Text { source, language };
    let fix = match finding.code {
        "GL001" | "GL002" | "GL005" => {
            reset_after_step(&text, finding.span, None, Applicability::Unsafe)
        }
        "GL003" => text
            .statement(finding.span)
            .and_then(|reset| after_its_step(&text, &reset)),
        _ => None,
    };
    fix.into_iter().collect()
}

/// A file's findings after fixing, and its change if any.
type FileOutcome = Result<(Vec<Diagnostic>, Option<FileFix>), FileError>;

fn fix_file(
    path: &Path,
    unsafe_fixes: bool,
    write: bool,
    shown: &(dyn Fn(&Diagnostic) -> bool + Sync),
) -> FileOutcome {
    // The same reading rules as linting (size, UTF-8, parse errors).
    let found = crate::file::lint_file(path)?;
    // Only plain source files are rewritten: a notebook's findings are placed
    // in its cells, not in the JSON text, so notebooks are never fixed.
    let notebook = path.extension().is_some_and(|e| e == "ipynb");
    let Some(language) = Language::of(path).filter(|_| !notebook) else {
        return Ok((found, None));
    };
    let name = path.display().to_string();
    let io_error = |e: std::io::Error| FileError {
        path: name.clone(),
        line: None,
        column: None,
        cell: None,
        message: e.to_string(),
    };
    if !found
        .iter()
        .any(|d| shown(d) && matches!(d.code, "GL001" | "GL002" | "GL003" | "GL005" | "GL009"))
    {
        return Ok((found, None));
    }
    let before = std::fs::read_to_string(path).map_err(io_error)?;
    let result = fix_source(&name, &before, language, unsafe_fixes, shown)?;
    if result.fixed == 0 {
        return Ok((result.remaining, None));
    }
    if write {
        write_atomically(path, &result.source).map_err(|e| FileError {
            path: name.clone(),
            line: None,
            column: None,
            cell: None,
            message: format!("cannot write the fixed file (left unchanged): {e}"),
        })?;
    }
    let fix = FileFix {
        path: path.to_path_buf(),
        before,
        after: result.source,
        fixed: result.fixed,
    };
    Ok((result.remaining, Some(fix)))
}

/// Replaces `path`'s contents: writes a temporary file next to it (same
/// permissions), flushes it to disk, and renames it over the file (through a
/// symbolic link to its target). An interrupted write leaves the old file.
pub fn write_atomically(path: &Path, contents: &str) -> std::io::Result<()> {
    let target = std::fs::canonicalize(path)?;
    let dir = target.parent().unwrap_or(Path::new("."));
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.gradlint-{}.tmp", std::process::id()));
    let written = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        file.write_all(contents.as_bytes())?;
        file.sync_all()?;
        std::fs::set_permissions(&tmp, std::fs::metadata(&target)?.permissions())?;
        std::fs::rename(&tmp, &target)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// A file's text, read line by line.
struct Text<'a> {
    source: &'a str,
    language: Language,
}

/// A statement alone on its line (or lines): where it starts and ends.
struct Statement {
    /// Start of its first line.
    line_start: usize,
    /// Start of the line after it (the file's length at the end).
    next_line: usize,
    /// End of its text, before the line ending.
    content_end: usize,
    /// Its indentation.
    indent: String,
    /// Its text from the indentation to the end of the line (comment kept).
    text: String,
    /// Its line ending (`\r\n` or `\n`).
    newline: &'static str,
}

impl Text<'_> {
    fn line_start(&self, at: usize) -> usize {
        self.source[..at].rfind('\n').map_or(0, |i| i + 1)
    }

    /// End of the line's text, before `\r\n` or `\n`.
    fn content_end(&self, at: usize) -> usize {
        let end = self.source[at..]
            .find('\n')
            .map_or(self.source.len(), |i| at + i);
        if end > at && self.source[..end].ends_with('\r') {
            end - 1
        } else {
            end
        }
    }

    fn next_line(&self, at: usize) -> usize {
        self.source[at..]
            .find('\n')
            .map_or(self.source.len(), |i| at + i + 1)
    }

    fn newline_at(&self, at: usize) -> &'static str {
        let end = self.content_end(at);
        if self.source[end..].starts_with("\r\n")
            || (end == self.source.len() && self.source.contains("\r\n"))
        {
            "\r\n"
        } else {
            "\n"
        }
    }

    fn indent_of(&self, line_start: usize) -> &str {
        let line = &self.source[line_start..];
        let n = line.len() - line.trim_start_matches([' ', '\t']).len();
        &line[..n]
    }

    fn comment(&self) -> &'static str {
        match self.language {
            Language::Python => "#",
            Language::Rust => "//",
        }
    }

    /// The statement made of `span` alone: nothing but indentation before it
    /// on its line, and after it nothing (Python) or `;`/`?;` (Rust), then an
    /// optional comment.
    fn statement(&self, span: Span) -> Option<Statement> {
        let s = self.source.get(span.start..span.end)?;
        if s.contains('\n') {
            return None;
        }
        let line_start = self.line_start(span.start);
        if !self.source[line_start..span.start].trim().is_empty() {
            return None;
        }
        let content_end = self.content_end(span.start);
        let after = self.source[span.end..content_end].trim_start();
        let after = match self.language {
            Language::Python => after,
            Language::Rust => after
                .strip_prefix('?')
                .unwrap_or(after)
                .trim_start()
                .strip_prefix(';')?
                .trim_start(),
        };
        if !(after.is_empty() || after.starts_with(self.comment())) {
            return None;
        }
        let indent = self.indent_of(line_start).to_string();
        Some(Statement {
            line_start,
            next_line: self.next_line(span.start),
            content_end,
            text: self.source[line_start + indent.len()..content_end].to_string(),
            indent,
            newline: self.newline_at(span.start),
        })
    }

    /// The code of the line starting at `line_start`, without its comment
    /// (roughly: Python strings holding `#` are rare in loop headers).
    fn code_of_line(&self, line_start: usize) -> &str {
        let line = &self.source[line_start..self.content_end(line_start)];
        line.split(self.comment()).next().unwrap_or("").trim()
    }

    /// The start of the first line of the loop body and its indentation:
    /// the line after the header (which ends with `:` in Python, `{` in
    /// Rust), when the body's first statement is indented deeper.
    fn loop_body(&self, loop_span: Span) -> Option<(usize, String)> {
        let header_start = self.line_start(loop_span.start);
        let header_indent = self.indent_of(header_start).len();
        let opener = match self.language {
            Language::Python => ':',
            Language::Rust => '{',
        };
        // The header ends on the first line that ends with the opener
        // outside brackets; a line that ends otherwise must continue (open
        // brackets, a backslash), or the body is on the header's line.
        let mut at = header_start;
        let mut depth = 0i64;
        let mut header_end = None;
        for _ in 0..50 {
            let code = self.code_of_line(at);
            for c in code.chars() {
                match c {
                    '(' | '[' => depth += 1,
                    ')' | ']' => depth -= 1,
                    _ => {}
                }
            }
            if depth <= 0 && code.ends_with(opener) {
                header_end = Some(at);
                break;
            }
            let next = self.next_line(at);
            if (depth <= 0 && !code.ends_with('\\')) || next >= self.source.len() {
                return None;
            }
            at = next;
        }
        let body = self.next_line(header_end?);
        let mut at = body;
        while at < self.source.len() {
            if !self.code_of_line(at).is_empty() {
                let indent = self.indent_of(at);
                return (indent.len() > header_indent).then(|| (body, indent.to_string()));
            }
            at = self.next_line(at);
        }
        None
    }
}

/// The optimizer of a step call: `opt` in `opt.step()`, `self.opt` in
/// `self.opt.step(closure)`, and `opt` in `scaler.step(opt)` (AMP's grad
/// scaler steps the optimizer it is given): the argument when it is the
/// finding's optimizer `updater`, or, with none known, when the receiver is
/// a scaler.
fn step_receiver<'c>(call: &'c str, updater: Option<&str>) -> Option<&'c str> {
    let plain = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_alphanumeric() || c == '_' || c == '.')
    };
    let at = call.rfind(".step(")?;
    let receiver = call[..at].trim();
    let argument = call[at + ".step(".len()..]
        .split([',', ')'])
        .next()
        .map(str::trim)
        .filter(|a| plain(a) && !a.contains('='));
    let scaler = receiver
        .rsplit('.')
        .next()
        .is_some_and(|r| r.to_ascii_lowercase().contains("scaler"));
    match (argument, updater) {
        (Some(a), Some(u)) if a == u && receiver != u => Some(a),
        (Some(a), None) if scaler => Some(a),
        _ => plain(receiver).then_some(receiver),
    }
}

/// `opt.zero_grad()` in the file's style: Python keeps the first
/// `zero_grad(set_to_none=...)` argument it finds; Rust ends with `;`.
fn reset_statement(text: &Text, receiver: &str) -> String {
    match text.language {
        Language::Python => {
            let style = text.source.find("zero_grad(set_to_none=").and_then(|at| {
                let args = &text.source[at + "zero_grad(".len()..];
                let end = args.find(')')?;
                let args = args[..end].trim();
                (!args.contains('\n')).then_some(args)
            });
            format!("{receiver}.zero_grad({})", style.unwrap_or(""))
        }
        Language::Rust => format!("{receiver}.zero_grad();"),
    }
}

/// GL001, GL005: `opt.zero_grad()` on the line after `opt.step()`.
fn insert_reset_after_step(text: &Text, finding: &Diagnostic, uncertain: bool) -> Option<Fix> {
    if !matches!(finding.anchors.updater, Some(Updater::Optimizer(_))) {
        return None;
    }
    // A step in a helper called from the loop: the helper may serve other
    // callers (accumulation), so the reset there is a judgement call.
    let in_helper = finding
        .anchors
        .loop_span
        .is_some_and(|l| !l.contains(finding.span));
    let uncertain = uncertain || in_helper;
    let applicability = if uncertain {
        Applicability::Unsafe
    } else {
        Applicability::Safe
    };
    let optimizer = match &finding.anchors.updater {
        Some(Updater::Optimizer(o)) => Some(o.as_str()),
        _ => None,
    };
    // After the step that applied the pass first.
    let step = finding.anchors.applied_first.unwrap_or(finding.span);
    reset_after_step(text, step, optimizer, applicability)
}

/// `opt.zero_grad()` on the line after the step `opt.step()` (or
/// `scaler.step(opt)`) at `span`, of the optimizer `updater` when known.
fn reset_after_step(
    text: &Text,
    span: Span,
    updater: Option<&str>,
    applicability: Applicability,
) -> Option<Fix> {
    let step = text.statement(span)?;
    let call = &text.source[span.start..span.end];
    let receiver = step_receiver(call, updater)?;
    let reset = reset_statement(text, receiver);
    Some(Fix {
        applicability,
        edits: vec![Edit {
            start: step.content_end,
            end: step.content_end,
            text: format!("{}{}{reset}", step.newline, step.indent),
        }],
    })
}

/// GL005's second choice: `opt.zero_grad()` on the line before the nearest
/// backward pass above the step in its block (unsafe; the check refuses it
/// when it clears a pass the step needs).
fn insert_reset_before_backward_above_step(text: &Text, finding: &Diagnostic) -> Option<Fix> {
    let name = finding.anchors.optimizer_name.as_ref()?;
    let step = text.statement(finding.span)?;
    let loop_start = finding.anchors.loop_span?.start;
    if !finding.anchors.loop_span?.contains(finding.span) {
        return None;
    }
    let mut at = step.line_start;
    let backward_line = loop {
        if at == 0 || at <= loop_start {
            return None;
        }
        at = text.line_start(at - 1);
        let code = text.code_of_line(at);
        if code.is_empty() {
            continue;
        }
        let indent = text.indent_of(at);
        if indent.len() < step.indent.len() {
            return None;
        }
        if indent == step.indent && code.contains("backward(") {
            break at;
        }
    };
    if backward_line <= text.line_start(loop_start) {
        return None;
    }
    let reset = reset_statement(text, name);
    Some(Fix {
        applicability: Applicability::Unsafe,
        edits: vec![Edit {
            start: backward_line,
            end: backward_line,
            text: format!("{}{reset}{}", step.indent, step.newline),
        }],
    })
}

/// GL009: `opt.zero_grad()` on the line before the optimizer's own
/// backward pass that the stray pass meets first. Safe when that pass and
/// the step are statements of the same block of the loop (not in a helper)
/// and none of the optimizer's own passes is pending there.
fn insert_reset_before_own_backward(text: &Text, finding: &Diagnostic) -> Option<Fix> {
    let anchors = &finding.anchors;
    let (Some(name), Some(backward)) = (&anchors.optimizer_name, anchors.reset_before) else {
        return None;
    };
    let pass = text.statement(backward)?;
    let step = text.statement(finding.span)?;
    let in_loop = anchors
        .loop_span
        .is_some_and(|l| l.contains(backward) && l.contains(finding.span));
    let certain = anchors.reset_before_certain && in_loop && pass.indent == step.indent;
    let reset = reset_statement(text, name);
    Some(Fix {
        applicability: if certain {
            Applicability::Safe
        } else {
            Applicability::Unsafe
        },
        edits: vec![Edit {
            start: pass.line_start,
            end: pass.line_start,
            text: format!("{}{reset}{}", pass.indent, pass.newline),
        }],
    })
}

/// GL002: the reset outside the loop moves to the top of the loop body;
/// when removing it would hurt another loop (the check refuses the move), a
/// copy goes there instead. With several resets outside the loop, the one
/// nearest before it is copied and all are kept.
fn move_reset_into_loop(text: &Text, finding: &Diagnostic) -> Vec<Fix> {
    let anchors = &finding.anchors;
    let Some(loop_span) = anchors.loop_span else {
        return Vec::new();
    };
    let outside = &anchors.resets_outside_loop;
    let nearest_before = outside
        .iter()
        .filter(|r| r.end <= loop_span.start)
        .max_by_key(|r| r.start);
    let Some(reset_span) = nearest_before.or(outside.first()) else {
        return Vec::new();
    };
    let several = outside.len() > 1;
    let (Some(reset), Some((body, body_indent))) =
        (text.statement(*reset_span), text.loop_body(loop_span))
    else {
        return Vec::new();
    };
    let remove = Edit {
        start: reset.line_start,
        end: reset.next_line,
        text: String::new(),
    };
    let insert_at_top = Edit {
        start: body,
        end: body,
        text: format!("{body_indent}{}{}", reset.text, reset.newline),
    };
    // The move, then the copy (the move alone when the others stay).
    let moves = |applicability| {
        let mut out = Vec::new();
        if !several {
            out.push(Fix {
                applicability,
                edits: vec![remove.clone(), insert_at_top.clone()],
            });
        }
        out.push(Fix {
            applicability,
            edits: vec![insert_at_top.clone()],
        });
        out
    };
    let before_loop = reset_span.end <= loop_span.start;
    let in_helper = !loop_span.contains(finding.span);
    let manual = matches!(anchors.updater, Some(Updater::Manual | Updater::Tensor(_)));
    let step = text.statement(finding.span);
    // A manual update in `with torch.no_grad():` and `for p in
    // model.parameters():` runs every iteration as a step in the body does.
    let step_in_body = !in_helper
        && (step.as_ref().is_some_and(|s| s.indent == body_indent)
            || (manual && manual_update::runs_every_iteration(text, finding.span, loop_span)));
    if before_loop && step_in_body && anchors.optimizers_in_loop <= 1 {
        return moves(Applicability::Safe);
    }
    // A manual update nested in a loop over parameters: its own fixes (a
    // model's reset right after `p -= ...` would clear the parameters the
    // loop has not updated yet), never safe here.
    if let Some(updater) = anchors.updater.as_ref().filter(|_| manual) {
        let mut fixes = manual_update::fixes(text, finding, updater);
        for f in &mut fixes {
            f.applicability = Applicability::Unsafe;
        }
        return fixes;
    }
    // The step in a helper the loop calls: the reset, written in the loop's
    // own scope, goes to the top of the loop body (the call may be
    // conditional, or the helper serve other loops: unsafe).
    let mut out = if in_helper && before_loop {
        moves(Applicability::Unsafe)
    } else {
        Vec::new()
    };
    // After the loop, or the step nested in the body: right after the step.
    if let Some(step) = step {
        let insert = Edit {
            start: step.content_end,
            end: step.content_end,
            text: format!("{}{}{}", step.newline, step.indent, reset.text),
        };
        if !several {
            out.push(Fix {
                applicability: Applicability::Unsafe,
                edits: vec![remove, insert.clone()],
            });
        }
        out.push(Fix {
            applicability: Applicability::Unsafe,
            edits: vec![insert],
        });
    }
    out
}

/// GL003: the reset between backward and step moves before the backward
/// pass (the nearest line above it in the loop that calls `backward(`);
/// with the backward pass out of sight (in a function the loop calls), to
/// the top of the loop body; in a helper, right after the step.
fn move_reset_before_backward(text: &Text, finding: &Diagnostic) -> Vec<Fix> {
    let Some(reset) = text.statement(finding.span) else {
        return Vec::new();
    };
    let mut fixes: Vec<Fix> = [
        before_backward_line(text, finding, &reset),
        to_top_of_loop(text, finding, &reset),
        after_its_step(text, &reset),
    ]
    .into_iter()
    .flatten()
    .collect();
    // A safe fix first, even with `--unsafe-fixes` (the sort is stable).
    fixes.sort_by_key(|f| f.applicability == Applicability::Unsafe);
    fixes
}

/// The reset moved before the nearest line above it in the loop that calls
/// `backward(`: safe when both are in the same block.
fn before_backward_line(text: &Text, finding: &Diagnostic, reset: &Statement) -> Option<Fix> {
    let loop_start = finding.anchors.loop_span.map_or(0, |s| s.start);
    let mut at = reset.line_start;
    let backward_line = loop {
        if at == 0 || at <= loop_start {
            return None;
        }
        at = text.line_start(at - 1);
        let code = text.code_of_line(at);
        if code.contains("backward(") {
            break at;
        }
    };
    let code = text.code_of_line(backward_line);
    let opener = match text.language {
        Language::Python => ':',
        Language::Rust => '{',
    };
    if code.ends_with(opener) || backward_line <= text.line_start(loop_start) {
        return None;
    }
    let indent = text.indent_of(backward_line).to_string();
    let same_block = indent == reset.indent;
    Some(Fix {
        applicability: if same_block {
            Applicability::Safe
        } else {
            Applicability::Unsafe
        },
        edits: vec![
            Edit {
                start: backward_line,
                end: backward_line,
                text: format!("{indent}{}{}", reset.text, reset.newline),
            },
            Edit {
                start: reset.line_start,
                end: reset.next_line,
                text: String::new(),
            },
        ],
    })
}

/// The reset, a statement of the loop body, moved to the top of the body:
/// before everything the iteration runs, the backward pass included. Safe
/// with one optimizer in the loop (the check refuses it when the backward
/// pass is not between the two places: the finding would remain).
fn to_top_of_loop(text: &Text, finding: &Diagnostic, reset: &Statement) -> Option<Fix> {
    let loop_span = finding
        .anchors
        .loop_span
        .filter(|l| l.contains(finding.span))?;
    let (body, body_indent) = text.loop_body(loop_span)?;
    if reset.indent != body_indent || reset.line_start == body {
        return None;
    }
    Some(Fix {
        applicability: if finding.anchors.optimizers_in_loop <= 1 {
            Applicability::Safe
        } else {
            Applicability::Unsafe
        },
        edits: vec![
            Edit {
                start: body,
                end: body,
                text: format!("{body_indent}{}{}", reset.text, reset.newline),
            },
            Edit {
                start: reset.line_start,
                end: reset.next_line,
                text: String::new(),
            },
        ],
    })
}

/// The reset moved right after the step of its own optimizer that follows
/// it in the same block (`opt.zero_grad()` ... `opt.step()` or
/// `scaler.step(opt)`): unsafe (the first pass of a run is then applied
/// with whatever gradients were there before it).
fn after_its_step(text: &Text, reset: &Statement) -> Option<Fix> {
    let receiver = reset.text.split(".zero_grad(").next()?.trim();
    let plain = !receiver.is_empty()
        && receiver
            .chars()
            .all(|c| c.is_alphanumeric() || c == '_' || c == '.');
    if !plain || !reset.text.contains(".zero_grad(") {
        return None;
    }
    let mut at = reset.next_line;
    while at < text.source.len() {
        let code = text.code_of_line(at);
        if !code.is_empty() {
            let indent = text.indent_of(at);
            if indent.len() < reset.indent.len() {
                return None;
            }
            let steps = code.starts_with(&format!("{receiver}.step("))
                || code.contains(&format!(".step({receiver})"))
                || code.contains(&format!(".step({receiver},"));
            if steps && indent == reset.indent {
                // A whole statement on its line: not a header, not the
                // start of a call continued below.
                let balanced = code.matches('(').count() == code.matches(')').count();
                let whole = match text.language {
                    Language::Python => !code.ends_with(':'),
                    Language::Rust => code.ends_with(';'),
                };
                if !(balanced && whole) {
                    return None;
                }
                let end = text.content_end(at);
                return Some(Fix {
                    applicability: Applicability::Unsafe,
                    edits: vec![
                        Edit {
                            start: end,
                            end,
                            text: format!("{}{}{}", reset.newline, reset.indent, reset.text),
                        },
                        Edit {
                            start: reset.line_start,
                            end: reset.next_line,
                            text: String::new(),
                        },
                    ],
                });
            }
        }
        at = text.next_line(at);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fix(source: &str, unsafe_fixes: bool) -> Fixed {
        fix_source("t.py", source, Language::Python, unsafe_fixes, &|_| true).unwrap()
    }

    #[test]
    fn missing_reset_is_inserted_after_the_step_with_the_optimizer_name() {
        let src =
            "for x in data:\n    loss(x).backward()\n    self.opt.step()  # update\n    log()\n";
        let out = fix(src, false);
        assert_eq!(out.fixed, 1);
        assert_eq!(
            out.source,
            "for x in data:\n    loss(x).backward()\n    self.opt.step()  # update\n    self.opt.zero_grad()\n    log()\n"
        );
        assert!(out.remaining.is_empty());
    }

    #[test]
    fn set_to_none_style_and_crlf_are_kept() {
        let src = "opt.zero_grad(set_to_none=True)\r\nfor x in data:\r\n    loss(x).backward()\r\n    opt.step()\r\n\r\nfor x in data:\r\n    loss(x).backward()\r\n    opt.step()";
        let out = fix(src, false);
        assert_eq!(out.fixed, 2, "{}", out.source);
        assert!(out.remaining.is_empty());
        assert_eq!(
            out.source,
            "for x in data:\r\n    opt.zero_grad(set_to_none=True)\r\n    loss(x).backward()\r\n    opt.step()\r\n\r\nfor x in data:\r\n    opt.zero_grad(set_to_none=True)\r\n    loss(x).backward()\r\n    opt.step()"
        );
    }

    #[test]
    fn a_scaler_step_gets_the_reset_of_the_optimizer_it_steps() {
        let src = "for x in data:\n    scaler.scale(loss(x)).backward()\n    scaler.step(optimizer)\n    scaler.update()\n";
        let out = fix(src, false);
        assert_eq!(
            out.source,
            "for x in data:\n    scaler.scale(loss(x)).backward()\n    scaler.step(optimizer)\n    optimizer.zero_grad()\n    scaler.update()\n"
        );
        assert_eq!(step_receiver("opt.step(closure)", Some("opt")), Some("opt"));
        assert_eq!(
            step_receiver("self.scaler.step(self.opt)", None),
            Some("self.opt")
        );
        assert_eq!(step_receiver("opt.step(lr=0.1)", None), Some("opt"));
    }

    #[test]
    fn reset_between_backward_and_step_moves_before_backward() {
        let src = "for x in data:\n    out = model(x)\n    loss(out).backward()\n    opt.zero_grad()\n    opt.step()\n";
        let out = fix(src, false);
        assert_eq!(
            out.source,
            "for x in data:\n    out = model(x)\n    opt.zero_grad()\n    loss(out).backward()\n    opt.step()\n"
        );
    }

    #[test]
    fn several_optimizers_are_fixed_only_with_unsafe_fixes() {
        let src = "for x in data:\n    d_loss(x).backward()\n    opt_d.step()\n    g_loss(x).backward()\n    opt_g.step()\n";
        let safe = fix(src, false);
        assert_eq!((safe.fixed, safe.source.as_str()), (0, src));
        assert!(!safe.remaining.is_empty());
        let unsafe_ = fix(src, true);
        assert!(unsafe_.remaining.is_empty(), "{}", unsafe_.source);
        assert!(unsafe_
            .source
            .contains("opt_d.step()\n    opt_d.zero_grad()\n"));
        assert!(unsafe_
            .source
            .contains("opt_g.step()\n    opt_g.zero_grad()\n"));
    }

    #[test]
    fn a_stray_pass_is_cleared_before_the_optimizers_own_pass() {
        let head =
            "opt_d = Adam(net_d.parameters())\nopt_g = Adam(net_g.parameters())\nfor x in data:\n";
        let g = "    opt_g.zero_grad()\n    g_loss = crit(net_d(net_g(z)))\n    g_loss.backward()\n    opt_g.step()\n";
        let src = format!("{head}    d_loss = crit(net_d(x))\n    d_loss.backward()\n    opt_d.step()\n    opt_d.zero_grad()\n{g}");
        let out = fix(&src, false);
        assert_eq!(out.fixed, 1, "{}", out.source);
        assert!(out.remaining.is_empty());
        assert!(out
            .source
            .contains("    opt_d.zero_grad()\n    d_loss.backward()\n    opt_d.step()\n"));
        // The own pass in a branch, the step after it: only with
        // --unsafe-fixes.
        let src = format!("{head}    if c:\n        crit(net_d(x)).backward()\n    opt_d.step()\n    opt_d.zero_grad()\n{g}");
        assert_eq!(fix(&src, false).fixed, 0);
        let out = fix(&src, true);
        assert_eq!(out.fixed, 1, "{}", out.source);
        assert!(out
            .source
            .contains("        opt_d.zero_grad()\n        crit(net_d(x)).backward()\n"));
    }

    #[test]
    fn findings_without_a_fix_and_syntax_errors_are_not_touched() {
        // GL004: where the reset belongs is the reader's call.
        let accumulation = "for i, x in enumerate(data):\n    loss(x).backward()\n    if (i + 1) % 4 == 0:\n        opt.step()\n    opt.zero_grad()\n";
        let out = fix(accumulation, true);
        assert_eq!(out.remaining[0].code, "GL004");
        assert_eq!((out.fixed, out.source.as_str()), (0, accumulation));
        assert!(fix_source("t.py", "for x in:\n", Language::Python, true, &|_| true).is_err());
    }

    #[test]
    fn a_fix_that_trades_one_finding_for_another_is_refused() {
        let src = "opt.zero_grad()\nfor x in a:\n    loss(x).backward()\n    opt.step()\n";
        let before = lint_source("t.py", src, Language::Python).unwrap();
        assert_eq!(before[0].code, "GL002");
        // Deleting the reset only turns GL002 into GL001: refused.
        let bad = "for x in a:\n    loss(x).backward()\n    opt.step()\n";
        assert!(verify("t.py", (src, &before), bad, Language::Python, &before[0]).is_none());
        let good = "for x in a:\n    opt.zero_grad()\n    loss(x).backward()\n    opt.step()\n";
        assert_eq!(
            verify("t.py", (src, &before), good, Language::Python, &before[0]),
            Some(vec![])
        );
    }

    #[test]
    fn a_fix_that_breaks_the_syntax_is_refused() {
        let src = "opt.zero_grad()\nfor x in a:\n    loss(x).backward()\n    opt.step()\n";
        let before = lint_source("t.py", src, Language::Python).unwrap();
        let broken = "for x in a:\nopt.zero_grad()\n    loss(x).backward()\n    opt.step()\n";
        assert!(verify("t.py", (src, &before), broken, Language::Python, &before[0]).is_none());
    }

    #[test]
    fn loop_headers_over_several_lines_and_bodies_on_the_header_line() {
        let src = "opt.zero_grad()\nfor x, y in zip(\n    a,\n    b,\n):\n    loss(x).backward()\n    opt.step()\n";
        let out = fix(src, false);
        assert_eq!(
            out.source,
            "for x, y in zip(\n    a,\n    b,\n):\n    opt.zero_grad()\n    loss(x).backward()\n    opt.step()\n"
        );
        let text = Text {
            source: "for x in y: f(x)\nif c:\n    g()\n",
            language: Language::Python,
        };
        assert_eq!(text.loop_body(Span::new(0, 16)), None);
    }

    #[test]
    fn a_finding_in_another_file_than_its_loop_is_fixed_there_only_unsafely() {
        let dir = tempfile::tempdir().unwrap();
        let train = "from .trainer import Trainer\n\ndef main(m, data):\n    t = Trainer(m)\n    for b in data:\n        t.run_batch(b)\n";
        let trainer = "import torch\n\nclass Trainer:\n    def __init__(self, m):\n        self.optimizer = torch.optim.SGD(m.parameters(), lr=0.1)\n\n    def run_batch(self, b):\n        loss(b).backward()\n        self.optimizer.step()\n";
        std::fs::write(dir.path().join("train.py"), train).unwrap();
        std::fs::write(dir.path().join("trainer.py"), trainer).unwrap();
        let root = vec![dir.path().to_path_buf()];
        let (report, changed) = fix_paths(&root, &Config::default(), false, true);
        assert!(changed.is_empty());
        assert_eq!(report.fixed, Some(0));
        let found: Vec<_> = report
            .diagnostics
            .iter()
            .map(|d| {
                (
                    Path::new(&d.path).file_name().unwrap().to_owned(),
                    d.line,
                    d.code,
                )
            })
            .collect();
        assert_eq!(found, vec![("trainer.py".into(), 9, "GL001")]);
        assert!(report.diagnostics[0].anchors.elsewhere);
        assert_eq!(
            std::fs::read_to_string(dir.path().join("trainer.py")).unwrap(),
            trainer
        );
        // With --unsafe-fixes: the reset after the step, in the method's names.
        let (report, changed) = fix_paths(&root, &Config::default(), true, true);
        assert_eq!(report.fixed, Some(1));
        assert!(report.diagnostics.is_empty(), "{:?}", report.diagnostics);
        assert_eq!(changed.len(), 1);
        assert_eq!(
            std::fs::read_to_string(dir.path().join("trainer.py")).unwrap(),
            format!("{trainer}        self.optimizer.zero_grad()\n")
        );
        assert_eq!(
            std::fs::read_to_string(dir.path().join("train.py")).unwrap(),
            train
        );
    }

    #[test]
    fn a_reset_before_the_step_in_another_file_moves_after_it_with_a_diff_only() {
        let dir = tempfile::tempdir().unwrap();
        let train = "from .trainer import Trainer\n\ndef main(m, data):\n    t = Trainer(m)\n    for b in data:\n        loss(t.model(b)).backward()\n        t.update()\n";
        let trainer = "import torch\n\nclass Trainer:\n    def __init__(self, m):\n        self.model = m\n        self.optimizer = torch.optim.SGD(m.parameters(), lr=0.1)\n\n    def update(self):\n        self.optimizer.zero_grad()\n        self.optimizer.step()\n";
        std::fs::write(dir.path().join("train.py"), train).unwrap();
        std::fs::write(dir.path().join("trainer.py"), trainer).unwrap();
        let root = vec![dir.path().to_path_buf()];
        let (before, _) = fix_paths(&root, &Config::default(), false, false);
        assert_eq!(before.diagnostics.len(), 1, "{:?}", before.diagnostics);
        assert_eq!(before.diagnostics[0].code, "GL003");
        // Not written (a diff), but the change is the move.
        let (report, changed) = fix_paths(&root, &Config::default(), true, false);
        assert_eq!(report.fixed, Some(1));
        assert!(report.diagnostics.is_empty(), "{:?}", report.diagnostics);
        assert_eq!(
            changed[0].after,
            trainer.replace(
                "        self.optimizer.zero_grad()\n        self.optimizer.step()\n",
                "        self.optimizer.step()\n        self.optimizer.zero_grad()\n"
            )
        );
        assert_eq!(
            std::fs::read_to_string(dir.path().join("trainer.py")).unwrap(),
            trainer
        );
    }

    #[test]
    fn fixing_twice_changes_nothing() {
        let src = "for x in data:\n    loss(x).backward()\n    opt.step()\n";
        let once = fix(src, true).source;
        let twice = fix(&once, true);
        assert_eq!((twice.fixed, twice.source), (0, once));
    }

    #[test]
    fn atomic_write_replaces_the_file_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("train.py");
        std::fs::write(&path, "old\n").unwrap();
        write_atomically(&path, "new\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new\n");
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
    }
}

/// Every fixture with a fix has its fixed copy next to it (`<file>.fixed`,
/// all fixes applied, unsafe ones included); `GRADLINT_BLESS=1` writes them.
/// The fixed copy parses, has fewer findings, and fixing it changes nothing.
#[cfg(test)]
mod snapshots {
    use super::*;

    #[test]
    fn every_fixable_fixture_has_its_fixed_snapshot() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        let mut paths: Vec<PathBuf> = std::fs::read_dir(&root)
            .unwrap()
            .flat_map(|dir| std::fs::read_dir(dir.unwrap().path()).unwrap())
            .map(|e| e.unwrap().path())
            .filter(|p| Language::of(p).is_some())
            .collect();
        paths.sort();
        let bless = std::env::var_os("GRADLINT_BLESS").is_some();
        let mut failures = Vec::new();
        let mut fixable = 0;
        for path in paths {
            let language = Language::of(&path).unwrap();
            let source = std::fs::read_to_string(&path).unwrap();
            let name = path.display().to_string();
            let out = fix_source(&name, &source, language, true, &|_| true).unwrap();
            let snapshot = PathBuf::from(format!("{name}.fixed"));
            if out.fixed == 0 {
                assert_eq!(out.source, source);
                if snapshot.exists() {
                    failures.push(format!("{name}: no fix, but {} exists", snapshot.display()));
                }
                continue;
            }
            fixable += 1;
            let before = lint_source(&name, &source, language).unwrap();
            assert_eq!(out.remaining.len() + out.fixed, before.len(), "{name}");
            let again = fix_source(&name, &out.source, language, true, &|_| true).unwrap();
            assert_eq!(
                (again.fixed, &again.source),
                (0, &out.source),
                "{name}: not idempotent"
            );
            if bless {
                std::fs::write(&snapshot, &out.source).unwrap();
                continue;
            }
            match std::fs::read_to_string(&snapshot) {
                Ok(expected) if expected == out.source => {}
                Ok(expected) => failures.push(format!(
                    "{name}\n--- expected\n{expected}--- actual\n{}",
                    out.source
                )),
                Err(_) => failures.push(format!("{name}: missing {}", snapshot.display())),
            }
        }
        assert!(fixable >= 6, "only {fixable} fixable fixtures");
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }
}
