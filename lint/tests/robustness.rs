//! No input makes gradlint panic: random text and mutated fixtures, in both
//! languages and in notebooks, either lint or come back as a `FileError`; and
//! `--fix` on them never breaks a file that parsed.

use gradlint::fix::fix_source;
use gradlint::{lint_source, Language};
use proptest::prelude::*;

fn fixtures(ext: &str) -> Vec<String> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut out = Vec::new();
    for dir in std::fs::read_dir(root).unwrap() {
        for f in std::fs::read_dir(dir.unwrap().path()).unwrap() {
            let p = f.unwrap().path();
            if p.extension().is_some_and(|e| e == ext) {
                out.push(std::fs::read_to_string(p).unwrap());
            }
        }
    }
    out.sort();
    out
}

/// A fixture with a number of random edits in `edits`: deletions, duplications and
/// insertions of syntax-heavy fragments.
fn mutated(sources: Vec<String>, edits: std::ops::Range<usize>) -> impl Strategy<Value = String> {
    let fragments = prop_oneof![
        Just(":"),
        Just("("),
        Just(")"),
        Just("{"),
        Just("}"),
        Just("\n    "),
        Just("for x in y:"),
        Just(".backward()"),
        Just(".zero_grad()"),
        Just(".step()"),
        Just("if c:"),
        Just("if (i + 9223372036854775807) % k == -9223372036854775808:"),
        Just("if i % k == k - 4294967296:"),
        Just("if not torch.isfinite(loss):"),
        Just("continue"),
        Just("break"),
        Just("loop {"),
        Just("?"),
        Just("\""),
        Just("'''"),
        Just("é"),
        Just("\t"),
        Just("\\")
    ];
    (
        0..sources.len(),
        proptest::collection::vec((any::<prop::sample::Index>(), 0usize..3, fragments), edits),
    )
        .prop_map(move |(i, edits)| {
            let mut s: Vec<char> = sources[i].chars().collect();
            for (at, kind, frag) in edits {
                let pos = at.index(s.len() + 1);
                match kind {
                    0 => {
                        let end = (pos + 7).min(s.len());
                        s.drain(pos..end);
                    }
                    1 => s.splice(pos..pos, frag.chars()).for_each(drop),
                    _ => {
                        let end = (pos + 20).min(s.len());
                        let copy: Vec<char> = s[pos..end].to_vec();
                        s.splice(pos..pos, copy).for_each(drop);
                    }
                }
            }
            s.into_iter().collect()
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 600, ..ProptestConfig::default() })]

    #[test]
    fn mutated_python_never_panics(src in mutated(fixtures("py"), 1..6)) {
        let _ = lint_source("m.py", &src, Language::Python);
    }

    #[test]
    fn mutated_rust_never_panics(src in mutated(fixtures("rs"), 1..6)) {
        let _ = lint_source("m.rs", &src, Language::Rust);
    }

    #[test]
    fn fix_never_breaks_a_mutated_python_file_that_parsed(src in mutated(fixtures("py"), 1..3)) {
        fix_keeps_parsing("m.py", &src, Language::Python)?;
    }

    #[test]
    fn fix_never_breaks_a_mutated_rust_file_that_parsed(src in mutated(fixtures("rs"), 1..3)) {
        fix_keeps_parsing("m.rs", &src, Language::Rust)?;
    }

    #[test]
    fn mutated_notebooks_never_panic(raw in mutated(fixtures("ipynb"), 1..6), code in mutated(fixtures("py"), 1..6)) {
        let _ = gradlint::walk::lint_notebook("m.ipynb", &raw);
        // Valid JSON whose code cells are mutated Python, with magics around.
        let notebook = serde_json::json!({
            "nbformat": 4,
            "cells": [
                {"cell_type": "code", "source": "!ls\n%%time"},
                {"cell_type": "code", "source": code},
                {"cell_type": "markdown", "source": "text"},
                {"cell_type": "code", "source": ["%time f()\n", "x = 1"]},
            ]
        });
        let _ = gradlint::walk::lint_notebook("n.ipynb", &notebook.to_string());
    }

    #[test]
    fn random_text_never_panics(src in "\\PC{0,300}") {
        let _ = lint_source("r.py", &src, Language::Python);
        let _ = lint_source("r.rs", &src, Language::Rust);
    }
}

#[test]
fn extreme_counter_tests_do_not_overflow() {
    let src = "for i, b in enumerate(d, start=-9223372036854775808):\n    if (i - -9223372036854775808) % k == 9223372036854775807:\n        opt.zero_grad()\n    if i % k == k - 9223372036854775807:\n        pass\n    if (i + 9223372036854775807) % k == -9223372036854775807:\n        opt.zero_grad()\n    l.backward()\n    if (i + 1) % k == 0:\n        opt.step()\n";
    assert!(lint_source("a.py", src, Language::Python).is_ok());
}

#[test]
fn mutations_do_produce_syntax_errors_and_findings() {
    // The property test is only meaningful if its inputs reach both outcomes.
    let bad = "for x in y:\n    l.backward()\n    opt.step()\n";
    assert!(lint_source("a.py", bad, Language::Python).unwrap().len() == 1);
    let err = lint_source("a.py", "for x in y\n", Language::Python).unwrap_err();
    assert_eq!((err.line, err.column), (Some(1), Some(11)));
    assert!(err.message.starts_with("syntax error"));
    let err = lint_source("a.rs", "fn f( {", Language::Rust).unwrap_err();
    assert!(err.message.starts_with("syntax error"), "{}", err.message);
}

/// `--fix` (unsafe fixes included) on `src`: a file that does not parse is
/// left alone; one that parses still parses, has fewer findings by the count
/// fixed, and fixing it again changes nothing.
fn fix_keeps_parsing(path: &str, src: &str, language: Language) -> Result<(), TestCaseError> {
    let Ok(before) = lint_source(path, src, language) else {
        prop_assert!(fix_source(path, src, language, true, &|_| true).is_err());
        return Ok(());
    };
    let out = fix_source(path, src, language, true, &|_| true).unwrap();
    let after = lint_source(path, &out.source, language);
    prop_assert!(after.is_ok(), "the fix broke the file:\n{}", out.source);
    prop_assert_eq!(after.unwrap().len(), before.len() - out.fixed);
    let again = fix_source(path, &out.source, language, true, &|_| true).unwrap();
    prop_assert_eq!(again.fixed, 0);
    prop_assert_eq!(again.source, out.source);
    Ok(())
}

#[test]
fn the_fix_property_sees_mutated_files_that_get_fixed() {
    // The property is only meaningful if mutated sources that still parse
    // get fixed: sample its inputs and count.
    use proptest::strategy::ValueTree;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let strategy = mutated(fixtures("py"), 1..3);
    let mut fixed_files = 0;
    for _ in 0..600 {
        let src = strategy.new_tree(&mut runner).unwrap().current();
        if let Ok(out) = fix_source("m.py", &src, Language::Python, true, &|_| true) {
            fixed_files += usize::from(out.fixed > 0);
        }
    }
    assert!(
        fixed_files >= 20,
        "{fixed_files} of 600 mutated files fixed"
    );
}
