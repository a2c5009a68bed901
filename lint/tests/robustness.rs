//! No input makes gradlint panic: random text and mutated fixtures, in both
//! languages and in notebooks, either lint or come back as a `FileError`.

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

/// A fixture with random byte-range edits: deletions, duplications and
/// insertions of syntax-heavy fragments.
fn mutated(sources: Vec<String>) -> impl Strategy<Value = String> {
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
        proptest::collection::vec((any::<prop::sample::Index>(), 0usize..3, fragments), 1..6),
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
    fn mutated_python_never_panics(src in mutated(fixtures("py"))) {
        let _ = lint_source("m.py", &src, Language::Python);
    }

    #[test]
    fn mutated_rust_never_panics(src in mutated(fixtures("rs"))) {
        let _ = lint_source("m.rs", &src, Language::Rust);
    }

    #[test]
    fn mutated_notebooks_never_panic(raw in mutated(fixtures("ipynb")), code in mutated(fixtures("py"))) {
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
