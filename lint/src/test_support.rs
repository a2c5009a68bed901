//! Fixture tests: every file in `tests/fixtures/<CODE>/` is linted, and its
//! findings must equal the snapshot next to it (`<file>.expected`), one
//! `line:col: CODE` per line (`cell N:line:col: CODE` in a notebook; empty
//! for a clean fixture).

use std::path::Path;

use crate::{lint_source, Language};

/// Lints the fixtures of one rule's folder and compares with the snapshots.
/// `GRADLINT_BLESS=1` writes the snapshots instead.
pub fn assert_fixtures(code: &str) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(code);
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| Language::of(p).is_some())
        .collect();
    entries.sort();
    assert!(!entries.is_empty(), "no fixtures in {}", dir.display());
    let mut failures = Vec::new();
    for path in entries {
        let source = std::fs::read_to_string(&path).unwrap();
        let lang = Language::of(&path).unwrap();
        let name = path.display().to_string();
        let found = if crate::walk::is_notebook(&path) {
            crate::walk::lint_notebook(&name, &source)
        } else {
            lint_source(&name, &source, lang)
        }
        .unwrap_or_else(|e| panic!("{}: {}", path.display(), e.message));
        let actual: String = found
            .iter()
            .map(|d| {
                let cell = d.cell.map_or_else(String::new, |c| format!("cell {c}:"));
                format!("{cell}{}:{}: {} {}\n", d.line, d.column, d.code, d.message)
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
        if name.ends_with("_clean") {
            if !found.is_empty() {
                failures.push(format!("{}: a clean fixture has findings", path.display()));
            }
        } else if !found.iter().any(|d| d.code == code) {
            failures.push(format!("{}: no {code} finding", path.display()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
