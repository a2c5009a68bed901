//! Finding files (`.gitignore` honoured) and linting them in parallel.

use std::path::PathBuf;

use crate::config::Config;
use crate::file::error;
pub use crate::file::{
    is_notebook, lint_file, lint_file_with, lint_notebook, lint_notebook_with, MAX_FILE_BYTES,
};
use crate::{Diagnostic, FileError, Language};

/// The outcome of linting many files.
#[derive(Debug, Default)]
pub struct Report {
    /// Findings, sorted by path and position.
    pub diagnostics: Vec<Diagnostic>,
    /// Files that could not be linted.
    pub errors: Vec<FileError>,
    /// Files linted.
    pub files: usize,
    /// Findings fixed, when fixing (`--fix`, `--diff`).
    pub fixed: Option<usize>,
}

/// The Python and Rust files under `paths`: directories are walked
/// (`.gitignore`, `.ignore` and hidden files honoured); files named
/// explicitly are taken as they are. Missing paths are errors.
pub fn collect(paths: &[PathBuf], config: &Config) -> (Vec<PathBuf>, Vec<FileError>) {
    let mut files = Vec::new();
    let mut errors = Vec::new();
    for root in paths {
        if root.is_file() {
            files.push(root.clone());
            continue;
        }
        if !root.exists() {
            let broken = std::fs::symlink_metadata(root).is_ok();
            let why = if broken {
                "broken symbolic link"
            } else {
                "no such file or directory"
            };
            errors.push(error(root, why.to_string()));
            continue;
        }
        let mut overrides = ignore::overrides::OverrideBuilder::new(root);
        for pattern in &config.exclude {
            if let Err(e) = overrides.add(&format!("!{pattern}")) {
                errors.push(error(root, format!("bad exclude pattern `{pattern}`: {e}")));
            }
        }
        let mut walker = ignore::WalkBuilder::new(root);
        walker.require_git(false);
        if let Ok(o) = overrides.build() {
            walker.overrides(o);
        }
        // Walked on every core: a tree of data and checkpoints has far
        // more entries than source files.
        let found = std::sync::Mutex::new((Vec::new(), Vec::new()));
        walker.build_parallel().run(|| {
            Box::new(|entry| {
                let (file, problem) = match entry {
                    Ok(e) => {
                        let path = e.path();
                        let wanted = Language::of_name(e.file_name()).is_some()
                            && (e.file_type().is_some_and(|t| t.is_file()) || e.path_is_symlink());
                        (wanted.then(|| path.to_path_buf()), None)
                    }
                    Err(e) => (None, Some(error(root, e.to_string()))),
                };
                if file.is_some() || problem.is_some() {
                    if let Ok(mut found) = found.lock() {
                        found.0.extend(file);
                        found.1.extend(problem);
                    }
                }
                ignore::WalkState::Continue
            })
        });
        let (more_files, more_errors) = found.into_inner().unwrap_or_default();
        files.extend(more_files);
        let mut more_errors: Vec<FileError> = more_errors;
        more_errors.sort_by(|a, b| (&a.path, &a.message).cmp(&(&b.path, &b.message)));
        errors.extend(more_errors);
    }
    files.sort();
    files.dedup();
    (files, errors)
}

/// Lints every file under `paths` in parallel, keeping the rules `config`
/// enables. The Python files are analysed together ([`crate::project`]):
/// calls into classes and functions of other files of the invocation are
/// followed.
pub fn lint_paths(paths: &[PathBuf], config: &Config) -> Report {
    let (files, mut errors) = collect(paths, config);
    // Deeply nested sources recurse deeply in the parsers: big stacks.
    let pool = rayon::ThreadPoolBuilder::new()
        .stack_size(64 * 1024 * 1024)
        .build()
        .expect("thread pool");
    let results: Vec<Result<Vec<Diagnostic>, FileError>> =
        pool.install(|| crate::project::lint_files(&files, config));
    let mut diagnostics = Vec::new();
    for r in results {
        match r {
            Ok(d) => diagnostics.extend(d.into_iter().filter(|d| config.shows(d))),
            Err(e) => errors.push(e),
        }
    }
    sort_and_dedup(&mut diagnostics);
    errors.sort_by(|a, b| a.path.cmp(&b.path));
    Report {
        diagnostics,
        errors,
        files: files.len(),
        fixed: None,
    }
}

/// Orders findings by file, cell and position, and keeps one of each: a step
/// in another file, reached from several loops, is reported once. Where two
/// loops name one place differently (a helper's loop alone GL001, its
/// caller's loop, which sees the reset outside, GL002), a rule defers to the
/// others as it does within one loop.
pub(crate) fn sort_and_dedup(diagnostics: &mut Vec<Diagnostic>) {
    fn key(d: &Diagnostic) -> (&str, Option<usize>, usize, usize, &str) {
        (&d.path, d.cell, d.line, d.column, d.code)
    }
    diagnostics.sort_by(|a, b| key(a).cmp(&key(b)));
    diagnostics.dedup_by(|a, b| key(a) == key(b));
    let place = |d: &Diagnostic| (d.path.clone(), d.cell, d.line, d.column);
    let codes: std::collections::HashSet<_> =
        diagnostics.iter().map(|d| (place(d), d.code)).collect();
    diagnostics.retain(|d| {
        let defers_to = crate::rules::ALL
            .iter()
            .find(|r| r.code == d.code)
            .map_or(&[][..], |r| r.defers_to);
        !defers_to.iter().any(|c| codes.contains(&(place(d), *c)))
    });
}
