//! Fixture tests: every file in `tests/fixtures/<CODE>/` is linted, and its
//! findings must equal the snapshot next to it (`<file>.expected`), one
//! `line:col: CODE` per line (`cell N:line:col: CODE` in a notebook; empty
//! for a clean fixture). A folder there is a package linted as one
//! invocation (its files together); its snapshot (`<folder>.expected`)
//! names the file of each finding: `file.py:line:col: CODE`.

use std::path::Path;

use crate::assumptions::Confidence;
use crate::{lint_source, Language};

/// ` [medium]`, ` [low]` after a code: the snapshot shows what a finding
/// rests on unless it is `high`.
fn tier(d: &crate::diagnostic::Diagnostic) -> String {
    match d.confidence {
        Confidence::High => String::new(),
        c => format!(" [{}]", c.as_str()),
    }
}

/// Lints the fixtures of one rule's folder and compares with the snapshots.
/// `GRADLINT_BLESS=1` writes the snapshots instead.
pub fn assert_fixtures(code: &str) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(code);
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| Language::of(p).is_some() || p.is_dir())
        .collect();
    entries.sort();
    assert!(!entries.is_empty(), "no fixtures in {}", dir.display());
    let mut failures = Vec::new();
    for path in entries {
        if path.is_dir() {
            package(code, &path, &mut failures);
            continue;
        }
        let source = std::fs::read_to_string(&path).unwrap();
        let lang = Language::of(&path).unwrap();
        let name = path.display().to_string();
        let found = if crate::file::is_notebook(&path) {
            crate::file::lint_notebook(&name, &source)
        } else {
            lint_source(&name, &source, lang)
        }
        .unwrap_or_else(|e| panic!("{}: {}", path.display(), e.message));
        let actual: String = found
            .iter()
            .map(|d| {
                let cell = d.cell.map_or_else(String::new, |c| format!("cell {c}:"));
                format!(
                    "{cell}{}:{}: {}{} {}\n",
                    d.line,
                    d.column,
                    d.code,
                    tier(d),
                    d.message
                )
            })
            .collect();
        let snapshot = path.with_extension(format!(
            "{}.expected",
            path.extension().unwrap().to_str().unwrap()
        ));
        if std::env::var_os("GRADLINT_BLESS").is_some() {
            std::fs::write(&snapshot, &actual).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&snapshot)
            .unwrap_or_else(|_| panic!("missing snapshot {}", snapshot.display()));
        if actual != expected {
            failures.push(format!(
                "{}\n--- expected\n{expected}--- actual\n{actual}",
                path.display()
            ));
        }
        // The fixture names its intent: `*_clean.*` must have no finding,
        // the others at least one of this folder's rule.
        let name = path.file_stem().unwrap().to_str().unwrap();
        // (A lower-confidence finding, shown only on request, is allowed.)
        if name.ends_with("_clean") {
            if found.iter().any(|d| d.confidence == Confidence::High) {
                failures.push(format!("{}: a clean fixture has findings", path.display()));
            }
        } else if !found.iter().any(|d| d.code == code) {
            failures.push(format!("{}: no {code} finding", path.display()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A folder fixture: its files linted together, compared with
/// `<folder>.expected`.
fn package(code: &str, dir: &Path, failures: &mut Vec<String>) {
    // Every tier, as the single-file fixtures show them.
    let all = crate::config::Config {
        confidence: Some(Confidence::Low),
        ..Default::default()
    };
    let report = crate::walk::lint_paths(&[dir.to_path_buf()], &all);
    if let Some(e) = report.errors.first() {
        panic!("{}: {}", e.path, e.message);
    }
    let actual: String = report
        .diagnostics
        .iter()
        .map(|d| {
            let file = Path::new(&d.path)
                .strip_prefix(dir)
                .unwrap_or_else(|_| Path::new(&d.path))
                .display()
                .to_string();
            let cell = d.cell.map_or_else(String::new, |c| format!("cell {c}:"));
            format!(
                "{file}:{cell}{}:{}: {}{} {}\n",
                d.line,
                d.column,
                d.code,
                tier(d),
                d.message
            )
        })
        .collect();
    let snapshot = dir.with_extension("expected");
    if std::env::var_os("GRADLINT_BLESS").is_some() {
        std::fs::write(&snapshot, &actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&snapshot)
        .unwrap_or_else(|_| panic!("missing snapshot {}", snapshot.display()));
    if actual != expected {
        failures.push(format!(
            "{}\n--- expected\n{expected}--- actual\n{actual}",
            dir.display()
        ));
    }
    let name = dir.file_name().unwrap().to_str().unwrap();
    if name.ends_with("_clean") {
        if report
            .diagnostics
            .iter()
            .any(|d| d.confidence == Confidence::High)
        {
            failures.push(format!("{}: a clean package has findings", dir.display()));
        }
    } else if !report.diagnostics.iter().any(|d| d.code == code) {
        failures.push(format!("{}: no {code} finding", dir.display()));
    }
    // A buggy package is found only together: its files alone have fewer
    // findings of the rule.
    if !name.ends_with("_clean") {
        let (files, _) = crate::walk::collect(&[dir.to_path_buf()], &Default::default());
        let alone: usize = files
            .iter()
            .flat_map(|f| crate::file::lint_file(f).unwrap_or_default())
            .filter(|d| d.code == code)
            .count();
        let together = report.diagnostics.iter().filter(|d| d.code == code).count();
        if alone >= together {
            failures.push(format!(
                "{}: the files alone find as much as the package",
                dir.display()
            ));
        }
    }
}
